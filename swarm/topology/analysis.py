"""Graph analysis of overlays: the room where an overlay's shape is measured, not run.

Builders give the graph an overlay converges to (swarm's own ring-plus-shortcuts construction, made with
the protocol's own functions) and the graphs it is compared with: Watts-Strogatz (Nature, 1998), random
regular, full mesh. Measures are the ones the small-world literature uses, with networkx's definitions:

* characteristic path length L and diameter (Watts and Strogatz 1998), exact for small graphs, from
  sampled breadth-first searches for large ones (the result says how many sources it sampled);
* the average clustering coefficient C (Watts and Strogatz 1998);
* degree distribution, links per node and in total;
* robustness without repair: the share of surviving nodes in the largest component after a random crash,
  or after the best-connected nodes are removed first;
* flood hops: a flood from a source reaches each node after its breadth-first distance (equal link
  latencies), so the last delivery hop (LDH) is the source's eccentricity;
* greedy routing (Kleinberg, STOC 2000): each hop forwards to the neighbour whose ring position is nearest
  the target's, as `NodeState` routes direct messages; Kleinberg showed that shortcuts drawn with
  probability proportional to 1/distance make such routing find paths of O(log^2 N) hops and uniform ones
  do not.

Everything here is pure and deterministic: randomness comes from `random.Random(seed)` or from the seed
given to networkx. Nothing here is on the protocol's path; `swarm.simulate` and `simulations/` use it.
Graphs are `networkx.Graph`s; the measures work on any of them. N = 100,000 stays feasible (seconds, not
minutes) because large graphs are measured from samples; pure Python, no numpy.
"""

from __future__ import annotations

import random
from bisect import bisect_left, bisect_right
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import networkx as nx

from .neighbours import MemberView
from .ring import HALF, MAX_ROUTE_HOPS, RING, choose_shortcut, nearest_per_side, position, ring_distance
from .smallworld import SmallWorld

__all__ = [
    "CLUSTERING_EXACT_LIMIT", "DEFAULT_CLUSTERING_SAMPLES", "DEFAULT_SOURCES", "PATH_EXACT_LIMIT",
    "Analysis", "DegreeStats", "FloodStats", "GreedyStats", "LinkStats", "PathStats",
    "analyse", "characteristic_path_length", "clustering", "degree_stats", "diameter", "flood_hops",
    "flood_stats", "full_mesh", "greedy_routing", "link_stats", "path_stats", "random_regular",
    "robustness", "swarm_overlay", "watts_strogatz",
]

# Path lengths are exact (a breadth-first search from every node) up to this many nodes; above it,
# DEFAULT_SOURCES sampled sources. Each search is O(links): at 100,000 nodes about 0.1-0.2 s.
PATH_EXACT_LIMIT = 2000
DEFAULT_SOURCES = 64
# The clustering coefficient is exact up to this many nodes, and the mean over a sample above it.
CLUSTERING_EXACT_LIMIT = 20_000
DEFAULT_CLUSTERING_SAMPLES = 5000
# Above this many nodes, swarm_overlay draws full-view shortcuts with an exact sampler of the same
# distribution instead of calling ring.choose_shortcut on every other node (O(N) per draw, O(N^2) in all).
PROTOCOL_SAMPLER_LIMIT = 2000


# ---------------------------------------------------------------------------------------------- builders

def swarm_overlay(n: int, local_links: int = 4, shortcuts: int = 2, distribution: str = "harmonic",
                  seed: int = 0, *, view: Literal["full", "bounded"] = "full",
                  reserve_size: int = 32,
                  sampler: Literal["auto", "protocol", "fast"] = "auto",
                  name_format: str = "node-{}") -> nx.Graph:
    """The overlay swarm converges to with `n` nodes named `name_format.format(i)` (node-0 ... node-n-1).

    Nodes are the integers 0..n-1 with attributes `name`, `position` (`ring.position(name)`), `local` and
    `shortcuts` (the nodes this node chose, as tuples of ints). Each node links to its true ring
    neighbours, `ring.nearest_per_side` with `SmallWorld`'s `per_side` (half of `local_links` per side,
    rounded up), and draws `shortcuts` more among the others by `distribution` (`ring.choose_shortcut`:
    `uniform`, or `harmonic`, probability proportional to 1/ring distance). A link is undirected: a node's
    degree is what it chose plus what others chose of it (inbound links), as in the running cluster.
    Each edge has `kind` "local" if either end chose it as a ring link, else "shortcut".

    `view` says which nodes a node draws its shortcuts from:

    * `"full"`: every other node that is not one of its ring links, as a node knowing the whole
      membership would. The live protocol does not know it: this is the idealised overlay.
    * `"bounded"`: what the live protocol's view holds once the ring has converged (`SmallWorld`): the
      ring neighbourhood (the `2 * per_side` nearest nodes on each side) plus a reserve of `reserve_size`
      other nodes drawn uniformly (the reserve is a random sample refreshed by gossip). Shortcuts are
      then chosen by `SmallWorld.wanted` itself, which draws them from beyond the ring neighbourhood.
      Inbound links, which the live view also holds, are left out.

    `sampler` (full view only): `"protocol"` calls `ring.choose_shortcut` with every candidate, as
    `SmallWorld.wanted` does (O(n) per draw); `"fast"` draws from exactly the same distribution in
    O(log RING) per draw (rejection from dyadic distance shells, below), though not the same random
    stream; `"auto"` is `"protocol"` up to 2,000 nodes and `"fast"` above.

    Deterministic for a given `seed`; node positions depend only on the names.
    """
    if n < 1:
        raise ValueError(f"n: expected >= 1, got {n}")
    if view not in ("full", "bounded"):
        raise ValueError(f"view: expected 'full' or 'bounded', got {view!r}")
    if sampler not in ("auto", "protocol", "fast"):
        raise ValueError(f"sampler: expected 'auto', 'protocol' or 'fast', got {sampler!r}")
    # SmallWorld validates the distribution and owns the per-side rounding.
    per_side = SmallWorld(0, local_links=local_links, shortcuts=shortcuts,
                          distribution=distribution).per_side
    rng = random.Random(seed)
    names = [name_format.format(i) for i in range(n)]
    if len(set(names)) != n:
        raise ValueError(f"name_format: {name_format!r} does not give {n} distinct names")
    positions = [position(name) for name in names]
    index = {name: i for i, name in enumerate(names)}
    order = sorted(range(n), key=lambda i: (positions[i], names[i]))
    rank = [0] * n
    for r, i in enumerate(order):
        rank[i] = r

    def around(i: int, per: int) -> list[tuple[str, int]]:
        """Candidates enough for `nearest_per_side(..., per)` to give what it gives on all nodes."""
        if n - 1 <= 2 * per + 2:
            others: Sequence[int] = [j for j in range(n) if j != i]
        else:
            r = rank[i]
            others = list(dict.fromkeys(order[(r + step) % n] for k in range(1, per + 2) for step in (k, -k)))
        return [(names[j], positions[j]) for j in others]

    use_protocol = sampler == "protocol" or (sampler == "auto" and n <= PROTOCOL_SAMPLER_LIMIT)
    fast = _ShortcutSampler(positions, order) if view == "full" and not use_protocol else None
    graph = nx.Graph(kind="swarm", local_links=local_links, shortcuts=shortcuts, distribution=distribution,
                     view=view, reserve_size=reserve_size, seed=seed)
    for i in range(n):
        graph.add_node(i, name=names[i], position=positions[i])
    for i in range(n):
        own = positions[i]
        if view == "full":
            local = [index[m] for m in nearest_per_side(own, around(i, per_side), per_side)]
            if fast is not None:
                chosen = fast.draw(i, rank[i], set(local), shortcuts, distribution, rng)
            else:
                excluded = set(local) | {i}
                chosen = _draw(own, [(names[j], positions[j]) for j in range(n) if j not in excluded],
                               shortcuts, distribution, rng, index)
            graph.nodes[i]["local"], graph.nodes[i]["shortcuts"] = tuple(local), tuple(chosen)
            continue
        near_names = set(nearest_per_side(own, around(i, 2 * per_side), 2 * per_side))
        reserve = _sample_excluding(rng, n, reserve_size, {i} | {index[m] for m in near_names})
        members = [MemberView(m, ("", 0), False, positions[index[m]]) for m in near_names]
        members += [MemberView(names[j], ("", 0), False, positions[j]) for j in reserve]
        members.sort(key=lambda m: m.name)  # the draw must not depend on set order
        policy = SmallWorld(own, local_links=local_links, shortcuts=shortcuts, distribution=distribution,
                            reserve_size=reserve_size, rng=rng)
        local = [index[m] for m in policy.local(members)]
        local_set = set(local)
        chosen = sorted(index[m] for m in policy.wanted(names[i], members) if index[m] not in local_set)
        graph.nodes[i]["local"] = tuple(local)
        graph.nodes[i]["shortcuts"] = tuple(chosen)
    for i in range(n):
        for j in graph.nodes[i]["shortcuts"]:
            if not graph.has_edge(i, j):
                graph.add_edge(i, j, kind="shortcut")
    for i in range(n):
        for j in graph.nodes[i]["local"]:
            graph.add_edge(i, j, kind="local")
    return graph


def _draw(own: int, candidates: list[tuple[str, int]], count: int, distribution: str, rng: random.Random,
          index: Mapping[str, int]) -> list[int]:
    """`count` shortcuts drawn one by one with `ring.choose_shortcut`, without repeats, as
    `SmallWorld.wanted` draws them."""
    chosen: list[int] = []
    while len(chosen) < count and candidates:
        pick = choose_shortcut(own, candidates, distribution, rng)
        assert pick is not None
        chosen.append(index[pick])
        candidates = [c for c in candidates if c[0] != pick]
    return chosen


def _sample_excluding(rng: random.Random, n: int, k: int, excluded: set[int]) -> list[int]:
    """`k` distinct integers of range(n) outside `excluded`, uniformly (all of them if fewer)."""
    if n - len(excluded) <= k:
        return [j for j in range(n) if j not in excluded]
    picked: dict[int, None] = {}
    while len(picked) < k:
        j = rng.randrange(n)
        if j not in excluded:
            picked[j] = None
    return list(picked)


class _ShortcutSampler:
    """Full-view shortcut draws without scanning every node: the distribution of `ring.choose_shortcut`.

    `uniform`: a uniform node, redrawn while it is excluded. `harmonic` (weight 1/max(d, 1), d the ring
    distance): the others are split into dyadic shells, d in [2^s, 2^(s+1)), each counted with two
    bisections of the sorted positions. Pick a shell with probability proportional to count * 2^-s, a
    uniform node in it, and accept it with probability 2^s/d (at least 1/2): node j comes out with
    probability proportional to 2^-s * 2^s/d_j = 1/d_j, exactly. An excluded node (itself, a ring link, a
    shortcut already drawn) is redrawn, which samples the distribution restricted to the rest, as
    `choose_shortcut` over the remaining candidates does. (Two nodes at the same position, chance about
    N^2/2^65, are never drawn for each other here.)
    """

    def __init__(self, positions: Sequence[int], order: Sequence[int]) -> None:
        self.positions = positions
        self.order = order
        self.n = len(order)
        ordered = [positions[i] for i in order]
        self.ext = ordered + [p + RING for p in ordered]

    def draw(self, i: int, r: int, excluded: set[int], count: int, distribution: str,
             rng: random.Random) -> list[int]:
        n = self.n
        excluded = excluded | {i}
        available = n - len(excluded)
        chosen: list[int] = []
        if distribution == "uniform":
            while len(chosen) < count and available > 0:
                j = rng.randrange(n)
                if j not in excluded:
                    chosen.append(j)
                    excluded.add(j)
                    available -= 1
            return chosen
        shells, weights, ranges = self._shells(r)
        while len(chosen) < count and available > 0:
            s = rng.choices(shells, weights=weights, k=1)[0]
            cw_lo, cw_count, ccw_lo, ccw_count = ranges[s]
            k = rng.randrange(cw_count + ccw_count)
            j = self.order[(cw_lo + k if k < cw_count else ccw_lo + k - cw_count) % n]
            d = max(ring_distance(self.positions[i], self.positions[j]), 1)
            if rng.random() * d >= (1 << s) or j in excluded:
                continue
            chosen.append(j)
            excluded.add(j)
            available -= 1
        return chosen

    def _shells(self, r: int) -> tuple[list[int], list[float], dict[int, tuple[int, int, int, int]]]:
        """The non-empty shells around the node of sorted rank `r`, their weights, their index ranges."""
        ext, n = self.ext, self.n
        p = ext[r]
        nearest = min(ext[r + 1] - p, p + RING - ext[r + n - 1])
        first = max(nearest.bit_length() - 1, 0)
        shells: list[int] = []
        weights: list[float] = []
        ranges: dict[int, tuple[int, int, int, int]] = {}
        # Clockwise offset c in [lo, hi) with c <= HALF is at distance c; counter-clockwise offset c' in
        # [lo, hi) with c' < HALF is at position p - c' (p + RING - c' in the doubled list).
        cw_prev = bisect_left(ext, p + (1 << first), r + 1, r + n)
        ccw_prev = bisect_right(ext, p + RING - min(1 << first, HALF), r + 1, r + n)
        for s in range(first, 64):
            cw_next = bisect_left(ext, p + min(1 << (s + 1), HALF + 1), cw_prev, r + n)
            ccw_next = bisect_right(ext, p + RING - min(1 << (s + 1), HALF), r + 1, ccw_prev)
            cw_count, ccw_count = cw_next - cw_prev, ccw_prev - ccw_next
            if cw_count + ccw_count:
                shells.append(s)
                weights.append((cw_count + ccw_count) * 2.0 ** (first - s))
                ranges[s] = (cw_prev, cw_count, ccw_next, ccw_count)
            cw_prev, ccw_prev = cw_next, ccw_next
        return shells, weights, ranges


def watts_strogatz(n: int, k: int, p: float, seed: int = 0) -> nx.Graph:
    """Watts and Strogatz's (1998) graph: a ring lattice of `n` nodes with `k` neighbours each (k/2 per
    side), each link rewired with probability `p`; drawn again until connected
    (`networkx.connected_watts_strogatz_graph`). Node i sits at ring position i * RING // n."""
    graph = nx.connected_watts_strogatz_graph(n, k, p, tries=1000, seed=seed)
    graph.graph.update(kind="watts-strogatz", k=k, p=p, seed=seed)
    return graph


def random_regular(n: int, d: int, seed: int = 0) -> nx.Graph:
    """A uniformly random `d`-regular graph on `n` nodes (`networkx.random_regular_graph`; n * d even)."""
    graph = nx.random_regular_graph(d, n, seed=seed)
    graph.graph.update(kind="random-regular", d=d, seed=seed)
    return graph


def full_mesh(n: int) -> nx.Graph:
    """Every node linked to every other: n(n-1)/2 links, swarm's first topology (`FullMesh`)."""
    graph = nx.complete_graph(n)
    graph.graph.update(kind="full-mesh")
    return graph


# ---------------------------------------------------------------------------------------------- results

@dataclass(frozen=True)
class PathStats:
    """Shortest paths from `sources` breadth-first searches (all nodes when `exact`)."""

    mean: float  # characteristic path length: mean hops over the (source, reachable target) pairs
    diameter: int  # largest eccentricity seen: the diameter when exact, a lower bound when sampled
    exact: bool
    sources: int
    reached: float  # share of the other nodes a source reaches, averaged (1.0 when connected)


@dataclass(frozen=True)
class FloodStats:
    """A flood from each of `sources` nodes, hop counts as breadth-first distances."""

    mean_hops: float  # hops to a receiver, averaged over receivers and sources
    mean_ldh: float  # last delivery hop (the source's eccentricity), averaged over sources
    max_ldh: int
    sources: int
    reached: float  # share of the other nodes reached, averaged over sources


@dataclass(frozen=True)
class GreedyStats:
    """Greedy ring routing over `pairs` (source, target) pairs."""

    pairs: int
    delivered: int
    mean_hops: float  # over delivered pairs
    max_hops: int
    stuck: int  # no neighbour nearer the target than the current node
    over_limit: int  # still travelling after `max_hops` hops
    failure_rate: float


@dataclass(frozen=True)
class DegreeStats:
    min: int
    mean: float
    max: int
    histogram: dict[int, int] = field(default_factory=dict)  # degree -> number of nodes


@dataclass(frozen=True)
class LinkStats:
    total: int  # undirected links (TCP connections)
    per_node: float  # mean links a node holds, inbound included: 2 * total / n
    chosen_per_node: float | None  # mean links a node chose itself (swarm overlays only)


@dataclass(frozen=True)
class Analysis:
    """Everything `analyse` measures on one graph."""

    nodes: int
    links: LinkStats
    degree: DegreeStats
    paths: PathStats
    clustering: float
    clustering_samples: int  # nodes averaged over; n when exact
    flood: FloodStats
    greedy: GreedyStats | None
    robustness: dict[str, float]  # "random 50%" / "targeted 50%" -> share of survivors connected

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------------------------------------- internals

class _Adjacency:
    """A graph as lists of integer indices, which breadth-first search walks several times faster."""

    def __init__(self, graph: nx.Graph) -> None:
        self.nodes: list[Hashable] = list(graph.nodes)
        self.index = {node: i for i, node in enumerate(self.nodes)}
        index = self.index
        self.adj: list[list[int]] = [[index[v] for v in graph.adj[u]] for u in self.nodes]
        self.n = len(self.nodes)

    def bfs(self, source: int) -> tuple[int, int, int]:
        """(eccentricity, sum of distances, nodes reached other than the source) from `source`."""
        adj = self.adj
        seen = bytearray(self.n)
        seen[source] = 1
        frontier = [source]
        depth = total = reached = 0
        while frontier:
            following: list[int] = []
            for u in frontier:
                for v in adj[u]:
                    if not seen[v]:
                        seen[v] = 1
                        following.append(v)
            if not following:
                break
            depth += 1
            total += depth * len(following)
            reached += len(following)
            frontier = following
        return depth, total, reached


def _sources(n: int, sources: int | None, seed: int) -> tuple[list[int], bool]:
    """Source indices and whether they are all nodes: all up to PATH_EXACT_LIMIT nodes unless a number
    is given, else that many (DEFAULT_SOURCES by default) drawn without replacement."""
    if sources is None:
        sources = n if n <= PATH_EXACT_LIMIT else DEFAULT_SOURCES
    if sources >= n:
        return list(range(n)), True
    if sources < 1:
        raise ValueError(f"sources: expected >= 1, got {sources}")
    return random.Random(seed).sample(range(n), sources), False


def _path_stats(adj: _Adjacency, sources: int | None, seed: int) -> tuple[PathStats, FloodStats]:
    chosen, exact = _sources(adj.n, sources, seed)
    pair_total = pair_count = 0
    ecc_max = 0
    ecc_sum = 0
    mean_sum = 0.0
    reached_sum = 0.0
    for s in chosen:
        ecc, total, reached = adj.bfs(s)
        pair_total += total
        pair_count += reached
        ecc_max = max(ecc_max, ecc)
        ecc_sum += ecc
        mean_sum += total / reached if reached else 0.0
        reached_sum += reached / (adj.n - 1) if adj.n > 1 else 1.0
    count = len(chosen)
    paths = PathStats(mean=pair_total / pair_count if pair_count else 0.0, diameter=ecc_max, exact=exact,
                      sources=count, reached=reached_sum / count)
    flood = FloodStats(mean_hops=mean_sum / count, mean_ldh=ecc_sum / count, max_ldh=ecc_max, sources=count,
                       reached=reached_sum / count)
    return paths, flood


def _positions(graph: nx.Graph, positions: Mapping[Hashable, int] | None) -> dict[Hashable, int]:
    if positions is not None:
        return dict(positions)
    if all("position" in data for _, data in graph.nodes(data=True)):
        return {node: data["position"] for node, data in graph.nodes(data=True)}
    n = graph.number_of_nodes()
    return {node: i * RING // n for i, node in enumerate(graph.nodes)}


# ---------------------------------------------------------------------------------------------- measures

def path_stats(graph: nx.Graph, sources: int | None = None, seed: int = 0) -> PathStats:
    """Characteristic path length and diameter. Exact (a search from every node) up to PATH_EXACT_LIMIT
    nodes or when `sources` >= n; otherwise from `sources` (default DEFAULT_SOURCES) random sources, and
    the diameter is then a lower bound (the largest eccentricity among them). On a disconnected graph the
    mean is over the pairs that are connected, and `reached` says what share that is."""
    return _path_stats(_Adjacency(graph), sources, seed)[0]


def characteristic_path_length(graph: nx.Graph, sources: int | None = None,
                               seed: int = 0) -> tuple[float, int]:
    """(L, number of sources searched from): see `path_stats`. L is exact when that number is n."""
    stats = path_stats(graph, sources, seed)
    return stats.mean, stats.sources


def diameter(graph: nx.Graph, sources: int | None = None, seed: int = 0) -> tuple[int, bool]:
    """(diameter, exact): exact when every node was searched from, else a sampled lower bound."""
    stats = path_stats(graph, sources, seed)
    return stats.diameter, stats.exact


def clustering(graph: nx.Graph, samples: int | None = None, seed: int = 0) -> tuple[float, int]:
    """(average clustering coefficient, nodes averaged over), as `networkx.average_clustering` defines it.
    Exact up to CLUSTERING_EXACT_LIMIT nodes unless `samples` is given; otherwise the mean over `samples`
    (default DEFAULT_CLUSTERING_SAMPLES) random nodes."""
    n = graph.number_of_nodes()
    if samples is None:
        samples = n if n <= CLUSTERING_EXACT_LIMIT else DEFAULT_CLUSTERING_SAMPLES
    if samples >= n:
        return nx.average_clustering(graph), n
    nodes = random.Random(seed).sample(list(graph.nodes), samples)
    return nx.average_clustering(graph, nodes=nodes), samples


def degree_stats(graph: nx.Graph) -> DegreeStats:
    """Smallest, mean and largest degree (links held, inbound included) and the histogram."""
    degrees = [d for _, d in graph.degree()]
    histogram: dict[int, int] = {}
    for d in degrees:
        histogram[d] = histogram.get(d, 0) + 1
    return DegreeStats(min=min(degrees), mean=sum(degrees) / len(degrees), max=max(degrees),
                       histogram=dict(sorted(histogram.items())))


def link_stats(graph: nx.Graph) -> LinkStats:
    """Links in total and per node; for a swarm overlay also the links each node chose itself."""
    n = graph.number_of_nodes()
    total = graph.number_of_edges()
    chosen: float | None = None
    if graph.graph.get("kind") == "swarm":
        chosen = sum(len(data["local"]) + len(data["shortcuts"]) for _, data in graph.nodes(data=True)) / n
    return LinkStats(total=total, per_node=2 * total / n if n else 0.0, chosen_per_node=chosen)


def robustness(graph: nx.Graph, fraction: float, *, targeted: bool = False, seed: int = 0) -> float:
    """Share of the surviving nodes that are in the largest connected component, after removing
    round(fraction * n) nodes: at random, or (`targeted`) the highest-degree nodes first, by their
    degree in the intact graph, ties broken at random. No repair: links are not replaced. 0.0 if no node
    survives."""
    return _robustness(_Adjacency(graph), fraction, targeted, seed)


def _robustness(adj: _Adjacency, fraction: float, targeted: bool, seed: int) -> float:
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction: expected 0..1, got {fraction}")
    n = adj.n
    k = round(fraction * n)
    rng = random.Random(seed)
    if targeted:
        keys = [rng.random() for _ in range(n)]
        gone = sorted(range(n), key=lambda i: (-len(adj.adj[i]), keys[i]))[:k]
    else:
        gone = rng.sample(range(n), k)
    survivors = n - k
    if survivors <= 0:
        return 0.0
    removed = bytearray(n)
    for i in gone:
        removed[i] = 1
    done = bytearray(removed)
    largest = 0
    for s in range(n):
        if done[s]:
            continue
        # A search from s marks its component in `done`: start it from the nodes searched so far.
        adjl = adj.adj
        done[s] = 1
        stack = [s]
        size = 1
        while stack:
            u = stack.pop()
            for v in adjl[u]:
                if not done[v]:
                    done[v] = 1
                    size += 1
                    stack.append(v)
        largest = max(largest, size)
        if largest * 2 > survivors:
            break  # no other component can be larger
    return largest / survivors


def flood_hops(graph: nx.Graph, source: Hashable) -> tuple[int, float, float]:
    """(LDH, mean hops to a receiver, share of the other nodes reached) of a flood from `source`, with every
    link equally fast: hop counts are breadth-first distances, LDH is the source's eccentricity."""
    adj = _Adjacency(graph)
    ecc, total, reached = adj.bfs(adj.index[source])
    return ecc, total / reached if reached else 0.0, reached / (adj.n - 1) if adj.n > 1 else 1.0


def flood_stats(graph: nx.Graph, sources: int | None = None, seed: int = 0) -> FloodStats:
    """`flood_hops` over several sources (all nodes up to PATH_EXACT_LIMIT, else sampled as path_stats)."""
    return _path_stats(_Adjacency(graph), sources, seed)[1]


def greedy_routing(graph: nx.Graph, pairs: int = 1000, seed: int = 0, *,
                   positions: Mapping[Hashable, int] | None = None,
                   max_hops: int = MAX_ROUTE_HOPS) -> GreedyStats:
    """Route `pairs` random (source, target) pairs greedily, as `NodeState` routes direct messages: each hop
    goes to the neighbour whose ring position is nearest the target's (`ring.ring_distance`; the target
    itself when linked), and only if it is nearer than the current node, otherwise the message is stuck.
    Positions are `positions`, else each node's `position` attribute, else evenly spaced around the ring
    in node order (which is the lattice order of `watts_strogatz`). `max_hops` defaults to the protocol's
    hop limit (`ring.MAX_ROUTE_HOPS`)."""
    adj = _Adjacency(graph)
    where = _positions(graph, positions)
    pos = [where[node] for node in adj.nodes]
    n = adj.n
    if n < 2:
        raise ValueError("greedy_routing needs at least 2 nodes")
    rng = random.Random(seed)
    hop_total = hop_max = delivered = stuck = over = 0
    for _ in range(pairs):
        s = rng.randrange(n)
        t = rng.randrange(n - 1)
        if t >= s:
            t += 1
        goal = pos[t]
        u, hops = s, 0
        here = ring_distance(pos[u], goal)
        while u != t:
            if hops >= max_hops:
                over += 1
                break
            best, best_d = -1, here
            for v in adj.adj[u]:
                d = ring_distance(pos[v], goal)
                if d < best_d:
                    best, best_d = v, d
            if best < 0:
                stuck += 1
                break
            u, here, hops = best, best_d, hops + 1
        else:
            delivered += 1
            hop_total += hops
            hop_max = max(hop_max, hops)
    mean = hop_total / delivered if delivered else 0.0
    return GreedyStats(pairs=pairs, delivered=delivered, mean_hops=mean, max_hops=hop_max, stuck=stuck,
                       over_limit=over, failure_rate=(stuck + over) / pairs)


def analyse(graph: nx.Graph, *, sources: int | None = None, clustering_samples: int | None = None,
            greedy_pairs: int = 1000, crash: Sequence[float] = (0.5,), seed: int = 0) -> Analysis:
    """Every measure of this module on `graph`, sharing one index of its links; `sources`,
    `clustering_samples` and `greedy_pairs` bound the work on large graphs (see each measure). Greedy
    routing is measured only when the nodes have ring positions (swarm overlays, or any graph whose
    nodes have a `position` attribute). `crash` lists the fractions removed, at random and targeted."""
    adj = _Adjacency(graph)
    paths, flood = _path_stats(adj, sources, seed)
    coefficient, averaged = clustering(graph, clustering_samples, seed)
    greedy = None
    if greedy_pairs and all("position" in data for _, data in graph.nodes(data=True)):
        greedy = greedy_routing(graph, greedy_pairs, seed)
    survived: dict[str, float] = {}
    for f in crash:
        survived[f"random {f:.0%}"] = _robustness(adj, f, False, seed)
        survived[f"targeted {f:.0%}"] = _robustness(adj, f, True, seed)
    return Analysis(nodes=adj.n, links=link_stats(graph), degree=degree_stats(graph), paths=paths,
                    clustering=coefficient, clustering_samples=averaged, flood=flood, greedy=greedy,
                    robustness=survived)
