"""`NodeState`: one swarm node's protocol, as a state machine without I/O, composed of sub-machines.

The driver feeds it what happened and the application's commands; every method returns the actions to
carry out (`actions.py`). Time is the `now` argument and randomness the `random.Random` it is given, so
the simulator drives thousands of them deterministically. This is iroh-gossip's `proto::State` and its
`topic.rs`: it owns the parts and passes what one learns to the others, none of which imports another.

| part | what it owns |
|---|---|
| `links.py` | connection records, HELLO, duplicate connections, BYE, REFUSE, keepalive, failure timer |
| `membership.py` | the view, the links wanted (`NeighbourPolicy`), PEERS, LEAVE, pruning, forgetting |
| `dialer.py` | when to dial which address: backoff, isolation, probes, remembered addresses |
| `broadcast.py` | the own stream and its batches, the seen-record, `Flood` or `Tree` |
| `direct.py` | `send_direct`, greedy routing, UNDELIVERABLE |
| `origins.py` | signed origins (`tls`): signing, checking, CERTS |
| `delivery.py` | the subscribed topics, `Deliver` actions |

Here: the public events, frame dispatch by kind, the tick schedule, readiness and `status`. A `LinkUp` or
`LinkDown` (`events.py`) goes at once to the dialer, direct routing and the broadcast, then to
membership, which may prune a link to make room only once the others know of the new one.
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from collections.abc import Collection, Iterable
from typing import Any

from .. import counters as C
from ..errors import ProtocolError
from ..topology import NeighbourPolicy, ring
from ..topology.smallworld import SmallWorld
from . import broadcast as broadcasts
from . import events as ev
from . import wire
from .actions import Action, Ready
from .config import CoreConfig
from .delivery import Delivery
from .dialer import REMEMBERED, Dialer
from .direct import Direct
from .links import HANDSHAKE, Connection, Links
from .membership import FULL, STALE, Membership
from .origins import Authenticator, Origins

__all__ = ["CoreConfig", "NodeState"]

log = logging.getLogger("swarm.protocol")

Address = tuple[str, int]
BROADCAST_KINDS = frozenset({wire.KIND_IHAVE, wire.KIND_GRAFT, wire.KIND_PRUNE,  # the tree's
                             wire.KIND_PULL, wire.KIND_PULLED})  # gap recovery's (both modes)


class NodeState:
    """The protocol state of one node. Every public method returns the actions to perform."""

    def __init__(self, config: Any, *, epoch: int, listen_address: Address, rng: random.Random,
                 policy: NeighbourPolicy | None = None, counters: Counter[str] | None = None,
                 topics: Collection[str | int] | None = None,
                 authenticator: Authenticator | None = None) -> None:
        """`topics`: the topics with local subscribers. The core keeps a set of its own (`subscribe`),
        unless the driver passes its registry (the node's callbacks, read on every delivery).
        `authenticator`: signs and checks origins (`origins.py`; the driver's, with `tls`)."""
        self.config = config
        self.name: str = config.server_name
        self.epoch = epoch
        self.listen_address = listen_address
        self.rng = rng
        self.position = ring.position(self.name)
        self.policy: NeighbourPolicy = policy or SmallWorld(
            self.position, local_links=config.local_links, shortcuts=config.shortcuts,
            distribution=config.shortcut_distribution, reserve_size=config.reserve_size, rng=rng)
        self.counters: Counter[str] = Counter() if counters is None else counters
        self._out: list[Action] = []
        self.delivery = Delivery(set() if topics is None else topics, self.counters, self._out)
        self.ready = False
        self.leaving = False
        self._now = 0.0  # the `now` of the event being handled
        self._next_gossip = 0.0
        self._next_probe = 0.0
        shared = {"counters": self.counters, "out": self._out}
        here = {"epoch": epoch, "listen_address": listen_address}
        origins = self.origins = Origins(authenticator, **shared)  # without one: no signatures, no hooks
        frames = origins.frame_hooks()
        self.links = Links(config, rng=rng, **origins.link_hooks(self.name, listen_address, epoch), **here,
                           **shared)
        self.membership = Membership(config, policy=self.policy, **origins.claim_hooks(), **here, **shared)
        self.dialer = Dialer(config, listen_address=listen_address, rng=rng, **shared)
        self.broadcast = broadcasts.create(config, epoch=epoch, deliver=self.delivery.deliver, **frames,
                                           **shared)
        self.direct = Direct(config, epoch=epoch, deliver=self.delivery.deliver, **frames, **shared)

    # ------------------------------------------------------------------ queries

    linked_peers = property(lambda self: self.membership.linked_peers,
                            doc="Members this node has an active link to, with their listen addresses.")
    known_members = property(lambda self: self.membership.known_members, doc="Members known alive.")

    def link_kind(self, name: str) -> str:
        """"local" (a ring neighbour), "shortcut", or "inbound" (kept because the peer wants it)."""
        return self.membership.link_kind(name)

    seen = property(lambda self: self.broadcast.seen, doc="The broadcast streams' seen-record.")

    def status(self) -> dict[str, Any]:
        """A snapshot for operators and tests: ring position, links, view, counters."""
        seen, direct = self.broadcast.seen, self.direct.seen
        return {
            "name": self.name, "epoch": self.epoch, "address": list(self.listen_address), "ready": self.ready,
            "position": self.position, "links": sorted(self.linked_peers), "max_peers": self.config.max_peers,
            "link_details": self.membership.link_details(), "view_size": len(self.membership.members),
            "local_links": self.config.local_links, "members": len(self.known_members),
            "seen_entries": len(seen) + len(direct), "held": seen.held_count + direct.held_count,
            "hops": {str(hops): count for hops, count in sorted(self.broadcast.hops.items())},
            "losses": list(self.broadcast.losses), "pulls_pending": len(self.broadcast.pulls),
            "name_conflict": self.links.name_conflict,
            "counters": dict(self.counters, **{C.DUPLICATES: seen.duplicates + direct.duplicates,
                                               C.GAPS_GIVEN_UP: seen.gaps_given_up + direct.gaps_given_up}),
        }

    def addresses_to_remember(self) -> list[Address]:
        """What a peers file should hold: linked nodes first, then the rest of the view."""
        return self.membership.addresses_to_remember(REMEMBERED)

    # ------------------------------------------------------------------ application commands

    def start(self, now: float) -> list[Action]:
        """Begin: become ready at once if no peers are required, dial the seeds."""
        self._now = now
        self._next_gossip = now + self.config.gossip_interval
        self._next_probe = now + self.config.probe_interval
        self._check_ready()
        self._dial_due(now)
        return self._flush()

    def remember(self, addresses: Iterable[Address], now: float) -> None:
        """Addresses known in an earlier run (the peers file): dialled like seeds (`dialer.py`)."""
        for address in addresses:
            self.dialer.remember(address, now)

    def subscribe(self, topic: str | int) -> None:
        self.delivery.topics.add(topic)  # type: ignore[attr-defined]

    def unsubscribe(self, topic: str | int) -> None:
        self.delivery.topics.discard(topic)  # type: ignore[attr-defined]

    def publish(self, topic: str | int, message: Any, now: float, *,
                seal: bool | None = None) -> list[Action]:
        """Broadcast `message` on `topic` to every other node. The batching rule decides when it leaves
        (`broadcast.py`), unless `seal` is True (at once, closing the open batch) or False (into the open
        batch: for drivers and tests that batch by hand). Raises MessageTooLarge, or TypeError/ValueError
        for a message or topic the wire cannot carry, before anything is sent."""
        entry = wire.encode_entry(self.delivery.topic_bytes(topic), wire.encode_message(message),
                                  self.config.max_message_size)
        self._now = now
        self.broadcast.publish(entry, now, seal)
        return self._flush()

    def on_turn_end(self, now: float) -> list[Action]:
        """The driver's turn of its event loop ended: send what was batched in it."""
        self._now = now
        self.broadcast.turn_end(now)
        return self._flush()

    def send_direct(self, target: str, topic: str | int, message: Any, now: float) -> list[Action]:
        """Send `message` to the node called `target` only (`direct.py`). A target that cannot be reached
        is reported as a ReportError "unreachable", here or by an UNDELIVERABLE coming back."""
        self._now = now
        if target == self.name:
            raise ValueError("a node does not send direct messages to itself")
        self.broadcast.seal(now)  # what this node published before stays ahead of it on every link
        self.direct.send(target, self.delivery.topic_bytes(topic), wire.encode_message(message),
                         self.membership.epoch_of(target))
        return self._flush()

    def certificate_changed(self, now: float) -> list[Action]:
        """Our certificate was reloaded: links hear of the new chain, HELLOs carry a record signed anew."""
        self._now = now
        self.links.record = self.origins.changed(self.name, self.listen_address, self.epoch)
        return self._flush()

    def leave(self, now: float) -> list[Action]:
        """Announce a graceful exit to every linked peer. The driver then flushes and closes."""
        self._now = now
        self.broadcast.seal(now)  # what was published before leaving goes out before the LEAVE
        self.leaving = True
        self.membership.leave(now)
        return self._flush()

    # ------------------------------------------------------------------ events from the driver

    def on_connection_open(self, conn_id: int, outbound: bool, address: Address | None, now: float,
                           identity: str | None = None, certificate: bytes | None = None) -> list[Action]:
        """A TCP connection is up (we dialled `address`, or accepted one). `identity` is the name in the
        peer's TLS `certificate` (DER), if any: its HELLO must claim that name, or it is refused."""
        self._now = now
        self.origins.learn_link_certificate(certificate)
        if outbound and address is not None:
            self.dialer.opened(address)
        self.links.open(conn_id, outbound, address, now, identity, leaving=self.leaving)
        return self._flush()

    def on_dial_failed(self, address: Address, reason: str, now: float) -> list[Action]:
        self._now = now
        failure = self.dialer.failed(address, reason, now)
        if failure is not None:
            self.membership.dial_failed(failure, now)
        return self._flush()

    def on_connection_closed(self, conn_id: int, reason: str, now: float) -> list[Action]:
        self._now = now
        events = self.links.closed(conn_id, reason, now)
        if events:
            self._dispatch(events)
            self._dial_due(now)
        return self._flush()

    def on_stream_error(self, conn_id: int, reason: str, now: float) -> list[Action]:
        """The driver could not cut the byte stream into frames (say, an oversized length prefix)."""
        self._now = now
        if (conn := self.links.conns.get(conn_id)) is not None:
            self._dispatch(self.links.protocol_error(conn, reason))
        return self._flush()

    def on_frame(self, conn_id: int, frame: bytes, now: float) -> list[Action]:
        """A whole frame (length prefix included) arrived on `conn_id`."""
        conn = self.links.receive(conn_id, now)
        if conn is None:
            return self._flush()
        self._now = now
        kind = wire.kind(frame)
        try:
            if (kind == wire.KIND_DATA or kind in wire.ROUTED_KINDS) and conn.state == HANDSHAKE:
                raise ProtocolError(f"frame kind {kind} (a payload) before the handshake")
            if kind == wire.KIND_DATA:
                self.broadcast.on_data(conn_id, conn.peer_bytes, frame, now)
            elif kind in wire.ROUTED_KINDS:
                self.direct.on_routed(frame, now, conn_id, conn.peer_bytes)
            else:
                self._on_control(conn, kind, frame, now)
        except ProtocolError as error:
            self._dispatch(self.links.protocol_error(conn, str(error)))
        except Exception as error:  # a malformed frame this code failed to call malformed: never fatal
            log.exception("%s: frame of kind %d from %s broke the core", self.name, kind, conn.peer)
            self.counters[C.INTERNAL_ERRORS] += 1
            reason = f"frame could not be handled ({type(error).__name__})"
            self._dispatch(self.links.protocol_error(conn, reason))
        return self._flush()

    def on_tick(self, now: float) -> list[Action]:
        """Time passed: keepalives, failure detection, timeouts, reorder gaps, gossip, probes, re-dials."""
        self._now = now
        self._dispatch(self.links.tick(now))
        self.broadcast.seal(now)  # a driver that does not end its turns: batches wait one tick at most
        self.broadcast.tick(now)
        self.direct.tick(now)
        self.origins.report(now)
        self._serve((membership := self.membership).forget_unreachable(now))
        if now >= self._next_gossip:
            self._next_gossip = now + self.config.gossip_interval
            membership.trim_view(now)
            self._dial_due(now)
            self._serve(membership.prune(now))
            membership.send_peers(now, self.broadcast.recent_positions(now, self.config.gossip_interval))
        if now >= self._next_probe:
            self._next_probe = now + self.config.probe_interval * (0.5 + self.rng.random())
            self.dialer.probe(now, membership.failed_addresses())
        self._dial_due(now)
        return self._flush()

    # ------------------------------------------------------------------ control frames

    def _on_control(self, conn: Connection, kind: int, frame: bytes, now: float) -> None:
        if kind not in wire.CONTROL_KINDS:
            raise ProtocolError(f"unknown frame kind {kind}")
        fields = wire.control_fields(frame)
        if kind == wire.KIND_STATUS_REQUEST and conn.state == HANDSHAKE:
            # An operator's tool (`python -m swarm status`), not a peer: answer and hang up.
            self.counters[C.STATUS_REQUESTS] += 1
            self.links.send(conn, wire.encode_control(wire.KIND_STATUS, self.status()))
            self.links.close(conn, "status sent", flush=True)
            return
        if kind == wire.KIND_HELLO:
            self._on_hello(conn, fields, now)
        elif kind == wire.KIND_REFUSE:  # in the handshake (a refused HELLO) or after it (a full peer)
            self._dispatch(self.links.on_refuse(conn, fields))
        elif conn.state == HANDSHAKE:
            raise ProtocolError(f"frame kind {kind} before the handshake")
        elif kind == wire.KIND_PEERS:
            seen = fields.get("seen")
            if seen is not None:
                self.broadcast.peer_positions(conn.id, conn.peer_bytes, seen, now, adopt=not self.ready)
            requests, changed = self.membership.on_peers(conn.id, conn.peer, fields, now)
            self._check_ready()
            self._serve(requests)
            if changed:
                self._dial_due(now)
        elif kind == wire.KIND_LEAVE:
            self._serve(self.membership.on_leave(conn.id, fields, frame, now))
        elif kind == wire.KIND_BYE:
            self._dispatch(self.links.on_bye(conn, now))
        elif kind in BROADCAST_KINDS:
            self.broadcast.on_control(conn.id, conn.peer_bytes, kind, fields, now)
        elif kind == wire.KIND_CERTS:
            self.origins.on_certs(conn.id, conn.peer or "", fields)

    def _on_hello(self, conn: Connection, fields: dict[str, Any], now: float) -> None:
        """Links checks the HELLO, membership admits the peer (or not), links makes the link."""
        hello = self.links.hello(conn, fields)
        if hello is None:
            return
        if isinstance(hello, ev.SelfConnection):
            self.dialer.self_connection(hello)
            return
        self.dialer.handshake(hello.dialled)
        self._dispatch(self.links.supersede(hello))
        admission = self.membership.admit(hello, now)
        if admission.verdict == STALE:
            self._dispatch(self.links.refuse(conn, admission.reason, C.STALE_EPOCH, admission.holder))
            return
        self.dialer.answered(hello.dialled, hello.name, now)
        if admission.verdict == FULL:
            self.links.refuse_full(conn, admission.reason, list(admission.hints))
            self.membership.bound_view(now)
            return
        self._serve(admission.requests)
        self._dispatch(self.links.establish(conn.id))

    # ------------------------------------------------------------------ between the parts

    def _dispatch(self, events: Iterable[Any]) -> None:
        """Hand what links reported to the parts that care, in order."""
        now = self._now
        for event in events:
            kind = type(event)
            if kind is ev.LinkUp:
                self.origins.link_up(event)  # first: our certificates go ahead of our PEERS
                self.dialer.link_up(event)
                self.direct.link_up(event)
                self.broadcast.link_up(event)
                positions = self.broadcast.positions() if event.fresh else None
                self._serve(self.membership.link_up(event, now, positions))
            elif kind is ev.LinkDown:
                self.broadcast.link_down(event)
                self.direct.link_down(event)
                self.origins.link_down(event)
                self.dialer.link_down(event)
                self._serve(self.membership.link_down(event))
            elif kind is ev.Closed:
                failure = self.dialer.closed(event, now)
                if failure is not None:
                    self.membership.dial_failed(failure, now)
            elif kind is ev.Refused:
                if event.full:
                    self._serve(self.membership.turned_away(event.peer or self.dialer.owner(event.dialled),
                                                            event.hints, now))
                else:
                    self.dialer.refused(event, now)
                    self.ready = self.ready and not event.conflict  # cut off by a twin: not ready
            else:  # pragma: no cover - a new event must be taught to the composer
                raise AssertionError(f"unknown event {event!r}")

    def _serve(self, requests: Iterable[Any]) -> None:
        """Carry out membership's requests to the parts it does not own."""
        now = self._now
        for request in requests:
            kind = type(request)
            if kind is ev.Redial:
                self.dialer.redial(request.address, now)
            elif kind is ev.PrunePeer:
                self._dispatch(self.links.retire_peer(request.name, request.reason, now))
            elif kind is ev.ClosePeer:
                self._dispatch(self.links.close_peer(request.name, request.reason))
            elif kind is ev.Remember:
                self.dialer.remember(request.address, now)
            elif kind is ev.Forget:
                self.dialer.forget(request)
            else:  # pragma: no cover
                raise AssertionError(f"unknown request {request!r}")

    def _dial_due(self, now: float) -> None:
        """Dial what should be linked and is not (nothing once leaving)."""
        if not self.leaving:
            self.dialer.dial_due(now, *self.membership.dial_plan(now, isolated=not self.links.linked))

    def _check_ready(self) -> None:
        """Ready once `minimumPeers` links are confirmed (an unconfirmed peer forwards us nothing)."""
        confirmed = self.membership.confirmed_links
        self.links.name_conflict = self.links.name_conflict if not confirmed else None  # a peer takes us
        if not self.ready and self.links.name_conflict is None and confirmed >= self.config.minimum_peers:
            self.ready = True
            self._out.append(Ready())

    def _flush(self) -> list[Action]:
        if not (out := self._out):
            return []
        actions, out[:] = out.copy(), ()
        return actions
