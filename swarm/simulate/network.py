"""The simulated network: a deterministic discrete-event loop that drives real `NodeState` instances.

This is the engine of `python -m swarm.simulate` and of the protocol tests (`tests/memnet.py` is a thin
adapter over it, so every test that drives the core in memory also exercises the simulator's engine).
No sockets, no trio, no wall clock. Time is virtual (`Network.now`, seconds); every event sits in one
heap ordered by (time, insertion number), so a run is a pure function of its seed. The loop carries out
the actions the core returns the way `swarm.transport.engine` does over TCP:

* `Send`: each connection is a byte stream, FIFO per direction; the bytes arrive at the other end after
  the link's latency (plus optional per-send jitter and loss delay, never reordering one direction) and
  are cut into frame bodies by a `FrameReader` there, exactly as the engine's reader does.
* `Dial`: after one latency, a connection pair exists and both ends get `on_connection_open` (outbound on
  the dialler with the address it dialled, inbound on the other); if nothing listens there, the dialler
  gets `on_dial_failed` (refused); across a partition or a `blackhole`, after its `handshake_timeout`
  (the engine's dial timeout). With `dialling` off, Dial actions are swallowed: the dial never
  completes and never fails (a frozen overlay: nodes cannot replace lost links).
* `CloseConnection`: this end closes now (`on_connection_closed` is called from the loop right after the
  current batch of actions); the other end sees the close after the bytes already in flight. There is
  no send queue here (a Send is on the wire at once, like a writer that keeps up), so what was sent
  before a close arrives whether or not the close asked to `flush`.
* `Retire`: the final frame goes out, then end-of-stream; further sends on that end are dropped (as the
  engine's do); an end that reads end-of-stream closes, as the engine's reader does.
* `ScheduleTimer`: an extra tick at that time, with `honour_wakeup` (the tests' `MemNet` ticks only on
  its regular schedule).
* `Deliver`, `Ready`, `ReportError`: passed to `on_deliver` (if set) and recorded (`deliveries` when
  `record` is on; `readies`; `errors`, or only `error_counts` when `record` is off).

Network model:

* **Latency** is per link (per unordered pair of node names), drawn from a `Latency` distribution:
  `constant`, `uniform(a, b)` or `lognormal(mu, sigma)` (of seconds). The draw for a pair is a function
  of (seed, the two names) only, from a hash, not of the order in which links open, so a pair keeps its
  latency for the whole run and two runs agree whatever else changes. `set_latency` overrides a pair.
* **Jitter** adds uniform(0, jitter) to each send, never reordering one direction (TCP is FIFO).
* **Loss** is TCP-faithful: TCP never drops a frame, a lost segment is retransmitted. Each send (and each
  connection set-up) is lost with probability `loss`, which costs `retransmit` seconds more (200 ms, the
  Linux minimum RTO); what was sent after it on the same direction waits behind it (head-of-line
  blocking), so the stream stays in order.
* **Crash**: `crash(name, notify=True)` is a process that dies with its kernel alive (peers see their
  connections reset after the bytes in flight); `notify=False` is a power cut (connections go silent
  and peers find out only by their `failureTimeout`).
* **Join and leave**: `add_node(..., start=False)` then `start` (or `join_at(t, name)`); `leave` sends
  LEAVE, flushes and closes.
* **Partitions**: `partition(groups)` puts nodes in groups; traffic between groups is blackholed (bytes
  dropped, connections left open and silent, new dials time out); `heal()` ends it. Dropping (not
  holding) bytes is a simplification: a partition shorter than `failureTimeout` would, over real TCP,
  deliver the held bytes late; longer ones (the interesting case) end with the connections closed by
  the failure detector either way. `blackhole(a, b)` does the same for one pair.

Test doubles: `raw_dial` opens a connection whose far end the test drives by hand (`RawEnd`); `freeze`
models a hung process (its kernel still accepts connections and buffers bytes, the process handles
nothing until `thaw`); `restart` and `drop_link` model node and link life cycles. With `trace`, `frames`
records every frame put on the wire; with `record`, `dials` every Dial, `retires` and `close_actions`
what the cores asked, `closes` what they were told, and `deliveries` every delivery (decoded), so tests
can inspect the protocol's traffic. Both are off by default: at 10,000 nodes they would cost more memory
than the nodes. Per node, `data_sent` and `control_sent` count the frames it put on the wire.

Efficiency: one heap, tuples, `__slots__`; per node a tick every `tick` seconds (and, with
`honour_wakeup`, an extra one when the core asks for it with `ScheduleTimer`: a settle window, a
reorder gap or a graft ending sooner, as the engine's ticker does); nothing is done per frame unless a
trace or hook asks for it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import heapq
import itertools
import math
import random
import statistics
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import ProtocolError
from ..protocol import actions as act
from ..protocol import wire
from ..protocol.framing import FrameReader
from ..protocol.origins import Authenticator
from ..protocol.state import CoreConfig, NodeState
from ..topology import NeighbourPolicy

Address = tuple[str, int]

__all__ = ["Delivery", "End", "FrameRecord", "Latency", "Network", "Publisher", "RawEnd", "SimNode",
           "address_of", "split_frames"]

KIND_DATA = wire.KIND_DATA
_Send, _Deliver, _Dial, _Close, _Retire, _Ready, _Error, _Timer = (
    act.Send, act.Deliver, act.Dial, act.CloseConnection, act.Retire, act.Ready, act.ReportError,
    act.ScheduleTimer)


def split_frames(data: bytes) -> list[bytes]:
    """Whole frames (length prefix included) in `data`, which must hold only whole frames."""
    reader = FrameReader(1 << 32, whole=True)
    frames = reader.feed(data)
    if reader.pending:
        raise AssertionError("a Send action carried a partial frame")
    return frames


def address_of(number: int) -> Address:
    """The listen address of the `number`-th node created (1, 2, ...): 10.0.0.1:7000, ..., 10.0.1.0:7000."""
    return (f"10.{number >> 16 & 255}.{number >> 8 & 255}.{number & 255}", 7000)


@dataclass(frozen=True)
class Latency:
    """A distribution of one-way link latencies, in seconds.

    `constant` (a), `uniform` (between a and b) or `lognormal` (exp of a normal with mean a = mu and
    standard deviation b = sigma, so the median is exp(mu) seconds). `parse` reads the CLI's spelling in
    milliseconds: "5", "uniform:1:20", "lognormal:1.6:0.5" (median e^1.6 = 5 ms).
    """

    kind: str = "constant"
    a: float = 0.001
    b: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in ("constant", "uniform", "lognormal"):
            raise ValueError(f"latency: expected constant, uniform or lognormal, got {self.kind!r}")
        if self.kind == "constant" and not self.a >= 0:
            raise ValueError(f"latency: expected >= 0, got {self.a}")
        if self.kind == "uniform" and not 0 <= self.a <= self.b:
            raise ValueError(f"latency: uniform needs 0 <= a <= b, got {self.a}, {self.b}")
        if self.kind == "lognormal" and not self.b >= 0:
            raise ValueError(f"latency: lognormal needs sigma >= 0, got {self.b}")

    @classmethod
    def parse(cls, text: str) -> Latency:
        """"5" (constant, ms), "uniform:A:B" (ms), "lognormal:MU:SIGMA" (of milliseconds)."""
        parts = str(text).split(":")
        try:
            if len(parts) == 1 or (len(parts) == 2 and parts[0] == "constant"):
                return cls("constant", float(parts[-1]) / 1000)
            if len(parts) == 3 and parts[0] == "uniform":
                return cls("uniform", float(parts[1]) / 1000, float(parts[2]) / 1000)
            if len(parts) == 3 and parts[0] == "lognormal":
                # exp(N(mu, sigma)) ms = exp(N(mu - ln 1000, sigma)) s
                return cls("lognormal", float(parts[1]) - math.log(1000), float(parts[2]))
        except ValueError:
            pass
        raise ValueError(f"expected MS, uniform:MIN_MS:MAX_MS or lognormal:MU:SIGMA, got {text!r}")

    def quantile(self, u: float) -> float:
        """The latency at cumulative probability `u` in (0, 1)."""
        if self.kind == "constant":
            return self.a
        if self.kind == "uniform":
            return self.a + (self.b - self.a) * u
        return math.exp(self.a + self.b * statistics.NormalDist().inv_cdf(u))

    def describe(self) -> str:
        if self.kind == "constant":
            return f"{self.a * 1000:g} ms"
        if self.kind == "uniform":
            return f"uniform {self.a * 1000:g}-{self.b * 1000:g} ms"
        return f"lognormal (median {math.exp(self.a) * 1000:.3g} ms, sigma {self.b:g})"


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
        return wire.kind(self.frame)

    @property
    def body(self) -> bytes:
        return wire.body_of(self.frame)


class End:
    """One end of a connection: it belongs to a node (or to a `RawEnd`'s test) and has a peer end."""

    __slots__ = ("id", "owner", "peer", "outbound", "address", "open", "write_closed", "reader",
                 "last_arrival", "latency", "pair")

    def __init__(self, conn_id: int, owner: Any, outbound: bool, address: Address | None, max_body: int,
                 latency: float, pair: int) -> None:
        # A node's core takes whole frames; a test's raw end reads bodies (kind byte first).
        self.id = conn_id
        self.owner = owner
        self.peer: End | None = None
        self.outbound = outbound
        self.address = address
        self.open = True
        self.write_closed = False  # end-of-stream sent (retired)
        self.reader = FrameReader(max_body, whole=not isinstance(owner, RawEnd))
        self.last_arrival = 0.0  # arrival time of the last bytes sent from this end (keeps FIFO)
        self.latency = latency
        self.pair = pair  # shared by both ends of one connection

    def __repr__(self) -> str:
        return f"<End {self.id} of {getattr(self.owner, 'name', self.owner)} open={self.open}>"


class SimNode:
    """A `NodeState` plus what the network needs to know of it."""

    def __init__(self, net: Network, name: str, address: Address, config: CoreConfig, epoch: int,
                 topics: Iterable[str | int], policy: NeighbourPolicy | None,
                 aliases: Iterable[Address], authenticator: Authenticator | None = None) -> None:
        self.net = net
        self.name = name
        self.address = address
        self.aliases = tuple(aliases)
        self.config = config
        self.epoch = epoch
        self.topics = list(dict.fromkeys(topics))
        self.policy = policy
        self.authenticator = authenticator  # signed origins (the driver's `OriginAuthenticator`), or None
        self.alive = False
        self.ends: dict[int, End] = {}
        self.frozen = False
        self.backlog: list[tuple[Callable[..., None], tuple[Any, ...]]] = []
        self.data_sent = 0  # DATA (and DIRECT) frames this node put on the wire: payload transmissions
        self.control_sent = 0  # every other frame it put on the wire
        self.wake_at = math.inf  # when the extra tick the core asked for (ScheduleTimer) is due
        self.state = self._new_state()

    def _new_state(self) -> NodeState:
        rng = random.Random(self.net.rng.getrandbits(64))
        state = NodeState(self.config, epoch=self.epoch, listen_address=self.address, rng=rng,
                          policy=self.policy, authenticator=self.authenticator)
        self.wake_at = math.inf  # a new process has asked for nothing yet (the old one's ticks are void)
        for topic in self.topics:
            state.subscribe(topic)
        return state

    @property
    def max_body(self) -> int:
        return wire.max_frame_body(self.config.max_message_size)

    def __repr__(self) -> str:
        return f"<SimNode {self.name} epoch={self.epoch} alive={self.alive}>"


class RawEnd:
    """A connection end driven by the test: it records what the node sends and sends what it is told."""

    def __init__(self, net: Network, name: str) -> None:
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
        return [wire.body_kind(body) for body in self.received]


class Network:
    """The simulated network and its event loop."""

    def __init__(self, seed: int = 0, *, latency: float | Latency = 0.001, jitter: float = 0.0,
                 loss: float = 0.0, retransmit: float = 0.2, tick: float = 0.1, trace: bool = False,
                 record: bool = False, event_limit: int | None = None, honour_wakeup: bool = True) -> None:
        if not 0.0 <= loss < 1.0:
            raise ValueError(f"loss: expected a probability in 0..1 (1 excluded), got {loss}")
        self.seed = seed
        self.rng = random.Random(seed)
        # Loss draws come from their own stream: turning loss on does not change anything else's draws.
        self._loss_rng = random.Random(f"loss/{seed}")
        self.now = 0.0
        self.latency = latency if isinstance(latency, Latency) else Latency("constant", float(latency))
        self.jitter = jitter
        self.loss = loss
        self.retransmit = retransmit
        self.tick = tick
        self.trace = trace
        self.record = record
        self.honour_wakeup = honour_wakeup
        self.event_limit = event_limit  # a runaway (say, a flood without duplicate suppression) fails
        self.events = 0
        self.dialling = True  # off: Dial actions are swallowed (no overlay repair)
        self.nodes: dict[str, SimNode] = {}
        self.on_deliver: Callable[[SimNode, act.Deliver], None] | None = None
        self.on_data_send: Callable[[SimNode, bytes, int], None] | None = None
        self.deliveries: list[Delivery] = []
        self.readies: list[tuple[float, str]] = []
        self.errors: list[tuple[float, str, str, str]] = []  # (time, node, code, text)
        self.error_counts: Counter[str] = Counter()
        self.dials: list[tuple[float, str, Address]] = []
        self.dial_count = 0
        self.dials_suppressed = 0
        self.frames: list[FrameRecord] = []
        self.closes: list[tuple[float, str, int, str]] = []  # (time, node, conn, reason) as reported
        self.close_actions: list[tuple[float, str, int, str]] = []  # CloseConnection actions
        self.retires: list[tuple[float, str, int, int | None]] = []  # (time, node, conn, successor)
        self.dropped_sends = 0  # sends to ends that were closed or retired
        self.lost_segments = 0  # sends that paid a retransmission
        self._listeners: dict[Address, SimNode] = {}
        self._pair_latency: dict[frozenset[str], float] = {}
        self._blackholed: set[frozenset[str]] = set()
        self._group: dict[str, int] = {}
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
                 config: CoreConfig | None = None, authenticator: Authenticator | None = None,
                 **options: Any) -> SimNode:
        """Create a node; seeds may be node names (resolved to their addresses) or addresses.
        `authenticator`: signed origins, as a node with `tls` has (links then carry no certificate:
        CERTS frames bring every chain).

        The core's options are `config` (its server name and seeds are replaced) or `CoreConfig` keyword
        arguments; `minimum_peers` defaults to 1 with seeds, else 0."""
        assert name not in self.nodes, name
        if address is None:
            address = address_of(next(self._addresses))
        seed_addresses = tuple(self.nodes[s].address if isinstance(s, str) else tuple(s) for s in seeds)
        if config is None:
            options.setdefault("minimum_peers", 1 if seed_addresses else 0)
            core = CoreConfig(server_name=name, seed_nodes=seed_addresses, **options)
        else:
            assert not options, "pass either config or options"
            core = dataclasses.replace(config, server_name=name,
                                       seed_nodes=seed_addresses or config.seed_nodes)
        node = SimNode(self, name, address, core, epoch, topics, policy, aliases, authenticator)
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

    def join_at(self, when: float, name: str) -> None:
        """Start the (created, not started) node `name` at simulated time `when`."""
        self._schedule(when, self.start, name)

    def at(self, when: float, fn: Callable[..., None], *args: Any) -> None:
        """Call `fn(*args)` at simulated time `when` (scenario scripts: crashes, publishes, heals)."""
        self._schedule(when, fn, *args)

    def state(self, name: str) -> NodeState:
        return self.nodes[name].state

    def set_latency(self, a: str, b: str, latency: float) -> None:
        """One-way latency of connections opened from now on between `a` and `b`."""
        self._pair_latency[frozenset((a, b))] = latency

    def blackhole(self, a: str, b: str, on: bool = True) -> None:
        """Partition `a` from `b`: every byte between them is dropped, their connections stay open but
        silent (no close is seen either), and dials between them time out."""
        (self._blackholed.add if on else self._blackholed.discard)(frozenset((a, b)))

    def partition(self, groups: Sequence[Iterable[str]]) -> None:
        """Cut the network into `groups` (nodes listed in none belong to the first): traffic between
        groups is blackholed as by `blackhole`, until `heal`."""
        self._group = {}
        for number, group in enumerate(groups):
            for name in group:
                self._group[name] = number

    def heal(self) -> None:
        """End the partition: traffic flows between every pair again (pair blackholes stay)."""
        self._group = {}

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
        if isinstance(node, SimNode) and node.frozen:
            node.backlog.append((fn, args))
            return True
        return False

    # ------------------------------------------------------------------ node life cycle

    def publish(self, name: str, topic: str | int, message: Any, *, seal: bool = True) -> int:
        """Publish on `name`; return the sequence number of its DATA frame. Without `seal` the message
        joins `name`'s open batch (see `NodeState.publish`), which `seal_batch` or the next tick sends;
        the number returned is then the one the batch will get."""
        node = self.nodes[name]
        self._apply(node, node.state.publish(topic, message, self.now, seal=seal))
        broadcast = node.state.broadcast
        return broadcast.last_frame_seq if seal else broadcast.seq + 1

    def seal_batch(self, name: str) -> None:
        """End `name`'s turn: its open batch of published messages goes, as under the trio driver."""
        node = self.nodes[name]
        self._apply(node, node.state.on_turn_end(self.now))

    def send_direct(self, name: str, target: str, topic: str | int, message: Any) -> None:
        """A direct message from `name` to the node called `target`."""
        node = self.nodes[name]
        self._apply(node, node.state.send_direct(target, topic, message, self.now))

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

    def restart(self, name: str, *, epoch: int | None = None, notify: bool = True) -> SimNode:
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

    def connect(self, a: str, b: str) -> None:
        """Open a connection from `a` to `b` now, as if `a` had dialled `b`'s address and the connection
        had come up at once (the simulator's direct bootstrap; no Dial action is involved)."""
        self._connect(self.nodes[a], self.nodes[b].address)

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
        latency = self.latency.quantile(0.5) if latency is None else latency
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
        pop = heapq.heappop
        limit = self.event_limit
        while heap and heap[0][0] <= t:
            when, _, fn, args = pop(heap)
            self.events += 1
            if limit is not None and self.events > limit:
                raise RuntimeError(f"more than {limit} events: a message storm?")
            if when > self.now:
                self.now = when
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

    def latency_between(self, a: str, b: str) -> float:
        """One-way latency of a connection between nodes `a` and `b`."""
        return self._latency(a, b)

    def open_pairs(self, a: str, b: str) -> set[int]:
        """Ids (`End.pair`) of the connections open at both ends between nodes `a` and `b`."""
        return {end.pair for end in self.nodes[a].ends.values()
                if end.open and end.peer is not None and end.peer.open and end.peer.owner is self.nodes[b]}

    def link_pair(self, a: str, b: str) -> int | None:
        """The connection `a`'s core uses for data to `b` (its `End.pair`), or None."""
        conn = self.nodes[a].state.links.active.get(b)
        if conn is None:
            return None
        end = self.nodes[a].ends.get(conn)
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

    def _wake(self, node: SimNode, state: NodeState, at: float) -> None:
        """An extra tick the core asked for (a deadline between two regular ticks)."""
        if node.wake_at != at:
            return  # superseded by an earlier request, which ran
        node.wake_at = math.inf
        if node.alive and node.state is state and not node.frozen:
            self._apply(node, state.on_tick(self.now))

    def _apply(self, node: SimNode, actions: list[act.Action]) -> None:
        for action in actions:
            kind = action.__class__
            if kind is _Send:
                sent = 0
                ends = node.ends
                data = action.data
                for conn in action.conns:
                    end = ends.get(conn)
                    if end is None or not end.open or end.write_closed:
                        self.dropped_sends += 1
                        continue
                    self._transmit(end, data)
                    sent += 1
                if wire.is_payload(data):  # DATA, DIRECT, UNDELIVERABLE: the payload plane
                    node.data_sent += sent
                    if sent and self.on_data_send is not None and wire.kind(data) == KIND_DATA:
                        self.on_data_send(node, data, sent)
                else:
                    node.control_sent += sent
            elif kind is _Deliver:
                if self.on_deliver is not None:
                    self.on_deliver(node, action)
                if self.record:
                    message = wire.decode_message(action.encoded)
                    self.deliveries.append(Delivery(self.now, node.name, action.origin, action.topic, message,
                                                    action.hops))
            elif kind is _Dial:
                self.dial_count += 1
                if self.record:
                    self.dials.append((self.now, node.name, action.address))
                if not self.dialling:
                    self.dials_suppressed += 1
                    continue
                target = self._listeners.get(action.address)
                delay = (self.latency.quantile(0.5) if target is None
                         else self._latency(node.name, target.name))
                if self.loss and self._loss_rng.random() < self.loss:
                    delay += self.retransmit
                    self.lost_segments += 1
                self._schedule(self.now + delay, self._connect, node, action.address)
            elif kind is _Close:
                if self.record:
                    self.close_actions.append((self.now, node.name, action.conn, action.reason))
                end = node.ends.get(action.conn)
                if end is not None:
                    self._close_end(end, action.reason)
            elif kind is _Retire:
                if self.record:
                    self.retires.append((self.now, node.name, action.conn, action.successor))
                end = node.ends.get(action.conn)
                if end is not None and end.open and not end.write_closed:
                    # Sends go on the wire at once here, so nothing is left unsent to move to the
                    # successor: the final frame, then end-of-stream.
                    self._transmit(end, action.final)
                    node.control_sent += 1
                    end.write_closed = True
                    if not self._blocked(end):
                        self._after_in_flight(end, self._eof, end.peer)
            elif kind is _Ready:
                self.readies.append((self.now, node.name))
            elif kind is _Error:
                self.error_counts[action.code] += 1
                if self.record:
                    self.errors.append((self.now, node.name, action.code, action.text))
            elif kind is _Timer:
                if self.honour_wakeup and action.at < node.wake_at and node.alive:
                    node.wake_at = action.at
                    self._schedule(max(action.at, self.now), self._wake, node, node.state, action.at)
            else:  # pragma: no cover - a new action type must be taught to the network
                raise AssertionError(f"unknown action {action!r}")

    def _connect(self, node: SimNode, address: Address) -> None:
        if not node.alive:
            return
        target = self._listeners.get(address)
        if target is None or not target.alive:
            self._dial_failed(node, node.state, address, "connection refused")
            return
        if self._blocked_names(node.name, target.name):
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

    def _opened(self, node: SimNode, end: End) -> None:
        if not end.open or self._defer(node, self._opened, node, end):
            return
        identity, certificate = self._certificate_of(end.peer.owner if end.peer is not None else None)
        self._apply(node, node.state.on_connection_open(end.id, end.outbound, end.address, self.now,
                                                        identity, certificate))

    @staticmethod
    def _certificate_of(peer: Any) -> tuple[str | None, bytes | None]:
        """(name, leaf certificate) the TLS handshake would show of `peer`: a node with an
        authenticator (signed origins) has a certificate of its own name; anything else shows none."""
        auth = getattr(peer, "authenticator", None)
        chain = auth.chain_of(peer.name) if auth is not None else None
        return (peer.name, chain[0]) if chain else (None, None)

    def _dial_failed(self, node: SimNode, state: NodeState, address: Address, reason: str) -> None:
        if not node.alive or node.state is not state or self._defer(node, self._dial_failed, node, state,
                                                                    address, reason):
            return
        self._apply(node, state.on_dial_failed(address, reason, self.now))

    def _latency(self, a: str, b: str) -> float:
        if self._pair_latency:
            fixed = self._pair_latency.get(frozenset((a, b)))
            if fixed is not None:
                return fixed
        model = self.latency
        if model.kind == "constant":
            return model.a
        low, high = (a, b) if a < b else (b, a)
        digest = hashlib.blake2b(f"{self.seed}\0{low}\0{high}".encode(), digest_size=8).digest()
        u = (int.from_bytes(digest, "big") + 0.5) / 2.0 ** 64  # in (0, 1)
        return model.quantile(u)

    def _transmit(self, end: End, data: bytes, raw: bool = False) -> None:
        peer = end.peer
        assert peer is not None
        if self.trace and not raw:
            src, dst = end.owner.name, peer.owner.name
            for frame in split_frames(data):
                self.frames.append(FrameRecord(self.now, src, dst, end.id, peer.id, frame))
        if (self._blackholed or self._group) and self._blocked(end):
            return
        self._after_in_flight(end, self._arrive, peer, data)

    def _after_in_flight(self, end: End, fn: Callable[..., None], *args: Any) -> None:
        """Schedule `fn` when bytes sent now from `end` would arrive: after everything sent before."""
        delay = end.latency + (self.rng.uniform(0, self.jitter) if self.jitter else 0.0)
        if self.loss and self._loss_rng.random() < self.loss:
            delay += self.retransmit  # the segment is lost once and retransmitted
            self.lost_segments += 1
        when = self.now + delay
        if when < end.last_arrival:
            when = end.last_arrival
        end.last_arrival = when
        heapq.heappush(self._heap, (when, next(self._order), fn, args))

    def _arrive(self, end: End, data: bytes) -> None:
        if not end.open or self._defer(end.owner, self._arrive, end, data):
            return
        owner = end.owner
        try:
            bodies = end.reader.feed(data)
        except ProtocolError as error:
            if isinstance(owner, SimNode):
                self._apply(owner, owner.state.on_stream_error(end.id, str(error), self.now))
                if end.open:  # the engine's reader stops either way
                    self._close_end(end, f"stream error: {error}")
            return
        if isinstance(owner, RawEnd):
            owner.received.extend(bodies)
            return
        state = owner.state
        for body in bodies:
            if not end.open:
                return
            self._apply(owner, state.on_frame(end.id, body, self.now))

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

    def _blocked_names(self, a: str, b: str) -> bool:
        if self._group and self._group.get(a, 0) != self._group.get(b, 0):
            return True
        return bool(self._blackholed) and frozenset((a, b)) in self._blackholed

    def _blocked(self, end: End) -> bool:
        """True if nothing sent from `end` reaches its peer (a blackholed pair, or across a partition)."""
        assert end.peer is not None
        if not self._blackholed and not self._group:
            return False
        return self._blocked_names(end.owner.name, end.peer.owner.name)

    def _report_closed(self, node: SimNode, state: NodeState, conn_id: int, reason: str) -> None:
        if not node.alive or node.state is not state or self._defer(node, self._report_closed, node, state,
                                                                    conn_id, reason):
            return
        if self.record:
            self.closes.append((self.now, node.name, conn_id, reason))
        self._apply(node, node.state.on_connection_closed(conn_id, reason, self.now))


@dataclass
class Publisher:
    """Publishes a numbered stream from one node at given times (a helper for order tests)."""

    net: Network
    node: str
    topic: str | int = "t"
    sent: list[Any] = field(default_factory=list)

    def at(self, when: float, message: Any) -> None:
        self.net._schedule(when, self._publish, message)

    def _publish(self, message: Any) -> None:
        if self.net.nodes[self.node].alive:
            self.net.publish(self.node, self.topic, message)
            self.sent.append(message)
