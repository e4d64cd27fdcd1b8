"""Run every benchmark of issues 7 and 13 in one go; print each one's table, then a summary against targets.

    .venv/bin/python benchmarks/run_all.py [--quick] [--json FILE] [--no-redis] [--profile NODE]
                                           [--only throughput latency node_cost]

Runs, one after another, each as its own process (each also runs alone, see benchmarks/README.md):

* `throughput.py`: 1 publisher -> 4 subscriber processes, 100-byte, 1 KiB and 16 KiB messages, in
  interleaved rounds (swarm, Redis pub/sub, NATS, ZeroMQ PUB/SUB and the raw trio limit, each once per
  round in turn): msgs/s per subscriber and CPU per delivery over every process, broker included; ratios
  swarm / the best peer paired per round, their median;
* `latency.py`: publish->deliver p50/p99/p99.9 at 1,000 msgs/s: swarm direct neighbours, swarm across
  the longest path of a 16-node cluster, Redis;
* `node_cost.py`: CPU per 10,000 messages relayed by a middle node, resident memory at idle and after
  load, the seen-record's entries and bytes at 1,000 msgs/s; and the scaling table: 4, 8 and 12 nodes,
  flood and tree, at 2,000 msgs/s (p50/p99, CPU and DATA frames read per delivery).

`--quick` runs fewer messages, rounds and shorter phases (the whole suite in about 3 minutes on 2 cores;
the full run about 7, both measured at a load of 4-5). Every baseline runs in the same invocation as
what it is compared with; the summary states each of swarm's figures beside its peers', and says for
each target of issues 7 and 13 whether it is met and by how much it is missed. A peer whose server or
library is missing is skipped with a message saying how to get it (`pip install -e '.[bench]'`, `apt-get
install redis-server`); its targets then say so. `--json FILE` writes every benchmark's full JSON and
the summary into one file. Memory in the summary is in MB of 10^6 bytes (the targets' 48 MB and 32 MB
read that way, the stricter reading). Exit status: 0 when every benchmark ran and nothing was lost or
duplicated (a missed target is reported, not a failure), 1 otherwise, 130 when interrupted (Ctrl-C: each
benchmark stops its own processes first).
"""

from __future__ import annotations

import argparse
import json
import math
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import common

BENCHMARKS = ("throughput", "latency", "node_cost")
SIZES = ["--size", "100", "1024", "16384"]
SETTINGS = {
    "full": {"throughput": ["--messages", "30000", "--baseline-messages", "300000", *SIZES,
                            "--rounds", "5"],
             "latency": ["--duration", "10", "--rounds", "5"],
             "node_cost": ["--messages", "50000", "--seen-seconds", "5", "--sim-seconds", "30",
                           "--scale-seconds", "5"]},
    "quick": {"throughput": ["--messages", "10000", "--baseline-messages", "100000", *SIZES,
                             "--rounds", "2"],
              "latency": ["--duration", "3", "--rounds", "2"],
              "node_cost": ["--messages", "30000", "--seen-seconds", "2", "--sim-seconds", "10",
                            "--scale-seconds", "2"]},
}
# Bound on one benchmark process (each also bounds its own phases): the full throughput run is 75 phases
# (about 5 minutes at a load of 4-5 on 2 cores).
TIMEOUT = {"full": 1800.0, "quick": 600.0}
# After Ctrl-C or a timeout, how long a benchmark may take to stop its processes before it is killed.
STOP_WAIT = 60.0
# Issue 7's targets.
TARGET_THROUGHPUT = 1.0   # per-subscriber msgs/s, swarm / Redis, 100-byte messages, zero lost and duplicated
TARGET_P50 = 1.0          # neighbour p50, swarm / Redis
TARGET_P99 = 1.5          # neighbour p99, swarm / Redis
TARGET_IDLE_RSS = 48e6    # bytes, a node at idle
TARGET_SEEN = 32e6        # bytes, the seen-record at 1,000 msgs/s cluster-wide
# Issue 13's targets (same run): against the best of Redis, NATS and ZeroMQ at every size.
TARGET_VS_BEST = 1.2      # per-subscriber msgs/s, swarm / the best peer
TARGET_CPU_VS_BEST = 1.0  # CPU per delivery, swarm / the best (lowest) peer
TARGET_SCALE_NODES = 12   # at 2,000 msgs/s:
TARGET_SCALE_P99_US = 2000.0
TARGET_SCALE_CPU_US = 40.0
PEER_NAMES = {"redis": "Redis", "nats": "NATS", "zmq": "ZeroMQ"}


def run_benchmark(name: str, extra: list[str], json_path: Path, timeout: float) -> int:
    """Run one benchmark script (its stdout and stderr go to ours); its exit status."""
    command = [*common.script(f"{name}.py"), *extra, "--json", str(json_path)]
    common.progress(f"\n=== {name}: {' '.join(command[1:])}")
    process = subprocess.Popen(command)
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        common.progress(f"run_all: {name} took over {timeout:g} s; stopping it")
        process.terminate()  # SIGTERM: the benchmark stops its own processes, as on Ctrl-C
        return _reap(process)
    except KeyboardInterrupt:
        # Ctrl-C in a terminal reached the benchmark too (same process group), a `kill -INT` of this
        # process did not: pass it on (a second one is harmless), and let it stop its processes.
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
        _reap(process)
        raise


def _reap(process: subprocess.Popen[bytes]) -> int:
    try:
        return process.wait(timeout=STOP_WAIT)
    except (subprocess.TimeoutExpired, KeyboardInterrupt):
        process.kill()
        return process.wait()


# ---------------------------------------------------------------------- summary


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def _verdict(met: bool | None, missed: str, value: str = "") -> str:
    if met is None:
        return "not measured"
    return f"MET ({value})" if met else f"MISSED: {missed}"


def summarize(results: dict[str, Any]) -> dict[str, Any]:
    """Rows of the summary table and the targets, from the benchmarks' JSON."""
    rows: list[dict[str, Any]] = []
    targets: list[dict[str, Any]] = []
    throughput = results.get("throughput")
    if throughput:
        skipped = throughput.get("skipped", {})
        for run in throughput["runs"]:
            median, ratio = run["median"], run["ratio"]["median"]
            label = f"throughput {run['size']} B"
            for key, figure, spec, versus in (
                    ("mean_per_subscriber_msgs_per_s", "msgs/s per subscriber (median)", ",.0f",
                     "swarm_vs_best_per_subscriber"),
                    ("from_go_slowest_msgs_per_s", "msgs/s, go -> slowest subscriber", ",.0f",
                     "swarm_vs_best_from_go"),
                    ("cpu_us_per_delivery", "CPU us per delivery, all processes", ".1f",
                     "swarm_vs_best_cpu")):
                rows.append({"benchmark": label, "figure": figure, "format": spec,
                             **{system: (median.get(system) or {}).get(key)
                                for system in ("swarm", *PEER_NAMES)},
                             "versus": ratio.get(versus),
                             "trio_limit": (median.get("baseline") or {}).get("msgs_per_s")
                             if key == "mean_per_subscriber_msgs_per_s" else None})
            rows.append({"benchmark": label, "figure": "lost / duplicated",
                         "text": " | ".join(f"{system} {figures['lost']} / {figures['duplicates']}"
                                            for system, figures in median.items() if system != "baseline")})
            swarm = median["swarm"]
            clean = not (swarm["lost"] or swarm["duplicates"])
            missing = [PEER_NAMES[system] for system in PEER_NAMES if system not in median]
            absent = f"; {', '.join(missing)} not measured" if missing else ""
            value = ratio.get("swarm_vs_best_per_subscriber")
            if _finite(value):
                met: bool | None = bool(value >= TARGET_VS_BEST and clean)
                missed = f"{value:.2f}x the best peer, needs {TARGET_VS_BEST / value:.2f}x the rate"
                if not clean:
                    missed += f"; {swarm['lost']} lost, {swarm['duplicates']} duplicated"
                verdict = _verdict(met, missed + absent, f"{value:.2f}x the best peer" + absent)
            else:
                met, verdict = None, _verdict(None, "")
            targets.append({"target": f"msgs/s per subscriber >= {TARGET_VS_BEST:g}x the best peer "
                                      f"({run['size']} B)", "value": value, "met": met, "verdict": verdict})
            value = ratio.get("swarm_vs_best_cpu")
            met = bool(value <= TARGET_CPU_VS_BEST) if _finite(value) else None
            verdict = (_verdict(met, f"{value:.2f}x the lowest peer's" + absent, f"{value:.2f}x" + absent)
                       if _finite(value) else _verdict(None, ""))
            targets.append({"target": f"CPU per delivery <= the best peer's ({run['size']} B)",
                            "value": value, "met": met, "verdict": verdict})
            if run["size"] == 100 and "redis" not in skipped:
                value = ratio.get("swarm_vs_redis_per_subscriber")
                met = None if value is None or not math.isfinite(value) else bool(value >= 1.0 and clean)
                missed = (f"{value:.2f}x Redis, {1 - value:.0%} short (needs {1 / value:.2f}x the rate)"
                          if value else "")
                targets.append({"target": "msgs/s per subscriber >= 1.0x Redis (100 B, 0 lost, 0 dup)",
                                "value": value, "met": met,
                                "verdict": _verdict(met, missed, f"{value:.2f}x Redis" if value else "")})
        for system, reason in skipped.items():
            rows.append({"benchmark": "throughput", "figure": f"{PEER_NAMES[system]} skipped",
                         "text": reason.splitlines()[0][:60]})
    latency = results.get("latency")
    if latency:
        labels = {"swarm_neighbours": "latency neighbours", "swarm_longest_path": "latency longest path"}
        redis_latency = (latency["runs"].get("redis") or {}).get("latency") or {}
        for key, label in labels.items():
            run = latency["runs"].get(key)
            if not run:
                continue
            ratios = latency["ratio"].get("neighbours" if key == "swarm_neighbours" else "longest_path") or {}
            hops = f", {run['bfs_hops']} hops" if key == "swarm_longest_path" else ""
            for percentile, text in (("p50", "p50"), ("p99", "p99"), ("p99_9", "p99.9")):
                rows.append({"benchmark": label + hops, "figure": f"{text} us, 1,000 msgs/s",
                             "swarm": run["latency"][f"{percentile}_us"],
                             "redis": redis_latency.get(f"{percentile}_us"),
                             "versus": ratios.get(percentile)})
        longest = latency["runs"].get("swarm_longest_path")
        if longest:
            rows.append({"benchmark": f"latency longest path, {longest['bfs_hops']} hops",
                         "figure": f"DATA frames read per delivery ({longest['nodes']} n.)",
                         "swarm": longest.get("frames_per_delivery"), "format": ".2f"})
        neighbours = latency["ratio"].get("neighbours") or {}
        for percentile, bound in (("p50", TARGET_P50), ("p99", TARGET_P99)):
            value = neighbours.get(percentile)
            met = None if value is None or not math.isfinite(value) else bool(value <= bound)
            missed = f"{value:.2f}x Redis, {value / bound - 1:.0%} over the bound" if value else ""
            targets.append({"target": f"neighbour {percentile} <= {bound:g}x Redis's", "value": value,
                            "met": met,
                            "verdict": _verdict(met, missed, f"{value:.2f}x Redis" if value else "")})
    cost = results.get("node_cost")
    if cost:
        _scaling(cost.get("scale") or [], rows, targets)
    if cost and "cluster" in cost:
        cluster = cost["cluster"]
        for key, label in (("relay_only", "relay only"), ("relay_and_deliver", "relay + deliver")):
            rows.append({"benchmark": "node cost", "figure": f"CPU s per 10k relayed ({label})",
                         "swarm": cluster[key]["relay_cpu_s_per_10k"], "format": ".3f"})
        idle = max(figures["VmHWM"] for figures in cluster["memory_idle_kib"].values()) * 1024
        loaded = max(figures["VmHWM"] for figures in cluster["memory_after_load_kib"].values()) * 1024
        imports = cost["interpreter_memory"].get("python + import swarm (cli, connector)", {})
        rows.append({"benchmark": "node cost", "figure": "peak RSS at idle, MB (max of nodes)",
                     "swarm": idle / 1e6, "format": ".1f"})
        rows.append({"benchmark": "node cost", "figure": "peak RSS after load, MB (max of nodes)",
                     "swarm": loaded / 1e6, "format": ".1f"})
        if imports:
            rows.append({"benchmark": "node cost", "figure": "RSS of python + swarm's imports, MB",
                         "swarm": imports["VmHWM"] * 1024 / 1e6, "format": ".1f"})
        simulated = max(cost["seen_simulated"], key=lambda sim: sim["bytes_max"])
        bound = cost["seen_bound"]
        rows.append({"benchmark": "node cost", "figure": f"seen-record MB, 1k msgs/s, "
                                                         f"{simulated['origins']:,} origins",
                     "swarm": simulated["bytes_max"] / 1e6, "format": ".3f"})
        rows.append({"benchmark": "node cost", "figure": "seen-record MB at its bound, 100k origins",
                     "swarm": bound["bound_bytes_all_records"] / 1e6, "format": ".1f"})
        idle_met = idle <= TARGET_IDLE_RSS
        targets.append({"target": "idle node <= 48 MB RSS", "value": idle / 1e6, "met": idle_met,
                        "verdict": _verdict(idle_met, f"{idle / 1e6:.1f} MB, "
                                                      f"{(idle - TARGET_IDLE_RSS) / 1e6:.1f} MB over",
                                            f"{idle / 1e6:.1f} MB, {(TARGET_IDLE_RSS - idle) / 1e6:.1f} MB "
                                            f"to spare")})
        seen_bytes = simulated["bytes_max"]
        targets.append({"target": "seen-record <= 32 MB at 1,000 msgs/s", "value": seen_bytes / 1e6,
                        "met": seen_bytes <= TARGET_SEEN,
                        "verdict": _verdict(seen_bytes <= TARGET_SEEN,
                                            f"{(seen_bytes - TARGET_SEEN) / 1e6:.1f} MB over",
                                            f"{seen_bytes / 1e6:.2f} MB; "
                                            f"{bound['bound_bytes_all_records'] / 1e6:.1f} MB even at the "
                                            f"100,000-entry bound")})
    return {"rows": rows, "targets": targets}


def _scaling(table: list[dict[str, Any]], rows: list[dict[str, Any]], targets: list[dict[str, Any]]) -> None:
    """The scaling table's rows, and issue 13's targets for 12 nodes at 2,000 msgs/s."""
    for row in table:
        rows.append({"benchmark": f"scaling {row['nodes']} nodes, {row['mode']}",
                     "figure": "p50/p99 us, CPU us and frames /delivery",
                     "text": f"{common.fmt(row['p50_us'])} / {common.fmt(row['p99_us'])} us, "
                             f"{common.fmt(row['cpu_us_per_delivery'], '.1f')} us CPU, "
                             f"{common.fmt(row['frames_per_delivery'], '.2f')} DATA frames per delivery"})
        if row["nodes"] != TARGET_SCALE_NODES:
            continue
        for key, bound, text in (("p99_us", TARGET_SCALE_P99_US, "p99 <= 2 ms"),
                                 ("cpu_us_per_delivery", TARGET_SCALE_CPU_US, "<= 40 us CPU per delivery")):
            value = row[key]
            met = bool(value <= bound) if math.isfinite(value) else None
            targets.append({"target": f"12 nodes, 2,000 msgs/s, {row['mode']}: {text}", "value": value,
                            "met": met, "verdict": _verdict(met, f"{value:,.1f} us, {value / bound:.1f}x the "
                                                                 f"bound", f"{value:,.1f} us")})


def format_summary(summary: dict[str, Any], quick: bool) -> str:
    head = (f"{'benchmark':<30} {'figure':<38} {'swarm':>10} {'redis':>10} {'nats':>10} {'zmq':>10} "
            f"{'swarm/peer':>10} {'trio limit':>11}")
    lines = [f"summary ({'--quick' if quick else 'full'} run); ratios from the same invocation "
             "(swarm/peer: throughput, the median over the rounds of swarm / the round's best peer; latency, "
             "swarm / Redis)", head, "-" * len(head)]
    for row in summary["rows"]:
        if "text" in row:
            lines.append(f"{row['benchmark']:<30} {row['figure']:<38} {row['text']}")
            continue
        spec = row.get("format", ",.0f")
        versus = row.get("versus")
        lines.append(f"{row['benchmark']:<30} {row['figure']:<38} {common.fmt(row.get('swarm'), spec):>10} "
                     + " ".join(f"{common.fmt(row.get(system), spec):>10}" for system in PEER_NAMES)
                     + f" {common.fmt(versus, '.2f'):>9}{'x' if versus else ' '} "
                     f"{common.fmt(row.get('trio_limit')):>11}")
    lines += ["", "targets (issues 7 and 13):"]
    lines += [f"  {target['target']:<58} {target['verdict']}" for target in summary["targets"]]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="run_all.py", description=__doc__.split("\n\n", 1)[0],
                                     epilog="See benchmarks/README.md and docs/performance.md.")
    parser.add_argument("--quick", action="store_true",
                        help="fewer messages and rounds, shorter phases (~3 minutes)")
    parser.add_argument("--json", metavar="FILE", help="write every figure and the summary to FILE")
    parser.add_argument("--no-redis", action="store_true", help="skip the Redis baselines (NATS and ZeroMQ "
                                                                 "still run)")
    parser.add_argument("--profile", metavar="NODE",
                        help="throughput: run this swarm node (e.g. node-1) under py-spy")
    parser.add_argument("--only", nargs="+", choices=BENCHMARKS, default=list(BENCHMARKS),
                        help="run only these benchmarks")
    args = parser.parse_args(argv)
    mode = "quick" if args.quick else "full"
    started = time.monotonic()
    report: dict[str, Any] = common.header("run_all", {"mode": mode, "only": args.only,
                                                       "arguments": SETTINGS[mode]})
    report["exit_status"] = {}
    results: dict[str, Any] = {}
    failed = False
    with tempfile.TemporaryDirectory(prefix="swarm-bench-") as folder:
        try:
            for name in args.only:
                extra = list(SETTINGS[mode][name])
                if args.no_redis and name in ("throughput", "latency"):
                    extra.append("--no-redis")
                if args.profile and name == "throughput":
                    extra += ["--profile", args.profile, "--profile-dir", folder]
                json_path = Path(folder) / f"{name}.json"
                status = run_benchmark(name, extra, json_path, TIMEOUT[mode])
                report["exit_status"][name] = status
                if status == 130:
                    common.progress("run_all: interrupted; every process was stopped")
                    return 130
                failed |= status != 0
                if json_path.exists():
                    results[name] = json.loads(json_path.read_text())
        except KeyboardInterrupt:
            common.progress("run_all: interrupted; every process was stopped")
            return 130
    summary = summarize(results)
    report["seconds"] = time.monotonic() - started
    report["summary"] = summary
    report["results"] = results
    print("\n" + format_summary(summary, args.quick), flush=True)
    common.progress(f"run_all: {report['seconds']:.0f} s")
    if args.json:
        common.write_report(args.json, report)
    if failed:
        common.progress("run_all: FAILED: a benchmark failed or lost/duplicated messages (see above)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
