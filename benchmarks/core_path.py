"""CPU per DATA frame through the protocol core alone, in one process: what a relay's core costs.

    .venv/bin/python benchmarks/core_path.py [--frames 20000] [--repeat 7] [--size 100] [--json FILE]

A `NodeState` named "r" is linked, by HELLO and PEERS frames fed to it, to three peers b, c and d, and
subscribes to the topic. Frames of an origin "o" then arrive: each first from b (new: relayed to c and
d, delivered) and again from c (a duplicate: dropped from the header). No sockets, no trio: the figures
are the core's own work per frame, `NodeState.on_frame` in and actions out. The baseline, measured on
the same frames in the same process, is the least any relay does: read the header (`wire.data_stream`)
and ask the seen-record (`SeenRecord.observe`); each figure is also given as a ratio to it, which the
machine's speed and load cancel out of. The best of `--repeat` rounds is kept (the others were slowed
by something else). Flooding and tree mode (`broadcast: tree`, where a new frame goes to the parent's
children and a duplicate may prune) are measured alike.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections.abc import Callable
from typing import Any

from swarm.protocol import wire
from swarm.protocol.config import CoreConfig
from swarm.protocol.seen import SeenRecord
from swarm.protocol.state import NodeState

PEERS = ("b", "c", "d")


def relay(mode: str) -> NodeState:
    """A core linked to b, c and d (connections 1, 2, 3), subscribed to "t"."""
    state = NodeState(CoreConfig(server_name="r", broadcast=mode), epoch=1, listen_address=("10.0.0.1", 7000),
                      rng=random.Random(1))
    state.subscribe("t")
    state.start(0.0)
    for conn, name in enumerate(PEERS, 1):
        state.on_connection_open(conn, False, None, 0.0)
        state.on_frame(conn, wire.encode_control(wire.KIND_HELLO, {
            "version": wire.PROTOCOL_VERSION, "cluster": "swarm", "name": name, "epoch": 1,
            "address": ["10.0.0.9", 7000 + conn], "nonce": conn}), 0.0)
        state.on_frame(conn, wire.encode_control(wire.KIND_PEERS, {"peers": [], "want": True}), 0.0)
    return state


def frames(count: int, size: int) -> list[bytes]:
    """DATA frames 1..count of origin "o", one `size`-byte message each, as a neighbour relays them."""
    entry = wire.encode_entry(wire.encode_topic("t"), wire.encode_message(b"x" * size), 1 << 20)
    origin = wire.encode_origin("o")
    return [wire.relayed(wire.encode_batch(origin, 1, seq, [entry]), 1) for seq in range(1, count + 1)]


def per_frame(work: Callable[[int, bytes], Any], batch: list[bytes]) -> float:
    """CPU microseconds per frame of `work(index, frame)` over `batch`."""
    start = time.process_time()
    for index, frame in enumerate(batch):
        work(index, frame)
    return (time.process_time() - start) / len(batch) * 1e6


def measure(count: int, size: int) -> dict[str, float]:
    batch = frames(count, size)
    record = SeenRecord(100_000, 120.0, 1.0)
    baseline = per_frame(lambda i, f: record.observe(wire.data_stream(f)[1], i + 1, 1.0, f), batch)
    figures = {"baseline": baseline}
    for mode in ("flood", "tree"):
        state = relay(mode)
        figures[f"{mode}_new"] = per_frame(lambda i, f, s=state: s.on_frame(1, f, 1.0 + i * 1e-6), batch)
        figures[f"{mode}_duplicate"] = per_frame(lambda i, f, s=state: s.on_frame(2, f, 2.0 + i * 1e-6),
                                                 batch)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--size", type=int, default=100, help="message bytes (default 100)")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    rounds = [measure(args.frames, args.size) for _ in range(args.repeat)]
    best = {key: min(r[key] for r in rounds) for key in rounds[0]}
    print(f"core path: {args.frames:,} frames of one {args.size}-byte message, best of {args.repeat} rounds")
    print(f"{'path':<24}{'us per frame':>14}{'x baseline':>12}")
    for key, value in best.items():
        print(f"{key.replace('_', ' '):<24}{value:>14.2f}{value / best['baseline']:>12.2f}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump({"frames": args.frames, "size": args.size, "repeat": args.repeat, "us_per_frame": best,
                       "ratio_to_baseline": {k: v / best["baseline"] for k, v in best.items()}},
                      handle, indent=1)


if __name__ == "__main__":
    main()
