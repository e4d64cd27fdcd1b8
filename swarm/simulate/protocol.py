"""Protocol simulation runs: N real `NodeState` cores over the simulated network, and what they measure.

The room where swarm's actual protocol code (the same `NodeState` the TCP node runs, with options from
`swarm.config.Options`) is run at sizes no machine could run for real. `Network`
(`swarm.simulate.network`) carries the frames; this module builds the cluster, scripts what happens to it
and measures the outcome. Nothing here models the protocol a second time: every link, forward, repair and
delivery is the core's own doing.

**Bootstrap.** Two ways to get N nodes into an overlay:

* `join`: every node starts with seeds and joins for real (node i is seeded with a random earlier node,
  `tree`, or with the first node, `one-seed`; starts spread over `join_window` seconds). The time until
  every node's "local" links are its true ring neighbours is the convergence time after joins. Costly at
  large N: the join storm is simulated message by message.
* `direct` (for scale; it *skips the join phase*): the overlay the protocol converges to is drawn first,
  with `analysis.swarm_overlay(..., view="bounded")` (each node's true ring neighbours, plus shortcuts
  drawn by `SmallWorld.wanted` itself from the view a converged node holds), and its links are opened as
  connections that run real HELLO handshakes and PEERS exchanges over simulated links. While they open,
  each node's policy is pinned to those links (`PresetSmallWorld`); then it is released with its
  shortcuts set to the drawn ones, and from there on the unmodified `SmallWorld` runs the overlay.

**Scripts** (`run`): a baseline broadcast; a crash of a fraction of the nodes, *without repair* and
*with repair*; a partition into groups and its heal; churn (joins and graceful leaves at a steady rate,
with a steady publisher). "Without repair" is an environment switch, not a protocol change: from the
crash on, the network swallows every Dial (`Network.dialling = False`; a dial neither completes nor
fails), so nodes cannot replace lost links, while everything else (failure detection, forwarding,
pruning) runs as usual. The broadcast is then published `failureTimeout` + 1 s after the crash, once the
survivors have noticed their dead links: what is measured is the overlay that survives, as the graph
analysis' robustness measures it, but with the real flood over it. Waiting or not makes no difference to
delivery (a flood into a dead link is simply lost); the wait makes the control-traffic figures those of a
settled state. "With repair" is a second run from the same seed (identical up to the crash) in which
the network carries dials, and the broadcast goes out once the ring among live nodes is true again.

**Measures per broadcast** (definitions of `../shared/reference/small-world.md`):

* delivery ratio: deliveries made / deliveries expected, where expected are the live (and, after a
  join, ready) subscribed nodes other than the origin, at publication, still alive at the end of the
  window (so that churn does not count a node that left as a loss);
* RMR = m / (n - 1) - 1, m the payload transmissions of that broadcast (DATA frames put on the wire,
  counted by the network), n the nodes it reached, origin included;
* LDH: the hop count of the last node to receive it (`Deliver.hops`: links the first copy crossed);
* latency percentiles of deliveries (simulated ms after publication; nearest-rank);
* payload frames sent per live node per broadcast, and control frames (HELLO, PEERS, PING, ...) per live
  node over the phase's window (mean, max);
* `reachable`: the share of expected receivers in the publisher's component of the live link graph
  when the broadcast went out (what delivery should equal when the flood works).

Convergence time: simulated time until every live node's "local" links (`NodeState.link_kind`) are its
true ring neighbours among the live nodes (within each group during a partition), checked every
`check_interval` seconds.

Determinism: every random choice comes from `random.Random` streams derived from the seed; nodes, links
and victims are iterated in index order; results contain simulated time only. The core itself iterates
some sets (dial order), so byte-identical output across processes also needs a fixed PYTHONHASHSEED,
which `python -m swarm.simulate` sets.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..config import Options
from ..protocol import actions as act
from ..protocol import wire
from ..protocol.state import CoreConfig, NodeState
from ..topology import analysis, ring
from ..topology.neighbours import MemberView
from ..topology.smallworld import SmallWorld
from .network import Latency, Network, SimNode

__all__ = ["Params", "PresetSmallWorld", "Simulation", "percentile", "run"]

TOPIC = "t"
Progress = Callable[[float, str], None]


@dataclass(frozen=True)
class Params:
    """Everything a protocol run depends on. Times in seconds unless named `_ms`."""

    nodes: int = 1000
    local_links: int = 4
    shortcuts: int = 2
    distribution: str = "harmonic"
    seed: int = 7
    bootstrap: str = "direct"  # direct | join
    join_seeds: str = "tree"  # tree | one-seed (join bootstrap)
    join_window: float = 0.0  # joins spread uniformly over this many seconds
    latency: str = "5"  # Latency.parse: ms, uniform:A:B, lognormal:MU:SIGMA
    jitter_ms: float = 0.0
    loss: float = 0.0
    retransmit_ms: float = 200.0
    messages: int = 10  # per broadcast phase
    interval_ms: float = 10.0  # between two publishes of a phase
    drain: float = 3.0  # at most this long after the last publish for deliveries
    settle: float = 0.05  # after a direct bootstrap, before the first broadcast
    crash: float = 0.0  # share of nodes crashed
    crash_mode: str = "silent"  # silent (power cut) | reset (peers see the close)
    repair: str = "both"  # off | on | both
    converge_timeout: float = 60.0  # longest wait for the true ring
    check_interval: float = 0.05
    partition: int = 0  # groups (0: no partition)
    partition_time: float = 10.0  # how long the partition lasts
    churn: float = 0.0  # membership changes per second (joins and leaves alternate)
    churn_time: float = 10.0
    publish_rate: float = 5.0  # messages per second during churn
    options: tuple[tuple[str, Any], ...] = ()  # swarm Options (camelCase) overrides

    def latency_model(self) -> Latency:
        return Latency.parse(self.latency)

    def core_config(self) -> CoreConfig:
        """The core's options: swarm's defaults, the overlay parameters, then `options`."""
        mapping: dict[str, Any] = {"serverName": "sim", "localLinks": self.local_links,
                                   "shortcuts": self.shortcuts, "shortcutDistribution": self.distribution}
        mapping.update(dict(self.options))
        return CoreConfig.from_options(Options.from_mapping(mapping))


class PresetSmallWorld(SmallWorld):
    """`SmallWorld` whose wanted links are fixed while a direct bootstrap opens them.

    While `preset` is set, `wanted` is the preset names the node is already linked to (so it dials
    nothing, and tells each new peer whether it chose it); `release` then hands the node to the
    unmodified `SmallWorld` logic, with the drawn shortcuts as its chosen ones.
    """

    def __init__(self, own_position: int, *, preset: Iterable[str], preset_shortcuts: Iterable[str],
                 **options: Any) -> None:
        super().__init__(own_position, **options)
        self.preset: frozenset[str] | None = frozenset(preset)
        self.preset_shortcuts = tuple(preset_shortcuts)

    def wanted(self, own_name: str, members: Iterable[MemberView]) -> set[str]:
        if self.preset is None:
            return super().wanted(own_name, members)
        preset = self.preset
        return {m.name for m in members if m.linked and m.name in preset}

    def release(self, linked: Iterable[str]) -> None:
        linked = set(linked)
        self.shortcuts = {name for name in self.preset_shortcuts if name in linked}
        self.preset = None


def percentile(ordered: Sequence[float], q: float) -> float:
    """Nearest-rank percentile `q` (0..100) of an ascending list (0.0 when empty)."""
    if not ordered:
        return 0.0
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


class _Broadcast:
    __slots__ = ("key", "origin", "published", "expected", "got", "transmissions", "reachable")

    def __init__(self, key: bytes, origin: str, published: float, expected: set[str]) -> None:
        self.key = key
        self.origin = origin
        self.published = published
        self.expected = expected
        self.got: dict[str, tuple[float, int]] = {}  # first delivery per node: (time, hops)
        self.transmissions = 0
        self.reachable = 0.0


@dataclass
class _Window:
    """Counters at the start of a measured phase."""

    start: float
    data: dict[str, int]
    control: dict[str, int]
    broadcasts: list[_Broadcast] = field(default_factory=list)
    duplicates: int = 0


class Simulation:
    """A cluster of real cores on a `Network`, with the scripts and measures of the module docstring."""

    def __init__(self, params: Params, progress: Progress | None = None, overlay: Any = None) -> None:
        self.params = params
        self.progress = progress
        # A direct bootstrap opens this overlay (a graph in `analysis.swarm_overlay`'s format, with
        # `params.nodes` nodes) instead of drawing one: say, the links a real cluster converged to.
        self.overlay = overlay
        self.config = params.core_config()
        self.tick = min(0.1, self.config.failure_timeout / 10)
        self.net = Network(params.seed, latency=params.latency_model(), jitter=params.jitter_ms / 1000,
                           loss=params.loss, retransmit=params.retransmit_ms / 1000, tick=self.tick)
        self.net.on_deliver = self._delivered
        self.net.on_data_send = self._data_sent
        self.rng = random.Random(f"script/{params.seed}")
        self.per_side = max(1, (params.local_links + 1) // 2)
        self.names: list[str] = []
        self.positions: dict[str, int] = {}
        self._tracked: dict[bytes, _Broadcast] = {}
        self._outstanding = 0
        self._window: _Window | None = None
        self._check_from = 0
        self.overlay_links = 0
        self.bootstrap_result: dict[str, Any] = {}
        self._progress_span = (0.0, 1.0)

    # ------------------------------------------------------------------ progress

    def _report(self, fraction: float, label: str) -> None:
        if self.progress is not None:
            low, high = self._progress_span
            self.progress(low + (high - low) * min(max(fraction, 0.0), 1.0), label)

    def _run_to(self, t: float, label: str) -> None:
        """Run the network until simulated time `t`, reporting progress in steps."""
        start = self.net.now
        step = max((t - start) / 50, self.tick)
        while True:
            self.net.run_until(min(t, self.net.now + step))
            self._report((self.net.now - start) / max(t - start, 1e-9), label)
            if self.net.now >= t:
                break

    # ------------------------------------------------------------------ nodes

    def live(self) -> list[str]:
        """Names of live nodes, in creation order."""
        nodes = self.net.nodes
        return [name for name in self.names if nodes[name].alive]

    def _add(self, name: str, *, seeds: Sequence[str] = (), start: bool = True,
             policy: SmallWorld | None = None) -> SimNode:
        config = self.config
        if seeds and not any(key == "minimumPeers" for key, _ in self.params.options):
            config = dataclasses.replace(config, minimum_peers=1)
        node = self.net.add_node(name, seeds=seeds, start=start, config=config, topics=(TOPIC,),
                                 policy=policy)
        self.names.append(name)
        self.positions[name] = ring.position(name)
        return node

    def state(self, name: str) -> NodeState:
        return self.net.nodes[name].state

    # ------------------------------------------------------------------ bootstrap

    def bootstrap(self) -> dict[str, Any]:
        if self.params.bootstrap == "join":
            result = self._bootstrap_join()
        else:
            result = self._bootstrap_direct()
        links = self.link_graph()
        degrees = [len(peers) for peers in links.values()]
        self.overlay_links = sum(degrees) // 2
        result.update(links=self.overlay_links, degree_mean=sum(degrees) / len(degrees),
                      degree_max=max(degrees), degree_min=min(degrees))
        self.bootstrap_result = result
        return result

    def _bootstrap_direct(self) -> dict[str, Any]:
        p = self.params
        self._report(0.0, "drawing the overlay")
        graph = self.overlay if self.overlay is not None else analysis.swarm_overlay(
            p.nodes, p.local_links, p.shortcuts, p.distribution, p.seed, view="bounded",
            reserve_size=self.config.reserve_size)
        names = [graph.nodes[i]["name"] for i in range(p.nodes)]
        chosen: list[tuple[int, ...]] = []
        for i in range(p.nodes):
            data = graph.nodes[i]
            chosen.append(tuple(data["local"]) + tuple(data["shortcuts"]))
            policy = PresetSmallWorld(data["position"], preset=(names[j] for j in chosen[i]),
                                      preset_shortcuts=(names[j] for j in data["shortcuts"]),
                                      local_links=p.local_links, shortcuts=p.shortcuts,
                                      distribution=p.distribution, reserve_size=self.config.reserve_size,
                                      rng=random.Random(0))
            node = self._add(names[i], start=False, policy=policy)
            policy.rng = node.state.rng  # the node's own stream, as NodeState would give its default policy
            if i % 1000 == 0:
                self._report(0.3 * i / p.nodes, "creating nodes")
        for name in names:
            self.net.start(name)
        # One connection per link, dialled by the node that chose it (by the smaller name when both did,
        # the connection the protocol itself keeps of a simultaneous pair).
        slowest = 0.0
        for i in range(p.nodes):
            for j in chosen[i]:
                if i in chosen[j] and names[j] < names[i]:
                    continue
                self.net.connect(names[i], names[j])
                slowest = max(slowest, self.net.latency_between(names[i], names[j]))
            if i % 1000 == 0:
                self._report(0.3 + 0.3 * i / p.nodes, "opening links")
        # HELLO both ways (one latency), then PEERS (a second): every link confirmed.
        self._progress_span = (0.6, 0.8)
        self._run_to(self.net.now + 3 * slowest + 0.001, "handshakes")
        for name in names:
            state = self.state(name)
            policy = state.policy
            assert isinstance(policy, PresetSmallWorld)
            policy.release(state.linked_peers)
        self._progress_span = (0.8, 1.0)
        converged = self.converge(timeout=self.params.converge_timeout, label="settling")
        self._run_to(self.net.now + p.settle, "settling")
        return {"mode": "direct", "time": round(self.net.now, 6), "converged_after": converged,
                "slowest_link_ms": round(slowest * 1000, 3)}

    def _bootstrap_join(self) -> dict[str, Any]:
        p = self.params
        starts = sorted(self.rng.uniform(0, p.join_window) for _ in range(p.nodes)) if p.join_window else \
            [0.0] * p.nodes
        for i in range(p.nodes):
            name = f"node-{i}"
            if i == 0:
                seeds: list[str] = []
            elif p.join_seeds == "one-seed":
                seeds = [self.names[0]]
            else:
                seeds = [self.names[self.rng.randrange(i)]]
            self._add(name, seeds=seeds, start=False)
            self.net.join_at(starts[i], name)
        self._run_to(starts[-1], "joining")
        took = self.converge(timeout=p.converge_timeout, label="joining")
        # Convergence is counted from the last node's start (the whole join storm when they start at once).
        return {"mode": "join", "join_seeds": p.join_seeds, "join_window": p.join_window,
                "convergence_s": took, "time": round(self.net.now, 6)}

    # ------------------------------------------------------------------ the overlay

    def link_graph(self) -> dict[str, list[str]]:
        """Live node -> the live nodes it has an active link to (sorted)."""
        nodes = self.net.nodes
        return {name: sorted(peer for peer in self.state(name).linked_peers if nodes[peer].alive)
                for name in self.live()}

    def _truth(self, names: list[str]) -> dict[str, set[str]]:
        """Each node's true ring neighbours among `names` (per_side on each side)."""
        ordered = sorted(names, key=lambda n: (self.positions[n], n))
        count = len(ordered)
        per = self.per_side
        truth: dict[str, set[str]] = {}
        for r, name in enumerate(ordered):
            if count - 1 <= 2 * per:
                truth[name] = {other for other in ordered if other != name}
            else:
                truth[name] = {ordered[(r + k) % count] for k in range(1, per + 1)} | \
                              {ordered[(r - k) % count] for k in range(1, per + 1)}
        return truth

    def ring_mismatch(self, groups: Sequence[list[str]] | None = None,
                      truth: dict[str, set[str]] | None = None) -> str | None:
        """The first live node whose local links are not its true ring neighbours, or None."""
        if truth is None:
            truth = {}
            for group in groups or [self.live()]:
                truth.update(self._truth(group))
        names = list(truth)
        if not names:
            return None
        start = self._check_from % len(names)
        for k in range(len(names)):
            name = names[(start + k) % len(names)]
            state = self.state(name)
            local = {peer for peer in state.linked_peers if state.link_kind(peer) == "local"}
            if local != truth[name]:
                self._check_from = (start + k) % len(names)
                return name
        return None

    def converge(self, timeout: float, label: str, groups: Sequence[list[str]] | None = None) -> float | None:
        """Run until the ring is true (in each group); return the simulated seconds it took, or None."""
        started = self.net.now
        truth: dict[str, set[str]] = {}
        for group in groups or [self.live()]:
            truth.update(self._truth(group))
        while True:
            if self.ring_mismatch(truth=truth) is None:
                return round(self.net.now - started, 6)
            if self.net.now - started >= timeout:
                return None
            self.net.run_until(min(started + timeout, self.net.now + self.params.check_interval))
            self._report((self.net.now - started) / timeout, label)

    def reachable_share(self, origin: str, expected: set[str]) -> float:
        """Share of `expected` in `origin`'s component of the live, unpartitioned link graph."""
        net = self.net
        nodes = net.nodes
        seen = {origin}
        frontier = [origin]
        while frontier:
            following = []
            for name in frontier:
                for peer in self.state(name).linked_peers:
                    if peer not in seen and nodes[peer].alive and not net._blocked_names(name, peer):
                        seen.add(peer)
                        following.append(peer)
            frontier = following
        return len(expected & seen) / len(expected) if expected else 1.0

    # ------------------------------------------------------------------ broadcasts

    def _delivered(self, node: SimNode, action: act.Deliver) -> None:
        record = self._tracked.get(wire.message_id(action.frame))
        if record is None:
            return
        name = node.name
        if name in record.got:
            if self._window is not None:
                self._window.duplicates += 1
            return
        record.got[name] = (self.net.now, action.hops)
        if name in record.expected:
            self._outstanding -= 1

    def _data_sent(self, node: SimNode, data: bytes, copies: int) -> None:
        record = self._tracked.get(wire.message_id(data))
        if record is not None:
            record.transmissions += copies

    def publish(self, origin: str, message: Any, expected: Iterable[str] | None = None) -> _Broadcast:
        """Publish one tracked broadcast from `origin` now."""
        node = self.net.nodes[origin]
        if expected is None:
            nodes = self.net.nodes
            expected = [n for n in self.live() if n != origin and nodes[n].state.ready]
        expected_set = set(expected)
        state = node.state
        key = wire.message_id_of(state.broadcast.own_key, state.broadcast.seq + 1)
        record = _Broadcast(key, origin, self.net.now, expected_set)
        record.reachable = self.reachable_share(origin, expected_set)
        self._tracked[key] = record
        self._outstanding += len(expected_set)
        self.net.publish(origin, TOPIC, message)
        if self._window is not None:
            self._window.broadcasts.append(record)
        return record

    def _open_window(self) -> None:
        nodes = self.net.nodes
        self._window = _Window(self.net.now, {n: nodes[n].data_sent for n in self.names},
                               {n: nodes[n].control_sent for n in self.names})

    def broadcast_phase(self, name: str, origin: str, **extra: Any) -> dict[str, Any]:
        """Publish `messages` broadcasts from `origin`, `interval_ms` apart; wait until every expected
        delivery is made or `drain` seconds after the last publish; measure."""
        p = self.params
        self._open_window()
        self._outstanding = 0
        interval = p.interval_ms / 1000
        for k in range(p.messages):
            if k:
                self.net.run_until(self.net.now + interval)
            self.publish(origin, {"phase": name, "k": k})
            self._report(0.5 * (k + 1) / p.messages, name)
        deadline = self.net.now + p.drain
        while self._outstanding > 0 and self.net.now < deadline:
            self.net.run_until(min(deadline, self.net.now + max(self.tick / 2, 0.01)))
        return self._close_window(name, **extra)

    def _close_window(self, name: str, **extra: Any) -> dict[str, Any]:
        window = self._window
        assert window is not None
        self._window = None
        nodes = self.net.nodes
        live = self.live()
        alive = set(live)
        delivered = expected = 0
        latencies: list[float] = []
        hops: Counter[int] = Counter()
        rmrs: list[float] = []
        ldhs: list[int] = []
        reach: list[float] = []
        for record in window.broadcasts:
            targets = record.expected & alive
            expected += len(targets)
            reached = 0
            last = 0
            for node_name, (when, hop) in record.got.items():
                reached += 1
                last = max(last, hop)
                if node_name in targets:
                    delivered += 1
                    latencies.append((when - record.published) * 1000)
                    hops[hop] += 1
            ldhs.append(last)
            n = reached + 1
            if n > 1:
                rmrs.append(record.transmissions / (n - 1) - 1)
            reach.append(record.reachable)
            del self._tracked[record.key]
        latencies.sort()
        duration = self.net.now - window.start
        count = max(len(window.broadcasts), 1)
        payload = [(nodes[n].data_sent - window.data.get(n, 0)) / count for n in live]
        control = [nodes[n].control_sent - window.control.get(n, 0) for n in live]
        hop_total = sum(hops.values())
        return {
            "phase": name, "time": round(window.start, 6), "window_s": round(duration, 6), "live": len(live),
            "broadcasts": len(window.broadcasts), "expected": expected, "delivered": delivered,
            "delivery": round(delivered / expected, 6) if expected else 1.0,
            "reachable": round(sum(reach) / len(reach), 6) if reach else 1.0,
            "duplicates_delivered": window.duplicates,
            "rmr": round(sum(rmrs) / len(rmrs), 4) if rmrs else 0.0,
            "ldh": max(ldhs, default=0), "ldh_mean": round(sum(ldhs) / len(ldhs), 3) if ldhs else 0.0,
            "hops_mean": round(sum(h * c for h, c in hops.items()) / hop_total, 3) if hop_total else 0.0,
            "hops": {str(h): c for h, c in sorted(hops.items())},
            "latency_ms": {"p50": round(percentile(latencies, 50), 3),
                           "p90": round(percentile(latencies, 90), 3),
                           "p99": round(percentile(latencies, 99), 3),
                           "max": round(latencies[-1], 3) if latencies else 0.0},
            "payload_per_node": {"mean": round(sum(payload) / len(payload), 3) if payload else 0.0,
                                 "max": round(max(payload, default=0.0), 3)},
            "control_per_node": {"mean": round(sum(control) / len(control), 3) if control else 0.0,
                                 "max": max(control, default=0)},
            **extra,
        }

    # ------------------------------------------------------------------ scripts

    def crash_nodes(self, share: float, spare: str) -> list[str]:
        """Crash round(share * live) live nodes other than `spare`, drawn from the script's stream."""
        candidates = [n for n in self.live() if n != spare]
        count = min(round(share * (len(candidates) + 1)), len(candidates))
        order = {name: index for index, name in enumerate(self.names)}
        victims = sorted(self.rng.sample(candidates, count), key=order.__getitem__)
        for name in victims:
            self.net.crash(name, notify=self.params.crash_mode == "reset")
        return victims

    def crash_phase(self, repair: bool, origin: str) -> dict[str, Any]:
        p = self.params
        crashed_at = self.net.now
        if not repair:
            self.net.dialling = False
        victims = self.crash_nodes(p.crash, origin)
        name = f"crash {p.crash:.0%} " + ("with repair" if repair else "no repair")
        extra: dict[str, Any] = {"crashed": len(victims), "repair": repair}
        if repair:
            took = self.converge(p.converge_timeout, name)
            extra["convergence_s"] = took
        else:
            self._run_to(crashed_at + self.config.failure_timeout + 1.0, name)
        extra["published_after_s"] = round(self.net.now - crashed_at, 6)
        return self.broadcast_phase(name, origin, **extra)

    def partition_phases(self, origin: str) -> list[dict[str, Any]]:
        p = self.params
        live = self.live()
        shuffled = list(live)
        self.rng.shuffle(shuffled)
        order = {name: index for index, name in enumerate(self.names)}
        groups = [sorted(shuffled[k::p.partition], key=order.__getitem__) for k in range(p.partition)]
        # The publisher's group first, so that it is group 0.
        groups.sort(key=lambda g: origin not in g)
        self.net.partition(groups)
        cut_at = self.net.now
        within = self.converge(p.partition_time, f"partition into {p.partition}", groups=groups)
        self._run_to(cut_at + p.partition_time, f"partition into {p.partition}")
        results = [self.broadcast_phase(f"partition {p.partition} ways", origin,
                                        groups=[len(g) for g in groups], convergence_s=within)]
        self.net.heal()
        took = self.converge(p.converge_timeout, "heal")
        results.append(self.broadcast_phase("healed", origin, convergence_s=took))
        return results

    def churn_phase(self, origin: str) -> dict[str, Any]:
        """Joins and graceful leaves alternating at `churn` per second, `publish_rate` messages per
        second from `origin`, for `churn_time` seconds; then `drain` for the last messages."""
        p = self.params
        start = self.net.now
        self._open_window()
        self._outstanding = 0
        events: list[tuple[float, int, str]] = []
        if p.churn > 0:
            events += [(start + (k + 0.5) / p.churn, 0, "member") for k in range(int(p.churn_time * p.churn))]
        if p.publish_rate > 0:
            events += [(start + k / p.publish_rate, 1, "publish")
                       for k in range(int(p.churn_time * p.publish_rate))]
        events.sort()
        joined = left = 0
        next_index = len(self.names)
        for number, (when, _, what) in enumerate(events):
            self.net.run_until(when)
            if what == "publish":
                self.publish(origin, {"phase": "churn", "k": number})
            elif (joined + left) % 2 == 0:
                nodes = self.net.nodes
                seeds = [n for n in self.live() if nodes[n].state.ready]
                name = f"node-{next_index}"
                next_index += 1
                self._add(name, seeds=[seeds[self.rng.randrange(len(seeds))]])
                joined += 1
            else:
                candidates = [n for n in self.live() if n != origin]
                self.net.leave(candidates[self.rng.randrange(len(candidates))])
                left += 1
            self._report((when - start) / p.churn_time, "churn")
        self._run_to(start + p.churn_time + p.drain, "churn")
        took = self.converge(p.converge_timeout, "after churn")
        return self._close_window(f"churn {p.churn:g}/s", joined=joined, left=left, convergence_s=took)


def _phase_plan(params: Params, repair: bool | None) -> list[str]:
    plan = ["bootstrap", "broadcast"]
    if params.crash > 0 and repair is not None:
        plan.append("crash")
    if params.partition:
        plan.append("partition")
    if params.churn > 0:
        plan.append("churn")
    return plan


def run(params: Params, progress: Progress | None = None) -> dict[str, Any]:
    """One protocol run (two when a crash is simulated with repair "both"); the results as plain data."""
    repairs: list[bool | None]
    if params.crash > 0:
        repairs = {"off": [False], "on": [True], "both": [False, True]}[params.repair]
    else:
        repairs = [None]
    phases: list[dict[str, Any]] = []
    bootstrap: dict[str, Any] = {}
    runs = len(repairs)
    for number, repair in enumerate(repairs):
        plan = _phase_plan(params, repair) if number == 0 else ["bootstrap", "broadcast", "crash"]
        span = 1.0 / runs

        def phase_progress(k: int, sim: Simulation, plan: list[str] = plan, base: float = number * span,
                           span: float = span) -> None:
            sim._progress_span = (base + span * k / len(plan), base + span * (k + 1) / len(plan))

        sim = Simulation(params, progress)
        phase_progress(0, sim)
        result = sim.bootstrap()
        if number == 0:
            bootstrap = result
        origin = sim.names[0]
        phase_progress(1, sim)
        baseline = sim.broadcast_phase("intact", origin)
        if number == 0:
            phases.append(baseline)
        step = 2
        if repair is not None:
            phase_progress(step, sim)
            phases.append(sim.crash_phase(repair, origin))
            step += 1
        if number == 0 and params.partition:
            phase_progress(step, sim)
            phases.extend(sim.partition_phases(origin))
            step += 1
        if number == 0 and params.churn > 0:
            phase_progress(step, sim)
            phases.append(sim.churn_phase(origin))
    return {"mode": "protocol", "params": _params_dict(params), "bootstrap": bootstrap, "phases": phases}


def _params_dict(params: Params) -> dict[str, Any]:
    data = dataclasses.asdict(params)
    data["options"] = dict(params.options)
    data["latency_model"] = params.latency_model().describe()
    return data

