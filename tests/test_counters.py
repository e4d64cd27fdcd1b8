"""Counter names have one home (swarm/counters.py): every counter a node reports is declared there with
what it counts, no code increments a counter by a bare string, and docs/operations.md lists them all."""

from __future__ import annotations

import ast
from pathlib import Path

import trio
from cluster import Inbox, cluster
from memnet import MemNet

from swarm import counters

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def declared(name: str) -> bool:
    return name in counters.COUNTERS or any(name == counters.error_counter(code)
                                            for code in counters.ERROR_CODES)


def test_no_code_counts_by_a_bare_string() -> None:
    found = []
    for path in sorted((ROOT / "swarm").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant)
                    and isinstance(node.slice.value, str) and ast.unparse(node.value).endswith("counters")):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(node)}")
    assert not found, "counters named by a literal instead of swarm.counters: " + "; ".join(found)


def test_every_counter_of_a_busy_simulated_cluster_is_declared() -> None:
    # Flooding and tree nodes, publishes, direct messages (one to nobody), a crash, a leave and a peer of
    # another cluster: most of the core's counters move.
    net = MemNet(seed=5, trace=False)
    net.add_node("a")
    for name in "bcde":
        net.add_node(name, seeds=["a"], broadcast="tree" if name in "de" else "flood")
    net.add_node("x", seeds=["a"], cluster_name="other")
    net.run_for(2.0)
    for i in range(30):
        net.publish("b", "t", i)
        net.send_direct("c", "b", "t", i)
    net.send_direct("c", "nobody", "t", 0)
    net.run_for(1.0)
    net.crash("e", notify=False)
    net.leave("d")
    net.run_for(5.0)
    reported = {name for node in ("a", "b", "c", "x") for name in net.state(node).status()["counters"]}
    assert {"published", "delivered", "direct_received", "links_made", "cluster_mismatch"} <= reported
    undeclared = sorted(name for name in reported if not declared(name))
    assert not undeclared, f"counters missing from swarm/counters.py: {undeclared}"


async def test_every_counter_of_running_nodes_is_declared() -> None:
    inbox = Inbox()
    with trio.fail_after(30):
        async with cluster(3, before_start=lambda c: c.subscribe("t", inbox)) as conns:
            for i in range(200):
                conns[0].publish("t", {"i": i})
            conns[0].send_direct(conns[1].server_name, "t", {"direct": True})
            conns[0].send_direct("nobody-by-that-name", "t", {})
            await conns[0].flush()
            while len(inbox) < 2 * 200 + 1:
                await trio.sleep(0.01)
            reported = {name for conn in conns for name in conn.status()["counters"]}
    assert {"direct_writes", "published", "delivered"} <= reported
    undeclared = sorted(name for name in reported if not declared(name))
    assert not undeclared, f"counters missing from swarm/counters.py: {undeclared}"


def test_the_operations_guide_lists_every_counter() -> None:
    text = (DOCS / "operations.md").read_text(encoding="utf-8")
    start, end = "<!-- counters:start -->\n", "<!-- counters:end -->"
    assert text.count(start) == 1 and text.count(end) == 1
    table = text[text.index(start) + len(start):text.index(end)]
    assert table == counters.render_markdown(), (
        "docs/operations.md's counter table differs from swarm.counters.render_markdown(); paste its "
        "output between the counters markers")


def test_per_origin_losses_are_reported_at_most_once_an_interval_with_exact_counts() -> None:
    tally = counters.PerOrigin(1.0)
    assert tally.due(0.0) is None  # nothing to report
    tally.add("a", 3)
    assert tally.due(0.0) == (3, "3 of a")
    tally.add("a")
    tally.add("b", 2)
    assert tally.due(0.5) is None  # within the interval: kept, not lost
    assert tally.due(1.0) == (3, "1 of a, 2 of b")
    assert tally.due(5.0) is None
