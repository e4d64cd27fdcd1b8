"""The small-world overlay: ring neighbours plus long-range shortcuts, over a bounded view.

Each node links to its `local_links` nearest live nodes on the ring (half on each side) and to
`shortcuts` long-range nodes (see `ring.choose_shortcut`). That is a Watts-Strogatz small world built
on purpose instead of by rewiring: constant degree at any size, and a flood reaches N nodes in about
log N hops (docs/architecture.md has the figures).

A node does not know the whole cluster. Its view holds

* its ring neighbourhood: twice as many nearest known nodes on each side as it has ring links there, so
  that a dead neighbour has a known replacement (Chord keeps a successor list for the same reason);
* a reserve of up to `reserve_size` other nodes, a random sample refreshed by gossip, from which
  shortcuts are drawn and with which partitions are repaired (HyParView's passive view);
* every node it is linked to.

So memory per node is O(local_links + reserve_size), whatever N is. Ring construction follows T-Man
(Jelasity and Babaoglu, 2005): a node sends each peer the entries of its view nearest that peer's
position, so every exchange brings both closer to their true neighbours, in about log N rounds.

Pure code: randomness comes from the `random.Random` given; no I/O, no clock.
"""

from __future__ import annotations

import random
from collections.abc import Iterable

from .neighbours import MemberView
from .ring import choose_shortcut, nearest_per_side, nearest_to

__all__ = ["SmallWorld"]


class SmallWorld:
    """Neighbour choice and view bounds of the small-world overlay (a `NeighbourPolicy`)."""

    def __init__(self, own_position: int, *, local_links: int = 4, shortcuts: int = 2,
                 distribution: str = "harmonic", reserve_size: int = 32,
                 rng: random.Random | None = None) -> None:
        if distribution not in ("uniform", "harmonic"):
            raise ValueError(f"unknown shortcut distribution {distribution!r}")
        self.own_position = own_position
        self.local_links = local_links
        self.per_side = max(1, (local_links + 1) // 2)
        self.shortcut_count = shortcuts
        self.distribution = distribution
        self.reserve_size = reserve_size
        self.rng = rng or random.Random()
        # Shortcuts stay chosen until they die: resampling them would churn links for nothing.
        self.shortcuts: set[str] = set()
        self.reserve: set[str] = set()

    def local(self, members: Iterable[MemberView]) -> list[str]:
        """The nearest reachable members on each side: the ring links this node should have."""
        return nearest_per_side(self.own_position,
                                ((m.name, m.position) for m in members if m.reachable), self.per_side)

    def wanted(self, own_name: str, members: Iterable[MemberView]) -> set[str]:
        members = [m for m in members if m.name != own_name]
        local = set(self.local(members))
        reachable = {m.name: m for m in members if m.reachable}
        self.shortcuts = {name for name in self.shortcuts if name in reachable and name not in local}
        # Draw from beyond the ring neighbourhood: the view holds the next few nodes on each side
        # (replacements for ring links), and under 1/distance weighting those few would take nearly
        # all the probability, leaving a plain ring (docs/architecture.md, section 8).
        near = set(nearest_per_side(self.own_position, ((m.name, m.position) for m in members),
                                    2 * self.per_side))
        candidates = [(m.name, m.position) for m in reachable.values()
                      if m.name not in near and m.name not in self.shortcuts]
        if not candidates:  # a small cluster: everything is near
            candidates = [(m.name, m.position) for m in reachable.values()
                          if m.name not in local and m.name not in self.shortcuts]
        while len(self.shortcuts) < self.shortcut_count and candidates:
            choice = choose_shortcut(self.own_position, candidates, self.distribution, self.rng)
            self.shortcuts.add(choice)
            candidates = [c for c in candidates if c[0] != choice]
        return local | self.shortcuts

    def retained(self, own_name: str, members: Iterable[MemberView]) -> set[str]:
        """The members to keep in the view; the rest are forgotten."""
        members = [m for m in members if m.name != own_name]
        near = nearest_per_side(self.own_position, ((m.name, m.position) for m in members),
                                2 * self.per_side)
        keep = set(near) | {m.name for m in members if m.linked} | self.shortcuts
        names = {m.name for m in members}
        self.reserve &= names - keep
        for name in sorted(names - keep - self.reserve):  # sorted: no dependence on string hashing
            if len(self.reserve) < self.reserve_size:
                self.reserve.add(name)
            elif self.rng.random() < 0.5:
                # Replace a random old entry half the time: the reserve keeps sampling newcomers.
                self.reserve.discard(self.rng.choice(sorted(self.reserve)))
                self.reserve.add(name)
        return keep | self.reserve

    def share(self, own_name: str, members: Iterable[MemberView], position: int) -> list[str]:
        """Linked members to tell a peer at `position` about: the nearest to it (so that it finds its
        ring neighbours in a few exchanges, as in T-Man) and a few at random (for its reserve)."""
        linked = [m for m in members if m.linked]
        ranked = nearest_to(linked, position, len(linked))
        near = [m.name for m in ranked[:2 * self.per_side + 2]]
        rest = [m.name for m in ranked[2 * self.per_side + 2:]]
        return near + self.rng.sample(rest, min(len(rest), 4))
