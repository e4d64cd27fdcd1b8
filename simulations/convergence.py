"""How long a cluster of N nodes started together takes to find its true ring, measured in simulation.

Issue 3: "In simulation, the number of gossip rounds needed grows about logarithmically with N; show it."

This drives the real protocol core (`swarm.protocol.state.NodeState`) through the deterministic in-memory
network of `tests/memnet.py`, which is why the script puts `tests/` on `sys.path` (nothing is copied).
For each N it starts N nodes at once (default options: localLinks 4, shortcuts 2, gossipInterval 0.5 s;
one-way latency 1 ms) and runs the virtual clock until every node's "local" links (`status()` link
kinds) are its k true ring neighbours, computed from all names with `ring.nearest_per_side`. Two ways
of seeding:

* `one-seed`: every node but the first is seeded with the first node (how `swarm node` processes are
  usually started);
* `tree`: node i is seeded with a random earlier node (a random tree of seeds: nobody knows more than
  one address, and most never hear of the first node directly).

Columns: simulated time to the true ring, the same in gossip rounds (time / gossipInterval) and in round
trips (time / 2 x latency: the number of exchange steps, since a node answers a new link at once with
what it knows nearest the peer, T-Man's exchange, instead of waiting for its next round), the largest
link count and view size seen, and the events simulated. Then least-squares fits of the rounds against
log2 N and against N.

    .venv/bin/python simulations/convergence.py              # about a minute
    .venv/bin/python simulations/convergence.py --sizes 16 32 64 --scenarios tree --seeds 3

Each run is seeded: the same command prints the same table.
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from memnet import MemNet  # noqa: E402  (tests/memnet.py: the deterministic in-memory network)

from swarm.protocol.state import CoreConfig  # noqa: E402
from swarm.topology import ring  # noqa: E402

SCENARIOS = ("one-seed", "tree")
# N = 512 with one seed simulates ~10 million events (every node dials the one seed at once, and the
# seed tells everyone about everyone): over a minute on its own. The tree scenario runs it.
DEFAULT_SIZES = {"one-seed": (16, 32, 64, 128, 256), "tree": (16, 32, 64, 128, 256, 512)}


def true_local(names: list[str], per_side: int) -> dict[str, set[str]]:
    positions = {name: ring.position(name) for name in names}
    return {name: set(ring.nearest_per_side(positions[name], [(other, positions[other]) for other in names
                                                              if other != name], per_side))
            for name in names}


def run(n: int, scenario: str, seed: int, latency: float, timeout: float) -> dict[str, float]:
    """Start `n` nodes; return the time they took to reach the true ring and what it cost."""
    net = MemNet(seed=seed, latency=latency, trace=False, event_limit=100_000_000)
    names = [f"node{i:04d}" for i in range(n)]
    truth = true_local(names, max(1, CoreConfig.local_links // 2))
    choose = random.Random(seed)
    for i, name in enumerate(names):
        if i == 0:
            seeds: list[str] = []
        elif scenario == "one-seed":
            seeds = [names[0]]
        else:
            seeds = [names[choose.randrange(i)]]
        net.add_node(name, seeds=seeds)
    peak_links = peak_view = 0

    def converged() -> bool:
        nonlocal peak_links, peak_view
        for name in names:
            state = net.state(name)
            peak_links = max(peak_links, len(state.linked_peers))
            peak_view = max(peak_view, state.status()["view_size"])
        for name in names:
            details = net.state(name).status()["link_details"]
            if {link["name"] for link in details if link["kind"] == "local"} != truth[name]:
                return False
        return True

    started = time.perf_counter()
    if not net.run_until_true(converged, timeout, step=latency / 2):
        raise SystemExit(f"N={n} {scenario} seed {seed}: no true ring within {timeout}s of simulated time")
    return {"time": net.now, "peak_links": peak_links, "peak_view": peak_view, "events": net.events,
            "wall": time.perf_counter() - started}


def fit(xs: list[float], ys: list[float]) -> tuple[float, float, float]:
    """Least squares y = a + b x: (a, b, R^2)."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    b = sxy / sxx if sxx else 0.0
    a = my - b * mx
    ss_tot = sum((y - my) ** 2 for y in ys)
    ss_res = sum((y - a - b * x) ** 2 for x, y in zip(xs, ys, strict=True))
    return a, b, (1 - ss_res / ss_tot) if ss_tot else 1.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", help="cluster sizes (default: per scenario)")
    parser.add_argument("--scenarios", nargs="+", choices=SCENARIOS, default=list(SCENARIOS))
    parser.add_argument("--seeds", type=int, default=1, help="runs per size (mean reported)")
    parser.add_argument("--latency", type=float, default=0.001, help="one-way latency, s (default 1 ms)")
    parser.add_argument("--timeout", type=float, default=60.0, help="simulated seconds before giving up")
    args = parser.parse_args(argv)
    gossip = CoreConfig.gossip_interval
    rtt = 2 * args.latency
    slowest = 0.0
    for scenario in args.scenarios:
        sizes = args.sizes or DEFAULT_SIZES[scenario]
        print(f"\n## {scenario}: N nodes started together, latency {args.latency * 1000:g} ms, "
              f"gossipInterval {gossip:g} s, {args.seeds} run(s) per N\n")
        print("| N | log2 N | time to true ring (s) | gossip rounds | round trips | peak links | peak view "
              "| events | wall (s) |")
        print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        xs: list[float] = []
        rounds: list[float] = []
        trips: list[float] = []
        for n in sizes:
            results = [run(n, scenario, seed, args.latency, args.timeout)
                       for seed in range(1, args.seeds + 1)]
            mean = {key: sum(r[key] for r in results) / len(results) for key in results[0]}
            xs.append(n)
            rounds.append(mean["time"] / gossip)
            trips.append(mean["time"] / rtt)
            print(f"| {n} | {math.log2(n):.0f} | {mean['time']:.4f} | {mean['time'] / gossip:.3f} "
                  f"| {mean['time'] / rtt:.1f} | {max(r['peak_links'] for r in results)} "
                  f"| {max(r['peak_view'] for r in results)} | {mean['events']:,.0f} | {mean['wall']:.1f} |",
                  flush=True)
        logs = [math.log2(x) for x in xs]
        a, b, r2 = fit(logs, rounds)
        la, lb, lr2 = fit(xs, rounds)
        ta, tb, tr2 = fit(logs, trips)
        print(f"\nfit rounds = {a:.3f} + {b:.4f} * log2 N   (R^2 = {r2:.3f})")
        print(f"fit rounds = {la:.3f} + {lb:.6f} * N        (R^2 = {lr2:.3f}, linear growth for comparison)")
        print(f"fit round trips = {ta:.2f} + {tb:.2f} * log2 N   (R^2 = {tr2:.3f})")
        print(f"rounds({xs[-1]}) / rounds({xs[0]}) = {rounds[-1] / rounds[0]:.2f} for N x {xs[-1] // xs[0]}")
        slowest = max(slowest, *rounds)
    if slowest < 1:
            print("\nEvery run converged in under one gossip round: joining is driven by the exchange a node "
              "makes on each new link\n(and a new link is announced to the existing peers at once), not by "
              "the periodic rounds, which then only keep\nthe ring true. The round trips column counts those "
              "exchange steps.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
