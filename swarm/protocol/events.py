"""The events the core's sub-machines tell each other, through `NodeState`.

The sub-machines (`links`, `membership`, `dialer`, `broadcast`, `direct`) never import one another. What
one of them learns that others must hear of, it returns as one of these small records, and the composer
(`state.py`) hands each to the sub-machines that care, at once and in order, the way iroh-gossip's
`topic.rs` passes `NeighborUp`/`NeighborDown` from `hyparview` to `plumtree`. Requests from membership
to the links it does not own (`ClosePeer`, `PrunePeer`) travel the same way. None of these leaves the
core: the driver sees only `actions`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["FAILED", "PEER_RETIRED", "PRUNED", "Closed", "ClosePeer", "DialFailed", "Forget", "Hello",
           "LinkDown", "LinkEvent", "LinkUp", "PrunePeer", "Redial", "Refused", "Remember", "SelfConnection"]

Address = tuple[str, int]

# Why a link went down (`LinkDown.cause`).
FAILED = "failed"  # closed: silent, misbehaving, reset, or its peer restarted
PEER_RETIRED = "peer retired"  # the peer sent BYE
PRUNED = "pruned"  # this node retired it: neither end wanted it, or room was needed


@dataclass(frozen=True, slots=True)
class Hello:
    """A connection's HELLO passed the checks of `links` (version, cluster, certificate, not ourselves);
    membership decides whether the peer is admitted."""

    conn: int
    name: str
    epoch: int
    address: Address  # the listen address the peer gave
    outbound: bool
    dialled: Address | None  # the address we dialled (outbound only)
    record: bytes | None = None  # its signature over its peer record (signed origins, `tls`)


@dataclass(frozen=True, slots=True)
class SelfConnection:
    """We dialled ourselves: these addresses are our own, never to be dialled again."""

    addresses: tuple[Address, ...]


@dataclass(frozen=True, slots=True)
class LinkUp:
    """The link to `name` now runs on connection `conn`.

    `fresh` is False when `conn` replaces another connection to the same peer (two connections crossed:
    the preferred one stays), so the peer was linked all along."""

    name: str
    conn: int
    epoch: int
    address: Address
    dialled: Address | None
    fresh: bool = True


@dataclass(frozen=True, slots=True)
class LinkDown:
    """The link to `name` (on `conn`) is gone; `since` is when the peer was last heard from."""

    name: str
    conn: int
    address: Address
    reason: str
    cause: str  # FAILED, PEER_RETIRED or PRUNED
    since: float


@dataclass(frozen=True, slots=True)
class Closed:
    """The driver closed connection `conn`; `dialled` is the address it was dialled at (outbound only),
    `handshaken` whether its HELLO ever came."""

    conn: int
    dialled: Address | None
    handshaken: bool


@dataclass(frozen=True, slots=True)
class Refused:
    """A peer sent REFUSE: `full` if it is at maxPeers (polite, with `hints` of better peers), else it
    will never take us (another cluster or version)."""

    peer: str | None
    dialled: Address | None
    reason: str
    full: bool
    hints: Any  # REFUSE's "peers": PEERS entries, checked by membership when it learns them
    # `NAME_CONFLICT`: another live process holds our name, and the peer linked it instead of us (at
    # `holder`, its listen address as the peer knows it).
    conflict: bool = False
    holder: Address | None = None


# A REFUSE's code when the refused node's name is held by another live process (a newer epoch).
NAME_CONFLICT = "name_conflict"


@dataclass(frozen=True, slots=True)
class DialFailed:
    """A dial of `address` failed; `owner` is the member that answered there before, if any."""

    address: Address
    owner: str | None


@dataclass(frozen=True, slots=True)
class ClosePeer:
    """Membership: the link to `name` is dead (the peer restarted with a new epoch): close it."""

    name: str
    reason: str


@dataclass(frozen=True, slots=True)
class PrunePeer:
    """Membership: retire the link to `name` without losing a frame (not wanted, or room is needed)."""

    name: str
    reason: str


@dataclass(frozen=True, slots=True)
class Redial:
    """Membership: a link to the member at `address` was lost: dial it again after a backoff."""

    address: Address


@dataclass(frozen=True, slots=True)
class Remember:
    """Membership forgot a member that had failed: keep its address, to probe it (partitions heal)."""

    address: Address


@dataclass(frozen=True, slots=True)
class Forget:
    """A member left gracefully: never probe `addresses` again; stop dialling `member_address` unless it
    is a seed."""

    addresses: tuple[Address, ...]
    member_address: Address | None


LinkEvent = LinkUp | LinkDown
