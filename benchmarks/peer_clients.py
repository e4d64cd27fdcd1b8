"""The NATS and ZeroMQ sides of the throughput benchmark: a publisher and a subscriber process of each.

Started by `throughput.py` (never by hand), each one process, talking to the parent over stdin and stdout
one line at a time, as `redis_clients.py` does:

    python benchmarks/peer_clients.py nats-subscriber --port P --messages N
        -> `ready` once the server has its subscription, `result {...}` once N messages arrived (or none
           came for 10 s), then waits for `stop` (or the end of stdin)
    python benchmarks/peer_clients.py nats-publisher --port P --messages N --pad BYTES [--burst B]
        -> `ready` once connected; on `go` publishes, then `sent {...}`, then waits for `stop`
    python benchmarks/peer_clients.py zmq-publisher --messages N --pad BYTES
        -> `listening PORT` once its PUB socket is bound to 127.0.0.1 (an ephemeral port), then a warm-up
           frame every 5 ms until `go`; then publishes, `sent {...}`, and waits for `stop`
    python benchmarks/peer_clients.py zmq-subscriber --port P --messages N
        -> `ready` once the first warm-up frame arrived, `result {...}` as above

The messages are the bytes the swarm and Redis benchmarks send: swarm's own encoding
(`swarm.protocol.wire.encode_message`, msgpack) of `{"from", "seq", "ts": time.time_ns(), "pad"}`; each
subscriber counts them into a `swarm.harness.Tally` as a demo node does in its callback.

* **NATS** (nats-py, asyncio): the publisher calls `publish()` for each message and `flush()` (a PING
  answered by PONG: every message before it reached the server) every `--burst` messages, as swarm's
  publisher awaits `drain()` every `--burst`. The subscriber's callback does the counting; the client's
  own pending limits are off (`pending_msgs_limit=0, pending_bytes_limit=0`), so the client never drops,
  and the server's are its defaults (a subscriber more than 64 MiB behind is cut off as a slow consumer:
  that shows as lost messages, and in `errors`).
* **ZeroMQ** (pyzmq, libzmq 4.3): PUB/SUB over TCP with no high-water mark (SNDHWM and RCVHWM 0: at the
  default of 1,000, ZeroMQ drops what does not fit). A SUB socket hears only what is published after its
  subscription reached the publisher (the "slow joiner"), so the publisher sends warm-up frames until the
  parent says `go`, which it does once every subscriber said `ready`: each has had a frame, and a PUB
  socket sends each subscriber's frames in order on one connection. Warm-up frames are not counted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import select
import sys
import time
from typing import Any

import common

from swarm import harness
from swarm.protocol.wire import decode_message, encode_message

SUBJECT = "swarm-bench"
PUBLISHER = "node-0"
WARMUP = b"w"  # not msgpack of a dict (which starts with 0x8N): never taken for a message
# A subscriber that has heard nothing for this long reports what it has.
STALL_TIMEOUT = 10.0
# Seconds between two ZeroMQ warm-up frames.
WARMUP_INTERVAL = 0.005


def _messages(count: int, pad: int):
    payload = bytes(pad)
    now_ns = time.time_ns
    for seq in range(1, count + 1):
        yield seq, encode_message({"from": PUBLISHER, "seq": seq, "ts": now_ns(), "pad": payload})


def _report(tally: harness.Tally, **extra: Any) -> None:
    result = tally.result()
    result["dropped"] = 0
    result.update(extra)
    common.say("result " + json.dumps(common.json_safe(result)))


def _sent(messages: int, started: float) -> None:
    common.say("sent " + json.dumps({"messages": messages, "seconds": time.perf_counter() - started,
                                     "fewest_receivers": None}))


# ---------------------------------------------------------------------- NATS


async def _nats_connect(port: int, errors: list[str]) -> Any:
    import nats

    async def on_error(error: Exception) -> None:
        errors.append(f"{type(error).__name__}: {error}")

    return await nats.connect(f"nats://{common.HOST}:{port}", allow_reconnect=False, error_cb=on_error,
                              name="swarm-bench")


async def nats_subscriber(port: int, messages: int) -> int:
    errors: list[str] = []
    client = await _nats_connect(port, errors)
    tally = harness.Tally({PUBLISHER: messages})
    add, now_ns = tally.add, time.time_ns
    done = asyncio.Event()

    async def on_message(message: Any) -> None:
        add(decode_message(message.data), now_ns())
        if tally.delivered >= messages:
            done.set()

    await client.subscribe(SUBJECT, cb=on_message, pending_msgs_limit=0, pending_bytes_limit=0)
    await client.flush()  # the server has the subscription
    common.say("ready")
    heard, last_heard = 0, time.monotonic()
    while not done.is_set():
        try:
            await asyncio.wait_for(done.wait(), 1.0)
        except TimeoutError:
            if tally.delivered != heard:
                heard, last_heard = tally.delivered, time.monotonic()
            elif time.monotonic() - last_heard > STALL_TIMEOUT:
                break
    _report(tally, errors=errors[:10])
    common.wait_for_line("stop")
    await client.close()
    return 0


async def nats_publisher(port: int, messages: int, pad: int, burst: int) -> int:
    errors: list[str] = []
    client = await _nats_connect(port, errors)
    common.say("ready")
    if not common.wait_for_line("go"):
        return 1
    started = time.perf_counter()
    publish, flush = client.publish, client.flush
    for seq, data in _messages(messages, pad):
        await publish(SUBJECT, data)
        if seq % burst == 0:
            await flush()
    await flush()
    _sent(messages, started)
    common.wait_for_line("stop")
    await client.close()
    return 0


# ---------------------------------------------------------------------- ZeroMQ


def zmq_publisher(messages: int, pad: int) -> int:
    import zmq
    context = zmq.Context()
    socket = context.socket(zmq.PUB)
    socket.setsockopt(zmq.SNDHWM, 0)
    socket.setsockopt(zmq.LINGER, 0)  # `stop` comes after every subscriber reported
    socket.bind(f"tcp://{common.HOST}:0")
    common.say(f"listening {socket.getsockopt_string(zmq.LAST_ENDPOINT).rsplit(':', 1)[1]}")
    while not select.select([sys.stdin], [], [], WARMUP_INTERVAL)[0]:
        socket.send(WARMUP)
    if sys.stdin.readline().strip() != "go":
        return 1
    started = time.perf_counter()
    send = socket.send
    for _, data in _messages(messages, pad):
        send(data)
    _sent(messages, started)
    common.wait_for_line("stop")
    socket.close()
    context.term()
    return 0


def zmq_subscriber(port: int, messages: int) -> int:
    import zmq
    context = zmq.Context()
    socket = context.socket(zmq.SUB)
    socket.setsockopt(zmq.RCVHWM, 0)
    socket.setsockopt(zmq.RCVTIMEO, 1000)
    socket.setsockopt(zmq.LINGER, 0)
    socket.setsockopt(zmq.SUBSCRIBE, b"")
    socket.connect(f"tcp://{common.HOST}:{port}")
    tally = harness.Tally({PUBLISHER: messages})
    add, now_ns, receive = tally.add, time.time_ns, socket.recv
    deadline = time.monotonic() + common.STARTUP_TIMEOUT
    ready = False
    while not ready:
        try:
            ready = receive() == WARMUP
        except zmq.Again:
            if time.monotonic() > deadline:
                print("zmq subscriber: no warm-up frame", file=sys.stderr)
                return 1
    common.say("ready")
    last_heard = time.monotonic()
    while tally.delivered < messages:
        try:
            data = receive()
        except zmq.Again:
            if time.monotonic() - last_heard > STALL_TIMEOUT:
                break
            continue
        if data != WARMUP:
            add(decode_message(data), now_ns())
            last_heard = time.monotonic()
    _report(tally, zmq_version=zmq.zmq_version(), pyzmq_version=zmq.__version__)
    common.wait_for_line("stop")
    socket.close()
    context.term()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="peer_clients.py", description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("role", choices=["nats-subscriber", "nats-publisher", "zmq-subscriber",
                                         "zmq-publisher"])
    parser.add_argument("--port", type=int)
    parser.add_argument("--messages", type=int, required=True)
    parser.add_argument("--pad", type=int, default=0)
    parser.add_argument("--burst", type=int, default=harness.BATCH)
    args = parser.parse_args(argv)
    try:
        if args.role == "nats-subscriber":
            return asyncio.run(nats_subscriber(args.port, args.messages))
        if args.role == "nats-publisher":
            return asyncio.run(nats_publisher(args.port, args.messages, args.pad, args.burst))
        if args.role == "zmq-subscriber":
            return zmq_subscriber(args.port, args.messages)
        return zmq_publisher(args.messages, args.pad)
    except (ConnectionError, BrokenPipeError) as error:
        # The server was stopped first (the parent failed or was interrupted): no traceback.
        print(f"peer_clients.py {args.role}: connection lost: {error}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
