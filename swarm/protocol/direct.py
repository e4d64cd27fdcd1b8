"""Direct messages: `send_direct` to one named node, routed greedily along the ring.

A DIRECT frame goes to one node. Each hop forwards it to the target if linked, otherwise to the linked
peer whose ring position is nearest the target's, provided that peer is nearer than the hop itself
(Kleinberg's greedy routing, 2000: with harmonic shortcuts a route takes O(log² N) hops). A node nearer
than all its peers that is not the target answers UNDELIVERABLE, routed back to the origin the same way,
and the origin reports `unreachable`: a direct message is never delivered to another node. A route is
capped at `ring.MAX_ROUTE_HOPS`.

Direct streams are numbered per (origin, target) and per target *process*: a restarted target (a new
epoch in the view) starts a new count, and every DIRECT says which process of its target its count is
for (`target_epoch`, 0 when the sender does not know it yet). A target that meets a stream counted for
another process (its previous one, in the moments before the sender hears of the restart) starts that
stream at the first message it gets, at once: it cannot have missed earlier ones meant for it, so
waiting `reorderTimeout` for them (as for a stream met mid-way) would only delay the message, and
deepstream's RPCs time out after a second. A stream counted for this very process keeps the usual
rules. They go through a seen-record of their own (duplicates and per-origin order), apart
from the broadcast streams, whose positions a peer shares with newcomers and these are not.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from .. import counters as C
from ..topology import ring
from . import wire
from .actions import Action, Alarm, ReportError, Send
from .events import LinkDown, LinkUp
from .seen import SeenRecord

__all__ = ["Direct"]


class Direct:
    """Numbering, routing and in-order delivery of direct messages."""

    def __init__(self, config: Any, *, epoch: int, deliver: Callable[[bytes, None], None],
                 counters: Counter[str], out: list[Action], sign: Callable[[bytes], bytes] | None = None,
                 check: Callable[[bytes, int, bytes, float], bool] | None = None) -> None:
        """`config`: the node's `CoreConfig` (server_name, max_message_size, and the seen-record's
        reorder_timeout, seen_max_entries, seen_ttl are read). With signed origins (`origins.py`), `sign`
        signs what we send and `check(frame, conn, peer, now)` what comes for us (relays route a DIRECT
        unchecked: its target checks it, and a relay could as well drop it)."""
        name: str = config.server_name
        self._name_bytes = name.encode("utf-8")
        self._origin = wire.encode_origin(name)
        self.epoch = epoch
        self.position = ring.position(name)
        self.max_message_size: int = config.max_message_size
        self.seen = SeenRecord(config.seen_max_entries, config.seen_ttl, config.reorder_timeout,
                               settle=config.reorder_timeout)
        self.counters = counters
        self.out = out
        self._deliver = deliver
        self._sign, self._check = sign, check
        self._seq: dict[str, tuple[int | None, int]] = {}  # target -> (its epoch, last seq sent)
        self._links: dict[bytes, tuple[int, int]] = {}  # linked peer (UTF-8) -> (connection, ring position)
        self.alarm = Alarm(out)

    def send(self, target: str, topic: bytes, message: bytes, target_epoch: int | None) -> None:
        """Send the encoded `message` on the encoded `topic` to `target`, whose epoch in the view is
        `target_epoch` (None if it is not in the view)."""
        known_epoch, last = self._seq.get(target, (target_epoch, 0))
        if target_epoch is not None and target_epoch != known_epoch:  # a new process, or first known
            last = 0
        seq = last + 1
        numbered_for = target_epoch if target_epoch is not None else known_epoch
        frame = wire.encode_direct(wire.encode_origin(target), self._origin, self.epoch, seq, topic, message,
                                   self.max_message_size, numbered_for or 0)
        if self._sign is not None:
            frame = self._sign(frame)
        self._seq[target] = (numbered_for, seq)
        self.counters[C.DIRECT_SENT] += 1
        self._route(frame, target.encode("utf-8"), wire.KIND_DIRECT, frame)

    def on_routed(self, frame: bytes, now: float, conn: int = 0, peer: bytes = b"") -> None:
        """A DIRECT or UNDELIVERABLE frame from `peer` on `conn`: for us, or to pass one hop nearer its
        target."""
        hops, target, after_target = wire.route(frame)
        kind = wire.kind(frame)
        if target != self._name_bytes:
            # Checked as its target would check it (the header, the topic, where the signature starts;
            # an UNDELIVERABLE's map), so that a malformed frame closes the link it came on, the
            # sender's, and travels no further. Unchecked, its target closed its link to the last
            # honest relay instead: under tls, a member could cut honest links (docs/protocol.md §13).
            if kind == wire.KIND_DIRECT:
                wire.direct_stream(frame, after_target)
            else:
                wire.undeliverable_fields(frame, after_target)
            if hops + 1 >= ring.MAX_ROUTE_HOPS:
                self.counters[C.ROUTE_HOP_LIMIT] += 1
                if kind == wire.KIND_DIRECT:
                    self._undeliverable(frame, after_target, f"no route within {ring.MAX_ROUTE_HOPS} hops")
                return
            self.counters[C.ROUTED] += 1
            self._route(wire.relayed(frame, hops + 1), target, kind, frame, after_target)
            return
        if kind == wire.KIND_UNDELIVERABLE:
            fields = wire.undeliverable_fields(frame, after_target)
            self.counters[C.DIRECT_UNDELIVERABLE] += 1
            self.out.append(ReportError("unreachable", f"direct message to {fields.get('target')!r} was "
                                                       f"not delivered: {fields.get('reason')}"))
            return
        key, seq, numbered_for = wire.direct_stream(frame, after_target)
        check = self._check
        if check is not None and not self.seen.has(key, seq) and not check(frame, conn, peer, now):
            return
        ready = self.seen.observe(key, seq, now, frame, settle=numbered_for == self.epoch)
        if ready is None:
            return
        self.counters[C.DIRECT_RECEIVED] += 1
        for item in ready:
            self._deliver(item, None)
        if not ready:
            self.alarm.ask(self.seen.wakeup)

    def _route(self, frame: bytes, target: bytes, kind: int, received: bytes, after_target: int = 0) -> None:
        """Send `frame` one hop nearer `target`: to it if linked, else to the linked peer nearest to its
        ring position, if nearer than this node. `received` is the frame as it came (or was made)."""
        link = self._links.get(target)
        if link is not None:
            self.out.append(Send((link[0],), frame))
            return
        goal = ring.position(target)
        best = min(self._links.values(), key=lambda link: ring.ring_distance(link[1], goal), default=None)
        if best is not None and ring.ring_distance(best[1], goal) < ring.ring_distance(self.position, goal):
            self.out.append(Send((best[0],), frame))
            return
        if kind == wire.KIND_DIRECT:
            self._undeliverable(received, after_target or wire.route(received)[2],
                                "no such node (the ring has no node by that name)")
        else:
            self.counters[C.UNDELIVERABLE_LOST] += 1

    def _undeliverable(self, frame: bytes, after_target: int, reason: str) -> None:
        """Tell the origin of the DIRECT `frame` that it cannot be delivered."""
        target_bytes, origin = wire.direct_parties(frame, after_target)
        target = target_bytes.decode("utf-8", "replace")
        self.counters[C.DIRECT_UNROUTABLE] += 1
        if origin == self._name_bytes:
            self.out.append(ReportError("unreachable", f"direct message to {target!r} was not delivered: "
                                                       f"{reason}"))
            return
        answer = wire.encode_undeliverable(bytes((len(origin),)) + origin,
                                           {"target": target, "reason": reason})
        self._route(answer, origin, wire.KIND_UNDELIVERABLE, answer)

    def link_up(self, event: LinkUp) -> None:
        self._links[event.name.encode("utf-8")] = (event.conn, ring.position(event.name))

    def link_down(self, event: LinkDown) -> None:
        self._links.pop(event.name.encode("utf-8"), None)

    def tick(self, now: float) -> None:
        for item in self.seen.expire(now):
            self._deliver(item, None)
        self.alarm.rang(self.seen.wakeup)
