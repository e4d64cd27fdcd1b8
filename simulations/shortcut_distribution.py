"""Which `shortcutDistribution` should be swarm's default: uniform or harmonic shortcuts, measured.

Builds swarm's overlay (`swarm.topology.analysis.swarm_overlay`, localLinks = 4, shortcuts = 2) at
N = 100, 1,000 and 10,000 with each distribution and measures what each kind of traffic depends on:

* broadcasts flood every link, so they need short paths: mean hops of a delivery (the characteristic path
  length L of Watts and Strogatz 1998) and the last delivery hop (LDH, the source's eccentricity);
* direct messages are routed greedily along the ring (`sendDirect`), which Kleinberg (2000) showed needs
  shortcuts drawn with probability ~ 1/distance (harmonic) to find short paths: mean and max hops, and
  the share that fails (stuck, or over the protocol's 64-hop limit);
* robustness without repair: the share of survivors still connected after 50% of the nodes crash;
* the share of shortcuts that land at most 4 places along the ring (next to the ring links: no shortcut).

Two views are compared. `full`: each node draws its shortcuts from every other node, the idealised
overlay. `bounded`: from what the live protocol's view holds once converged (its ring neighbourhood, the
2 * per_side nearest nodes on each side, plus a reserve of 32 random nodes), through `SmallWorld.wanted`
itself, which draws from beyond the ring neighbourhood.

    .venv/bin/python simulations/shortcut_distribution.py   # prints a markdown table, ~1 minute

Every figure is the mean over `--seeds` overlays (max columns: the max), each seeded: the same command
prints the same table.
"""

from __future__ import annotations

import argparse
import sys
import time

from swarm.topology import analysis

DISTRIBUTIONS = ("uniform", "harmonic")
VIEWS = ("full", "bounded")
NEAR = 4  # a shortcut to a node at most this many places along the ring is hardly a shortcut


def measure(n: int, distribution: str, view: str, seeds: int, sources: int, pairs: int,
            crashes: int) -> dict[str, float]:
    rows = []
    for seed in range(seeds):
        graph = analysis.swarm_overlay(n, local_links=4, shortcuts=2, distribution=distribution, seed=seed,
                                       view=view)
        # Exact paths up to analysis.PATH_EXACT_LIMIT nodes, `sources` sampled sources above.
        result = analysis.analyse(graph, sources=None if n <= analysis.PATH_EXACT_LIMIT else sources,
                                  greedy_pairs=pairs, crash=(), seed=seed)
        survived = [analysis.robustness(graph, 0.5, seed=1000 * seed + trial) for trial in range(crashes)]
        assert result.greedy is not None
        ordered = sorted(graph.nodes, key=lambda node: graph.nodes[node]["position"])
        rank = {node: r for r, node in enumerate(ordered)}
        steps = [abs(rank[node] - rank[other]) for node, data in graph.nodes(data=True)
                 for other in data["shortcuts"]]
        rows.append({
            "near": sum(min(step, n - step) <= NEAR for step in steps) / len(steps),
            "L": result.paths.mean, "sources": result.paths.sources, "ldh_mean": result.flood.mean_ldh,
            "ldh_max": result.flood.max_ldh, "greedy_mean": result.greedy.mean_hops,
            "greedy_max": result.greedy.max_hops, "greedy_fail": result.greedy.failure_rate,
            "crash50": sum(survived) / len(survived),
        })
    mean = {key: sum(row[key] for row in rows) / len(rows) for key in rows[0]}
    mean["ldh_max"] = max(row["ldh_max"] for row in rows)
    mean["greedy_max"] = max(row["greedy_max"] for row in rows)
    return mean


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 10_000])
    parser.add_argument("--seeds", type=int, default=3, help="overlays per configuration (default 3)")
    parser.add_argument("--sources", type=int, default=500,
                        help="flood sources per overlay above 2,000 nodes; all nodes up to (default 500)")
    parser.add_argument("--pairs", type=int, default=2000, help="greedy routes per overlay (default 2000)")
    parser.add_argument("--crashes", type=int, default=5, help="random 50%% crashes per overlay (default 5)")
    args = parser.parse_args(argv)
    print("| N | shortcuts | view | L (mean flood hops) | LDH mean / max | greedy hops mean / max "
          "| greedy failures | connected after 50% crash | shortcuts within 4 places |")
    print("|---:|---|---|---:|---:|---:|---:|---:|---:|")
    for n in args.sizes:
        for view in VIEWS:
            for distribution in DISTRIBUTIONS:
                started = time.perf_counter()
                m = measure(n, distribution, view, args.seeds, args.sources, args.pairs, args.crashes)
                print(f"{distribution:>8} {view:>7} N={n}: {time.perf_counter() - started:.1f} s",
                      file=sys.stderr)
                sampled = "" if m["sources"] >= n else f" ({int(m['sources'])} sources)"
                print(f"| {n:,} | {distribution} | {view} | {m['L']:.2f}{sampled} "
                      f"| {m['ldh_mean']:.2f} / {m['ldh_max']:.0f} "
                      f"| {m['greedy_mean']:.1f} / {m['greedy_max']:.0f} | {m['greedy_fail']:.1%} "
                      f"| {m['crash50']:.1%} | {m['near']:.0%} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
