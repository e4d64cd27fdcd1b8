"""Latency: publish->deliver p50/p99/p99.9 at a fixed rate, swarm against Redis pub/sub, same run.

    .venv/bin/python benchmarks/latency.py [--rate 1000] [--duration 6] [--rounds 3] [--size 100]
                                           [--nodes 16] [--warmup 100] [--no-redis] [--json FILE]

What it measures (one publisher at `--rate` messages per second, `--size`-byte messages, each process
its own OS process on 127.0.0.1, `--duration` seconds of publishing per system). Redis and swarm's
direct neighbours run in `--rounds` alternating rounds (Redis, swarm, Redis, swarm, ...; each round its
own fresh processes), so that load from elsewhere on this shared machine falls on both alike; each
system's percentiles are over all its rounds' samples, and each round's p50/p99 is shown for the spread:

* **swarm, direct neighbours**: a 2-node cluster (`bench_node.py` processes); node-0 publishes, node-1
  measures.
* **swarm, longest path**: a `--nodes`-node cluster (default options, every node subscribed). Once every
  node's ring links are its true ring neighbours and the links made while joining have been pruned (no
  link changed for 3 s), the links of all nodes' statuses give the overlay; the pair at the largest BFS
  distance (its diameter) is chosen, one end publishes and the other measures. Every node's
  `data_frames_received` before and after gives the DATA frames read per delivery (flooding's cost),
  and the nodes' CPU seconds (`/proc/PID/stat`) over the publishing time how many CPUs they kept busy.
  The far node's `hops` counter (links crossed by the first copy of each message) is shown as a check.
* **Redis**: Debian's `redis-server` started on a free loopback port (no persistence) and stopped after;
  one publisher process (one awaited PUBLISH per message, redis-py) and one subscriber process
  (redis-py with the hiredis parser, `get_message`), see `redis_clients.py`.

Message k is published at start + k / rate (absolute schedule, so a late message does not shift the
others) with `time.perf_counter_ns()` in it; the receiver takes `perf_counter_ns()` in its callback (the
subscriber's `get_message` for Redis). `perf_counter` is CLOCK_MONOTONIC on Linux, one system-wide clock,
so both ends read the same clock. The first `--warmup` messages are delivered and counted but not timed
(connections and caches warm up). Percentiles are nearest-rank over the timed messages. Ratios:
swarm / Redis for p50, p99 and p99.9; the issue's targets are neighbour p50 <= 1.0x and p99 <= 1.5x
Redis's. If `redis-server` (or redis-py/hiredis) is missing, the Redis phase is skipped with a message
saying how to get it. Exit status: 0 when nothing was lost or duplicated, 1 otherwise, 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Sequence
from typing import Any

import common
import trio

from swarm import harness


def _fields(messages: int, publisher: str = "node-0") -> dict[str, Any]:
    """A message's fields but its padding: the largest seq and a clock reading over 2**32 (msgpack's
    longest integer form, as `perf_counter_ns()` is a few seconds after boot)."""
    return {"from": publisher, "seq": messages, "t": 1 << 62}


async def run_swarm(children: list[harness.Child], nodes: int, messages: int, rate: float, size: int,
                    warmup: int, raw: bool = False,
                    broadcast: str = common.DEFAULT_BROADCAST) -> dict[str, Any]:
    started = time.monotonic()
    cluster, addresses, _ = await common.start_bench_cluster(children, nodes, {"broadcast": broadcast},
                                                             timeout=30.0 + 3.0 * nodes)
    statuses = await common.wait_settled(addresses)
    startup = time.monotonic() - started
    graph = common.overlay(statuses)
    source, target, hops = common.longest_path(graph)
    pad = common.padding_for(size, _fields(messages, source))
    cpu_before = sum(common.cpu_seconds(child.process.pid) for child in cluster.values())
    await cluster[target].send("receive " + json.dumps({"expected": messages, "warmup": warmup,
                                                        "raw": raw}))
    await cluster[target].expect("receiving")  # its warm-up count is set before the first message
    await cluster[source].send("publish " + json.dumps({"messages": messages, "rate": rate,
                                                        "burst": harness.BATCH, "pad": pad}))
    published = json.loads(await cluster[source].expect("published"))
    result = json.loads(await cluster[target].expect("result"))
    cpu = sum(common.cpu_seconds(child.process.pid) for child in cluster.values()) - cpu_before
    after = await common.fetch_statuses(addresses)
    await common.stop_children(list(cluster.values()))
    # Every DATA frame read by any node, per delivery (one per node but the publisher, per message): what
    # flooding costs; 1.0 would be a spanning tree (at 1,000 msgs/s each message is a frame of its own).
    frames = sum(after[name]["counters"].get("data_frames_received", 0)
                 - statuses[name]["counters"].get("data_frames_received", 0) for name in after)
    return {"nodes": nodes, "source": source, "target": target, "bfs_hops": hops,
            "bfs_hops_after": common.bfs_distances(common.overlay(after), source).get(target),
            "links_per_node": {name: len(links) for name, links in sorted(graph.items())},
            "links": sum(len(links) for links in graph.values()) // 2,
            "frames_per_delivery": common.ratio(frames, messages * (nodes - 1)),
            "startup_seconds": startup, "publish_seconds": published["seconds"],
            "cpu_seconds_all_nodes": cpu, "cores_busy": cpu / published["seconds"],
            "expected": result["expected"], "delivered": result["delivered"],
            "lost": result["expected"] - result["delivered"], "duplicates": result["duplicates"],
            "out_of_order": result["out_of_order"], "latency": result["latency"],
            "target_hops_histogram": result["hops"],
            "seen_entries_max": max(status["seen_entries"] for status in after.values()),
            "held_max": max(status["held"] for status in after.values()),
            **({"samples_ns": result["samples_ns"]} if raw else {})}


async def run_redis(children: list[harness.Child], messages: int, rate: float, pad: int,
                    warmup: int) -> dict[str, Any]:
    server, port = await common.start_redis(children)
    clients = common.script("redis_clients.py")
    subscriber = await harness.start_process(children, "redis-subscriber", [
        *clients, "subscriber", "--port", str(port), "--messages", str(messages), "--mode", "latency",
        "--warmup", str(warmup)])
    with trio.fail_after(common.STARTUP_TIMEOUT):
        await subscriber.expect("ready")
    publisher = await harness.start_process(children, "redis-publisher", [
        *clients, "publisher", "--port", str(port), "--messages", str(messages), "--mode", "latency",
        "--rate", str(rate), "--pad", str(pad)])
    with trio.fail_after(common.STARTUP_TIMEOUT):
        await publisher.expect("ready")
    await publisher.send("go")
    sent = json.loads(await publisher.expect("sent"))
    result = json.loads(await subscriber.expect("result"))
    version = await common.redis_server_version(port)
    await common.stop_children([subscriber, publisher])
    await common.stop_redis(server)
    return {"server_version": version, **common.redis_versions(), "publish_seconds": sent["seconds"],
            "fewest_receivers": sent["fewest_receivers"],
            "expected": result["expected"], "delivered": result["delivered"],
            "lost": result["expected"] - result["delivered"], "duplicates": result["duplicates"],
            "out_of_order": result["out_of_order"], "latency": result["latency"],
            "samples_ns": result["samples_ns"]}


def pool(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """One system's interleaved rounds as one run: counts summed, percentiles over all rounds' samples
    (which are dropped), each round's own p50/p99 kept to show the spread."""
    pooled = {key: value for key, value in rounds[0].items() if key not in ("samples_ns", "latency")}
    for key in ("expected", "delivered", "lost", "duplicates", "out_of_order"):
        pooled[key] = sum(run[key] for run in rounds)
    pooled["latency"] = common.latency_summary([sample for run in rounds for sample in run["samples_ns"]])
    pooled["rounds"] = [{"p50_us": run["latency"]["p50_us"], "p99_us": run["latency"]["p99_us"],
                         "p99_9_us": run["latency"]["p99_9_us"]} for run in rounds]
    return pooled


def ratios(swarm_run: dict[str, Any] | None, redis_run: dict[str, Any] | None) -> dict[str, float]:
    if swarm_run is None or redis_run is None:
        return {}
    return {key: common.ratio(swarm_run["latency"][f"{key}_us"], redis_run["latency"][f"{key}_us"])
            for key in ("p50", "p99", "p99_9")}


def format_report(report: dict[str, Any]) -> str:
    settings = report["settings"]
    lines = [f"swarm {report['swarm_version']} latency: {settings['rate']:,.0f} msgs/s, "
             f"{settings['size']}-byte messages, one publisher, {settings['duration']:g} s per system "
             f"({settings['messages']:,} messages; Redis and swarm's neighbours in {settings['rounds']} "
             f"alternating rounds,",
             f"the first {settings['warmup']} messages of each round not timed); clock: {settings['clock']} "
             f"({report['machine']['cpus']} CPUs, load {report['machine']['load_before']:.2f})", ""]
    head = (f"{'run':<34} {'hops':>4} {'delivered/expected':>18} {'lost':>4} {'dup':>4} {'p50 us':>8} "
            f"{'p90 us':>8} {'p99 us':>8} {'p99.9 us':>9} {'max us':>8}")
    lines += [head, "-" * len(head)]
    labels = {"swarm_neighbours": "swarm, direct neighbours (2 nodes)",
              "swarm_longest_path": f"swarm, longest path ({settings['nodes']} nodes)",
              "redis": "redis (pub -> server -> sub)"}
    for key, label in labels.items():
        run = report["runs"].get(key)
        if run is None:
            continue
        latency = run["latency"]
        hops = str(run.get("bfs_hops", "-"))
        delivered = f"{run['delivered']}/{run['expected']}"
        lines.append(f"{label:<34} {hops:>4} {delivered:>18} {run['lost']:>4} {run['duplicates']:>4} "
                     f"{common.fmt(latency['p50_us']):>8} {common.fmt(latency['p90_us']):>8} "
                     f"{common.fmt(latency['p99_us']):>8} {common.fmt(latency['p99_9_us']):>9} "
                     f"{common.fmt(latency['max_us']):>8}")
    longest = report["runs"].get("swarm_longest_path")
    if longest is not None:
        lines.append(f"{longest['nodes']} nodes, {longest['links']} links once settled; every node read "
                     f"{common.fmt(longest['frames_per_delivery'], '.2f')} DATA frames per message delivered "
                     f"to it (flooding; a spanning tree would be 1); the nodes kept "
                     f"{longest['cores_busy']:.2f} of {report['machine']['cpus']} CPUs busy")
        histogram = ", ".join(f"{hops}: {count}" for hops, count in longest["target_hops_histogram"].items())
        lines.append(f"longest path: {longest['source']} -> {longest['target']}, {longest['bfs_hops']} hops "
                     f"by BFS over the status links ({longest['bfs_hops_after']} after the run); links the "
                     f"first copies crossed at the far node (hops: messages): {histogram}")
    for key, label in (("redis", "redis"), ("swarm_neighbours", "swarm neighbours")):
        run = report["runs"].get(key)
        if run is not None and len(run.get("rounds", ())) > 1:
            spread = ", ".join(f"{common.fmt(r['p50_us'])}/{common.fmt(r['p99_us'])}" for r in run["rounds"])
            lines.append(f"{label}, p50/p99 us of each round: {spread}")
    if report.get("redis_skipped"):
        lines.append(report["redis_skipped"])
    for key, label in (("neighbours", "direct neighbours"), ("longest_path", "longest path")):
        figures = report["ratio"].get(key)
        if figures:
            lines.append(f"swarm {label} / redis: p50 {figures['p50']:.2f}x, p99 {figures['p99']:.2f}x, "
                         f"p99.9 {figures['p99_9']:.2f}x")
    return "\n".join(lines)


async def benchmark(args: argparse.Namespace) -> int:
    per_round = max(1, round(args.rate * args.duration / args.rounds))
    messages = max(1, round(args.rate * args.duration))
    warmup = min(args.warmup, per_round - 1)
    pad = common.padding_for(args.size, _fields(per_round))
    report = common.header("latency", {
        "rate": args.rate, "duration": args.duration, "rounds": args.rounds, "messages": messages,
        "messages_per_round": per_round, "size": args.size, "warmup": warmup, "nodes": args.nodes,
        "broadcast": args.broadcast,
        "clock": "time.perf_counter_ns (clock_gettime(CLOCK_MONOTONIC), system-wide)"})
    report["runs"] = {}
    skipped = common.redis_skipped(args.no_redis)
    if skipped:
        report["redis_skipped"] = skipped
    # Redis and swarm's neighbours alternate, round by round, so a burst of load from elsewhere on the
    # machine falls on both alike; then the long path, in one go (its cluster is slow to start).
    phases: list[tuple[str, str, Any]] = []
    for index in range(1, args.rounds + 1):
        if "redis_skipped" not in report:
            phases.append(("redis", f"redis, round {index}/{args.rounds}",
                           lambda children: run_redis(children, per_round, args.rate, pad, warmup)))
        phases.append(("swarm_neighbours", f"swarm, direct neighbours, round {index}/{args.rounds}",
                       lambda children: run_swarm(children, 2, per_round, args.rate, args.size, warmup,
                                                  raw=True, broadcast=args.broadcast)))
    phases.append(("swarm_longest_path", f"swarm, longest path of {args.nodes} nodes",
                   lambda children: run_swarm(children, args.nodes, messages, args.rate, args.size, warmup,
                                              broadcast=args.broadcast)))
    rounds: dict[str, list[dict[str, Any]]] = {}
    try:
        for key, label, work in phases:
            interrupted, result = await common.phase(label, work, args.timeout)
            if interrupted:
                common.progress("latency: interrupted; every process was stopped")
                return 130
            rounds.setdefault(key, []).append(result)
    except BaseException as raised:  # noqa: B036 - re-raised unless the run failed in a known way
        common.progress(f"latency: error: {common.failure(raised, args.timeout)}; every process was stopped")
        return 1
    runs = report["runs"]
    for key in ("swarm_neighbours", "swarm_longest_path", "redis"):
        if key in rounds:
            runs[key] = pool(rounds[key]) if key != "swarm_longest_path" else rounds[key][0]
    report["ratio"] = {"neighbours": ratios(runs.get("swarm_neighbours"), runs.get("redis")),
                       "longest_path": ratios(runs.get("swarm_longest_path"), runs.get("redis"))}
    print(format_report(report), flush=True)
    if args.json:
        common.write_report(args.json, report)
    swarm_runs = [runs[key] for key in ("swarm_neighbours", "swarm_longest_path")]
    if any(run["lost"] or run["duplicates"] for run in swarm_runs):
        common.progress("latency: FAILED: swarm lost or duplicated messages")
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="latency.py", description=__doc__.split("\n\n", 1)[0],
                                     epilog="See benchmarks/README.md for what is measured and how.")
    parser.add_argument("--rate", type=common.positive_rate, default=1000.0,
                        help="messages per second (default: 1000)")
    parser.add_argument("--duration", type=common.positive_seconds, default=6.0,
                        help="seconds of publishing per system (default: 6)")
    parser.add_argument("--rounds", type=common.positive_int, default=3,
                        help="Redis and swarm's neighbours alternate in this many rounds (default: 3)")
    parser.add_argument("--size", type=common.positive_int, default=100,
                        help="msgpack-encoded message size (default: 100)")
    parser.add_argument("--nodes", type=common.positive_int, default=16,
                        help="nodes of the longest-path cluster (default: 16)")
    parser.add_argument("--warmup", type=common.non_negative_int, default=100,
                        help="first messages not timed (default: 100)")
    parser.add_argument("--no-redis", action="store_true", help="skip the Redis phase")
    parser.add_argument("--timeout", type=common.positive_seconds, default=120.0,
                        help="bound on one phase (default: 120 s)")
    parser.add_argument("--broadcast", choices=["flood", "tree"], default=common.DEFAULT_BROADCAST,
                        help="swarm's broadcast mode (the nodes' `broadcast` option; default: "
                             f"{common.DEFAULT_BROADCAST}, the nodes' own)")
    parser.add_argument("--json", metavar="FILE", help="also write every figure to FILE as JSON")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not (0 < args.rate <= 100_000 and 0 < args.duration <= 600 and 2 <= args.nodes <= 64
            and 1 <= args.rounds <= 20):
        parser.error("expected 0 < --rate <= 100000, 0 < --duration <= 600, 2 <= --nodes <= 64, "
                     "1 <= --rounds <= 20")
    if not math.isfinite(args.timeout) or args.timeout <= 0:
        parser.error("--timeout: expected a positive number of seconds")
    try:
        common.padding_for(args.size, _fields(round(args.rate * args.duration)))
    except ValueError as error:
        parser.error(f"--size {args.size}: {error}")
    return common.run(benchmark, args, "latency")


if __name__ == "__main__":
    sys.exit(main())
