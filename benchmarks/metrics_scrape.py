"""Scraping must not slow the hot path: delivery with and without a Prometheus scraper polling every node.

    .venv/bin/python benchmarks/metrics_scrape.py [--nodes 4] [--messages 20000] [--size 100]
                                                  [--rate 0] [--interval 0.1] [--rounds 2] [--json FILE]

Every node runs with `metrics: 127.0.0.1:0` (`swarm/transport/metrics.py`). In each round a cluster of
`--nodes` demo nodes (`python -m swarm _demo-node`, `swarm.harness`) is started, node-0 publishes
`--messages` messages (`--rate` 0: as fast as `drain()` allows), and the others count what they get.
Rounds alternate *without* a scraper and *with* one that GETs `/metrics` from every node every
`--interval` seconds (Prometheus's default is 15 s: 100 ms is 150 times as often), parsing each answer
with `prometheus_client.parser`. Reported per phase, as medians over the rounds: the subscribers' mean
rate (delivered / (last - first arrival)), their p50/p99 latency, losses, and the scrapes made; and the
ratio with / without. The metrics are read from `status()` when scraped, so the figure to expect is a
ratio of about 1; what a scrape costs is the node's status snapshot, once per scrape.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import sys
from typing import Any

import common
import trio
from prometheus_client.parser import text_string_to_metric_families

from swarm import harness
from swarm.config import parse_address


async def _scrape(address: tuple[str, int]) -> bool:
    stream = await trio.open_tcp_stream(*address)
    async with stream:
        await stream.send_all(b"GET /metrics HTTP/1.0\r\n\r\n")
        data = b""
        while chunk := await stream.receive_some(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    families = list(text_string_to_metric_families(body.decode()))
    return head.split()[1] == b"200" and bool(families)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _metrics(endpoint: tuple[str, int]) -> str:
    return f"metrics={endpoint[0]}:{endpoint[1]}"


async def _round(args: argparse.Namespace, scrape: bool) -> dict[str, Any]:
    async def work(children: list[harness.Child]) -> dict[str, Any]:
        names = [f"node-{i}" for i in range(args.nodes)]
        endpoints = [("127.0.0.1", _free_port()) for _ in names]  # (a node's status over the wire
        # does not say where its metrics are: the parent picks the ports)
        first = await harness.start_node(children, names[0], [], 1, "WARNING", [_metrics(endpoints[0])])
        seed = (await first.expect("listening")).split()[1]
        addresses = {names[0]: parse_address(seed)}
        for name, endpoint in zip(names[1:], endpoints[1:], strict=True):
            child = await harness.start_node(children, name, [seed], 1, "WARNING", [_metrics(endpoint)])
            addresses[name] = parse_address((await child.expect("listening")).split()[1])
        await harness.await_all(children, "ready")
        await harness.await_all(children, "linked")
        await harness.wait_converged(addresses)
        scrapes = {"ok": 0, "failed": 0}

        async def scraper() -> None:
            while True:
                for endpoint in endpoints:
                    scrapes["ok" if await _scrape(endpoint) else "failed"] += 1
                await trio.sleep(args.interval)

        command = json.dumps({"publishers": [names[0]], "messages": args.messages, "size": args.size,
                              "rate": args.rate, "burst": harness.BATCH})
        async with trio.open_nursery() as nursery:
            if scrape:
                nursery.start_soon(scraper)
            for child in children:
                await child.send("start " + command)
            answers = await harness.await_all(children, "result")
            nursery.cancel_scope.cancel()
        for child in children:
            await child.send("stop")
        results = [json.loads(answers[name]) for name in names[1:]]
        rates = [r["delivered"] / max((r["last_ns"] - r["first_ns"]) / 1e9, 1e-9) for r in results]
        return {"rate": statistics.mean(rates), "p50_ms": statistics.median(r["p50_ms"] for r in results),
                "p99_ms": max(r["p99_ms"] for r in results),
                "lost": sum(r["expected"] - r["delivered"] for r in results), "scrapes": scrapes}

    interrupted, result = await harness.supervise(work, args.timeout)
    if interrupted or result is None:
        raise SystemExit(130)
    return result


async def main(args: argparse.Namespace) -> int:
    phases: dict[str, list[dict[str, Any]]] = {"without": [], "with": []}
    for index in range(args.rounds):
        for phase in ("without", "with"):
            print(f"round {index + 1}/{args.rounds}, {phase} scraper ...", file=sys.stderr)
            phases[phase].append(await _round(args, phase == "with"))
    keys = ("rate", "p50_ms", "p99_ms")
    summary = {phase: {key: statistics.median(run[key] for run in runs) for key in keys}
               | {"lost": sum(run["lost"] for run in runs),
                  "scrapes": sum(run["scrapes"]["ok"] for run in runs),
                  "failed_scrapes": sum(run["scrapes"]["failed"] for run in runs)}
               for phase, runs in phases.items()}
    print(f"{args.nodes} nodes, {args.messages} messages of {args.size} B from node-0, scraper every "
          f"{args.interval * 1000:g} ms on every node, {args.rounds} alternating round(s); medians")
    print(f"{'phase':<18}{'msgs/s per sub':>16}{'p50 ms':>10}{'p99 ms':>10}{'lost':>7}{'scrapes':>9}")
    for phase, row in summary.items():
        print(f"{phase + ' scraper':<18}{row['rate']:>16,.0f}{row['p50_ms']:>10.2f}{row['p99_ms']:>10.2f}"
              f"{row['lost']:>7}{row['scrapes']:>9}")
    ratio = summary["with"]["rate"] / summary["without"]["rate"]
    print(f"rate with / without: {ratio:.2f}x; p99 with / without: "
          f"{summary['with']['p99_ms'] / max(summary['without']['p99_ms'], 1e-9):.2f}x")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump({"rounds": phases, "summary": summary, "rate_ratio": ratio}, handle, indent=2)
    clean = (summary["with"]["lost"] == summary["without"]["lost"] == 0
             and not summary["with"]["failed_scrapes"])
    return 0 if clean else 1


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=4)
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--rate", type=float, default=0.0, help="msgs/s; 0: as fast as drain() allows")
    parser.add_argument("--interval", type=float, default=0.1)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--json")
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(common.run(main, parse_args(), "metrics_scrape"))
