"""Links: one node's connections, from the HELLO exchange to the last frame.

This sub-machine owns every connection record and decides, per peer, which connection carries data (the
*link*). It knows nothing of the overlay: whom to link to and whether a peer is welcome are membership's
decisions, and what travels on a link is the other sub-machines'. What it tells them (through
`NodeState`) is `LinkUp` and `LinkDown`, as HyParView's connection layer tells Plumtree of neighbours
going up and down (iroh-gossip's `NeighborUp`/`NeighborDown`).

* **Handshake.** Both ends of a new connection send HELLO at once (protocol version, cluster name,
  server name, epoch, listen address, a random nonce). A peer of another version or cluster, or whose
  HELLO claims another name than its TLS certificate, is sent REFUSE and closed; a HELLO from ourselves
  (our own address among the seeds) closes the connection and marks the address as ours. A connection
  that says nothing within `handshakeTimeout` is closed.
* **Duplicate connections.** Two nodes that dial each other at once end up with two connections. Both
  ends keep the one dialled by the smaller server name (ties broken by the dialler's nonce, which both
  ends know) and *retire* the other: it carries no new frames, its unsent DATA frames move to the
  survivor, it ends with BYE and is read to its end, so no frame in flight is lost (docs/protocol.md
  §7). A peer's new epoch (it restarted) supersedes its old connection, which is dead whatever TCP says.
* **Liveness.** A link silent for `failureTimeout` is closed (the TCP connection is the failure detector,
  as in HyParView); PINGs go out on a link idle for a third of it, so two may be lost first.
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .. import counters as C
from ..errors import ProtocolError
from . import wire
from .actions import Action, CloseConnection, ReportError, Retire, Send
from .events import (
    FAILED,
    NAME_CONFLICT,
    PEER_RETIRED,
    PRUNED,
    Closed,
    Hello,
    LinkDown,
    LinkEvent,
    LinkUp,
    Refused,
    SelfConnection,
)

__all__ = ["ACTIVE", "CLOSING", "HANDSHAKE", "RETIRING", "Connection", "Links"]

log = logging.getLogger("swarm.protocol")

Address = tuple[str, int]

HANDSHAKE, ACTIVE, RETIRING, CLOSING = "handshake", "active", "retiring", "closing"


def _integer(value: Any) -> bool:
    """An int field of a frame: msgpack's true and false decode to bools, which are ints in Python."""
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(slots=True)
class Connection:
    id: int
    outbound: bool
    address: Address | None  # the address dialled (outbound only)
    opened_at: float
    last_received: float
    last_sent: float
    state: str = HANDSHAKE
    peer: str | None = None
    peer_bytes: bytes = b""
    epoch: int = 0  # the peer's, from its HELLO
    listen: Address = ("", 0)  # the listen address its HELLO gave
    dialer_nonce: int = 0  # the hello nonce of whichever end dialled: a tie-breaker both ends agree on
    identity: str | None = None  # the name in the peer's TLS certificate (None without TLS)


class Links:
    """Connection records, the handshake, duplicate connections, keepalive and the failure timer.

    Methods that end links return the `LinkDown` (and `LinkUp`) events for the other sub-machines; the
    frames and closes for the driver go into `out`."""

    def __init__(self, config: Any, *, epoch: int, listen_address: Address, rng: random.Random,
                 counters: Counter[str], out: list[Action], record: bytes | None = None,
                 hint_chains: Callable[[list[list[Any]]], list[list[bytes]]] = lambda hints: [],
                 learn_chains: Callable[[Any, str], None] = lambda chains, peer: None) -> None:
        """`config`: the node's `CoreConfig` (server_name, cluster_name, failure_timeout,
        handshake_timeout are read). With signed origins (`tls`, `Origins.link_hooks`): `record`, our
        signature over our peer record, which every HELLO carries; `hint_chains(hints)`, the certificate
        chains of the members a full REFUSE names, and `learn_chains(chains, peer)`, for those of a
        REFUSE we get."""
        self.name: str = config.server_name
        self.cluster_name: str = config.cluster_name
        self.epoch = epoch
        self.listen_address = listen_address
        self.failure_timeout: float = config.failure_timeout
        self.handshake_timeout: float = config.handshake_timeout
        self.rng = rng
        self.record = record
        self.hint_chains, self.learn_chains = hint_chains, learn_chains
        self.counters = counters
        self.out = out
        self.conns: dict[int, Connection] = {}
        self.active: dict[str, int] = {}  # peer name -> the connection that carries its link
        # Set while peers refuse us because another live process holds our name (NAME_CONFLICT):
        # {"holder": [host, port], "peer", "reason"}; cleared (by state.py) once a peer confirms a link
        # with us (its PEERS), which a peer that refuses us never sends.
        self.name_conflict: dict[str, Any] | None = None

    # ------------------------------------------------------------------ connections

    def open(self, conn_id: int, outbound: bool, address: Address | None, now: float,
             identity: str | None, *, leaving: bool) -> None:
        """A TCP connection is up: send HELLO (or close it, if this node is leaving)."""
        conn = self.conns[conn_id] = Connection(conn_id, outbound, address, now, now, now, identity=identity)
        if leaving:
            self.out.append(CloseConnection(conn_id, "node is leaving"))
            return
        # A fresh nonce per connection: two connections dialled by the same node must still differ.
        nonce = self.rng.getrandbits(63)
        if outbound:
            conn.dialer_nonce = nonce
        hello: dict[str, Any] = {
            "version": wire.PROTOCOL_VERSION, "cluster": self.cluster_name, "name": self.name,
            "epoch": self.epoch, "address": list(self.listen_address), "nonce": nonce,
        }
        if self.record is not None:
            hello["record"] = self.record
        self.send(conn, wire.encode_control(wire.KIND_HELLO, hello))

    def receive(self, conn_id: int, now: float) -> Connection | None:
        """A frame arrived on `conn_id`: its record (None if unknown or closing), marked as heard from."""
        conn = self.conns.get(conn_id)
        if conn is None or conn.state == CLOSING:
            return None
        conn.last_received = now
        return conn

    def send(self, conn: Connection, frame: bytes) -> None:
        self.out.append(Send((conn.id,), frame))

    @property
    def linked(self) -> bool:
        return bool(self.active)

    # ------------------------------------------------------------------ handshake

    def hello(self, conn: Connection, fields: dict[str, Any]) -> Hello | SelfConnection | None:
        """Check a HELLO. Return the `Hello` for membership to admit, `SelfConnection`, or None when the
        peer was refused here (closed)."""
        if conn.state != HANDSHAKE:
            raise ProtocolError("second HELLO on one connection")
        version = fields.get("version")
        if not _integer(version):
            # Not another version: not a swarm HELLO at all (say so, rather than "version '3' is not 3").
            self.refuse(conn, f"HELLO version must be an integer, got {type(version).__name__} {version!r}",
                        C.VERSION_MISMATCH)
            return None
        if version != wire.PROTOCOL_VERSION:
            self.refuse(conn, f"protocol version {version!r} is not supported (this node speaks "
                              f"{wire.PROTOCOL_VERSION})", C.VERSION_MISMATCH)
            return None
        cluster = fields.get("cluster")
        if cluster != self.cluster_name:
            self.refuse(conn, f"cluster name {cluster!r} differs from {self.cluster_name!r}",
                        C.CLUSTER_MISMATCH)
            return None
        name, epoch, address, nonce = (fields.get(k) for k in ("name", "epoch", "address", "nonce"))
        if not (isinstance(name, str) and 0 < len(name.encode("utf-8")) <= wire.MAX_NAME_BYTES
                and _integer(epoch) and _integer(nonce)
                and isinstance(address, list) and len(address) == 2
                and isinstance(address[0], str) and _integer(address[1])):
            raise ProtocolError("HELLO fields missing or of the wrong type")
        if conn.identity is not None and name != conn.identity:
            # Before anything is learned from this HELLO: an impostor must not touch another's state.
            self.refuse(conn, f"certificate is for {conn.identity!r}, HELLO claims {name!r}",
                        C.IDENTITY_MISMATCH)
            return None
        address = (address[0], address[1])
        if name == self.name:
            # We dialled ourselves (our own address is among the seeds): remember, never again.
            self.close(conn, "connected to itself")
            return SelfConnection((address,) if conn.address is None else (address, conn.address))
        if not conn.outbound:
            conn.dialer_nonce = nonce
        conn.peer, conn.peer_bytes, conn.epoch, conn.listen = name, name.encode("utf-8"), epoch, address
        conn.state = ACTIVE
        record = fields.get("record")
        return Hello(conn.id, name, epoch, address, conn.outbound, conn.address,
                     record if isinstance(record, bytes) else None)

    def supersede(self, hello: Hello) -> list[LinkEvent]:
        """A peer that restarted (a newer epoch) said HELLO: its old link is dead, whatever TCP says yet."""
        current = self.active.get(hello.name)
        if current is None or current == hello.conn or self.conns[current].epoch >= hello.epoch:
            return []
        # Usually a restart, and the old process is gone; if it lives (a twin started under its name),
        # it learns why it lost its links, as a refused one does.
        old = self.conns[current]
        self.counters[C.STALE_EPOCH] += 1
        self.send(old, wire.encode_control(wire.KIND_REFUSE, {
            "reason": f"name conflict: {hello.name!r} is held by a newer process at {hello.address[0]}:"
                      f"{hello.address[1]} (epoch {hello.epoch}; this one's is {old.epoch})",
            "code": NAME_CONFLICT, "holder": list(hello.address)}))
        return self.close(old, "peer restarted with a new epoch", flush=True)

    def establish(self, conn_id: int) -> list[LinkEvent]:
        """Membership admitted the peer of `conn_id`: make it the link, or keep the better of two."""
        conn = self.conns[conn_id]
        assert conn.peer is not None
        current_id = self.active.get(conn.peer)
        if current_id is None:
            self.active[conn.peer] = conn.id
            return [self._up(conn, fresh=True)]
        current = self.conns[current_id]
        self.counters[C.DUPLICATE_CONNECTIONS] += 1
        if self._prefer(current, conn):
            self._retire(conn, current.id)
            return []
        self.active[conn.peer] = conn.id
        event = self._up(conn, fresh=False)
        self._retire(current, conn.id)
        return [event]

    @staticmethod
    def _up(conn: Connection, *, fresh: bool) -> LinkUp:
        assert conn.peer is not None
        return LinkUp(conn.peer, conn.id, conn.epoch, conn.listen, conn.address, fresh)

    def _prefer(self, a: Connection, b: Connection) -> bool:
        """True if `a` should survive rather than `b` (both ends of the pair decide alike)."""
        def rank(conn: Connection) -> tuple[bool, int]:
            dialled_by_smaller = (self.name < (conn.peer or "")) == conn.outbound
            return (not dialled_by_smaller, conn.dialer_nonce)
        return rank(a) <= rank(b)

    def refuse(self, conn: Connection, reason: str, counter: str,
               holder: Address | None = None) -> list[LinkEvent]:
        """Tell the peer why, then close (after the REFUSE is written). With `holder`, the peer's name is
        held by another live process, listening there (code NAME_CONFLICT)."""
        self.counters[counter] += 1
        self.out.append(ReportError("refused", f"refusing peer at {conn.address or 'inbound'}: {reason}"))
        fields: dict[str, Any] = {"reason": reason}
        if holder is not None:
            fields.update(code=NAME_CONFLICT, holder=list(holder))
        self.send(conn, wire.encode_control(wire.KIND_REFUSE, fields))
        return self.close(conn, reason, flush=True)

    def refuse_full(self, conn: Connection, reason: str, hints: list[list[Any]]) -> None:
        """Turn a joiner away politely (it is not linked: nothing goes down), naming better peers, with
        their certificates when origins are signed: the joiner has no link yet to learn them on, and
        could check none of the hints' signed records without them."""
        fields: dict[str, Any] = {"reason": reason, "code": "full", "peers": hints}
        chains = self.hint_chains(hints)
        if chains:
            fields["chains"] = chains
        self.send(conn, wire.encode_control(wire.KIND_REFUSE, fields))
        self.close(conn, "at maxPeers", flush=True)

    def on_refuse(self, conn: Connection, fields: dict[str, Any]) -> list[Any]:
        """The peer refused us: `Refused` for the others, then the close."""
        reason = str(fields.get("reason", "no reason given"))[:300]
        full = fields.get("code") == "full"
        self.counters[C.TURNED_AWAY_FULL if full else C.REFUSED_BY_PEER] += 1
        holder = fields.get("holder")
        conflict = fields.get("code") == NAME_CONFLICT
        if not (isinstance(holder, list) and len(holder) == 2 and isinstance(holder[0], str)
                and isinstance(holder[1], int)):
            holder = None
        refused = Refused(conn.peer, conn.address, reason, full, fields.get("peers", []), conflict,
                          (holder[0], holder[1]) if holder else None)
        if full and "chains" in fields:
            self.learn_chains(fields["chains"], conn.peer or "")  # before the hints are checked
        if conflict:
            self._name_conflict(conn, reason, refused.holder)
        closing = f"turned away: {reason}" if full else f"refused by peer: {reason}"
        return [refused, *self.close(conn, closing)]

    def _name_conflict(self, conn: Connection, reason: str, holder: Address | None) -> None:
        """A peer refused us because another live process holds our name: loud, once per conflict (it
        stands until a peer links us again), and the node is not ready meanwhile (`state.py`)."""
        self.counters[C.NAME_CONFLICTS] += 1
        first = self.name_conflict is None
        where = f"{holder[0]}:{holder[1]}" if holder else "an address the peer did not give"
        self.name_conflict = {"holder": list(holder) if holder else None, "peer": conn.peer, "reason": reason}
        if first:
            self.out.append(ReportError("name_conflict", f"serverName {self.name!r} is held by another live "
                                        f"process at {where}; peers refuse this one ({reason})"))

    def protocol_error(self, conn: Connection, reason: str) -> list[LinkEvent]:
        self.counters[C.PROTOCOL_ERRORS] += 1
        who = conn.peer or (f"{conn.address[0]}:{conn.address[1]}" if conn.address else "inbound peer")
        self.out.append(ReportError("protocol", f"closing link to {who}: {reason}"))
        return self.close(conn, reason)

    # ------------------------------------------------------------------ ending links

    def close(self, conn: Connection, reason: str, *, flush: bool = False) -> list[LinkEvent]:
        """Ask the driver to close `conn`; forget it when the driver reports it closed."""
        if conn.state == CLOSING:
            return []
        events = self._down(conn, reason, FAILED, conn.last_received)
        conn.state = CLOSING
        self.out.append(CloseConnection(conn.id, reason, flush))
        return events

    def close_peer(self, name: str, reason: str) -> list[LinkEvent]:
        conn_id = self.active.get(name)
        return [] if conn_id is None else self.close(self.conns[conn_id], reason)

    def retire_peer(self, name: str, reason: str, now: float) -> list[LinkEvent]:
        """Retire the link to `name` (membership pruned it): its queued frames go out, then BYE."""
        conn_id = self.active.get(name)
        if conn_id is None:
            return []
        conn = self.conns[conn_id]
        events = self._down(conn, reason, PRUNED, now)
        self._retire(conn, None)
        return events

    def on_bye(self, conn: Connection, now: float) -> list[LinkEvent]:
        """The peer retires this connection; stop writing to it too (its reader drains to the end)."""
        if conn.state == RETIRING:
            return []
        events = self._down(conn, "peer retired the link", PEER_RETIRED, now)
        self._retire(conn, None)
        return events

    def closed(self, conn_id: int, reason: str, now: float) -> list[Any]:
        """The driver closed `conn_id` (at our request or not): `LinkDown` if it was a link, `Closed`."""
        conn = self.conns.pop(conn_id, None)
        if conn is None:
            return []
        events: list[Any] = self._down(conn, reason, FAILED, now)
        events.append(Closed(conn_id, conn.address if conn.outbound else None, conn.peer is not None))
        return events

    def _down(self, conn: Connection, reason: str, cause: str, since: float) -> list[LinkEvent]:
        if conn.peer is None or self.active.get(conn.peer) != conn.id:
            return []
        del self.active[conn.peer]
        self.counters[C.LINKS_LOST] += 1
        log.info("%s: link to %s lost: %s", self.name, conn.peer, reason)
        return [LinkDown(conn.peer, conn.id, conn.listen, reason, cause, since)]

    def _retire(self, conn: Connection, successor: int | None) -> None:
        conn.state = RETIRING
        self.out.append(Retire(conn.id, successor, wire.encode_control(wire.KIND_BYE, {})))

    # ------------------------------------------------------------------ time

    def tick(self, now: float) -> list[LinkEvent]:
        """Handshake and failure timeouts; a PING on every link idle for a third of failureTimeout."""
        keepalive_after = self.failure_timeout / 3
        events: list[LinkEvent] = []
        ping: list[int] = []
        for conn in list(self.conns.values()):
            if conn.state == CLOSING:
                continue  # closed already, waiting for the driver to report it: nothing to time out
            if conn.state == HANDSHAKE:
                if now - conn.opened_at > self.handshake_timeout:
                    self.counters[C.HANDSHAKE_TIMEOUTS] += 1
                    events += self.close(conn, f"no handshake within {self.handshake_timeout:g}s")
                continue
            if now - conn.last_received > self.failure_timeout:
                self.counters[C.FAILURE_TIMEOUTS] += 1
                events += self.close(conn, f"silent for {self.failure_timeout:g}s")
                continue
            if conn.state == ACTIVE and now - conn.last_sent >= keepalive_after:
                ping.append(conn.id)
                conn.last_sent = now
        if ping:
            self.out.append(Send(tuple(ping), wire.encode_control(wire.KIND_PING, {})))
        return events
