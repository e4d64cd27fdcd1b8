"""TLS and signing cost: throughput from 1 publisher to 1 subscriber node process, plaintext, TLS, and
TLS with signed origins, in one run; and the latency between the two neighbours at a fixed rate.

    .venv/bin/python benchmarks/tls_cost.py [--messages N] [--size BYTES ...] [--rounds R]
                                            [--modes plain tls signed] [--rate R] [--json FILE]

What it measures, for each `--size` (payload bytes per message, as the demo's `--size`):

* two swarm nodes, each its own OS process (`python -m swarm _demo-node`, the demo's node, see
  `swarm.harness`), on 127.0.0.1 with ephemeral ports: node-0 publishes `--messages` messages as fast as
  flow control allows (`--burst` messages, then `await conn.drain()`), node-1 subscribes and counts
  what arrives (lost, duplicated, out of order) and when the first and the last message came; its rate
  is delivered / (last - first);
* **plain**: the nodes without the `tls` option; **tls**: the same nodes with mutual TLS 1.3 (EC P-256
  certificates made for this run by `swarm.certs` in a temporary directory, removed at the end) and
  `signOrigins: false` (links encrypted, origins not signed: protocol 3's trust); **signed**: TLS with
  `signOrigins: true`, the default (every frame signed by its origin, checked by the subscriber);
* `--rounds` rounds of each, alternating (plain, tls, signed, plain, ...), so that a change in the
  machine's load hits all alike; every round starts fresh processes.

The figures are **tls / plain** and **signed / tls** (what signing and checking cost on top of TLS: issue
15's targets are >= 0.90 at 100 B and >= 0.95 at 1 KiB): median rates over median rates. Absolute rates
move with the machine's load; the ratios are the figures to compare. Then, unless `--rate 0`, a latency
phase: the same two nodes, tls and signed alternating, the publisher at `--rate` messages per second
(absolute schedule), 100-byte messages, and the subscriber's p50/p99 publish->delivery latency; the
figure is signed p50 - tls p50 in microseconds (target: <= 50 us), one signature and one check per frame
(at a low rate, every message is a frame of its own). A readable table goes to stdout, progress to
stderr, `--json FILE` writes every figure. Exit status: 0 when nothing was lost, duplicated or reordered,
1 otherwise or on failure, 130 when interrupted. Every process started is stopped (`swarm.harness.supervise`).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import common

from swarm import certs, harness

NAMES = ("node-0", "node-1")
PUBLISHER, SUBSCRIBER = NAMES


MODES = ("plain", "tls", "signed")


async def start_node(children: list[harness.Child], name: str, seeds: list[str],
                     tls_dir: Path | None, signed: bool = True) -> harness.Child:
    command = [sys.executable, "-m", "swarm", "_demo-node", "--peers", "1",
               "--option", f"serverName={name}", "--option", "port=0", "--option", "host=127.0.0.1",
               "--option", f"clusterName=tls-cost-{os.getpid()}"]
    if seeds:
        command += ["--option", "seedNodes=" + ",".join(seeds)]
    if tls_dir is not None:
        command += ["--option", f"tls.ca={tls_dir / certs.CA_CERT}",
                    "--option", f"tls.cert={tls_dir / name}.pem", "--option", f"tls.key={tls_dir / name}.key",
                    "--option", f"signOrigins={'true' if signed else 'false'}"]
    return await harness.start_process(children, name, command)


async def run_round(children: list[harness.Child], tls_dir: Path, mode: str, messages: int, size: int,
                    burst: int, rate: float = 0.0) -> dict[str, Any]:
    """One round: start both nodes, publish, collect the subscriber's result, stop them."""
    directory = None if mode == "plain" else tls_dir
    publisher = await start_node(children, PUBLISHER, [], directory, mode == "signed")
    seed = (await publisher.expect("listening")).split()[1]
    await start_node(children, SUBSCRIBER, [seed], directory, mode == "signed")
    await harness.await_all(children, "ready")
    await harness.await_all(children, "linked")
    command = json.dumps({"publishers": [PUBLISHER], "messages": messages, "size": size, "rate": rate,
                          "burst": burst})
    for child in children:
        await child.send("start " + command)
    answers = await harness.await_all(children, "result")
    for child in children:
        await child.send("stop")
    result = json.loads(answers[SUBSCRIBER])
    first, last = result["first_ns"], result["last_ns"]
    seconds = (last - first) / 1e9 if first is not None and last is not None and last > first else math.nan
    return {"expected": result["expected"], "delivered": result["delivered"],
            "lost": result["expected"] - result["delivered"], "duplicates": result["duplicates"],
            "out_of_order": result["out_of_order"], "seconds": seconds,
            "msgs_per_s": result["delivered"] / seconds if seconds > 0 else math.nan,
            "p50_ms": result["p50_ms"], "p99_ms": result["p99_ms"],
            "publisher_counters": json.loads(answers[PUBLISHER])["counters"],
            "subscriber_counters": result.get("counters", {})}


def median(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return statistics.median(finite) if finite else math.nan


def format_report(report: dict[str, Any]) -> str:
    lines = [f"{'size':>6}  {'mode':<6}{'round':>6}  {'msgs/s':>10}  {'delivered/expected':>19}  "
             f"{'lost':>5} {'dup':>5} {'ooo':>5}  {'p50 ms':>7}"]
    lines.append("-" * len(lines[0]))
    for run in report["runs"]:
        for entry in run["rounds"]:
            figures = entry["figures"]
            lines.append(f"{run['size']:>6}  {entry['mode']:<6}{entry['round']:>6}  "
                         f"{figures['msgs_per_s']:>10,.0f}  "
                         f"{figures['delivered']:>9}/{figures['expected']:<9}  {figures['lost']:>5} "
                         f"{figures['duplicates']:>5} {figures['out_of_order']:>5}  "
                         f"{figures['p50_ms']:>7.1f}")
        medians = ", ".join(f"{mode} {run[f'{mode}_msgs_per_s']:,.0f}/s" for mode in report["modes"])
        ratios = ", ".join(f"{name} = {value:.3f}" for name, value in run["ratios"].items())
        lines.append(f"{'':>6}  median: {medians}  ->  {ratios}")
        lines.append("")
    latency = report.get("latency")
    if latency:
        lines.append(f"latency at {latency['rate']:g} msgs/s, {latency['size']} B, subscriber p50/p99 ms:")
        for entry in latency["rounds"]:
            figures = entry["figures"]
            lines.append(f"  {entry['mode']:<7} round {entry['round']}: {figures['p50_ms']:.3f} / "
                         f"{figures['p99_ms']:.3f}")
        rise = latency["p50_rise_us"]
        lines.append(f"  median p50: tls {latency['tls_p50_ms']:.3f} ms, signed "
                     f"{latency['signed_p50_ms']:.3f} ms  ->  signed - tls = {rise:+.0f} us")
    return "\n".join(lines).rstrip()


def clean(report: dict[str, Any]) -> bool:
    return all(entry["figures"]["lost"] == 0 and entry["figures"]["duplicates"] == 0
               and entry["figures"]["out_of_order"] == 0
               for run in report["runs"] + [report.get("latency") or {"rounds": []}]
               for entry in run["rounds"])



async def benchmark(args: argparse.Namespace) -> int:
    modes = [mode for mode in MODES if mode in args.modes]
    report: dict[str, Any] = common.header("tls_cost", {
        "messages": args.messages, "sizes": args.size, "rounds": args.rounds, "burst": args.burst,
        "processes": "1 publisher + 1 subscriber node process", "key": "EC P-256, TLS 1.3",
        "rate": args.rate})
    report["runs"], report["modes"] = [], modes

    async def one(label: str, mode: str, size: int, messages: int, rate: float) -> dict[str, Any] | None:
        common.progress(f"{label} ...")
        started = time.monotonic()
        interrupted, figures = await harness.supervise(
            lambda children: run_round(children, tls_dir, mode, messages, size, args.burst, rate),
            args.timeout)
        if interrupted:
            return None
        common.progress(f"{label}: {figures['msgs_per_s']:,.0f} msgs/s, p50 {figures['p50_ms']:.3f} ms "
                        f"({time.monotonic() - started:.1f} s)")
        return figures

    with tempfile.TemporaryDirectory(prefix="swarm-tls-cost-") as temporary:
        tls_dir = Path(temporary)
        certs.init(tls_dir)
        for name in NAMES:
            certs.issue(tls_dir, name)
        try:
            for size in args.size:
                run: dict[str, Any] = {"size": size, "rounds": []}
                for number in range(1, args.rounds + 1):
                    for mode in modes:
                        figures = await one(f"size {size}, {mode}, round {number}/{args.rounds}", mode, size,
                                            args.messages, 0.0)
                        if figures is None:
                            common.progress("tls_cost: interrupted; every process was stopped")
                            return 130
                        run["rounds"].append({"mode": mode, "round": number, "figures": figures})
                for mode in modes:
                    rates = [e["figures"]["msgs_per_s"] for e in run["rounds"] if e["mode"] == mode]
                    run[f"{mode}_msgs_per_s"] = median(rates)
                run["ratios"] = {f"{a} / {b}": run[f"{a}_msgs_per_s"] / run[f"{b}_msgs_per_s"]
                                 for a, b in (("tls", "plain"), ("signed", "tls"))
                                 if a in modes and b in modes}
                report["runs"].append(run)
            if args.rate > 0 and {"tls", "signed"} <= set(modes):
                latency: dict[str, Any] = {"rate": args.rate, "size": 100, "rounds": []}
                count = max(int(args.rate * args.latency_seconds), 200)
                for number in range(1, args.rounds + 1):
                    for mode in ("tls", "signed"):
                        figures = await one(f"latency, {mode}, round {number}/{args.rounds}", mode, 100,
                                            count, args.rate)
                        if figures is None:
                            common.progress("tls_cost: interrupted; every process was stopped")
                            return 130
                        latency["rounds"].append({"mode": mode, "round": number, "figures": figures})
                for mode in ("tls", "signed"):
                    latency[f"{mode}_p50_ms"] = median([e["figures"]["p50_ms"] for e in latency["rounds"]
                                                        if e["mode"] == mode])
                latency["p50_rise_us"] = (latency["signed_p50_ms"] - latency["tls_p50_ms"]) * 1000
                report["latency"] = latency
        except BaseException as raised:  # noqa: B036 - re-raised unless the run failed in a known way
            reason = common.failure(raised, args.timeout, "a round")
            common.progress(f"tls_cost: error: {reason}; every process was stopped")
            return 1
    print(format_report(report), flush=True)
    if args.json:
        common.write_report(args.json, report)
    if clean(report):
        return 0
    common.progress("tls_cost: FAILED: messages were lost, duplicated or reordered")
    return 1







def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tls_cost.py", description=__doc__.split("\n\n", 1)[0],
        epilog="See benchmarks/README.md for what is measured and how to read it.")
    parser.add_argument("--messages", type=common.positive_int, default=50_000, metavar="N",
                        help="messages published per round (default: 50000)")
    parser.add_argument("--size", type=common.non_negative_int, nargs="+", default=[100, 1024],
                        metavar="BYTES",
                        help="payload bytes per message; several values run one after another "
                             "(default: 100 1024)")
    parser.add_argument("--rounds", type=common.positive_int, default=3, metavar="R",
                        help="rounds of each mode per size, alternating (default: 3)")
    parser.add_argument("--burst", type=common.positive_int, default=harness.BATCH, metavar="N",
                        help=f"messages published between two drain() calls (default: {harness.BATCH})")
    parser.add_argument("--timeout", type=common.positive_seconds, default=60.0, metavar="SECONDS",
                        help="seconds one round may take (default: 60)")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES),
                        help="which of plain, tls, signed to run (default: all three)")
    parser.add_argument("--rate", type=common.number_type(float, "a number", 0), default=500.0, metavar="R",
                        help="messages per second of the latency phase; 0 skips it (default: 500)")
    parser.add_argument("--latency-seconds", type=common.positive_seconds, default=6.0, metavar="S",
                        help="seconds of publishing per latency round (default: 6)")
    parser.add_argument("--json", metavar="FILE", help="also write every figure to FILE as JSON")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return common.run(benchmark, args, "tls_cost")


if __name__ == "__main__":
    sys.exit(main())
