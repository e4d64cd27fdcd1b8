"""Graph analysis (`swarm.topology.analysis`): the Watts-Strogatz (1998) figures are reproduced, swarm's
overlay has the shape issue 3 asks for, and harmonic shortcuts make greedy routing shorter (Kleinberg 2000).
Every graph is seeded: the figures are the same on every run."""

from __future__ import annotations

import math
import random
from collections import Counter

import networkx as nx
import pytest

from swarm.topology import analysis
from swarm.topology.ring import position, ring_distance

# ---------------------------------------------------------------------------------- Watts-Strogatz 1998

WS_SEEDS = range(4)


@pytest.fixture(scope="module")
def lattice() -> tuple[float, float]:
    graph = analysis.watts_strogatz(1000, 10, 0.0, seed=0)
    length, sources = analysis.characteristic_path_length(graph)
    coefficient, _ = analysis.clustering(graph)
    assert sources == 1000
    return length, coefficient


def test_ring_lattice_matches_the_paper(lattice: tuple[float, float]) -> None:
    length, coefficient = lattice
    assert length == pytest.approx(50.45, abs=0.01)  # n / 2k for the lattice, 50.4 in the paper
    assert coefficient == pytest.approx(2 / 3, abs=1e-9)  # 3(k - 2) / 4(k - 1)


@pytest.mark.parametrize(("p", "length_ratio", "length_tolerance", "clustering_ratio",
                          "clustering_tolerance"),
                         [(0.01, 0.17, 0.03, 0.97, 0.02), (0.1, 0.09, 0.02, 0.73, 0.04)])
def test_watts_strogatz_reproduces_the_paper(lattice: tuple[float, float], p: float, length_ratio: float,
                                             length_tolerance: float, clustering_ratio: float,
                                             clustering_tolerance: float) -> None:
    """Issue 4's "must show": n = 1000, k = 10, exact L and C, mean over 4 seeds."""
    length0, coefficient0 = lattice
    lengths, coefficients = [], []
    for seed in WS_SEEDS:
        graph = analysis.watts_strogatz(1000, 10, p, seed=seed)
        lengths.append(analysis.characteristic_path_length(graph)[0] / length0)
        coefficients.append(analysis.clustering(graph)[0] / coefficient0)
    assert sum(lengths) / len(lengths) == pytest.approx(length_ratio, abs=length_tolerance)
    assert sum(coefficients) / len(coefficients) == pytest.approx(clustering_ratio, abs=clustering_tolerance)


def test_sampled_path_length_is_close_to_exact_and_says_so() -> None:
    graph = analysis.watts_strogatz(1000, 10, 0.1, seed=0)
    exact = analysis.path_stats(graph)
    sampled = analysis.path_stats(graph, sources=100, seed=3)
    assert exact.exact and exact.sources == 1000
    assert not sampled.exact and sampled.sources == 100
    assert sampled.mean == pytest.approx(exact.mean, rel=0.02)
    assert sampled.diameter <= exact.diameter  # a sampled diameter is a lower bound
    assert analysis.diameter(graph) == (exact.diameter, True)


# ---------------------------------------------------------------------------------- swarm's overlay

@pytest.fixture(scope="module")
def overlay_1000() -> nx.Graph:
    return analysis.swarm_overlay(1000, local_links=4, shortcuts=2, distribution="harmonic", seed=0)


def test_overlay_is_connected_with_ring_links_and_shortcuts(overlay_1000: nx.Graph) -> None:
    graph = overlay_1000
    assert nx.is_connected(graph)
    ordered = sorted(graph.nodes, key=lambda i: graph.nodes[i]["position"])
    rank = {node: r for r, node in enumerate(ordered)}
    n = len(ordered)
    for node, data in graph.nodes(data=True):
        assert data["position"] == position(f"node-{node}")
        # The links a node chooses itself: its 2 true ring neighbours on each side, and 2 shortcuts.
        assert {ordered[(rank[node] + step) % n] for step in (-2, -1, 1, 2)} == set(data["local"])
        assert len(data["shortcuts"]) == 2
        assert not set(data["shortcuts"]) & set(data["local"]) and node not in data["shortcuts"]
        # Its degree adds the links others chose of it.
        assert graph.degree[node] >= 6
    chosen = {frozenset((node, other)) for node, data in graph.nodes(data=True)
              for other in data["local"] + data["shortcuts"]}
    assert chosen == {frozenset(edge) for edge in graph.edges}
    links = analysis.link_stats(graph)
    assert links.chosen_per_node == 6
    assert links.total == graph.number_of_edges() and 3 * n <= links.total <= 6 * n
    degrees = analysis.degree_stats(graph)
    assert degrees.min >= 6 and sum(degrees.histogram.values()) == n
    assert degrees.mean == pytest.approx(links.per_node)


def test_overlay_is_deterministic() -> None:
    one = analysis.swarm_overlay(300, seed=5)
    two = analysis.swarm_overlay(300, seed=5)
    other = analysis.swarm_overlay(300, seed=6)
    assert sorted(one.edges) == sorted(two.edges)
    assert sorted(one.edges) != sorted(other.edges)


def test_path_length_grows_like_log_n(overlay_1000: nx.Graph) -> None:
    small, _ = analysis.characteristic_path_length(analysis.swarm_overlay(100, seed=0))
    large, _ = analysis.characteristic_path_length(overlay_1000)
    assert 2.0 < small < large < 5.0
    # L / ln N stays put: about 0.58 for harmonic shortcuts (ratio 1.5 for a tenfold N).
    assert (large / math.log(1000)) / (small / math.log(100)) == pytest.approx(1.0, abs=0.1)


def test_harmonic_shortcuts_make_greedy_routing_shorter() -> None:
    """Kleinberg (2000): shortcuts drawn ~ 1/distance make the ring navigable; uniform ones do not."""
    hops = {}
    for distribution in ("harmonic", "uniform"):
        graph = analysis.swarm_overlay(2000, distribution=distribution, seed=0)
        greedy = analysis.greedy_routing(graph, pairs=500, seed=0)
        assert greedy.failure_rate == 0.0  # the ring links always offer a nearer node
        hops[distribution] = greedy.mean_hops
    assert hops["harmonic"] < 0.8 * hops["uniform"]


def test_greedy_routing_on_a_lattice_advances_half_k_per_hop() -> None:
    graph = analysis.watts_strogatz(100, 10, 0.0)
    greedy = analysis.greedy_routing(graph, pairs=300, seed=1)
    rng = random.Random(1)
    expected = []
    for _ in range(300):
        s = rng.randrange(100)
        t = rng.randrange(99)
        t += 1 if t >= s else 0
        expected.append(math.ceil(min(abs(s - t), 100 - abs(s - t)) / 5))
    assert greedy.delivered == 300
    assert greedy.mean_hops == pytest.approx(sum(expected) / 300)
    assert greedy.max_hops == max(expected)


def test_greedy_routing_reports_stuck_messages() -> None:
    # A path 0-1-2 placed with 2 nearest to 0 on the ring: from 0, no neighbour is nearer to 2.
    graph = nx.path_graph(3)
    positions = {0: 0, 1: 1 << 62, 2: 1 << 40}
    greedy = analysis.greedy_routing(graph, pairs=50, seed=0, positions=positions)
    assert greedy.stuck > 0 and greedy.delivered + greedy.stuck == 50
    assert greedy.failure_rate == pytest.approx(greedy.stuck / 50)


def test_full_mesh_link_count() -> None:
    graph = analysis.full_mesh(1000)
    links = analysis.link_stats(graph)
    assert links.total == 1000 * 999 // 2 == 499_500
    assert links.per_node == 999
    assert analysis.path_stats(graph, sources=5).mean == 1.0


def test_random_regular_degree() -> None:
    degrees = analysis.degree_stats(analysis.random_regular(500, 8, seed=0))
    assert degrees.min == degrees.max == 8 and degrees.histogram == {8: 500}


def test_robustness_random_and_targeted() -> None:
    assert analysis.robustness(analysis.full_mesh(50), 0.9, seed=0) == 1.0
    assert analysis.robustness(analysis.full_mesh(10), 1.0) == 0.0
    # A star falls apart once its hub goes first; at random it usually survives a small crash.
    star = nx.star_graph(100)
    assert analysis.robustness(star, 0.01, targeted=True) == pytest.approx(1 / 100)
    overlay = analysis.swarm_overlay(1000, seed=0)
    assert analysis.robustness(overlay, 0.5, seed=0) > 0.9
    assert analysis.robustness(overlay, 0.9, seed=0) < 0.5


def test_flood_hops_are_breadth_first_distances() -> None:
    ldh, mean, reached = analysis.flood_hops(nx.cycle_graph(10), 0)
    assert (ldh, reached) == (5, 1.0)
    assert mean == pytest.approx((2 * (1 + 2 + 3 + 4) + 5) / 9)
    flood = analysis.flood_stats(nx.cycle_graph(10))
    assert flood.max_ldh == flood.mean_ldh == 5 and flood.sources == 10


# ---------------------------------------------------------------------------------- shortcut draws

def test_fast_sampler_draws_choose_shortcuts_distribution() -> None:
    """The sampler used above 2,000 nodes gives each node probability ~ 1/ring distance, as
    `ring.choose_shortcut` does: a chi-square test over 40,000 seeded draws."""
    n = 200
    positions = [position(f"node-{i}") for i in range(n)]
    order = sorted(range(n), key=lambda i: (positions[i], f"node-{i}"))
    sampler = analysis._ShortcutSampler(positions, order)
    rng = random.Random(0)
    node = 7
    draws = Counter(sampler.draw(node, order.index(node), set(), 1, "harmonic", rng)[0]
                    for _ in range(40_000))
    weights = {j: 1 / max(ring_distance(positions[node], positions[j]), 1) for j in range(n) if j != node}
    total = sum(weights.values())
    chi2 = sum((draws[j] - 40_000 * w / total) ** 2 / (40_000 * w / total) for j, w in weights.items())
    assert chi2 < 199 + 4 * math.sqrt(2 * 199)  # mean + 4 standard deviations of chi-square(199)


def test_fast_and_protocol_samplers_build_the_same_kind_of_overlay() -> None:
    for distribution in ("uniform", "harmonic"):
        fast = analysis.swarm_overlay(500, distribution=distribution, seed=1, sampler="fast")
        slow = analysis.swarm_overlay(500, distribution=distribution, seed=1, sampler="protocol")
        for graph in (fast, slow):
            assert all(len(data["shortcuts"]) == 2 for _, data in graph.nodes(data=True))
        locals_fast = [data["local"] for _, data in fast.nodes(data=True)]
        assert locals_fast == [data["local"] for _, data in slow.nodes(data=True)]
        assert analysis.path_stats(fast).mean == pytest.approx(analysis.path_stats(slow).mean, rel=0.05)


def test_bounded_view_draws_shortcuts_beyond_the_ring_neighbourhood() -> None:
    """The live protocol's shortcuts skip the nodes next to its ring links: under 1/distance weights
    those few would take nearly all the probability (docs/architecture.md, section 8)."""
    graph = analysis.swarm_overlay(1000, distribution="harmonic", seed=0, view="bounded")
    assert nx.is_connected(graph)
    ordered = sorted(graph.nodes, key=lambda i: graph.nodes[i]["position"])
    rank = {node: r for r, node in enumerate(ordered)}
    for node, data in graph.nodes(data=True):
        assert len(data["shortcuts"]) == 2
        for other in data["shortcuts"]:
            steps = abs(rank[node] - rank[other])
            assert min(steps, 1000 - steps) > 4


def test_analyse_at_a_glance() -> None:
    result = analysis.analyse(analysis.swarm_overlay(300, seed=0), greedy_pairs=200, crash=(0.2, 0.5))
    assert result.nodes == 300 and result.paths.exact and result.clustering_samples == 300
    assert result.greedy is not None and result.greedy.pairs == 200
    assert set(result.robustness) == {"random 20%", "targeted 20%", "random 50%", "targeted 50%"}
    assert result.as_dict()["links"]["chosen_per_node"] == 6
    assert analysis.analyse(analysis.random_regular(100, 4), greedy_pairs=10).greedy is None
