"""Regenerate every figure and table of docs/simulations.md from the scenario files beside this script.

    .venv/bin/python simulations/figures.py            # full: ~10 minutes on 2 cores
    .venv/bin/python simulations/figures.py --quick    # smaller runs, ~2 minutes, docs untouched
    .venv/bin/python simulations/figures.py --only ws crash

Each part reads its scenario file (`simulations/*.yml`, the same files `python -m swarm.simulate
--scenario FILE` takes) and runs it through `swarm.simulate`; the full run writes the PNGs into
docs/figures/ and rewrites the tables between the `<!-- figures:NAME:start/end -->` markers of
docs/simulations.md. `--quick` shrinks the runs (fewer seeds, smaller N, N = 1,000 instead of 10,000)
and writes its figures to a temporary folder unless `--out` says where; it never touches the docs.

Parts (`--only`):

* `ws`: `ws-sweep.yml`, Watts and Strogatz's sweep (n = 1000, k = 10, p log-spaced from 0.0001 to 1),
  L(p)/L(0) and C(p)/C(0) averaged over seeds (10; quick 2);
* `overlay`: `overlay.yml`, swarm's default overlay at N = 100, 1,000, 10,000 against a random regular
  graph of the same mean degree and the full mesh (measured at N = 100, by formula above: N - 1 links per
  node and one hop; its clustering alone would take minutes at N = 1,000);
* `crash`: `crash.yml`, protocol runs: 20%, 50%, 80% of the nodes crash, without and with repair;
* `partition`: `partition.yml`, a steady publisher while the cluster is cut in two and healed;
* `churn`: `churn.yml`, a steady publisher while nodes join and leave at a steady rate;
* `n10k`: `n10k-crash50.yml` and `n10k-crash80.yml`, the defaults at N = 10,000: hops, RMR, delivery after
  a 50% crash without repair and an 80% crash with repair.

Everything is seeded; like `python -m swarm.simulate`, the script fixes PYTHONHASHSEED (re-executing
itself) so that the same command gives the same figures and tables.
"""

from __future__ import annotations

import os
import sys

if __name__ == "__main__" and os.environ.get("PYTHONHASHSEED", "random") == "random":
    os.environ["PYTHONHASHSEED"] = "0"
    os.execv(sys.executable, [sys.executable, *sys.argv])

import argparse  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Iterable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from swarm.simulate import cli  # noqa: E402
from swarm.simulate.protocol import Simulation  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DOC = ROOT / "docs" / "simulations.md"
FIGURES = ROOT / "docs" / "figures"
PARTS = ("ws", "overlay", "crash", "partition", "churn", "n10k")
# Watts and Strogatz (1998) as ../shared/reference/small-world.md quotes them: p -> (L/L0, C/C0).
PAPER = {0.001: (0.52, 1.00), 0.01: (0.17, 0.97), 0.1: (0.09, 0.73), 1.0: (0.065, 0.014)}
# The check: p -> ((L/L0, tolerance), (C/C0, tolerance)).
MUST = {0.01: ((0.17, 0.03), (0.97, 0.02)), 0.1: ((0.09, 0.02), (0.73, 0.04))}


def log(text: str) -> None:
    print(f"[figures] {text}", file=sys.stderr, flush=True)


def settings(name: str, **overrides: Any) -> dict[str, Any]:
    """The settings of scenario `name` (validated by the simulator's own parser), with `overrides`."""
    values = cli.parse(["--scenario", str(HERE / name)])
    values.update(overrides)
    return values


def table(headers: list[str], rows: Iterable[list[Any]]) -> str:
    aligns = ["---"] + ["---:"] * (len(headers) - 1)
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join(aligns) + " |"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def pct(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{100 * value:.{digits}f}%"


def num(value: float, digits: int = 2) -> str:
    return f"{value:,.{digits}f}"


class Figure:
    """One matplotlib figure, saved without a timestamp or version (the same run gives the same PNG)."""

    def __init__(self, path: Path, panels: int = 1, width: float = 7.0) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        self.plt = plt
        self.path = path
        self.fig, axes = plt.subplots(1, panels, figsize=(width, 4.2))
        self.axes = list(axes) if panels > 1 else [axes]

    def save(self) -> None:
        for ax in self.axes:
            ax.grid(True, alpha=0.3)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=8)
        self.fig.tight_layout()
        self.fig.savefig(self.path, dpi=110, metadata={"Software": None})
        self.plt.close(self.fig)
        log(f"wrote {self.path}")


# ---------------------------------------------------------------------------------------------- ws

def part_ws(quick: bool, out: Path) -> dict[str, Any]:
    base = settings("ws-sweep.yml")
    seeds = [base["seed"] + k for k in range(2 if quick else 10)]
    ratios: dict[float, list[tuple[float, float]]] = {}
    lattice = None
    for seed in seeds:
        result = cli.run_config({**base, "seed": seed})
        lattice = result["lattice"]
        for entry in result["runs"]:
            ratios.setdefault(entry["value"], []).append((entry["L_ratio"], entry["C_ratio"]))
    ps = sorted(ratios)
    mean = {p: (statistics.mean(r[0] for r in ratios[p]), statistics.mean(r[1] for r in ratios[p]))
            for p in ps}
    assert lattice is not None
    fig = Figure(out / "ws-sweep.png")
    ax = fig.axes[0]
    ax.plot(ps, [mean[p][0] for p in ps], "o-", label="L(p) / L(0), swarm.simulate")
    ax.plot(ps, [mean[p][1] for p in ps], "s-", label="C(p) / C(0), swarm.simulate")
    ax.plot(list(PAPER), [v[0] for v in PAPER.values()], "kx", markersize=9, label="Watts & Strogatz 1998")
    ax.plot(list(PAPER), [v[1] for v in PAPER.values()], "kx", markersize=9)
    ax.set_xscale("log")
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("rewiring probability p")
    ax.set_ylabel("relative to the lattice (p = 0)")
    ax.set_title(f"Watts-Strogatz, n = {base['nodes']:,}, k = {base['k']}, mean of {len(seeds)} seeds",
                 fontsize=10)
    fig.save()
    rows = []
    for p in ps:
        near = min(PAPER, key=lambda q: abs(q - p))
        paper = PAPER[near] if abs(near - p) < 1e-9 else None
        check = ""
        if any(abs(q - p) < 1e-9 for q in MUST):
            (lt, ltol), (ct, ctol) = MUST[min(MUST, key=lambda q: abs(q - p))]
            ok = abs(mean[p][0] - lt) <= ltol and abs(mean[p][1] - ct) <= ctol
            check = f"{lt} ± {ltol}, {ct} ± {ctol}: {'yes' if ok else 'NO'}"
        if paper or check or p in (ps[0],):
            rows.append([f"{p:g}", f"{mean[p][0]:.3f}", f"{mean[p][1]:.3f}",
                         f"{paper[0]:g} / {paper[1]:g}" if paper else "", check])
    text = (f"n = {base['nodes']:,}, k = {base['k']}, {len(ps)} values of p, each the mean of {len(seeds)} "
            f"seeded graphs ({seeds[0]}..{seeds[-1]}); lattice L(0) = {lattice['L0']:.2f}, "
            f"C(0) = {lattice['C0']:.3f}; exact path lengths (every source).\n\n")
    text += table(["p", "L(p)/L(0)", "C(p)/C(0)", "paper L/L0 / C/C0", "issue's bound met"], rows)
    return {"table": text, "data": {str(p): mean[p] for p in ps}}


# ---------------------------------------------------------------------------------------------- overlay

def full_mesh(n: int) -> dict[str, Any]:
    """The full mesh by formula: every pair linked, every flood one hop."""
    return {"links": {"per_node": n - 1, "total": n * (n - 1) // 2}, "flood": {"mean_hops": 1.0,
            "mean_ldh": 1.0, "max_ldh": 1}, "clustering": 1.0, "robustness": {"random 50%": 1.0},
            "paths": {"exact": True, "sources": n}}


def part_overlay(quick: bool, out: Path) -> dict[str, Any]:
    base = settings("overlay.yml")
    swarm = cli.run_config(base)
    rows = []
    series: dict[str, list[tuple[int, dict[str, Any]]]] = {"swarm": [], "regular": [], "full": []}
    for entry in swarm["runs"]:
        n = entry["value"]
        a = entry["analysis"]
        degree = round(a["degree"]["mean"])
        if n * degree % 2:
            degree += 1
        regular = cli.run_graph({**base, "model": "regular", "nodes": n, "degree": degree})["analysis"]
        measured = n <= 100
        full = cli.run_graph({**base, "model": "full", "nodes": n})["analysis"] if measured else full_mesh(n)
        series["swarm"].append((n, a))
        series["regular"].append((n, regular))
        series["full"].append((n, full))
        how = "exact" if a["paths"]["exact"] else f"{a['paths']['sources']} sources"
        for label, r, note in (("swarm default", a, f"localLinks 4, shortcuts 2 (harmonic), {how}"),
                               (f"random {degree}-regular", regular, how),
                               ("full mesh", full, "measured" if measured else "by formula")):
            rows.append([f"{n:,}", label, f"{r['links']['per_node']:,.2f}", f"{r['links']['total']:,}",
                         f"{r['flood']['mean_hops']:.2f}", f"{r['flood']['mean_ldh']:.2f}",
                         str(r["flood"]["max_ldh"]), f"{r['clustering']:.3f}",
                         pct(r["robustness"]["random 50%"]), note])
    fig = Figure(out / "overlay.png", panels=2, width=10)
    hops, links = fig.axes
    for label, style in (("swarm", "o-"), ("regular", "s-"), ("full", "^-")):
        xs = [n for n, _ in series[label]]
        name = {"swarm": "swarm default", "regular": "random regular (same mean degree)",
                "full": "full mesh"}[label]
        line = hops.plot(xs, [r["flood"]["mean_hops"] for _, r in series[label]], style,
                         label=f"{name}: mean")
        hops.plot(xs, [r["flood"]["max_ldh"] for _, r in series[label]], style.replace("-", ":"),
                  color=line[0].get_color(), label=f"{name}: max")
        links.plot(xs, [r["links"]["per_node"] for _, r in series[label]], style, label=name)
    hops.set_xscale("log")
    hops.set_xlabel("nodes N")
    hops.set_ylabel("flood hops (breadth-first, equal latencies)")
    links.set_xscale("log")
    links.set_yscale("log")
    links.set_xlabel("nodes N")
    links.set_ylabel("links per node")
    fig.save()
    text = table(["N", "overlay", "links per node", "links in total", "mean flood hops", "mean LDH",
                  "max hops", "clustering C", "connected after 50% crash", "paths"], rows)
    return {"table": text,
            "data": {k: [(n, r["flood"], r["links"]) for n, r in v] for k, v in series.items()}}


# ---------------------------------------------------------------------------------------------- crash

def part_crash(quick: bool, out: Path) -> dict[str, Any]:
    base = settings("crash.yml", **({"nodes": 300} if quick else {}))
    result = cli.run_config(base)
    rows = []
    points: dict[bool, list[tuple[float, float]]] = {False: [(0.0, 1.0)], True: [(0.0, 1.0)]}
    reach: list[tuple[float, float]] = [(0.0, 1.0)]
    for entry in result["runs"]:
        share = entry["value"]
        phases = {ph.get("repair"): ph for ph in entry["phases"]}
        off, on = phases[False], phases[True]
        points[False].append((share, off["delivery"]))
        points[True].append((share, on["delivery"]))
        reach.append((share, off["reachable"]))
        rows.append([f"{share:.0%}", f"{off['live']:,}", pct(off["delivery"], 2), pct(off["reachable"], 2),
                     f"{off['hops_mean']:.2f} / {off['ldh']}", pct(on["delivery"], 2),
                     "-" if on["convergence_s"] is None else f"{on['convergence_s']:.2f}",
                     f"{on['hops_mean']:.2f} / {on['ldh']}", f"{on['rmr']:.2f}"])
    fig = Figure(out / "crash.png")
    ax = fig.axes[0]
    ax.plot(*zip(*points[False], strict=True), "o-", label="without repair (no dials after the crash)")
    ax.plot(*zip(*points[True], strict=True), "s-", label="with swarm's repair running")
    ax.plot(*zip(*reach, strict=True), "k:", label="publisher's component (no repair)")
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("share of nodes crashed (silently, at once)")
    ax.set_ylabel("delivery ratio to the survivors")
    ax.set_title(f"protocol simulation, N = {base['nodes']:,}, {base['messages']} broadcasts per point",
                 fontsize=10)
    fig.save()
    text = (f"N = {base['nodes']:,}, defaults (localLinks 4, shortcuts 2, failureTimeout 3 s), 5 ms links, "
            f"seed {base['seed']}; {base['messages']} broadcasts from node-0 per phase. Without repair the "
            f"broadcasts go out failureTimeout + 1 s after the crash; with repair, once the survivors' ring "
            f"is true again (that time is the \"repaired after\" column).\n\n")
    text += table(["crashed", "survivors", "delivery, no repair", "publisher's component",
                   "hops mean / max, no repair", "delivery, with repair", "repaired after (s)",
                   "hops mean / max, repaired", "RMR, repaired"], rows)
    return {"table": text, "data": result}


# ---------------------------------------------------------------------------------------------- timelines

class Recorder(Simulation):
    """A Simulation that keeps every broadcast it publishes (its expected receivers and deliveries)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.series: list[Any] = []

    def publish(self, origin: str, message: Any, expected: Iterable[str] | None = None) -> Any:
        record = super().publish(origin, message, expected)
        self.series.append(record)
        return record


def part_partition(quick: bool, out: Path) -> dict[str, Any]:
    base = settings("partition.yml", **({"nodes": 200} if quick else {}))
    params = cli._params(base)
    sim = Recorder(params)
    sim.bootstrap()
    net = sim.net
    origin = sim.names[0]
    live = sim.live()
    shuffled = list(live)
    sim.rng.shuffle(shuffled)
    groups = [set(shuffled[k::params.partition]) for k in range(params.partition)]
    groups.sort(key=lambda g: origin not in g)
    own, other = groups[0], set().union(*groups[1:])
    start = net.now
    lead = 2.0
    cut_at, heal_at = start + lead, start + lead + params.partition_time
    step = params.check_interval
    period = 1 / params.publish_rate
    next_publish = start
    split_at = merged_at = None
    cut = healed = False
    end = heal_at + params.converge_timeout
    whole = sim._truth(live)
    sides: dict[str, set[str]] = {}
    for group in groups:
        sides.update(sim._truth(sorted(group)))
    truth = whole
    on_ring: list[tuple[float, float]] = []

    def ring_share() -> float:
        """Share of the nodes whose local links are their true ring neighbours (per side while cut)."""
        good = 0
        for name, expected in truth.items():
            state = sim.state(name)
            good += {p for p in state.linked_peers if state.link_kind(p) == "local"} == expected
        return good / len(truth)

    while net.now < end:
        if not cut and net.now >= cut_at - 1e-9:
            net.partition([sorted(g) for g in groups])
            cut, truth = True, sides
        if not healed and net.now >= heal_at - 1e-9:
            on_ring.append((net.now - cut_at, ring_share()))
            net.heal()
            healed, truth = True, whole
        if cut and not healed and split_at is None and \
                sim.ring_mismatch(groups=[sorted(g) for g in groups]) is None:
            split_at = net.now - cut_at
        if healed and merged_at is None and sim.ring_mismatch() is None:
            merged_at = net.now - heal_at
            end = min(end, net.now + 5.0)
        if net.now >= next_publish - 1e-9:
            sim.publish(origin, {"t": round(net.now, 3)})
            on_ring.append((net.now - cut_at, ring_share()))
            next_publish += period
        net.run_until(net.now + step)
    net.run_until(net.now + params.drain)
    points = []
    for record in sim.series:
        t = record.published - cut_at
        across = record.expected & other
        within = record.expected & own
        points.append((t, len(across & record.got.keys()) / len(across) if across else 1.0,
                       len(within & record.got.keys()) / len(within) if within else 1.0))
    full_after = next((t for t, a, w in points if t >= params.partition_time and a == 1.0 and w == 1.0
                       and all(a2 == 1.0 for t2, a2, _ in points if t2 >= t)), None)
    fig = Figure(out / "partition.png")
    ax = fig.axes[0]
    ax.plot([p[0] for p in points], [p[1] for p in points], ".-", label="across the cut")
    ax.plot([p[0] for p in points], [p[2] for p in points], ".-", alpha=0.7, label="publisher's side")
    ax.plot([p[0] for p in on_ring], [p[1] for p in on_ring], "-", color="tab:gray", linewidth=1,
            label="nodes on their true ring (their side's while cut)")
    ax.axvline(0, color="k", linestyle="--", linewidth=1)
    ax.axvline(params.partition_time, color="k", linestyle="--", linewidth=1)
    ax.text(0.1, 0.5, "cut", fontsize=8)
    ax.text(params.partition_time + 0.1, 0.5, "heal", fontsize=8)
    if merged_at is not None:
        ax.axvline(params.partition_time + merged_at, color="tab:green", linestyle=":", linewidth=1)
        ax.text(params.partition_time + merged_at + 0.1, 0.3, "one ring", fontsize=8, color="tab:green")
    ax.set_ylim(-0.05, 1.05)
    ax.set_xlabel("seconds after the cut (simulated)")
    ax.set_ylabel("delivery ratio; share of nodes")
    ax.set_title(f"N = {params.nodes:,} cut into {params.partition} random halves for "
                 f"{params.partition_time:g} s, {params.publish_rate:g} msgs/s", fontsize=10)
    fig.save()

    def mean_of(selected: list[tuple[float, float, float]], index: int) -> str:
        return pct(statistics.mean(p[index] for p in selected), 1) if selected else "-"

    before = [p for p in points if p[0] < 0]
    during = [p for p in points if 0 <= p[0] < params.partition_time]
    after = [p for p in points if p[0] >= params.partition_time]
    rows = [["before the cut", len(before), mean_of(before, 1), mean_of(before, 2)],
            ["during the cut", len(during), mean_of(during, 1), mean_of(during, 2)],
            ["after the heal", len(after), mean_of(after, 1), mean_of(after, 2)]]
    text = (f"N = {params.nodes:,}, defaults (failureTimeout 3 s, forgetAfter 60 s), 5 ms links, seed "
            f"{params.seed}: node-0 publishes {params.publish_rate:g} messages a second; 2 s later the nodes "
            f"are cut into {params.partition} random groups of {len(own)} and {len(other)} for "
            f"{params.partition_time:g} s (traffic between them dropped, dials time out), then healed.\n\n")
    text += table(["broadcasts", "count", "delivery across the cut", "delivery on the publisher's side"],
                  rows)
    at_heal = next(share for t, share in on_ring if t >= params.partition_time)
    split = (f"each side had its own true ring {num(split_at)} s after the cut" if split_at is not None else
             f"neither side had become exactly its own true ring by the heal ({pct(at_heal)} of the nodes "
             f"had their side's true ring neighbours as local links)")
    text += (f"\nDuring the cut {split}. After the heal: one true ring again after "
             f"{'-' if merged_at is None else num(merged_at)} s (time to merge); every broadcast from "
             f"{'-' if full_after is None else num(full_after - params.partition_time)} s after the heal "
             f"on reached every node.\n")
    return {"table": text, "data": {"points": points, "split_s": split_at, "merged_s": merged_at,
                                    "on_ring": on_ring,
                                    "full_after_heal_s": None if full_after is None else
                                    full_after - params.partition_time}}


def part_churn(quick: bool, out: Path) -> dict[str, Any]:
    base = settings("churn.yml", **({"nodes": 200, "churn_time": 15.0} if quick else {}))
    params = cli._params(base)
    sim = Recorder(params)
    sim.bootstrap()
    origin = sim.names[0]
    start = sim.net.now
    founders = set(sim.names)
    phase = sim.churn_phase(origin)
    alive = set(sim.live())
    points = []
    for record in sim.series:
        targets = record.expected & alive
        points.append((record.published - start, len(targets & record.got.keys()) / len(targets)
                       if targets else 1.0, len(targets - founders)))
    fig = Figure(out / "churn.png")
    ax = fig.axes[0]
    ax.plot([p[0] for p in points], [p[1] for p in points], ".-", label="delivery ratio of each broadcast")
    ax.set_ylim(min(0.9, min(p[1] for p in points) - 0.02), 1.01)
    ax.set_xlabel("seconds of churn (simulated)")
    ax.set_ylabel("delivery ratio")
    twin = ax.twinx()
    twin.plot([p[0] for p in points], [p[2] for p in points], color="tab:gray", linewidth=1)
    twin.set_ylabel("receivers that joined during the churn", color="tab:gray")
    ax.set_title(f"N = {params.nodes:,}, {params.churn:g} joins or leaves per second, "
                 f"{params.publish_rate:g} msgs/s", fontsize=10)
    fig.save()
    ratios = [p[1] for p in points]
    rows = [[f"{params.churn:g}/s for {params.churn_time:g} s", phase["joined"], phase["left"],
             phase["broadcasts"], pct(phase["delivery"], 2), pct(min(ratios), 2),
             pct(sum(r == 1.0 for r in ratios) / len(ratios), 0),
             "-" if phase["convergence_s"] is None else num(phase["convergence_s"])]]
    text = (f"N = {params.nodes:,} (direct bootstrap), defaults, 5 ms links, seed {params.seed}: every "
            f"{1 / params.churn:g} s a node joins (real join, seeded with a random ready node) or a random "
            f"node leaves gracefully, alternately, while node-0 publishes {params.publish_rate:g} messages a "
            f"second. A broadcast's delivery counts the nodes ready when it was published and still there "
            f"at the end.\n\n")
    text += table(["churn", "joined", "left", "broadcasts", "delivery", "worst broadcast",
                   "broadcasts reaching all", "true ring after the churn (s)"], rows)
    return {"table": text, "data": {"points": points, "phase": phase}}


# ---------------------------------------------------------------------------------------------- n10k

def part_n10k(quick: bool, out: Path) -> dict[str, Any]:
    overrides = {"nodes": 1000} if quick else {}
    runs = {}
    for name in ("n10k-crash50.yml", "n10k-crash80.yml"):
        started = time.perf_counter()
        runs[name] = cli.run_config(settings(name, **overrides))
        runs[name]["wall_s"] = round(time.perf_counter() - started, 1)
        log(f"{name}: {runs[name]['wall_s']} s")
    first = runs["n10k-crash50.yml"]
    intact = first["phases"][0]
    no_repair = first["phases"][1]
    repaired = runs["n10k-crash80.yml"]["phases"][1]
    n = first["params"]["nodes"]
    boot = first["bootstrap"]
    rows = [
        ["links", f"{boot['links']:,} ({2 * boot['links'] / n:.2f} per node, degree {boot['degree_min']}-"
                  f"{boot['degree_max']})"],
        ["mean hops of a delivery", f"{intact['hops_mean']:.2f}"],
        ["max hops (LDH)", str(intact["ldh"])],
        ["RMR", f"{intact['rmr']:.2f}"],
        ["DATA frames sent per node per broadcast", f"{intact['payload_per_node']['mean']:.2f}"],
        ["latency p50 / p99 / max (5 ms links)", f"{intact['latency_ms']['p50']:g} / "
                                                 f"{intact['latency_ms']['p99']:g} / "
                                                 f"{intact['latency_ms']['max']:g} ms"],
        ["delivery after a 50% crash, no repair", f"{pct(no_repair['delivery'], 2)} (publisher's component "
                                                  f"{pct(no_repair['reachable'], 2)}; hops mean "
                                                  f"{no_repair['hops_mean']:.2f}, max {no_repair['ldh']})"],
        ["delivery after an 80% crash, with repair", f"{pct(repaired['delivery'], 2)} (ring repaired after "
                                                     f"{repaired['convergence_s']} s; hops mean "
                                                     f"{repaired['hops_mean']:.2f}, max {repaired['ldh']}, "
                                                     f"RMR {repaired['rmr']:.2f})"],
    ]
    text = (f"Protocol simulation, N = {n:,}, swarm's defaults (localLinks 4, shortcuts 2 harmonic, "
            f"failureTimeout 3 s), 5 ms links, seed {first['params']['seed']}, direct bootstrap, one "
            f"broadcast from node-0 per phase; wall time {runs['n10k-crash50.yml']['wall_s']} s and "
            f"{runs['n10k-crash80.yml']['wall_s']} s on this machine.\n\n")
    text += table(["measure", "value"], rows)
    return {"table": text, "data": {k: {"phases": v["phases"], "bootstrap": v["bootstrap"]}
                                    for k, v in runs.items()}}


# ---------------------------------------------------------------------------------------------- main

RUNNERS: dict[str, Callable[[bool, Path], dict[str, Any]]] = {
    "ws": part_ws, "overlay": part_overlay, "crash": part_crash, "partition": part_partition,
    "churn": part_churn, "n10k": part_n10k}


def update_doc(path: Path, tables: dict[str, str]) -> None:
    text = path.read_text(encoding="utf-8")
    for name, body in tables.items():
        pattern = re.compile(rf"(<!-- figures:{name}:start -->\n).*?(<!-- figures:{name}:end -->)", re.DOTALL)
        if not pattern.search(text):
            raise SystemExit(f"{path}: no <!-- figures:{name}:start/end --> markers")
        text = pattern.sub(lambda m, body=body: m.group(1) + body + m.group(2), text)
    path.write_text(text, encoding="utf-8")
    log(f"tables {', '.join(tables)} written into {path}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller runs (~2 minutes); docs untouched")
    parser.add_argument("--only", nargs="+", choices=PARTS, default=list(PARTS), help="run only these parts")
    parser.add_argument("--out", type=Path, help="folder for the PNGs (default docs/figures; --quick: a "
                                                 "temporary folder)")
    parser.add_argument("--no-docs", action="store_true", help="do not rewrite docs/simulations.md's tables")
    parser.add_argument("--json", type=Path, help="also write every result as JSON to this file")
    args = parser.parse_args(argv)
    out = args.out or (Path(tempfile.gettempdir()) / "swarm-figures-quick" if args.quick else FIGURES)
    out.mkdir(parents=True, exist_ok=True)
    tables: dict[str, str] = {}
    results: dict[str, Any] = {}
    started = time.perf_counter()
    for name in args.only:
        began = time.perf_counter()
        log(f"{name} ...")
        result = RUNNERS[name](args.quick, out)
        tables[name] = result["table"]
        results[name] = result["data"]
        log(f"{name}: {time.perf_counter() - began:.1f} s")
        print(f"\n## {name}\n\n{result['table']}", flush=True)
    if not args.quick and not args.no_docs:
        update_doc(DOC, tables)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str), encoding="utf-8")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    log(f"done in {time.perf_counter() - started:.0f} s, peak memory {peak:.0f} MB; figures in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
