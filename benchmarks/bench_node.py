"""One swarm node process for `latency.py` and `node_cost.py` (never run by hand).

    python benchmarks/bench_node.py --options JSON [--no-subscribe]

A `swarm.Connector` built from the JSON options, driven over stdin and stdout one line at a time like
the demo's nodes (`swarm.harness`):

    node   -> parent   listening <name> <host>:<port>        bound
    node   -> parent   ready <name>                          joined
    parent -> node     publish {"messages", "rate", "burst", "pad"}
    node   -> parent   published {"last_seq", "seconds"}     all handed to the kernel (`flush()`)
    parent -> node     receive {"expected", "warmup", "raw"}
    node   -> parent   receiving                             counting (the parent publishes after)
    node   -> parent   result {...}                          `expected` messages in all arrived (or
                                                             nothing new came for 10 s); with "raw",
                                                             every latency sample too
    parent -> node     subscribe                             subscribe now (after `--no-subscribe`)
    node   -> parent   subscribed
    parent -> node     stop                                  leave the cluster and exit 0

Messages are `{"from": <name>, "seq": n, "t": time.perf_counter_ns(), "pad": bytes}`; sequence numbers
go on from one `publish` to the next. `rate` 0 publishes as fast as flow control allows (`burst`
messages, then `await conn.drain()`, as the demo does); otherwise message k is due at start + k / rate.
The subscriber callback takes `perf_counter_ns()` (CLOCK_MONOTONIC, system-wide on Linux, so one clock
for every process) and keeps the publish->deliver time of every message whose seq is above `warmup`;
it counts duplicates and messages out of order per publisher. The node leaves when its stdin closes
(the parent is gone) or on SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from array import array
from typing import Any

import common
import trio

from swarm import harness
from swarm.connector import Connector

TOPIC = "swarm-bench"
STALL_TIMEOUT = 10.0


class Recorder:
    """What the node received, per publisher, and publish->deliver times in nanoseconds."""

    def __init__(self) -> None:
        self.seen: dict[str, set[int]] = {}
        self.highest: dict[str, int] = {}
        self.delivered = self.duplicates = self.out_of_order = 0
        self.warmup = 0
        self.latencies = array("q")
        self.first_ns: int | None = None
        self.last_ns: int | None = None

    def add(self, message: Any) -> None:
        now = time.perf_counter_ns()
        publisher, seq = message["from"], message["seq"]
        seqs = self.seen.get(publisher)
        if seqs is None:
            seqs = self.seen[publisher] = set()
        if seq in seqs:
            self.duplicates += 1
            return
        seqs.add(seq)
        self.delivered += 1
        if seq < self.highest.get(publisher, 0):
            self.out_of_order += 1
        else:
            self.highest[publisher] = seq
        if seq > self.warmup:
            self.latencies.append(now - message["t"])
        if self.first_ns is None:
            self.first_ns = now
        self.last_ns = now


async def _publish(conn: Connector, state: dict[str, int], command: dict[str, Any]) -> None:
    name = conn.server_name
    payload = bytes(command["pad"])
    rate, burst = command["rate"], command["burst"]
    perf_ns = time.perf_counter_ns
    started = trio.current_time()
    first = state["seq"] + 1
    for seq in range(first, first + command["messages"]):
        if rate:
            await trio.sleep_until(started + (seq - first) / rate)
        conn.publish(TOPIC, {"from": name, "seq": seq, "t": perf_ns(), "pad": payload})
        state["seq"] = seq
        if (seq - first + 1) % burst == 0:
            await conn.drain()
            if not rate:
                await trio.sleep(0)
    await conn.flush()
    common.say("published " + json.dumps({"last_seq": state["seq"],
                                          "seconds": trio.current_time() - started}))


async def _receive(conn: Connector, recorder: Recorder, command: dict[str, Any]) -> None:
    expected = command["expected"]
    await harness.wait_while_progressing(lambda: recorder.delivered >= expected, lambda: recorder.delivered,
                                      STALL_TIMEOUT, poll=0.01)
    status = conn.status()
    result = {"expected": expected, "delivered": recorder.delivered, "duplicates": recorder.duplicates,
              "out_of_order": recorder.out_of_order, "first_ns": recorder.first_ns,
              "last_ns": recorder.last_ns, "latency": common.latency_summary(recorder.latencies),
              "seen_entries": status["seen_entries"], "held": status["held"], "hops": status["hops"],
              "counters": {key: value for key, value in sorted(status["counters"].items()) if value}}
    if command.get("raw"):
        result["samples_ns"] = recorder.latencies.tolist()
    common.say("result " + json.dumps(common.json_safe(result)))


async def run_node(options: dict[str, Any], subscribe: bool) -> int:
    recorder = Recorder()
    state = {"seq": 0}
    conn = Connector(options)
    if subscribe:
        conn.subscribe(TOPIC, recorder.add)
    async with harness.child_node(conn) as (nursery, commands):
        await conn.wait_ready()
        common.say(f"ready {conn.server_name}")
        async for line in commands:
            verb, _, rest = line.partition(" ")
            if verb == "publish":
                nursery.start_soon(_publish, conn, state, json.loads(rest))
            elif verb == "receive":
                command = json.loads(rest)
                recorder.warmup = command.get("warmup", 0)
                nursery.start_soon(_receive, conn, recorder, command)
                common.say("receiving")  # the parent publishes only now: the warm-up is set
            elif verb == "subscribe":
                conn.subscribe(TOPIC, recorder.add)
                common.say("subscribed")
            elif verb == "stop":
                break
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench_node.py", description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--options", required=True, help="the Connector's options, as a JSON object")
    parser.add_argument("--no-subscribe", action="store_true", help="do not subscribe until told to")
    args = parser.parse_args(argv)
    return trio.run(run_node, json.loads(args.options), not args.no_subscribe)


if __name__ == "__main__":
    sys.exit(main())
