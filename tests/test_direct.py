"""Direct messages (swarm.protocol.direct, `Direct`: numbering, greedy ring routing, UNDELIVERABLE,
in-order delivery) and delivery to subscribers (swarm.protocol.delivery, `Delivery`), each sub-machine
built alone and checked on the actions it appended to `out` and its counters."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from swarm import counters as C
from swarm.errors import ProtocolError
from swarm.protocol import wire
from swarm.protocol.actions import Deliver, ReportError, ScheduleTimer, Send
from swarm.protocol.config import CoreConfig
from swarm.protocol.delivery import Delivery
from swarm.protocol.direct import Direct
from swarm.protocol.events import PRUNED, LinkDown, LinkUp
from swarm.topology import ring

MAX = 1 << 20
TARGET = "t"  # a node never linked here: reached by routing, or not at all


def distance(name: str, goal: str) -> int:
    return ring.ring_distance(ring.position(name), ring.position(goal))


def _around(goal: str) -> tuple[list[str], list[str]]:
    """Names nearer to `goal` on the ring than node "a" (nearest first), and names farther than "a"."""
    own = distance("a", goal)
    names = sorted((f"p{i}" for i in range(40)), key=lambda name: distance(name, goal))
    nearer = [name for name in names if distance(name, goal) < own]
    farther = [name for name in names if distance(name, goal) > own]
    assert len(nearer) >= 2 and len(farther) >= 2
    return nearer, farther


NEARER, FARTHER = _around(TARGET)


class DirectRig:
    """A `Direct` of node "a" (epoch 1), what it delivered, and the connections of its links."""

    def __init__(self, *peers: str) -> None:
        self.counters: Counter[str] = Counter()
        self.out: list[Any] = []
        self.delivered: list[bytes] = []
        self.conns: dict[str, int] = {}
        self.part = Direct(CoreConfig(server_name="a"), epoch=1, counters=self.counters, out=self.out,
                           deliver=lambda frame, entries: self.delivered.append(frame))
        for peer in peers:
            self.link(peer)

    def link(self, name: str) -> int:
        conn = self.conns[name] = 100 + len(self.conns)
        self.part.link_up(LinkUp(name, conn, 1, ("10.0.0.9", conn), None, True))
        return conn

    def unlink(self, name: str) -> None:
        conn = self.conns.pop(name)
        self.part.link_down(LinkDown(name, conn, ("10.0.0.9", conn), "pruned", PRUNED, 0.0))

    def send(self, target: str, message: Any = "hi", target_epoch: int | None = 1) -> list[Any]:
        self.part.send(target, wire.encode_topic("topic"), wire.encode_message(message), target_epoch)
        return self.take()

    def routed(self, frame: bytes, now: float = 0.0) -> list[Any]:
        self.part.on_routed(frame, now)
        return self.take()

    def take(self) -> list[Any]:
        actions = self.out.copy()
        self.out.clear()
        return actions


def direct(origin: str, target: str, seq: int = 1, message: Any = "hi", *, hops: int = 0,
           topic: str | int = "topic", epoch: int = 1, target_epoch: int = 0) -> bytes:
    """A DIRECT frame from `origin` to `target` (numbered for its process `target_epoch`, 0: unknown)
    that has crossed `hops` links."""
    frame = wire.encode_direct(wire.encode_origin(target), wire.encode_origin(origin), epoch, seq,
                               wire.encode_topic(topic), wire.encode_message(message), MAX, target_epoch)
    return wire.relayed(frame, hops) if hops else frame


def undeliverable(to: str, target: str, reason: str, hops: int = 0) -> bytes:
    frame = wire.encode_undeliverable(wire.encode_origin(to), {"target": target, "reason": reason})
    return wire.relayed(frame, hops) if hops else frame


def sent_seq(action: Send) -> int:
    """The sequence number of the DIRECT frame a Send carries."""
    return wire.direct_stream(action.data, wire.route(action.data)[2])[1]


def answer_of(action: Send) -> tuple[bytes, dict[str, Any]]:
    """(target, fields) of the UNDELIVERABLE frame a Send carries."""
    assert wire.kind(action.data) == wire.KIND_UNDELIVERABLE
    _, target, after = wire.route(action.data)
    return target, wire.undeliverable_fields(action.data, after)


# ---------------------------------------------------------------------- send


def test_the_ring_positions_used_here_are_what_the_tests_assume() -> None:
    assert distance(NEARER[0], TARGET) < distance(NEARER[1], TARGET) < distance("a", TARGET)
    assert distance(FARTHER[0], TARGET) > distance("a", TARGET)


def test_send_to_a_linked_target_goes_straight_to_its_connection() -> None:
    rig = DirectRig("b", NEARER[0])
    assert rig.send("b") == [Send((rig.conns["b"],), direct("a", "b", target_epoch=1))]
    assert rig.counters[C.DIRECT_SENT] == 1
    assert rig.counters[C.ROUTED] == 0


def test_send_to_an_unlinked_target_goes_to_the_linked_peer_nearest_it_on_the_ring() -> None:
    rig = DirectRig(FARTHER[0], NEARER[1], NEARER[0])
    assert rig.send(TARGET) == [Send((rig.conns[NEARER[0]],), direct("a", TARGET, target_epoch=1))]


@pytest.mark.parametrize("peers", [(), tuple(FARTHER[:2])], ids=["no links", "only farther peers"])
def test_send_with_no_peer_nearer_than_ourselves_reports_unreachable(peers: tuple[str, ...]) -> None:
    rig = DirectRig(*peers)
    actions = rig.send(TARGET)
    assert len(actions) == 1 and type(actions[0]) is ReportError
    assert actions[0].code == "unreachable"
    assert repr(TARGET) in actions[0].text
    assert rig.counters[C.DIRECT_UNROUTABLE] == 1
    assert rig.counters[C.DIRECT_SENT] == 1


def test_a_lost_link_is_no_longer_routed_through() -> None:
    rig = DirectRig(NEARER[1], NEARER[0])
    rig.unlink(NEARER[0])
    assert rig.send(TARGET) == [Send((rig.conns[NEARER[1]],), direct("a", TARGET, target_epoch=1))]


def test_sequence_numbers_count_per_target() -> None:
    rig = DirectRig("b", "c")
    assert [sent_seq(rig.send(name)[0]) for name in ("b", "b", "c", "b")] == [1, 2, 1, 3]


def test_sequence_numbers_start_again_at_1_when_the_targets_epoch_changes() -> None:
    rig = DirectRig("b")
    assert sent_seq(rig.send("b", target_epoch=1)[0]) == 1
    assert sent_seq(rig.send("b", target_epoch=1)[0]) == 2
    assert sent_seq(rig.send("b", target_epoch=2)[0]) == 1
    assert sent_seq(rig.send("b", target_epoch=2)[0]) == 2


def test_a_target_missing_from_the_view_keeps_its_count() -> None:
    rig = DirectRig("b")
    rig.send("b", target_epoch=1)
    assert sent_seq(rig.send("b", target_epoch=None)[0]) == 2
    assert sent_seq(rig.send("b", target_epoch=1)[0]) == 3  # the epoch known before still holds


# ---------------------------------------------------------------------- on_routed: for another node


def test_a_frame_for_another_node_is_relayed_one_hop_further() -> None:
    rig = DirectRig("o", "b")
    frame = direct("o", "b", hops=3)
    assert rig.routed(frame) == [Send((rig.conns["b"],), wire.relayed(frame, 4))]
    assert rig.counters[C.ROUTED] == 1


def test_a_frame_for_an_unlinked_node_is_relayed_to_the_nearest_peer() -> None:
    rig = DirectRig(NEARER[1], NEARER[0])
    frame = direct("o", TARGET, hops=1)
    assert rig.routed(frame) == [Send((rig.conns[NEARER[0]],), wire.relayed(frame, 2))]


def test_a_frame_one_hop_short_of_the_limit_is_still_relayed() -> None:
    rig = DirectRig("b")
    frame = direct("o", "b", hops=ring.MAX_ROUTE_HOPS - 2)
    assert rig.routed(frame) == [Send((rig.conns["b"],), wire.relayed(frame, ring.MAX_ROUTE_HOPS - 1))]
    assert rig.counters[C.ROUTE_HOP_LIMIT] == 0


def test_a_direct_frame_past_max_route_hops_is_dropped_with_an_undeliverable_back() -> None:
    rig = DirectRig("o", "b")
    actions = rig.routed(direct("o", "b", hops=ring.MAX_ROUTE_HOPS - 1))
    assert len(actions) == 1 and actions[0].conns == (rig.conns["o"],)
    target, fields = answer_of(actions[0])
    assert target == b"o"
    assert fields == {"target": "b", "reason": f"no route within {ring.MAX_ROUTE_HOPS} hops"}
    assert rig.counters[C.ROUTE_HOP_LIMIT] == 1
    assert rig.counters[C.DIRECT_UNROUTABLE] == 1
    assert rig.counters[C.ROUTED] == 0


def test_an_undeliverable_past_max_route_hops_is_dropped_silently() -> None:
    rig = DirectRig("o")
    assert rig.routed(undeliverable("o", "b", "gone", hops=ring.MAX_ROUTE_HOPS - 1)) == []
    assert rig.counters[C.ROUTE_HOP_LIMIT] == 1
    assert rig.counters[C.DIRECT_UNROUTABLE] == 0


def test_a_relayed_frame_with_no_nearer_peer_is_answered_undeliverable_to_its_origin() -> None:
    origin = FARTHER[0]
    rig = DirectRig(origin)
    actions = rig.routed(direct(origin, TARGET, hops=2))
    assert len(actions) == 1 and actions[0].conns == (rig.conns[origin],)
    target, fields = answer_of(actions[0])
    assert target == origin.encode()
    assert fields["target"] == TARGET
    assert "no such node" in fields["reason"]
    assert rig.counters[C.DIRECT_UNROUTABLE] == 1


def test_an_undeliverable_for_another_node_is_relayed_like_a_direct() -> None:
    rig = DirectRig("o")
    frame = undeliverable("o", "b", "gone", hops=1)
    assert rig.routed(frame) == [Send((rig.conns["o"],), wire.relayed(frame, 2))]
    assert rig.counters[C.ROUTED] == 1


def test_an_undeliverable_that_cannot_be_routed_is_counted_lost() -> None:
    rig = DirectRig()
    assert rig.routed(undeliverable(TARGET, "b", "gone")) == []
    assert rig.counters[C.UNDELIVERABLE_LOST] == 1
    assert rig.counters[C.DIRECT_UNROUTABLE] == 0


def test_a_routed_frame_cut_short_raises() -> None:
    rig = DirectRig("b")
    with pytest.raises(ProtocolError):
        rig.routed(direct("o", "b")[:7])


@pytest.mark.parametrize("damage", ["topic kind", "topic cut", "signature length", "undeliverable map"])
def test_a_malformed_frame_for_another_node_raises_at_the_relay_and_is_not_passed_on(damage: str) -> None:
    # Its sender is the one to lose its link: the target, which would find the damage, only sees the
    # relay (an honest node, whose link it would have closed).
    rig = DirectRig("o", "b")
    frame = bytearray(undeliverable("o", "b", "gone") if damage == "undeliverable map" else direct("o", "b"))
    at = wire.route(bytes(frame))[2]
    if damage == "topic kind":
        frame[wire.parse_data_header(bytes(frame), at, counted=False).topic_offset] = 7
    elif damage == "topic cut":
        frame[wire.parse_data_header(bytes(frame), at, counted=False).topic_offset + 1] = 0xFF
    elif damage == "signature length":
        frame[-1] = 200  # a signature that runs back into the message and topic
    else:
        frame[at:] = b"\xc1" * (len(frame) - at)  # never valid msgpack
    with pytest.raises(ProtocolError):
        rig.routed(bytes(frame))
    assert rig.take() == [] and rig.counters[C.ROUTED] == 0


# ---------------------------------------------------------------------- on_routed: for us


def test_a_direct_frame_for_us_is_delivered_once() -> None:
    rig = DirectRig("o")
    frame = direct("o", "a")
    assert rig.routed(frame) == []
    assert rig.routed(frame) == []
    assert rig.routed(wire.relayed(frame, 5)) == []
    assert rig.delivered == [frame]
    assert rig.counters[C.DIRECT_RECEIVED] == 1
    assert rig.part.seen.duplicates == 2


def test_direct_frames_for_us_are_delivered_in_order_and_a_gap_is_held_with_a_wakeup() -> None:
    rig = DirectRig("o")
    first, second, third = (direct("o", "a", seq, f"m{seq}") for seq in (1, 2, 3))
    rig.routed(first, now=1.0)
    actions = rig.routed(third, now=2.0)
    assert len(actions) == 1 and type(actions[0]) is ScheduleTimer
    assert 2.0 < actions[0].at <= 2.0 + CoreConfig(server_name="a").reorder_timeout
    assert rig.delivered == [first]
    assert rig.routed(second, now=2.1) == []
    assert rig.delivered == [first, second, third]
    assert rig.counters[C.DIRECT_RECEIVED] == 3


def test_tick_at_the_wakeup_gives_up_a_direct_gap() -> None:
    rig = DirectRig("o")
    rig.routed(direct("o", "a", 1), now=1.0)
    third = direct("o", "a", 3)
    (timer,) = rig.routed(third, now=2.0)
    rig.part.tick(timer.at - 0.1)
    assert rig.delivered == [direct("o", "a", 1)]
    rig.take()
    rig.part.tick(timer.at)
    assert rig.delivered == [direct("o", "a", 1), third]
    assert rig.part.seen.gaps_given_up == 1
    assert rig.take() == []


def test_direct_streams_of_two_origins_are_ordered_apart() -> None:
    rig = DirectRig("o")
    rig.routed(direct("o", "a", 1))
    other = direct("q", "a", 1)
    rig.routed(other)
    assert rig.delivered == [direct("o", "a", 1), other]


def test_a_direct_frame_for_us_with_a_malformed_topic_raises_and_is_not_delivered() -> None:
    rig = DirectRig("o")
    frame = wire.encode_direct(wire.encode_origin("a"), wire.encode_origin("o"), 1, 1, b"\x07",
                               wire.encode_message("hi"), MAX)
    with pytest.raises(ProtocolError):
        rig.routed(frame)
    assert rig.delivered == []


def test_an_undeliverable_for_us_reports_unreachable() -> None:
    rig = DirectRig("o")
    actions = rig.routed(undeliverable("a", "b", "no route", hops=4))
    assert len(actions) == 1 and type(actions[0]) is ReportError
    assert actions[0].code == "unreachable"
    assert "'b'" in actions[0].text and "no route" in actions[0].text
    assert rig.counters[C.DIRECT_UNDELIVERABLE] == 1
    assert rig.delivered == []


# ---------------------------------------------------------------------- Delivery


def delivery(topics: Any = ("t",)) -> tuple[Delivery, Counter[str], list[Any]]:
    counters: Counter[str] = Counter()
    out: list[Any] = []
    return Delivery(set(topics) if isinstance(topics, tuple) else topics, counters, out), counters, out


def batch(origin: bytes, *entries: tuple[str | int, Any], hops: int = 0) -> bytes:
    """A DATA frame of `origin` (from encode_origin) carrying (topic, message) entries."""
    frame = wire.encode_batch(origin, 1, 1, [wire.encode_entry(wire.encode_topic(topic),
                                                               wire.encode_message(message), MAX)
                                             for topic, message in entries])
    return wire.relayed(frame, hops) if hops else frame


def messages(out: list[Any]) -> list[tuple[str, str | int, Any, int]]:
    """(origin, topic, decoded message, hops) of each Deliver action."""
    assert all(type(action) is Deliver for action in out)
    return [(a.origin, a.topic, wire.decode_message(a.encoded), a.hops) for a in out]


def test_delivery_hands_over_only_subscribed_topics() -> None:
    part, counters, out = delivery()
    part.deliver(batch(wire.encode_origin("c"), ("t", "m1"), ("u", "m2"), ("t", {"k": 3})))
    assert messages(out) == [("c", "t", "m1", 1), ("c", "t", {"k": 3}, 1)]
    assert counters[C.DELIVERED] == 2
    assert counters[C.DROPPED_NO_SUBSCRIBER] == 1


def test_a_deliver_action_carries_the_frame_and_the_offsets_of_its_message() -> None:
    part, _, out = delivery((7,))
    frame = batch(wire.encode_origin("c"), (7, [1, 2]), hops=3)
    part.deliver(frame)
    (action,) = out
    assert action.frame is frame
    assert (action.origin, action.topic, action.hops) == ("c", 7, 4)
    assert wire.decode_message(frame[action.offset:action.end]) == [1, 2]
    assert wire.decode_message(action.encoded) == [1, 2]


def test_delivery_uses_the_entries_the_caller_parsed() -> None:
    part, counters, out = delivery()
    frame = batch(wire.encode_origin("c"), ("t", "m1"), ("t", "m2"))
    part.deliver(frame, wire.data_entries(frame)[:1])
    assert messages(out) == [("c", "t", "m1", 1)]
    assert counters[C.DELIVERED] == 1


def test_delivery_hands_over_a_direct_frames_message() -> None:
    part, counters, out = delivery(("topic",))
    part.deliver(direct("o", "a", 4, {"x": 1}, hops=2))
    assert messages(out) == [("o", "topic", {"x": 1}, 3)]
    assert counters[C.DELIVERED] == 1


def test_delivery_reads_the_drivers_topic_set_on_every_delivery() -> None:
    topics: set[str | int] = set()
    part, counters, out = delivery(topics)
    frame = batch(wire.encode_origin("c"), ("t", "m1"))
    part.deliver(frame)
    assert out == []
    topics.add("t")
    part.deliver(frame)
    assert messages(out) == [("c", "t", "m1", 1)]
    assert counters[C.DROPPED_NO_SUBSCRIBER] == 1


def test_an_origin_name_that_is_not_utf8_is_delivered_with_replacement_characters() -> None:
    part, _, out = delivery()
    part.deliver(batch(b"\x02\xff\xfe", ("t", "m1")))
    assert messages(out) == [("\ufffd\ufffd", "t", "m1", 1)]


@pytest.mark.parametrize("frame", [
    wire.encode_batch(wire.encode_origin("c"), 1, 1, [b"\x07" + b"\x00" * 8]),
    wire.encode_batch(wire.encode_origin("c"), 1, 1, [wire.encode_entry(wire.encode_topic("t"), b"\xa1m", MAX)
                                                      + b"\x01"]),
    wire.encode_direct(wire.encode_origin("a"), wire.encode_origin("o"), 1, 1, b"\x09", b"\xc0", MAX),
], ids=["unknown topic kind", "trailing bytes", "direct with bad topic"])
def test_a_frame_whose_entries_are_malformed_is_counted_and_dropped(frame: bytes) -> None:
    part, counters, out = delivery()
    part.deliver(frame)
    assert out == []
    assert counters[C.MALFORMED_DROPPED] == 1
    assert counters[C.DELIVERED] == 0


@pytest.mark.parametrize("topic", ["t", "", 0, -5, 1 << 40])
def test_topic_bytes_encodes_a_topic_once_and_caches_it(topic: str | int) -> None:
    part, _, _ = delivery()
    first = part.topic_bytes(topic)
    assert first == wire.encode_topic(topic)
    assert part.topic_bytes(topic) is first


@pytest.mark.parametrize(("topic", "error"), [
    (True, TypeError), (1.5, TypeError), (None, TypeError), (b"t", TypeError),
    (1 << 63, ValueError), ("x" * (wire.MAX_TOPIC_BYTES + 1), ValueError),
])
def test_topic_bytes_raises_for_a_topic_the_wire_cannot_carry(topic: Any, error: type) -> None:
    part, _, _ = delivery()
    with pytest.raises(error):
        part.topic_bytes(topic)


def test_topic_bytes_refuses_a_bool_even_when_the_equal_int_is_cached() -> None:
    part, _, _ = delivery()
    part.topic_bytes(1)
    part.topic_bytes(0)
    with pytest.raises(TypeError):
        part.topic_bytes(True)
    with pytest.raises(TypeError):
        part.topic_bytes(False)


# ---------------------------------------------------------------------- numbered for which process


def test_a_stream_numbered_for_this_process_and_met_mid_way_settles_first() -> None:
    rig = DirectRig("b")
    rig.routed(direct("b", "a", seq=3, target_epoch=1))  # for us (epoch 1): 1 and 2 may be on the way
    assert rig.delivered == []
    rig.routed(direct("b", "a", seq=2, target_epoch=1))
    rig.part.tick(5.0)  # past reorderTimeout: the lowest seen starts the stream
    assert [sent for sent in rig.delivered] == [direct("b", "a", seq=2, target_epoch=1),
                                                 direct("b", "a", seq=3, target_epoch=1)]


@pytest.mark.parametrize("numbered_for", [0, 7], ids=["unknown", "our previous process"])
def test_a_stream_numbered_for_another_process_of_ours_starts_at_once(numbered_for: int) -> None:
    """Our restart, before the sender heard of it: its count cannot hold anything earlier meant for us,
    so the first message goes at once (an RPC must not wait a reorderTimeout)."""
    rig = DirectRig("b")
    first = direct("b", "a", seq=41, target_epoch=numbered_for)
    rig.routed(first)
    assert rig.delivered == [first]
    rig.routed(direct("b", "a", seq=42, target_epoch=numbered_for))
    # The sender hears of our epoch and counts from 1 again: a stream of its own, not "older" numbers.
    renumbered = direct("b", "a", seq=1, target_epoch=1)
    rig.routed(renumbered)
    assert rig.delivered[-1] == renumbered and len(rig.delivered) == 3


def test_the_sender_says_which_process_its_count_is_for() -> None:
    rig = DirectRig("b")
    unknown = rig.send("b", target_epoch=None)[0].data
    assert wire.direct_stream(unknown, wire.route(unknown)[2])[2] == 0  # not known yet
    sent = rig.send("b", target_epoch=9)[0].data
    assert wire.direct_stream(sent, wire.route(sent)[2])[1:] == (1, 9)  # a new count for process 9
