"""What the protocol core asks its driver to do.

`NodeState` never performs I/O; each of its methods returns a list of these small objects, and the driver
(the trio transport in `swarm.transport`, or a simulated network) carries them out in order. This is
iroh-gossip's `OutEvent`, and h11's events in the other direction. Every frame here is whole (length
prefix included), as `on_frame` takes them.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Action", "Alarm", "CloseConnection", "Deliver", "Dial", "Ready", "ReportError", "Retire",
           "ScheduleTimer", "Send"]


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

    The message is still encoded: `frame[offset:end]` (`encoded`) is its msgpack (a DATA frame may carry a
    batch of messages), so each callback can get its own copy.
    """

    origin: str
    topic: str | int
    frame: bytes
    offset: int
    end: int
    hops: int

    @property
    def encoded(self) -> memoryview:
        """The message's msgpack, without a copy."""
        return memoryview(self.frame)[self.offset:self.end]


@dataclass(frozen=True, slots=True)
class Ready:
    """The node has its `minimumPeers` links: emitted once."""


@dataclass(frozen=True, slots=True)
class ReportError:
    """Something an operator or the application should hear of (the connector's `error` event)."""

    code: str
    text: str


@dataclass(frozen=True, slots=True)
class ScheduleTimer:
    """Call `on_tick` at `at` (the same clock as every `now`), or sooner: a reorder gap, a settle window
    or a graft falls due before the next regular tick (iroh-gossip's `ScheduleTimer`). A time already
    past means as soon as possible."""

    at: float
    # Only the own stream's open batch is due then (signed origins space their frames, `broadcast.py`):
    # a driver may call `on_turn_end` at `at` instead of the whole `on_tick` (a tick seals it too).
    seal: bool = False


Action = Send | Dial | CloseConnection | Retire | Deliver | Ready | ReportError | ScheduleTimer


class Alarm:
    """The wake-up one sub-machine has asked its driver for, so that it asks again only for an earlier
    one: every event may move a deadline, and a ScheduleTimer per frame would cost the hot path."""

    __slots__ = ("at", "out")

    def __init__(self, out: list[Action]) -> None:
        self.at = float("inf")
        self.out = out

    def ask(self, at: float) -> None:
        """Be woken at `at`, unless an earlier wake-up is asked for already."""
        if at < self.at:
            self.at = at
            self.out.append(ScheduleTimer(at))

    def rang(self, at: float) -> None:
        """A tick ran: whatever was asked is spent; ask for `at` (inf: nothing) from here on."""
        self.at = float("inf")
        self.ask(at)

