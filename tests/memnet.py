"""An in-memory network that drives `NodeState` instances: a small deterministic discrete-event loop.

No sockets, no trio, no wall clock. Time is virtual (`MemNet.now`, seconds); every event sits in one heap
ordered by (time, insertion number), so a run is a pure function of the seed. The loop carries out the
actions the core returns the way `swarm.transport.engine` does over TCP:

* `Send`: each connection is a byte stream, FIFO per direction; the data arrives at the other end after
  the link's latency (plus optional per-message jitter, never reordering one direction) and is cut into
  frame bodies by a `FrameReader` there, exactly as the engine's reader does.
* `Dial`: after one latency, a connection pair exists and both ends get `on_connection_open` (outbound on
  the dialler with the address it dialled, inbound on the other); if nothing listens there, the dialler
  gets `on_dial_failed` at once (refused), and across a `blackhole` after its `handshake_timeout` (the
  engine's dial timeout).
* `CloseConnection`: this end closes now (`on_connection_closed` is called from the loop right after the
  current batch of actions); the other end sees the close after the bytes already in flight. There is
  no send queue here (a Send is on the wire at once, like a writer that keeps up), so what was sent
  before a close arrives whether or not the close asked to `flush`.
* `Retire`: the final frame goes out, then end-of-stream; further sends on that end are dropped (as the
  engine's do); an end that reads end-of-stream closes, as the engine's reader does.
* `Deliver`, `Ready`, `ReportError`: recorded (`deliveries`, `readies`, `errors`).

Test doubles: `raw_dial` opens a connection whose far end the test drives by hand (`RawEnd`); `blackhole`
partitions two nodes (bytes dropped, connections left open and silent, new dials time out); `freeze`
models a hung process (its kernel still accepts connections and buffers bytes, the process handles
nothing until `thaw`); `crash`, `restart`, `leave` and `drop_link` model node and link life cycles.
`frames` records every frame put on the wire (`trace=True`), `dials` every Dial, `retires` and
`close_actions` what the cores asked, so tests can inspect the protocol's traffic.

Built to be reused by the simulator: node creation, latency model and the event loop are independent of
pytest.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from swarm.errors import ProtocolError
from swarm.protocol import actions as act
from swarm.protocol import wire
from swarm.protocol.state import CoreConfig, NodeState
from swarm.topology import NeighbourPolicy
from swarm.transport.framing import FrameReader

Address = tuple[str, int]

__all__ = ["Delivery", "End", "FrameRecord", "MemNet", "MemNode", "Publisher", "RawEnd", "split_frames"]


def split_frames(data: bytes) -> list[bytes]:
    """Whole frames (length prefix included) in `data`, which must hold only whole frames."""
    frames = []
    offset = 0
    while offset < len(data):
        (length,) = wire.LENGTH.unpack_from(data, offset)
        end = offset + 4 + length
        if end > len(data):
            raise AssertionError("a Send action carried a partial frame")
        frames.append(data[offset:end])
        offset = end
    return frames


@dataclass(frozen=True)
class Delivery:
    time: float
    node: str
    origin: str
    topic: str | int
    message: Any
    hops: int


@dataclass(frozen=True)
class FrameRecord:
    """One frame put on the wire: `frame` is the whole frame, length prefix included."""

    time: float
    src: str
    dst: str
    src_conn: int
    dst_conn: int
    frame: bytes

    @property
    def kind(self) -> int:
        return self.frame[4]

    @property
    def body(self) -> bytes:
        return self.frame[4:]


class End:
    """One end of a connection: it belongs to a node (or to a `RawEnd`'s test) and has a peer end."""

    __slots__ = ("id", "owner", "peer", "outbound", "address", "open", "write_closed", "reader",
                 "last_arrival", "latency", "pair")

    def __init__(self, conn_id: int, owner: Any, outbound: bool, address: Address | None, max_body: int,
                 latency: float, pair: int) -> None:
        self.id = conn_id
        self.owner = owner
        self.peer: End | None = None
        self.outbound = outbound
        self.address = address
        self.open = True
        self.write_closed = False  # end-of-stream sent (retired)
        self.reader = FrameReader(max_body)
        self.last_arrival = 0.0  # arrival time of the last bytes sent from this end (keeps FIFO)
        self.latency = latency
        self.pair = pair  # shared by both ends of one connection

    def __repr__(self) -> str:
        return f"<End {self.id} of {getattr(self.owner, 'name', self.owner)} open={self.open}>"


class MemNode:
    """A `NodeState` plus what the network needs to know of it."""

    def __init__(self, net: MemNet, name: str, address: Address, config: CoreConfig, epoch: int,
                 topics: Iterable[str | int], policy: NeighbourPolicy | None,
                 aliases: Iterable[Address]) -> None:
        self.net = net
        self.name = name
        self.address = address
        self.aliases = tuple(aliases)
        self.config = config
        self.epoch = epoch
        self.topics = set(topics)
        self.policy = policy
        self.alive = False
        self.ends: dict[int, End] = {}
        self.frozen = False
        self.backlog: list[tuple[Callable[..., None], tuple[Any, ...]]] = []
        self.state = self._new_state()

    def _new_state(self) -> NodeState:
        rng = random.Random(self.net.rng.getrandbits(64))
        state = NodeState(self.config, epoch=self.epoch, listen_address=self.address, rng=rng,
                          policy=self.policy)
        for topic in self.topics:
            state.subscribe(topic)
        return state

    @property
    def max_body(self) -> int:
        return wire.max_frame_body(self.config.max_message_size)

    def __repr__(self) -> str:
        return f"<MemNode {self.name} epoch={self.epoch} alive={self.alive}>"


class RawEnd:
    """A connection end driven by the test: it records what the node sends and sends what it is told."""

    def __init__(self, net: MemNet, name: str) -> None:
        self.net = net
        self.name = name
        self.end: End | None = None
        self.received: list[bytes] = []  # frame bodies, kind byte first
        self.eof = False
        self.closed = False
        self.closed_at: float | None = None

    def send(self, data: bytes) -> None:
        """Put raw bytes on the wire towards the node (need not be whole frames)."""
        assert self.end is not None and self.end.open
        self.net._transmit(self.end, data, raw=True)

    def close(self) -> None:
        if self.end is not None and self.end.open:
            self.net._close_end(self.end, "raw peer closed")

    def kinds(self) -> list[int]:
        return [body[0] for body in self.received]


class MemNet:
    """The network and its event loop."""

    def __init__(self, seed: int = 0, *, latency: float = 0.001, jitter: float = 0.0, tick: float = 0.05,
                 trace: bool = True, event_limit: int = 1_000_000) -> None:
        self.rng = random.Random(seed)
        self.now = 0.0
        self.latency = latency
        self.jitter = jitter
        self.tick = tick
        self.trace = trace
        self.event_limit = event_limit  # a runaway (say, a flood without duplicate suppression) fails
        self.events = 0
        self.nodes: dict[str, MemNode] = {}
        self.deliveries: list[Delivery] = []
        self.readies: list[tuple[float, str]] = []
        self.errors: list[tuple[float, str, str, str]] = []  # (time, node, code, text)
        self.dials: list[tuple[float, str, Address]] = []
        self.frames: list[FrameRecord] = []
        self.closes: list[tuple[float, str, int, str]] = []  # (time, node, conn, reason) as reported
        self.close_actions: list[tuple[float, str, int, str]] = []  # CloseConnection actions
        self.retires: list[tuple[float, str, int, int | None]] = []  # (time, node, conn, successor)
        self.dropped_sends = 0  # sends to ends that were closed or retired
        self._listeners: dict[Address, MemNode] = {}
        self._pair_latency: dict[frozenset[str], float] = {}
        self._blackholed: set[frozenset[str]] = set()
        self._heap: list[tuple[float, int, Callable[..., None], tuple[Any, ...]]] = []
        self._order = itertools.count()
        self._conn_ids = itertools.count(1)
        self._pairs = itertools.count(1)
        self._addresses = itertools.count(1)
        self._tick_generation: dict[str, int] = {}

    # ------------------------------------------------------------------ building the network

    def add_node(self, name: str, *, seeds: Iterable[str | Address] = (), start: bool = True,
                 address: Address | None = None, aliases: Iterable[Address] = (), epoch: int = 1,
                 topics: Iterable[str | int] = ("t",), policy: NeighbourPolicy | None = None,
                 **config: Any) -> MemNode:
        """Create a node; seeds may be node names (resolved to their addresses) or addresses."""
        assert name not in self.nodes, name
        if address is None:
            address = (f"10.0.0.{next(self._addresses)}", 7000)
        seed_addresses = tuple(self.nodes[s].address if isinstance(s, str) else tuple(s) for s in seeds)
        config.setdefault("minimum_peers", 1 if seed_addresses else 0)
        core = CoreConfig(server_name=name, seeds=seed_addresses, **config)
        node = MemNode(self, name, address, core, epoch, topics, policy, aliases)
        self.nodes[name] = node
        if start:
            self.start(name)
        return node

    def start(self, name: str) -> None:
        node = self.nodes[name]
        assert not node.alive
        node.alive = True
        for address in (node.address, *node.aliases):
            self._listeners[address] = node
        generation = self._tick_generation.get(name, 0) + 1
        self._tick_generation[name] = generation
        self._apply(node, node.state.start(self.now))
        # Each node ticks on its own phase, as independent processes would.
        self._schedule(self.now + self.rng.uniform(0, self.tick), self._tick, name, generation)

    def state(self, name: str) -> NodeState:
        return self.nodes[name].state

    def set_latency(self, a: str, b: str, latency: float) -> None:
        """One-way latency of connections opened from now on between `a` and `b`."""
        self._pair_latency[frozenset((a, b))] = latency

    def blackhole(self, a: str, b: str, on: bool = True) -> None:
        """Partition `a` from `b`: every byte between them is dropped, their connections stay open but
        silent (no close is seen either), and dials between them time out."""
        (self._blackholed.add if on else self._blackholed.discard)(frozenset((a, b)))

    def freeze(self, name: str) -> None:
        """Hang `name`'s process: connections to it still open (the kernel accepts them) and bytes to it
        are buffered, but it handles nothing, ticks not, and sends nothing until `thaw`."""
        self.nodes[name].frozen = True

    def thaw(self, name: str) -> None:
        """Resume a frozen node: it handles everything that was buffered, in order, at the current time."""
        node = self.nodes[name]
        node.frozen = False
        backlog, node.backlog = node.backlog, []
        for fn, args in backlog:
            fn(*args)

    def _defer(self, node: Any, fn: Callable[..., None], *args: Any) -> bool:
        """If `node` is frozen, keep `fn(*args)` for its thaw and return True."""
        if isinstance(node, MemNode) and node.frozen:
            node.backlog.append((fn, args))
            return True
        return False

    # ------------------------------------------------------------------ node life cycle

    def publish(self, name: str, topic: str | int, message: Any) -> int:
        """Publish on `name`; return the sequence number it got."""
        node = self.nodes[name]
        self._apply(node, node.state.publish(topic, message, self.now))
        return node.state._seq

    def crash(self, name: str, *, notify: bool = True) -> None:
        """Stop `name` at once. With `notify`, peers see their connections close (the OS resets them);
        without, the connections just go silent (power loss, cable pulled)."""
        node = self.nodes[name]
        node.alive = False
        for address in (node.address, *node.aliases):
            if self._listeners.get(address) is node:
                del self._listeners[address]
        for end in list(node.ends.values()):
            end.open = False
            del node.ends[end.id]
            if notify and end.peer is not None:
                self._after_in_flight(end, self._peer_gone, end.peer)

    def restart(self, name: str, *, epoch: int | None = None, notify: bool = True) -> MemNode:
        """Crash `name` (if alive) and start a new process of it with a higher epoch."""
        node = self.nodes[name]
        if node.alive:
            self.crash(name, notify=notify)
        node.epoch = epoch if epoch is not None else node.epoch + 1
        node.state = node._new_state()
        self.start(name)
        return node

    def leave(self, name: str) -> None:
        """Graceful exit: LEAVE to every peer, then close every connection (after the LEAVE frames)."""
        node = self.nodes[name]
        self._apply(node, node.state.leave(self.now))
        for end in list(node.ends.values()):
            self._close_end(end, "node left", report=False)
        self.crash(name, notify=False)

    def drop_link(self, a: str, b: str) -> int:
        """Break every connection between `a` and `b` (a TCP reset): both ends see it close.

        Returns how many connections were broken."""
        ends = [end for end in self.nodes[a].ends.values()
                if end.open and end.peer is not None and end.peer.owner is self.nodes[b]]
        for end in ends:
            self._close_end(end, "connection reset")
            assert end.peer is not None
            self._close_end(end.peer, "connection reset")
        return len(ends)

    def raw_dial(self, name: str, *, latency: float | None = None) -> RawEnd:
        """Open a connection to node `name` whose other end the test drives (it sends nothing itself)."""
        node = self.nodes[name]
        raw = RawEnd(self, f"raw{next(self._pairs)}")
        latency = self.latency if latency is None else latency
        pair = next(self._pairs)
        mine = End(next(self._conn_ids), raw, True, node.address, 1 << 30, latency, pair)
        theirs = End(next(self._conn_ids), node, False, None, node.max_body, latency, pair)
        mine.peer, theirs.peer = theirs, mine
        raw.end = mine
        node.ends[theirs.id] = theirs
        self._opened(node, theirs)
        return raw

    # ------------------------------------------------------------------ running

    def run_until(self, t: float) -> None:
        heap = self._heap
        while heap and heap[0][0] <= t:
            when, _, fn, args = heapq.heappop(heap)
            self.events += 1
            if self.events > self.event_limit:
                raise RuntimeError(f"more than {self.event_limit} events: a message storm?")
            self.now = max(self.now, when)
            fn(*args)
        self.now = max(self.now, t)

    def run_for(self, dt: float) -> None:
        self.run_until(self.now + dt)

    def run_until_true(self, predicate: Callable[[], bool], timeout: float, step: float = 0.001) -> bool:
        """Advance in `step`s until `predicate()` holds (True) or `timeout` passes (False)."""
        deadline = self.now + timeout
        while not predicate():
            if self.now >= deadline:
                return False
            self.run_until(min(deadline, self.now + step))
        return True

    # ------------------------------------------------------------------ queries

    def open_pairs(self, a: str, b: str) -> set[int]:
        """Ids (`End.pair`) of the connections open at both ends between nodes `a` and `b`."""
        return {end.pair for end in self.nodes[a].ends.values()
                if end.open and end.peer is not None and end.peer.open and end.peer.owner is self.nodes[b]}

    def link_pair(self, a: str, b: str) -> int | None:
        """The connection `a`'s core uses for data to `b` (its `End.pair`), or None."""
        member = self.nodes[a].state._members.get(b)
        if member is None or member.conn is None:
            return None
        end = self.nodes[a].ends.get(member.conn)
        return None if end is None else end.pair

    def delivered(self, node: str, origin: str | None = None, topic: str | int | None = None) -> list[Any]:
        return [d.message for d in self.deliveries if d.node == node
                and (origin is None or d.origin == origin) and (topic is None or d.topic == topic)]

    def errors_of(self, node: str, code: str | None = None) -> list[str]:
        return [text for _, n, c, text in self.errors if n == node and (code is None or c == code)]

    def frames_between(self, src: str, dst: str, kind: int | None = None) -> list[FrameRecord]:
        return [f for f in self.frames if f.src == src and f.dst == dst and (kind is None or f.kind == kind)]

    def dials_to(self, address: Address, by: str | None = None) -> list[float]:
        return [t for t, n, a in self.dials if a == address and (by is None or n == by)]

    # ------------------------------------------------------------------ the machinery

    def _schedule(self, when: float, fn: Callable[..., None], *args: Any) -> None:
        heapq.heappush(self._heap, (when, next(self._order), fn, args))

    def _tick(self, name: str, generation: int) -> None:
        node = self.nodes[name]
        if not node.alive or self._tick_generation[name] != generation:
            return
        if not node.frozen:
            self._apply(node, node.state.on_tick(self.now))
        self._schedule(self.now + self.tick, self._tick, name, generation)

    def _apply(self, node: MemNode, actions: list[act.Action]) -> None:
        for action in actions:
            if isinstance(action, act.Send):
                for conn in action.conns:
                    end = node.ends.get(conn)
                    if end is None or not end.open or end.write_closed:
                        self.dropped_sends += 1
                        continue
                    self._transmit(end, action.data)
            elif isinstance(action, act.Deliver):
                message = wire.decode_message(action.body[action.offset:])
                self.deliveries.append(Delivery(self.now, node.name, action.origin, action.topic, message,
                                                action.hops))
            elif isinstance(action, act.Dial):
                self.dials.append((self.now, node.name, action.address))
                target = self._listeners.get(action.address)
                latency = self.latency if target is None else self._latency(node.name, target.name)
                self._schedule(self.now + latency, self._connect, node, action.address)
            elif isinstance(action, act.CloseConnection):
                self.close_actions.append((self.now, node.name, action.conn, action.reason))
                end = node.ends.get(action.conn)
                if end is not None:
                    self._close_end(end, action.reason)
            elif isinstance(action, act.Retire):
                self.retires.append((self.now, node.name, action.conn, action.successor))
                end = node.ends.get(action.conn)
                if end is not None and end.open and not end.write_closed:
                    # Sends go on the wire at once here, so nothing is left unsent to move to the
                    # successor: the final frame, then end-of-stream.
                    self._transmit(end, action.final)
                    end.write_closed = True
                    if not self._blocked(end):
                        self._after_in_flight(end, self._eof, end.peer)
            elif isinstance(action, act.Ready):
                self.readies.append((self.now, node.name))
            elif isinstance(action, act.ReportError):
                self.errors.append((self.now, node.name, action.code, action.text))
            else:  # pragma: no cover - a new action type must be taught to the network
                raise AssertionError(f"unknown action {action!r}")

    def _connect(self, node: MemNode, address: Address) -> None:
        if not node.alive:
            return
        target = self._listeners.get(address)
        if target is None or not target.alive:
            self._dial_failed(node, node.state, address, "connection refused")
            return
        if frozenset((node.name, target.name)) in self._blackholed:
            self._schedule(self.now + node.config.handshake_timeout, self._dial_failed, node, node.state,
                           address, "timed out")
            return
        latency = self._latency(node.name, target.name)
        pair = next(self._pairs)
        mine = End(next(self._conn_ids), node, True, address, node.max_body, latency, pair)
        theirs = End(next(self._conn_ids), target, False, None, target.max_body, latency, pair)
        mine.peer, theirs.peer = theirs, mine
        node.ends[mine.id] = mine
        target.ends[theirs.id] = theirs
        self._opened(node, mine)
        self._opened(target, theirs)

    def _opened(self, node: MemNode, end: End) -> None:
        if not end.open or self._defer(node, self._opened, node, end):
            return
        self._apply(node, node.state.on_connection_open(end.id, end.outbound, end.address, self.now))

    def _dial_failed(self, node: MemNode, state: NodeState, address: Address, reason: str) -> None:
        if not node.alive or node.state is not state or self._defer(node, self._dial_failed, node, state,
                                                                    address, reason):
            return
        self._apply(node, state.on_dial_failed(address, reason, self.now))

    def _latency(self, a: str, b: str) -> float:
        return self._pair_latency.get(frozenset((a, b)), self.latency)

    def _transmit(self, end: End, data: bytes, raw: bool = False) -> None:
        peer = end.peer
        assert peer is not None
        if self.trace and not raw:
            src, dst = self._name(end), self._name(peer)
            for frame in split_frames(data):
                self.frames.append(FrameRecord(self.now, src, dst, end.id, peer.id, frame))
        if self._blocked(end):
            return
        self._after_in_flight(end, self._arrive, peer, data)

    def _after_in_flight(self, end: End, fn: Callable[..., None], *args: Any) -> None:
        """Schedule `fn` when bytes sent now from `end` would arrive: after everything sent before."""
        delay = end.latency + (self.rng.uniform(0, self.jitter) if self.jitter else 0.0)
        when = max(self.now + delay, end.last_arrival)
        end.last_arrival = when
        self._schedule(when, fn, *args)

    @staticmethod
    def _name(end: End) -> str:
        return end.owner.name

    def _arrive(self, end: End, data: bytes) -> None:
        if not end.open or self._defer(end.owner, self._arrive, end, data):
            return
        owner = end.owner
        try:
            bodies = end.reader.feed(data)
        except ProtocolError as error:
            if isinstance(owner, MemNode):
                self._apply(owner, owner.state.on_stream_error(end.id, str(error), self.now))
                if end.open:  # the engine's reader stops either way
                    self._close_end(end, f"stream error: {error}")
            return
        for body in bodies:
            if not end.open:
                return
            if isinstance(owner, RawEnd):
                owner.received.append(body)
            else:
                self._apply(owner, owner.state.on_frame(end.id, body, self.now))

    def _eof(self, end: End) -> None:
        if not end.open or self._defer(end.owner, self._eof, end):
            return
        if isinstance(end.owner, RawEnd):
            end.owner.eof = True
            return
        self._close_end(end, "peer closed the connection")

    def _peer_gone(self, end: End) -> None:
        if end.open and not self._defer(end.owner, self._peer_gone, end):
            self._close_end(end, "peer closed the connection")

    def _close_end(self, end: End, reason: str, report: bool = True) -> None:
        """Close `end` now; its owner hears of it from the loop, its peer after the bytes in flight."""
        if not end.open:
            return
        end.open = False
        owner = end.owner
        if isinstance(owner, RawEnd):
            owner.closed = True
            owner.closed_at = self.now
        else:
            owner.ends.pop(end.id, None)
            if report:
                self._schedule(self.now, self._report_closed, owner, owner.state, end.id, reason)
        if end.peer is not None and end.peer.open and not self._blocked(end):
            self._after_in_flight(end, self._peer_gone, end.peer)

    def _blocked(self, end: End) -> bool:
        """True if nothing sent from `end` reaches its peer (a blackholed pair)."""
        assert end.peer is not None
        return frozenset((self._name(end), self._name(end.peer))) in self._blackholed

    def _report_closed(self, node: MemNode, state: NodeState, conn_id: int, reason: str) -> None:
        if not node.alive or node.state is not state or self._defer(node, self._report_closed, node, state,
                                                                    conn_id, reason):
            return
        self.closes.append((self.now, node.name, conn_id, reason))
        self._apply(node, node.state.on_connection_closed(conn_id, reason, self.now))


@dataclass
class Publisher:
    """Publishes a numbered stream from one node at given times (a helper for order tests)."""

    net: MemNet
    node: str
    topic: str | int = "t"
    sent: list[Any] = field(default_factory=list)

    def at(self, when: float, message: Any) -> None:
        self.net._schedule(when, self._publish, message)

    def _publish(self, message: Any) -> None:
        if self.net.nodes[self.node].alive:
            self.net.publish(self.node, self.topic, message)
            self.sent.append(message)
