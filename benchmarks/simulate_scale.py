"""How far the simulator scales here: wall time and peak memory of `python -m swarm.simulate` runs.

Issue 4's targets, each run in a process of its own (`python -m swarm.simulate ... --timing`, which prints
the run's wall time and its peak resident memory on stderr):

* graph analysis of swarm's default overlay at N = 100,000 (paths from 64 sampled sources, clustering
  over 5,000 sampled nodes, 1,000 greedy routes, robustness after 20%, 50%, 80% crashes): < 60 s;
* a protocol simulation of one broadcast over N = 10,000 nodes (direct bootstrap: the overlay is drawn,
  its 40,000 links opened with real handshakes, then the broadcast): < 60 s;
* the same over N = 100,000: < 10 minutes. Only with `--full` (it needs about 4 GB).

    .venv/bin/python benchmarks/simulate_scale.py            # ~1.5 minutes
    .venv/bin/python benchmarks/simulate_scale.py --full     # + ~9 minutes
    .venv/bin/python benchmarks/simulate_scale.py --json     # the figures as JSON

Not a test: the figures depend on the machine and on what else runs on it. The load average at the start
is printed with them.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

RUNS = [
    ("graph analysis, N = 100,000", ["--mode", "graph", "--nodes", "100000"], 60.0, False),
    ("protocol, one broadcast, N = 10,000", ["--nodes", "10000", "--messages", "1"], 60.0, False),
    ("protocol, one broadcast, N = 100,000", ["--nodes", "100000", "--messages", "1"], 600.0, True),
]
TIMING = re.compile(r"([\d.]+) s wall, peak memory (\d+) MB")


def run(args: list[str], timeout: float) -> dict[str, object]:
    command = [sys.executable, "-m", "swarm.simulate", *args, "--seed", "7", "--timing", "--json"]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr}")
    found = TIMING.search(done.stderr)
    assert found, done.stderr
    result = json.loads(done.stdout)
    summary: dict[str, object] = {"wall_s": float(found.group(1)), "process_s": round(elapsed, 1),
                                  "peak_mb": int(found.group(2))}
    if result["mode"] == "graph":
        analysis = result["analysis"]
        summary["result"] = (f"L {analysis['paths']['mean']:.2f} ({analysis['paths']['sources']} sources), "
                             f"LDH max {analysis['flood']['max_ldh']}, "
                             f"{analysis['links']['total']:,} links")
    else:
        phase = result["phases"][0]
        summary["result"] = (f"delivery {phase['delivery']:.4f}, hops mean {phase['hops_mean']:.2f}, "
                             f"LDH {phase['ldh']}, RMR {phase['rmr']:.2f}")
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="also the 100,000-node protocol run (~9 min)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    load = os.getloadavg()[0]
    rows = []
    for label, flags, target, full_only in RUNS:
        if full_only and not args.full:
            continue
        print(f"{label} ...", file=sys.stderr, flush=True)
        figures = run(flags, timeout=max(3 * target, 600))
        figures.update(label=label, target_s=target, met=figures["wall_s"] < target)
        rows.append(figures)
    if args.json:
        print(json.dumps({"load_average": load, "cpus": os.cpu_count(), "runs": rows}, indent=2))
        return 0
    print(f"load average at start {load:.2f} on {os.cpu_count()} CPUs\n")
    print("| run | wall (s) | target (s) | met | peak memory (MB) | result |")
    print("| --- | ---: | ---: | --- | ---: | --- |")
    for r in rows:
        print(f"| {r['label']} | {r['wall_s']:.1f} | {r['target_s']:g} | {'yes' if r['met'] else 'NO'} "
              f"| {r['peak_mb']:,} | {r['result']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
