"""Run every benchmark of issue 7 in one go; print each one's table, then a summary against the targets.

    .venv/bin/python benchmarks/run_all.py [--quick] [--json FILE] [--no-redis] [--profile NODE]
                                           [--only throughput latency node_cost]

Runs, one after another, each as its own process (each also runs alone, see benchmarks/README.md):

* `throughput.py`: 1 publisher -> 4 subscriber processes, 100-byte and 1 KiB messages; swarm, Redis
  pub/sub (same process counts, pipelined publishes of the same burst size) and the raw trio limit
  (one TCP connection, 100 frames per `send_all`);
* `latency.py`: publish->deliver p50/p99/p99.9 at 1,000 msgs/s: swarm direct neighbours, swarm across
  the longest path of a 16-node cluster, Redis;
* `node_cost.py`: CPU per 10,000 messages relayed by a middle node, resident memory at idle and after
  load, the seen-record's entries and bytes at 1,000 msgs/s.

`--quick` runs fewer messages and shorter phases (the whole suite in about 1 minute on 2 cores; the
full run takes about 2). Every baseline runs in the same invocation as what it is compared with; the
summary states each of swarm's figures as a ratio to Redis's and to the raw trio limit, and says for
each target of issue 7 whether it is met and by how much it is missed. `--json FILE` writes every
benchmark's full JSON and the summary into one file. Memory in the summary is in MB of 10^6 bytes (the
targets' 48 MB and 32 MB read that way, the stricter reading). Exit status: 0 when every benchmark ran
and nothing was lost or duplicated (a missed target is reported, not a failure), 1 otherwise, 130 when
interrupted (Ctrl-C: each benchmark stops its own processes first).
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
SETTINGS = {
    "full": {"throughput": ["--messages", "100000", "--baseline-messages", "1000000",
                            "--size", "100", "1024"],
             "latency": ["--duration", "10", "--rounds", "5"],
             "node_cost": ["--messages", "50000", "--seen-seconds", "5", "--sim-seconds", "30"]},
    "quick": {"throughput": ["--messages", "30000", "--baseline-messages", "300000",
                             "--size", "100", "1024"],
              "latency": ["--duration", "3", "--rounds", "2"],
              "node_cost": ["--messages", "30000", "--seen-seconds", "2", "--sim-seconds", "10"]},
}
# Bound on one benchmark process (each also bounds its own phases).
TIMEOUT = {"full": 600.0, "quick": 240.0}
# After Ctrl-C or a timeout, how long a benchmark may take to stop its processes before it is killed.
STOP_WAIT = 60.0
# Issue 7's targets.
TARGET_THROUGHPUT = 1.0   # per-subscriber msgs/s, swarm / Redis, 100-byte messages, zero lost and duplicated
TARGET_P50 = 1.0          # neighbour p50, swarm / Redis
TARGET_P99 = 1.5          # neighbour p99, swarm / Redis
TARGET_IDLE_RSS = 48e6    # bytes, a node at idle
TARGET_SEEN = 32e6        # bytes, the seen-record at 1,000 msgs/s cluster-wide


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
        for run in throughput["runs"]:
            swarm_total, ratio = run["swarm"]["total"], run["ratio"]
            redis_total = (run.get("redis") or {}).get("total") or {}
            base = run["baseline"]["msgs_per_s"]
            label = f"throughput {run['size']} B"
            rows.append({"benchmark": label, "figure": "msgs/s per subscriber (mean)",
                         "swarm": swarm_total["mean_per_subscriber_msgs_per_s"],
                         "redis": redis_total.get("mean_per_subscriber_msgs_per_s"),
                         "swarm_vs_redis": ratio.get("swarm_vs_redis_per_subscriber"),
                         "trio_limit": base, "swarm_vs_limit": ratio["per_subscriber"],
                         "redis_vs_limit": ratio.get("redis_vs_baseline_per_subscriber")})
            rows.append({"benchmark": label, "figure": "msgs/s delivered in total",
                         "swarm": swarm_total["msgs_per_s"], "redis": redis_total.get("msgs_per_s"),
                         "swarm_vs_redis": ratio.get("swarm_vs_redis_total"), "trio_limit": base,
                         "swarm_vs_limit": ratio["total"],
                         "redis_vs_limit": common.ratio(redis_total.get("msgs_per_s"), base)})
            rows.append({"benchmark": label, "figure": "lost / duplicated (swarm | redis)",
                         "text": f"{swarm_total['lost']} / {swarm_total['duplicates']} | "
                                 + (f"{redis_total['lost']} / {redis_total['duplicates']}" if redis_total
                                    else "-")})
            if run["size"] == 100:
                value = ratio.get("swarm_vs_redis_per_subscriber")
                clean = not (swarm_total["lost"] or swarm_total["duplicates"])
                met = None if value is None or not math.isfinite(value) else bool(value >= 1.0 and clean)
                missed = (f"{value:.2f}x Redis, {1 - value:.0%} short (needs {1 / value:.2f}x the rate)"
                          if value else "")
                if not clean:
                    missed += f"; {swarm_total['lost']} lost, {swarm_total['duplicates']} duplicated"
                targets.append({"target": "msgs/s per subscriber >= 1.0x Redis (100 B, 0 lost, 0 dup)",
                                "value": value, "met": met,
                                "verdict": _verdict(met, missed, f"{value:.2f}x Redis" if value else "")})
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
                             "swarm_vs_redis": ratios.get(percentile)})
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


def format_summary(summary: dict[str, Any], quick: bool) -> str:
    head = (f"{'benchmark':<30} {'figure':<40} {'swarm':>10} {'redis':>10} {'swarm/redis':>11} "
            f"{'trio limit':>11} {'swarm/limit':>11} {'redis/limit':>11}")
    lines = [f"summary ({'--quick' if quick else 'full'} run); ratios from the same invocation", head,
             "-" * len(head)]
    for row in summary["rows"]:
        if "text" in row:
            lines.append(f"{row['benchmark']:<30} {row['figure']:<40} {row['text']:>21}")
            continue
        spec = row.get("format", ",.0f")
        versus = row.get("swarm_vs_redis")
        lines.append(f"{row['benchmark']:<30} {row['figure']:<40} {common.fmt(row.get('swarm'), spec):>10} "
                     f"{common.fmt(row.get('redis'), spec):>10} "
                     f"{common.fmt(versus, '.2f'):>10}{'x' if versus else ' '} "
                     f"{common.fmt(row.get('trio_limit')):>11} "
                     f"{common.fmt(row.get('swarm_vs_limit'), '.3f'):>11} "
                     f"{common.fmt(row.get('redis_vs_limit'), '.3f'):>11}")
    lines += ["", "targets (issue 7):"]
    lines += [f"  {target['target']:<58} {target['verdict']}" for target in summary["targets"]]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="run_all.py", description=__doc__.split("\n\n", 1)[0],
                                     epilog="See benchmarks/README.md and docs/performance.md.")
    parser.add_argument("--quick", action="store_true", help="fewer messages, shorter phases (~2 minutes)")
    parser.add_argument("--json", metavar="FILE", help="write every figure and the summary to FILE")
    parser.add_argument("--no-redis", action="store_true", help="skip the Redis baselines")
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
