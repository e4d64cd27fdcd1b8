"""The delivery semantics of issue 2, each one a test, and the old full-mesh connector's regressions.

All nodes run in this process on 127.0.0.1 with ephemeral ports; every wait is bounded (see cluster.py).
Semantics 8 (frames split across reads) is covered by the framing unit tests.
"""

from __future__ import annotations

import socket
from collections import Counter, defaultdict
from typing import Any

import pytest
import trio
from cluster import (
    Errors,
    Inbox,
    Proxy,
    barrier,
    cluster,
    links,
    node,
    wait_mesh,
    wait_ready,
    wait_until,
)

import swarm


def counter(conn: swarm.Connector, key: str) -> int:
    return int(conn.status()["counters"].get(key, 0))


def closed_port() -> int:
    """A loopback port nothing listens on (bound once, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def strictly_equal(a: Any, b: Any) -> bool:
    """Deep equality that also requires equal types (so True != 1, b'x' != 'x', 1.0 != 1)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(strictly_equal(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(strictly_equal(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def describe(sequence: list[int], total: int) -> str:
    """Where a received sequence first departs from 0..total-1."""
    for index, (got, want) in enumerate(zip(sequence, range(total), strict=False)):
        if got != want:
            return f"position {index}: got {got}, expected {want} ({len(sequence)} received)"
    return f"{len(sequence)} received, expected {total}"


# -------------------------------------------------------------------------------------------- 1. ready


async def test_1_lone_first_node_is_ready_at_once() -> None:
    conn = node("first")
    readies: list[bool] = []
    conn.on("ready", lambda: readies.append(True))
    assert conn.is_ready is False
    assert conn.options.minimumPeers == 0
    async with conn:
        await wait_ready([conn])
        assert conn.is_ready is True
        assert readies == [True]
        assert links(conn) == []


async def test_1_node_with_seeds_is_ready_only_once_linked() -> None:
    port = closed_port()
    lonely = node("lonely", [("127.0.0.1", port)])
    assert lonely.options.minimumPeers == 1
    async with lonely:
        # Its seed does not answer: it retries and stays not ready.
        await wait_until(lambda: counter(lonely, "dial_failures") >= 2, what="two failed dials")
        assert lonely.is_ready is False
        assert links(lonely) == []

    async with node("A") as a:
        b = node("B", [a.address])
        links_at_ready: list[list[str]] = []
        b.on("ready", lambda: links_at_ready.append(links(b)))
        assert b.is_ready is False
        async with b:
            await wait_ready([b])
            assert b.is_ready is True
            assert links_at_ready == [["A"]]


async def test_1_ready_waits_for_minimum_peers() -> None:
    async with node("A") as a:
        b = node("B", [a.address], minimumPeers=2)
        readies: list[list[str]] = []
        b.on("ready", lambda: readies.append(links(b)))
        async with b:
            await wait_until(lambda: links(b) == ["A"], what="B linked to A")
            # One link of the two required: B is still not ready.
            assert b.is_ready is False
            assert readies == []
            async with node("C", [a.address]) as c:
                await wait_ready([b, c])
                assert b.is_ready is True
                assert readies == [["A", "C"]]


# ------------------------------------------------------------------------------------- 2. exactly once


async def test_2_exactly_once_with_several_paths_and_concurrent_publishers() -> None:
    names = ["n0", "n1", "n2", "n3", "n4"]
    publishers = ["n0", "n2", "n3", "n4"]
    count = 300
    inboxes = {name: Inbox(name) for name in names}

    def subscribe(conn: swarm.Connector) -> None:
        conn.subscribe("mesh", inboxes[conn.server_name])

    async with cluster(names, before_start=subscribe) as conns:
        by_name = {conn.server_name: conn for conn in conns}

        async def publish_all(name: str) -> None:
            conn = by_name[name]
            for i in range(count):
                conn.publish("mesh", {"from": name, "i": i})
                await trio.sleep(0)  # let the other publishers interleave: messages cross on every link

        async with trio.open_nursery() as nursery:
            for name in publishers:
                nursery.start_soon(publish_all, name)

        def expected(name: str) -> int:
            return count * sum(1 for p in publishers if p != name)

        await wait_until(lambda: all(len(inboxes[n]) >= expected(n) for n in names), what="all delivered")
        await barrier(conns)
        for name in names:
            got = Counter((m["from"], m["i"]) for m in inboxes[name].messages)
            want = {(p, i) for p in publishers if p != name for i in range(count)}
            assert set(got) == want, name
            duplicates = [key for key, times in got.items() if times > 1]
            assert duplicates == [], f"{name} got duplicates: {duplicates[:5]}"
        # The overlay offered several paths: relayed copies arrived and were suppressed.
        assert sum(counter(conn, "duplicates") for conn in conns) > 0


# ------------------------------------------------------------------------------------------ 3. no echo


async def test_3_publisher_never_receives_its_own_messages() -> None:
    inboxes: dict[str, Inbox] = {}

    def subscribe(conn: swarm.Connector) -> None:
        inboxes[conn.server_name] = Inbox(conn.server_name)
        conn.subscribe("echo", inboxes[conn.server_name])

    async with cluster(["A", "B", "C", "D"], before_start=subscribe) as conns:
        for conn in conns:
            for i in range(20):
                conn.publish("echo", {"from": conn.server_name, "i": i})
        await wait_until(lambda: all(len(inbox) == 60 for inbox in inboxes.values()), what="60 each")
        await barrier(conns)
        for name, inbox in inboxes.items():
            senders = Counter(m["from"] for m in inbox.messages)
            assert name not in senders, f"{name} received its own message"
            assert senders == {other: 20 for other in inboxes if other != name}


# ------------------------------------------------------------------------------------- 4. FIFO, epochs


async def test_4_per_origin_fifo_under_concurrent_floods() -> None:
    names = ["A", "B", "C", "D"]
    publishers = ["A", "B"]
    total, burst = 3000, 250
    received: dict[str, dict[str, list[int]]] = {name: defaultdict(list) for name in names}

    def subscribe(conn: swarm.Connector) -> None:
        per_origin = received[conn.server_name]
        conn.subscribe("fifo", lambda m: per_origin[m[0]].append(m[1]))

    async with cluster(names, before_start=subscribe) as conns:
        by_name = {conn.server_name: conn for conn in conns}

        async def flood(name: str) -> None:
            conn = by_name[name]
            for start in range(0, total, burst):
                for seq in range(start, min(start + burst, total)):
                    conn.publish("fifo", [name, seq])
                await conn.drain()

        async with trio.open_nursery() as nursery:
            for name in publishers:
                nursery.start_soon(flood, name)

        def complete() -> bool:
            return all(len(received[n][p]) >= total for n in names for p in publishers if p != n)

        await wait_until(complete, what="all messages of both floods")
        await barrier(conns)
        for name in names:
            for origin in publishers:
                if origin == name:
                    assert origin not in received[name]
                    continue
                sequence = received[name][origin]
                assert sequence == list(range(total)), f"{name} from {origin}: {describe(sequence, total)}"
        for conn in conns:
            assert counter(conn, "gaps_given_up") == 0
            assert counter(conn, "send_queue_overflow") == 0


async def test_4_restarted_node_is_a_new_epoch_and_its_messages_are_delivered() -> None:
    inbox_a, inbox_c = Inbox("A"), Inbox("C")
    async with node("A") as a, node("C", [a.address]) as c:
        a.subscribe("epoch", inbox_a)
        c.subscribe("epoch", inbox_c)
        async with node("B", [a.address]) as b:
            await wait_ready([b, c])
            await wait_mesh([a, b, c])
            for i in range(5):
                b.publish("epoch", ["old", i])
            await wait_until(lambda: len(inbox_a) == 5 and len(inbox_c) == 5, what="old messages")
            old_epoch = b.status()["epoch"]
        await wait_until(lambda: links(a) == ["C"] and links(c) == ["A"], what="B gone")

        # The same server name again, on another ephemeral port: its sequence numbers start over.
        async with node("B", [a.address]) as b2:
            await wait_ready([b2])
            await wait_mesh([a, b2, c])
            assert b2.status()["epoch"] > old_epoch
            for i in range(5):
                b2.publish("epoch", ["new", i])
            await wait_until(lambda: len(inbox_a) == 10 and len(inbox_c) == 10, what="new messages")
            await barrier([a, b2, c])
    expected = [["old", i] for i in range(5)] + [["new", i] for i in range(5)]
    assert inbox_a.messages == expected
    assert inbox_c.messages == expected


# ---------------------------------------------------------------------------------------- 5. callbacks


async def test_5_several_callbacks_share_a_topic_and_unsubscribe_removes_one() -> None:
    async with cluster(["A", "B"]) as (a, b):
        first, second, third = Inbox("1"), Inbox("2"), Inbox("3")
        for inbox in (first, second, third):
            b.subscribe("shared", inbox)
        a.publish("shared", "one")
        await wait_until(lambda: len(first) == len(second) == len(third) == 1, what="three callbacks")

        b.unsubscribe("shared", second)
        a.publish("shared", "two")
        await wait_until(lambda: len(first) == len(third) == 2, what="two callbacks")
        await barrier([a, b])
        assert first.messages == ["one", "two"]
        assert second.messages == ["one"]
        assert third.messages == ["one", "two"]


async def test_5_same_callback_twice_is_called_twice_and_unsubscribed_once() -> None:
    async with cluster(["A", "B"]) as (a, b):
        inbox = Inbox()
        b.subscribe("twice", inbox)
        b.subscribe("twice", inbox)
        a.publish("twice", 1)
        await wait_until(lambda: inbox.messages == [1, 1], what="two calls")
        b.unsubscribe("twice", inbox)
        a.publish("twice", 2)
        await wait_until(lambda: inbox.messages == [1, 1, 2], what="one call")
        await barrier([a, b])
        assert inbox.messages == [1, 1, 2]


# ------------------------------------------------------------------------------------ 6. no subscriber


async def test_6_message_without_subscriber_is_dropped_and_counted_without_error() -> None:
    async with cluster(["A", "B"]) as (a, b):
        errors = Errors(b)
        other = Inbox()
        b.subscribe("someone", other)
        before = counter(b, "dropped_no_subscriber")
        for i in range(25):
            a.publish("nobody", i)
        a.publish("someone", "after")
        await wait_until(lambda: other.messages == ["after"], what="subscribed topic delivered")
        # Per-origin order: "after" came last, so the 25 unsubscribed ones were all handled before it.
        assert counter(b, "dropped_no_subscriber") == before + 25
        assert errors.errors == []
        assert links(b) == ["A"]


# -------------------------------------------------------------------------------------- 7. late joiner


async def _late_joiner_run(a: swarm.Connector, b: swarm.Connector, c: swarm.Connector,
                           seed: tuple[str, int]) -> tuple[list[int], int, int]:
    """B publishes a paced stream while D joins through `seed`; return (D's messages, ready mark, last)."""
    published: list[int] = []
    stop = trio.Event()

    async def produce() -> None:
        while not stop.is_set():
            b.publish("stream", len(published))
            published.append(len(published))
            await trio.sleep(0.002)

    late = node("D", [seed])
    inbox = Inbox("D")
    late.subscribe("stream", inbox)
    ready_at: list[int] = []
    # Messages numbered ready_at[0] and up were published after D became ready.
    late.on("ready", lambda: ready_at.append(len(published)))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(produce)
        await wait_until(lambda: len(published) >= 50, what="producer running")
        async with late:
            await wait_ready([late])
            await wait_mesh([a, b, c, late])
            mark = ready_at[0]
            await wait_until(lambda: len(inbox) > 0 and inbox.messages[-1] >= mark + 100,
                             what="D receives the stream")
            stop.set()
            last = published[-1]
            await wait_until(lambda: len(inbox) > 0 and inbox.messages[-1] == last, what="last message")
            await barrier([a, b, c, late])
    return inbox.messages, mark, last


def _check_late_joiner(messages: list[int], mark: int, last: int) -> None:
    missing = sorted(set(range(mark, last + 1)) - set(messages))
    assert missing == [], f"D missed {len(missing)} messages published after it became ready: {missing[:10]}"
    assert messages == list(range(messages[0], last + 1)), "gap, duplicate or reordering at D"


async def test_7_late_joiner_receives_everything_published_after_it_became_ready() -> None:
    async with cluster(["A", "B", "C"]) as (a, b, c):
        messages, mark, last = await _late_joiner_run(a, b, c, a.address)
    _check_late_joiner(messages, mark, last)


async def test_7_late_joiner_over_a_slow_first_link_receives_everything_after_ready() -> None:
    # D's seed path delivers D's handshake to A only after 0.3 s, while A's reaches D at once.
    async with trio.open_nursery() as nursery:
        async with cluster(["A", "B", "C"]) as (a, b, c):
            proxy = Proxy(a.address, first_chunk_delay=0.3)
            await nursery.start(proxy.run)
            assert proxy.address is not None
            messages, mark, last = await _late_joiner_run(a, b, c, proxy.address)
        nursery.cancel_scope.cancel()
    _check_late_joiner(messages, mark, last)


# --------------------------------------------------------------------------------------- topics, types


async def test_int_topics_work_and_differ_from_str_topics() -> None:
    async with cluster(["A", "B"]) as (a, b):
        as_int, as_str, big = Inbox("4"), Inbox("'4'"), Inbox("big")
        b.subscribe(4, as_int)
        b.subscribe("4", as_str)
        b.subscribe(-(2**63), big)
        a.publish(4, "int")
        a.publish("4", "str")
        a.publish(-(2**63), "min")
        await wait_until(lambda: len(as_int) == 1 and len(as_str) == 1 and len(big) == 1, what="topics")
        await barrier([a, b])
        assert as_int.messages == ["int"]
        assert as_str.messages == ["str"]
        assert big.messages == ["min"]


def test_bad_topics_are_refused() -> None:
    conn = node("T")
    with pytest.raises(TypeError):
        conn.subscribe(1.5, Inbox())  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        conn.subscribe(True, Inbox())


MESSAGES: list[Any] = [
    {"some": "data"},
    [1, "two", 3.5, None],
    "text",
    "",
    "ünïcødé ✓ 漢字",
    b"\x00\xffbytes",
    b"",
    0,
    -1,
    2**63 - 1,
    -(2**63),
    2**64 - 1,
    3.141592653589793,
    -0.5,
    float("inf"),
    True,
    False,
    None,
    [],
    {},
    {"nested": {"list": [1, {"deep": [None, True, b"x", 2.5]}], "n": -5}, "empty": {"l": []}},
    {1: "int key", "s": [[[[]]]]},
]


async def test_message_types_arrive_deep_equal() -> None:
    async with cluster(["A", "B", "C"]) as (a, b, c):
        inbox_b, inbox_c = Inbox("B"), Inbox("C")
        b.subscribe("types", inbox_b)
        c.subscribe("types", inbox_c)
        for message in MESSAGES:
            a.publish("types", message)
        await wait_until(lambda: len(inbox_b) == len(inbox_c) == len(MESSAGES), what="all types")
        for inbox in (inbox_b, inbox_c):
            for sent, got in zip(MESSAGES, inbox.messages, strict=True):
                assert strictly_equal(sent, got), (sent, got)


async def test_tuples_arrive_as_lists() -> None:
    async with cluster(["A", "B"]) as (a, b):
        inbox = Inbox()
        b.subscribe("tuple", inbox)
        a.publish("tuple", (1, (2, 3)))
        await wait_until(lambda: len(inbox) == 1, what="tuple")
        assert strictly_equal(inbox.messages[0], [1, [2, 3]])


async def test_each_callback_and_receiver_gets_its_own_copy() -> None:
    async with cluster(["A", "B", "C"]) as (a, b, c):
        original = {"list": [1, 2], "inner": {"k": "v"}}
        seen_by_second: list[Any] = []

        def mutate(message: Any) -> None:
            message["list"].append(99)
            message["inner"]["k"] = "changed"
            message["added"] = True

        def snapshot(message: Any) -> None:
            seen_by_second.append(repr(message))

        b.subscribe("copy", mutate)  # registered first, so it runs first
        b.subscribe("copy", snapshot)
        inbox_c = Inbox("C")
        c.subscribe("copy", inbox_c)
        a.publish("copy", original)
        # The publisher's own object is not shared with anyone either.
        original["list"].append("after publish")
        await wait_until(lambda: len(seen_by_second) == 1 and len(inbox_c) == 1, what="copies")
        assert seen_by_second == [repr({"list": [1, 2], "inner": {"k": "v"}})]
        assert inbox_c.messages == [{"list": [1, 2], "inner": {"k": "v"}}]


async def test_async_callbacks_work_and_keep_order() -> None:
    async with cluster(["A", "B"]) as (a, b):
        got_async: list[int] = []
        got_sync: list[int] = []

        async def slow(message: int) -> None:
            # Vary the time each one takes: order must still be publish order.
            await trio.sleep(0.001 if message % 3 == 0 else 0)
            got_async.append(message)

        b.subscribe("async", slow)
        b.subscribe("async", got_sync.append)
        for i in range(200):
            a.publish("async", i)
        await wait_until(lambda: len(got_async) == 200 and len(got_sync) == 200, what="async deliveries")
        assert got_async == list(range(200))
        assert got_sync == list(range(200))


# -------------------------------------------------------------------------------------------- failures


async def test_raising_callback_is_reported_counted_and_node_keeps_delivering() -> None:
    async with cluster(["A", "B"]) as (a, b):
        errors = Errors(b)
        good = Inbox("good")
        calls: list[int] = []

        def bad(message: int) -> None:
            calls.append(message)
            if message % 2 == 0:
                raise RuntimeError(f"boom {message}")

        async def bad_async(message: int) -> None:
            await trio.sleep(0)
            if message == 3:
                raise KeyError("async boom")

        b.subscribe("cb", bad)
        b.subscribe("cb", bad_async)
        b.subscribe("cb", good)
        for i in range(6):
            a.publish("cb", i)
        # sync raises for 0, 2, 4 and async raises for 3: four errors.
        await wait_until(lambda: len(good) == 6 and len(errors.errors) == 4, what="deliveries and errors")
        assert good.messages == list(range(6))
        assert calls == list(range(6))
        assert errors.codes() == ["callback"] * 4
        assert all(isinstance(error, swarm.NodeError) for error in errors.errors)
        assert any("boom 2" in str(error) for error in errors.errors)
        assert any("async boom" in str(error) for error in errors.errors)
        assert counter(b, "callback_errors") == 4
        # Still linked and delivering.
        assert links(b) == ["A"]
        a.publish("cb", 7)
        await wait_until(lambda: good.messages[-1:] == [7], what="delivery after errors")


async def test_publish_over_max_message_size_raises_and_sends_nothing() -> None:
    async with cluster(["A", "B"], maxMessageSize=1024) as (a, b):
        inbox = Inbox()
        b.subscribe("size", inbox)
        published = counter(a, "published")
        with pytest.raises(swarm.MessageTooLarge):
            a.publish("size", b"x" * 2000)
        with pytest.raises(swarm.MessageTooLarge):
            a.publish("size", {"text": "y" * 1100})
        # msgpack's bin 16 header is 3 bytes: 1021 bytes encode to exactly maxMessageSize.
        with pytest.raises(swarm.MessageTooLarge):
            a.publish("size", b"z" * 1022)
        assert counter(a, "published") == published
        a.publish("size", b"z" * 1021)
        a.publish("size", "small")
        await wait_until(lambda: len(inbox) == 2, what="the messages that fit")
        await barrier([a, b])
        assert inbox.messages == [b"z" * 1021, "small"]
        # The refused messages used no sequence number: no gap had to be given up at B.
        assert counter(b, "gaps_given_up") == 0


async def test_close_emits_close_and_peers_see_the_node_leave() -> None:
    async with cluster(["A", "B", "C"]) as (a, b, c):
        closes: list[int] = []
        c.on("close", lambda: closes.append(1))
        await c.close()
        assert closes == [1]
        await wait_until(lambda: links(a) == ["B"] and links(b) == ["A"], what="C gone from the links")
        await c.close()
        assert closes == [1]
        # The others go on.
        inbox = Inbox()
        b.subscribe("after-close", inbox)
        a.publish("after-close", "still here")
        await wait_until(lambda: inbox.messages == ["still here"], what="A to B after C left")


async def test_leaving_the_async_with_tells_peers_and_emits_close() -> None:
    closes: list[int] = []
    async with node("A") as a, node("B", [a.address]) as b:
        async with node("C", [a.address]) as c:
            c.on("close", lambda: closes.append(1))
            await wait_ready([b, c])
            await wait_mesh([a, b, c])
            left_before = counter(a, "members_left")
        assert closes == [1]
        await wait_until(lambda: links(a) == ["B"] and links(b) == ["A"], what="C gone from the links")
        # A graceful leave, announced: not a link that merely died.
        await wait_until(lambda: counter(a, "members_left") == left_before + 1, what="C's leave counted")


# ----------------------------------------------------------------------------------------- regressions


async def test_regression_1_unsubscribed_node_stops_receiving_others_continue() -> None:
    async with cluster(["A", "B", "C"]) as (a, b, c):
        inbox_b, inbox_c = Inbox("B"), Inbox("C")
        b.subscribe("r1", inbox_b)
        c.subscribe("r1", inbox_c)
        a.publish("r1", 1)
        await wait_until(lambda: len(inbox_b) == len(inbox_c) == 1, what="both subscribed")
        b.unsubscribe("r1", inbox_b)
        a.publish("r1", 2)
        c.publish("r1", 3)  # C's own: not for C
        await wait_until(lambda: len(inbox_c) == 2, what="C still receives")
        await barrier([a, b, c])
        assert inbox_b.messages == [1]
        assert inbox_c.messages == [1, 2]
        # Subscribing again brings the messages back.
        b.subscribe("r1", inbox_b)
        a.publish("r1", 4)
        await wait_until(lambda: inbox_b.messages == [1, 4] and inbox_c.messages == [1, 2, 4], what="again")


async def test_regression_2_subscription_made_before_a_peer_connects() -> None:
    early = Inbox("before start")
    first = node("A")
    first.subscribe("r2", early)  # before the node even started
    async with first as a:
        b = node("B", [a.address])
        async with b:
            while_joining = Inbox("while joining")
            b.subscribe("r2", while_joining)  # right after start, before (or while) linking
            await wait_ready([b])
            # The publisher connects only now, after both subscriptions were made.
            async with node("P", [a.address]) as p:
                await wait_ready([p])
                await wait_mesh([a, b, p])
                p.publish("r2", "hello")
                await wait_until(lambda: early.messages == ["hello"] and while_joining.messages == ["hello"],
                                 what="both subscribers")


async def _linked_through_proxy(nursery: trio.Nursery, a: swarm.Connector,
                                **extra: Any) -> tuple[Proxy, swarm.Connector]:
    proxy = Proxy(a.address)
    await nursery.start(proxy.run)
    assert proxy.address is not None
    return proxy, node("B", [proxy.address], **extra)


async def _messages_flow_both_ways(a: swarm.Connector, b: swarm.Connector, tag: str) -> None:
    at_a, at_b = Inbox("A"), Inbox("B")
    a.subscribe(tag, at_a)
    b.subscribe(tag, at_b)
    a.publish(tag, "a->b")
    b.publish(tag, "b->a")
    await wait_until(lambda: at_a.messages == ["b->a"] and at_b.messages == ["a->b"], what=f"flow {tag}")
    a.unsubscribe(tag, at_a)
    b.unsubscribe(tag, at_b)


async def test_regression_4_5_dropped_link_is_removed_and_redialled() -> None:
    async with trio.open_nursery() as nursery:
        async with node("A") as a:
            proxy, b = await _linked_through_proxy(nursery, a)
            async with b:
                await wait_ready([b])
                await wait_mesh([a, b])
                assert proxy.accepted == 1  # the one link goes through the proxy
                await _messages_flow_both_ways(a, b, "before")
                lost_a, lost_b = counter(a, "links_lost"), counter(b, "links_lost")

                proxy.cut()  # the TCP connection dies under both nodes
                await wait_until(
                    lambda: counter(a, "links_lost") > lost_a and counter(b, "links_lost") > lost_b,
                    what="both ends notice the dead link")
                await wait_mesh([a, b])
                await _messages_flow_both_ways(a, b, "after")
        nursery.cancel_scope.cancel()


async def test_regression_4_silent_link_is_dropped_by_keepalive_and_redialled() -> None:
    timeout = 0.5
    async with trio.open_nursery() as nursery:
        async with node("A", failureTimeout=timeout) as a:
            proxy, b = await _linked_through_proxy(nursery, a, failureTimeout=timeout)
            async with b:
                await wait_ready([b])
                await wait_mesh([a, b])
                await _messages_flow_both_ways(a, b, "before")

                proxy.freeze()  # the connection stays open but carries nothing any more
                await wait_until(
                    lambda: counter(a, "failure_timeouts") >= 1 and counter(b, "failure_timeouts") >= 1,
                    what="keepalive timeouts on both ends")
                # The link comes back directly (the proxy path stays dead).
                await wait_mesh([a, b])
                await _messages_flow_both_ways(a, b, "after")
        nursery.cancel_scope.cancel()


async def test_regression_5_peer_restarted_on_a_new_port_is_linked_again() -> None:
    inbox = Inbox()
    async with node("A") as a, node("C", [a.address]) as c:
        a.subscribe("r5", inbox)
        async with node("B", [a.address]) as b:
            await wait_ready([b, c])
            await wait_mesh([a, b, c])
            old_port = b.address[1]
        await wait_until(lambda: links(a) == ["C"] and links(c) == ["A"], what="B gone")
        # Seeded from C this time: A learns the new address from C or from B's own dial.
        async with node("B", [c.address]) as b2:
            assert b2.address[1] != old_port
            await wait_ready([b2])
            await wait_mesh([a, b2, c])
            b2.publish("r5", "back")
            await wait_until(lambda: inbox.messages == ["back"], what="message from the restarted node")
