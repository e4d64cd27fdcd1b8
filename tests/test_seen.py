"""SeenRecord (swarm.protocol.seen): duplicate detection and per-origin ordering, driven by hand."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from swarm.protocol.seen import SeenRecord

A = (b"a", 1)
B = (b"b", 1)


def record(max_entries: int = 1000, ttl: float = 60.0, reorder_timeout: float = 1.0,
           settle: float = 0.0) -> SeenRecord:
    return SeenRecord(max_entries, ttl, reorder_timeout, settle=settle)


def test_in_order_delivery() -> None:
    seen = record()
    for seq in range(1, 11):
        assert seen.observe(A, seq, 0.0, f"m{seq}") == [f"m{seq}"]
    assert seen.held_count == 0
    assert len(seen) == 1


def test_duplicates_return_none_and_are_counted() -> None:
    seen = record()
    assert seen.observe(A, 1, 0.0, 1) == [1]
    assert seen.observe(A, 2, 0.0, 2) == [2]
    assert seen.observe(A, 1, 0.0, 1) is None
    assert seen.observe(A, 2, 0.0, 2) is None
    assert seen.observe(A, 4, 0.0, 4) == []  # held
    assert seen.observe(A, 4, 0.0, 4) is None  # a duplicate of a held message
    assert seen.duplicates == 3


def test_out_of_order_held_and_released_in_order() -> None:
    seen = record()
    assert seen.observe(A, 1, 0.0, 1) == [1]
    assert seen.observe(A, 4, 0.1, 4) == []
    assert seen.observe(A, 3, 0.2, 3) == []
    assert seen.observe(A, 6, 0.3, 6) == []
    assert seen.held_count == 3
    assert seen.observe(A, 2, 0.4, 2) == [2, 3, 4]
    assert seen.held_count == 1
    assert seen.observe(A, 5, 0.5, 5) == [5, 6]
    assert seen.held_count == 0
    assert seen.gaps_given_up == 0
    assert seen.expire(10.0) == []


def test_gap_given_up_after_reorder_timeout() -> None:
    seen = record(reorder_timeout=1.0)
    assert seen.observe(A, 1, 0.0, 1) == [1]
    assert seen.observe(A, 4, 5.0, 4) == []  # 2 and 3 missing: gap starts at 5.0
    assert seen.observe(A, 5, 5.5, 5) == []
    assert seen.expire(5.9) == []
    assert seen.gaps_given_up == 0
    assert seen.expire(6.0) == [4, 5]
    assert seen.gaps_given_up == 2
    assert seen.held_count == 0
    # The given-up messages are now old: late copies are duplicates; the stream goes on from 6.
    assert seen.observe(A, 2, 6.1, 2) is None
    assert seen.observe(A, 3, 6.1, 3) is None
    assert seen.observe(A, 6, 6.2, 6) == [6]


def test_second_gap_gets_its_own_timeout() -> None:
    seen = record(reorder_timeout=1.0)
    seen.observe(A, 1, 0.0, 1)
    assert seen.observe(A, 3, 0.0, 3) == []
    assert seen.observe(A, 5, 0.5, 5) == []
    # At 1.0 the first gap (2) is given up, releasing 3; the second gap (4) starts then.
    assert seen.expire(1.0) == [3]
    assert seen.gaps_given_up == 1
    assert seen.expire(1.9) == []
    assert seen.expire(2.0) == [5]
    assert seen.gaps_given_up == 2


def test_expire_releases_only_after_timeout_even_when_called_late() -> None:
    seen = record(reorder_timeout=1.0)
    seen.observe(A, 1, 0.0, 1)
    seen.observe(A, 3, 0.0, 3)
    seen.observe(A, 5, 0.0, 5)
    seen.observe(A, 7, 0.0, 7)
    # One late expire gives up every gap whose time has come, in order.
    assert seen.expire(100.0) == [3, 5, 7]
    assert seen.gaps_given_up == 3


def test_ttl_forgets_silent_origins() -> None:
    seen = record(ttl=10.0)
    seen.observe(A, 1, 0.0, 1)
    seen.observe(B, 1, 8.0, 1)
    assert len(seen) == 2
    seen.expire(10.5)
    assert len(seen) == 1  # A silent for 10.5 s is forgotten, B is not
    assert seen.observe(B, 1, 10.5, 1) is None  # B is still remembered
    seen.expire(30.0)
    assert len(seen) == 0
    # A forgotten origin's next number is kept (dormant): an old copy is still a duplicate...
    assert seen.has(A, 1) and not seen.has(A, 2)
    assert seen.observe(A, 1, 31.0, 1) is None
    # ...and the next message is the next one, delivered at once.
    assert seen.observe(A, 2, 31.0, 2) == [2]
    # One past a gap is held, and the gap given up (and counted) as any other.
    assert seen.observe(B, 5, 31.0, 5) == []
    assert seen.expire(32.5) == [5] and seen.gaps_given_up == 3


def test_a_stream_silent_past_the_ttl_is_not_held_to_settle_again() -> None:
    # deepstream's RPC between servers quiet for 2 minutes: its ack timeout (1 s) is the settle window.
    seen = record(ttl=10.0, settle=1.0)
    assert seen.observe(A, 5, 0.0, 5) == []  # met mid-stream: settles on its starting point
    assert seen.expire(1.5) == [5]
    seen.expire(20.0)
    assert len(seen) == 0
    assert seen.observe(A, 6, 25.0, 6) == [6]  # at once, not a settle window later
    assert seen.wakeup == float("inf")


def test_dormant_streams_are_bounded() -> None:
    seen = record(max_entries=16, ttl=1.0)
    for i in range(40):
        seen.observe(bytes([i]), 1, 0.0, i)
        seen.expire(2.0 + i)
    assert len(seen._dormant) <= 16
    assert seen.observe(bytes([39]), 1, 50.0, "old") is None  # the newest are kept
    assert seen.observe(bytes([0]), 1, 50.0, "again") == ["again"]  # the oldest were dropped: afresh


def test_ttl_keeps_origin_with_held_messages() -> None:
    seen = record(ttl=1.0, reorder_timeout=100.0)
    seen.observe(A, 1, 0.0, 1)
    seen.observe(A, 3, 0.0, 3)
    seen.expire(50.0)
    assert seen.held_count == 1
    assert seen.observe(A, 2, 50.0, 2) == [2, 3]


def test_separate_origin_epoch_keys_are_independent() -> None:
    seen = record()
    a1, a2 = (b"a", 1), (b"a", 2)
    assert seen.observe(a1, 1, 0.0, "a1-1") == ["a1-1"]
    assert seen.observe(a1, 2, 0.0, "a1-2") == ["a1-2"]
    # A new epoch of the same name starts at 1 again and is not a duplicate.
    assert seen.observe(a2, 1, 0.0, "a2-1") == ["a2-1"]
    assert seen.observe(B, 1, 0.0, "b-1") == ["b-1"]
    assert seen.observe(a2, 3, 0.0, "a2-3") == []
    assert seen.observe(a1, 3, 0.0, "a1-3") == ["a1-3"]  # a gap in a2 does not hold a1
    assert seen.observe(a2, 2, 0.0, "a2-2") == ["a2-2", "a2-3"]
    assert seen.observe(a1, 2, 0.0, "x") is None
    assert len(seen) == 3


def test_settle_window_picks_lowest_seq_as_starting_point() -> None:
    seen = record(settle=0.1, reorder_timeout=1.0)
    assert seen.observe(A, 5, 0.0, 5) == []  # a new origin: held while the window is open
    assert seen.observe(A, 3, 0.05, 3) == []
    assert seen.observe(A, 5, 0.06, 5) is None
    assert seen.expire(0.09) == []
    assert seen.observe(A, 4, 0.095, 4) == []
    assert seen.expire(0.1) == [3, 4, 5]
    assert seen.gaps_given_up == 0
    assert seen.observe(A, 6, 0.2, 6) == [6]  # after the window, in order at once
    assert seen.observe(A, 2, 0.2, 2) is None


def test_settle_window_then_gap_waits_reorder_timeout() -> None:
    seen = record(settle=0.1, reorder_timeout=1.0)
    seen.observe(A, 3, 0.0, 3)
    seen.observe(A, 5, 0.0, 5)
    assert seen.expire(0.1) == [3]  # 4 is missing: 5 waits its reorder_timeout
    assert seen.expire(1.05) == []
    assert seen.observe(A, 4, 1.05, 4) == [4, 5]
    assert seen.gaps_given_up == 0


def test_settle_window_respects_max_entries() -> None:
    """Messages held while a new origin's starting point settles count against max_entries too."""
    seen = record(max_entries=10, settle=0.1)
    for seq in range(1, 51):
        seen.observe(A, seq, seq * 0.001, seq)
        assert len(seen) <= 10, seq


def test_max_entries_evicts_least_recently_active_origin() -> None:
    seen = record(max_entries=3)
    for i, origin in enumerate([b"a", b"b", b"c"]):
        seen.observe(origin, 1, float(i), origin)
    seen.observe(b"a", 2, 3.0, "a2")  # a is now the most recently active
    seen.observe(b"d", 1, 4.0, "d1")
    assert len(seen) <= 3
    assert seen.origins_evicted == 1
    assert seen.observe(b"a", 2, 5.0, "a2") is None  # a was kept
    # b (least recent) was forgotten, its next number kept: b1 again is old, b2 is next.
    assert seen.observe(b"b", 1, 5.0, "b1") is None
    assert seen.observe(b"b", 2, 5.0, "b2") == ["b2"]


def test_max_entries_gives_up_gap_when_held_messages_pass_the_bound() -> None:
    seen = record(max_entries=4, reorder_timeout=100.0)
    seen.observe(A, 1, 0.0, 1)
    assert seen.observe(A, 3, 0.0, 3) == []
    assert seen.observe(A, 4, 0.0, 4) == []
    assert seen.observe(A, 5, 0.0, 5) == []
    assert len(seen) == 4
    released = seen.observe(A, 7, 0.0, 7)
    assert released == [3, 4, 5]
    assert len(seen) <= 4
    assert seen.gaps_given_up == 1


arrivals = st.lists(st.tuples(st.integers(0, 5), st.integers(1, 25), st.floats(0, 2.0)), max_size=200)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(max_entries=st.integers(1, 12), events=arrivals, expire_every=st.integers(1, 10),
       settle=st.sampled_from([0.0, 0.1]))
def test_max_entries_bound_always_holds(max_entries: int, events: list[tuple[int, int, float]],
                                        expire_every: int, settle: float) -> None:
    seen = record(max_entries=max_entries, ttl=3.0, reorder_timeout=0.5, settle=settle)
    now = 0.0
    for i, (origin, seq, dt) in enumerate(events):
        now += dt
        seen.observe((origin, 1), seq, now, (origin, seq))
        assert len(seen) <= max_entries, (i, len(seen))
        assert seen.held_count >= 0
        if i % expire_every == 0:
            seen.expire(now)
            assert len(seen) <= max_entries


@settings(max_examples=200, deadline=None, derandomize=True)
@given(events=arrivals)
def test_released_items_are_never_duplicated_and_in_order_per_origin(events: list[tuple[int, int, float]]
                                                                    ) -> None:
    """Gaps given up on timeouts: what comes out per origin is increasing (so never twice)."""
    seen = record(max_entries=1000, ttl=1000.0, reorder_timeout=0.5)
    out: dict[int, list[int]] = {}
    now = 0.0
    for origin, seq, dt in events:
        now += dt
        for key, s in (seen.observe((origin, 1), seq, now, (origin, seq)) or []) + seen.expire(now):
            out.setdefault(key, []).append(s)
    assert seen.origins_evicted == 0
    for key, released in out.items():
        assert all(x < y for x, y in zip(released, released[1:], strict=False)), key


@st.composite
def permutations_with_duplicates(draw: st.DrawFn) -> tuple[int, list[int]]:
    n = draw(st.integers(1, 40))
    seqs = list(range(1, n + 1))
    extra = draw(st.lists(st.sampled_from(seqs), max_size=2 * n))
    order = draw(st.permutations(seqs + extra))
    return n, order


@settings(max_examples=200, deadline=None, derandomize=True)
@given(case=permutations_with_duplicates(), settle=st.sampled_from([0.1, 0.5]))
def test_any_arrival_order_releases_each_seq_once_in_order(case: tuple[int, list[int]],
                                                           settle: float) -> None:
    """The property from the issue, with the settle window NodeState uses: whatever order (with
    duplicates) 1..n arrive in at one instant, 1..n come out, in order, each once."""
    n, order = case
    seen = record(max_entries=10 * n + 10, ttl=1000.0, reorder_timeout=1000.0, settle=settle)
    released: list[int] = []
    for seq in order:
        out = seen.observe(A, seq, 5.0, seq)
        if out is not None:
            released += out
        released += seen.expire(5.0)
    released += seen.expire(5.0 + settle)
    assert released == list(range(1, n + 1))
    assert seen.held_count == 0
    assert seen.duplicates == len(order) - n
    assert seen.gaps_given_up == 0


@settings(max_examples=200, deadline=None, derandomize=True)
@given(case=permutations_with_duplicates())
def test_arrival_order_starting_with_seq_1(case: tuple[int, list[int]]) -> None:
    """Once seq 1 is seen first, any later order (with duplicates) yields 1..n in order, each once."""
    n, order = case
    order = [1] + [s for s in order if s != 1]
    seen = record(max_entries=10 * n + 10, ttl=1000.0, reorder_timeout=1000.0)
    released: list[int] = []
    for seq in order:
        out = seen.observe(A, seq, 5.0, seq)
        if out is not None:
            released += out
    assert released == list(range(1, n + 1))
    assert seen.held_count == 0


def test_progress_is_the_highest_seq_seen_and_the_last_arrival() -> None:
    seen = SeenRecord(max_entries=100, ttl=60.0, reorder_timeout=1.0)
    assert seen.progress("a") is None
    seen.observe("a", 1, 0.0, "m1")
    assert seen.progress("a") == (1, 0.0)
    seen.observe("a", 3, 0.5, "m3")  # held behind a gap: still the highest seen
    assert seen.progress("a") == (3, 0.5)
    seen.observe("a", 1, 0.7, "m1")  # a duplicate: the stream still flows
    assert seen.progress("a") == (3, 0.7)


def test_a_gap_under_repair_waits_for_the_repair_timeout_then_is_given_up() -> None:
    # Tree mode repairs a gap by GRAFT, which under load can outlast reorder_timeout: giving the gap
    # up first lost a message that was on its way. The wait stays bounded by repair_timeout.
    seen = SeenRecord(max_entries=100, ttl=60.0, reorder_timeout=1.0, repair_timeout=3.0)
    seen.observe("a", 1, 0.0, "m1")
    assert seen.observe("a", 3, 0.0, "m3") == []
    assert seen.expire(1.5, lambda origin, seq: (origin, seq) == ("a", 2)) == []
    assert seen.wakeup == 3.0
    assert seen.observe("a", 2, 2.5, "m2") == ["m2", "m3"]  # the repair came
    assert seen.observe("a", 5, 2.5, "m5") == []
    assert seen.expire(5.4, lambda origin, seq: True) == []
    assert seen.expire(5.5, lambda origin, seq: True) == ["m5"]  # repair_timeout passed: given up
    assert seen.gaps_given_up == 1
    assert seen.observe("a", 7, 6.0, "m7") == []
    assert seen.expire(7.0, lambda origin, seq: False) == ["m7"]  # not under repair: as before


# ------------------------------------------------------------------ frames numbered by message (count > 1)

def test_frames_of_several_messages_advance_the_stream_by_their_count() -> None:
    seen = record()
    assert seen.observe(A, 1, 0.0, "f1", count=3) == ["f1"]  # messages 1-3
    assert seen.next_expected(A) == 4
    assert seen.observe(A, 4, 0.0, "f4", count=2) == ["f4"]  # 4-5
    assert seen.observe(A, 6, 0.0, "f6") == ["f6"]
    assert seen.next_expected(A) == 7
    assert seen.observe(A, 1, 0.0, "f1", count=3) is None  # a copy of a frame delivered
    assert seen.observe(A, 4, 0.0, "f4", count=2) is None
    assert seen.duplicates == 2 and seen.gaps_given_up == 0
    assert seen.has(A, 5) and not seen.has(A, 7)
    assert seen.progress(A) == (6, 0.0)


def test_held_frames_of_several_messages_are_released_in_order_when_the_gap_fills() -> None:
    seen = record()
    assert seen.observe(A, 1, 0.0, "f1", count=2) == ["f1"]  # 1-2
    assert seen.observe(A, 8, 0.1, "f8", count=2) == []  # 8-9, behind a gap of 3-7
    assert seen.observe(A, 6, 0.2, "f6", count=2) == []  # 6-7
    assert seen.observe(A, 8, 0.2, "f8", count=2) is None  # a held frame's copy
    assert seen.held_count == 2
    assert seen.gaps(1.0) == [(A, 3, 5)]  # the numbers between delivered and the first held
    assert seen.observe(A, 3, 0.3, "f3", count=3) == ["f3", "f6", "f8"]  # 3-5 fills it
    assert seen.held_count == 0 and seen.next_expected(A) == 10
    assert seen.observe(A, 10, 0.4, "f10", count=4) == ["f10"]
    assert seen.next_expected(A) == 14
    assert seen.gaps_given_up == 0 and seen.take_losses() == {}


def test_a_partly_filled_gap_keeps_the_rest_held_and_opens_a_new_gap() -> None:
    seen = record(reorder_timeout=1.0)
    seen.observe(A, 1, 0.0, "f1")
    assert seen.observe(A, 5, 0.0, "f5", count=5) == []  # 5-9; 2-4 missing
    assert seen.observe(A, 12, 0.0, "f12", count=2) == []  # 12-13; 10-11 missing
    assert seen.observe(A, 2, 0.5, "f2", count=3) == ["f2", "f5"]  # 2-4 fills the first gap
    assert seen.next_expected(A) == 10
    assert seen.gaps(0.5) == [(A, 10, 11)] and seen.gaps(0.4) == []  # the new gap opened at 0.5
    assert seen.expire(1.4) == []
    assert seen.expire(1.5) == ["f12"]
    assert seen.gaps_given_up == 2 and seen.next_expected(A) == 14


def test_gaps_given_up_counts_messages_not_frames() -> None:
    seen = record(reorder_timeout=1.0)
    assert seen.observe(A, 1, 0.0, "f1", count=2) == ["f1"]
    # Frames 3-5 (3 messages) and 6 (1) never come; 7-9 does: one frame, but 4 messages skipped.
    assert seen.observe(A, 7, 0.0, "f7", count=3) == []
    assert seen.expire(1.0) == ["f7"]
    assert seen.gaps_given_up == 4
    assert seen.next_expected(A) == 10
    # Late copies of what was given up, or of a message inside it, are old now.
    assert seen.observe(A, 3, 1.1, "f3", count=3) is None
    assert seen.observe(A, 6, 1.1, "f6") is None
    assert seen.observe(A, 10, 1.2, "f10", count=2) == ["f10"]
    # A gap given up for room (max_entries) is counted in messages too.
    tight = record(max_entries=3, reorder_timeout=100.0)
    tight.observe(A, 1, 0.0, "f1", count=4)
    assert tight.observe(A, 9, 0.0, "f9", count=2) == []  # 5-8 missing
    assert tight.observe(A, 11, 0.0, "f11", count=3) == []
    assert tight.observe(A, 20, 0.0, "f20") == ["f9", "f11"]  # over the bound: the gap goes
    assert tight.gaps_given_up == 4 and tight.next_expected(A) == 14
    assert tight.take_losses() == {A: 4}


def test_take_losses_returns_the_messages_given_up_per_origin_since_the_last_call() -> None:
    seen = record(reorder_timeout=1.0)
    assert seen.take_losses() == {}
    seen.observe(A, 1, 0.0, "a1")
    seen.observe(B, 1, 0.0, "b1", count=2)
    seen.observe(A, 4, 0.0, "a4", count=2)  # A: 2-3 missing
    seen.observe(B, 10, 0.0, "b10")  # B: 3-9 missing
    seen.observe(A, 9, 0.0, "a9")  # A: 6-8 missing, behind the first gap
    assert seen.expire(1.0) == ["a4", "b10"]
    assert seen.take_losses() == {A: 2, B: 7}
    assert seen.take_losses() == {}  # taken: not counted twice
    assert seen.expire(2.0) == ["a9"]
    assert seen.take_losses() == {A: 3}
    assert seen.gaps_given_up == 12  # the total stays


def test_gaps_lists_only_the_gaps_open_since_before_older_than() -> None:
    seen = record(reorder_timeout=10.0, settle=0.5)
    seen.observe(A, 1, 0.0, "a1")
    seen.observe(A, 5, 1.0, "a5", count=2)  # A: 2-4 missing since 1.0
    seen.observe(B, 1, 0.0, "b1", count=3)
    seen.observe(B, 7, 2.0, "b7")  # B: 4-6 missing since 2.0
    seen.observe((b"c", 1), 9, 2.0, "c9")  # a new origin mid-stream: settling, not a gap
    assert seen.gaps(0.9) == []
    assert seen.gaps(1.0) == [(A, 2, 4)]
    assert seen.gaps(5.0) == [(A, 2, 4), (B, 4, 6)]
    seen.observe(A, 7, 3.0, "a7")  # held behind the same gap: it does not move
    assert seen.gaps(5.0) == [(A, 2, 4), (B, 4, 6)]
    seen.observe(A, 2, 3.0, "a2", count=3)  # filled: 2-7 delivered, no gap
    assert seen.gaps(5.0) == [(B, 4, 6)]


def test_next_expected_is_none_for_an_origin_unknown_or_still_settling() -> None:
    seen = record(settle=0.1)
    assert seen.next_expected(A) is None
    seen.observe(A, 5, 0.0, "a5", count=3)  # mid-stream: the starting point is not fixed yet
    assert seen.next_expected(A) is None
    assert seen.observe(A, 2, 0.05, "a2", count=3) == []  # 2-4: an earlier frame, in the window
    assert seen.expire(0.1) == ["a2", "a5"]
    assert seen.next_expected(A) == 8
    seen.adopt(B, 41, 0.2)  # a peer's position: B starts after 41
    assert seen.next_expected(B) == 42
    assert seen.observe(B, 42, 0.3, "b42", count=5) == ["b42"]
    assert seen.next_expected(B) == 47


def test_progress_and_snapshot_report_the_last_message_of_a_held_batch() -> None:
    seen = record()
    seen.observe(A, 1, 0.0, "a1", count=2)
    assert seen.progress(A) == (2, 0.0)
    seen.observe(A, 10, 0.5, "a10", count=5)  # 10-14, held behind 3-9
    seen.observe(A, 6, 0.6, "a6", count=2)  # 6-7, held too: not the highest
    assert seen.progress(A) == (14, 0.6)
    assert seen.snapshot(10) == [(A, 14)]
    seen.observe(A, 3, 0.7, "a3", count=3)  # 3-5: releases 3-7, 10-14 still held behind 8-9
    assert seen.progress(A) == (14, 0.7)
    assert seen.next_expected(A) == 8
    seen.observe(A, 8, 0.8, "a8", count=2)
    assert seen.progress(A) == (14, 0.8) and seen.next_expected(A) == 15 and seen.held_count == 0


@settings(max_examples=200, deadline=None, derandomize=True)
@given(counts=st.lists(st.integers(1, 5), min_size=1, max_size=25), data=st.data())
def test_frames_of_any_sizes_in_any_order_release_every_message_once_in_order(counts: list[int],
                                                                              data: st.DataObject) -> None:
    """A stream cut into frames of 1..5 messages, arriving in any order with copies: every frame comes
    out once, in order, and next_expected ends past the last message."""
    frames, seq = [], 1
    for count in counts:
        frames.append((seq, count))
        seq += count
    order = [frames[0]] + data.draw(st.permutations(frames[1:] + data.draw(st.lists(st.sampled_from(frames),
                                                                                      max_size=10))))
    seen = record(max_entries=1000, reorder_timeout=1000.0)
    released: list[int] = []
    for first, count in order:
        out = seen.observe(A, first, 0.0, first, count=count)
        if out is not None:
            released += out
    assert released == [first for first, _ in frames]
    assert seen.next_expected(A) == seq and seen.held_count == 0
    assert seen.gaps_given_up == 0 and seen.duplicates == len(order) - len(frames)
