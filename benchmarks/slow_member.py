"""Slow member: what one slow or stalled subscriber costs the others, against a baseline in the same run.

    .venv/bin/python benchmarks/slow_member.py [--slow sync|async|stop] [--nodes 8] [--rate 400]
                                               [--size 100] [--duration 10] [--stall 5] [--rounds 1]
                                               [--warmup 100] [--settle 60] [--json FILE]

Issue 12's target. A cluster of `--nodes` node processes (this script's `--child` mode, on 127.0.0.1,
ephemeral ports, default options): node-0 publishes `--rate` messages per second of `--size` bytes for
`--duration` seconds, every other node is subscribed. The same cluster runs two phases, `--rounds` times
in turn (baseline, slow, baseline, slow, ...), so that load from elsewhere on the machine falls on both:

* **baseline**: every subscriber's callback returns at once;
* **slow**: one member (node-1, "the slow member") is slow. `--slow sync`: its callback sleeps 5 ms per
  message (`time.sleep`, which blocks its node's event loop); `--slow async`: its callback awaits
  `trio.sleep(0.01)` per message; `--slow stop`: its callback is fast, but the process is stopped
  (SIGSTOP) for `--stall` seconds in the middle of the phase (longer than its failureTimeout of 3 s by
  default, so its peers cut their links to it), then continued (SIGCONT).

Message i of a round is due at start + i / rate (absolute schedule) and carries `time.time_ns()`; each
callback takes `time.time_ns()` on entry (one machine, one wall clock); the first `--warmup` (100)
messages of each round are counted but not timed. Per phase:

* the *other* subscribers' (the healthy ones') p50/p99 publish->delivery latency, over all of them and
  all the phase's rounds (nearest rank), and the messages they lost (published - delivered, exact);
* the publisher's lag: how far behind schedule its publishes were, max over i of actual - scheduled
  time of message i (the publisher awaits `conn.drain()` after every message);
* for the slow member: delivered, dropped as a slow consumer (`status()["slow_consumer_dropped"]` of the
  publisher's name, its delivery queue being full) and lost (published - delivered - dropped), once it
  has caught up: the parent waits until delivered + dropped reaches published, or until nothing moved
  for 10 s, or `--settle` seconds after the end of publishing.

Then the ratio of the others' p99 (slow / baseline) and issue 12's targets, each PASS or FAIL: others'
p99 <= 2x baseline, publisher lag <= 0.5 s, 0 lost at healthy nodes, and (for `stop`) 0 lost at the
stalled member (it is back within the 30 s of the frame caches, so it must pull all it missed). The
benchmark reports; a missed target is not a failure. Exit status: 0 when it ran and no healthy node lost
a message and nothing was delivered twice, 1 otherwise, 130 when interrupted.

    node   -> parent   listening <name> <host>:<port>    bound (then `ready`, joined)
    parent -> node     mode {"slow": "none"|"sync"|"async", "seconds": s}   the callback's behaviour
    parent -> node     begin {"round": r}                (subscribers) count round r from now; `begun`
    parent -> node     publish {"round", "messages", "rate", "pad"}    (node-0) -> published {...}
    parent -> node     collect {"round", "expected", "stall", "limit"} -> result {...}
    parent -> node     stop
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import time
from array import array
from collections.abc import Sequence
from typing import Any

import common
import trio

from swarm import harness
from swarm.connector import Connector

TOPIC = "swarm-slow-member"
PUBLISHER = "node-0"
SLOW = "node-1"
SYNC_SECONDS = 0.005    # --slow sync: the callback's time.sleep per message
ASYNC_SECONDS = 0.010   # --slow async: what the callback awaits per message
# A healthy subscriber that got nothing new for this long after publishing ended reports what it has.
HEALTHY_STALL = 5.0
# The slow member: nothing new (delivered or dropped) for this long, and it reports.
SLOW_STALL = 10.0
# Issue 12's targets.
TARGET_P99_RATIO = 2.0  # others' p99, slow phase / baseline
TARGET_LAG = 0.5        # seconds, the publisher's worst lag behind its schedule


# ---------------------------------------------------------------------- the child (`--child`)


class Recorder:
    """What one subscriber received, per round: message numbers, duplicates, latencies in ns."""

    def __init__(self) -> None:
        self.seen: dict[int, set[int]] = {}
        self.duplicates: dict[int, int] = {}
        self.out_of_order: dict[int, int] = {}
        self.highest: dict[int, int] = {}
        self.latencies: dict[int, array[int]] = {}
        self.mode = "none"
        self.seconds = 0.0
        self.warmup = 0

    def delivered(self, round_no: int) -> int:
        return len(self.seen.get(round_no, ()))

    def on_message(self, message: Any) -> Any:
        now = time.time_ns()
        round_no, index = message["r"], message["i"]
        seen = self.seen.setdefault(round_no, set())
        if index in seen:
            self.duplicates[round_no] = self.duplicates.get(round_no, 0) + 1
        else:
            seen.add(index)
            if index < self.highest.get(round_no, -1):
                self.out_of_order[round_no] = self.out_of_order.get(round_no, 0) + 1
            else:
                self.highest[round_no] = index
            if index >= self.warmup:
                self.latencies.setdefault(round_no, array("q")).append(now - message["t"])
        if self.mode == "sync":
            time.sleep(self.seconds)  # blocks the node's whole event loop, as a careless callback would
        elif self.mode == "async":
            return trio.sleep(self.seconds)  # awaited by the node's delivery task, in order
        return None


def _dropped(conn: Connector) -> int:
    return conn.status()["slow_consumer_dropped"].get(PUBLISHER, 0)


def _given_up(conn: Connector) -> int:
    """Messages of the publisher's stream given up as lost so far (`status()["losses"]`, its last
    entries; `messages_lost` events say the same)."""
    return sum(loss["messages"] for loss in conn.status()["losses"] if loss["origin"] == PUBLISHER)


async def _publish(conn: Connector, command: dict[str, Any]) -> None:
    name, round_no, rate = conn.server_name, command["round"], command["rate"]
    payload = bytes(command["pad"])
    now_ns = time.time_ns
    started = trio.current_time()
    lag = 0.0
    for index in range(command["messages"]):
        scheduled = started + index / rate
        await trio.sleep_until(scheduled)
        lag = max(lag, trio.current_time() - scheduled)
        conn.publish(TOPIC, {"from": name, "r": round_no, "i": index, "t": now_ns(), "pad": payload})
        await conn.drain()  # a well-behaved publisher: paced by the links that keep up
    common.say("published " + json.dumps({"round": round_no, "messages": command["messages"], "lag_s": lag,
                                          "seconds": trio.current_time() - started}))


async def _collect(conn: Connector, recorder: Recorder, before: dict[str, int],
                   command: dict[str, Any]) -> None:
    round_no, expected = command["round"], command["expected"]

    def progress() -> int:
        return recorder.delivered(round_no) + _dropped(conn) - before["dropped"]

    started = trio.current_time()
    behind = expected - progress()
    with trio.move_on_after(command["limit"]):
        await harness.wait_while_progressing(lambda: progress() >= expected, progress, command["stall"],
                                             poll=0.01)
    status = conn.status()
    counters = status["counters"]
    result = {"round": round_no, "name": conn.server_name, "expected": expected,
              "delivered": recorder.delivered(round_no), "duplicates": recorder.duplicates.get(round_no, 0),
              "out_of_order": recorder.out_of_order.get(round_no, 0),
              "dropped": _dropped(conn) - before["dropped"], "behind_at_end": behind,
              "queued": status["delivery_queue"],
              "waited_s": trio.current_time() - started, "swarm_losses": _given_up(conn) - before["given_up"],
              "counters": {key: value for key, value in sorted(counters.items()) if value},
              "samples_ns": recorder.latencies.get(round_no, array("q")).tolist()}
    common.say("result " + json.dumps(result))


async def run_child(options: dict[str, Any], subscribe: bool) -> int:
    recorder = Recorder()
    conn = Connector(options)
    if subscribe:
        conn.subscribe(TOPIC, recorder.on_message)
    before: dict[int, dict[str, int]] = {}
    async with harness.child_node(conn) as (nursery, commands):
        await conn.wait_ready()
        common.say(f"ready {conn.server_name}")
        async for line in commands:
            verb, _, rest = line.partition(" ")
            if verb == "mode":
                command = json.loads(rest)
                recorder.mode, recorder.seconds = command["slow"], command["seconds"]
                common.say("mode")
            elif verb == "begin":
                command = json.loads(rest)
                recorder.warmup = command["warmup"]
                before[command["round"]] = {"dropped": _dropped(conn), "given_up": _given_up(conn)}
                common.say("begun")
            elif verb == "publish":
                nursery.start_soon(_publish, conn, json.loads(rest))
            elif verb == "collect":
                command = json.loads(rest)
                nursery.start_soon(_collect, conn, recorder, before[command["round"]], command)
            elif verb == "stop":
                break
    return 0


# ---------------------------------------------------------------------- the parent


def _fields(messages: int, rounds: int) -> dict[str, Any]:
    """A message's fields but its padding, at their longest msgpack forms (a time_ns is over 2**32)."""
    return {"from": PUBLISHER, "r": rounds, "i": messages, "t": 1 << 62}


async def start_cluster(children: list[harness.Child], count: int, timeout: float, queue_bytes: int | None,
                        ) -> tuple[dict[str, harness.Child], dict[str, tuple[str, int]]]:
    """`count` child nodes named node-0, node-1, ...: node-0 (the publisher, not subscribed) without
    seeds, the others seeded with it; returns once every node's ring links are its true ring neighbours
    and the links made while joining have been pruned. `queue_bytes`: the slow member's
    deliveryQueueBytes (None: swarm's default)."""
    slow = {SLOW: {"deliveryQueueBytes": queue_bytes}} if queue_bytes is not None else None
    nodes, addresses, _ = await common.start_bench_cluster(
        children, count, unsubscribed=[PUBLISHER], timeout=timeout,
        child=[*common.script("slow_member.py"), "--child"], options_of=slow)
    with trio.fail_after(timeout):
        await common.wait_settled(addresses, quiet=2.0, limit=20.0)
    return nodes, addresses


async def stall(child: harness.Child, after: float, seconds: float, record: dict[str, Any]) -> None:
    """SIGSTOP `child` `after` seconds from now, SIGCONT it `seconds` later (whatever happens)."""
    await trio.sleep(after)
    pid = child.process.pid
    os.kill(pid, signal.SIGSTOP)
    stopped = time.monotonic()
    try:
        await trio.sleep(seconds)
    finally:
        os.kill(pid, signal.SIGCONT)
        record["stalled_s"] = time.monotonic() - stopped


async def run_round(nodes: dict[str, harness.Child], addresses: dict[str, tuple[str, int]],
                    args: argparse.Namespace, phase: str, round_no: int, messages: int,
                    pad: int) -> dict[str, Any]:
    """One round of one phase: set the slow member's callback, publish, collect every subscriber's count."""
    subscribers = [child for name, child in nodes.items() if name != PUBLISHER]
    slow_mode = args.slow if phase == "slow" and args.slow in ("sync", "async") else "none"
    seconds = {"sync": SYNC_SECONDS, "async": ASYNC_SECONDS}.get(slow_mode, 0.0)
    await nodes[SLOW].send("mode " + json.dumps({"slow": slow_mode, "seconds": seconds}))
    await nodes[SLOW].expect("mode")
    for child in subscribers:
        await child.send("begin " + json.dumps({"round": round_no, "warmup": args.warmup}))
    await harness.await_all(subscribers, "begun")
    record: dict[str, Any] = {}
    async with trio.open_nursery() as nursery:
        if phase == "slow" and args.slow == "stop":
            nursery.start_soon(stall, nodes[SLOW], max(0.0, (args.duration - args.stall) / 2), args.stall,
                               record)
        await nodes[PUBLISHER].send("publish " + json.dumps({"round": round_no, "messages": messages,
                                                             "rate": args.rate, "pad": pad}))
        published = json.loads(await nodes[PUBLISHER].expect("published"))
    for child in subscribers:
        slow = child.name == SLOW
        await child.send("collect " + json.dumps({
            "round": round_no, "expected": messages, "stall": SLOW_STALL if slow else HEALTHY_STALL,
            "limit": args.settle if slow else args.settle / 2}))
    answers = await harness.await_all(subscribers, "result")
    results = {name: json.loads(line) for name, line in sorted(answers.items())}
    if phase == "slow" and args.slow == "stop":
        # Its links were cut while it was stopped: let the overlay heal before the next round.
        with trio.fail_after(args.settle):
            await harness.wait_converged(addresses)
    others = common.latency_summary([sample for name, node in results.items() if name != SLOW
                                     for sample in node["samples_ns"]])
    return {"phase": phase, "round": round_no, "slow": slow_mode if phase == "slow" else "none",
            "others_p50_us": others["p50_us"], "others_p99_us": others["p99_us"],
            "published": published["messages"], "lag_s": published["lag_s"],
            "publish_seconds": published["seconds"], **record, "nodes": results}


def summarize_phase(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """A phase's rounds as one: the others' latency over all their samples, counts summed."""
    published = sum(run["published"] for run in rounds)
    samples = [sample for run in rounds for name, node in run["nodes"].items() if name != SLOW
               for sample in node["samples_ns"]]
    others: dict[str, dict[str, Any]] = {}
    for run in rounds:
        for name, node in sorted(run["nodes"].items()):
            if name == SLOW:
                continue
            entry = others.setdefault(name, {"delivered": 0, "lost": 0, "duplicates": 0, "out_of_order": 0,
                                             "samples": []})
            entry["delivered"] += node["delivered"]
            entry["lost"] += node["expected"] - node["delivered"]
            entry["duplicates"] += node["duplicates"]
            entry["out_of_order"] += node["out_of_order"]
            entry["samples"] += node["samples_ns"]
    for entry in others.values():
        latency = common.latency_summary(entry.pop("samples"))
        entry["p50_us"], entry["p99_us"] = latency["p50_us"], latency["p99_us"]
    slow_nodes = [run["nodes"][SLOW] for run in rounds]
    delivered = sum(node["delivered"] for node in slow_nodes)
    dropped = sum(node["dropped"] for node in slow_nodes)
    slow = {"name": SLOW, "published": published, "delivered": delivered, "dropped": dropped,
            "lost": published - delivered - dropped,
            "duplicates": sum(node["duplicates"] for node in slow_nodes),
            "out_of_order": sum(node["out_of_order"] for node in slow_nodes),
            "behind_when_publishing_ended": max(node["behind_at_end"] for node in slow_nodes),
            "queued_when_reported": sum(node["queued"] for node in slow_nodes),
            "swarm_losses": sum(node["swarm_losses"] for node in slow_nodes),
            "caught_up_s": max(node["waited_s"] for node in slow_nodes),
            "latency": common.latency_summary([s for node in slow_nodes for s in node["samples_ns"]]),
            "counters": slow_nodes[-1]["counters"]}
    return {"rounds": len(rounds), "published": published,
            "publisher_lag_s": max(run["lag_s"] for run in rounds),
            "stalled_s": [run["stalled_s"] for run in rounds if "stalled_s" in run],
            "others": {"latency": common.latency_summary(samples),
                       "lost": sum(entry["lost"] for entry in others.values()),
                       "duplicates": sum(entry["duplicates"] for entry in others.values()),
                       "out_of_order": sum(entry["out_of_order"] for entry in others.values()),
                       "per_node": others},
            "slow_member": slow}


def targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    baseline, slow = report["phases"]["baseline"], report["phases"]["slow"]
    p99 = report["ratio"]["others_p99"]
    lag = max(baseline["publisher_lag_s"], slow["publisher_lag_s"])
    found = [
        {"target": f"others' p99 <= {TARGET_P99_RATIO:g}x baseline", "value": p99,
         "met": bool(math.isfinite(p99) and p99 <= TARGET_P99_RATIO),
         "detail": f"{common.fmt(p99, '.2f')}x ({common.fmt(slow['others']['latency']['p99_us'])} us against "
                   f"{common.fmt(baseline['others']['latency']['p99_us'])} us)"},
        {"target": f"publisher lag <= {TARGET_LAG:g} s", "value": slow["publisher_lag_s"],
         "met": bool(slow["publisher_lag_s"] <= TARGET_LAG),
         "detail": f"{slow['publisher_lag_s'] * 1e3:.1f} ms in the slow phase "
                   f"({baseline['publisher_lag_s'] * 1e3:.1f} ms in the baseline; worst {lag * 1e3:.1f} ms)"},
        {"target": "0 lost at healthy nodes", "value": slow["others"]["lost"] + baseline["others"]["lost"],
         "met": slow["others"]["lost"] == 0 and baseline["others"]["lost"] == 0,
         "detail": f"{slow['others']['lost']} in the slow phase, {baseline['others']['lost']} in the "
                   f"baseline"},
    ]
    if report["settings"]["slow"] == "stop":
        member = slow["slow_member"]
        found.append({"target": "0 lost at the stalled member", "value": member["lost"],
                      "met": member["lost"] == 0,
                      "detail": f"{member['lost']} lost, {member['delivered']} delivered, "
                                f"{member['dropped']} dropped of {member['published']}"})
    return found


def format_report(report: dict[str, Any]) -> str:
    settings = report["settings"]
    slow_text = {"sync": f"its callback sleeps {SYNC_SECONDS * 1e3:g} ms (time.sleep)",
                 "async": f"its callback awaits {ASYNC_SECONDS * 1e3:g} ms (trio.sleep)",
                 "stop": f"SIGSTOPped for {settings['stall']:g} s mid-phase"}[settings["slow"]]
    lines = [f"swarm {report['swarm_version']} slow member ({settings['slow']}): {settings['nodes']} nodes, "
             f"{PUBLISHER} publishes {settings['rate']:,.0f} msgs/s of {settings['size']} bytes for "
             f"{settings['duration']:g} s per round, {settings['rounds']} round(s) per phase; slow member "
             f"{SLOW}: {slow_text}",
             f"({report['machine']['cpus']} CPUs, load {report['machine']['load_before']:.2f}; "
             f"{report['cluster']['links']} links once settled)", ""]
    head = (f"{'phase':<9} {'others p50 us':>13} {'p99 us':>8} {'max us':>8} {'lost':>5} {'dup':>4} "
            f"{'lag ms':>7} {'slow: delivered':>15} {'dropped':>8} {'lost':>5} {'caught up s':>11}")
    lines += [head, "-" * len(head)]
    for name in ("baseline", "slow"):
        phase = report["phases"][name]
        others, member = phase["others"], phase["slow_member"]
        latency = others["latency"]
        lines.append(f"{name:<9} {common.fmt(latency['p50_us']):>13} {common.fmt(latency['p99_us']):>8} "
                     f"{common.fmt(latency['max_us']):>8} {others['lost']:>5} {others['duplicates']:>4} "
                     f"{phase['publisher_lag_s'] * 1e3:>7.1f} "
                     f"{member['delivered']:>9}/{member['published']:<5} {member['dropped']:>8} "
                     f"{member['lost']:>5} {member['caught_up_s']:>11.1f}")
    ratio = report["ratio"]
    lines.append(f"others' latency, slow phase / baseline: p50 {common.fmt(ratio['others_p50'], '.2f')}x, "
                 f"p99 {common.fmt(ratio['others_p99'], '.2f')}x")
    slow = report["phases"]["slow"]
    per_node = ", ".join(f"{name} {common.fmt(entry['p99_us'])}"
                         for name, entry in slow["others"]["per_node"].items())
    lines.append(f"slow phase, p99 us of each other node: {per_node}")
    member = slow["slow_member"]
    lines.append(f"slow member in the slow phase: {member['behind_when_publishing_ended']} messages behind "
                 f"when publishing ended, caught up {member['caught_up_s']:.1f} s later; p50/p99 "
                 f"{common.fmt(member['latency']['p50_us'])}/{common.fmt(member['latency']['p99_us'])} us "
                 f"(queueing included), {member['swarm_losses']} reported as "
                 f"messages_lost, {member['duplicates']} duplicates"
                 + (f", stalled {', '.join(f'{s:.2f}' for s in slow['stalled_s'])} s" if slow["stalled_s"]
                    else ""))
    if settings["rounds"] > 1:
        for name in ("baseline", "slow"):
            spread = ", ".join(f"{common.fmt(run['others_p50_us'])}/{common.fmt(run['others_p99_us'])}"
                               for run in report["rounds"] if run["phase"] == name)
            lines.append(f"{name}, others' p50/p99 us of each round: {spread}")
    lines += ["", "targets (issue 12):"]
    for target in report["targets"]:
        lines.append(f"  {'PASS' if target['met'] else 'FAIL'}  {target['target']:<34} {target['detail']}")
    return "\n".join(lines)


async def benchmark(args: argparse.Namespace) -> int:
    messages = max(1, round(args.rate * args.duration))
    args.warmup = min(args.warmup, messages - 1)
    pad = common.padding_for(args.size, _fields(messages, 2 * args.rounds))
    report = common.header("slow_member", {
        "nodes": args.nodes, "rate": args.rate, "size": args.size, "duration": args.duration,
        "messages_per_round": messages, "rounds": args.rounds, "slow": args.slow, "stall": args.stall,
        "warmup": args.warmup, "queue_bytes": args.queue_bytes, "publisher": PUBLISHER, "slow_member": SLOW,
        "sync_seconds": SYNC_SECONDS, "async_seconds": ASYNC_SECONDS,
        "clock": "time.time_ns (wall clock, one machine)"})

    async def work(children: list[harness.Child]) -> dict[str, Any]:
        started = time.monotonic()
        nodes, addresses = await start_cluster(children, args.nodes, 30.0 + 3.0 * args.nodes,
                                               args.queue_bytes)
        statuses = await common.fetch_statuses(addresses)
        cluster = {"startup_seconds": time.monotonic() - started,
                   "links": sum(len(links) for links in common.overlay(statuses).values()) // 2,
                   "links_of_slow_member": sorted(statuses[SLOW]["links"])}
        rounds = []
        round_no = 0
        for index in range(args.rounds):
            for phase in ("baseline", "slow"):
                common.progress(f"slow_member: {phase}, round {index + 1}/{args.rounds} ...")
                rounds.append(await run_round(nodes, addresses, args, phase, round_no, messages, pad))
                round_no += 1
        after = await common.fetch_statuses(addresses)
        cluster["counters_after"] = {name: {key: value for key, value in sorted(status["counters"].items())
                                            if value and key in COUNTERS_SHOWN}
                                     for name, status in sorted(after.items())}
        await common.stop_children(list(nodes.values()))
        return {"cluster": cluster, "rounds": rounds}

    try:
        interrupted, result = await common.phase(f"slow_member: {args.nodes} nodes, --slow {args.slow}", work,
                                                 args.timeout)
    except BaseException as raised:  # noqa: B036 - re-raised unless the run failed in a known way
        common.progress(f"slow_member: error: {common.failure(raised, args.timeout, 'the run')}; "
                        f"every process was stopped")
        return 1
    if interrupted:
        common.progress("slow_member: interrupted; every process was stopped")
        return 130
    report["cluster"] = result["cluster"]
    report["phases"] = {phase: summarize_phase([run for run in result["rounds"] if run["phase"] == phase])
                        for phase in ("baseline", "slow")}
    baseline, slow = (report["phases"][phase]["others"]["latency"] for phase in ("baseline", "slow"))
    report["ratio"] = {"others_p50": common.ratio(slow["p50_us"], baseline["p50_us"]),
                       "others_p99": common.ratio(slow["p99_us"], baseline["p99_us"])}
    report["targets"] = targets(report)
    report["all_met"] = all(target["met"] for target in report["targets"])
    for run in result["rounds"]:
        for node in run["nodes"].values():
            del node["samples_ns"]
    report["rounds"] = result["rounds"]
    print(format_report(report), flush=True)
    if args.json:
        common.write_report(args.json, report)
    phases = report["phases"].values()
    if any(phase["others"]["lost"] or phase["others"]["duplicates"] or phase["slow_member"]["duplicates"]
           for phase in phases):
        common.progress("slow_member: FAILED: a healthy node lost messages, or a message was delivered twice")
        return 1
    return 0


# What the report keeps of each node's counters at the end (the ones about slowness and recovery).
COUNTERS_SHOWN = ("slow_consumer_dropped", "send_queue_overflow", "send_queue_overflow_messages",
                  "dropped_on_close", "slow_links_cut", "gaps_given_up", "pulls_sent", "pulls_answered",
                  "pulled_frames_sent", "failure_timeouts", "links_lost")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="slow_member.py", description=__doc__.split("\n\n", 1)[0],
                                     epilog="See benchmarks/README.md for what is measured and how.")
    parser.add_argument("--slow", choices=["sync", "async", "stop"], default="sync",
                        help="how the slow member is slow: a 5 ms time.sleep per message, a 10 ms await per "
                             "message, or SIGSTOPped for --stall seconds (default: sync)")
    parser.add_argument("--nodes", type=common.positive_int, default=8, help="node processes (default: 8)")
    parser.add_argument("--rate", type=common.positive_rate, default=400.0,
                        help="messages per second (default: 400)")
    parser.add_argument("--size", type=common.positive_int, default=100,
                        help="msgpack-encoded message size (default: 100)")
    parser.add_argument("--duration", type=common.positive_seconds, default=10.0,
                        help="seconds of publishing per round of each phase (default: 10)")
    parser.add_argument("--stall", type=common.positive_seconds, default=5.0,
                        help="--slow stop: seconds the member stays stopped (default: 5)")
    parser.add_argument("--rounds", type=common.positive_int, default=1,
                        help="baseline and slow phases alternate this many times (default: 1)")
    parser.add_argument("--queue-bytes", type=common.positive_int, metavar="BYTES",
                        help="the slow member's deliveryQueueBytes (default: swarm's, 64 MiB; at least "
                             "65536): a smaller queue overflows, and the slow member drops")
    parser.add_argument("--warmup", type=common.non_negative_int, default=100,
                        help="first messages of each round counted but not timed (default: 100)")
    parser.add_argument("--settle", type=common.positive_seconds, default=60.0,
                        help="bound on the slow member catching up after a round (default: 60 s)")
    parser.add_argument("--timeout", type=common.positive_seconds, default=600.0,
                        help="bound on the whole run (default: 600 s)")
    parser.add_argument("--json", metavar="FILE", help="also write every figure to FILE as JSON")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--options", help=argparse.SUPPRESS)
    parser.add_argument("--no-subscribe", action="store_true", help=argparse.SUPPRESS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.child:
        return trio.run(run_child, json.loads(args.options), not args.no_subscribe)
    if not (0 < args.rate <= 100_000 and 0 < args.duration <= 600 and 3 <= args.nodes <= 64
            and 1 <= args.rounds <= 20):
        parser.error("expected 0 < --rate <= 100000, 0 < --duration <= 600, 3 <= --nodes <= 64, "
                     "1 <= --rounds <= 20")
    if args.queue_bytes is not None and args.queue_bytes < 64 << 10:
        parser.error("--queue-bytes: expected at least 65536 (swarm's minimum deliveryQueueBytes)")
    try:
        common.padding_for(args.size, _fields(round(args.rate * args.duration), 2 * args.rounds))
    except ValueError as error:
        parser.error(f"--size {args.size}: {error}")
    return common.run(benchmark, args, "slow_member")


if __name__ == "__main__":
    sys.exit(main())
