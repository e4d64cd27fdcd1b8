"""The interface between the protocol core and the overlay's shape.

`NeighbourPolicy.wanted` gets the members a node currently knows and returns the names it should be
linked to. The core dials the wanted members it is not linked to; it never closes a link because a
member is no longer wanted (a link a peer opened to us is kept, within `maxPeers` once the overlay
lands). `FullMesh` links to every member: what the first release does, and correct for small clusters.
The small-world overlay (ring neighbours plus shortcuts) replaces it behind the same interface.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

__all__ = ["FullMesh", "MemberView", "NeighbourPolicy"]


@dataclass(frozen=True, slots=True)
class MemberView:
    """What a policy may know of a member."""

    name: str
    address: tuple[str, int]
    linked: bool


class NeighbourPolicy(Protocol):
    def wanted(self, own_name: str, members: Iterable[MemberView]) -> set[str]:
        """Names of the members this node should keep links to."""
        ...


class FullMesh:
    """Link to every known member (N-1 links per node)."""

    def wanted(self, own_name: str, members: Iterable[MemberView]) -> set[str]:
        return {member.name for member in members if member.name != own_name}
