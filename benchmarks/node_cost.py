"""Per-node cost: CPU per relayed message, resident memory at idle and under load, seen-record size.

    .venv/bin/python benchmarks/node_cost.py [--messages 50000] [--size 100] [--idle 2] [--seen-seconds 5]
                                             [--sim-seconds 30] [--scale-nodes 4 8 12]
                                             [--scale-modes flood tree] [--scale-rate 2000]
                                             [--scale-seconds 5] [--scale-rounds 1] [--scale-only]
                                             [--json FILE]

What it measures:

* **CPU per 10,000 relayed messages.** A line A -> B -> C inside a ring: 5 `bench_node.py` processes
  with `localLinks` 2 and `shortcuts` 0, so once converged each node links to its two ring neighbours
  only (checked from the statuses: the run fails if the overlay is not that cycle). A = node-0, B its
  successor on the ring, C the one after. A publishes `--messages` messages as fast as flow control
  allows (`--burst`, then `drain()`); C counts them. The first copy reaches C through B (2 hops; the
  other way round the ring is 3), so B reads each message once and writes it once, to C: B is the relay
  under test. (On a loaded machine A's queue to B can fall behind its queue to E; a copy that reaches B
  the long way round first is forwarded to no one, A being its origin. So B's cost is divided by the
  messages it did forward, never by the number A published.) B's utime + stime (`/proc/PID/stat`, 10
  ms ticks) is read before and after the round; the messages it relayed are the growth of its
  `forwarded_messages` counter (`forwarded` counts the DATA frames, each a batch of messages) (status
  over the wire, `fetch_status`, read once B's counters have stopped moving), which shows the traffic
  went through B. Two rounds: B not
  subscribed (relay only: nothing decoded), then B subscribed (relay + deliver: decode and callback
  too). A's and C's CPU per 10,000 messages is shown beside it. B's idle CPU rate (measured over `--idle`
  seconds before) is shown; it is not subtracted.
* **Resident memory.** `VmRSS` (now) and `VmHWM` (peak) of `/proc/PID/status` of each node after the
  cluster has linked and idled `--idle` seconds, and again after the load rounds; for comparison, the
  same for a bare interpreter and for one that has only imported swarm.
* **Seen-record at 1,000 msgs/s cluster-wide.** (a) In the real nodes: all five publish 1,000/5
  msgs/s for `--seen-seconds`; every node's status `seen_entries` (origin records + held messages) and
  `held` are read mid-run and at the end. (b) Bytes, in-process: a `swarm.protocol.seen.SeenRecord` with
  the node's default settings (100,000 entries, 120 s TTL, 1 s reorder timeout and settle) is fed real
  DATA frames (`wire.encode_data`, keyed and itemised as `NodeState._on_data` does) at 1,000 msgs/s from
  1, 16 and 1,000 origins, three copies of each (flooding), each copy arriving 0.1-3 ms after
  publication at random (so messages of a fast origin overtake each other and get held), with
  `expire()` every 100 ms, for `--sim-seconds` simulated seconds; its size is the memory `tracemalloc`
  sees allocated since just before the record was made (the simulation's own few pending frames
  included), sampled every simulated second. (c) The bound: the same record filled to its
  100,000 entries with origin records, and one origin holding 10,000 messages behind a gap, bytes per
  entry by `tracemalloc`.

* **N nodes at a fixed rate (the scaling table).** For each of `--scale-nodes` (4, 8, 12) and each
  broadcast mode of `--scale-modes` (flood, tree), a cluster of that many `bench_node.py` processes with
  default options but `broadcast`; once its links have settled (`common.wait_settled`), node-0, not
  subscribed, publishes `--scale-rate` msgs/s (2,000) for `--scale-seconds`, and every other node is
  subscribed and times each message (publish -> callback, `perf_counter_ns`, one clock). Per run: p50
  and p99 over all subscribers' messages (but the first `--scale-warmup` of each), the CPU seconds of
  every node process from just before publishing to the last subscriber's result per delivery, and the
  DATA frames every node read (`data_frames_received`) per delivery. `--scale-rounds` repeats the six
  runs in turn; the table has each figure's median over the rounds.

Exit status 0 when C got every message exactly once in every round and every scaling run lost and
duplicated nothing, 1 otherwise, 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import gc
import heapq
import json
import random
import statistics
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Sequence
from typing import Any

import common
import trio

from swarm import harness
from swarm.protocol import wire
from swarm.protocol.seen import SeenRecord
from swarm.topology import ring
from swarm.transport.engine import fetch_status

RING_NODES = 5
RING_OPTIONS = {"localLinks": 2, "shortcuts": 0}
# Bound on waiting for the links made while joining to be pruned.
RING_TIMEOUT = 30.0
WATCHED = ("forwarded", "forwarded_messages", "data_frames_received", "data_frames_sent", "received_new",
           "duplicates", "delivered", "dropped_no_subscriber", "send_queue_overflow")
# The node's defaults (swarm.protocol.state.CoreConfig): seenMaxEntries, seenTtl, reorderTimeout.
SEEN_MAX_ENTRIES, SEEN_TTL, REORDER_TIMEOUT = 100_000, 120.0, 1.0
# The scaling table (issue 13): the node counts, modes and rate its targets name.
SCALE_NODES, SCALE_MODES, SCALE_RATE = (4, 8, 12), ("flood", "tree"), 2000.0
SCALE_PUBLISHER = "node-0"


def _fields(messages: int, publisher: str) -> dict[str, Any]:
    return {"from": publisher, "seq": messages, "t": 1 << 62}


# ---------------------------------------------------------------------- processes: CPU, RSS, entries


def ring_roles(count: int = RING_NODES) -> dict[str, str]:
    """A = node-0, B its successor on the ring, C the one after (positions: a hash of the name)."""
    order = sorted((f"node-{index}" for index in range(count)), key=ring.position)
    first = order.index("node-0")
    return {role: order[(first + step) % count] for step, role in enumerate("ABC")}


def _is_ring(graph: dict[str, set[str]], roles: dict[str, str]) -> bool:
    """Every node has exactly two links, and B's are A and C."""
    return all(len(peers) == 2 for peers in graph.values()) and graph[roles["B"]] == {roles["A"], roles["C"]}


def _memory(cluster: dict[str, harness.Child]) -> dict[str, dict[str, int]]:
    return {name: common.memory_kib(child.process.pid) for name, child in cluster.items()}


def _cpu(cluster: dict[str, harness.Child]) -> dict[str, float]:
    return {name: common.cpu_seconds(child.process.pid) for name, child in cluster.items()}


async def _quiet_status(address: tuple[str, int], limit: float = 10.0) -> dict[str, Any]:
    """The node's status once its DATA counters stopped moving (two reads 0.2 s apart), at most `limit` s."""
    status = await fetch_status(*address)
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        await trio.sleep(0.2)
        again = await fetch_status(*address)
        moving = any(again["counters"].get(key) != status["counters"].get(key) for key in WATCHED)
        status = again
        if not moving:
            break
    return status


async def _round(cluster: dict[str, harness.Child], addresses: dict[str, tuple[str, int]],
                 roles: dict[str, str], messages: int, expected_total: int, pad: int,
                 burst: int) -> dict[str, Any]:
    """A publishes `messages` at full speed; C waits for `expected_total` in all; B's cost per message."""
    a, b, c = roles["A"], roles["B"], roles["C"]
    before_status = await _quiet_status(addresses[b])
    before_cpu = _cpu(cluster)
    started = time.monotonic()
    await cluster[c].send("receive " + json.dumps({"expected": expected_total, "warmup": 0}))
    await cluster[c].expect("receiving")
    await cluster[a].send("publish " + json.dumps({"messages": messages, "rate": 0, "burst": burst,
                                                   "pad": pad}))
    await cluster[a].expect("published")
    result = json.loads(await cluster[c].expect("result"))
    seconds = time.monotonic() - started
    after_status = await _quiet_status(addresses[b])
    after_cpu = _cpu(cluster)
    counters = {key: after_status["counters"].get(key, 0) - before_status["counters"].get(key, 0)
                for key in WATCHED}
    forwarded, frames = counters["forwarded_messages"], counters["forwarded"]
    cpu = {name: after_cpu[name] - before_cpu[name] for name in cluster}
    return {"messages": messages, "c_expected": result["expected"], "c_delivered": result["delivered"],
            "c_duplicates": result["duplicates"], "c_out_of_order": result["out_of_order"],
            "c_hops": result["hops"], "seconds": seconds, "relay_counters": counters, "cpu_seconds": cpu,
            "relay_cpu_s_per_10k": common.ratio(cpu[b] * 10_000, forwarded),
            "relay_frames_in_per_frame": common.ratio(counters["data_frames_received"], frames),
            "relay_frames_out_per_frame": common.ratio(counters["data_frames_sent"], frames),
            "relay_messages_per_frame": common.ratio(forwarded, frames),
            "publisher_cpu_s_per_10k": cpu[a] * 10_000 / messages,
            "receiver_cpu_s_per_10k": cpu[c] * 10_000 / messages,
            "relay_seen_entries": after_status["seen_entries"], "relay_held": after_status["held"]}


async def run_cluster_cost(children: list[harness.Child], messages: int, size: int, burst: int, idle: float,
                           seen_seconds: float) -> dict[str, Any]:
    roles = ring_roles()
    b = roles["B"]
    cluster, addresses, statuses = await common.start_bench_cluster(children, RING_NODES, RING_OPTIONS,
                                                                    unsubscribed=[b])
    # Converged ring links come first; the links made while joining are pruned a few gossip rounds later.
    deadline = time.monotonic() + RING_TIMEOUT
    while not _is_ring(common.overlay(statuses), roles):
        if time.monotonic() > deadline:
            links = {name: sorted(status["links"]) for name, status in statuses.items()}
            raise harness.HarnessError(f"the overlay did not become the ring A-B-C-... in {RING_TIMEOUT:g} "
                                       f"s: {links}")
        await trio.sleep(0.2)
        statuses = await common.fetch_statuses(addresses)
    links = {name: sorted(status["links"]) for name, status in sorted(statuses.items())}
    cpu_before_idle = common.cpu_seconds(cluster[b].process.pid)
    await trio.sleep(idle)
    idle_cpu_rate = (common.cpu_seconds(cluster[b].process.pid) - cpu_before_idle) / idle
    idle_memory = _memory(cluster)
    pad = common.padding_for(size, _fields(2 * messages, roles["A"]))
    common.progress("  round 1: B relays only (not subscribed)")
    relay_only = await _round(cluster, addresses, roles, messages, messages, pad, burst)
    await cluster[b].send("subscribe")
    await cluster[b].expect("subscribed")
    common.progress("  round 2: B relays and delivers (subscribed)")
    relay_deliver = await _round(cluster, addresses, roles, messages, 2 * messages, pad, burst)
    load_memory = _memory(cluster)

    common.progress(f"  round 3: 1,000 msgs/s cluster-wide for {seen_seconds:g} s (seen-record entries)")
    per_node_rate = 1000.0 / len(cluster)
    paced = max(1, round(per_node_rate * seen_seconds))
    for child in cluster.values():
        await child.send("publish " + json.dumps({"messages": paced, "rate": per_node_rate,
                                                   "burst": burst, "pad": pad}))
    await trio.sleep(seen_seconds / 2)
    mid = await common.fetch_statuses(addresses)
    await harness.await_all(list(cluster.values()), "published")
    end = await common.fetch_statuses(addresses)
    await common.stop_children(list(cluster.values()))
    return {"roles": roles, "links": links, "idle_seconds": idle, "relay_idle_cpu_s_per_s": idle_cpu_rate,
            "memory_idle_kib": idle_memory, "memory_after_load_kib": load_memory,
            "relay_only": relay_only, "relay_and_deliver": relay_deliver,
            "seen_at_1000_per_s": {
                "publishers": len(cluster), "seconds": seen_seconds,
                "mid_run": {name: {"seen_entries": s["seen_entries"], "held": s["held"]}
                            for name, s in sorted(mid.items())},
                "end": {name: {"seen_entries": s["seen_entries"], "held": s["held"]}
                        for name, s in sorted(end.items())}}}


IMPORTS = (("bare python", ""), ("python + import ssl", "import ssl"),
           ("python + import trio", "import trio"),
           ("python + import cryptography.x509", "import cryptography.x509"),
           ("python + import swarm (cli, connector)", "import swarm.cli, swarm.connector"))


def interpreter_memory() -> dict[str, dict[str, int]]:
    """VmHWM/VmRSS of a bare interpreter and of ones that imported part or all of what a node imports."""
    figures = {}
    reader = ("\nfor line in open('/proc/self/status'):\n"
              "    if line.startswith(('VmRSS', 'VmHWM')): print(line.split()[0][:-1], line.split()[1])")
    for label, imports in IMPORTS:
        output = subprocess.run([sys.executable, "-c", imports + reader], capture_output=True, text=True,
                                timeout=60, check=True).stdout
        figures[label] = {key: int(value) for key, value in (line.split() for line in output.splitlines())}
    return figures


# ---------------------------------------------------------------------- in-process: bytes of the record


class _Feeder:
    """Real DATA frames from `origins` nodes into a SeenRecord, as NodeState._on_data keys them."""

    def __init__(self, record: SeenRecord, origins: int, size: int, seed: int = 1) -> None:
        self.record = record
        self.rng = random.Random(seed)
        self.origins = [wire.encode_origin(f"node-{index}") for index in range(origins)]
        self.epochs = [self.rng.getrandbits(63) for _ in range(origins)]
        self.seqs = [0] * origins
        self.topic = wire.encode_topic("swarm-bench")
        self.message = wire.encode_message({"from": "node-0", "seq": 1, "t": 1 << 62,
                                            "pad": bytes(common.padding_for(size, _fields(1, "node-0")))})

    def frame(self, origin: int, seq: int | None = None) -> bytes:
        if seq is None:
            self.seqs[origin] += 1
            seq = self.seqs[origin]
        return wire.encode_data(self.origins[origin], self.epochs[origin], seq, self.topic, self.message,
                                1 << 20)

    def observe(self, frame: bytes, now: float) -> None:
        origin, key, seq, count = wire.data_stream(frame)
        ((topic, offset, _),) = wire.data_entries(frame)
        self.record.observe(key, seq, now, (frame, wire.hops(frame), topic, offset, origin), count)


def simulate_seen(origins: int, rate: float, seconds: float, size: int, copies: int = 3) -> dict[str, Any]:
    """Feed the record `rate` msgs/s from `origins` origins for `seconds` simulated; its size over time."""
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        record = SeenRecord(SEEN_MAX_ENTRIES, SEEN_TTL, REORDER_TIMEOUT, settle=REORDER_TIMEOUT)
        feeder = _Feeder(record, origins, size)
        rng = feeder.rng
        events: list[tuple[float, int, bytes]] = []
        order = 0
        total = round(rate * seconds)
        next_expire, next_sample = 0.1, 1.0
        samples: list[int] = []
        entries_max = held_max = 0

        def run_until(moment: float) -> None:
            nonlocal next_expire, next_sample, entries_max, held_max
            while events and events[0][0] <= moment:
                when, _, body = heapq.heappop(events)
                while next_expire <= when:
                    record.expire(next_expire)
                    next_expire += 0.1
                feeder.observe(body, when)
                entries_max = max(entries_max, len(record))
                held_max = max(held_max, record.held_count)
            while next_sample <= moment:
                samples.append(tracemalloc.get_traced_memory()[0] - base)
                next_sample += 1.0

        for index in range(total):
            now = index / rate
            run_until(now)
            body = feeder.frame(index % origins)
            for _ in range(copies):
                order += 1
                heapq.heappush(events, (now + rng.uniform(0.0001, 0.003), order, body))
        run_until(seconds + 1.0)
        return {"origins": origins, "rate": rate, "simulated_seconds": seconds, "copies": copies,
                "messages": total, "entries_max": entries_max, "held_max": held_max,
                "entries_end": len(record), "duplicates": record.duplicates,
                "gaps_given_up": record.gaps_given_up,
                "bytes_max": max(samples, default=0), "bytes_end": samples[-1] if samples else 0}
    finally:
        tracemalloc.stop()


def seen_bound(size: int) -> dict[str, Any]:
    """Bytes of the record at its bound: 100,000 origin records; and per message held behind a gap."""
    results: dict[str, Any] = {}
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        record = SeenRecord(SEEN_MAX_ENTRIES, SEEN_TTL, REORDER_TIMEOUT, settle=REORDER_TIMEOUT)
        feeder = _Feeder(record, SEEN_MAX_ENTRIES, size)
        feeder_bytes = tracemalloc.get_traced_memory()[0] - base  # the feeder's own names and epochs
        for origin in range(SEEN_MAX_ENTRIES):
            feeder.observe(feeder.frame(origin), 0.0)  # seq 1 of each: a record, nothing held
        used = tracemalloc.get_traced_memory()[0] - base - feeder_bytes
        results["origin_records"] = {"entries": len(record), "bytes": used,
                                     "bytes_per_entry": used / len(record)}
        del record, feeder
        gc.collect()
        base = tracemalloc.get_traced_memory()[0]
        record = SeenRecord(SEEN_MAX_ENTRIES, SEEN_TTL, REORDER_TIMEOUT, settle=REORDER_TIMEOUT)
        feeder = _Feeder(record, 1, size)
        feeder.observe(feeder.frame(0, 1), 0.0)
        start = tracemalloc.get_traced_memory()[0]
        held = 10_000
        for seq in range(3, 3 + held):  # seq 2 never comes: everything after it is held
            feeder.observe(feeder.frame(0, seq), 0.0)
        used = tracemalloc.get_traced_memory()[0] - start
        results["held_messages"] = {"held": record.held_count, "message_bytes": size, "bytes": used,
                                    "bytes_per_entry": used / max(1, record.held_count)}
    finally:
        tracemalloc.stop()
    per_record = results["origin_records"]["bytes_per_entry"]
    per_held = results["held_messages"]["bytes_per_entry"]
    results["max_entries"] = SEEN_MAX_ENTRIES
    results["bound_bytes_all_records"] = per_record * SEEN_MAX_ENTRIES
    results["bound_bytes_all_held"] = per_held * SEEN_MAX_ENTRIES
    return results


# ---------------------------------------------------------------------- N nodes at a fixed rate


async def run_scale(children: list[harness.Child], nodes: int, mode: str, rate: float, seconds: float,
                    size: int, warmup: int, settle: float = 3.0) -> dict[str, Any]:
    """`nodes` bench nodes in broadcast `mode`; once no link changed for `settle` seconds, node-0 (not
    subscribed) publishes `rate` msgs/s for `seconds`, and every other node is subscribed and times each
    message. Latency over all subscribers, CPU of every node process and DATA frames read by every node,
    per delivery."""
    started = time.monotonic()
    cluster, addresses, _ = await common.start_bench_cluster(
        children, nodes, {"broadcast": mode}, unsubscribed=[SCALE_PUBLISHER], timeout=30.0 + 3.0 * nodes)
    before = await common.wait_settled(addresses, quiet=settle)
    startup = time.monotonic() - started
    messages = max(1, round(rate * seconds))
    pad = common.padding_for(size, _fields(messages, SCALE_PUBLISHER))
    subscribers = [name for name in cluster if name != SCALE_PUBLISHER]
    for name in subscribers:
        await cluster[name].send("receive " + json.dumps({"expected": messages, "warmup": warmup,
                                                          "raw": True}))
    await harness.await_all([cluster[name] for name in subscribers], "receiving")
    cpu_before = _cpu(cluster)
    await cluster[SCALE_PUBLISHER].send("publish " + json.dumps({"messages": messages, "rate": rate,
                                                                  "burst": harness.BATCH, "pad": pad}))
    published = json.loads(await cluster[SCALE_PUBLISHER].expect("published"))
    answers = await harness.await_all([cluster[name] for name in subscribers], "result")
    cpu_after = _cpu(cluster)
    after = await common.fetch_statuses(addresses)
    await common.stop_children(list(cluster.values()))
    results = {name: json.loads(answer) for name, answer in answers.items()}
    delivered = sum(result["delivered"] for result in results.values())
    # Every counter's growth over the run, summed over the nodes (the tree's prunes and grafts, pulls, ...).
    counters: dict[str, int] = {}
    for name in after:
        for key, value in after[name]["counters"].items():
            counters[key] = counters.get(key, 0) + value - before[name]["counters"].get(key, 0)
    frames = counters.get("data_frames_received", 0)
    cpu = sum(cpu_after.values()) - sum(cpu_before.values())
    latency = common.latency_summary([sample for result in results.values()
                                      for sample in result["samples_ns"]])
    return {"nodes": nodes, "mode": mode, "rate": rate, "messages": messages, "size": size,
            "startup_seconds": startup, "publish_seconds": published["seconds"],
            "links": sum(len(links) for links in common.overlay(before).values()) // 2,
            "expected": messages * len(subscribers), "delivered": delivered,
            "lost": messages * len(subscribers) - delivered,
            "duplicates": sum(result["duplicates"] for result in results.values()),
            "out_of_order": sum(result["out_of_order"] for result in results.values()),
            "latency": latency, "cpu_seconds": cpu,
            "cpu_us_per_delivery": common.ratio(cpu * 1e6, delivered),
            "frames_per_delivery": common.ratio(frames, delivered),
            "cores_busy": common.ratio(cpu, published["seconds"]),
            "counters": {key: value for key, value in sorted(counters.items()) if value}}


def scale_table(rounds: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (nodes, mode): the median over the rounds of p50, p99, CPU and frames per delivery;
    counts summed."""
    rows = []
    for key in dict.fromkeys((run["nodes"], run["mode"]) for run in rounds):
        runs = [run for run in rounds if (run["nodes"], run["mode"]) == key]
        row: dict[str, Any] = {"nodes": key[0], "mode": key[1], "rounds": len(runs)}
        for figure, pick in (("p50_us", lambda run: run["latency"]["p50_us"]),
                             ("p99_us", lambda run: run["latency"]["p99_us"]),
                             ("cpu_us_per_delivery", lambda run: run["cpu_us_per_delivery"]),
                             ("frames_per_delivery", lambda run: run["frames_per_delivery"]),
                             ("cores_busy", lambda run: run["cores_busy"])):
            row[figure] = statistics.median(pick(run) for run in runs)
        for count in ("expected", "delivered", "lost", "duplicates", "out_of_order"):
            row[count] = sum(run[count] for run in runs)
        row["p99_each_round_us"] = [run["latency"]["p99_us"] for run in runs]
        rows.append(row)
    return rows


def format_scale(report: dict[str, Any]) -> str:
    settings = report["settings"]
    lines = [f"N nodes at {settings['scale_rate']:,.0f} msgs/s from one publisher (node-0, not subscribed; "
             f"every other node subscribed), {settings['size']}-byte messages, {settings['scale_seconds']:g} "
             f"s per run, {settings['scale_rounds']} round(s), medians; the first {settings['scale_warmup']} "
             f"messages not timed", ""]
    head = (f"{'nodes':>5} {'mode':<6} {'p50 us':>8} {'p99 us':>8} {'CPU us/deliv':>12} {'frames/deliv':>12} "
            f"{'cores':>5} {'delivered/expected':>19} {'lost':>5} {'dup':>4}  p99 us, each round")
    lines += [head, "-" * len(head)]
    for row in report["scale"]:
        got = f"{row['delivered']}/{row['expected']}"
        lines.append(f"{row['nodes']:>5} {row['mode']:<6} {common.fmt(row['p50_us']):>8} "
                     f"{common.fmt(row['p99_us']):>8} {common.fmt(row['cpu_us_per_delivery'], '.1f'):>12} "
                     f"{common.fmt(row['frames_per_delivery'], '.2f'):>12} {row['cores_busy']:>5.2f} "
                     f"{got:>19} {row['lost']:>5} {row['duplicates']:>4}  "
                     + " ".join(common.fmt(value) for value in row["p99_each_round_us"]))
    lines.append("p50/p99: publish -> callback over every subscriber's messages (nearest rank); CPU: user + "
                 "system of every node process while publishing, per delivery; frames: DATA frames read by "
                 "every node, per delivery (1.0 is a spanning tree); cores: CPUs the nodes kept busy")
    return "\n".join(lines)


# ---------------------------------------------------------------------- report


def _mib(kib: float) -> str:
    return f"{kib / 1024:.1f}"


def format_report(report: dict[str, Any]) -> str:
    cost = report["cluster"]
    settings = report["settings"]
    roles = cost["roles"]
    lines = [f"swarm {report['swarm_version']} per-node cost ({report['machine']['cpus']} CPUs, load "
             f"{report['machine']['load_before']:.2f}); a ring of {RING_NODES} nodes (localLinks 2, "
             f"shortcuts 0): A={roles['A']} publishes, B={roles['B']} relays, C={roles['C']} receives;",
             f"{settings['messages']:,} messages of {settings['size']} bytes per round, as fast as flow "
             f"control allows", ""]
    head = (f"{'round':<28} {'B relayed':>9} {'msg/fr':>6} {'B s/10k':>8} {'B in/fr':>7} {'B out/fr':>8} "
            f"{'A s/10k':>8} {'C s/10k':>8} {'C got':>15} {'dup':>4} {'seconds':>7}")
    lines += [head, "-" * len(head)]
    for key, label in (("relay_only", "relay only (B unsubscribed)"),
                       ("relay_and_deliver", "relay + deliver (B subscr.)")):
        run = cost[key]
        got = f"{run['c_delivered']}/{run['c_expected']}"
        lines.append(f"{label:<28} {run['relay_counters']['forwarded_messages']:>9} "
                     f"{common.fmt(run['relay_messages_per_frame'], '.1f'):>6} "
                     f"{common.fmt(run['relay_cpu_s_per_10k'], '.3f'):>8} "
                     f"{common.fmt(run['relay_frames_in_per_frame'], '.2f'):>7} "
                     f"{common.fmt(run['relay_frames_out_per_frame'], '.2f'):>8} "
                     f"{run['publisher_cpu_s_per_10k']:>8.3f} {run['receiver_cpu_s_per_10k']:>8.3f} "
                     f"{got:>15} {run['c_duplicates']:>4} {run['seconds']:>7.2f}")
    lines.append(f"s/10k: CPU seconds (user + system) per 10,000 messages (B: relayed ones); msg/fr: "
                 f"messages per DATA frame B relayed (a frame is a batch); in/fr, out/fr: DATA frames B read "
                 f"and wrote per frame it relayed; B's idle CPU: "
                 f"{cost['relay_idle_cpu_s_per_s'] * 1000:.1f} ms/s, not subtracted")
    lines.append("")
    lines.append(f"{'resident memory, MiB':<46} {'VmRSS':>7} {'VmHWM (peak)':>12}")
    for role in "ABC":
        name = roles[role]
        for key, label in (("memory_idle_kib", "idle"), ("memory_after_load_kib", "after the rounds")):
            figures = cost[key][name]
            lines.append(f"{f'{role} ({name}), {label}':<46} {_mib(figures['VmRSS']):>7} "
                         f"{_mib(figures['VmHWM']):>12}")
    for label, figures in report["interpreter_memory"].items():
        lines.append(f"{label:<46} {_mib(figures['VmRSS']):>7} {_mib(figures['VmHWM']):>12}")
    lines.append("")
    seen = cost["seen_at_1000_per_s"]
    entries = ", ".join(f"{name} {figures['seen_entries']} ({figures['held']} held)"
                        for name, figures in seen["mid_run"].items())
    lines.append(f"seen-record entries in the nodes, {seen['publishers']} publishers at 1,000 msgs/s in all, "
                 f"mid-run: {entries}")
    lines.append(f"{'seen-record in-process (tracemalloc)':<40} {'origins':>7} {'messages':>9} "
                 f"{'entries max':>11} {'held max':>8} {'bytes max':>10}")
    for sim in report["seen_simulated"]:
        lines.append(f"{'1,000 msgs/s, 3 copies each':<40} {sim['origins']:>7,} {sim['messages']:>9,} "
                     f"{sim['entries_max']:>11,} {sim['held_max']:>8,} {sim['bytes_max']:>10,}")
    bound = report["seen_bound"]
    lines.append(f"bound ({bound['max_entries']:,} entries): "
                 f"{bound['origin_records']['bytes_per_entry']:.0f} bytes per origin record -> "
                 f"{bound['bound_bytes_all_records'] / 2**20:.1f} MiB all records; "
                 f"{bound['held_messages']['bytes_per_entry']:.0f} bytes per held "
                 f"{bound['held_messages']['message_bytes']}-byte message -> "
                 f"{bound['bound_bytes_all_held'] / 2**20:.1f} MiB all held")
    return "\n".join(lines)


async def benchmark(args: argparse.Namespace) -> int:
    report = common.header("node_cost", {"messages": args.messages, "size": args.size, "burst": args.burst,
                                         "idle": args.idle, "seen_seconds": args.seen_seconds,
                                         "sim_seconds": args.sim_seconds, "scale_nodes": args.scale_nodes,
                                         "scale_modes": args.scale_modes, "scale_rate": args.scale_rate,
                                         "scale_seconds": args.scale_seconds,
                                         "scale_rounds": args.scale_rounds,
                                         "scale_warmup": args.scale_warmup, "scale_only": args.scale_only})
    failed = False
    if not args.scale_only:
        common.progress(f"node cost: a ring of {RING_NODES} nodes ...")
        started = time.monotonic()
        try:
            interrupted, cluster = await harness.supervise(
                lambda children: run_cluster_cost(children, args.messages, args.size, args.burst, args.idle,
                                                  args.seen_seconds), args.timeout)
        except BaseException as raised:  # noqa: B036 - re-raised unless the run failed in a known way
            reason = common.failure(raised, args.timeout, "the run")
            common.progress(f"node cost: error: {reason}; every process was stopped")
            return 1
        if interrupted:
            common.progress("node cost: interrupted; every process was stopped")
            return 130
        common.progress(f"node cost: cluster done in {time.monotonic() - started:.1f} s; "
                        "in-process seen-record ...")
        report["cluster"] = cluster
        report["interpreter_memory"] = interpreter_memory()
        report["seen_simulated"] = [simulate_seen(origins, 1000.0, args.sim_seconds, args.size)
                                    for origins in (1, 16, 1000)]
        report["seen_bound"] = seen_bound(args.size)
        print(format_report(report), flush=True)
        rounds = [cluster["relay_only"], cluster["relay_and_deliver"]]
        if any(r["c_delivered"] != r["c_expected"] or r["c_duplicates"] for r in rounds):
            common.progress("node cost: FAILED: C lost or duplicated messages")
            failed = True
    report["scale_runs"] = []
    try:
        for index in range(1, args.scale_rounds + 1):
            for nodes in args.scale_nodes:
                for mode in args.scale_modes:
                    interrupted, run = await common.phase(
                        f"scaling, round {index}/{args.scale_rounds}: {nodes} nodes, {mode}",
                        lambda children, nodes=nodes, mode=mode: run_scale(
                            children, nodes, mode, args.scale_rate, args.scale_seconds, args.size,
                            args.scale_warmup, args.scale_settle), args.timeout)
                    if interrupted:
                        common.progress("node cost: interrupted; every process was stopped")
                        return 130
                    report["scale_runs"].append(run)
    except BaseException as raised:  # noqa: B036 - re-raised unless the run failed in a known way
        common.progress(f"node cost: error: {common.failure(raised, args.timeout)}; every process was "
                        "stopped")
        return 1
    report["scale"] = scale_table(report["scale_runs"])
    if report["scale"]:
        print(("\n" if not args.scale_only else "") + format_scale(report), flush=True)
    if any(row["lost"] or row["duplicates"] for row in report["scale"]):
        common.progress("node cost: FAILED: a scaling run lost or duplicated messages")
        failed = True
    if args.json:
        common.write_report(args.json, report)
    return 1 if failed else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="node_cost.py", description=__doc__.split("\n\n", 1)[0],
                                     epilog="See benchmarks/README.md for what is measured and how.")
    parser.add_argument("--messages", type=common.positive_int, default=50_000,
                        help="messages per round (default: 50000)")
    parser.add_argument("--size", type=common.positive_int, default=100,
                        help="msgpack-encoded message size (default: 100)")
    parser.add_argument("--burst", type=common.positive_int, default=harness.BATCH,
                        help=f"messages between two drain() calls (default: {harness.BATCH})")
    parser.add_argument("--idle", type=common.positive_seconds, default=2.0,
                        help="idle seconds before measuring (default: 2)")
    parser.add_argument("--seen-seconds", type=common.positive_seconds, default=5.0,
                        help="seconds of the 1,000 msgs/s round in the nodes (default: 5)")
    parser.add_argument("--sim-seconds", type=common.positive_seconds, default=30.0,
                        help="simulated seconds of the in-process seen-record run (default: 30)")
    parser.add_argument("--scale-nodes", type=common.positive_int, nargs="*", default=list(SCALE_NODES),
                        metavar="N", help="node counts of the scaling table; none to skip it (default: "
                                          "4 8 12)")
    parser.add_argument("--scale-modes", nargs="+", choices=SCALE_MODES, default=list(SCALE_MODES),
                        help="broadcast modes of the scaling table (default: flood tree)")
    parser.add_argument("--scale-rate", type=common.positive_rate, default=SCALE_RATE,
                        help="msgs/s node-0 publishes in the scaling table (default: 2000)")
    parser.add_argument("--scale-seconds", type=common.positive_seconds, default=5.0,
                        help="seconds of publishing per scaling run (default: 5)")
    parser.add_argument("--scale-rounds", type=common.positive_int, default=1,
                        help="the scaling runs repeat in turn this many times; medians (default: 1)")
    parser.add_argument("--scale-warmup", type=common.non_negative_int, default=100,
                        help="first messages of each scaling run not timed (default: 100)")
    parser.add_argument("--scale-settle", type=common.positive_seconds, default=3.0,
                        help="a scaling run starts once no link changed for this long (default: 3 s)")
    parser.add_argument("--scale-only", action="store_true",
                        help="only the scaling table (no ring, memory or seen-record figures)")
    parser.add_argument("--timeout", type=common.positive_seconds, default=180.0,
                        help="bound on the ring run, and on each scaling run (default: 180 s)")
    parser.add_argument("--json", metavar="FILE", help="also write every figure to FILE as JSON")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not (1 <= args.messages <= 10_000_000 and 0 < args.idle <= 60 and 0 < args.seen_seconds <= 600
            and 0 < args.sim_seconds <= 3600 and args.burst >= 1 and args.timeout > 0
            and all(2 <= nodes <= 64 for nodes in args.scale_nodes) and args.scale_rate <= 100_000
            and args.scale_seconds <= 600 and args.scale_rounds <= 20):
        parser.error("a count or a duration is out of range")
    try:
        common.padding_for(args.size, _fields(2 * args.messages, "node-0"))
    except ValueError as error:
        parser.error(f"--size {args.size}: {error}")
    return common.run(benchmark, args, "node cost")


if __name__ == "__main__":
    sys.exit(main())
