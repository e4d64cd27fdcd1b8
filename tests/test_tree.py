"""Tree broadcast (`broadcast: tree`, Plumtree): the figures iroh-gossip holds itself to, at 100 nodes
with zero missed deliveries, and repair when tree links die."""

from __future__ import annotations

import functools

import pytest
import trio
from memnet import MemNet

import swarm
from swarm.protocol import wire
from swarm.protocol.tree import GRAFT_WINDOW, MAX_GRAFT, MAX_POSTPONE, TreeBroadcast

N = 100


@functools.cache
def converged_net(mode: str, seed: int = 3, n: int = N) -> tuple[MemNet, list[str]]:
    """A converged overlay of `n` nodes (built once per arguments: later tests run on from its state)."""
    net = MemNet(seed=seed, latency=0.005, trace=False)
    names = [f"n{i:03d}" for i in range(n)]
    net.add_node(names[0], broadcast=mode)
    for name in names[1:]:
        net.add_node(name, seeds=[names[0]], broadcast=mode)
    net.run_for(6.0)  # the ring forms in well under a second here; pruning settles in a few rounds
    return net, names


def broadcast_rounds(net: MemNet, names: list[str], senders: list[str], rounds: int,
                     live: list[str] | None = None) -> tuple[int, int, float]:
    """(deliveries made, deliveries expected, RMR) of `rounds` messages from each sender."""
    live = live or names
    before = {name: net.state(name).counters["data_frames_received"] for name in live}
    delivered_before = len(net.deliveries)
    for i in range(rounds):
        for sender in senders:
            net.publish(sender, "t", i)
        net.run_for(0.05)
    net.run_for(3.0)
    received = sum(net.state(name).counters["data_frames_received"] - before[name] for name in live)
    broadcasts = rounds * len(senders)
    expected = broadcasts * (len(live) - 1)
    return len(net.deliveries) - delivered_before, expected, received / expected - 1


@pytest.mark.parametrize("senders,rounds,bound", [(1, 50, 0.2), (10, 50, 1.0), (N, 3, 3.0)])
def test_tree_rmr_with_zero_missed_deliveries(senders: int, rounds: int, bound: float) -> None:
    net, names = converged_net("tree")
    delivered, expected, rmr = broadcast_rounds(net, names, names[:senders], rounds)
    assert delivered == expected
    assert rmr < bound, rmr
    # ... where flooding the same overlay costs several copies per delivery.
    flood, flood_names = converged_net("flood")
    _, _, flood_rmr = broadcast_rounds(flood, flood_names, flood_names[:senders], rounds)
    assert flood_rmr > 3 * rmr


def test_tree_repairs_itself_when_tree_links_die() -> None:
    net, names = converged_net("tree", seed=5, n=50)
    net.deliveries.clear()
    broadcast_rounds(net, names, [names[0]], 20)  # the tree has formed
    victims = names[10:20]  # a fifth of the nodes, tree links among them, die without a word
    for name in victims:
        net.crash(name, notify=False)
    live = [name for name in names if name not in victims]
    net.run_for(10.0)  # failure detection and ring repair
    start = len(net.deliveries)
    for i in range(30):
        net.publish(names[0], "t", ("after", i))
        net.run_for(0.05)
    net.run_for(5.0)
    for name in live[1:]:
        got = [m for m in net.delivered(name, origin=names[0]) if isinstance(m, list) and m[0] == "after"]
        assert got == [["after", i] for i in range(30)], name
    assert len(net.deliveries) - start == 30 * (len(live) - 1)
    assert sum(net.state(name).counters["grafts"] for name in live) >= 0


def test_lazy_link_grafts_a_missing_payload() -> None:
    tree = TreeBroadcast(graft_timeout=0.1)
    message = (b"\x01a" + bytes(8), 7)
    tree.ihave_from(b"b", [message], now=0.0, seen=lambda m: False)
    tree.ihave_from(b"c", [message], now=0.01, seen=lambda m: False)
    assert tree.due(0.05, {b"b", b"c"}) == []
    assert tree.due(0.1, {b"b", b"c"}) == [(b"b", [message])]  # the first announcer is asked
    assert tree.due(0.2, {b"c"}) == [(b"c", [message])]  # no answer: the next one
    tree.received(message, b"body")
    assert tree.due(1.0, {b"b", b"c"}) == []
    assert tree.grafted_by(b"d", [message]) == [b"body"]


def test_duplicate_prunes_once_and_graft_makes_eager() -> None:
    tree = TreeBroadcast(graft_timeout=0.1)
    assert tree.duplicate_from(b"x") is True
    assert tree.duplicate_from(b"x") is False  # already lazy: no second PRUNE
    assert b"x" in tree.lazy
    tree.grafted_by(b"x", [])
    assert b"x" not in tree.lazy


def test_a_prune_never_takes_a_nodes_last_eager_link_when_delays_vary() -> None:
    # One sender, 16 nodes, 0.3 ms links with 0-5 ms of jitter per frame (FIFO kept): the first copy of
    # a message comes over a different path from one message to the next. A PRUNE answering a duplicate
    # that a node forwarded before the pruner's other PRUNEs reached it took nodes' last eager links,
    # and their messages came by graft: median 62 ms over the second half of 2,000 messages. Refusing
    # such a PRUNE (an empty GRAFT back) gives 5 ms. (Only with this 50 ms tick: the engine's 100 ms tick
    # still gives ~70 ms, and p99 is ~170 ms here; a known gap, docs/performance.md.)
    net = MemNet(seed=3, latency=0.0003, jitter=0.005, trace=False)
    names = [f"node-{i}" for i in range(16)]
    net.add_node(names[0], broadcast="tree")
    for name in names[1:]:
        net.add_node(name, seeds=[names[0]], broadcast="tree")
    net.run_for(6.0)
    start, sent = len(net.deliveries), {}
    for i in range(2000):
        sent[i] = net.now
        net.publish(names[0], "t", i)
        net.run_for(0.001)
    net.run_for(2.0)
    deliveries = net.deliveries[start:]
    assert sorted((d.node, d.message) for d in deliveries) == sorted(
        (name, i) for name in names[1:] for i in range(2000))
    latencies = sorted(d.time - sent[d.message] for d in deliveries if d.message >= 1000)
    assert latencies[len(latencies) // 2] < 0.02, latencies[len(latencies) // 2]


async def test_tree_mode_over_real_sockets_delivers_exactly_once_in_order() -> None:
    options = {"port": 0, "broadcast": "tree"}
    async with swarm.Connector({"serverName": "a", **options}) as a:
        seed = "{}:{}".format(*a.address)
        async with swarm.Connector({"serverName": "b", "seedNodes": [seed], **options}) as b, \
                swarm.Connector({"serverName": "c", "seedNodes": [seed], **options}) as c, \
                swarm.Connector({"serverName": "d", "seedNodes": [seed], **options}) as d:
            got: dict[str, list[int]] = {"b": [], "c": [], "d": []}
            for name, conn in (("b", b), ("c", c), ("d", d)):
                conn.subscribe("t", got[name].append)
            with trio.fail_after(5):
                while any(len(conn.status()["links"]) < 3 for conn in (a, b, c, d)):
                    await trio.sleep(0.01)
            a.publish("t", -1)  # the first message finds the tree: its duplicates prune links
            with trio.fail_after(5):
                while any(len(v) < 1 for v in got.values()):
                    await trio.sleep(0.01)
            await trio.sleep(0.3)
            before = sum(conn.status()["counters"].get("data_frames_received", 0) for conn in (b, c, d))
            for i in range(500):
                a.publish("t", i)
                if i % 50 == 0:
                    await a.drain()
            with trio.fail_after(10):
                while any(len(v) < 501 for v in got.values()):
                    await trio.sleep(0.01)
            await trio.sleep(0.3)
            assert all(v == list(range(-1, 500)) for v in got.values())
            copies = sum(conn.status()["counters"].get("data_frames_received", 0) for conn in (b, c, d))
            assert copies - before < 3 * 500 * 1.2  # flooding this full mesh reads 3 copies per delivery


def test_a_graft_backlog_goes_out_in_frames_under_the_control_limit() -> None:
    # Thousands of ids due at once (a saturated lazy link) once made one GRAFT over MAX_CONTROL_BODY,
    # and the peer closed the link. Ids of the longest origin name are the worst case.
    tree = TreeBroadcast(graft_timeout=0.1)
    key = bytes((wire.MAX_NAME_BYTES,)) + b"n" * wire.MAX_NAME_BYTES + bytes(8)
    messages = [(key, seq) for seq in range(1, 5001)]
    tree.ihave_from(b"b", messages, now=0.0, seen=lambda m: False)
    batches = []
    for tick in range(1, 20):  # answers free the graft window: the backlog goes out over a few ticks
        batches += tree.due(tick / 8, {b"b"})
        for message in batches[-1][1] if batches else []:
            tree.received(message, b"body")
    assert [m for _, batch in batches for m in batch] == messages  # all of them, in order, to b
    assert {peer for peer, _ in batches} == {b"b"}
    for _, batch in batches:
        assert len(batch) <= MAX_GRAFT
        frame = wire.encode_control(wire.KIND_GRAFT, {"ids": [[k, s] for k, s in batch]})
        assert len(frame) - 4 < wire.MAX_CONTROL_BODY


def test_a_late_payload_is_not_grafted_while_its_stream_still_flows() -> None:
    # A saturated eager link delays payloads past graftTimeout while IHAVEs on lazy links come sooner:
    # grafting then fetches a second copy and churns the tree. FIFO links mean the payload is coming as
    # long as the stream flows and nothing past it has arrived.
    key = b"\x01a" + bytes(8)
    stream: dict[bytes, tuple[int, float]] = {}
    tree = TreeBroadcast(graft_timeout=0.25)
    tree.ihave_from(b"b", [(key, 10)], now=0.0, seen=lambda m: False)
    stream[key] = (8, 0.125)  # seq 8 came 125 ms ago: flowing, not yet at 10
    assert tree.due(0.25, {b"b"}, stream.get) == []
    assert tree.wakeup == 0.5
    stream[key] = (9, 0.375)
    assert tree.due(0.5, {b"b"}, stream.get) == []
    stream[key] = (11, 0.625)  # 11 came before 10 over a FIFO path: 10 was lost, graft it now
    assert tree.due(0.75, {b"b"}, stream.get) == [(b"b", [(key, 10)])]

    tree = TreeBroadcast(graft_timeout=0.25)
    tree.ihave_from(b"b", [(key, 10)], now=0.0, seen=lambda m: False)
    stream[key] = (8, 0.0)  # silent for a whole timeout: the eager link stalled or died
    assert tree.due(0.25, {b"b"}, stream.get) == [(b"b", [(key, 10)])]

    tree = TreeBroadcast(graft_timeout=0.25)
    tree.ihave_from(b"b", [(key, 10)], now=0.0, seen=lambda m: False)
    for tick in range(1, MAX_POSTPONE):  # a stream that flows but never gets there: bounded wait
        stream[key] = (8, tick / 4 - 0.125)
        assert tree.due(tick / 4, {b"b"}, stream.get) == []
    assert tree.due(MAX_POSTPONE / 4, {b"b"}, stream.get) == [(b"b", [(key, 10)])]

    tree = TreeBroadcast(graft_timeout=0.25)
    tree.ihave_from(b"b", [(key, 10)], now=0.0, seen=lambda m: False)
    assert tree.due(0.25, {b"b"}, lambda k: None) == [(b"b", [(key, 10)])]  # a stream never seen


def test_grafts_unanswered_per_peer_stay_within_the_window() -> None:
    # A graft answer goes into one send queue at once; a backlog of thousands overflowed it. Ids asked
    # and not yet answered are bounded per peer, and a second announcer takes what the first cannot.
    key = b"\x01a" + bytes(8)
    messages = [(key, seq) for seq in range(1, 3 * GRAFT_WINDOW + 1)]
    tree = TreeBroadcast(graft_timeout=0.25)
    tree.ihave_from(b"b", messages, now=0.0, seen=lambda m: False)
    tree.ihave_from(b"c", messages[:2 * GRAFT_WINDOW], now=0.0, seen=lambda m: False)
    assert tree.due(0.25, {b"b", b"c"}) == [(b"b", messages[:GRAFT_WINDOW]),
                                             (b"c", messages[GRAFT_WINDOW:2 * GRAFT_WINDOW])]
    assert tree.due(0.375, {b"b", b"c"}) == []  # both windows full: the rest waits
    assert tree.wakeup == 0.5  # (no busy wake-up for the waiting ones)
    for message in messages[:10]:
        tree.received(message, b"body")  # answers free 10 places in b's window
    assert tree.wakeup == 0.375  # ... and ask for a tick at once, not at the next deadline
    assert tree.due(0.4375, {b"b", b"c"}) == [(b"b", messages[2 * GRAFT_WINDOW:2 * GRAFT_WINDOW + 10])]
    # Unanswered within the timeout: out of the window, asked of the other announcer, oldest first
    # (b still has 10 in flight: room for GRAFT_WINDOW - 10).
    grafts = dict(tree.due(0.5, {b"b", b"c"}))
    assert grafts[b"c"] == messages[10:GRAFT_WINDOW]
    assert grafts[b"b"] == messages[GRAFT_WINDOW:2 * GRAFT_WINDOW - 10]


def test_a_graft_answer_is_bounded() -> None:
    tree = TreeBroadcast(graft_timeout=0.1)
    key = b"\x01a" + bytes(8)
    for seq in range(1, 2 * MAX_GRAFT + 1):
        tree.received((key, seq), b"body")
    assert len(tree.grafted_by(b"x", [(key, seq) for seq in range(1, 2 * MAX_GRAFT + 1)])) == MAX_GRAFT


def test_the_leading_path_of_a_stream_is_not_pruned_for_a_duplicate() -> None:
    # Two eager paths of one stream at different delays each bring some duplicates; pruning both
    # left a node with no eager path. The one that brought the newest first copy keeps its link.
    key = b"\x01a" + bytes(8)
    tree = TreeBroadcast(graft_timeout=0.1)
    tree.received((key, 1), b"body", b"slow")
    tree.received((key, 5), b"body", b"fast")  # fast leads
    tree.received((key, 2), b"body", b"slow")  # an older one first from slow: fast still leads
    assert tree.duplicate_from(b"fast", key) is False
    assert b"fast" not in tree.lazy
    assert tree.duplicate_from(b"slow", key) is True
    tree.received((key, 6), b"body", b"other")
    assert tree.duplicate_from(b"fast", key) is True  # no longer the leader
    tree.received((key, 7), b"body", b"last")
    tree.link_lost(b"last")  # a lost link leads nothing
    tree.grafted_by(b"last", [])
    assert tree.duplicate_from(b"last", key) is True
    assert tree.duplicate_from(b"third", b"\x01b" + bytes(8)) is True  # an untracked stream: plain Plumtree


def test_graft_cache_is_bounded_in_bytes_as_well_as_in_frames() -> None:
    tree = TreeBroadcast(0.1, cache_size=1000, cache_bytes=10_000)
    for seq in range(1, 11):
        tree.received((b"key", seq), bytes(3000))  # batches of 3,000 bytes: three fit
    assert tree.grafted_by(b"p", [(b"key", seq) for seq in range(1, 11)]) == [bytes(3000)] * 3
    small = TreeBroadcast(0.1, cache_size=2)
    for seq in range(1, 5):
        small.received((b"key", seq), b"x")
    assert small.grafted_by(b"p", [(b"key", seq) for seq in range(1, 5)]) == [b"x", b"x"]


def test_the_prune_of_a_nodes_last_eager_link_is_answered_with_a_graft() -> None:
    net = MemNet(seed=9, trace=False)
    net.add_node("x", broadcast="tree")
    raws = {}
    for name in ("p", "q"):
        raw = raws[name] = net.raw_dial("x")
        raw.send(wire.encode_control(wire.KIND_HELLO, {
            "version": wire.PROTOCOL_VERSION, "cluster": "swarm", "name": name, "epoch": 1,
            "address": ["10.9.9.9", 7000 + len(raws)], "nonce": len(raws)}))
    net.run_for(0.2)
    assert set(net.state("x").linked_peers) == {"p", "q"}
    tree = net.state("x").tree
    raws["p"].send(wire.encode_control(wire.KIND_PRUNE, {}))
    net.run_for(0.1)
    assert tree.lazy == {b"p"}  # obeyed: q is still eager
    raws["q"].send(wire.encode_control(wire.KIND_PRUNE, {}))
    net.run_for(0.1)
    assert tree.lazy == {b"p"}  # refused: q was the last eager link
    assert wire.KIND_GRAFT in raws["q"].kinds() and wire.KIND_GRAFT not in raws["p"].kinds()
    assert net.state("x").counters["prunes_refused"] == 1
