"""What the protocol core asks its driver to do.

`NodeState` never performs I/O; each of its methods returns a list of these small objects, and the driver
(the trio transport in `swarm.transport`, or a simulated network) carries them out in order. This is
iroh-gossip's `OutEvent`, and h11's events in the other direction.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Action", "CloseConnection", "Deliver", "Dial", "Ready", "ReportError", "Retire", "Send"]


# Send and Deliver are made once per frame and once per message: plain slotted classes, because a frozen
# dataclass's __init__ sets each field through object.__setattr__ (11% of a subscriber's time in one
# profile). They are not changed after they are made all the same.
@dataclass(slots=True)
class Send:
    """Queue `data` (one or more whole frames) on each connection in `conns`."""

    conns: tuple[int, ...]
    data: bytes


@dataclass(frozen=True, slots=True)
class Dial:
    """Open a connection to `address`; report back with `on_connection_open` or `on_dial_failed`."""

    address: tuple[str, int]


@dataclass(frozen=True, slots=True)
class CloseConnection:
    """Close `conn`; report back with `on_connection_closed`.

    With `flush`, the frames already queued for it (a REFUSE, say) are written first, within a short
    bound; otherwise they are dropped.
    """

    conn: int
    reason: str
    flush: bool = False


@dataclass(frozen=True, slots=True)
class Retire:
    """Wind `conn` down without losing a frame: it duplicates another connection to the same peer.

    Move its unsent frames to `successor` (when not None), write `final` as its last frame, signal
    end-of-stream, keep reading until the peer does the same, then close and report
    `on_connection_closed`.
    """

    conn: int
    successor: int | None
    final: bytes


@dataclass(slots=True)
class Deliver:
    """Hand a message to the local subscribers of `topic`.

    The message is still encoded: `body[offset:end]` is its msgpack (a DATA body may carry a batch of
    messages), so each callback can get its own copy.
    """

    origin: str
    topic: str | int
    body: bytes
    offset: int
    end: int
    hops: int


@dataclass(frozen=True, slots=True)
class Ready:
    """The node has its `minimumPeers` links: emitted once."""


@dataclass(frozen=True, slots=True)
class ReportError:
    """Something an operator or the application should hear of (the connector's `error` event)."""

    code: str
    text: str


Action = Send | Dial | CloseConnection | Retire | Deliver | Ready | ReportError
