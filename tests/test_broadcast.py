"""The broadcast sub-machine (swarm.protocol.broadcast) driven by hand: `Broadcast`'s own stream and its
batching rule, the hot path of `on_data`, stream positions, `Flood`'s relaying, the frames `Tree` sends
(PRUNE, IHAVE, GRAFT), and `create`. Every test builds the sub-machine alone and checks the actions it
appended to `out`, what it handed to `deliver`, and its counters."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pytest

from swarm import counters as C
from swarm.errors import ProtocolError
from swarm.protocol import broadcast, wire
from swarm.protocol.actions import ReportError, ScheduleTimer, Send
from swarm.protocol.broadcast import TAIL_AFTER
from swarm.protocol.config import CoreConfig
from swarm.protocol.events import FAILED, LinkDown, LinkUp
from swarm.protocol.recovery import PULL_AFTER

# Linked peers and their connections.
CONNS = {"b": 11, "c": 12, "d": 13, "e": 14}
MAX = 1 << 20


@dataclass
class Rig:
    """One broadcast sub-machine of node "a" and what it produced."""

    part: broadcast.Broadcast
    counters: Counter[str]
    out: list[Any]
    delivered: list[tuple[bytes, Any]] = field(default_factory=list)

    def take(self) -> list[Any]:
        """The actions appended since the last call."""
        actions = self.out.copy()
        self.out.clear()
        return actions


def make(mode: str = "flood", *peers: str, **config: Any) -> Rig:
    """A broadcast of node "a" (epoch 1) in `mode`, linked to `peers`."""
    counters: Counter[str] = Counter()
    out: list[Any] = []
    delivered: list[tuple[bytes, Any]] = []
    part = broadcast.create(CoreConfig(server_name="a", broadcast=mode, **config), epoch=1,
                            deliver=lambda frame, entries: delivered.append((frame, entries)),
                            counters=counters, out=out)
    rig = Rig(part, counters, out, delivered)
    for peer in peers:
        part.link_up(up(peer))
    return rig


def up(name: str, conn: int | None = None, fresh: bool = True) -> LinkUp:
    conn = CONNS[name] if conn is None else conn
    return LinkUp(name, conn, 1, ("10.0.0.1", 7000 + conn), None, fresh)


def down(name: str) -> LinkDown:
    return LinkDown(name, CONNS[name], ("10.0.0.1", 7000 + CONNS[name]), "closed", FAILED, 0.0)


def entry(message: Any, topic: str | int = "t") -> bytes:
    return wire.encode_entry(wire.encode_topic(topic), wire.encode_message(message), MAX)


def data(origin: str, seq: int, *messages: Any, hops: int = 0, epoch: int = 1) -> bytes:
    """A DATA frame of `origin` carrying `messages` (one entry each, topic "t"), `hops` links crossed."""
    frame = wire.encode_batch(wire.encode_origin(origin), epoch, seq, [entry(m) for m in messages or ["m"]])
    return wire.relayed(frame, hops) if hops else frame


def key(origin: str, epoch: int = 1) -> bytes:
    return wire.stream_key(wire.encode_origin(origin), epoch)


OWN = key("a")


def own(seq: int, *entries: bytes) -> bytes:
    """The DATA frame node "a" sends as batch `seq` of `entries`."""
    return wire.encode_batch(wire.encode_origin("a"), 1, seq, list(entries))


def control(kind: int, fields: dict[str, Any]) -> bytes:
    return wire.encode_control(kind, fields)


def feed(rig: Rig, sender: str, frame: bytes, now: float = 0.0) -> list[Any]:
    """`frame` arrives from linked peer `sender`; return the actions it caused."""
    rig.part.on_data(CONNS[sender], sender.encode(), frame, now)
    return rig.take()


def tell(rig: Rig, sender: str, kind: int, fields: dict[str, Any], now: float = 0.0) -> list[Any]:
    """Control frame `kind` with `fields` arrives from `sender`; return the actions it caused."""
    rig.part.on_control(CONNS[sender], sender.encode(), kind, fields, now)
    return rig.take()


def delivered_frames(rig: Rig) -> list[bytes]:
    return [frame for frame, _ in rig.delivered]


# ---------------------------------------------------------------------- create


@pytest.mark.parametrize(("mode", "kind"), [("flood", broadcast.Flood), ("tree", broadcast.Tree)])
def test_create_returns_the_broadcast_the_config_names(mode: str, kind: type) -> None:
    assert type(make(mode).part) is kind


def test_create_builds_the_two_parent_tree_by_default() -> None:
    part = broadcast.create(CoreConfig(server_name="a"), epoch=1, deliver=lambda f, e: None,
                            counters=Counter(), out=[])
    assert type(part) is broadcast.Tree and part.tree.parents == 2


# ---------------------------------------------------------------------- the own stream: batching


def test_the_first_publish_of_a_turn_leaves_at_once_alone_to_every_link_as_seq_1() -> None:
    rig = make("flood", "b", "c")
    rig.part.publish(entry("m1"), 0.0, None)
    assert rig.take() == [Send((11, 12), own(1, entry("m1")))]
    assert rig.part.seq == 1
    assert rig.counters[C.PUBLISHED] == 1
    assert rig.counters[C.BATCHES_PUBLISHED] == 1
    assert rig.counters[C.DATA_FRAMES_SENT] == 2


def test_later_publishes_of_a_turn_wait_and_leave_at_turn_end_as_one_frame_in_order() -> None:
    rig = make("flood", "b", "c")
    rig.part.publish(entry("m1"), 0.0, None)
    rig.take()
    for message in ("m2", "m3", "m4"):
        rig.part.publish(entry(message), 0.0, None)
        assert rig.take() == []
    assert rig.part.batch_open
    rig.part.turn_end(0.0)
    assert rig.take() == [Send((11, 12), own(2, entry("m2"), entry("m3"), entry("m4")))]
    assert not rig.part.batch_open
    assert rig.counters[C.PUBLISHED] == 4
    assert rig.counters[C.BATCHES_PUBLISHED] == 2


def test_after_turn_end_the_next_publish_leaves_at_once_again() -> None:
    rig = make("flood", "b")
    rig.part.publish(entry("m1"), 0.0, None)
    rig.part.publish(entry("m2"), 0.0, None)
    rig.part.turn_end(0.0)
    rig.take()
    rig.part.publish(entry("m3"), 0.1, None)
    assert rig.take() == [Send((11,), own(3, entry("m3")))]


def test_a_turn_end_with_nothing_published_sends_nothing_and_reopens_the_turn() -> None:
    rig = make("flood", "b")
    rig.part.publish(entry("m1"), 0.0, None)
    rig.part.turn_end(0.0)
    rig.part.turn_end(0.0)
    rig.take()
    rig.part.publish(entry("m2"), 0.1, None)
    assert rig.take() == [Send((11,), own(2, entry("m2")))]


def test_a_batch_passing_batch_bytes_is_sealed_as_it_fills() -> None:
    rig = make("flood", "b")
    big = [entry(bytes([i]) * 6000) for i in range(3)]
    assert 2 * len(big[0]) <= wire.BATCH_BYTES < 3 * len(big[0])
    rig.part.publish(entry("first"), 0.0, None)
    rig.take()
    rig.part.publish(big[0], 0.0, None)
    rig.part.publish(big[1], 0.0, None)
    assert rig.take() == []
    rig.part.publish(big[2], 0.0, None)  # would pass BATCH_BYTES: the two before it go now
    assert rig.take() == [Send((11,), own(2, big[0], big[1]))]
    rig.part.turn_end(0.0)
    assert rig.take() == [Send((11,), own(4, big[2]))]  # messages are numbered: 1, 2-3, 4


def test_seal_false_adds_even_the_first_publish_of_a_turn_to_the_open_batch() -> None:
    rig = make("flood", "b")
    rig.part.publish(entry("m1"), 0.0, False)
    rig.part.publish(entry("m2"), 0.0, False)
    assert rig.take() == []
    rig.part.seal(0.0)
    assert rig.take() == [Send((11,), own(1, entry("m1"), entry("m2")))]


def test_seal_true_sends_at_once_even_in_a_turn_that_already_sent() -> None:
    rig = make("flood", "b")
    rig.part.publish(entry("m1"), 0.0, None)
    rig.take()
    rig.part.publish(entry("m2"), 0.0, True)
    assert rig.take() == [Send((11,), own(2, entry("m2")))]
    rig.part.publish(entry("m3"), 0.0, True)
    assert rig.take() == [Send((11,), own(3, entry("m3")))]


def test_seal_true_with_a_batch_open_sends_the_message_at_once_closing_the_batch() -> None:
    rig = make("flood", "b")
    rig.part.publish(entry("m1"), 0.0, False)
    rig.part.publish(entry("m2"), 0.0, True)
    assert rig.take() == [Send((11,), own(1, entry("m1"), entry("m2")))]


def test_seal_without_an_open_batch_sends_nothing() -> None:
    rig = make("flood", "b")
    rig.part.seal(0.0)
    assert rig.take() == []
    assert rig.part.seq == 0


def test_publishing_with_no_link_counts_published_without_peers_and_sends_nothing() -> None:
    rig = make("flood")
    rig.part.publish(entry("m1"), 0.0, None)
    rig.part.publish(entry("m2"), 0.0, True)
    rig.part.turn_end(0.0)
    assert rig.take() == []
    assert rig.part.seq == 0
    assert rig.counters[C.PUBLISHED] == 2
    assert rig.counters[C.PUBLISHED_WITHOUT_PEERS] == 2
    assert rig.counters[C.BATCHES_PUBLISHED] == 0


def test_a_batch_sealed_after_the_links_went_counts_as_published_without_peers() -> None:
    rig = make("flood", "b")
    rig.part.publish(entry("m1"), 0.0, None)
    rig.part.publish(entry("m2"), 0.0, None)
    rig.part.publish(entry("m3"), 0.0, None)
    rig.take()
    rig.part.link_down(down("b"))
    rig.part.seal(0.0)
    assert rig.take() == []
    assert rig.counters[C.PUBLISHED_WITHOUT_PEERS] == 2
    assert rig.part.seq == 1
    assert not rig.part.batch_open


def test_published_frames_go_to_the_connection_a_link_moved_to() -> None:
    rig = make("flood", "b", "c")
    rig.part.link_up(up("b", conn=21, fresh=False))  # two connections crossed: b now runs on 21
    rig.part.publish(entry("m1"), 0.0, None)
    assert rig.take() == [Send((21, 12), own(1, entry("m1")))]


# ---------------------------------------------------------------------- on_data: the hot path (Flood)


def test_a_new_frame_is_relayed_to_every_link_but_its_sender_and_origin_one_hop_further() -> None:
    rig = make("flood", "b", "c", "d", "e")
    frame = data("c", 1, "m1", "m2", hops=2)
    actions = feed(rig, "b", frame)
    assert actions == [Send((13, 14), wire.relayed(frame, 3))]
    sent = actions[0].data
    assert sent[:5] == frame[:5]
    assert sent[5] == 3
    assert sent[6:] == frame[6:]
    assert rig.counters[C.DATA_FRAMES_RECEIVED] == 1
    assert rig.counters[C.RECEIVED_NEW] == 1
    assert rig.counters[C.FORWARDED] == 1
    assert rig.counters[C.FORWARDED_MESSAGES] == 2
    assert rig.counters[C.DATA_FRAMES_SENT] == 2
    assert rig.part.hops == Counter({3: 1})


def test_a_new_frame_is_delivered_with_its_parsed_entries() -> None:
    rig = make("flood", "b")
    frame = data("c", 1, "m1", "m2")
    feed(rig, "b", frame)
    assert rig.delivered == [(frame, wire.data_entries(frame))]


def test_a_new_frame_with_no_other_link_is_delivered_and_not_relayed() -> None:
    rig = make("flood", "b")
    frame = data("e", 1, "m1")
    assert feed(rig, "b", frame) == []
    assert delivered_frames(rig) == [frame]
    assert rig.counters[C.FORWARDED] == 0
    assert rig.counters[C.DATA_FRAMES_SENT] == 0


def test_a_frame_on_a_connection_being_retired_is_not_relayed_back_to_its_sender() -> None:
    rig = make("flood", "b", "c")
    rig.part.link_up(up("b", conn=21, fresh=False))
    frame = data("e", 1)
    rig.part.on_data(11, b"b", frame, 0.0)  # came on b's old connection
    assert rig.take() == [Send((12,), wire.relayed(frame, 1))]


def test_a_duplicate_is_counted_and_neither_relayed_nor_delivered() -> None:
    rig = make("flood", "b", "c", "d")
    frame = data("e", 1)
    feed(rig, "b", frame)
    assert feed(rig, "c", frame) == []
    assert feed(rig, "d", wire.relayed(frame, 4)) == []
    assert delivered_frames(rig) == [frame]
    assert rig.counters[C.DATA_FRAMES_RECEIVED] == 3
    assert rig.counters[C.RECEIVED_NEW] == 1
    assert rig.counters[C.FORWARDED] == 1
    assert rig.part.seen.duplicates == 2


def test_our_own_frame_coming_back_is_dropped() -> None:
    rig = make("flood", "b", "c")
    rig.part.publish(entry("m1"), 0.0, None)
    rig.take()
    assert feed(rig, "b", wire.relayed(own(1, entry("m1")), 3)) == []
    assert rig.delivered == []
    assert rig.counters[C.OWN_MESSAGES_RETURNED] == 1
    assert rig.counters[C.RECEIVED_NEW] == 0
    assert rig.counters[C.DATA_FRAMES_RECEIVED] == 1


def test_a_frame_ahead_of_a_gap_is_relayed_at_once_but_held_and_a_wakeup_asked() -> None:
    config = CoreConfig(server_name="a")
    rig = make("flood", "b", "c")
    feed(rig, "b", data("e", 1), now=1.0)
    rig.delivered.clear()
    third = data("e", 3)
    actions = feed(rig, "b", third, now=2.0)
    assert actions[0] == Send((12,), wire.relayed(third, 1))
    assert len(actions) == 2 and type(actions[1]) is ScheduleTimer
    assert 2.0 < actions[1].at <= 2.0 + config.reorder_timeout
    assert rig.delivered == []
    assert rig.part.seen.held_count == 1


def test_a_gap_is_pulled_from_each_peer_in_turn_then_given_up_and_reported() -> None:
    rig = make("flood", "b", "c")
    feed(rig, "b", data("e", 1), now=1.0)
    rig.delivered.clear()
    third = data("e", 3)
    (timer,) = [a for a in feed(rig, "b", third, now=2.0) if type(a) is ScheduleTimer]
    rig.part.tick(2.0)  # younger than PULL_AFTER: flooding's other paths may still bring it
    assert [a for a in rig.take() if type(a) is Send] == []
    rig.part.tick(2.0 + PULL_AFTER)
    pull = control(wire.KIND_PULL, {"key": key("e"), "first": 2, "last": 2})
    assert [a for a in rig.take() if type(a) is Send] == [Send((11,), pull)]  # b brought the stream
    assert tell(rig, "b", wire.KIND_PULLED, {"key": key("e"), "first": 2, "last": 2, "missing": [[2, 2]]},
                now=2.2)[0] == Send((12,), pull)  # b had not got it: c is asked
    rig.part.tick(timer.at)
    assert rig.delivered == []  # a pull is pending: the gap stays open past reorderTimeout
    rig.take()
    tell(rig, "c", wire.KIND_PULLED, {"key": key("e"), "first": 2, "last": 2, "missing": [[2, 2]]}, now=3.1)
    rig.part.tick(3.2)  # nobody had it: given up, counted in messages, reported
    assert rig.delivered == [(third, None)]
    assert rig.part.seen.gaps_given_up == 1
    (report,) = [a for a in rig.take() if type(a) is ReportError]
    assert report.code == "messages_lost" and "1 of e" in report.text
    assert rig.part.losses == [{"origin": "e", "messages": 1, "cause": "gap given up", "at": 3.2}]


def test_a_pull_is_answered_from_the_cache_one_hop_further_with_what_was_missing() -> None:
    rig = make("flood", "b", "c")
    frames = {seq: data("e", seq, *[f"m{seq}.{i}" for i in range(3)]) for seq in (1, 4, 10)}  # 3 each
    for seq in (1, 4, 10):
        feed(rig, "c", frames[seq])
    actions = tell(rig, "b", wire.KIND_PULL, {"key": key("e"), "first": 1, "last": 12})
    assert actions == [Send((11,), wire.relayed(frames[1], 1)), Send((11,), wire.relayed(frames[4], 1)),
                       Send((11,), wire.relayed(frames[10], 1)),
                       Send((11,), control(wire.KIND_PULLED, {"key": key("e"), "first": 1, "last": 12,
                                                              "missing": [[7, 9]]}))]
    assert rig.counters[C.PULLS_ANSWERED] == 1 and rig.counters[C.PULLED_FRAMES_SENT] == 3


@pytest.mark.parametrize("fields", [{}, {"key": "k", "first": 1, "last": 2},
                                    {"key": b"k", "first": 0, "last": 1},
                                    {"key": b"k", "first": 3, "last": 2}])
def test_a_malformed_pull_raises(fields: dict[str, Any]) -> None:
    rig = make("flood", "b")
    with pytest.raises(ProtocolError):
        tell(rig, "b", wire.KIND_PULL, fields)


def test_a_stream_that_went_further_at_a_new_peer_is_pulled_from_it() -> None:
    # A node that was stalled: its new link's PEERS says the stream went on without it.
    rig = make("flood", "b", "c")
    feed(rig, "b", data("e", 1, "m1", "m2"))
    rig.take()
    rig.part.peer_positions(12, b"c", [[key("e"), 9]], 5.0, adopt=False)
    rig.part.tick(5.0 + TAIL_AFTER / 2)  # the frames it counts may still be on their way behind it
    assert [a for a in rig.take() if type(a) is Send] == []
    rig.part.tick(5.0 + TAIL_AFTER)
    assert rig.take()[0] == Send((12,), control(wire.KIND_PULL, {"key": key("e"), "first": 3, "last": 9}))
    assert rig.part.repairing(key("e"), 3)


def test_the_missing_frame_releases_the_held_one_in_order() -> None:
    rig = make("flood", "b")
    feed(rig, "b", data("e", 1))
    feed(rig, "b", data("e", 3))
    rig.delivered.clear()
    second = data("e", 2)
    feed(rig, "b", second)
    assert rig.delivered == [(second, wire.data_entries(second)), (data("e", 3), None)]


def test_a_stream_first_met_mid_way_is_held_for_a_settle_window() -> None:
    rig = make("flood", "b", "c")
    fifth = data("e", 5)
    actions = feed(rig, "b", fifth, now=1.0)
    assert actions == [Send((12,), wire.relayed(fifth, 1)), ScheduleTimer(2.0)]
    assert rig.delivered == []
    rig.part.tick(2.0)
    assert rig.delivered == [(fifth, None)]


def test_a_batch_whose_entries_do_not_fill_the_frame_raises_and_is_not_relayed() -> None:
    rig = make("flood", "b", "c")
    frame = wire.encode_batch(wire.encode_origin("e"), 1, 1, [entry("m1")[:-1]])
    with pytest.raises(ProtocolError):
        rig.part.on_data(11, b"b", frame, 0.0)
    assert rig.take() == []
    assert rig.delivered == []
    assert rig.counters[C.RECEIVED_NEW] == 0
    assert rig.counters[C.FORWARDED] == 0


def test_a_malformed_batch_filling_a_gap_still_releases_the_good_frames_behind_it() -> None:
    rig = make("flood", "b")
    feed(rig, "b", data("e", 1))
    third = data("e", 3)
    feed(rig, "b", third)
    rig.delivered.clear()
    bad = wire.encode_batch(wire.encode_origin("e"), 1, 2, [entry("m2") + b"\x01"])
    with pytest.raises(ProtocolError):
        rig.part.on_data(11, b"b", bad, 0.0)
    assert rig.delivered == [(third, None)]


def test_a_data_frame_with_a_cut_header_raises() -> None:
    rig = make("flood", "b")
    with pytest.raises(ProtocolError):
        rig.part.on_data(11, b"b", data("e", 1)[:12], 0.0)


def test_flood_ignores_tree_control_frames() -> None:
    rig = make("flood", "b")
    assert tell(rig, "b", wire.KIND_IHAVE, {"ids": "not a list"}) == []
    assert tell(rig, "b", wire.KIND_PRUNE, {"key": 5}) == []


# ---------------------------------------------------------------------- positions


def test_positions_list_our_own_stream_first_then_the_others() -> None:
    rig = make("flood", "b")
    rig.part.publish(entry("m1"), 0.0, None)
    rig.part.publish(entry("m2"), 0.0, True)
    for seq in (1, 2, 3):
        feed(rig, "b", data("c", seq), now=1.0)
    feed(rig, "b", data("d", 1), now=2.0)
    positions = rig.part.positions()
    assert positions[0] == [OWN, 2]
    assert sorted(positions[1:]) == sorted([[key("c"), 3], [key("d"), 1]])


def test_positions_before_anything_happened_hold_only_our_own_stream_at_zero() -> None:
    assert make("flood").part.positions() == [[OWN, 0]]


def test_positions_fit_in_half_a_control_frame_whatever_the_names_length() -> None:
    rig = make("flood", "b")
    origins = [f"{i:04d}" + "x" * 246 for i in range(600)]
    for origin in origins:
        feed(rig, "b", data(origin, 1))
    positions = rig.part.positions()
    assert 1 < len(positions) < len(origins) + 1
    assert len(wire.encode_message(positions)) <= wire.MAX_CONTROL_BODY // 2


def test_peer_positions_with_adopt_start_an_unknown_stream_after_the_given_seq() -> None:
    rig = make("flood", "b")
    rig.part.peer_positions(1, b"e", [[key("e"), 4]], 0.0, adopt=True)
    fifth = data("e", 5)
    assert feed(rig, "b", fifth) == []  # delivered at once: no settle window, no wake-up
    assert rig.delivered == [(fifth, wire.data_entries(fifth))]
    assert feed(rig, "b", data("e", 4)) == []  # published before: a duplicate now
    assert len(rig.delivered) == 1


def test_peer_positions_without_adopt_leave_the_stream_to_settle() -> None:
    rig = make("flood", "b")
    rig.part.peer_positions(1, b"e", [[key("e"), 4]], 0.0, adopt=False)
    assert feed(rig, "b", data("e", 5), now=1.0) == [ScheduleTimer(2.0)]
    assert rig.delivered == []


def test_peer_positions_do_not_move_a_stream_already_tracked() -> None:
    rig = make("flood", "b")
    feed(rig, "b", data("e", 1))
    rig.part.peer_positions(1, b"e", [[key("e"), 9]], 0.0, adopt=True)
    second = data("e", 2)
    feed(rig, "b", second)
    assert delivered_frames(rig) == [data("e", 1), second]


def test_peer_positions_never_adopt_our_own_stream() -> None:
    rig = make("flood", "b")
    rig.part.peer_positions(1, b"e", [[OWN, 7], [key("a", epoch=2), 3], [b"", 1]], 0.0, adopt=True)
    assert rig.part.positions() == [[OWN, 0]]
    assert rig.part.seen.progress(OWN) is None


@pytest.mark.parametrize("seen", [
    "not a list",
    {"k": 1},
    [[b"k", 1, 2]],
    [[b"k"]],
    [["k", 1]],
    [[b"k", "1"]],
    [(b"k", 1)],
    [[b"k", 1], None],
])
@pytest.mark.parametrize("adopt", [True, False])
def test_a_malformed_peer_positions_list_raises(seen: Any, adopt: bool) -> None:
    rig = make("flood", "b")
    with pytest.raises(ProtocolError):
        rig.part.peer_positions(1, b"e", seen, 0.0, adopt=adopt)


# ---------------------------------------------------------------------- Tree: eager and lazy push


def test_tree_pushes_its_own_frame_to_every_eager_link() -> None:
    rig = make("tree", "b", "c")
    rig.part.publish(entry("m1"), 0.0, None)
    assert rig.take() == [Send((11, 12), own(1, entry("m1")))]
    assert rig.counters[C.DATA_FRAMES_SENT] == 2


def test_tree_pushes_a_new_frame_as_payload_to_eager_peers_but_sender_and_origin() -> None:
    rig = make("tree", "b", "c", "d", "e")
    frame = data("c", 1, "m1", "m2")
    assert feed(rig, "b", frame) == [Send((13, 14), wire.relayed(frame, 1))]
    assert rig.delivered == [(frame, wire.data_entries(frame))]
    assert rig.counters[C.RECEIVED_NEW] == 1
    assert rig.counters[C.FORWARDED] == 1
    assert rig.counters[C.FORWARDED_MESSAGES] == 2
    assert rig.counters[C.DATA_FRAMES_SENT] == 2


def test_after_a_keyed_prune_a_peer_gets_only_ihave_ids_of_that_stream_at_the_next_tick() -> None:
    rig = make("tree", "b", "c")
    assert tell(rig, "c", wire.KIND_PRUNE, {"key": OWN}) == []
    assert rig.counters[C.PRUNES_RECEIVED] == 1
    rig.part.publish(entry("m1"), 0.0, None)
    rig.part.publish(entry("m2"), 0.0, True)
    assert rig.take() == [Send((11,), own(1, entry("m1"))), Send((11,), own(2, entry("m2")))]
    rig.part.tick(0.1)
    actions = rig.take()
    # The ids, and how many links each stream's copies here crossed (0: our own).
    fields = {"ids": [[OWN, 1], [OWN, 2]], "hops": [[OWN, 0]]}
    assert actions == [Send((12,), control(wire.KIND_IHAVE, fields))]
    assert wire.kind(actions[0].data) == wire.KIND_IHAVE
    assert wire.control_fields(actions[0].data) == fields
    assert rig.counters[C.IHAVE_IDS_SENT] == 2
    rig.part.tick(0.2)
    assert rig.take() == []  # announced once


def test_a_keyed_prune_leaves_the_other_streams_eager() -> None:
    rig = make("tree", "b", "c", "d")
    tell(rig, "d", wire.KIND_PRUNE, {"key": key("e")})
    frame = data("e", 1)
    assert feed(rig, "b", frame) == [Send((12,), wire.relayed(frame, 1))]
    rig.part.publish(entry("m1"), 0.0, None)
    assert rig.take() == [Send((11, 12, 13), own(1, entry("m1")))]
    rig.part.tick(0.1)
    assert rig.take() == [Send((13,), control(wire.KIND_IHAVE, {"ids": [[key("e"), 1]],
                                                                "hops": [[key("e"), 1]]}))]


def test_a_prune_without_a_key_makes_every_stream_lazy_towards_that_peer() -> None:
    rig = make("tree", "b", "c")
    tell(rig, "c", wire.KIND_PRUNE, {})
    frame = data("e", 1)
    assert feed(rig, "b", frame) == []
    rig.part.publish(entry("m1"), 0.0, None)
    assert rig.take() == [Send((11,), own(1, entry("m1")))]
    rig.part.tick(0.1)
    assert rig.take() == [Send((12,), control(wire.KIND_IHAVE, {"ids": [[key("e"), 1], [OWN, 1]],
                                                                "hops": [[key("e"), 1], [OWN, 0]]}))]


def test_an_ihave_queued_for_a_peer_whose_link_went_is_not_sent() -> None:
    rig = make("tree", "b", "c")
    tell(rig, "c", wire.KIND_PRUNE, {"key": OWN})
    rig.part.publish(entry("m1"), 0.0, None)
    rig.take()
    rig.part.link_down(down("c"))
    rig.part.tick(0.1)
    assert rig.take() == []
    assert rig.counters[C.IHAVE_IDS_SENT] == 0


def test_an_ihave_for_an_unseen_message_leads_to_a_graft_to_the_announcer_after_graft_timeout() -> None:
    rig = make("tree", "b", "c", graft_timeout=0.1)
    assert tell(rig, "c", wire.KIND_IHAVE, {"ids": [[key("e"), 1]]}, now=1.0) == [ScheduleTimer(1.1)]
    rig.part.tick(1.05)
    assert [a for a in rig.take() if type(a) is Send] == []
    rig.part.tick(1.1)
    actions = rig.take()
    assert actions[0] == Send((12,), control(wire.KIND_GRAFT, {"ids": [[key("e"), 1]]}))
    assert wire.control_fields(actions[0].data) == {"ids": [[key("e"), 1]]}
    assert [a for a in actions[1:] if type(a) is Send] == []
    assert rig.counters[C.GRAFTS] == 1


def test_an_ihave_for_a_message_seen_already_is_not_grafted() -> None:
    rig = make("tree", "b", "c")
    feed(rig, "b", data("e", 1))
    assert tell(rig, "c", wire.KIND_IHAVE, {"ids": [[key("e"), 1]]}) == []
    rig.part.tick(5.0)
    assert rig.take() == []
    assert rig.counters[C.GRAFTS] == 0


def test_the_payload_arriving_before_graft_timeout_cancels_the_graft() -> None:
    rig = make("tree", "b", "c", graft_timeout=0.1)
    tell(rig, "c", wire.KIND_IHAVE, {"ids": [[key("e"), 1]]}, now=1.0)
    feed(rig, "b", data("e", 1), now=1.05)
    rig.part.tick(1.2)
    assert [a for a in rig.take() if type(a) is Send] == []
    assert rig.counters[C.GRAFTS] == 0


def test_a_graft_for_a_cached_message_is_answered_with_the_payload_one_hop_further() -> None:
    rig = make("tree", "b", "c")
    frame = data("e", 1, hops=2)
    feed(rig, "b", frame)
    assert tell(rig, "c", wire.KIND_GRAFT, {"ids": [[key("e"), 1]]}) == [Send((12,), wire.relayed(frame, 3))]
    assert rig.counters[C.GRAFTED_PAYLOADS] == 1


def test_a_graft_for_our_own_message_is_answered_with_it() -> None:
    rig = make("tree", "b")
    rig.part.publish(entry("m1"), 0.0, None)
    rig.take()
    assert tell(rig, "b", wire.KIND_GRAFT, {"ids": [[OWN, 1]]}) == [
        Send((11,), wire.relayed(own(1, entry("m1")), 1))]


def test_a_graft_for_a_message_not_cached_sends_nothing() -> None:
    rig = make("tree", "b")
    assert tell(rig, "b", wire.KIND_GRAFT, {"ids": [[key("e"), 1]]}) == []
    assert rig.counters[C.GRAFTED_PAYLOADS] == 0


def test_a_graft_makes_a_pruned_stream_eager_again_towards_the_peer() -> None:
    rig = make("tree", "b", "c")
    tell(rig, "c", wire.KIND_PRUNE, {"key": OWN})
    rig.part.publish(entry("m1"), 0.0, None)
    rig.take()
    assert tell(rig, "c", wire.KIND_GRAFT, {"ids": [[OWN, 1]]}) == [
        Send((12,), wire.relayed(own(1, entry("m1")), 1))]
    rig.part.publish(entry("m2"), 0.0, True)
    assert rig.take() == [Send((11, 12), own(2, entry("m2")))]


def test_a_duplicate_from_a_peer_whose_path_is_no_shorter_gets_a_prune() -> None:
    rig = make("tree", "b", "d", tree_parents=1)  # one parent: the second peer is not kept
    frame = data("e", 1)
    feed(rig, "b", frame)  # b brings the stream first: b is its parent
    assert feed(rig, "d", frame) == [Send((13,), control(wire.KIND_PRUNE, {"key": key("e")}))]
    assert rig.counters[C.PRUNES_SENT] == 1
    second = data("e", 2)  # new, from a peer pruned already (in flight): relayed, no further PRUNE
    assert feed(rig, "d", second) == [Send((11,), wire.relayed(second, 1))]
    assert rig.counters[C.PRUNES_SENT] == 1


def test_a_duplicate_over_a_shorter_path_takes_over_and_the_old_parent_is_pruned() -> None:
    rig = make("tree", "b", "d", tree_parents=1)  # one parent: the second peer is not kept
    frame = data("e", 1, hops=3)
    feed(rig, "b", frame)
    assert feed(rig, "d", data("e", 1)) == [Send((11,), control(wire.KIND_PRUNE, {"key": key("e")}))]
    assert rig.counters[C.PRUNES_SENT] == 1


def test_our_own_frame_coming_back_in_tree_mode_prunes_the_peer_once() -> None:
    rig = make("tree", "b", "c")
    rig.part.publish(entry("m1"), 0.0, None)
    rig.part.publish(entry("m2"), 0.0, True)
    rig.take()
    assert feed(rig, "c", own(1, entry("m1"))) == [Send((12,), control(wire.KIND_PRUNE, {"key": OWN}))]
    assert feed(rig, "c", own(2, entry("m2"))) == []
    assert rig.counters[C.OWN_MESSAGES_RETURNED] == 2
    assert rig.delivered == []


def test_losing_the_link_of_a_streams_parent_sends_a_keyed_graft_to_every_other_peer() -> None:
    rig = make("tree", "b", "c", "d")
    feed(rig, "b", data("e", 1))
    rig.part.link_down(down("b"))
    actions = rig.take()
    assert actions == [Send((12, 13), control(wire.KIND_GRAFT, {"ids": [], "keys": [key("e")]}))]
    assert wire.control_fields(actions[0].data) == {"ids": [], "keys": [key("e")]}
    assert rig.counters[C.STREAMS_ORPHANED] == 1


def test_losing_the_link_to_a_streams_own_origin_asks_nobody() -> None:
    rig = make("tree", "b", "c")
    feed(rig, "b", data("b", 1))
    rig.part.link_down(down("b"))
    assert rig.take() == []
    assert rig.counters[C.STREAMS_ORPHANED] == 0


def test_losing_a_link_that_was_no_parent_asks_nobody() -> None:
    rig = make("tree", "b", "c", "d")
    feed(rig, "b", data("e", 1))
    rig.part.link_down(down("c"))
    assert rig.take() == []


def test_a_keyed_graft_from_our_parent_orphans_the_stream_and_asks_every_other_peer() -> None:
    rig = make("tree", "b", "c", "d")
    feed(rig, "b", data("e", 1))
    assert tell(rig, "b", wire.KIND_GRAFT, {"ids": [], "keys": [key("e")]}) == [
        Send((12, 13), control(wire.KIND_GRAFT, {"ids": [], "keys": [key("e")]}))]
    assert rig.counters[C.STREAMS_ORPHANED] == 1


def test_a_keyed_graft_from_a_peer_that_is_not_our_parent_only_makes_the_stream_eager() -> None:
    rig = make("tree", "b", "c", "d")
    tell(rig, "c", wire.KIND_PRUNE, {"key": key("e")})
    feed(rig, "b", data("e", 1))
    assert tell(rig, "c", wire.KIND_GRAFT, {"ids": [], "keys": [key("e")]}) == []
    assert rig.counters[C.STREAMS_ORPHANED] == 0
    second = data("e", 2)
    assert feed(rig, "b", second) == [Send((12, 13), wire.relayed(second, 1))]


@pytest.mark.parametrize(("kind", "fields"), [
    (wire.KIND_IHAVE, {}),
    (wire.KIND_IHAVE, {"ids": "x"}),
    (wire.KIND_IHAVE, {"ids": [[b"k"]]}),
    (wire.KIND_IHAVE, {"ids": [[b"k", 1, 2]]}),
    (wire.KIND_IHAVE, {"ids": [["k", 1]]}),
    (wire.KIND_IHAVE, {"ids": [[b"k", "1"]]}),
    (wire.KIND_GRAFT, {"ids": None}),
    (wire.KIND_GRAFT, {"ids": [b"k"]}),
    (wire.KIND_GRAFT, {"ids": [], "keys": b"k"}),
    (wire.KIND_GRAFT, {"ids": [], "keys": ["k"]}),
    (wire.KIND_GRAFT, {"ids": [], "keys": [b"k", 1]}),
    (wire.KIND_PRUNE, {"key": "k"}),
    (wire.KIND_PRUNE, {"key": 5}),
])
def test_malformed_tree_control_fields_raise(kind: int, fields: dict[str, Any]) -> None:
    rig = make("tree", "b")
    with pytest.raises(ProtocolError):
        rig.part.on_control(11, b"b", kind, fields, 0.0)
    assert rig.take() == []


def test_the_gossip_rounds_positions_are_our_stream_and_the_streams_active_of_late() -> None:
    # Every PEERS carries them: a peer that lost the last frames of a stream (no later frame comes to show
    # the gap) sees that it is behind, and pulls the tail (TAIL_AFTER later, if still behind).
    rig = make("flood", "b")
    assert rig.part.recent_positions(0.0, 0.5) == []
    rig.part.publish(entry("m1"), 0.0, True)
    feed(rig, "b", data("old", 1), now=0.0)
    feed(rig, "b", data("new", 1, "x", "y"), now=10.0)
    assert rig.part.recent_positions(10.2, 0.5) == [[OWN, 1], [key("new"), 2]]


# ---------------------------------------------------------------------- signed: frames spaced


def signed_rig(*peers: str) -> Rig:
    """`make`, with a sign hook (a fixed stand-in signature: the spacing rule does not look at it)."""
    counters: Counter[str] = Counter()
    out: list[Any] = []
    part = broadcast.create(CoreConfig(server_name="a"), epoch=1, deliver=lambda frame, entries: None,
                            counters=counters, out=out,
                            sign=lambda frame: wire.with_signature(frame, b"S" * 64))
    for peer in peers:
        part.link_up(up(peer))
    return Rig(part, counters, out)


def test_signed_frames_leave_at_most_once_per_spacing_from_a_turns_end() -> None:
    rig = signed_rig("b")
    spacing = broadcast.SIGNED_FRAME_SPACING
    rig.part.publish(entry("m1"), 0.0, None)  # a lone message leaves at once, as unsigned
    assert [wire.data_stream(a.data)[2] for a in rig.take()] == [1]
    rig.part.publish(entry("m2"), 0.0, None)
    rig.part.turn_end(0.0)  # one frame went just now: the batch waits, and a `seal` wake-up is asked
    assert rig.take() == [ScheduleTimer(spacing, seal=True)]
    rig.part.publish(entry("m3"), spacing / 2, None)  # a new turn, within the spacing: joins the batch
    rig.part.turn_end(spacing / 2)
    assert rig.take() == []  # the same wake-up stands
    rig.part.turn_end(spacing)  # the wake-up: the batch goes, 2-3 in one frame
    (sent,) = rig.take()
    assert wire.data_stream(sent.data)[2] == 2 and len(wire.data_entries(sent.data)) == 2
    rig.part.publish(entry("m4"), 3 * spacing, None)  # later than the spacing: at once again
    assert [wire.data_stream(a.data)[2] for a in rig.take()] == [4]


def test_signed_batches_grow_to_signed_batch_bytes_and_a_full_one_goes_at_once() -> None:
    rig = signed_rig("b")
    big = entry(b"x" * 6000)
    rig.part.publish(entry("first"), 0.0, None)
    rig.take()
    for _ in range(wire.SIGNED_BATCH_BYTES // len(big)):
        rig.part.publish(big, 0.0, None)
    assert rig.take() == []  # past BATCH_BYTES, within SIGNED_BATCH_BYTES: still open
    rig.part.publish(big, 0.0, None)  # would pass it: the batch goes now, spacing or not
    (sent,) = rig.take()
    held = wire.SIGNED_BATCH_BYTES // len(big)
    assert len(wire.data_entries(sent.data)) == held > wire.BATCH_BYTES // len(big)


def test_unsigned_frames_are_not_spaced() -> None:
    rig = make("flood", "b")
    rig.part.publish(entry("m1"), 0.0, None)
    rig.part.publish(entry("m2"), 0.0, None)
    rig.part.turn_end(0.0)
    rig.part.publish(entry("m3"), 0.0, None)
    assert [wire.data_stream(a.data)[2] for a in rig.take()] == [1, 2, 3]
