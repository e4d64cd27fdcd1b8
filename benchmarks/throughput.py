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
import json
import math
import os
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


def rate(result: dict[str, Any]) -> float:
    """Delivered per second from the first to the last message; NaN when that span is empty."""
    first, last = result.get("first_ns"), result.get("last_ns")
    if first is None or last is None or last <= first:
        return math.nan
    return result["delivered"] / ((last - first) / 1e9)


def summarize(result: dict[str, Any]) -> dict[str, Any]:
    """One receiver's figures: counts, seconds from first to last message, msgs/s."""
    first, last = result.get("first_ns"), result.get("last_ns")
    seconds = (last - first) / 1e9 if first is not None and last is not None else math.nan
    return {"expected": result["expected"], "delivered": result["delivered"],
            "lost": result["expected"] - result["delivered"], "duplicates": result["duplicates"],
            "out_of_order": result["out_of_order"], "dropped": result.get("dropped", 0),
            "seconds": seconds, "msgs_per_s": rate(result),
            **{key: result[key] for key in ("p50_ms", "p99_ms", "counters") if key in result}}


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
    """The total row: sums, and all deliveries / (latest last - earliest first arrival)."""
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
    return total


async def run_swarm(children: list[harness.Child], subscribers: int, messages: int, pad: int,
                    burst: int, broadcast: str = "flood") -> dict[str, Any]:
    results, publishing, _ = await harness.run_cluster(children, subscribers + 1, messages, 1, pad, 0.0,
                                                       "WARNING", burst=burst,
                                                       node_options=[f"broadcast={broadcast}"])
    assert publishing == [PUBLISHER], publishing
    publisher = results.pop(PUBLISHER)
    per_node = {name: summarize(result) for name, result in results.items()}
    total = totals(per_node, results)
    total["dropped"] += publisher["dropped"]
    # Copies on the wire: flooding over a full mesh sends each subscriber one copy from the publisher and
    # one from every other subscriber; the node drops the extra copies from the header.
    frames = sum(r["counters"].get("received_new", 0) + r["counters"].get("duplicates", 0)
                 for r in results.values())
    total["frames_received_per_delivery"] = frames / total["delivered"] if total["delivered"] else math.nan
    return {"publisher": {"name": PUBLISHER, "dropped": publisher["dropped"], "links": publisher["links"],
                          "counters": publisher["counters"]},
            "subscribers": per_node, "total": total}


async def run_redis(children: list[harness.Child], subscribers: int, messages: int, pad: int,
                    burst: int) -> dict[str, Any]:
    """The same counts through Redis pub/sub: redis-server, 1 publisher and `subscribers` subscriber
    processes (`redis_clients.py`); the publisher pipelines `burst` PUBLISH commands per `execute()`."""
    server, port = await common.start_redis(children)
    clients = common.script("redis_clients.py")
    names = [f"sub-{index}" for index in range(1, subscribers + 1)]
    subs = [await harness.start_process(children, name, [
        *clients, "subscriber", "--port", str(port), "--messages", str(messages), "--mode", "throughput"])
        for name in names]
    with trio.fail_after(STARTUP_TIMEOUT):
        await harness.await_all(subs, "ready")
    publisher = await harness.start_process(children, "redis-publisher", [
        *clients, "publisher", "--port", str(port), "--messages", str(messages), "--mode", "throughput",
        "--burst", str(burst), "--pad", str(pad)])
    sent = json.loads(await publisher.expect("sent"))
    answers = await harness.await_all(subs, "result")
    version = await common.redis_server_version(port)
    await common.stop_children([*subs, publisher])
    await common.stop_redis(server)
    results = {name: json.loads(answers[name]) for name in names}
    per_node = {name: summarize(result) for name, result in results.items()}
    return {"server_version": version, **common.redis_versions(),
            "publisher": {"seconds": sent["seconds"], "fewest_receivers": sent["fewest_receivers"]},
            "subscribers": per_node, "total": totals(per_node, results)}


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


# ---------------------------------------------------------------------- report


def _count(value: float) -> str:
    return f"{value:,.0f}" if math.isfinite(value) else "-"


def format_report(report: dict[str, Any]) -> str:
    settings = report["settings"]
    redis_note = (f"redis: redis-server {report['redis']['server_version']}, redis-py "
                  f"{report['redis']['redis_py']} (hiredis parser: {report['redis']['hiredis_parser']}), "
                  f"{settings['burst']} PUBLISH per pipelined execute()" if report.get("redis")
                  else report.get("redis_skipped", ""))
    lines = [f"swarm {report['swarm_version']} throughput: 1 publisher -> {settings['subscribers']} "
             f"subscribers, each its own process, on loopback ({report['machine']['cpus']} CPUs, "
             f"load {report['machine']['load_before']:.2f})",
             f"swarm: {settings['messages']:,} messages, drain() every {settings['burst']}; baseline: "
             f"{settings['baseline_messages']:,} frames, trio, 1 sender -> 1 receiver, "
             f"{COALESCE} frames per send_all", redis_note, ""]
    header = (f"{'size':>6} {'frame':>6}  {'run':<22} {'msgs/s':>11} {'delivered/expected':>19} {'lost':>5} "
              f"{'dup':>5} {'ooo':>5} {'dropped':>7} {'seconds':>7}")
    lines += [header, "-" * len(header)]

    def row(size: int, frame: int, label: str, figures: dict[str, Any]) -> str:
        ratio = f"{figures['delivered']}/{figures['expected']}"
        return (f"{size:>6} {frame:>6}  {label:<22} {_count(figures['msgs_per_s']):>11} {ratio:>19} "
                f"{figures['lost']:>5} {figures['duplicates']:>5} {figures['out_of_order']:>5} "
                f"{figures['dropped']:>7} {figures['seconds']:>7.2f}")

    for run in report["runs"]:
        size, frame, swarm_run = run["size"], run["frame_bytes"], run["swarm"]
        for name, figures in swarm_run["subscribers"].items():
            lines.append(row(size, frame, f"swarm {name}", figures))
        lines.append(row(size, frame, "swarm total", swarm_run["total"]))
        redis_run = run.get("redis")
        if redis_run is not None:
            for name, figures in redis_run["subscribers"].items():
                lines.append(row(size, frame, f"redis {name}", figures))
            lines.append(row(size, frame, "redis total", redis_run["total"]))
        lines.append(row(size, frame, "baseline (trio 1->1)", run["baseline"]))
        ratio = run["ratio"]
        lines.append(f"{'':>6} {'':>6}  swarm / baseline: {ratio['per_subscriber']:.3f} per subscriber "
                     f"(mean {_count(swarm_run['total']['mean_per_subscriber_msgs_per_s'])}/s), "
                     f"{ratio['total']:.3f} in total")
        if redis_run is not None:
            redis_mean = _count(redis_run["total"]["mean_per_subscriber_msgs_per_s"])
            lines.append(f"{'':>6} {'':>6}  swarm / redis: {ratio['swarm_vs_redis_per_subscriber']:.2f}x per "
                         f"subscriber (redis mean {redis_mean}/s), "
                         f"{ratio['swarm_vs_redis_total']:.2f}x in total; redis / baseline: "
                         f"{ratio['redis_vs_baseline_per_subscriber']:.3f} per subscriber")
        lines.append(f"{'':>6} {'':>6}  swarm subscribers read "
                     f"{swarm_run['total']['frames_received_per_delivery']:.2f} DATA frames per delivery "
                     f"(a frame carries a batch of messages; relayed copies included)")
        drops = _drops(swarm_run)
        if drops:
            lines.append(f"{'':>6} {'':>6}  dropped frames (counted by the nodes, none of them a lost "
                         f"delivery above): {drops}")
        if run.get("profile"):
            lines += [f"{'':>6} {'':>6}  {line}" for line in common.format_profile(run["profile"])]
        lines.append("")
    lines.append("size: message bytes (msgpack); frame: bytes of a one-message DATA frame, length prefix "
                 "included (a batch shares one header); ooo: out of order;")
    lines.append("msgs/s: delivered / (last - first arrival) at each receiver; total: all deliveries / "
                 "(latest last - earliest first)")
    return "\n".join(lines)


def _drops(swarm_run: dict[str, Any]) -> str:
    """'node-2 send_queue_overflow 64, ...' for every node that dropped frames; '' when none did."""
    nodes = {PUBLISHER: swarm_run["publisher"], **swarm_run["subscribers"]}
    return ", ".join(f"{name} {key} {node['counters'][key]}" for name, node in nodes.items()
                     for key in DROP_COUNTERS if node.get("counters", {}).get(key))


def clean(run: dict[str, Any]) -> bool:
    """Nothing lost, duplicated or reordered (as the demo's verdict: frames a node dropped from a full
    send queue are shown, but fail the run only when a delivery is missing)."""
    figures = [run["baseline"], run["swarm"]["total"]]
    return all(not (f["lost"] or f["duplicates"] or f["out_of_order"]) for f in figures)



async def benchmark(args: argparse.Namespace) -> int:
    report: dict[str, Any] = common.header("throughput", {
        "messages": args.messages, "baseline_messages": args.baseline_messages,
        "subscribers": args.subscribers, "publishers": 1, "sizes": args.size, "burst": args.burst,
        "coalesce": COALESCE, "profile": args.profile, "broadcast": args.broadcast}, format=2)
    report["runs"] = []
    skipped = common.redis_skipped(args.no_redis)
    if skipped:
        report["redis_skipped"] = skipped
    interrupted = False
    try:
        for size in args.size:
            frame = swarm_frame_bytes(size, args.messages)
            # The baseline's frame is a length prefix and one message: pad it to swarm's frame size.
            baseline_pad = padding_for(frame - LENGTH.size, args.baseline_messages)
            label = f"{size}-byte messages ({frame}-byte frames)"
            interrupted, baseline = await common.phase(
                f"baseline, {label}",
                lambda children, pad=baseline_pad: run_baseline(children, args.baseline_messages, pad),
                args.timeout)
            if interrupted:
                break
            swarm_pad = padding_for(size, args.messages)
            profile_file = (Path(args.profile_dir) / f"profile-{args.profile}-{size}.txt"
                            if args.profile else None)
            with profiling(args.profile, profile_file):
                interrupted, swarm_run = await common.phase(
                    f"swarm, {label}" + (f", {args.profile} under py-spy" if args.profile else ""),
                    lambda children, pad=swarm_pad: run_swarm(children, args.subscribers, args.messages, pad,
                                                              args.burst, args.broadcast),
                    args.timeout)
            if interrupted:
                break
            redis_run = None
            if "redis_skipped" not in report:
                interrupted, redis_run = await common.phase(
                    f"redis, {label}",
                    lambda children, pad=swarm_pad: run_redis(children, args.subscribers, args.messages, pad,
                                                              args.burst),
                    args.timeout)
                if interrupted:
                    break
                report["redis"] = {key: redis_run[key] for key in ("server_version", "redis_py", "hiredis",
                                                                   "hiredis_parser")}
            total = swarm_run["total"]
            base_rate = baseline["msgs_per_s"]
            per_subscriber = total["mean_per_subscriber_msgs_per_s"]
            run = {"size": size, "frame_bytes": frame, "baseline": baseline, "swarm": swarm_run,
                   "redis": redis_run,
                   "ratio": {"per_subscriber": common.ratio(per_subscriber, base_rate),
                             "total": common.ratio(total["msgs_per_s"], base_rate)}}
            if redis_run is not None:
                redis_total = redis_run["total"]
                run["ratio"].update({
                    "swarm_vs_redis_per_subscriber": common.ratio(total["mean_per_subscriber_msgs_per_s"],
                                                                  redis_total["mean_per_subscriber_msgs_per_s"]),
                    "swarm_vs_redis_total": common.ratio(total["msgs_per_s"], redis_total["msgs_per_s"]),
                    "redis_vs_baseline_per_subscriber": common.ratio(
                        redis_total["mean_per_subscriber_msgs_per_s"], base_rate)})
            if profile_file is not None:
                run["profile_file"] = str(profile_file)
                run["profile"] = (common.summarize_profile(profile_file, top=args.profile_top)
                                  if profile_file.exists() else None)
            report["runs"].append(run)
    except BaseException as raised:  # noqa: B036 - re-raised unless the run failed in a known way
        common.progress(f"throughput: error: {common.failure(raised, args.timeout)}; every process was "
                        "stopped")
        return 1
    if interrupted:
        common.progress("throughput: interrupted; every process was stopped")
        return 130
    print(format_report(report), flush=True)
    if args.json:
        common.write_report(args.json, report)
    if all(clean(run) for run in report["runs"]):
        return 0
    common.progress("throughput: FAILED: messages were lost, duplicated or reordered")
    return 1


# ---------------------------------------------------------------------- command line






def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="throughput.py", description=__doc__.split("\n\n", 1)[0],
        epilog="See benchmarks/README.md for what is measured and how to read it.")
    parser.add_argument("--messages", type=common.positive_int, default=100_000, metavar="N",
                        help="messages the swarm publisher sends per size (default: 100000)")
    parser.add_argument("--baseline-messages", type=common.positive_int, default=1_000_000, metavar="N",
                        help="frames the baseline sender sends per size (default: 1000000)")
    parser.add_argument("--size", type=common.positive_int, nargs="+", default=[100], metavar="BYTES",
                        help="msgpack-encoded message size; several values run one after another "
                             "(default: 100)")
    parser.add_argument("--subscribers", type=common.positive_int, default=4, metavar="N",
                        help="subscriber node processes besides the publisher (default: 4)")
    parser.add_argument("--burst", type=common.positive_int, default=harness.BATCH, metavar="N",
                        help=f"messages published between two drain() calls (default: {harness.BATCH})")
    parser.add_argument("--timeout", type=common.positive_seconds, default=60.0, metavar="SECONDS",
                        help="seconds one phase (baseline or swarm, one size) may take (default: 60)")
    parser.add_argument("--no-redis", action="store_true", help="skip the Redis pub/sub baseline")
    parser.add_argument("--broadcast", choices=["flood", "tree"], default="flood",
                        help="swarm's broadcast mode (the nodes' `broadcast` option; default: flood)")
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
    for size in args.size:
        try:
            padding_for(size, max(args.messages, args.baseline_messages))
        except ValueError as error:
            parser.error(f"--size {size}: {error}")
    if args.profile and common.pyspy_path() is None:
        parser.error("--profile needs py-spy: .venv/bin/pip install py-spy")
    return common.run(benchmark, args, "throughput")


if __name__ == "__main__":
    sys.exit(main())
