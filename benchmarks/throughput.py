"""Throughput: messages delivered per second from 1 publisher to 4 subscriber processes, swarm vs Redis.

    .venv/bin/python benchmarks/throughput.py [--messages N] [--size BYTES ...] [--subscribers 4]
                                              [--baseline-messages N] [--burst B] [--no-redis]
                                              [--profile NODE] [--json FILE]

What it measures, for each `--size` (the msgpack-encoded size of one message, 100 bytes by default):

* **swarm**: 1 + `--subscribers` swarm nodes, each its own OS process (`python -m swarm _demo-node`, the
  demo's node, see `swarm.harness`), on 127.0.0.1 with ephemeral ports, linked as the current topology
  links them. One node publishes `--messages` messages as fast as flow control allows: it publishes
  `--burst` messages, then `await conn.drain()`, so its send queues never overflow and nothing may be
  lost (frames a relaying node drops from a full queue are counted and shown). Each subscriber counts
  what it receives (lost, duplicated, out of order, by sequence number) and when its first and its last
  message arrived; its rate is delivered / (last - first). The total is all deliveries / (the latest
  last - the earliest first).
* **Redis pub/sub**, in the same invocation, with the same process counts: Debian's `redis-server`
  started on a free loopback port without persistence and stopped after (`common.start_redis`), one
  publisher and `--subscribers` subscriber processes (`redis_clients.py`, redis-py with the hiredis
  parser) carrying the same message bytes. The publisher pipelines `--burst` PUBLISH commands per
  `execute()` (which waits for their replies), as swarm's publisher drains every `--burst` messages;
  each subscriber counts into the demo's `Tally` as a swarm node does. Same rate definitions. Skipped,
  with a message saying how to get it, when redis-server or redis-py/hiredis is missing.
* **baseline**, in the same invocation: Python's own limit, with no swarm in the data path. One sender
  process and one receiver process on one TCP connection over loopback, trio on both ends; the sender
  msgpack-encodes each message (same fields as swarm's) into a length-prefixed frame of the same size
  as swarm's DATA frame for that message, and coalesces 100 frames into one `send_all`; the receiver
  cuts the stream into frames, decodes each one and checks its sequence number. Same rate definition.

Ratios: swarm / baseline states swarm's figure as a share of Python's limit, per subscriber (the mean of
the subscribers' rates) and in total; swarm / Redis and Redis / baseline likewise. Absolute numbers move
with the machine's load; the ratios are the figures to compare between runs. `--profile NODE` runs that
swarm node under `py-spy record` and shows the top of its profile (`common.summarize_profile`). A
readable table goes to stdout, progress to stderr, and `--json FILE` writes every figure. Exit status:
0 when swarm and the baseline lost, duplicated and reordered nothing, 1 otherwise or on failure, 130
when interrupted (Ctrl-C). Every process started is stopped, whatever happens (closed stdin, then
SIGTERM, then SIGKILL: `swarm.harness.supervise`).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import math
import os
import statistics
import struct
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import common
import msgpack
import trio

from swarm import harness
from swarm.protocol.wire import encode_data, encode_message, encode_origin, encode_topic
from swarm.transport.engine import DROP_COUNTERS

HOST = "127.0.0.1"
SCRIPT = str(Path(__file__).resolve())
# `run_cluster` names its nodes node-0, node-1, ...; with one publisher, node-0 publishes.
PUBLISHER = "node-0"
# Frames joined into one `send_all` by the baseline sender (the anchors' "about 100 frames").
COALESCE = 100
# A baseline receiver that hears nothing for this long reports what it has.
STALL_TIMEOUT = 10.0
# Bound on a baseline process starting up and saying `listening`.
STARTUP_TIMEOUT = 30.0
LENGTH = struct.Struct(">I")


# ---------------------------------------------------------------------- message and frame sizes


def message(seq: int, pad: int) -> dict[str, Any]:
    """One benchmark message: the demo's fields (publisher, sequence number, send time, padding)."""
    return {"from": PUBLISHER, "seq": seq, "ts": time.time_ns(), "pad": bytes(pad)}


def padding_for(size: int, messages: int) -> int:
    """Padding that makes the largest-numbered message `size` bytes msgpack-encoded (earlier ones are
    at most 4 bytes smaller: msgpack writes small integers shorter). ValueError if `size` is too small."""
    pad = max(0, size - len(encode_message(message(messages, 0))))
    while pad and len(encode_message(message(messages, pad))) > size:
        pad -= 1  # a longer bin header (bin16 from 256 bytes on)
    if len(encode_message(message(messages, pad))) != size:
        raise ValueError(f"at least {len(encode_message(message(messages, 0)))} bytes are needed")
    return pad


def swarm_frame_bytes(size: int, messages: int) -> int:
    """Bytes on the wire of swarm's DATA frame carrying a `size`-byte message (length prefix included)."""
    encoded = encode_message(message(messages, padding_for(size, messages)))
    topic = encode_topic(harness.TOPIC)
    return len(encode_data(encode_origin(PUBLISHER), 1, messages, topic, encoded, 1 << 30))


# ---------------------------------------------------------------------- baseline child processes


async def _until_stop(cancel_scope: trio.CancelScope) -> None:
    """Cancel `cancel_scope` on a `stop` line or at the end of stdin (the parent is gone)."""
    stdin = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
    async with stdin:
        async for line in harness.read_lines(stdin):
            if line.strip() == "stop":
                break
    cancel_scope.cancel()


async def _receive_frames(stream: trio.SocketStream, messages: int) -> dict[str, Any]:
    """Read length-prefixed msgpack frames until `messages` arrived, the stream ends or it stalls."""
    unpack_length = LENGTH.unpack_from
    unpackb = msgpack.unpackb
    buffer = b""
    delivered = duplicates = highest = 0
    first_ns: int | None = None
    last_ns: int | None = None
    while delivered < messages:
        data = b""
        with trio.move_on_after(STALL_TIMEOUT):
            data = await stream.receive_some(65536)
        if not data:
            break
        now_ns = time.time_ns()
        buffer = buffer + data if buffer else data
        view = memoryview(buffer)
        offset, end = 0, len(buffer)
        count = 0
        while end - offset >= 4:
            (length,) = unpack_length(buffer, offset)
            stop = offset + 4 + length
            if stop > end:
                break
            seq = unpackb(view[offset + 4:stop])["seq"]
            offset = stop
            if seq > highest:  # one TCP stream: sequence numbers only grow
                highest = seq
                count += 1
            else:
                duplicates += 1
        view.release()
        buffer = buffer[offset:]
        if count:
            delivered += count
            if first_ns is None:
                first_ns = now_ns
            last_ns = now_ns
    return {"expected": messages, "delivered": delivered, "duplicates": duplicates, "out_of_order": 0,
            "dropped": 0, "first_ns": first_ns, "last_ns": last_ns}


async def baseline_receiver(messages: int) -> int:
    """Child process: listen on an ephemeral loopback port, say `listening HOST:PORT`, take one connection,
    say `result {...}` once `messages` frames arrived, then wait for `stop`."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_until_stop, nursery.cancel_scope)
        listener = (await trio.open_tcp_listeners(0, host=HOST))[0]
        common.say(f"listening {HOST}:{listener.socket.getsockname()[1]}")
        async with listener:
            stream = await listener.accept()
        async with stream:
            result = await _receive_frames(stream, messages)
        common.say("result " + json.dumps(result))
        await trio.sleep_forever()
    return 0


async def baseline_sender(port: int, messages: int, pad: int) -> int:
    """Child process: connect to the receiver and send `messages` frames, `COALESCE` to a `send_all`; then
    say `sent` and wait for `stop`."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_until_stop, nursery.cancel_scope)
        pack = msgpack.Packer(use_bin_type=True).pack
        pack_length = LENGTH.pack
        payload = bytes(pad)
        async with await trio.open_tcp_stream(HOST, port) as stream:
            batch: list[bytes] = []
            for seq in range(1, messages + 1):
                body = pack({"from": PUBLISHER, "seq": seq, "ts": time.time_ns(), "pad": payload})
                batch.append(pack_length(len(body)))
                batch.append(body)
                if seq % COALESCE == 0:
                    await stream.send_all(b"".join(batch))
                    batch.clear()
            if batch:
                await stream.send_all(b"".join(batch))
            await stream.send_eof()
            common.say("sent")
            await trio.sleep_forever()
    return 0


# ---------------------------------------------------------------------- the parent: one run each

SYSTEMS = ("swarm", "redis", "nats", "zmq")
PEERS = SYSTEMS[1:]
LABELS = {"swarm": "swarm", "redis": "Redis", "nats": "NATS", "zmq": "ZeroMQ", "baseline": "trio 1->1"}
MISSING = {"redis": common.redis_missing, "nats": common.nats_missing, "zmq": common.zmq_missing}


def rate(result: dict[str, Any], first_ns: int | None = None) -> float:
    """Delivered per second from the first message (or from `first_ns`) to the last; NaN when that span
    is empty."""
    first = result.get("first_ns") if first_ns is None else first_ns
    last = result.get("last_ns")
    if first is None or last is None or last <= first:
        return math.nan
    return result["delivered"] / ((last - first) / 1e9)


def summarize(result: dict[str, Any], go_ns: int | None = None) -> dict[str, Any]:
    """One receiver's figures: counts, seconds from first to last message, msgs/s; with `go_ns` (when the
    parent said go), also msgs/s from then to its last message."""
    first, last = result.get("first_ns"), result.get("last_ns")
    seconds = (last - first) / 1e9 if first is not None and last is not None else math.nan
    figures = {"expected": result["expected"], "delivered": result["delivered"],
               "lost": result["expected"] - result["delivered"], "duplicates": result["duplicates"],
               "out_of_order": result["out_of_order"], "dropped": result.get("dropped", 0),
               "seconds": seconds, "msgs_per_s": rate(result),
               **{key: result[key] for key in ("p50_ms", "p99_ms", "counters", "errors") if result.get(key)}}
    if go_ns is not None:
        figures["from_go_msgs_per_s"] = rate(result, go_ns)
    return figures


async def run_baseline(children: list[harness.Child], messages: int, pad: int) -> dict[str, Any]:
    python = [sys.executable, SCRIPT]
    receiver = await harness.start_process(children, "baseline-receiver",
                                        [*python, "_baseline-receiver", "--messages", str(messages)])
    with trio.fail_after(STARTUP_TIMEOUT):
        port = (await receiver.expect("listening")).rsplit(":", 1)[1]
    await harness.start_process(children, "baseline-sender", [*python, "_baseline-sender", "--port", port,
                                                           "--messages", str(messages), "--pad", str(pad)])
    result = json.loads(await receiver.expect("result"))
    for child in children:
        await child.send("stop")
    return summarize(result)


def totals(per_node: dict[str, dict[str, Any]], results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The total row: sums, and all deliveries / (latest last - earliest first arrival); with the go time,
    the slowest subscriber's rate from go to its last message (the issue's "first publish to the last
    delivery at the slowest subscriber")."""
    firsts = [r["first_ns"] for r in results.values() if r["first_ns"] is not None]
    lasts = [r["last_ns"] for r in results.values() if r["last_ns"] is not None]
    total: dict[str, Any] = {key: sum(node[key] for node in per_node.values())
                             for key in ("expected", "delivered", "lost", "duplicates", "out_of_order",
                                         "dropped")}
    span = (max(lasts) - min(firsts)) / 1e9 if firsts and lasts else math.nan
    total["seconds"] = span
    total["msgs_per_s"] = total["delivered"] / span if span > 0 else math.nan
    rates = [node["msgs_per_s"] for node in per_node.values()]
    total["mean_per_subscriber_msgs_per_s"] = sum(rates) / len(rates)
    total["min_per_subscriber_msgs_per_s"] = min(rates)
    from_go = [node["from_go_msgs_per_s"] for node in per_node.values() if "from_go_msgs_per_s" in node]
    if from_go:
        total["from_go_slowest_msgs_per_s"] = min(from_go)
    return total


def measured(results: dict[str, dict[str, Any]], go_ns: int, cpu_before: dict[str, float],
             cpu_after: dict[str, float]) -> dict[str, Any]:
    """The subscribers' figures, their total, and CPU per delivery: the CPU seconds every process of the
    run (publisher, subscribers, broker) used from just before go to just after the last result, over
    all deliveries."""
    per_node = {name: summarize(result, go_ns) for name, result in results.items()}
    total = totals(per_node, results)
    cpu = {name: cpu_after[name] - cpu_before.get(name, 0.0) for name in cpu_after}
    total["cpu_seconds"] = sum(cpu.values())
    total["cpu_us_per_delivery"] = common.ratio(total["cpu_seconds"] * 1e6, total["delivered"])
    return {"subscribers": per_node, "total": total, "cpu_seconds": cpu}


@contextlib.contextmanager
def cpu_before_stop(readings: dict[str, float]):
    """While active, the first `stop` line sent to a child started by `harness.start_process` first reads
    the CPU seconds of all the children of its list into `readings` (`harness.run_cluster` tells the nodes
    to stop right after their last result, before a caller could read them)."""
    original = harness.start_process

    async def start_process(children: list[harness.Child], name: str, command: list[str]) -> harness.Child:
        child = await original(children, name, command)
        send = child.send

        async def send_after_reading(line: str) -> None:
            if line == "stop" and not readings:
                readings.update(common.cpu_of(children))
            await send(line)
        child.send = send_after_reading  # type: ignore[method-assign]
        return child

    harness.start_process = start_process
    try:
        yield
    finally:
        harness.start_process = original


async def run_swarm(children: list[harness.Child], subscribers: int, messages: int, pad: int,
                    burst: int, broadcast: str = common.DEFAULT_BROADCAST) -> dict[str, Any]:
    marks: dict[str, Any] = {}

    def on_linked() -> None:  # every node linked, nothing published yet
        marks["cpu"], marks["go_ns"] = common.cpu_of(children), time.time_ns()

    cpu_after: dict[str, float] = {}
    with cpu_before_stop(cpu_after):
        results, publishing, _ = await harness.run_cluster(children, subscribers + 1, messages, 1, pad, 0.0,
                                                           "WARNING", burst=burst, on_linked=on_linked,
                                                           node_options=[f"broadcast={broadcast}"])
    assert publishing == [PUBLISHER], publishing
    publisher = results.pop(PUBLISHER)
    run = measured(results, marks["go_ns"], marks["cpu"], cpu_after)
    total = run["total"]
    total["dropped"] += publisher["dropped"]
    # Copies on the wire: flooding over a full mesh sends each subscriber one copy from the publisher and
    # one from every other subscriber; the node drops the extra copies from the header.
    frames = sum(r["counters"].get("received_new", 0) + r["counters"].get("duplicates", 0)
                 for r in results.values())
    total["frames_received_per_delivery"] = frames / total["delivered"] if total["delivered"] else math.nan
    run["publisher"] = {"name": PUBLISHER, "dropped": publisher["dropped"], "links": publisher["links"],
                        "counters": publisher["counters"]}
    return run


async def run_peer(children: list[harness.Child], system: str, subscribers: int, messages: int, pad: int,
                   burst: int) -> dict[str, Any]:
    """The same counts through Redis pub/sub, NATS or ZeroMQ PUB/SUB: the broker if there is one, 1
    publisher and `subscribers` subscriber processes (`redis_clients.py`, `peer_clients.py`)."""
    counts = ["--messages", str(messages)]
    names = [f"sub-{index}" for index in range(1, subscribers + 1)]
    versions: dict[str, Any] = {}
    server = None
    if system == "zmq":
        clients = common.script("peer_clients.py")
        publisher = await harness.start_process(children, "zmq-publisher", [
            *clients, "zmq-publisher", *counts, "--pad", str(pad)])
        with trio.fail_after(STARTUP_TIMEOUT):
            port = await publisher.expect("listening")
        subscriber_command = [*clients, "zmq-subscriber", "--port", port, *counts]
    else:
        if system == "redis":
            server, port_number = await common.start_redis(children)
            clients = [*common.script("redis_clients.py"), "--port", str(port_number), "--mode", "throughput"]
            subscriber_command, publisher_command = [*clients, "subscriber", *counts], [*clients, "publisher"]
        else:
            server, port_number = await common.start_nats(children)
            clients = [*common.script("peer_clients.py"), "--port", str(port_number)]
            subscriber_command = [*clients, "nats-subscriber", *counts]
            publisher_command = [*clients, "nats-publisher"]
    subs = [await harness.start_process(children, name, subscriber_command) for name in names]
    with trio.fail_after(STARTUP_TIMEOUT):
        await harness.await_all(subs, "ready")
        if system != "zmq":
            publisher = await harness.start_process(children, f"{system}-publisher", [
                *publisher_command, *counts, "--burst", str(burst), "--pad", str(pad)])
            await publisher.expect("ready")
    cpu_before, go_ns = common.cpu_of(children), time.time_ns()
    await publisher.send("go")
    sent = json.loads(await publisher.expect("sent"))
    answers = await harness.await_all(subs, "result")
    cpu_after = common.cpu_of(children)
    if system == "redis":
        versions = {"server_version": await common.redis_server_version(port_number),
                    **common.redis_versions()}
    elif system == "nats":
        versions = {"server_version": common.nats_server_version(),
                    "nats_py": importlib.metadata.version("nats-py")}
    await common.stop_children([*subs, publisher])
    if server is not None:
        await server.stop()
    results = {name: json.loads(answers[name]) for name in names}
    if system == "zmq":
        first = next(iter(results.values()))
        versions = {"server_version": "(no broker)", "libzmq": first.get("zmq_version"),
                    "pyzmq": first.get("pyzmq_version")}
    run = measured(results, go_ns, cpu_before, cpu_after)
    run.update(versions=versions, publisher={"seconds": sent["seconds"],
                                             "fewest_receivers": sent["fewest_receivers"]})
    return run


@contextlib.contextmanager
def profiling(node: str | None, output: Path | None):
    """While active, `harness.start_process` starts the node called `node` under py-spy (its profile goes
    to `output` when the node exits); the other processes as usual. Nothing changes when `node` is None."""
    if node is None or output is None:
        yield
        return
    original = harness.start_process

    async def start_process(children: list[harness.Child], name: str, command: list[str]) -> harness.Child:
        if name == node:
            command = common.pyspy_command(output, command)
        return await original(children, name, command)

    harness.start_process = start_process  # harness.start_node looks it up at each call
    try:
        yield
    finally:
        harness.start_process = original


# ---------------------------------------------------------------------- rounds, medians, ratios

FIGURES = ("mean_per_subscriber_msgs_per_s", "from_go_slowest_msgs_per_s", "msgs_per_s",
           "cpu_us_per_delivery")


def _median(values: Sequence[float]) -> float:
    finite = [value for value in values if value is not None and math.isfinite(value)]
    return statistics.median(finite) if finite else math.nan


def medians(rounds: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per system: the median over the rounds of each figure of FIGURES, and counts summed."""
    result: dict[str, dict[str, Any]] = {}
    for system in (*SYSTEMS, "baseline"):
        runs = [entry[system] for entry in rounds if entry.get(system)]
        if not runs:
            continue
        totals_ = [run["total"] if "total" in run else run for run in runs]
        figures: dict[str, Any] = {key: _median([t.get(key, math.nan) for t in totals_]) for key in FIGURES}
        if system == "baseline":
            figures["mean_per_subscriber_msgs_per_s"] = _median([t["msgs_per_s"] for t in totals_])
        for key in ("expected", "delivered", "lost", "duplicates", "out_of_order", "dropped"):
            figures[key] = sum(t[key] for t in totals_)
        figures["per_round_per_subscriber"] = [t.get("mean_per_subscriber_msgs_per_s", t["msgs_per_s"])
                                               for t in totals_]
        result[system] = figures
    return result


def paired_ratios(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """swarm / the best peer of the same round (highest rate, lowest CPU per delivery), then the median
    of those per-round ratios; and swarm / each peer likewise."""
    per_round = []
    for entry in rounds:
        swarm_total = entry["swarm"]["total"]
        peers = {system: entry[system]["total"] for system in PEERS if entry.get(system)}
        pair: dict[str, Any] = {}
        for key, label, best_of in (("mean_per_subscriber_msgs_per_s", "per_subscriber", max),
                                    ("from_go_slowest_msgs_per_s", "from_go", max),
                                    ("cpu_us_per_delivery", "cpu", min)):
            values = {system: total.get(key, math.nan) for system, total in peers.items()}
            values = {system: value for system, value in values.items() if math.isfinite(value)}
            for system, value in values.items():
                pair[f"swarm_vs_{system}_{label}"] = common.ratio(swarm_total.get(key), value)
            if values:
                best = best_of(values, key=values.__getitem__)
                pair[f"best_{label}"] = best
                pair[f"swarm_vs_best_{label}"] = common.ratio(swarm_total.get(key), values[best])
        per_round.append(pair)
    keys = sorted({key for pair in per_round for key in pair if key.startswith("swarm_vs_")})
    return {"per_round": per_round,
            "median": {key: _median([pair.get(key, math.nan) for pair in per_round]) for key in keys}}


# ---------------------------------------------------------------------- report


def format_report(report: dict[str, Any]) -> str:
    settings = report["settings"]
    lines = [f"swarm {report['swarm_version']} throughput: 1 publisher -> {settings['subscribers']} "
             f"subscribers, each its own process, on loopback ({report['machine']['cpus']} CPUs, "
             f"load {report['machine']['load_before']:.2f}); {settings['messages']:,} messages per system "
             f"and size, {settings['rounds']} interleaved round(s), medians",
             f"swarm: drain() every {settings['burst']}, broadcast {settings['broadcast']}; Redis: "
             f"{settings['burst']} PUBLISH per pipelined execute(); NATS: flush() every {settings['burst']}; "
             f"ZeroMQ: PUB/SUB, SNDHWM/RCVHWM 0; baseline: {settings['baseline_messages']:,} frames, trio "
             f"1 -> 1, {COALESCE} frames per send_all"]
    lines += [f"{LABELS[system]}: {', '.join(f'{k} {v}' for k, v in versions.items())}"
              for system, versions in report.get("versions", {}).items()]
    lines += [reason for reason in report.get("skipped", {}).values()]
    lines.append("")
    head = (f"{'size':>6}  {'system':<10} {'msgs/s per sub':>14} {'go->slowest':>11} {'total msgs/s':>12} "
            f"{'CPU us/deliv':>12} {'lost':>6} {'dup':>4} {'ooo':>4} {'dropped':>7}  per sub, each round")
    lines += [head, "-" * len(head)]
    for run in report["runs"]:
        size = run["size"]
        for system, figures in run["median"].items():
            spread = " ".join(common.fmt(value) for value in figures["per_round_per_subscriber"])
            lines.append(f"{size:>6}  {LABELS[system]:<10} "
                         f"{common.fmt(figures['mean_per_subscriber_msgs_per_s']):>14} "
                         f"{common.fmt(figures['from_go_slowest_msgs_per_s']):>11} "
                         f"{common.fmt(figures['msgs_per_s']):>12} "
                         f"{common.fmt(figures['cpu_us_per_delivery'], '.1f'):>12} {figures['lost']:>6} "
                         f"{figures['duplicates']:>4} {figures['out_of_order']:>4} {figures['dropped']:>7}  "
                         f"{spread}")
        ratio = run["ratio"]["median"]
        if "swarm_vs_best_per_subscriber" in ratio:
            bests = [pair.get("best_per_subscriber", "-") for pair in run["ratio"]["per_round"]]
            cpu_bests = [pair.get("best_cpu", "-") for pair in run["ratio"]["per_round"]]
            lines.append(f"{'':>6}  swarm / best peer, paired per round (median): per subscriber "
                         f"{common.fmt(ratio['swarm_vs_best_per_subscriber'], '.2f')}x, go->slowest "
                         f"{common.fmt(ratio.get('swarm_vs_best_from_go'), '.2f')}x (best: "
                         f"{', '.join(LABELS.get(b, b) for b in bests)}); CPU per delivery "
                         f"{common.fmt(ratio.get('swarm_vs_best_cpu'), '.2f')}x (lowest: "
                         f"{', '.join(LABELS.get(b, b) for b in cpu_bests)})")
            each = ", ".join(f"{LABELS[system]} "
                             f"{common.fmt(ratio[f'swarm_vs_{system}_per_subscriber'], '.2f')}x / CPU "
                             f"{common.fmt(ratio.get(f'swarm_vs_{system}_cpu'), '.2f')}x"
                             for system in PEERS if f"swarm_vs_{system}_per_subscriber" in ratio)
            lines.append(f"{'':>6}  swarm / each peer (median of per-round ratios), per subscriber / CPU: "
                         f"{each}")
        swarm_runs = [entry["swarm"] for entry in run["rounds"]]
        frames = _median([entry["total"]["frames_received_per_delivery"] for entry in swarm_runs])
        lines.append(f"{'':>6}  swarm subscribers read {common.fmt(frames, '.2f')} DATA frames per delivery "
                     f"(a frame carries a batch of messages; relayed copies included)")
        drops = "; ".join(filter(None, (_drops(entry) for entry in swarm_runs)))
        if drops:
            lines.append(f"{'':>6}  dropped frames (counted by the nodes, none of them a lost delivery "
                         f"above): {drops}")
        for system in PEERS:
            errors = sorted({error for entry in run["rounds"] if entry.get(system)
                             for sub in entry[system]["subscribers"].values()
                             for error in sub.get("errors", ())})
            if errors:
                lines.append(f"{'':>6}  {LABELS[system]} client errors: {'; '.join(errors[:3])}")
        if run.get("profile"):
            lines += [f"{'':>6}  {line}" for line in common.format_profile(run["profile"])]
        lines.append("")
    lines.append("size: message bytes (msgpack); msgs/s per sub: delivered / (last - first arrival) at each "
                 "subscriber, mean of the subscribers;")
    lines.append("go->slowest: the slowest subscriber's deliveries / (its last arrival - the moment the "
                 "publisher was told to go); total: all deliveries / (latest last - earliest first);")
    lines.append("CPU us/deliv: user + system CPU of every process (publisher, subscribers, broker) from go "
                 "to the last result, per delivery")
    return "\n".join(lines)


def _drops(swarm_run: dict[str, Any]) -> str:
    """'node-2 send_queue_overflow 64, ...' for every node that dropped frames; '' when none did."""
    nodes = {PUBLISHER: swarm_run["publisher"], **swarm_run["subscribers"]}
    return ", ".join(f"{name} {key} {node['counters'][key]}" for name, node in nodes.items()
                     for key in DROP_COUNTERS if node.get("counters", {}).get(key))


def clean(run: dict[str, Any]) -> bool:
    """Nothing lost, duplicated or reordered by swarm or the baseline (as the demo's verdict: frames a node
    dropped from a full send queue are shown, but fail the run only when a delivery is missing)."""
    figures = [entry[key] if key == "baseline" else entry[key]["total"]
               for entry in run["rounds"] for key in ("swarm", "baseline") if entry.get(key)]
    return all(not (f["lost"] or f["duplicates"] or f["out_of_order"]) for f in figures)


async def benchmark(args: argparse.Namespace) -> int:
    report: dict[str, Any] = common.header("throughput", {
        "messages": args.messages, "baseline_messages": args.baseline_messages,
        "subscribers": args.subscribers, "publishers": 1, "sizes": args.size, "burst": args.burst,
        "coalesce": COALESCE, "profile": args.profile, "broadcast": args.broadcast, "rounds": args.rounds,
        "systems": args.systems}, format=3)
    report["skipped"] = {}
    for system in PEERS:
        reason = (f"{LABELS[system]} baseline skipped (--systems)" if system not in args.systems
                  else MISSING[system]())
        if reason:
            report["skipped"][system] = reason
            if system in args.systems:
                common.progress(reason)
    peers = [system for system in PEERS if system not in report["skipped"]]
    report["versions"] = {}
    report["runs"] = [{"size": size, "frame_bytes": swarm_frame_bytes(size, args.messages), "rounds": []}
                      for size in args.size]
    try:
        for index in range(1, args.rounds + 1):
            for run in report["runs"]:
                size = run["size"]
                entry: dict[str, Any] = {}
                label = f"round {index}/{args.rounds}, {size}-byte messages"
                pad = padding_for(size, args.messages)
                if args.baseline_messages:
                    # The baseline's frame is a length prefix and one message: pad it to swarm's frame size.
                    baseline_pad = padding_for(run["frame_bytes"] - LENGTH.size, args.baseline_messages)
                    interrupted, entry["baseline"] = await common.phase(
                        f"baseline, {label}",
                        lambda children, pad=baseline_pad: run_baseline(children, args.baseline_messages,
                                                                        pad),
                        args.timeout)
                    if interrupted:
                        return _interrupted()
                profile_file = (Path(args.profile_dir) / f"profile-{args.profile}-{size}-{index}.txt"
                                if args.profile else None)
                with profiling(args.profile, profile_file):
                    interrupted, entry["swarm"] = await common.phase(
                        f"swarm, {label}" + (f", {args.profile} under py-spy" if args.profile else ""),
                        lambda children, pad=pad: run_swarm(children, args.subscribers, args.messages, pad,
                                                            args.burst, args.broadcast),
                        args.timeout)
                if interrupted:
                    return _interrupted()
                for system in peers:
                    interrupted, entry[system] = await common.phase(
                        f"{LABELS[system]}, {label}",
                        lambda children, pad=pad, system=system: run_peer(
                            children, system, args.subscribers, args.messages, pad, args.burst),
                        args.timeout)
                    if interrupted:
                        return _interrupted()
                    report["versions"][system] = entry[system]["versions"]
                if profile_file is not None:
                    run["profile_file"] = str(profile_file)
                    run["profile"] = (common.summarize_profile(profile_file, top=args.profile_top)
                                      if profile_file.exists() else None)
                run["rounds"].append(entry)
    except BaseException as raised:  # noqa: B036 - re-raised unless the run failed in a known way
        common.progress(f"throughput: error: {common.failure(raised, args.timeout)}; every process was "
                        "stopped")
        return 1
    for run in report["runs"]:
        run["median"] = medians(run["rounds"])
        run["ratio"] = paired_ratios(run["rounds"])
    print(format_report(report), flush=True)
    if args.json:
        common.write_report(args.json, report)
    if all(clean(run) for run in report["runs"]):
        return 0
    common.progress("throughput: FAILED: messages were lost, duplicated or reordered")
    return 1


def _interrupted() -> int:
    common.progress("throughput: interrupted; every process was stopped")
    return 130


# ---------------------------------------------------------------------- command line






def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="throughput.py", description=__doc__.split("\n\n", 1)[0],
        epilog="See benchmarks/README.md for what is measured and how to read it.")
    parser.add_argument("--messages", type=common.positive_int, default=100_000, metavar="N",
                        help="messages the swarm publisher sends per size (default: 100000)")
    parser.add_argument("--baseline-messages", type=common.non_negative_int, default=1_000_000, metavar="N",
                        help="frames the baseline sender sends per size and round, 0 for no baseline "
                             "(default: 1000000)")
    parser.add_argument("--rounds", type=common.positive_int, default=1, metavar="R",
                        help="each system runs once per round, in turn (swarm, Redis, NATS, ZeroMQ); "
                             "medians over the rounds, ratios paired per round (default: 1)")
    parser.add_argument("--systems", nargs="*", choices=list(PEERS), default=list(PEERS), metavar="PEER",
                        help="peers to compare swarm with, of redis nats zmq; none for swarm alone "
                             "(default: all three)")
    parser.add_argument("--size", type=common.positive_int, nargs="+", default=[100], metavar="BYTES",
                        help="msgpack-encoded message size; several values run one after another "
                             "(default: 100)")
    parser.add_argument("--subscribers", type=common.positive_int, default=4, metavar="N",
                        help="subscriber node processes besides the publisher (default: 4)")
    parser.add_argument("--burst", type=common.positive_int, default=harness.BATCH, metavar="N",
                        help=f"messages published between two drain() calls (default: {harness.BATCH})")
    parser.add_argument("--timeout", type=common.positive_seconds, default=60.0, metavar="SECONDS",
                        help="seconds one phase (one system, one size, one round) may take (default: 60)")
    parser.add_argument("--no-redis", action="store_true", help="skip the Redis pub/sub baseline (as "
                                                                 "--systems without redis)")
    parser.add_argument("--broadcast", choices=["flood", "tree"], default=common.DEFAULT_BROADCAST,
                        help="swarm's broadcast mode (the nodes' `broadcast` option; default: "
                             f"{common.DEFAULT_BROADCAST}, the nodes' own)")
    parser.add_argument("--profile", metavar="NODE",
                        help="run this swarm node (e.g. node-1, a subscriber) under py-spy and show the "
                             "profile's top entries")
    parser.add_argument("--profile-dir", default=".", metavar="DIR",
                        help="where py-spy's raw profiles go (default: .)")
    parser.add_argument("--profile-top", type=common.positive_int, default=15, metavar="N",
                        help="entries of the profile kept in the JSON (default: 15)")
    parser.add_argument("--json", metavar="FILE", help="also write every figure to FILE as JSON")
    return parser


def child_main(argv: Sequence[str]) -> int:
    """The hidden roles this script runs itself as: `_baseline-receiver` and `_baseline-sender`."""
    parser = argparse.ArgumentParser(prog="throughput.py")
    parser.add_argument("role", choices=["_baseline-receiver", "_baseline-sender"])
    parser.add_argument("--messages", type=common.positive_int, required=True)
    parser.add_argument("--port", type=int)
    parser.add_argument("--pad", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        if args.role == "_baseline-receiver":
            return trio.run(baseline_receiver, args.messages)
        return trio.run(baseline_sender, args.port, args.messages, args.pad)
    except BaseException as raised:  # noqa: B036 - re-raised unless the other end went away
        error = harness.first_of(raised, (trio.BrokenResourceError, ConnectionError))
        if error is None:
            raise
        # The peer process was stopped first (the parent was interrupted or failed): no traceback.
        print(f"throughput.py {args.role}: connection lost: {error}", file=sys.stderr, flush=True)
        return 1


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0].startswith("_baseline-"):
        return child_main(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.no_redis:
        args.systems = [system for system in args.systems if system != "redis"]
    for size in args.size:
        try:
            padding_for(size, max(args.messages, args.baseline_messages))  # the largest seq
        except ValueError as error:
            parser.error(f"--size {size}: {error}")
    if args.profile and common.pyspy_path() is None:
        parser.error("--profile needs py-spy: .venv/bin/pip install py-spy")
    return common.run(benchmark, args, "throughput")


if __name__ == "__main__":
    sys.exit(main())
