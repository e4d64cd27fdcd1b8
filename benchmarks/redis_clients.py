"""The Redis side of the benchmarks: a publisher and a subscriber process, redis-py with the hiredis parser.

Started by `throughput.py` and `latency.py` (never by hand), each one process, talking to the parent over
stdin and stdout one line at a time, like the swarm nodes of `swarm.harness`:

    python benchmarks/redis_clients.py subscriber --port P --messages N --mode throughput|latency
        -> `ready` once subscribed, `result {...}` once N messages arrived (or none came for 10 s),
           then waits for `stop` (or the end of stdin)
    python benchmarks/redis_clients.py publisher --port P --messages N --pad BYTES --mode ... [--burst B]
                                                 [--rate R]
        -> `ready` once connected; on `go` publishes, then `sent {...}` once every message is
           published, then waits for `stop`

Messages are swarm's own encoding (`swarm.protocol.wire.encode_message`, msgpack) of the same fields the
swarm benchmarks send, so both buses carry the same bytes:

* **throughput** mode: `{"from", "seq", "ts": time.time_ns(), "pad"}` as the demo's nodes publish; the
  publisher queues `--burst` PUBLISH commands in a pipeline (no MULTI) and sends them with one
  `execute()`, as the swarm publisher publishes `--burst` messages between two `drain()`s; the subscriber
  counts each message into a `swarm.harness.Tally`, exactly as a demo node does in its callback.
* **latency** mode: `{"from", "seq", "t": time.perf_counter_ns(), "pad"}`, one awaited PUBLISH per message
  at a fixed rate (message k is due at start + k / rate); the subscriber takes `perf_counter_ns()` when
  `get_message` returns it and keeps publish->deliver times (CLOCK_MONOTONIC, system-wide on Linux: one
  clock for both processes) of every message after the first `--warmup`, and reports them all.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from array import array
from typing import Any

import common
import redis
from redis.utils import HIREDIS_AVAILABLE

from swarm import harness
from swarm.protocol.wire import decode_message, encode_message

CHANNEL = "swarm-bench"
PUBLISHER = "node-0"
# A subscriber that has heard nothing for this long reports what it has.
STALL_TIMEOUT = 10.0


def subscriber(port: int, messages: int, mode: str, warmup: int) -> int:
    client = redis.Redis(host=common.HOST, port=port)
    pubsub = client.pubsub()
    pubsub.subscribe(CHANNEL)
    confirmation = pubsub.get_message(timeout=10.0)
    if not confirmation or confirmation["type"] != "subscribe":
        print(f"redis subscriber: no subscription confirmation: {confirmation!r}", file=sys.stderr)
        return 1
    common.say("ready")
    get_message = pubsub.get_message
    last_heard = time.monotonic()
    if mode == "throughput":
        tally = harness.Tally({PUBLISHER: messages})
        add, now_ns = tally.add, time.time_ns
        while tally.delivered < messages:
            item = get_message(timeout=1.0)
            if item is None:
                if time.monotonic() - last_heard > STALL_TIMEOUT:
                    break
                continue
            if item["type"] == "message":
                add(decode_message(item["data"]), now_ns())
                last_heard = time.monotonic()
        result: dict[str, Any] = tally.result()
        result["dropped"] = 0
    else:
        latencies = array("q")
        seen: set[int] = set()
        duplicates = out_of_order = highest = 0
        perf_ns = time.perf_counter_ns
        while len(seen) < messages:
            item = get_message(timeout=1.0)
            if item is None:
                if time.monotonic() - last_heard > STALL_TIMEOUT:
                    break
                continue
            if item["type"] != "message":
                continue
            now = perf_ns()
            message = decode_message(item["data"])
            seq = message["seq"]
            last_heard = time.monotonic()
            if seq in seen:
                duplicates += 1
                continue
            seen.add(seq)
            if seq < highest:
                out_of_order += 1
            highest = max(highest, seq)
            if seq > warmup:
                latencies.append(now - message["t"])
        result = {"expected": messages, "delivered": len(seen), "duplicates": duplicates,
                  "out_of_order": out_of_order, "dropped": 0, "latency": common.latency_summary(latencies),
                  "samples_ns": latencies.tolist()}
    result["hiredis"] = bool(HIREDIS_AVAILABLE)
    common.say("result " + json.dumps(common.json_safe(result)))
    common.wait_for_line("stop")
    pubsub.close()
    client.close()
    return 0


def publisher(port: int, messages: int, pad: int, mode: str, burst: int, rate: float) -> int:
    client = redis.Redis(host=common.HOST, port=port)
    client.ping()  # connected before `ready`: the parent's CPU and time count from `go`
    common.say("ready")
    if not common.wait_for_line("go"):
        return 1
    payload = bytes(pad)
    receivers = math.inf  # fewest subscribers a PUBLISH reached (fewer than started: one went away)
    started = time.perf_counter()
    if mode == "throughput":
        pipe = client.pipeline(transaction=False)
        publish, execute, now_ns = pipe.publish, pipe.execute, time.time_ns
        for seq in range(1, messages + 1):
            publish(CHANNEL, encode_message({"from": PUBLISHER, "seq": seq, "ts": now_ns(), "pad": payload}))
            if seq % burst == 0:
                receivers = min(receivers, *execute())
        if len(pipe):
            receivers = min(receivers, *execute())
    else:
        publish, perf_ns, late = client.publish, time.perf_counter_ns, 0
        for seq in range(1, messages + 1):
            delay = started + (seq - 1) / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            elif delay < -0.001:
                late += 1
            receivers = min(receivers, publish(CHANNEL, encode_message(
                {"from": PUBLISHER, "seq": seq, "t": perf_ns(), "pad": payload})))
    seconds = time.perf_counter() - started
    common.say("sent " + json.dumps({"messages": messages, "seconds": seconds,
                                     "fewest_receivers": None if receivers == math.inf else receivers}))
    common.wait_for_line("stop")
    client.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="redis_clients.py", description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("role", choices=["subscriber", "publisher"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--messages", type=int, required=True)
    parser.add_argument("--mode", choices=["throughput", "latency"], required=True)
    parser.add_argument("--pad", type=int, default=0)
    parser.add_argument("--burst", type=int, default=harness.BATCH)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--warmup", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        if args.role == "subscriber":
            return subscriber(args.port, args.messages, args.mode, args.warmup)
        return publisher(args.port, args.messages, args.pad, args.mode, args.burst, args.rate)
    except (redis.ConnectionError, BrokenPipeError) as error:
        # The server was stopped first (the parent failed or was interrupted): no traceback.
        print(f"redis_clients.py {args.role}: connection lost: {error}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
