"""The protocol core (swarm.protocol.state.NodeState), driven by the in-memory network of tests/memnet.py.

No sockets, no trio, no sleeps: a virtual clock and a seeded event loop.
"""

from __future__ import annotations

from collections.abc import Iterable

import pytest
from memnet import MemNet, Publisher

from swarm.protocol import wire
from swarm.topology import FullMesh, MemberView

T = "t"


class Fixed(FullMesh):
    """A neighbour policy that wants exactly the given names: for fixed test topologies."""

    def __init__(self, *names: str) -> None:
        self.names = set(names)

    def wanted(self, own_name: str, members: Iterable[MemberView]) -> set[str]:
        return {m.name for m in members if m.name in self.names and m.reachable}


def addr(i: int) -> tuple[str, int]:
    return (f"10.1.0.{i}", 7000)


def mesh(names: Iterable[str], seed: int = 0, settle: float = 2.0, **net_options: object) -> MemNet:
    """A cluster where every node after the first joins through the first."""
    net = MemNet(seed=seed, **net_options)  # type: ignore[arg-type]
    names = list(names)
    net.add_node(names[0])
    for name in names[1:]:
        net.add_node(name, seeds=[names[0]])
    net.run_for(settle)
    return net


def assert_full_mesh(net: MemNet, names: list[str]) -> None:
    for a in names:
        assert set(net.state(a).linked_peers) == set(names) - {a}, a
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            pairs = net.open_pairs(a, b)
            assert len(pairs) == 1, (a, b, pairs)
            assert net.link_pair(a, b) == net.link_pair(b, a) == next(iter(pairs)), (a, b)


def hello(**overrides: object) -> bytes:
    fields: dict[str, object] = {"version": wire.PROTOCOL_VERSION, "cluster": "swarm", "name": "raw",
                                 "epoch": 1, "address": ["10.9.9.9", 7000], "nonce": 12345}
    fields.update(overrides)
    return wire.encode_control(wire.KIND_HELLO, fields)


def data(origin: str = "raw", seq: int = 1, topic: str | int = T, message: object = "m",
         epoch: int = 1) -> bytes:
    return wire.encode_data(wire.encode_origin(origin), epoch, seq, wire.encode_topic(topic),
                            wire.encode_message(message), 1 << 20)


# ---------------------------------------------------------------------- membership


def test_three_nodes_join_via_seed_and_form_full_mesh() -> None:
    net = mesh("abc")
    assert_full_mesh(net, list("abc"))
    assert sorted(name for _, name in net.readies) == ["a", "b", "c"]
    for name in "abc":
        assert net.state(name).ready
        assert set(net.state(name).known_members) == set("abc") - {name}
    assert net.errors == []


def test_ready_only_after_minimum_peers() -> None:
    net = MemNet(seed=1)
    net.add_node("a", seeds=[addr(99)])  # a seed nobody listens on
    net.run_for(1.0)
    assert not net.state("a").ready
    assert net.readies == []
    net.add_node("b", address=addr(99))
    net.run_for(3.0)
    assert net.state("a").ready
    assert [name for _, name in net.readies].count("a") == 1  # Ready is emitted once


def test_seven_nodes_form_full_mesh() -> None:
    names = [f"n{i}" for i in range(7)]
    net = mesh(names, seed=2, jitter=0.003)
    assert_full_mesh(net, names)


# ---------------------------------------------------------------------- delivery


def test_publish_reaches_every_other_node_exactly_once_never_the_publisher() -> None:
    names = list("abcde")
    net = mesh(names, seed=3, jitter=0.002)
    for i, name in enumerate(names):
        net.publish(name, T, {"from": name, "n": i})
    net.run_for(2.0)
    for receiver in names:
        got = net.delivered(receiver)
        assert sorted(m["from"] for m in got) == sorted(set(names) - {receiver}), receiver
        assert all(d.origin == d.message["from"] for d in net.deliveries if d.node == receiver)
    assert len(net.deliveries) == len(names) * (len(names) - 1)
    for name in names:
        assert net.delivered(name, origin=name) == []


def test_topic_without_subscriber_is_dropped_and_counted() -> None:
    net = MemNet(seed=4)
    net.add_node("a")
    net.add_node("b", seeds=["a"], topics=())
    net.run_for(1.0)
    net.publish("a", "other", 1)
    net.publish("a", 7, 2)
    net.run_for(0.5)
    assert net.delivered("b") == []
    assert net.state("b").counters["dropped_no_subscriber"] == 2
    net.state("b").subscribe(7)
    net.publish("a", 7, 3)
    net.run_for(0.5)
    assert net.delivered("b") == [3]
    assert [d.topic for d in net.deliveries] == [7]


def test_messages_are_deep_equal_copies() -> None:
    net = mesh("ab")
    message = {"s": "ü", "b": b"\x00\xff", "l": [1, 2.5, None, True], "n": {"k": -(1 << 40)}, 3: "int key"}
    net.publish("a", T, message)
    net.run_for(0.5)
    assert net.delivered("b") == [message]


def test_per_origin_order_with_crossing_messages_full_mesh() -> None:
    names = [f"n{i}" for i in range(5)]
    net = mesh(names, seed=5, jitter=0.004)
    for name in names:  # every receiver has a starting point for every origin
        net.publish(name, T, (name, 0))
    net.run_for(1.0)
    publishers = {name: Publisher(net, name) for name in names}
    for i in range(1, 101):
        for name in names:
            publishers[name].at(net.now + net.rng.uniform(0, 0.3), (name, i))
    # Mid-stream, the n0-n1 link drops: their messages take two hops until it is re-dialled, then one.
    net.run_for(0.1)
    assert net.drop_link("n0", "n1") == 1
    net.run_for(2.0)
    assert net.link_pair("n0", "n1") is not None
    assert all(len(p.sent) == 100 for p in publishers.values())
    for receiver in names:
        for origin in names:
            if origin == receiver:
                continue
            got = [tuple(m) for m in net.delivered(receiver, origin=origin)]
            assert got == [(origin, 0)] + [tuple(m) for m in publishers[origin].sent], (receiver, origin)
        assert net.state(receiver).seen.gaps_given_up == 0


@pytest.mark.parametrize("seed", [6, 7, 8])
def test_per_origin_order_over_several_paths(seed: int) -> None:
    """A ring: each message reaches the far side over two paths; jitter makes them overtake each other."""
    n = 6
    net = MemNet(seed=seed, latency=0.001, jitter=0.01)
    names = [f"r{i}" for i in range(n)]
    for i, name in enumerate(names):
        net.add_node(name, address=addr(i), seeds=[addr((i + 1) % n)],
                     policy=Fixed(names[(i + 1) % n], names[(i - 1) % n]))
    net.run_for(2.0)
    for i, name in enumerate(names):
        assert set(net.state(name).linked_peers) == {names[(i + 1) % n], names[(i - 1) % n]}
    held = []
    for name in names:
        seen = net.state(name).seen
        observe = seen.observe

        def counting(origin, seq, now, item, count=1, observe=observe):  # type: ignore[no-untyped-def]
            out = observe(origin, seq, now, item, count)
            if out == []:
                held.append(seq)
            return out

        seen.observe = counting  # type: ignore[method-assign]
    for name in names:
        net.publish(name, T, (name, 0))
    net.run_for(1.0)
    publishers = {name: Publisher(net, name) for name in names}
    start = net.now
    for i in range(1, 201):
        for name in names:
            publishers[name].at(start + i * 0.002 + net.rng.uniform(0, 0.002), (name, i))
    # The r0-r1 link drops: their messages go the long way round (five hops) until it is re-dialled;
    # then the direct path overtakes the messages still on their way round.
    net.run_until(start + 0.1)
    assert net.drop_link("r0", "r1") == 1
    net.run_for(2.0)
    assert net.link_pair("r0", "r1") is not None
    assert held, "the scenario should make messages overtake each other"
    for receiver in names:
        for origin in names:
            if origin != receiver:
                got = [tuple(m) for m in net.delivered(receiver, origin=origin)]
                assert got == [(origin, 0)] + [tuple(m) for m in publishers[origin].sent], (receiver, origin)
        assert net.state(receiver).seen.gaps_given_up == 0


@pytest.mark.parametrize("slow", [0.05, 0.3])
def test_late_joiner_receives_every_message_published_after_it_became_ready(slow: float) -> None:
    """c joins through b and is ready before a has linked it; a's first message after that reaches c the
    slow way (via b, `slow` seconds a hop), after a's second message came over the fresh direct a-c link."""
    net = MemNet(seed=9, latency=0.001)
    net.set_latency("a", "b", slow)
    net.add_node("a", address=addr(1))
    net.add_node("b", address=addr(2), seeds=[addr(1)])
    net.run_for(1.0)
    net.add_node("c", address=addr(3), seeds=[addr(2)])
    assert net.run_until_true(lambda: net.state("c").ready, timeout=2.0, step=0.0001)
    assert "c" not in net.state("a").linked_peers  # the scenario: c is ready, a does not know it yet
    net.publish("a", T, 1)
    assert net.run_until_true(lambda: "c" in net.state("a").linked_peers, timeout=2.0, step=0.0001)
    net.publish("a", T, 2)
    net.run_for(3.0)  # c met a mid-stream (seq 2 first): it settles for reorder_timeout (1 s)
    assert net.delivered("b", origin="a") == [1, 2]
    assert net.delivered("c", origin="a") == [1, 2]


# ---------------------------------------------------------------------- handshake and refusal


def test_other_cluster_name_refused() -> None:
    net = MemNet(seed=10)
    net.add_node("a")
    net.add_node("x", seeds=["a"], cluster_name="other")
    net.run_for(1.0)
    refuse = net.frames_between("a", "x", wire.KIND_REFUSE)
    assert refuse, "a must send REFUSE"
    assert "cluster" in wire.decode_control(refuse[0].body)["reason"]
    assert net.errors_of("a", "refused")
    assert net.errors_of("x", "refused")
    assert net.state("a").linked_peers == {} and net.state("x").linked_peers == {}
    assert "x" not in net.state("a").known_members
    assert not net.state("x").ready
    assert net.open_pairs("a", "x") == set()
    assert net.state("a").counters["cluster_mismatch"] >= 1


@pytest.mark.parametrize("version", [wire.PROTOCOL_VERSION + 1, 0, "1", None])
def test_other_protocol_version_refused(version: object) -> None:
    net = MemNet(seed=11)
    net.add_node("a")
    raw = net.raw_dial("a")
    raw.send(hello(version=version))
    net.run_for(0.5)
    assert raw.kinds()[0] == wire.KIND_HELLO  # a greets first
    assert wire.KIND_REFUSE in raw.kinds()
    reason = wire.decode_control(raw.received[raw.kinds().index(wire.KIND_REFUSE)])["reason"]
    assert "version" in reason
    assert raw.closed
    assert net.errors_of("a", "refused")
    assert net.state("a").known_members == {}


def test_peer_that_never_completes_handshake_is_closed_after_handshake_timeout() -> None:
    net = MemNet(seed=12, tick=0.05)
    net.add_node("a", handshake_timeout=2.0)
    raw = net.raw_dial("a")
    opened = net.now
    net.run_for(1.9)
    assert not raw.closed
    net.run_for(0.2)
    assert raw.closed
    assert raw.closed_at is not None and 2.0 <= raw.closed_at - opened <= 2.0 + 0.05 + 0.002
    assert net.state("a").counters["handshake_timeouts"] == 1


def test_data_before_hello_is_a_protocol_error_closing_only_that_connection() -> None:
    net = mesh("ab", seed=13)
    link = net.link_pair("a", "b")
    raw = net.raw_dial("a")
    raw.send(data(origin="raw"))
    net.run_for(0.5)
    assert raw.closed
    assert net.errors_of("a", "protocol")
    assert net.delivered("a") == []
    assert net.link_pair("a", "b") == link
    net.publish("a", T, "still works")
    net.run_for(0.5)
    assert net.delivered("b") == ["still works"]


def test_oversized_frame_closes_only_that_connection() -> None:
    net = mesh("ab", seed=14)
    link = net.link_pair("a", "b")
    raw = net.raw_dial("a")
    raw.send(hello())
    net.run_for(0.1)
    assert "raw" in net.state("a").linked_peers
    raw.send(wire.LENGTH.pack(wire.max_frame_body(1 << 20) + 1))
    net.run_for(0.1)
    assert raw.closed
    assert net.errors_of("a", "protocol")
    assert "raw" not in net.state("a").linked_peers
    assert net.link_pair("a", "b") == link


def test_malformed_control_frame_closes_only_that_connection() -> None:
    net = mesh("ab", seed=15)
    link = net.link_pair("a", "b")
    raw = net.raw_dial("a")
    raw.send(hello())
    raw.send(wire.LENGTH.pack(3) + bytes((wire.KIND_PEERS,)) + b"\xc1\xc1")
    net.run_for(0.1)
    assert raw.closed
    assert net.errors_of("a", "protocol")
    assert net.link_pair("a", "b") == link


# ---------------------------------------------------------------------- batches


def test_a_batch_travels_as_one_frame_is_relayed_untouched_and_delivered_in_order() -> None:
    net = MemNet(seed=40)
    net.add_node("a", policy=Fixed("b"))
    net.add_node("b", seeds=["a"], policy=Fixed("a", "c"))
    net.add_node("c", seeds=["b"], policy=Fixed("b"))
    net.run_for(2.0)
    for i in range(50):
        net.publish("a", T if i % 2 else "other", i, seal=False)
    assert net.frames_between("a", "b", wire.KIND_DATA) == []  # nothing leaves before the seal
    net.seal_batch("a")
    net.run_for(0.5)
    (sent,) = net.frames_between("a", "b", wire.KIND_DATA)
    (relayed,) = net.frames_between("b", "c", wire.KIND_DATA)
    assert relayed.frame[6:] == sent.frame[6:]  # forwarded as received, only the hop count rewritten
    for name in "bc":
        assert net.delivered(name) == list(range(1, 50, 2)), name  # in order, only the subscribed topic
        assert net.state(name).counters["dropped_no_subscriber"] == 25
        assert net.state(name).counters["delivered"] == 25
    assert net.state("a").counters["published"] == 50
    assert net.state("a").counters["batches_published"] == 1


def test_a_full_batch_is_sealed_and_an_open_one_goes_out_at_the_next_tick() -> None:
    net = mesh("ab", seed=41)
    message = "x" * 1000  # an entry of ~1,010 bytes: 16 fit in wire.BATCH_BYTES
    for i in range(40):
        net.publish("a", T, [i, message], seal=False)
    frames = net.frames_between("a", "b", wire.KIND_DATA)
    assert len(frames) == 2  # two full batches sealed as they filled; the rest still open
    assert all(len(f.frame) - 4 <= wire.BATCH_BYTES + 64 for f in frames)
    net.run_for(0.2)  # no seal_batch: the tick sends it
    assert len(net.frames_between("a", "b", wire.KIND_DATA)) == 3
    assert [m[0] for m in net.delivered("b")] == list(range(40))


def test_leave_sends_the_open_batch_before_the_leave() -> None:
    net = mesh("ab", seed=42)
    net.publish("a", T, "last words", seal=False)
    net.leave("a")
    net.run_for(0.5)
    kinds = [f.kind for f in net.frames_between("a", "b") if f.kind in (wire.KIND_DATA, wire.KIND_LEAVE)]
    assert kinds == [wire.KIND_DATA, wire.KIND_LEAVE]
    assert net.delivered("b") == ["last words"]


def test_a_batch_with_a_cut_entry_is_refused_and_not_relayed() -> None:
    net = mesh("ab", seed=43)
    raw = net.raw_dial("a")
    raw.send(hello())
    net.run_for(0.1)
    good = wire.encode_entry(wire.encode_topic(T), wire.encode_message("ok"), 1 << 20)
    bad = wire.encode_entry(wire.encode_topic(T), wire.encode_message("cut"), 1 << 20)[:-2]
    raw.send(wire.encode_batch(wire.encode_origin("raw"), 1, 1, [good, bad]))
    net.run_for(0.2)
    assert raw.closed
    assert net.errors_of("a", "protocol")
    assert net.delivered("a") == [] and net.delivered("b") == []
    assert net.frames_between("a", "b", wire.KIND_DATA) == []


# ---------------------------------------------------------------------- failure detection


def test_silent_link_closed_after_failure_timeout() -> None:
    net = mesh("ab", seed=16)
    net.blackhole("a", "b")
    silent_from = net.now
    net.run_for(3.0 / 2)
    assert "b" in net.state("a").linked_peers and "a" in net.state("b").linked_peers
    net.run_until(silent_from + 3.0 + 0.2)
    assert "b" not in net.state("a").linked_peers
    assert "a" not in net.state("b").linked_peers
    assert net.state("a").counters["failure_timeouts"] >= 1
    assert net.state("b").counters["failure_timeouts"] >= 1


def test_keepalive_pings_keep_a_quiet_link_alive() -> None:
    net = mesh("ab", seed=17)
    link = net.link_pair("a", "b")
    start = net.now
    net.run_for(30.0)
    assert net.link_pair("a", "b") == net.link_pair("b", "a") == link
    assert net.state("a").counters["failure_timeouts"] == 0
    assert net.state("b").counters["failure_timeouts"] == 0
    pings = [f for f in net.frames_between("a", "b", wire.KIND_PING) if f.time >= start]
    assert len(pings) >= 25  # a third of failure_timeout apart over 30 s
    gaps = [b.time - a.time for a, b in zip(pings, pings[1:], strict=False)]
    assert max(gaps) < 3.0


def test_dropped_link_is_redialled() -> None:
    net = mesh("ab", seed=18)
    old = net.link_pair("a", "b")
    assert net.drop_link("a", "b") == 1
    dropped_at = net.now
    assert net.run_until_true(lambda: net.link_pair("a", "b") is not None
                              and net.link_pair("a", "b") == net.link_pair("b", "a"), timeout=1.0)
    assert net.link_pair("a", "b") != old
    assert net.now - dropped_at < 0.5  # reconnect_min_delay is 0.05
    net.publish("b", T, "after")
    net.run_for(0.2)
    assert net.delivered("a") == ["after"]


def test_no_dial_storm_to_a_peer_that_never_answers_the_handshake() -> None:
    """A hung peer (its kernel accepts connections, the process answers nothing) must not get a new
    connection on every tick: one handshake attempt at a time, and after thawing, one link."""
    net = mesh("ab", seed=34)
    net.freeze("b")
    frozen_at = net.now
    assert net.run_until_true(lambda: "b" not in net.state("a").linked_peers, timeout=4.0)
    assert net.state("a").counters["failure_timeouts"] == 1
    most_pending = 0
    for _ in range(40):
        net.run_for(0.05)
        most_pending = max(most_pending, len(net.nodes["a"].ends))
    dials = [t for t in net.dials_to(net.nodes["b"].address, by="a") if t >= frozen_at]
    assert len(dials) <= 3, f"{len(dials)} dials in 2 s"
    assert most_pending <= 1
    net.thaw("b")
    net.run_for(5.0)
    assert len(net.open_pairs("a", "b")) == 1
    assert net.link_pair("a", "b") == net.link_pair("b", "a")


def test_redial_of_a_dead_peer_backs_off() -> None:
    net = mesh("ab", seed=19)
    b_address = net.nodes["b"].address
    net.crash("b")
    crashed_at = net.now
    net.run_for(20.0)
    dials = net.dials_to(b_address, by="a")
    assert dials, "a must try to re-dial b"
    assert dials[0] - crashed_at >= 0.05 / 2
    gaps = [y - x for x, y in zip(dials, dials[1:], strict=False)]
    assert min(gaps) >= 0.05 / 2
    assert max(gaps) <= 2.0 + 0.05 + 0.1
    assert len(dials) < 40  # a dial per tick would be 400
    assert sum(gaps[-5:]) / 5 > sum(gaps[:3]) / 3
    net.restart("b")
    assert net.run_until_true(lambda: "b" in net.state("a").linked_peers, timeout=3.0)


def test_node_with_its_own_address_in_seeds_never_dials_it() -> None:
    net = MemNet(seed=20)
    net.add_node("b", address=addr(2))
    net.add_node("a", address=addr(1), seeds=[addr(1), addr(2)])
    net.run_for(5.0)
    assert net.dials_to(addr(1)) == []
    assert "b" in net.state("a").linked_peers


def test_node_that_dialled_itself_stops_dialling_that_address() -> None:
    net = MemNet(seed=21)
    net.add_node("b", address=addr(2))
    alias = ("127.0.0.1", 7000)
    net.add_node("a", address=addr(1), aliases=[alias], seeds=[alias, addr(2)])
    net.run_for(10.0)
    assert len(net.dials_to(alias, by="a")) == 1
    assert not [end for end in net.nodes["a"].ends.values() if end.peer is not None and end.peer.owner is
                net.nodes["a"]]
    assert "b" in net.state("a").linked_peers
    assert "a" not in net.state("a").known_members
    assert net.errors == []


@pytest.mark.parametrize("seed", range(22, 30))
def test_simultaneous_dials_end_with_one_link_and_no_loss(seed: int) -> None:
    net = MemNet(seed=seed, jitter=0.003)
    net.add_node("a", address=addr(1), seeds=[addr(2)])
    net.add_node("b", address=addr(2), seeds=[addr(1)])
    expected: dict[str, list[int]] = {"a": [], "b": []}

    def publish(name: str, i: int) -> None:
        if net.state(name).linked_peers:
            expected[name].append(i)
        net.publish(name, T, i)

    for i in range(1, 301):
        for name in "ab":
            net._schedule(i * 0.0002, publish, name, i)
    net.run_for(3.0)
    assert net.dials_to(addr(2), by="a") and net.dials_to(addr(1), by="b")
    pairs = net.open_pairs("a", "b")
    assert len(pairs) == 1
    assert net.link_pair("a", "b") == net.link_pair("b", "a") == next(iter(pairs))
    assert net.state("a").counters["duplicate_connections"] >= 1
    assert net.state("b").counters["duplicate_connections"] >= 1
    assert net.state("a").counters["protocol_errors"] == net.state("b").counters["protocol_errors"] == 0
    # The extra connection was retired (drained), not closed, on both sides.
    assert {name for _, name, _, _ in net.retires} == {"a", "b"}
    assert net.close_actions == []
    # Both ends chose the same survivor at once: the link, once made, was never lost.
    for name in "ab":
        assert net.state(name).counters["links_made"] == 1, name
        assert net.state(name).counters["links_lost"] == 0, name
    assert expected["a"] and expected["b"]
    assert net.delivered("b", origin="a") == expected["a"]
    assert net.delivered("a", origin="b") == expected["b"]


def test_leave_makes_peers_drop_the_member_and_not_redial_it() -> None:
    net = mesh("abc", seed=30)
    c_address = net.nodes["c"].address
    net.leave("c")
    left_at = net.now
    net.run_for(10.0)
    for name in "ab":
        state = net.state(name)
        assert "c" not in state.linked_peers
        assert "c" not in state.known_members
        assert state.counters["members_left"] == 1
        assert [t for t in net.dials_to(c_address, by=name) if t >= left_at] == []
    assert net.link_pair("a", "b") is not None
    net.publish("a", T, "bye c")
    net.run_for(0.5)
    assert net.delivered("b") == ["bye c"]


@pytest.mark.parametrize("notify", [True, False])
def test_restarted_node_messages_delivered(notify: bool) -> None:
    net = mesh("abc", seed=31)
    for i in range(1, 6):
        net.publish("b", T, ("old", i))
    net.run_for(0.5)
    net.restart("b", notify=notify)
    assert net.nodes["b"].epoch == 2
    assert net.run_until_true(lambda: set(net.state("b").linked_peers) == {"a", "c"}, timeout=5.0)
    for i in range(1, 6):
        net.publish("b", T, ("new", i))
    net.run_for(1.0)
    expected = [("old", i) for i in range(1, 6)] + [("new", i) for i in range(1, 6)]
    for name in "ac":
        assert [tuple(m) for m in net.delivered(name, origin="b")] == expected, name


@pytest.mark.parametrize("notify", [True, False])
@pytest.mark.parametrize("seed", [32, 35, 42])
def test_restarted_node_is_relinked_to_every_peer(notify: bool, seed: int) -> None:
    """After a restart (with or without its old connections being closed), every peer drops the old
    link and keeps one new link to the new process, well within failure_timeout and without churn."""
    net = mesh("abc", seed=seed)
    old_ends = {name: {end.id for end in net.nodes[name].ends.values()} for name in "ac"}
    net.restart("b", notify=notify)
    restarted_at = net.now
    net.run_for(1.0)
    for name in "ac":
        assert len(net.open_pairs(name, "b")) == 1, name
        assert net.link_pair(name, "b") == net.link_pair("b", name) is not None, name
        b_ends = [end for end in net.nodes[name].ends.values() if end.peer is not None
                  and end.peer.owner is net.nodes["b"]]
        # The connection to b's previous process is gone: b's new epoch is known, the old one is dead.
        assert [end.id for end in b_ends if end.id in old_ends[name]] == [], name
    # The new process links each peer once and keeps the link (no retire-and-redial churn).
    assert net.state("b").counters["links_lost"] == 0
    assert len([t for t in net.dials_to(net.nodes["c"].address, by="b") if t >= restarted_at]) <= 2


def test_direct_messages_to_a_restarted_node_start_a_new_count() -> None:
    """A restarted target is a new process: the sender's direct numbering for it starts again, so the
    new process does not meet the stream mid-way and hold it for reorder_timeout."""
    net = mesh("ab", seed=40)
    for i in range(3):
        net.send_direct("a", "b", T, ("before", i))
    net.run_for(0.5)
    assert [m[1] for m in net.delivered("b", origin="a")] == [0, 1, 2]
    net.restart("b")
    net.run_for(1.0)
    assert "b" in net.state("a").linked_peers
    sent_at = net.now
    net.send_direct("a", "b", T, ("after", 0))
    net.run_for(0.2)  # well under reorder_timeout (1 s)
    after = [d for d in net.deliveries if d.node == "b" and d.time >= sent_at]
    assert [tuple(d.message) for d in after] == [("after", 0)]


# ---------------------------------------------------------------------- forwarding


def test_forwarded_frames_reuse_received_bytes_and_increment_hops() -> None:
    net = mesh("abc", seed=32)
    net.publish("a", T, {"payload": list(range(30))})
    net.run_for(0.5)
    direct = net.frames_between("a", "b", wire.KIND_DATA)
    assert len(direct) == 1
    sent = direct[0].frame
    assert sent[5] == 0
    forwarded = net.frames_between("b", "c", wire.KIND_DATA) + net.frames_between("c", "b", wire.KIND_DATA)
    assert len(forwarded) == 2
    for f in forwarded:
        assert f.frame[6:] == sent[6:]
        assert f.frame[:5] == sent[:5]
        assert f.frame[5] == 1
    # Never back to the link it came from, nor to its origin.
    assert net.frames_between("b", "a", wire.KIND_DATA) == []
    assert net.frames_between("c", "a", wire.KIND_DATA) == []
    assert [d.hops for d in net.deliveries] == [1, 1]


def test_hops_grow_along_a_line() -> None:
    net = MemNet(seed=33)
    names = ["l0", "l1", "l2", "l3"]
    for i, name in enumerate(names):
        line_neighbours = [names[j] for j in (i - 1, i + 1) if 0 <= j < len(names)]
        net.add_node(name, address=addr(i), seeds=[addr(i - 1)] if i else [], policy=Fixed(*line_neighbours))
    net.run_for(1.0)
    net.publish("l0", T, "far")
    net.run_for(0.5)
    body = net.frames_between("l0", "l1", wire.KIND_DATA)[0].frame[6:]
    for i in range(1, 3):
        (f,) = net.frames_between(names[i], names[i + 1], wire.KIND_DATA)
        assert f.frame[5] == i and f.frame[6:] == body
    assert {d.node: d.hops for d in net.deliveries} == {"l1": 1, "l2": 2, "l3": 3}
