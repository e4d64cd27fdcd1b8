"""`python -m swarm demo`: a cluster of node processes on loopback, checked end to end.

`run_demo` starts N node processes (the hidden command `python -m swarm _demo-node`) — the first on an
ephemeral port, the others seeded with the first one's address — waits until every node is on its true
ring neighbours, has some of them publish streams at the same time, and prints a table per node:
overlay links, delivered / expected, duplicates, out-of-order, dropped, latency p50 / p99. It exits 0
only when nothing was lost, duplicated or reordered. The processes, the lines they exchange with this
one and their supervision (every node process is stopped, whatever happens) are `swarm.harness`'s.
"""

from __future__ import annotations

import math
import os
import sys
import tempfile
from typing import Any

import trio

from . import harness

__all__ = ["format_table", "run_demo"]


def format_table(results: dict[str, dict[str, Any]], publishers: list[str]) -> str:
    """The per-node table the demo prints."""
    header = (f"{'node':<10} {'links':>5} {'delivered/expected':>20} {'duplicates':>10} {'out-of-order':>12} "
              f"{'dropped':>7} {'p50 ms':>8} {'p99 ms':>8}")
    lines = [header, "-" * len(header)]
    for name, result in results.items():
        label = name + (" *" if name in publishers else "")
        ratio = f"{result['delivered']}/{result['expected']}"
        p50, p99 = (f"{result[key]:.1f}" if math.isfinite(result[key]) else "-"
                    for key in ("p50_ms", "p99_ms"))
        lines.append(f"{label:<10} {result.get('links', 0):>5} {ratio:>20} {result['duplicates']:>10} "
                     f"{result['out_of_order']:>12} "
                     f"{result['dropped']:>7} {p50:>8} {p99:>8}")
    lines.append("(* publishes; links: overlay links at the end, at most maxPeers, 12 by default)")
    return "\n".join(lines)


async def run_demo(nodes: int = 8, messages: int = 2000, publishers: int = 3, size: int = 64,
                   rate: float = 0.0, timeout: float = 120.0, log_level: str = "WARNING",
                   use_tls: bool = False) -> int:
    """Run the demo; print the table; 0 if nothing was lost, duplicated or reordered, else 1."""
    out = sys.stdout
    if nodes < 2:
        print("swarm: error: --nodes: expected at least 2 nodes", file=sys.stderr)
        return 2
    if publishers > nodes:
        print(f"swarm: error: --publishers: expected at most --nodes ({nodes}), got {publishers}",
              file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="swarm-demo-") as scratch:
        tls_dir = os.path.join(scratch, "certs") if use_tls else None
        return await _run_demo(nodes, messages, publishers, size, rate, timeout, log_level, out, tls_dir)


async def _run_demo(nodes: int, messages: int, publishers: int, size: int, rate: float, timeout: float,
                    log_level: str, out: Any, tls_dir: str | None) -> int:
    def linked() -> None:
        print(f"{nodes} nodes on their true ring neighbours (small-world overlay"
              f"{', mutual TLS 1.3' if tls_dir else ''}); {publishers} of them "
              f"{'publishes' if publishers == 1 else 'publish'} {messages} messages of "
              f"{size} bytes each, {f'{rate:g}/s' if rate else 'as fast as flow control allows'}", file=out,
              flush=True)

    try:
        interrupted, outcome = await harness.supervise(
            lambda children: harness.run_cluster(children, nodes, messages, publishers, size, rate, log_level,
                                                 tls_dir=tls_dir, on_linked=linked),
            timeout)
    except BaseException as raised:  # noqa: B036 - re-raised unless the demo failed in a known way
        error = harness.first_of(raised, (harness.HarnessError, trio.TooSlowError))
        if error is None:
            raise
        reason = error if isinstance(error, harness.HarnessError) else f"no result within {timeout:g} s"
        print(f"swarm: error: demo failed: {reason}", file=sys.stderr, flush=True)
        return 1
    if interrupted or outcome is None:
        print("swarm: demo interrupted; every node process was stopped", file=sys.stderr, flush=True)
        return 130
    results, publishing, elapsed = outcome
    print(format_table(results, publishing), file=out)
    lost = sum(r["expected"] - r["delivered"] for r in results.values())
    duplicated = sum(r["duplicates"] for r in results.values())
    reordered = sum(r["out_of_order"] for r in results.values())
    delivered = sum(r["delivered"] for r in results.values())
    verdict = "OK" if not (lost or duplicated or reordered) else "FAILED"
    print(f"{verdict}: {delivered} deliveries in {elapsed:.1f} s ({delivered / elapsed:,.0f}/s); "
          f"{lost} lost, {duplicated} duplicated, {reordered} out of order", file=out, flush=True)
    return 0 if verdict == "OK" else 1
