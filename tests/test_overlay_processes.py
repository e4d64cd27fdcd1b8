"""The small-world overlay across real processes: 20 nodes on 127.0.0.1 (issue 3).

Each node is a `tests/procs.py` child process (a Connector driven over stdin/stdout, see that module): the
first on an ephemeral port, the others seeded with its address. The topology is read from the nodes
themselves with `swarm.transport.engine.fetch_status` (what `python -m swarm status --json` prints) and
compared with the true ring neighbours, computed from the names alone with `swarm.topology.ring`.

Every process a test starts is stopped by `procs.open_cluster` (SIGTERM, then SIGKILL), every wait is
bounded, and no assertion is about speed except the issue's own functional bounds (convergence within
10 s, a crash detected within failureTimeout), whose measured figures are printed (`pytest -s`) and put
in the assertion messages.
"""

from __future__ import annotations

import json
import statistics
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import networkx as nx
import pytest
import trio
from procs import ROOT, Node, NodeCluster, open_cluster, ring_mismatches, true_ring_neighbours

from swarm.topology import ring

pytestmark = pytest.mark.multiprocess

NODES = 20
NAMES = [f"node-{i}" for i in range(NODES)]
LOCAL_LINKS = 4
MAX_PEERS = 12  # the default, 2 x (localLinks + shortcuts)
FAILURE_TIMEOUT = 3.0  # the default failureTimeout
# The issue's bound: every node has its true ring neighbours within 10 s of the processes' start.
CONVERGENCE_BOUND = 10.0
# Bound for the ring to close again around dead or departed nodes (not a promise of the figures;
# generous: the repair takes a few gossip rounds of 0.5 s).
REPAIR_BOUND = 10.0
# Bound for a whole test's waits on the cluster (start-up of 20 interpreters on a 2-core machine included).
STARTUP_BOUND = 30.0
POLL = 0.1
# Messages each node publishes for the broadcast hop count.
PER_PUBLISHER = 3


def report(text: str) -> None:
    """A figure for the record: shown by `pytest -s`."""
    print(f"\n[overlay] {text}", flush=True)


def link_graph(statuses: dict[str, dict[str, Any]]) -> nx.Graph:
    """The overlay as an undirected graph, from each node's own list of links."""
    graph = nx.Graph()
    graph.add_nodes_from(statuses)
    graph.add_edges_from((name, peer) for name, status in statuses.items() for peer in status["links"])
    return graph


def over_max_peers(statuses: dict[str, dict[str, Any]]) -> dict[str, int]:
    return {name: len(status["links"]) for name, status in statuses.items()
            if len(status["links"]) > status["max_peers"]}


async def wait_for_ring(cluster: NodeCluster, bound: float, what: str,
                        degree_violations: list[tuple[float, dict[str, int]]] | None = None,
                        start: float | None = None) -> tuple[float, dict[str, dict[str, Any]]]:
    """Poll every running node's status until each one's local links are its true ring neighbours among
    the running nodes; returns (seconds since `start`, the statuses). Fails after `bound` seconds from
    `start`. Every poll that finds a node over maxPeers is appended to `degree_violations`."""
    start = trio.current_time() if start is None else start
    statuses: dict[str, dict[str, Any]] = {}
    mismatches: dict[str, Any] = {}
    with trio.move_on_at(start + bound):
        while True:
            statuses = await cluster.statuses()
            if degree_violations is not None and (over := over_max_peers(statuses)):
                degree_violations.append((round(trio.current_time() - start, 2), over))
            mismatches = ring_mismatches(statuses, LOCAL_LINKS)
            if not mismatches:
                return trio.current_time() - start, statuses
            await trio.sleep(POLL)
    raise AssertionError(f"{what}: not every node has its true ring neighbours within {bound:g} s; "
                         f"(local links, expected) of the others: {mismatches}")


async def start_converged(cluster: NodeCluster) -> dict[str, dict[str, Any]]:
    """Start NAMES, wait until all are ready and on their true ring; returns the statuses."""
    start = trio.current_time()
    nodes = await cluster.start_many(NAMES, timeout=STARTUP_BOUND)
    await cluster.wait_ready(nodes, timeout=STARTUP_BOUND)
    _, statuses = await wait_for_ring(cluster, STARTUP_BOUND, "start-up", start=start)
    return statuses


def ring_order() -> list[str]:
    return sorted(NAMES, key=ring.position)


def stream_of(received: list[tuple[str, int]], src: str) -> list[int]:
    return [seq for source, seq in received if source == src]


def order_faults(seqs: list[int]) -> list[tuple[int, int]]:
    """(previous, next) pairs where the stream did not strictly increase: a duplicate or a reordering."""
    return [(a, b) for a, b in zip(seqs, seqs[1:], strict=False) if b <= a]


async def wait_until_delivered(nodes: list[Node], src: str, last_seq: int, timeout: float) -> None:
    """Wait (bounded, without failing) until each node has received `last_seq` of `src` or gave up on it."""
    with trio.move_on_after(timeout):
        for node in nodes:
            while not any(s == src and seq >= last_seq for s, seq in node.received[-200:]):
                if node.eof:
                    break
                await node.changed.wait()


# ---------------------------------------------------------------------- 1. convergence (+ hop counts)


async def test_twenty_processes_converge_to_their_true_ring(tmp_path: Path) -> None:
    async with open_cluster(tmp_path) as cluster:
        with trio.fail_after(STARTUP_BOUND + 30):
            # Started together: the first, then the other 19 the moment it listens, seeded with it.
            first_spawn = trio.current_time()
            first = await cluster.start(NAMES[0])
            await first.wait_for(lambda: first.address is not None, "listening", STARTUP_BOUND)
            assert first.address is not None
            for name in NAMES[1:]:
                await cluster.start(name, [first.address])
            all_spawned = trio.current_time()
            for node in cluster.instances:
                await node.wait_for(lambda n=node: n.address is not None, "listening", STARTUP_BOUND)
            all_listening = trio.current_time()

            violations: list[tuple[float, dict[str, int]]] = []
            converged, statuses = await wait_for_ring(cluster, CONVERGENCE_BOUND, "convergence", violations,
                                                      start=all_spawned)
            figures = (f"20 processes: every node on its true ring (k={LOCAL_LINKS}) {converged:.2f} s after "
                       f"the last process was started ({trio.current_time() - first_spawn:.2f} s after the "
                       f"first; the processes took {all_listening - all_spawned:.2f} s to listen)")
            report(figures)
            assert converged <= CONVERGENCE_BOUND, figures

            # It stays so, and the degree stays bounded.
            settled_until = trio.current_time() + 2.0
            while trio.current_time() < settled_until:
                await trio.sleep(0.2)
                statuses = await cluster.statuses()
                if over := over_max_peers(statuses):
                    violations.append((round(trio.current_time() - all_spawned, 2), over))
                assert ring_mismatches(statuses, LOCAL_LINKS) == {}, "the ring changed after convergence"
            degrees = sorted(len(status["links"]) for status in statuses.values())
            report(f"degrees after convergence: {degrees} (maxPeers {MAX_PEERS})")
            assert all(status["max_peers"] == MAX_PEERS for status in statuses.values())
            assert all(status["ready"] for status in statuses.values())

            # The command line shows the same as fetch_status.
            host, port = first.host_port
            command = [sys.executable, "-m", "swarm", "status", f"{host}:{port}", "--json"]
            with trio.fail_after(20):
                done = await trio.run_process(command, capture_stdout=True, capture_stderr=True, check=False,
                                              cwd=ROOT)
            assert done.returncode == 0, done.stderr.decode()
            shown = json.loads(done.stdout)
            assert shown["name"] == NAMES[0] and shown["position"] == ring.position(NAMES[0])
            assert {link["name"] for link in shown["link_details"] if link["kind"] == "local"} == \
                {link["name"] for link in statuses[NAMES[0]]["link_details"] if link["kind"] == "local"}

            # Broadcast hop counts: each node in turn publishes PER_PUBLISHER messages. Every node counts the
            # broadcasts it receives by the hops of their first copy (status "hops"); compared with the
            # shortest paths (BFS) of the link graph.
            graph = link_graph(statuses)
            hops_before = sum((Counter(status["hops"]) for status in statuses.values()), Counter())
            srcs: dict[str, str] = {}
            for publisher in cluster.instances:
                await publisher.send("publish " + json.dumps({"rate": 20, "count": PER_PUBLISHER}))
                await publisher.wait_for(lambda p=publisher: p.halted, "the end of its messages", 20)
                assert publisher.src is not None
                srcs[publisher.src] = publisher.name
                for node in cluster.instances:
                    await node.wait_for(lambda n=node, p=publisher: len(stream_of(n.received, p.src)) >= (
                        0 if n is p else PER_PUBLISHER), f"the messages of {publisher.name}", 20)
            after = await cluster.statuses()
            hop_counts = sum((Counter(status["hops"]) for status in after.values()), Counter()) - hops_before
            hops = [int(hop) for hop, count in hop_counts.items() for _ in range(count)]
            later = link_graph(after)
            changed = {"gone": sorted(map(sorted, graph.edges - later.edges)),
                       "new": sorted(map(sorted, later.edges - graph.edges))}
            distances = dict(nx.all_pairs_shortest_path_length(graph))
            bfs = [distances[a][b] for a in NAMES for b in NAMES if a != b]
            report(f"broadcast hops ({len(hops)} deliveries, every node publishing {PER_PUBLISHER} in turn): "
                   f"first copies (status 'hops'): mean {statistics.mean(hops):.2f}, max {max(hops)}, "
                   f"histogram {dict(sorted(Counter(hops).items()))}; BFS over the status link graph: "
                   f"mean {statistics.mean(bfs):.2f}, max {max(bfs)} (diameter); links changed meanwhile: "
                   f"{changed}")
            expected = PER_PUBLISHER * (NODES - 1)
            assert len(hops) == expected * NODES and min(hops) >= 1
            for node in cluster.instances:
                counts = Counter(node.received)
                assert len(counts) == expected and set(counts.values()) == {1}, node.name
                assert all(srcs[src] != node.name for src, _ in counts)

            assert violations == [], (f"a node had more than maxPeers ({MAX_PEERS}) links "
                                      f"(seconds after start, {{node: links}}): {violations}")


# ---------------------------------------------------------------------- 2. kill -9 under a steady stream


async def test_kill_nine_of_four_nodes_under_a_steady_publisher(tmp_path: Path) -> None:
    rate, count = 200, 1600  # 8 s of messages
    async with open_cluster(tmp_path) as cluster:
        with trio.fail_after(STARTUP_BOUND + 60):
            await start_converged(cluster)
            publisher = cluster.nodes[NAMES[0]]
            # Four non-publishing nodes: two ring neighbours of each other (the harder case for the
            # ring) and two elsewhere. Fixed by the names, so the same in every run.
            order = ring_order()
            p = order.index(publisher.name)
            victims = [cluster.nodes[order[(p + offset) % NODES]] for offset in (5, 6, 11, 15)]
            killed = {victim.name for victim in victims}

            await publisher.send("publish " + json.dumps({"rate": rate, "count": count}))
            await publisher.wait_for(lambda: len(publisher.published) > 10, "first messages published", 10)
            await trio.sleep(2.0)
            for victim in victims:
                victim.kill()
            kill_ns = max(victim.stopped_ns or 0 for victim in victims)
            killed_at = trio.current_time()
            for victim in victims:
                with trio.fail_after(5):
                    await victim.process.wait()
            survivors = [node for node in cluster.instances if node.alive]
            assert len(survivors) == NODES - 4

            # No survivor keeps a link to a dead node beyond failureTimeout (plus a little).
            dropped_after = None
            with trio.move_on_at(killed_at + FAILURE_TIMEOUT + 1.0):
                while True:
                    statuses = await cluster.statuses(survivors)
                    stale = {name: sorted(set(status["links"]) & killed) for name, status in statuses.items()
                             if set(status["links"]) & killed}
                    if not stale:
                        dropped_after = trio.current_time() - killed_at
                        break
                    await trio.sleep(POLL)
            assert dropped_after is not None, (f"survivors still linked to killed nodes "
                                               f"{FAILURE_TIMEOUT + 1:g} s after kill -9: {stale}")
            repaired, _ = await wait_for_ring(cluster, REPAIR_BOUND, "repair after kill -9", start=killed_at)
            report(f"kill -9 of {sorted(killed)}: no survivor linked to them {dropped_after:.2f} s later; "
                   f"survivors on their true ring {repaired:.2f} s later")

            await publisher.wait_for(lambda: publisher.halted, "the end of the stream", count / rate + 20)
            src = publisher.src
            assert src is not None
            receivers = [node for node in survivors if node is not publisher]
            await wait_until_delivered(receivers, src, count, 10)

            must_have = {m.seq for m in publisher.published if m.ts >= kill_ns + 2_000_000_000}
            assert len(publisher.published) == count
            assert len(must_have) >= 600, "too few messages after the kill to test anything"
            problems = {}
            for node in receivers:
                seqs = stream_of(node.received, src)
                missing = sorted(must_have - set(seqs))
                faults = order_faults(seqs)
                if missing or faults:
                    problems[node.name] = {"missing": len(missing), "first missing": missing[:5],
                                           "order faults": faults[:5]}
            lost_before = {node.name: count - len(set(stream_of(node.received, src))) for node in receivers}
            report(f"messages published {count}, of which {len(must_have)} from 2 s after the kill; "
                   f"per survivor, messages not received (any time): {lost_before}")
            assert problems == {}, f"survivors that missed or reordered messages: {problems}"


# ---------------------------------------------------------------------- 3. rolling restart


LIFETIME_NS = 2_000_000_000
COUNTERS_OF_INTEREST = ("duplicates", "gaps_given_up", "duplicate_connections", "links_lost", "links_pruned",
                        "dropped_on_retire", "dropped_on_close", "send_queue_overflow")


def eligible(node: Node, ts: int) -> bool:
    """Is `node` (one process instance) live throughout the lifetime of a message published at `ts`?

    It was ready before the message was published (`ready` line, wall clock), and it was not told to
    stop before LIFETIME_NS (2 s, far beyond any delivery here) after the publication.
    """
    return (node.ready_ns is not None and node.ready_ns < ts
            and (node.stopped_ns is None or node.stopped_ns > ts + LIFETIME_NS))


async def test_rolling_restart_loses_nothing_for_live_nodes(tmp_path: Path) -> None:
    rate = 50
    async with open_cluster(tmp_path) as cluster:
        with trio.fail_after(STARTUP_BOUND + 90):
            await start_converged(cluster)

            async def restart(name: str, seed_name: str) -> Node:
                old = cluster.nodes[name]
                assert await old.terminate() == 0, old.stderr()
                seed = cluster.nodes[seed_name]
                assert seed.address is not None
                new = await cluster.start(name, [seed.address])
                await new.wait_for(lambda: new.ready_ns is not None, "ready after a restart", STARTUP_BOUND)
                # As an operator would, go on only once the node is back in its place on the ring: the
                # next node to restart may be its seed, its only link for the first milliseconds.
                await wait_for_ring(cluster, REPAIR_BOUND, f"rejoin of {name}")
                return new

            # The first half of the stream comes from node-0 while node-1..node-19 restart one by one
            # (each seeded with the next live node); then node-1 (restarted) takes over and node-0 restarts.
            first = cluster.nodes[NAMES[0]]
            await first.send("publish " + json.dumps({"rate": rate, "count": None}))
            await first.wait_for(lambda: len(first.published) > 10, "first messages published", 10)
            for i in range(1, NODES):
                await restart(NAMES[i], NAMES[(i + 1) % NODES])
            second = cluster.nodes[NAMES[1]]
            await second.send("publish " + json.dumps({"rate": rate, "count": None}))
            await second.wait_for(lambda: len(second.published) > 10, "first messages published", 10)
            await first.send("halt")
            await first.wait_for(lambda: first.halted, "the end of its stream", 10)
            await trio.sleep(0.5)  # the last messages of node-0's stream leave before it restarts
            await restart(NAMES[0], NAMES[1])
            await trio.sleep(2.0)  # messages published after node-0's restart reach it
            await second.send("halt")
            await second.wait_for(lambda: second.halted, "the end of its stream", 10)
            publishers = [first, second]
            final = list(cluster.nodes.values())
            for pub in publishers:
                assert pub.src is not None
                await wait_until_delivered([n for n in final if n is not pub], pub.src,
                                           pub.published[-1].seq, 10)
            # Let the last lines of every instance reach us.
            await trio.sleep(0.5)

            checked = 0
            problems: dict[str, Any] = {}
            for node in cluster.instances:
                for pub in publishers:
                    if node is pub:
                        continue
                    assert pub.src is not None
                    seqs = stream_of(node.received, pub.src)
                    if faults := order_faults(seqs):
                        problems.setdefault(f"{node.name}#{cluster.instances.index(node)}", {})[
                            f"order faults from {pub.name}"] = faults[:5]
                    owed = {m.seq for m in pub.published if eligible(node, m.ts)}
                    checked += len(owed)
                    if missing := sorted(owed - set(seqs)):
                        ts = {m.seq: m.ts for m in pub.published}
                        assert node.ready_ns is not None
                        problems.setdefault(f"{node.name}#{cluster.instances.index(node)}", {})[
                            f"missing from {pub.name}"] = {
                                "count": len(missing), "first": missing[:5],
                                "ms from ready to publication": [(ts[seq] - node.ready_ns) // 10**6
                                                                 for seq in missing[:5]],
                                "first received": seqs[:3]}
            # Evidence for a failure: what the instances that missed something (and still run) counted.
            final_statuses = await cluster.statuses(final)
            for label in problems:
                name, _, index = label.partition("#")
                if cluster.instances[int(index)] in final:
                    counters = final_statuses[name]["counters"]
                    problems[label]["counters"] = {key: counters.get(key, 0) for key in COUNTERS_OF_INTEREST}
            total = sum(len(pub.published) for pub in publishers)
            report(f"rolling restart of {NODES} nodes: {total} messages from 2 publishers, "
                   f"{checked} (instance, message) pairs owed and checked, "
                   f"{len(cluster.instances)} processes")
            assert checked > total * 5, "too few live instances to test anything"
            assert problems == {}, f"instances live throughout a message's lifetime that missed or " \
                                   f"reordered messages: {problems}"


# ---------------------------------------------------------------------- 4. direct messages


async def test_direct_message_across_three_hops_and_to_nobody(tmp_path: Path) -> None:
    # With the default 2 shortcuts per node, a 20-node overlay's diameter is 2 or 3 depending on the
    # random draw of the shortcuts, so a pair 3 hops apart is not there in every run. Without shortcuts
    # the overlay is the ring lattice (k=4), whose diameter is 5: the farthest pair is 5 hops apart, and
    # the direct message crosses the ring greedily, hop by hop.
    async with open_cluster(tmp_path, shortcuts=0) as cluster:
        with trio.fail_after(STARTUP_BOUND + 30):
            await start_converged(cluster)
            # Links made while joining that neither end wants are pruned after a grace period: wait for
            # the lattice itself, every node linked to its 4 ring neighbours and nobody else.
            expected = true_ring_neighbours(NAMES, LOCAL_LINKS)
            with trio.fail_after(REPAIR_BOUND):
                while True:
                    statuses = await cluster.statuses()
                    if all(set(statuses[name]["links"]) == expected[name] for name in NAMES):
                        break
                    await trio.sleep(POLL)
            graph = link_graph(statuses)
            distances = dict(nx.all_pairs_shortest_path_length(graph))
            distance, source_name, target_name = max((distances[a][b], a, b) for a in NAMES for b in NAMES)
            assert distance >= 3, f"no two nodes 3 hops apart; the overlay's diameter is {distance}"
            source, target = cluster.nodes[source_name], cluster.nodes[target_name]
            routed_before = sum(status["counters"].get("routed", 0) for status in statuses.values())

            message = {"to": target_name, "text": "psst", "n": [1, 2, 3]}
            await source.send("direct " + json.dumps({"target": target_name, "message": message}))
            await target.wait_for(lambda: bool(target.directs), "the direct message", 10)
            await trio.sleep(1.0)  # time for a stray copy to show up anywhere else
            assert target.directs == [message]
            others = {node.name: node.directs for node in cluster.instances
                      if node is not target and node.directs}
            assert others == {}, f"the direct message reached other nodes too: {others}"
            assert not any(code == "unreachable" for code, _ in source.errors), source.errors
            after = await cluster.statuses()
            routed = sum(status["counters"].get("routed", 0) for status in after.values()) - routed_before
            report(f"direct message {source_name} -> {target_name}: {distance} hops apart in the overlay, "
                   f"relayed {routed} times on the way")
            assert routed >= distance - 1

            # A target that does not exist: an `error` event "unreachable" at the sender, nothing delivered.
            await source.send("direct " + json.dumps({"target": "no-such-node", "message": {"lost": True}}))
            await source.wait_for(lambda: any(code == "unreachable" for code, _ in source.errors),
                                  "an unreachable error", 10)
            await trio.sleep(0.5)
            assert sum(len(node.directs) for node in cluster.instances) == 1
            unreachable = [text for code, text in source.errors if code == "unreachable"]
            assert "no-such-node" in unreachable[0], unreachable


# ---------------------------------------------------------------------- 5. graceful leave


async def test_graceful_leave_is_seen_at_once_and_the_ring_closes(tmp_path: Path) -> None:
    async with open_cluster(tmp_path) as cluster:
        with trio.fail_after(STARTUP_BOUND + 30):
            statuses = await start_converged(cluster)
            leaver_name = NAMES[7]
            leaver = cluster.nodes[leaver_name]
            neighbours = sorted(statuses[leaver_name]["links"])
            left_before = {name: statuses[name]["counters"].get("members_left", 0) for name in neighbours}

            assert await leaver.terminate() == 0, leaver.stderr()
            exited = trio.current_time()
            peers = [cluster.nodes[name] for name in neighbours]
            # "At once": well before failureTimeout, which is how long noticing a silent peer would take.
            dropped_after = None
            with trio.move_on_after(FAILURE_TIMEOUT / 2):
                while True:
                    now_statuses = await cluster.statuses(peers)
                    still = sorted(name for name, status in now_statuses.items()
                                   if leaver_name in status["links"])
                    if not still:
                        dropped_after = trio.current_time() - exited
                        break
                    await trio.sleep(0.05)
            assert dropped_after is not None, (f"{still} still list {leaver_name} "
                                               f"{FAILURE_TIMEOUT / 2:g} s after it left")
            told = {name: status["counters"].get("members_left", 0) - left_before[name]
                    for name, status in now_statuses.items()}
            assert all(count >= 1 for count in told.values()), f"the leave was not announced to all: {told}"
            closed, _ = await wait_for_ring(cluster, REPAIR_BOUND, "ring closing after a leave", start=exited)
            report(f"graceful leave of {leaver_name}: its {len(neighbours)} peers dropped it "
                   f"{dropped_after:.2f} s after it exited; the ring closed {closed:.2f} s after")

