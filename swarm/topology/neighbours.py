"""The interface between the protocol core and the overlay's shape.

A `NeighbourPolicy` answers three questions about the members a node knows:

* `wanted`: which of them it should be linked to. The core dials those it is not linked to, and retires
  a link once neither end wants it any more.
* `retained`: which of them to keep in its view; the rest are forgotten (a bounded view).
* `share`: which of them to tell a peer at a given ring position about (T-Man's exchange).

`SmallWorld` (ring neighbours plus shortcuts, `smallworld.py`) is the default; `FullMesh` links to every
member, as swarm's first release did and the old deepstream connector does, and serves as a baseline.
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
    position: int = 0
    reachable: bool = True


class NeighbourPolicy(Protocol):
    def wanted(self, own_name: str, members: Iterable[MemberView]) -> set[str]:
        """Names of the members this node should keep links to."""
        ...

    def retained(self, own_name: str, members: Iterable[MemberView]) -> set[str]:
        """Names of the members to keep in the view."""
        ...

    def share(self, own_name: str, members: Iterable[MemberView], position: int) -> list[str]:
        """Names of the linked members to tell a peer at ring `position` about."""
        ...


class FullMesh:
    """Link to every known member (N-1 links per node); keep and share everything."""

    def wanted(self, own_name: str, members: Iterable[MemberView]) -> set[str]:
        return {m.name for m in members if m.name != own_name and m.reachable}

    def retained(self, own_name: str, members: Iterable[MemberView]) -> set[str]:
        return {m.name for m in members}

    def share(self, own_name: str, members: Iterable[MemberView], position: int) -> list[str]:
        return [m.name for m in members if m.linked]
