"""`swarm.ClusterNode`, deepstream 4+'s cluster-node API: its semantics over real loopback sockets.

`send` reaches each other node exactly once, `send_direct` only its target (also across several hops of a
bare ring), never an echo, the origin is the sender's name, per-origin order holds, receivers get copies.
And it is the same node as `swarm.Connector`: the two faces talk to each other on the same wire.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

import pytest
import trio
from cluster import HOST, cluster, options, wait_mesh, wait_ready, wait_until

import swarm
from swarm.node import Node
from swarm.topology import ring

TOPIC = 4  # deepstream's EVENT
OTHER_TOPIC = "records"
# A ring of 8 nodes without shortcuts takes a few seconds of gossip to settle.
RING_WAIT = 30.0


class Received:
    """A `callback(message, origin)` that records (origin, message) pairs in order."""

    def __init__(self) -> None:
        self.items: list[tuple[str, Any]] = []

    def __call__(self, message: Any, origin: str) -> None:
        self.items.append((origin, message))

    def __len__(self) -> int:
        return len(self.items)

    def by_origin(self) -> dict[str, list[Any]]:
        grouped: dict[str, list[Any]] = defaultdict(list)
        for origin, message in self.items:
            grouped[origin].append(message)
        return grouped


def cluster_node(name: str, seeds: Sequence[tuple[str, int]] = (), **extra: Any) -> swarm.ClusterNode:
    return swarm.ClusterNode(options(name, seeds, **extra))


def cluster_nodes(names: Sequence[str],
                  **kwargs: Any) -> AbstractAsyncContextManager[list[swarm.ClusterNode]]:
    """Start ClusterNodes seeded from the first; wait until ready (and, unless `mesh=False`, fully linked)."""
    return cluster(names, make=cluster_node, **kwargs)


async def broadcast_barrier(nodes: Sequence[swarm.ClusterNode], topic: str = "__barrier__") -> None:
    """Every node sends a marker; wait until each has every other's (per-origin FIFO: what each sent
    before has been delivered too)."""
    seen: dict[str, set[str]] = defaultdict(set)
    callbacks = {}
    for node in nodes:
        def record(message: Any, origin: str, _name: str = node.server_name) -> None:
            seen[_name].add(origin)
        callbacks[node.server_name] = record
        node.subscribe(topic, record)
    for node in nodes:
        node.send({"topic": topic})
    names = {node.server_name for node in nodes}
    await wait_until(lambda: all(seen[n] == names - {n} for n in names), what=f"barrier: {dict(seen)}")
    for node in nodes:
        node.unsubscribe(topic, callbacks[node.server_name])


# ------------------------------------------------------------------------------------------- the face


async def test_interface_and_lifecycle() -> None:
    node = cluster_node("face")
    events: list[str] = []
    node.on("ready", lambda: events.append("ready"))
    node.on("close", lambda: events.append("close"))
    assert isinstance(node, Node) and isinstance(swarm.Connector({"port": 0}), Node)
    assert node.server_name == "face" and node.is_ready is False
    for method in ("send", "send_direct", "subscribe", "when_ready", "close", "on", "status"):
        assert callable(getattr(node, method)), method
    with pytest.raises(RuntimeError):
        node.send({"topic": TOPIC})  # not started
    async with node:
        with trio.fail_after(5):
            await node.when_ready()
        host, port = node.address
        assert host == HOST and port > 0
        assert node.status()["name"] == "face"
        assert node.bridge_address is None
        with pytest.raises(ValueError):
            node.on("message", print)
    assert events == ["ready", "close"]
    with pytest.raises(RuntimeError):
        node.send({"topic": TOPIC})  # closed
    await node.close()  # idempotent
    assert events == ["ready", "close"]


@pytest.mark.parametrize(("message", "error"), [
    ({"data": 1}, ValueError),          # no topic
    ([TOPIC, "x"], TypeError),          # not a mapping
    ("text", TypeError),
    (None, TypeError),
    ({"topic": None}, TypeError),
    ({"topic": True}, TypeError),
    ({"topic": 4.0}, TypeError),
    ({"topic": [4]}, TypeError),
])
async def test_message_without_a_topic_is_refused_at_once(message: Any, error: type[Exception]) -> None:
    async with cluster_nodes(["a", "b"]) as (a, b):
        received = Received()
        b.subscribe(TOPIC, received)
        with pytest.raises(error):
            a.send(message)
        with pytest.raises(error):
            a.send_direct("b", message)
        assert a.status()["counters"].get("published", 0) == 0
        assert a.status()["counters"].get("direct_sent", 0) == 0


async def test_send_direct_to_itself_or_to_nobody() -> None:
    async with cluster_nodes(["a", "b"]) as (a, _b):
        errors: list[swarm.NodeError] = []
        a.on("error", errors.append)
        with pytest.raises(ValueError):
            a.send_direct("a", {"topic": TOPIC})
        with pytest.raises(TypeError):
            a.send_direct("", {"topic": TOPIC})
        a.send_direct("no-such-node", {"topic": TOPIC, "lost": True})
        await wait_until(lambda: [e.code for e in errors] == ["unreachable"], what=f"unreachable: {errors}")


# --------------------------------------------------------------------------------------------- send


async def test_send_reaches_every_other_node_exactly_once_in_order_with_its_origin() -> None:
    names = ["a", "b", "c", "d", "e"]
    count = 200
    inboxes = {name: Received() for name in names}
    others = {name: Received() for name in names}

    def subscribe(node: swarm.ClusterNode) -> None:
        node.subscribe(TOPIC, inboxes[node.server_name])
        node.subscribe(OTHER_TOPIC, others[node.server_name])

    async with cluster_nodes(names, before_start=subscribe) as nodes:
        for i in range(count):
            for node in nodes:
                node.send({"topic": TOPIC, "from": node.server_name, "i": i})
                if i % 50 == 0:
                    node.send({"topic": OTHER_TOPIC, "from": node.server_name, "i": i})
            if i % 20 == 0:
                for node in nodes:
                    await node.drain()
        expected = count * (len(names) - 1)
        await wait_until(lambda: all(len(inbox) >= expected for inbox in inboxes.values()),
                         what=f"{expected} at every node: { {n: len(v) for n, v in inboxes.items()} }")
        await broadcast_barrier(nodes)
    for name, inbox in inboxes.items():
        assert len(inbox) == expected, name
        by_origin = inbox.by_origin()
        assert set(by_origin) == set(names) - {name}, f"{name} got an echo or missed an origin"
        for origin, messages in by_origin.items():
            assert all(message["from"] == origin for message in messages), (name, origin)
            assert [message["i"] for message in messages] == list(range(count)), (name, origin)
            assert all(message["topic"] == TOPIC for message in messages)
        counts = Counter((origin, message["i"]) for origin, message in inbox.items)
        assert max(counts.values()) == 1
        # The other topic went to its own subscribers only.
        assert sorted(message["i"] for origin, message in others[name].items if origin == "a"
                      ) == ([0, 50, 100, 150] if name != "a" else [])


async def test_receivers_get_copies_and_async_callbacks_keep_order() -> None:
    got_first: list[Any] = []
    got_second: list[Any] = []
    got_async: list[tuple[Any, str]] = []

    def first(message: Any, origin: str) -> None:
        got_first.append(message)
        message["data"]["list"].append("mutated by the first callback")
        message["topic"] = "changed"

    def second(message: Any, origin: str) -> None:
        got_second.append(message)

    async def slow(message: Any, origin: str) -> None:
        await trio.sleep(0.001)
        got_async.append((message["i"], origin))

    async with cluster_nodes(["a", "b"]) as (a, b):
        b.subscribe(TOPIC, first)
        b.subscribe(TOPIC, second)
        b.subscribe(TOPIC, slow)
        await broadcast_barrier([a, b])
        sent = {"topic": TOPIC, "data": {"list": [1, 2]}, "i": 0}
        a.send(sent)
        sent["data"]["list"].append("mutated by the sender after send")  # already encoded: not seen
        for i in range(1, 20):
            a.send({"topic": TOPIC, "data": {"list": []}, "i": i})
        await wait_until(lambda: len(got_async) == 20, what=f"20 async deliveries: {len(got_async)}")
    assert got_second[0] == {"topic": TOPIC, "data": {"list": [1, 2]}, "i": 0}
    assert got_first[0] is not got_second[0]
    assert got_async == [(i, "a") for i in range(20)]


# --------------------------------------------------------------------------------------- send_direct


async def test_send_direct_reaches_only_its_target_in_order() -> None:
    names = ["a", "b", "c", "d"]
    inboxes = {name: Received() for name in names}
    def subscribe(node: swarm.ClusterNode) -> None:
        node.subscribe(TOPIC, inboxes[node.server_name])

    async with cluster_nodes(names, before_start=subscribe) as nodes:
        a, _b, _c, d = nodes
        for i in range(100):
            a.send_direct("c", {"topic": TOPIC, "from": "a", "i": i})
            d.send_direct("c", {"topic": TOPIC, "from": "d", "i": i})
        await wait_until(lambda: len(inboxes["c"]) == 200, what=f"200 at c: {len(inboxes['c'])}")
        await broadcast_barrier(nodes)
    by_origin = inboxes["c"].by_origin()
    assert {origin: [m["i"] for m in messages] for origin, messages in by_origin.items()} == {
        "a": list(range(100)), "d": list(range(100))}
    assert all(message["from"] == origin for origin, message in inboxes["c"].items)
    assert [len(inboxes[name]) for name in ("a", "b", "d")] == [0, 0, 0]


def ring_neighbours(names: Sequence[str], name: str) -> set[str]:
    others = [(other, ring.position(other)) for other in names if other != name]
    return set(ring.nearest_per_side(ring.position(name), others, 1))


def local_links(node: swarm.ClusterNode) -> set[str]:
    return {link["name"] for link in node.status()["link_details"] if link["kind"] == "local"}


def hop_distances(adjacency: dict[str, set[str]], start: str) -> dict[str, int]:
    distance, frontier = {start: 0}, [start]
    while frontier:
        following = []
        for name in frontier:
            for peer in adjacency.get(name, ()):
                if peer not in distance:
                    distance[peer] = distance[name] + 1
                    following.append(peer)
        frontier = following
    return distance


async def test_send_direct_crosses_several_hops_of_a_bare_ring_to_its_target_only() -> None:
    # 8 nodes, one ring neighbour per side, no shortcuts: a ring whose far side is 4 hops away.
    names = [f"r{i}" for i in range(8)]
    count = 50
    inboxes = {name: Received() for name in names}
    async with cluster_nodes(names, mesh=False, localLinks=2, shortcuts=0, gossipInterval=0.1,
                             before_start=lambda n: n.subscribe(TOPIC, inboxes[n.server_name])) as nodes:
        by_name = {node.server_name: node for node in nodes}
        await wait_until(lambda: all(local_links(node) == ring_neighbours(names, node.server_name)
                                     for node in nodes), RING_WAIT,
                         what="the ring: " + ", ".join(f"{n.server_name}->{sorted(local_links(n))}"
                                                       for n in nodes))

        def farthest() -> tuple[str, str, int]:
            adjacency = {node.server_name: set(node.status()["links"]) for node in nodes}
            return max(((a, b, d) for a in names for b, d in hop_distances(adjacency, a).items()),
                       key=lambda item: (item[2], item[0], item[1]))

        # Probes add short-lived links now and then; wait for a moment when the pair is 3+ hops apart.
        await wait_until(lambda: farthest()[2] >= 3, RING_WAIT, what="two nodes 3 hops apart")
        origin, target, distance = farthest()
        routed_before = sum(node.status()["counters"].get("routed", 0) for node in nodes)
        # All sent at once, with the overlay as measured: the first hop is not the target.
        for i in range(count):
            by_name[origin].send_direct(target, {"topic": TOPIC, "from": origin, "i": i})
        await wait_until(lambda: len(inboxes[target]) == count, what=f"{count} at {target} ({distance} hops)")
        routed = sum(node.status()["counters"].get("routed", 0) for node in nodes) - routed_before
        await broadcast_barrier(nodes)
    assert distance >= 3
    assert routed >= count, f"{routed} relays for {count} messages over {distance} hops"
    assert [(o, m["i"]) for o, m in inboxes[target].items] == [(origin, i) for i in range(count)]
    assert {name: len(inbox) for name, inbox in inboxes.items() if name != target} == dict.fromkeys(
        set(names) - {target}, 0)


# ------------------------------------------------------------------------------- one node, two faces


async def test_connector_and_cluster_node_share_the_wire() -> None:
    async with cluster_nodes(["cluster"]) as (cluster,):
        async with swarm.Connector(options("connector", [cluster.address])) as connector:
            await wait_ready([connector])
            await wait_mesh([cluster, connector])  # type: ignore[list-item]
            from_connector: list[tuple[Any, str]] = []
            from_cluster: list[Any] = []
            cluster.subscribe(TOPIC, lambda message, origin: from_connector.append((message, origin)))
            connector.subscribe(TOPIC, from_cluster.append)
            # Subscriptions are local: nothing to wait for before sending.
            connector.publish(TOPIC, {"topic": TOPIC, "n": 1})
            connector.send_direct("cluster", TOPIC, {"topic": TOPIC, "n": 2})
            cluster.send({"topic": TOPIC, "n": 3})
            cluster.send_direct("connector", {"topic": TOPIC, "n": 4})
            await wait_until(lambda: len(from_connector) == 2 and len(from_cluster) == 2,
                             what=f"{from_connector} {from_cluster}")
    assert from_connector == [({"topic": TOPIC, "n": 1}, "connector"),
                              ({"topic": TOPIC, "n": 2}, "connector")]
    assert from_cluster == [{"topic": TOPIC, "n": 3}, {"topic": TOPIC, "n": 4}]
