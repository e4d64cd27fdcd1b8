"""`NodeState`: one swarm node's protocol, as a state machine without I/O.

The driver feeds it what happened — a connection opened or closed, a frame arrived, a dial failed, time
advanced — and the application's commands (publish, subscribe, leave); every method returns the actions
to carry out (`swarm.protocol.actions`). It never touches a socket or a clock: time is the `now` argument
(seconds, any monotonic origin) and randomness comes from the `random.Random` it is given, so the
simulator can drive thousands of instances deterministically. This is the shape of iroh-gossip's
`proto::State`.

The protocol in brief (docs/protocol.md has the bytes, docs/architecture.md the reasons):

* **Links.** Both ends of a new connection send HELLO (protocol version, cluster name, server name, epoch,
  listen address, a random nonce). A peer of another version or cluster gets REFUSE and is closed. When
  two connections join the same pair of nodes (simultaneous dials), both ends keep the one dialled by the
  smaller server name (ties broken by the dialler's nonce) and *retire* the other: it stops carrying new
  frames but is read to its end, so no frame in flight is lost.
* **Overlay.** A node learns members from HELLOs and from PEERS frames, which list only members the
  sender is linked to right now, so a dead node is not kept alive by rumour. A `NeighbourPolicy`
  (`swarm.topology`; by default the small-world ring of `SmallWorld`) says which members to link to,
  which to keep in the bounded view, and which to tell each peer about: every `gossipInterval` each
  node sends each linked peer the members nearest that peer's ring position (T-Man) and whether it
  still wants the link; a link neither end wants is retired. Wanted members that are not linked are
  dialled with exponential backoff and jitter; two failures in a row make a member unreachable and the
  next nearest one takes its place. Past `maxPeers`, inbound joiners that would not be ring neighbours
  are refused with hints of nearer nodes. An isolated node dials its seeds and everything it knows; a
  linked one probes a seed or a once-known node now and then, which heals partitions. A member
  unreachable for `forgetAfter` is forgotten. LEAVE announces a graceful exit. A link silent for
  `failureTimeout` is closed; keepalive PINGs go out at a third of it.
* **Gossip.** A DATA frame is forwarded once, the first time it is seen, to every linked peer except
  the one it came from and its origin; its body is reused byte for byte, only the hop count in the prefix
  changes. The seen-record (`swarm.protocol.seen`) recognises duplicates from the header and releases
  messages in per-origin order. A newly linked peer is told where each origin's stream stands, so a
  late joiner knows what was published before it could be ready.
* **Direct messages.** DIRECT frames go to one node, each hop forwarding to the linked peer nearest the
  target's ring position (Kleinberg's greedy routing); a node nearer than all its peers that is not the
  target answers UNDELIVERABLE to the origin.
"""

from __future__ import annotations

import logging
import random
import struct
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..errors import ProtocolError
from ..topology import MemberView, NeighbourPolicy, ring
from ..topology.smallworld import SmallWorld
from . import wire
from .actions import Action, CloseConnection, Deliver, Dial, Ready, ReportError, Retire, Send
from .seen import SeenRecord
from .tree import CACHE_WINDOWS, MAX_GRAFT, REPAIR_ROUNDS, MessageId, TreeBroadcast, per_frame

__all__ = ["CoreConfig", "NodeState"]


log = logging.getLogger("swarm.protocol")

Address = tuple[str, int]

HANDSHAKE, ACTIVE, RETIRING, CLOSING = "handshake", "active", "retiring", "closing"
# Origins whose stream position a peer shares with a newcomer (a PEERS frame stays far below the
# control-frame limit: ~40 bytes each).
SEEN_SNAPSHOT_LIMIT = 2048
EPOCH = struct.Struct(">Q")
SEQ = EPOCH  # both are 8-byte unsigned big-endian numbers
# Addresses of once-known nodes kept for probes and rejoining (HyParView's passive view is ~30).
REMEMBERED = 32
REMEMBER_FACTOR = 10
# A seed reached this recently is not probed (unless nodes were lost): seeds are the last resort.
SEED_RECHECK = 300.0
# Ids (or stream keys) read from one IHAVE or GRAFT frame at most, the rest ignored: swarm sends at
# most tree.MAX_IHAVE / MAX_GRAFT (512) per frame, so this only bounds the work a hostile frame costs.
TREE_IDS_READ = 4096


@dataclass(frozen=True)
class CoreConfig:
    """The options the protocol core needs (a subset of `swarm.config.Options`)."""

    server_name: str
    cluster_name: str = "swarm"
    seeds: tuple[Address, ...] = ()
    minimum_peers: int = 0
    max_message_size: int = 1 << 20
    failure_timeout: float = 3.0
    handshake_timeout: float = 3.0
    reorder_timeout: float = 1.0
    seen_max_entries: int = 100_000
    seen_ttl: float = 120.0
    reconnect_min_delay: float = 0.05
    reconnect_max_delay: float = 2.0
    forget_after: float = 60.0
    # Overlay shape (swarm.topology.smallworld).
    local_links: int = 4
    shortcuts: int = 2
    shortcut_distribution: str = "harmonic"
    max_peers: int = 12
    reserve_size: int = 32
    # How often a node tells each peer what it knows near that peer (T-Man's round), and whether it
    # still wants the link. Half a second lets 20 nodes find their ring in a few seconds.
    gossip_interval: float = 0.5
    # How often an isolated or partitioned node re-dials a seed or a node it once knew.
    probe_interval: float = 2.0
    broadcast: str = "flood"  # or "tree": Plumtree's eager/lazy push (swarm.protocol.tree)
    graft_timeout: float = 0.1

    @classmethod
    def from_options(cls, options: Any) -> CoreConfig:
        return cls(
            server_name=options.serverName, cluster_name=options.clusterName, seeds=options.seedNodes,
            minimum_peers=options.minimumPeers, max_message_size=options.maxMessageSize,
            failure_timeout=options.failureTimeout, handshake_timeout=options.handshakeTimeout,
            reorder_timeout=options.reorderTimeout, seen_max_entries=options.seenMaxEntries,
            seen_ttl=options.seenTtl, reconnect_min_delay=options.reconnectMinDelay,
            reconnect_max_delay=options.reconnectMaxDelay, forget_after=options.forgetAfter,
            local_links=options.localLinks, shortcuts=options.shortcuts,
            shortcut_distribution=options.shortcutDistribution, max_peers=options.maxPeers,
            reserve_size=options.reserveSize, gossip_interval=options.gossipInterval,
            broadcast=options.broadcast, graft_timeout=options.graftTimeout,
        )


@dataclass(slots=True)
class _Connection:
    id: int
    outbound: bool
    address: Address | None  # the address dialled (outbound only)
    opened_at: float
    last_received: float
    last_sent: float
    state: str = HANDSHAKE
    peer: str | None = None
    peer_bytes: bytes = b""
    dialer_nonce: int = 0  # the hello nonce of whichever end dialled: a tie-breaker both ends agree on
    hello_sent: bool = False
    pruned: bool = False  # retired because neither end wants it: do not re-dial
    confirmed: bool = False  # the peer has linked us too (its first PEERS arrived)
    identity: str | None = None  # the name in the peer's TLS certificate (None without TLS)


@dataclass(slots=True)
class _Member:
    name: str
    address: Address
    epoch: int
    position: int
    conn: int | None = None  # the active connection, if linked
    left: bool = False  # announced a graceful leave (for this epoch)
    unreachable_since: float | None = None
    failures: int = 0  # dials failed, or links lost, since the last good handshake
    refused_until: float = 0.0  # a full peer turned us away: do not ask again before
    linked_since: float = 0.0
    peer_wants: bool = True  # the peer's last word on whether it wants the link (PEERS "want")
    heard_at: float = 0.0  # last sign of life: its HELLO, or a peer listing it as linked

    def reachable(self, now: float) -> bool:
        """Worth linking to: linked, or not failed twice in a row and not turning us away."""
        return self.conn is not None or (self.failures < 2 and now >= self.refused_until)


@dataclass(slots=True)
class _DialTarget:
    """Retry state of one address we want a connection to."""

    failures: int = 0
    next_attempt: float = 0.0
    in_flight: bool = False
    refused: bool = False  # the peer there refused us (other cluster or version)


@dataclass(slots=True)
class _Timers:
    next_gossip: float = 0.0
    next_probe: float = 0.0


class NodeState:
    """The protocol state of one node. Every public method returns the actions to perform."""

    def __init__(self, config: CoreConfig, *, epoch: int, listen_address: Address, rng: random.Random,
                 policy: NeighbourPolicy | None = None, counters: Counter[str] | None = None) -> None:
        self.config = config
        self.name = config.server_name
        self.epoch = epoch
        self.listen_address = listen_address
        self.rng = rng
        self.position = ring.position(self.name)
        self.policy: NeighbourPolicy = policy or SmallWorld(
            self.position, local_links=config.local_links, shortcuts=config.shortcuts,
            distribution=config.shortcut_distribution, reserve_size=config.reserve_size, rng=rng)
        self.counters: Counter[str] = Counter() if counters is None else counters
        self.hops: Counter[int] = Counter()  # broadcasts received, by hops of their first copy
        # An origin first met mid-stream (not at seq 1, and not in the position list a peer sends when it
        # links us) settles for `reorder_timeout`, as long as a gap may stay open: a message that
        # overtook an earlier one must not fix the starting point past it. Rare, so the wait is cheap.
        # Tree mode repairs a gap by GRAFT, which under load may take longer than reorder_timeout.
        repair_window = config.reorder_timeout + REPAIR_ROUNDS * config.graft_timeout
        tree_mode = config.broadcast == "tree"
        self.seen = SeenRecord(config.seen_max_entries, config.seen_ttl, config.reorder_timeout,
                               settle=config.reorder_timeout,
                               repair_timeout=repair_window if tree_mode else config.reorder_timeout)
        self.ready = False
        self.leaving = False
        self._origin_header = wire.encode_origin(self.name)
        self._own_key = self._origin_header + EPOCH.pack(epoch)  # our stream's seen-record key
        self.tree = TreeBroadcast(config.graft_timeout, cache_seconds=CACHE_WINDOWS * repair_window
                                  ) if tree_mode else None
        self._name_bytes = self.name.encode("utf-8")
        self._seq = 0  # the last sequence number given to a DATA frame (a batch) of ours
        # Messages published and not yet sealed into a DATA frame (encoded entries), and their size.
        self._batch: list[bytes] = []
        self._batch_bytes = 0
        self._conns: dict[int, _Connection] = {}
        self._members: dict[str, _Member] = {}
        self._dials: dict[Address, _DialTarget] = {}
        self._self_addresses: set[Address] = {listen_address}
        self._address_owner: dict[Address, str] = {}  # dialled address -> the member that answered there
        self._probes: set[Address] = set()  # addresses to dial once (partition repair)
        self._seed_contact: dict[Address, float] = {}  # seed address -> last handshake with it
        self._departed: dict[tuple[str, int], float] = {}  # (name, epoch) of nodes that left
        # Addresses of forgotten members (and of the peers file), with when they were remembered: probed
        # now and then so that partitions heal, for `REMEMBER_FACTOR * forget_after` seconds at most.
        self._remembered: dict[Address, float] = {}
        self._wanted: set[str] = set()
        self._seeds = tuple(config.seeds)
        self._topics: set[str | int] = set()
        self._active: tuple[int, ...] = ()  # ids of the connections that carry data, one per peer
        self._active_pairs: tuple[tuple[int, bytes], ...] = ()  # (connection id, peer name) of the same
        self._origin_names: dict[bytes, str] = {}
        self._topic_cache: dict[str | int, bytes] = {}
        self._direct_seq: dict[str, tuple[int | None, int]] = {}  # target -> (its epoch, last seq sent)
        self._timers = _Timers()
        self._out: list[Action] = []
        self._now = 0.0  # the `now` of the event being handled

    # ------------------------------------------------------------------ queries

    @property
    def linked_peers(self) -> dict[str, Address]:
        """Members this node has an active link to, with their listen addresses."""
        return {m.name: m.address for m in self._members.values() if m.conn is not None}

    @property
    def known_members(self) -> dict[str, Address]:
        return {m.name: m.address for m in self._members.values() if not m.left}

    def link_kind(self, name: str) -> str:
        """"local" (a ring neighbour), "shortcut", or "inbound" (kept because the peer wants it)."""
        if name in getattr(self.policy, "shortcuts", ()):
            return "shortcut"
        return "local" if name in self._wanted else "inbound"

    @property
    def wakeup(self) -> float:
        """The earliest `now` at which `on_tick` has ordering or graft work to do (sooner than a tick)."""
        if self.tree is not None:
            return min(self.seen.wakeup, self.tree.wakeup)
        return self.seen.wakeup

    def status(self) -> dict[str, Any]:
        """A snapshot for operators and tests: ring position, links, view, counters."""
        links = [{"name": m.name, "address": list(m.address), "kind": self.link_kind(m.name),
                  "position": m.position} for m in self._members.values() if m.conn is not None]
        return {
            "name": self.name, "epoch": self.epoch, "address": list(self.listen_address), "ready": self.ready,
            "position": self.position, "links": sorted(self.linked_peers),
            "link_details": sorted(links, key=lambda link: link["name"]),
            "view_size": len(self._members), "max_peers": self.config.max_peers,
            "local_links": self.config.local_links,
            "members": len(self.known_members),
            "seen_entries": len(self.seen), "held": self.seen.held_count,
            "hops": {str(hops): count for hops, count in sorted(self.hops.items())},
            "counters": dict(self.counters, duplicates=self.seen.duplicates,
                             gaps_given_up=self.seen.gaps_given_up),
        }

    # ------------------------------------------------------------------ application commands

    def start(self, now: float) -> list[Action]:
        """Begin: become ready at once if no peers are required, dial the seeds."""
        self._now = now
        self._timers.next_gossip = now + self.config.gossip_interval
        self._timers.next_probe = now + self.config.probe_interval
        self._check_ready()
        self._dial_due(now)
        return self._flush()

    def remember(self, addresses: Iterable[Address], now: float) -> None:
        """Addresses of nodes known in an earlier run (the driver's peers file): dialled like seeds while
        the node has no link, and probed now and then, so a restarted node gets back in even when every
        seed is down."""
        for address in addresses:
            if address not in self._self_addresses:
                self._remember(address, now)

    def _remember(self, address: Address, now: float) -> None:
        self._remembered.pop(address, None)
        self._remembered[address] = now
        while len(self._remembered) > REMEMBERED:
            del self._remembered[next(iter(self._remembered))]  # the oldest

    def addresses_to_remember(self) -> list[Address]:
        """What a peers file should hold: linked nodes first, then the rest of the view."""
        linked = [m.address for m in self._members.values() if m.conn is not None]
        others = [m.address for m in self._members.values() if m.conn is None and m.failures < 2]
        return list(dict.fromkeys(linked + others))[:REMEMBERED]

    def subscribe(self, topic: str | int) -> None:
        self._topics.add(topic)

    def unsubscribe(self, topic: str | int) -> None:
        self._topics.discard(topic)

    def publish(self, topic: str | int, message: Any, now: float, *, seal: bool = True) -> list[Action]:
        """Broadcast `message` on `topic` to every other node.

        With `seal` (the default) the message leaves at once, in a DATA frame of its own. Without it the
        message joins the open batch, which goes out as one frame when `seal_batch` is called (the
        trio driver does so when its writers next run, before any byte is written), when it reaches
        `wire.BATCH_BYTES`, or at the next tick; the messages of a batch keep their order.

        Raises MessageTooLarge, or TypeError/ValueError for a message or topic the wire cannot carry,
        before anything is sent.
        """
        entry = wire.encode_entry(self._topic_bytes(topic), wire.encode_message(message),
                                  self.config.max_message_size)
        self._now = now
        self.counters["published"] += 1
        if not self._active and not self._batch:
            self.counters["published_without_peers"] += 1
            return self._flush()
        if self._batch and self._batch_bytes + len(entry) > wire.BATCH_BYTES:
            self._seal()
        self._batch.append(entry)
        self._batch_bytes += len(entry)
        if seal:
            self._seal()
        return self._flush()

    @property
    def batch_open(self) -> bool:
        """Are there published messages waiting for `seal_batch`?"""
        return bool(self._batch)

    def seal_batch(self, now: float) -> list[Action]:
        """Send the open batch of published messages (if any) as one DATA frame."""
        self._now = now
        if self._batch:
            self._seal()
        return self._flush()

    def _seal(self) -> None:
        batch, self._batch, self._batch_bytes = self._batch, [], 0
        if not self._active:  # the links went while the batch was open
            self.counters["published_without_peers"] += len(batch)
            return
        self._seq += 1
        self.counters["batches_published"] += 1
        frame = wire.encode_batch(self._origin_header, self.epoch, self._seq, batch)
        if self.tree is None:
            self._out.append(Send(self._active, frame))
            self.counters["data_frames_sent"] += len(self._active)
        else:
            message = (self._own_key, self._seq)
            self.tree.received(message, frame[4:], self._now)
            self._push(frame, b"", b"", message)

    def _push(self, frame: bytes, sender: bytes, origin: bytes, message: MessageId) -> None:
        """Tree mode: the payload to eager links, its id to lazy ones (not back to sender or origin)."""
        tree = self.tree
        assert tree is not None
        lazy, pruned = tree.lazy, tree.lazy_for(message[0])
        eager = tuple(c for c, peer in self._active_pairs if peer != sender and peer != origin
                      and peer not in pruned and peer not in lazy)
        if eager:
            self._out.append(Send(eager, frame))
            self.counters["data_frames_sent"] += len(eager)
        tree.announce(message, (peer for _, peer in self._active_pairs if (peer in pruned or peer in lazy)
                                and peer != sender and peer != origin))

    def _topic_bytes(self, topic: str | int) -> bytes:
        topic_bytes = self._topic_cache.get(topic)
        if topic_bytes is None or type(topic) is bool:
            topic_bytes = wire.encode_topic(topic)
            if len(self._topic_cache) < 1024:  # topics are few (deepstream's are a handful)
                self._topic_cache[topic] = topic_bytes
        return topic_bytes

    def leave(self, now: float) -> list[Action]:
        """Announce a graceful exit to every linked peer. The driver then flushes and closes."""
        self._now = now
        if self._batch:
            self._seal()  # what was published before leaving goes out before the LEAVE
        self.leaving = True
        self._departed[(self.name, self.epoch)] = now  # our own LEAVE coming back is not passed on
        if self._active:
            self._out.append(Send(self._active, wire.encode_control(
                wire.KIND_LEAVE, {"name": self.name, "epoch": self.epoch,
                                  "address": list(self.listen_address)})))
        return self._flush()

    # ------------------------------------------------------------------ events from the driver

    def on_connection_open(self, conn_id: int, outbound: bool, address: Address | None,
                           now: float, identity: str | None = None) -> list[Action]:
        """A TCP connection is up (we dialled `address`, or accepted one). Start the handshake.

        `identity` is the server name in the peer's verified TLS certificate, if the link is TLS: the
        peer's HELLO must then claim that name, or it is refused.
        """
        self._now = now
        conn = _Connection(conn_id, outbound, address, now, now, now, identity=identity)
        self._conns[conn_id] = conn
        if outbound and address is not None:
            self._probes.discard(address)
        # The dial stays in flight until the handshake ends either way: a peer whose kernel accepts
        # but whose process is hung must not get a new connection on every tick.
        if self.leaving:
            self._out.append(CloseConnection(conn_id, "node is leaving"))
            return self._flush()
        self._send_hello(conn)
        return self._flush()

    def on_dial_failed(self, address: Address, reason: str, now: float) -> list[Action]:
        self._now = now
        self._probes.discard(address)
        target = self._dials.get(address)
        if target is not None:
            target.in_flight = False
            self._dial_failed(address, target, now)
        self.counters["dial_failures"] += 1
        log.debug("%s: dial %s:%s failed: %s", self.name, *address, reason)
        return self._flush()

    def on_connection_closed(self, conn_id: int, reason: str, now: float) -> list[Action]:
        self._now = now
        conn = self._conns.pop(conn_id, None)
        if conn is None:
            return self._flush()
        member = self._members.get(conn.peer) if conn.peer is not None else None
        if member is not None and member.conn == conn_id:
            self._unlink(member, now, reason)
            if not member.left and not conn.pruned:
                # Re-dial soon, if still wanted: a dropped link must come back (the old connector's
                # bug 5). A second loss without a handshake in between marks it unreachable.
                member.failures += 1
                self._schedule_redial(member.address, now)
        if conn.outbound and conn.address is not None:
            target = self._dials.get(conn.address)
            if target is not None:
                target.in_flight = False
                if conn.peer is None:
                    self._dial_failed(conn.address, target, now)
        self._dial_due(now)
        return self._flush()

    def on_frame(self, conn_id: int, body: bytes, now: float) -> list[Action]:
        """A whole frame body (kind byte first) arrived on `conn_id`."""
        conn = self._conns.get(conn_id)
        if conn is None or conn.state == CLOSING:
            return self._flush()
        conn.last_received = self._now = now
        try:
            kind = body[0]
            if kind == wire.KIND_DATA:
                if conn.state == HANDSHAKE:
                    raise ProtocolError("DATA frame before the handshake")
                self._on_data(conn, body, now)
            elif kind in wire.ROUTED_KINDS:
                if conn.state == HANDSHAKE:
                    raise ProtocolError("routed frame before the handshake")
                self._on_routed(conn, body, now)
            else:
                self._on_control(conn, body, now)
        except ProtocolError as error:
            self._protocol_error(conn, str(error))
        except Exception as error:  # a malformed frame this code failed to call malformed: never fatal
            log.exception("%s: frame of kind %d from %s broke the core", self.name, body[0], conn.peer)
            self.counters["internal_errors"] += 1
            self._protocol_error(conn, f"frame could not be handled ({type(error).__name__})")
        return self._flush()

    def on_stream_error(self, conn_id: int, reason: str, now: float) -> list[Action]:
        """The driver could not cut the byte stream into frames (say, an oversized length prefix)."""
        self._now = now
        conn = self._conns.get(conn_id)
        if conn is not None:
            self._protocol_error(conn, reason)
        return self._flush()

    def on_tick(self, now: float) -> list[Action]:
        """Time passed: keepalives, failure detection, timeouts, re-dials, reorder gaps, gossip."""
        self._now = now
        keepalive_after = self.config.failure_timeout / 3
        ping: list[int] = []
        for conn in list(self._conns.values()):
            if conn.state == HANDSHAKE:
                if now - conn.opened_at > self.config.handshake_timeout:
                    self.counters["handshake_timeouts"] += 1
                    self._close(conn, f"no handshake within {self.config.handshake_timeout:g}s")
                continue
            if now - conn.last_received > self.config.failure_timeout:
                self.counters["failure_timeouts"] += 1
                self._close(conn, f"silent for {self.config.failure_timeout:g}s")
                continue
            if conn.state == ACTIVE and now - conn.last_sent >= keepalive_after:
                ping.append(conn.id)
                conn.last_sent = now
        if ping:
            self._out.append(Send(tuple(ping), wire.encode_control(wire.KIND_PING, {})))
        if self._batch:
            self._seal()  # a driver that does not seal batches itself: they wait one tick at most
        if self.tree is not None:
            self._tree_tick(now)
        for item in self.seen.expire(now, None if self.tree is None else self._tree_repairing):
            self._deliver(item)
        self._forget_unreachable(now)
        if now >= self._timers.next_gossip:
            self._timers.next_gossip = now + self.config.gossip_interval
            self._trim_view(now)
            self._dial_due(now)
            self._prune(now)
            for member in self._members.values():
                if member.conn is not None:
                    self._send_to(self._conns[member.conn], self._peers_frame_for(member))
        if now >= self._timers.next_probe:
            self._timers.next_probe = now + self.config.probe_interval * (0.5 + self.rng.random())
            self._probe()
        self._dial_due(now)
        return self._flush()

    # ------------------------------------------------------------------ direct messages

    def send_direct(self, target: str, topic: str | int, message: Any, now: float) -> list[Action]:
        """Send `message` to the node called `target` only, routed greedily along the ring.

        A target that cannot be reached (or does not exist) is reported as a ReportError with code
        "unreachable", here or, once the message is under way, by an UNDELIVERABLE frame coming back.
        """
        self._now = now
        if target == self.name:
            raise ValueError("a node does not send direct messages to itself")
        if self._batch:
            self._seal()  # what this node published before stays ahead of it on every link
        # Numbered per target and per target *process*: a restarted target (a new epoch in our view)
        # starts a new count, or it would meet our stream mid-way and hold it for reorderTimeout.
        member = self._members.get(target)
        epoch = member.epoch if member is not None else None
        known_epoch, last = self._direct_seq.get(target, (epoch, 0))
        if epoch is not None and known_epoch is not None and epoch != known_epoch:
            last = 0
        seq = last + 1
        frame = wire.encode_direct(wire.encode_origin(target), self._origin_header, self.epoch, seq,
                                   self._topic_bytes(topic), wire.encode_message(message),
                                   self.config.max_message_size)
        self._direct_seq[target] = (epoch if epoch is not None else known_epoch, seq)
        self.counters["direct_sent"] += 1
        self._route(frame, target.encode("utf-8"), wire.KIND_DIRECT, frame[4:])
        return self._flush()

    def _on_routed(self, conn: _Connection, body: bytes, now: float) -> None:
        hops, target, after_target = wire.parse_route(body)
        kind = body[0]
        if target != self._name_bytes:
            if hops + 1 >= wire.MAX_ROUTE_HOPS:
                self.counters["route_hop_limit"] += 1
                if kind == wire.KIND_DIRECT:
                    self._undeliverable(body, after_target, f"no route within {wire.MAX_ROUTE_HOPS} hops")
                return
            self.counters["routed"] += 1
            self._route(wire.relay_prefix(len(body), hops + 1, kind) + body[2:], target, kind, body,
                        after_target)
            return
        if kind == wire.KIND_UNDELIVERABLE:
            fields = wire.decode_map(body[after_target:])
            self.counters["direct_undeliverable"] += 1
            self._out.append(ReportError("unreachable", f"direct message to {fields.get('target')!r} was "
                                                        f"not delivered: {fields.get('reason')}"))
            return
        header = wire.parse_data_header(body, after_target)
        wire.parse_topic(body, header.topic_offset)
        # Direct streams are numbered per (origin, target): their own ordering key, marked by a 0 byte
        # (a DATA key starts with the origin's length, never 0).
        key = b"\x00" + body[after_target:header.topic_offset - 8]
        ready = self.seen.observe(key, header.seq, now, body)
        if ready is None:
            return
        self.counters["direct_received"] += 1
        for item in ready:
            self._deliver(item)

    def _route(self, frame: bytes, target: bytes, kind: int, body: bytes, after_target: int = 0) -> None:
        """Send a routed frame one hop nearer `target`: to it if linked, else to the linked peer nearest
        to its ring position, if nearer than this node (Kleinberg's greedy routing)."""
        member = self._members.get(target.decode("utf-8", "replace"))
        if member is not None and member.conn is not None:
            self._out.append(Send((member.conn,), frame))
            return
        goal = ring.position(target)
        best = min(self._linked_members(), key=lambda m: ring.ring_distance(m.position, goal), default=None)
        if best is not None and ring.ring_distance(best.position, goal) < ring.ring_distance(self.position,
                                                                                                goal):
            self._out.append(Send((best.conn,), frame))
            return
        if kind == wire.KIND_DIRECT:
            self._undeliverable(body, after_target or 3 + body[2],
                                "no such node (the ring has no node by that name)")
        else:
            self.counters["undeliverable_lost"] += 1

    def _undeliverable(self, body: bytes, after_target: int, reason: str) -> None:
        """Tell the origin of the DIRECT `body` that it cannot be delivered."""
        if len(body) <= after_target or body[after_target] == 0:
            raise ProtocolError("DIRECT frame without an origin")
        target = body[3:after_target].decode("utf-8", "replace")
        origin = body[after_target + 1:after_target + 1 + body[after_target]]
        self.counters["direct_unroutable"] += 1
        if origin == self._name_bytes:
            self._out.append(ReportError("unreachable", f"direct message to {target!r} was not delivered: "
                                                        f"{reason}"))
            return
        frame = wire.encode_undeliverable(bytes((len(origin),)) + origin,
                                          {"target": target, "reason": reason})
        self._route(frame, origin, wire.KIND_UNDELIVERABLE, frame[4:])

    # ------------------------------------------------------------------ data path

    def _on_data(self, conn: _Connection, body: bytes, now: float) -> None:
        # The hot path: most frames are copies of a message already seen (flooding), so a duplicate
        # costs a length check, two slices, one unpack and one dict lookup - nothing is built for it.
        counters = self.counters
        counters["data_frames_received"] += 1  # copies included: what flooding costs (RMR)
        name_end = 3 + body[2]
        if body[2] == 0 or len(body) < name_end + 17:
            raise ProtocolError("DATA frame header cut short")
        origin = body[3:name_end]
        if origin == self._name_bytes:
            # Our own message came back around a cycle: never deliver it (no echo).
            counters["own_messages_returned"] += 1
            if self.tree is not None and self.tree.unwanted(conn.peer_bytes, self._own_key):
                self._send_to(conn, wire.encode_control(wire.KIND_PRUNE, {"key": self._own_key}))
            return
        # The key is origin length, origin and epoch: it names one (origin, epoch) stream.
        key, seq = body[2:name_end + 8], SEQ.unpack_from(body, name_end + 8)[0]
        ready = self.seen.observe(key, seq, now, body)
        if ready is None:
            if self.tree is not None:
                self._tree_copy(conn, key, body[1] + 1, seq, False)
            return
        try:
            entries = wire.parse_entries(body, name_end + 16)  # a malformed batch is never relayed
        except ProtocolError:
            for item in ready:  # it may have filled a gap: the good ones behind it still go out
                if item is not body:
                    self._deliver(item)
            raise
        counters["received_new"] += 1
        hops = body[1] + 1
        self.hops[hops] += 1  # links the first copy crossed: the flood's hop distribution
        # Not back to the peer it came from (by name: it may have come on a connection being retired).
        sender = conn.peer_bytes
        if self.tree is not None:
            self._tree_copy(conn, key, hops, seq, True)
            self.tree.received((key, seq), body, now)
            self._push(wire.relay_prefix(len(body), hops) + body[2:], sender, origin, (key, seq))
            counters["forwarded"] += 1
            counters["forwarded_messages"] += len(entries)
        else:
            targets = tuple(c for c, peer in self._active_pairs if peer != sender and peer != origin)
            if targets:
                self._out.append(Send(targets, wire.relay_prefix(len(body), hops) + body[2:]))
                counters["forwarded"] += 1
                counters["forwarded_messages"] += len(entries)
                counters["data_frames_sent"] += len(targets)
        for item in ready:
            self._deliver(item, entries if item is body else None)

    def _deliver(self, body: bytes, entries: list[tuple[str | int, int, int]] | None = None) -> None:
        """Hand the messages of a DATA or DIRECT body (checked on arrival) to the local subscribers of
        their topics. `entries` are the DATA body's, when the caller has parsed them already."""
        try:
            if body[0] == wire.KIND_DATA:
                start = 2
                name_end = 3 + body[2]
                if entries is None:
                    entries = wire.parse_entries(body, name_end + 16)
            else:  # a DIRECT carries one message, after its target and origin
                start = 3 + body[2]
                name_end = start + 1 + body[start]
                topic, offset = wire.parse_topic(body, name_end + 16)
                entries = [(topic, offset, len(body))]
        except ProtocolError:  # held behind a gap, then found bad on arrival: its link is gone already
            self.counters["malformed_dropped"] += 1
            return
        topics = self._topics
        out = self._out
        origin = None
        hops = body[1] + 1
        delivered = 0
        for topic, offset, end in entries:
            if topic not in topics:
                self.counters["dropped_no_subscriber"] += 1
                continue
            if origin is None:
                origin_bytes = body[start + 1:name_end]
                origin = self._origin_names.get(origin_bytes)
                if origin is None:
                    origin = origin_bytes.decode("utf-8", "replace")
                    if len(self._origin_names) < 4096:
                        self._origin_names[origin_bytes] = origin
            delivered += 1
            out.append(Deliver(origin, topic, body, offset, end, hops))
        self.counters["delivered"] += delivered

    # ------------------------------------------------------------------ control path

    def _on_control(self, conn: _Connection, body: bytes, now: float) -> None:
        kind = body[0]
        if kind not in wire.CONTROL_KINDS:
            raise ProtocolError(f"unknown frame kind {kind}")
        fields = wire.decode_control(body)
        if kind == wire.KIND_STATUS_REQUEST and conn.state == HANDSHAKE:
            # An operator's tool (`python -m swarm status`), not a peer: answer and hang up.
            self.counters["status_requests"] += 1
            self._send_to(conn, wire.encode_control(wire.KIND_STATUS, self.status()))
            self._close(conn, "status sent", flush=True)
            return
        if kind == wire.KIND_HELLO:
            self._on_hello(conn, fields, now)
            return
        if conn.state == HANDSHAKE:
            if kind == wire.KIND_REFUSE:
                self._on_refuse(conn, fields, now)
                return
            raise ProtocolError(f"frame kind {kind} before the handshake")
        if kind == wire.KIND_PING:
            return
        if kind == wire.KIND_PEERS:
            self._on_peers(conn, fields, now)
            if not conn.confirmed:
                conn.confirmed = True  # the peer sends PEERS first thing when it links us
                self._check_ready()
        elif kind == wire.KIND_LEAVE:
            self._on_leave(conn, fields, body)
        elif kind == wire.KIND_BYE:
            self._on_bye(conn, now)
        elif kind in (wire.KIND_IHAVE, wire.KIND_GRAFT, wire.KIND_PRUNE):
            self._on_tree(conn, kind, fields, now)
        elif kind == wire.KIND_REFUSE:
            self._on_refuse(conn, fields, now)

    def _on_tree(self, conn: _Connection, kind: int, fields: dict[str, Any], now: float) -> None:
        """Plumtree's control frames. A flooding node ignores them (it sends payloads everywhere)."""
        tree = self.tree
        if tree is None:
            return
        peer = conn.peer_bytes
        if kind == wire.KIND_PRUNE:
            # Obeyed as it is: the pruner chose another parent for the stream, and only it knows
            # whether that one still brings it (our own sources are not affected: prunes are one-way).
            key = fields.get("key")
            if key is not None and not isinstance(key, bytes):
                raise ProtocolError("PRUNE with a key that is not bytes")
            tree.pruned_by(peer, key)
            self.counters["prunes_received"] += 1
            return
        ids = fields.get("ids")
        if not isinstance(ids, list) or not all(
                isinstance(i, list) and len(i) == 2 and isinstance(i[0], bytes) and isinstance(i[1], int)
                for i in ids):
            raise ProtocolError("IHAVE/GRAFT without a list of [key, seq] ids")
        messages = [(key, seq) for key, seq in ids[:TREE_IDS_READ]]
        if kind == wire.KIND_IHAVE:
            tree.ihave_from(peer, messages, now, lambda m: self.seen.has(m[0], m[1]))
            return
        keys = fields.get("keys", [])  # streams to push again, nothing resent (a lost parent's)
        if not isinstance(keys, list) or not all(isinstance(key, bytes) for key in keys):
            raise ProtocolError("GRAFT with keys that are not a list of bytes")
        keys = keys[:TREE_IDS_READ]
        for body in tree.grafted_by(peer, messages, keys):  # GRAFT: resend, one hop further
            self._send_to(conn, wire.relay_prefix(len(body), body[1] + 1) + body[2:])
            self.counters["grafted_payloads"] += 1
        if keys:  # the peer lost its source of these streams: if it was ours too, we lost ours
            self._tree_orphaned(tree.orphaned(peer, keys), conn.id)

    def _tree_orphaned(self, keys: list[bytes], asker: int | None) -> None:
        """Tree mode: the streams `keys` lost their parent. Ask every linked peer (but the connection
        `asker`, which asked us for them) to push them, at once rather than after a graft timeout per
        orphaned node: tree.py's `orphaned` says what each peer does with it."""
        if not keys:
            return
        self.counters["streams_orphaned"] += len(keys)
        targets = tuple(c for c in self._active if c != asker)
        if targets:
            for part in per_frame(keys, MAX_GRAFT):
                frame = wire.encode_control(wire.KIND_GRAFT, {"ids": [], "keys": part})
                self._out.append(Send(targets, frame))

    def _tree_copy(self, conn: _Connection, key: bytes, hops: int, seq: int, first: bool) -> None:
        """Tree mode: a copy of message `seq` of stream `key` came on `conn` (the first copy here, or a
        duplicate); PRUNE that peer or the parent it replaces."""
        assert self.tree is not None
        victim = self.tree.copy_from(conn.peer_bytes, key, hops, seq, first)
        if victim is None:
            return
        target = conn if victim == conn.peer_bytes else next(
            (self._conns[c] for c, peer in self._active_pairs if peer == victim), None)
        if target is not None:
            self.counters["prunes_sent"] += 1
            self._send_to(target, wire.encode_control(wire.KIND_PRUNE, {"key": key}))

    def _tree_tick(self, now: float) -> None:
        """Tree mode: send the batched IHAVEs, and GRAFT what was announced but has not come."""
        tree = self.tree
        assert tree is not None
        conns = {peer: c for c, peer in self._active_pairs}
        for peer, messages in tree.due(now, set(conns), self.seen.progress):
            self.counters["grafts"] += len(messages)
            self._out.append(Send((conns[peer],), wire.encode_control(
                wire.KIND_GRAFT, {"ids": [[key, seq] for key, seq in messages]})))
        for peer, messages in tree.take_ihaves():
            if peer in conns and messages:
                self.counters["ihave_ids_sent"] += len(messages)
                self._out.append(Send((conns[peer],), wire.encode_control(
                    wire.KIND_IHAVE, {"ids": [[key, seq] for key, seq in messages]})))

    def _tree_repairing(self, origin: Any, seq: int) -> bool:
        """Tree mode: is the seen-record's missing message `seq` of `origin` announced and on its way?"""
        assert self.tree is not None
        return self.tree.repairing((origin, seq))

    def _send_hello(self, conn: _Connection) -> None:
        conn.hello_sent = True
        # A fresh nonce per connection: two connections dialled by the same node must still differ.
        nonce = self.rng.getrandbits(63)
        if conn.outbound:
            conn.dialer_nonce = nonce
        self._send_to(conn, wire.encode_control(wire.KIND_HELLO, {
            "version": wire.PROTOCOL_VERSION, "cluster": self.config.cluster_name, "name": self.name,
            "epoch": self.epoch, "address": list(self.listen_address), "nonce": nonce,
        }))

    def _on_hello(self, conn: _Connection, fields: dict[str, Any], now: float) -> None:
        if conn.state != HANDSHAKE:
            raise ProtocolError("second HELLO on one connection")
        version = fields.get("version")
        if version != wire.PROTOCOL_VERSION:
            self._refuse(conn, f"protocol version {version!r} is not supported (this node speaks "
                               f"{wire.PROTOCOL_VERSION})", "version_mismatch")
            return
        cluster = fields.get("cluster")
        if cluster != self.config.cluster_name:
            self._refuse(conn, f"cluster name {cluster!r} differs from {self.config.cluster_name!r}",
                         "cluster_mismatch")
            return
        name, epoch, address, nonce = (fields.get(k) for k in ("name", "epoch", "address", "nonce"))
        if not (isinstance(name, str) and 0 < len(name.encode("utf-8")) <= wire.MAX_NAME_BYTES
                and isinstance(epoch, int) and isinstance(nonce, int)
                and isinstance(address, list) and len(address) == 2
                and isinstance(address[0], str) and isinstance(address[1], int)):
            raise ProtocolError("HELLO fields missing or of the wrong type")
        if conn.identity is not None and name != conn.identity:
            # Before anything is learned from this HELLO: an impostor must not touch another's state.
            self._refuse(conn, f"certificate is for {conn.identity!r}, HELLO claims {name!r}",
                         "identity_mismatch")
            return
        address = (address[0], address[1])
        if name == self.name:
            # We dialled ourselves (our own address is among the seeds): remember, never again.
            self._self_addresses.add(address)
            if conn.address is not None:
                self._self_addresses.add(conn.address)
                self._dials.pop(conn.address, None)
            self._close(conn, "connected to itself")
            return
        if not conn.outbound:
            conn.dialer_nonce = nonce
        conn.peer = name
        conn.peer_bytes = name.encode("utf-8")
        conn.state = ACTIVE
        if conn.address is not None:
            target = self._dials.get(conn.address)
            if target is not None:
                target.failures = 0
                target.in_flight = False
        member = self._members.get(name)
        if member is None or epoch > member.epoch:
            if member is not None and member.conn is not None and member.conn != conn.id:
                # The peer restarted: its old connection is dead, whatever TCP says yet.
                old = self._conns.get(member.conn)
                if old is not None:
                    self._close(old, "peer restarted with a new epoch")
            member = self._members[name] = _Member(name, address, epoch, ring.position(name))
            self.counters["members_joined"] += 1
        elif epoch < member.epoch:
            self._refuse(conn, "stale epoch: a newer instance of this node is known", "stale_epoch")
            return
        member.address = address
        member.left = False
        member.unreachable_since = None
        member.heard_at = now
        member.failures = 0
        if conn.address is not None:
            self._address_owner[conn.address] = name
            if conn.address in self._seeds:
                self._seed_contact[conn.address] = now
        current = self._conns.get(member.conn) if member.conn is not None else None
        if current is None and not conn.outbound and len(self._active) >= self.config.max_peers:
            if not self._would_be_local(member):
                self._refuse_full(conn, member)
                self._bound_view(now)
                return
            self._make_room()
        if current is None:
            self._link(member, conn)
        else:
            keep, drop = (current, conn) if self._prefer(current, conn) else (conn, current)
            if keep is conn:
                self._link(member, conn)
            self._retire(drop, keep.id)
            self.counters["duplicate_connections"] += 1

    def _prefer(self, a: _Connection, b: _Connection) -> bool:
        """True if `a` should survive rather than `b` (both ends of the pair decide alike)."""
        def rank(conn: _Connection) -> tuple[bool, int]:
            dialled_by_smaller = (self.name < (conn.peer or "")) == conn.outbound
            return (not dialled_by_smaller, conn.dialer_nonce)
        return rank(a) <= rank(b)

    def _would_be_local(self, member: _Member) -> bool:
        """Would `member` be one of our ring links if we linked it? (Such a joiner is never refused.)"""
        linked = [(m.name, m.position) for m in self._members.values() if m.conn is not None]
        local = ring.nearest_per_side(self.position, linked + [(member.name, member.position)],
                                      max(1, (self.config.local_links + 1) // 2))
        return member.name in local

    def _refuse_full(self, conn: _Connection, member: _Member) -> None:
        """Turn a joiner away politely: we are at maxPeers. Hint at the nodes nearest to it."""
        self.counters["refused_full"] += 1
        hints = self._entries(ring.nearest_to(self._linked_members(), member.position, 8))
        self._send_to(conn, wire.encode_control(wire.KIND_REFUSE, {
            "reason": f"{self.name} is at maxPeers ({self.config.max_peers})", "code": "full",
            "peers": hints}))
        self._close(conn, "at maxPeers", flush=True)

    def _make_room(self, keep: str = "") -> None:
        """Retire one link to get back within maxPeers: first one whose peer never confirmed it (a
        connection that said HELLO and nothing since is no working peer), then one neither end wants,
        then one we do not want. Never `keep`, the link just made."""
        linked = [m for m in self._linked_members() if m.name != keep]
        spare = ([m for m in linked if m.name not in self._wanted and not self._conns[m.conn].confirmed]
                 or [m for m in linked if m.name not in self._wanted and not m.peer_wants]
                 or [m for m in linked if m.name not in self._wanted])
        if spare:
            victim = min(spare, key=lambda m: m.linked_since)
            self._prune_link(victim, "room for a ring neighbour")

    def _linked_members(self) -> list[_Member]:
        return [m for m in self._members.values() if m.conn is not None]

    @staticmethod
    def _entries(members: Iterable[_Member]) -> list[list[Any]]:
        return [[m.name, list(m.address), m.epoch] for m in members]

    def _link(self, member: _Member, conn: _Connection) -> None:
        new_link = member.conn is None
        member.conn = conn.id
        member.peer_wants = True
        self._refresh_active()
        # Whether we want this link goes out in the PEERS below: decide with the new member known.
        self._wanted = self.policy.wanted(self.name, self._views(self._now))
        if len(self._active) > self.config.max_peers:
            self._make_room(keep=member.name)
        if new_link:
            member.linked_since = self._now
            self.counters["links_made"] += 1
            log.info("%s: linked to %s at %s:%s", self.name, member.name, *member.address)
        # Tell the new peer what we know near it, and where each origin's stream stands here (so it
        # knows what was published before it could be ready), and everyone else about the new peer.
        self._send_to(conn, self._peers_frame_for(member, with_seen=new_link))
        others = tuple(c for c in self._active if c != conn.id)
        if others:
            self._out.append(Send(others, wire.encode_control(wire.KIND_PEERS, {"peers": [
                [member.name, list(member.address), member.epoch]]})))
        self._check_ready()

    def _retire(self, conn: _Connection, successor: int | None) -> None:
        conn.state = RETIRING
        self._out.append(Retire(conn.id, successor, wire.encode_control(wire.KIND_BYE, {})))

    def _on_bye(self, conn: _Connection, now: float) -> None:
        """The peer retires this connection; stop writing to it too (its reader drains to the end)."""
        if conn.state == RETIRING:
            return
        member = self._members.get(conn.peer or "")
        if member is not None and member.conn == conn.id:
            self._unlink(member, now, "peer retired the link")
            self._schedule_redial(member.address, now)
        self._retire(conn, None)

    def _peers_frame_for(self, peer: _Member, *, with_seen: bool = False) -> bytes:
        """PEERS for one linked peer: what we know nearest its ring position (T-Man's exchange), a few
        others at random (for its reserve), and whether we still want the link."""
        linked = [m for m in self._linked_members() if m.name != peer.name]
        chosen = self.policy.share(self.name, self._views(self._now), peer.position) if linked else []
        entries = self._entries(self._members[name] for name in chosen
                                if name != peer.name and self._members[name].conn is not None)
        fields: dict[str, Any] = {"peers": entries, "want": peer.name in self._wanted}
        if with_seen:
            # Direct streams (key starting with 0) are per target: not the newcomer's business. The list
            # stays within half a control frame, whatever the names' lengths.
            # Our own stream first: everything we published so far came before the newcomer's ready.
            own_key = self._origin_header + EPOCH.pack(self.epoch)
            seen, budget = [[own_key, self._seq]], wire.MAX_CONTROL_BODY // 2
            for key, seq in self.seen.snapshot(SEEN_SNAPSHOT_LIMIT):
                budget -= len(key) + 12
                if budget < 0:
                    break
                if key[0]:
                    seen.append([key, seq])
            fields["seen"] = seen
        return wire.encode_control(wire.KIND_PEERS, fields)

    def _on_peers(self, conn: _Connection, fields: dict[str, Any], now: float) -> None:
        want = fields.get("want")
        if isinstance(want, bool):
            member = self._members.get(conn.peer or "")
            if member is not None and member.conn == conn.id:
                member.peer_wants = want
        seen = fields.get("seen")
        if seen is not None:
            if not isinstance(seen, list) or not all(
                    isinstance(e, list) and len(e) == 2 and isinstance(e[0], bytes) and isinstance(e[1], int)
                    for e in seen):
                raise ProtocolError("PEERS seen-list malformed")
            # Positions say "published before you could be ready" only until we are: a list arriving
            # later may already count a message published after our ready, still on its way to us.
            if not self.ready:
                for key, highest in seen[:SEEN_SNAPSHOT_LIMIT + 1]:
                    if key and key[1:1 + key[0]] != self._name_bytes:  # never track our own stream
                        self.seen.adopt(key, highest, now)
        if self._learn(fields.get("peers"), now):
            # Only news can change whom to link to: most PEERS repeat what we know, and deciding again
            # (every view member rebuilt, two sorts) was most of a large simulation's CPU.
            self._dial_due(now)

    def _learn(self, peers: Any, now: float) -> bool:
        """Merge a list of [name, [host, port], epoch] entries (from PEERS or a REFUSE's hints); True if a
        member is new or restarted."""
        if not isinstance(peers, list):
            raise ProtocolError("PEERS without a list of peers")
        changed = False
        for entry in peers[:1024]:
            if not (isinstance(entry, list) and len(entry) == 3 and isinstance(entry[0], str)
                    and isinstance(entry[1], list) and len(entry[1]) == 2 and isinstance(entry[1][0], str)
                    and isinstance(entry[1][1], int) and isinstance(entry[2], int)):
                raise ProtocolError("PEERS entry malformed")
            name, (host, port), epoch = entry
            if name == self.name or not 0 < port < 65536 or (name, epoch) in self._departed:
                continue
            member = self._members.get(name)
            if member is None:
                self._members[name] = _Member(name, (host, port), epoch, ring.position(name), heard_at=now)
                self.counters["members_learned"] += 1
                changed = True
            elif epoch == member.epoch:
                member.heard_at = now  # a peer is linked to it right now: it was alive a moment ago
            elif epoch > member.epoch:
                # Restarted: whatever connection we hold to the old process is dead.
                old = self._conns.get(member.conn) if member.conn is not None else None
                if old is not None:
                    self._close(old, "peer restarted with a new epoch")
                member.epoch, member.address, member.left = epoch, (host, port), False
                member.failures = 0
                member.heard_at = now
                changed = True
        self._bound_view(now)
        return changed

    def _bound_view(self, now: float) -> None:
        """Trim the view as soon as it passes its bound (a join storm brings members fast)."""
        config = self.config
        if len(self._members) > config.reserve_size + 4 * config.local_links + config.max_peers:
            self._trim_view(now)

    def _on_leave(self, conn: _Connection, fields: dict[str, Any], body: bytes) -> None:
        name, epoch = fields.get("name"), fields.get("epoch")
        if not isinstance(name, str) or not isinstance(epoch, int) or (name, epoch) in self._departed:
            return
        # Pass it on once: nodes that know the leaver only from gossip (in their view or their memory
        # of dead nodes) must not keep probing it. Leaves are rare, so flooding them is cheap.
        self._departed[(name, epoch)] = self._now
        while len(self._departed) > 4 * REMEMBERED:
            del self._departed[next(iter(self._departed))]
        others = tuple(c for c in self._active if c != conn.id)
        if others:
            self._out.append(Send(others, wire.LENGTH.pack(len(body)) + body))
        address = fields.get("address")
        if isinstance(address, list) and len(address) == 2:
            self._remembered.pop((address[0], address[1]), None)  # never probe it again
        member = self._members.get(name)
        if member is not None and epoch == member.epoch:
            member.left = True
            self._remembered.pop(member.address, None)
            if member.address not in self._seeds:
                self._dials.pop(member.address, None)
            self.counters["members_left"] += 1
            log.info("%s: %s left the cluster", self.name, name)

    def _on_refuse(self, conn: _Connection, fields: dict[str, Any], now: float) -> None:
        reason = str(fields.get("reason", "no reason given"))[:300]
        if fields.get("code") == "full":
            # Polite: the peer is at maxPeers and named better peers to try. Not an error.
            self.counters["turned_away_full"] += 1
            member = self._members.get(conn.peer or self._address_owner.get(conn.address or ("", 0), ""))
            if member is not None:
                member.refused_until = now + 5 * self.config.gossip_interval + 2.0
            self._learn(fields.get("peers", []), now)
            self._close(conn, f"turned away: {reason}")
            return
        self.counters["refused_by_peer"] += 1
        target = self._dials.get(conn.address) if conn.address is not None else None
        if target is None or not target.refused:
            # Once per address: a misconfigured seed retried for ever must not become an error storm.
            self._out.append(ReportError("refused", f"peer {conn.peer or conn.address} refused us: {reason}"))
        if target is not None:
            target.refused = True
            target.failures = max(target.failures, 30)  # retry, but only at reconnectMaxDelay
        self._close(conn, f"refused by peer: {reason}")

    def _refuse(self, conn: _Connection, reason: str, counter: str) -> None:
        self.counters[counter] += 1
        self._out.append(ReportError("refused", f"refusing peer at {conn.address or 'inbound'}: {reason}"))
        self._send_to(conn, wire.encode_control(wire.KIND_REFUSE, {"reason": reason}))
        self._close(conn, reason, flush=True)

    def _protocol_error(self, conn: _Connection, reason: str) -> None:
        self.counters["protocol_errors"] += 1
        who = conn.peer or (f"{conn.address[0]}:{conn.address[1]}" if conn.address else "inbound peer")
        self._out.append(ReportError("protocol", f"closing link to {who}: {reason}"))
        self._close(conn, reason)

    # ------------------------------------------------------------------ links and dialling

    def _send_to(self, conn: _Connection, frame: bytes) -> None:
        self._out.append(Send((conn.id,), frame))

    def _close(self, conn: _Connection, reason: str, *, flush: bool = False) -> None:
        """Ask the driver to close; the bookkeeping happens in on_connection_closed."""
        if conn.state == CLOSING:
            return
        member = self._members.get(conn.peer) if conn.peer is not None else None
        if member is not None and member.conn == conn.id:
            self._unlink(member, conn.last_received, reason)
            if not member.left:
                member.failures += 1  # a link we had to close (silent, misbehaving) is a failure
                self._schedule_redial(member.address, self._now)
        conn.state = CLOSING
        self._out.append(CloseConnection(conn.id, reason, flush))

    def _unlink(self, member: _Member, now: float, reason: str) -> None:
        member.conn = None
        member.unreachable_since = now
        self._refresh_active()
        if self.tree is not None:
            self._tree_orphaned(self.tree.link_lost(member.name.encode("utf-8")), None)
        self.counters["links_lost"] += 1
        log.info("%s: link to %s lost: %s", self.name, member.name, reason)

    def _refresh_active(self) -> None:
        linked = [m for m in self._members.values() if m.conn is not None]
        self._active = tuple(m.conn for m in linked)
        self._active_pairs = tuple((m.conn, self._conns[m.conn].peer_bytes) for m in linked)

    def _check_ready(self) -> None:
        # Count only links the peer has confirmed: until the peer has linked us it forwards us nothing,
        # and "ready" promises that what is published from now on arrives.
        if self.ready:
            return
        confirmed = sum(1 for c in self._active if self._conns[c].confirmed)
        if confirmed >= self.config.minimum_peers:
            self.ready = True
            self._out.append(Ready())

    def _views(self, now: float) -> list[MemberView]:
        return [MemberView(m.name, m.address, m.conn is not None, m.position, m.reachable(now))
                for m in self._members.values() if not m.left]

    def _dial_due(self, now: float) -> None:
        """Dial what should be linked and is not: wanted members, seeds while isolated, probes."""
        if self.leaving:
            return
        self._wanted = self.policy.wanted(self.name, self._views(now))
        desired: set[Address] = set()
        for name in self._wanted:
            member = self._members[name]
            if member.conn is None:
                desired.add(member.address)
        if not self._active:
            # Isolated (just started, or cut off): the seeds and every node we know are the way back.
            desired.update(self._seeds)
            desired.update(self._remembered)
            desired.update(m.address for m in self._members.values() if not m.left)
        desired.update(self._probes)
        desired -= self._self_addresses
        for address in sorted(desired):  # sorted: the same seed must give the same run in any process
            target = self._dials.get(address)
            if target is None:
                target = self._dials[address] = _DialTarget(next_attempt=now)
            if target.in_flight or target.next_attempt > now:
                continue
            owner = self._members.get(self._address_owner.get(address, ""))
            if owner is not None and owner.conn is not None:
                continue
            target.in_flight = True
            self.counters["dials"] += 1
            self._out.append(Dial(address))
        for address in [a for a, t in self._dials.items() if a not in desired and not t.in_flight]:
            del self._dials[address]

    def _dial_failed(self, address: Address, target: _DialTarget, now: float) -> None:
        target.failures += 1
        member = self._members.get(self._address_owner.get(address, ""))
        if member is None:
            member = next((m for m in self._members.values() if m.address == address), None)
        if member is not None and member.conn is None:
            member.failures += 1
            if member.unreachable_since is None:
                member.unreachable_since = now
        self._schedule_redial(address, now)

    def _schedule_redial(self, address: Address, now: float) -> None:
        target = self._dials.setdefault(address, _DialTarget())
        # Exponential backoff with full jitter (AWS architecture blog's recommendation): spreads the
        # re-dials of many nodes that lost the same peer at the same moment.
        ceiling = min(self.config.reconnect_max_delay,
                      self.config.reconnect_min_delay * (2 ** min(target.failures, 30)))
        target.next_attempt = now + self.config.reconnect_min_delay / 2 + self.rng.uniform(0, ceiling)

    def _prune(self, now: float) -> None:
        """Retire links neither end wants any more (after a grace period for the peer's word)."""
        grace = 2 * self.config.gossip_interval
        for member in self._linked_members():
            if (member.name not in self._wanted and not member.peer_wants
                    and now - member.linked_since > grace):
                self._prune_link(member, "neither end wants the link")

    def _prune_link(self, member: _Member, reason: str) -> None:
        conn = self._conns[member.conn]
        self.counters["links_pruned"] += 1
        self._unlink(member, self._now, reason)
        member.failures = 0
        conn.pruned = True
        self._retire(conn, None)

    def _probe(self) -> None:
        """Dial one node we lost or a seed we have not heard of lately: how partitions heal.

        Nodes we could not reach (unreachable members, remembered addresses) are the sign of a
        partition and come first. A seed is probed only without such signs and when not reached for
        `SEED_RECHECK` seconds, so seeds do not carry a load that grows with the cluster.
        """
        linked_addresses = {m.address for m in self._linked_members()}
        # The cluster stops trying a dead node after a bounded time; seeds are tried for ever.
        horizon = self._now - REMEMBER_FACTOR * self.config.forget_after
        for address in [a for a, since in self._remembered.items() if since < horizon]:
            del self._remembered[address]
        candidates = [m.address for m in self._members.values() if m.conn is None and m.failures >= 2]
        candidates += [a for a in self._remembered if a not in linked_addresses]
        if not candidates:
            candidates = [a for a in self._seeds if a not in linked_addresses
                          and self._now - self._seed_contact.get(a, -SEED_RECHECK) >= SEED_RECHECK]
        candidates = [a for a in candidates if a not in self._self_addresses]
        if candidates:
            address = self.rng.choice(candidates)
            self._probes.add(address)
            self.counters["probes"] += 1

    def _trim_view(self, now: float) -> None:
        keep = self.policy.retained(self.name, self._views(now))
        for name in [n for n, m in self._members.items() if n not in keep and m.conn is None]:
            del self._members[name]
        self._prune_address_owners()

    def _prune_address_owners(self) -> None:
        """Forget which member answered at an address once the member is gone: O(view), not O(history)."""
        if len(self._address_owner) > 2 * len(self._members) + len(self._seeds):
            self._address_owner = {address: name for address, name in self._address_owner.items()
                                   if name in self._members or address in self._seeds}

    def _forget_unreachable(self, now: float) -> None:
        limit = self.config.forget_after
        # Unlinked members go when they left, when they failed and stayed unreachable for `limit`, or
        # when nobody has vouched for them for `limit` (a node we only heard of, that then died unseen).
        gone = [m for m in self._members.values()
                if m.conn is None and (m.left or now - m.heard_at > limit
                                       or (m.unreachable_since is not None and m.failures >= 1
                                           and now - m.unreachable_since > limit))]
        for member in gone:
            del self._members[member.name]
            if not member.left and member.failures >= 1:
                self._remember(member.address, now)  # evidence of a death or a partition: probe it
        if gone:
            self._prune_address_owners()
            self.counters["members_forgotten"] += 1

    def _flush(self) -> list[Action]:
        out = self._out
        self._out = []
        return out

