"""Positions on the ring, distances, and the choice of ring neighbours and shortcuts.

Every node sits at a point of a ring of 2**64 positions, BLAKE2b (8-byte digest) of its server name,
so any node can place any named node without asking it (as Chord places keys). A node links to its
nearest live nodes on each side (the lattice of Watts and Strogatz) and to a few long-range shortcuts.

Shortcuts are drawn from the nodes a node knows:

* `uniform`: every candidate equally likely, as Watts-Strogatz rewiring does;
* `harmonic`: probability proportional to 1/(ring distance), Kleinberg's (2000) condition for greedy
  routing to find paths of O(log^2 N) hops; Symphony draws its links the same way.

Pure functions: randomness comes from the `random.Random` passed in.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterable, Sequence
from typing import TypeVar

T = TypeVar("T")

__all__ = ["MAX_ROUTE_HOPS", "RING", "choose_shortcut", "clockwise", "nearest_per_side", "nearest_to",
           "position",
           "ring_distance"]

RING = 1 << 64
HALF = RING >> 1
# A routed frame (a direct message) that has crossed this many links is dropped: greedy routing strictly
# approaches its target, so only a view in flux can make it wander, and a loop must not live for ever.
MAX_ROUTE_HOPS = 64


def position(name: str | bytes) -> int:
    """The ring position of the node called `name` (text, or its UTF-8 bytes)."""
    raw = name.encode("utf-8") if isinstance(name, str) else name
    return int.from_bytes(hashlib.blake2b(raw, digest_size=8).digest(), "big")


def clockwise(start: int, end: int) -> int:
    """Steps from `start` to `end` going clockwise (increasing positions, wrapping)."""
    return (end - start) % RING


def ring_distance(a: int, b: int) -> int:
    """The shorter way round between two positions."""
    step = (b - a) % RING
    return step if step <= HALF else RING - step


def nearest_per_side(own: int, candidates: Iterable[tuple[str, int]], per_side: int) -> list[str]:
    """Names of the `per_side` nearest successors and `per_side` nearest predecessors of `own`.

    In a cluster too small to have that many distinct nodes on each side, every candidate is returned.
    """
    items = list(candidates)
    if len(items) <= 2 * per_side:
        return [name for name, _ in items]
    successors = sorted(items, key=lambda item: ((item[1] - own) % RING, item[0]))[:per_side]
    predecessors = sorted(items, key=lambda item: ((own - item[1]) % RING, item[0]))[:per_side]
    chosen = dict.fromkeys(name for name, _ in successors)
    for name, _ in predecessors:
        chosen[name] = None
    return list(chosen)


def nearest_to(members: Iterable[T], target: int, count: int) -> list[T]:
    """The `count` members (anything with `.name` and `.position`) nearest to ring position `target`."""
    return sorted(members, key=lambda m: (ring_distance(m.position, target), m.name))[:count]  # type: ignore[attr-defined]


def choose_shortcut(own: int, candidates: Sequence[tuple[str, int]], distribution: str,
                    rng: random.Random) -> str | None:
    """Draw one shortcut among `candidates` (name, position) by `distribution`; None if there are none."""
    if not candidates:
        return None
    if distribution == "uniform":
        return rng.choice(candidates)[0]
    if distribution == "harmonic":
        weights = [1.0 / max(ring_distance(own, pos), 1) for _, pos in candidates]
        return rng.choices(candidates, weights=weights, k=1)[0][0]
    raise ValueError(f"unknown shortcut distribution {distribution!r}")
