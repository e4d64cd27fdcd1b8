"""Gap recovery by pull (swarm.protocol.recovery): the frame cache and the pulls, driven by hand, then
end to end in the simulator (a node that misses frames pulls them; when no peer has them any more, the
loss is given up, counted in messages, and reported)."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from memnet import MemNet

from swarm import counters as C
from swarm.protocol import wire
from swarm.protocol.recovery import ANSWER_BYTES, ANSWER_FRAMES, PULL_ROUNDS, FrameCache, Pulls
from swarm.simulate.network import End, split_frames

K = b"\x01a" + bytes(8)  # a stream key (as wire.stream_key makes them)
J = b"\x01b" + bytes(8)


def frame(key: bytes, seq: int, size: int = 10) -> bytes:
    """Stand-in bytes for the frame of `key` that starts at `seq`: the cache never looks inside."""
    tag = key[1:2] + seq.to_bytes(8, "big")
    return (tag * (size // len(tag) + 1))[:size]


def cache_of(*frames: tuple[int, int], key: bytes = K, size: int = 10, **bounds: Any) -> FrameCache:
    """A cache holding frames (seq, count) of `key`, added at time 0 in the order given."""
    bounds.setdefault("max_bytes", 1 << 20)
    bounds.setdefault("max_age", 30.0)
    cache = FrameCache(**bounds)
    for seq, count in frames:
        cache.add(key, seq, count, frame(key, seq, size), 0.0)
    return cache


# ------------------------------------------------------------------------------------ FrameCache bounds

def test_the_cache_is_bounded_in_bytes_dropping_the_oldest_first() -> None:
    cache = FrameCache(max_bytes=100, max_age=30.0)
    for seq in range(1, 4):
        cache.add(K, seq, 1, frame(K, seq, 40), float(seq))
    assert (len(cache), cache.bytes) == (2, 80)
    assert (K, 1) not in cache and (K, 2) in cache and (K, 3) in cache
    assert cache.get((K, 1)) is None and cache.get((K, 3)) == frame(K, 3, 40)
    cache.add(J, 1, 1, frame(J, 1, 100), 4.0)  # as big as the bound: everything older goes
    assert (len(cache), cache.bytes) == (1, 100)
    cache.add(J, 2, 1, frame(J, 2, 101), 5.0)  # bigger than the bound: not even itself stays
    assert (len(cache), cache.bytes) == (0, 0)
    assert cache.range(J, 1, 2) == ([], 2, [(1, 2)])


def test_the_cache_is_bounded_in_frames() -> None:
    cache = FrameCache(max_bytes=1 << 20, max_age=30.0, max_frames=3)
    for seq in range(1, 11):
        cache.add(K if seq % 2 else J, seq, 1, frame(K, seq), float(seq))
        assert len(cache) <= 3
    assert [seq for seq in range(1, 11) if (K, seq) in cache or (J, seq) in cache] == [8, 9, 10]
    assert cache.bytes == 30


def test_expire_drops_the_frames_older_than_max_age_only() -> None:
    cache = FrameCache(max_bytes=1 << 20, max_age=1.5)
    for seq, at in ((1, 0.0), (2, 1.0), (3, 1.4), (4, 2.0)):
        cache.add(K, seq, 1, frame(K, seq), at)
    cache.expire(2.9)  # cutoff 1.4: added at 0.0 and 1.0 go; at 1.4 is exactly max_age old, and stays
    assert [seq for seq in range(1, 5) if (K, seq) in cache] == [3, 4]
    assert cache.bytes == 20
    cache.expire(100.0)
    assert (len(cache), cache.bytes) == (0, 0)
    assert cache.range(K, 1, 4) == ([], 4, [(1, 4)])
    cache.add(K, 5, 1, frame(K, 5), 100.0)  # the cache works on after it emptied
    assert cache.range(K, 1, 5) == ([frame(K, 5)], 5, [(1, 4)])


def test_expire_skips_frames_already_dropped_for_size() -> None:
    cache = FrameCache(max_bytes=25, max_age=1.0)
    for seq in range(1, 5):
        cache.add(K, seq, 1, frame(K, seq), seq * 0.5)  # each add past two drops the oldest
    assert [seq for seq in range(1, 5) if (K, seq) in cache] == [3, 4]
    cache.expire(2.55)  # cutoff 1.55: 3 (added at 1.5) goes, 4 (at 2.0) stays
    assert [seq for seq in range(1, 5) if (K, seq) in cache] == [4]
    assert cache.bytes == 10


def test_adding_a_frame_already_kept_changes_nothing() -> None:
    cache = FrameCache(max_bytes=1 << 20, max_age=1.0, max_frames=2)
    cache.add(K, 1, 3, frame(K, 1), 0.0)
    cache.add(K, 4, 1, frame(K, 4), 0.1)
    cache.add(K, 1, 7, frame(K, 1, 50), 0.9)  # other bytes, another count, later: ignored
    assert cache.get((K, 1)) == frame(K, 1) and cache.bytes == 20 and len(cache) == 2
    assert cache.range(K, 1, 4) == ([frame(K, 1), frame(K, 4)], 4, [])  # still 3 messages, not 7
    cache.expire(1.05)  # still aged from its first add: gone
    assert (K, 1) not in cache and (K, 4) in cache
    cache.add(K, 5, 1, frame(K, 5), 1.06)
    cache.add(K, 4, 1, frame(K, 4), 1.07)  # not made the newest either: the oldest goes first
    cache.add(K, 6, 1, frame(K, 6), 1.08)
    assert [seq for seq in (4, 5, 6) if (K, seq) in cache] == [5, 6]


def test_a_frame_added_again_after_its_eviction_is_aged_from_the_new_add() -> None:
    cache = FrameCache(max_bytes=10, max_age=2.0)
    cache.add(K, 1, 1, frame(K, 1, 6), 0.0)
    cache.add(K, 2, 1, frame(K, 2, 6), 1.0)  # drops 1 for size
    assert (K, 1) not in cache
    cache.add(K, 1, 1, frame(K, 1, 4), 5.0)  # kept again, at 5.0
    cache.expire(5.5)
    assert (K, 1) in cache and (K, 2) not in cache  # half a second old, max_age 2 s; 2 is 4.5 s old
    cache.expire(7.01)
    assert len(cache) == 0 and cache.bytes == 0


# ------------------------------------------------------------------------------------- FrameCache.range

# Stream K: messages 1-3, 4-5, 8, 9-11 cached; 6-7 not. A PULL starts at a frame's first message (the
# asker's next number: everything before it was delivered), so range is asked from a frame's start.
STREAM = ((1, 3), (4, 2), (8, 1), (9, 3))


def test_range_returns_the_frames_holding_the_range_in_order_whatever_the_add_order() -> None:
    cache = cache_of(*reversed(STREAM))
    frames = [frame(K, seq) for seq, _ in STREAM]
    assert cache.range(K, 1, 11) == (frames, 11, [(6, 7)])
    assert cache.range(K, 4, 5) == ([frames[1]], 5, [])
    assert cache.range(K, 6, 7) == ([], 7, [(6, 7)])
    assert cache.range(K, 6, 8) == ([frames[2]], 8, [(6, 7)])


def test_range_sends_a_frame_that_runs_past_last_whole() -> None:
    cache = cache_of(*STREAM)
    assert cache.range(K, 1, 2) == ([frame(K, 1)], 2, [])
    assert cache.range(K, 4, 9) == ([frame(K, 4), frame(K, 8), frame(K, 9)], 9, [(6, 7)])
    assert cache.range(K, 9, 30) == ([frame(K, 9)], 30, [(12, 30)])
    assert cache.range(K, 12, 30) == ([], 30, [(12, 30)])  # past the last frame's last message


def test_range_reports_what_is_missing_at_the_start_middle_and_end() -> None:
    cache = cache_of((5, 2), (9, 1), (12, 3))
    assert cache.range(K, 1, 20) == ([frame(K, 5), frame(K, 9), frame(K, 12)], 20,
                                     [(1, 4), (7, 8), (10, 11), (15, 20)])
    assert cache.range(K, 3, 14) == ([frame(K, 5), frame(K, 9), frame(K, 12)], 14, [(3, 4), (7, 8), (10, 11)])
    assert cache.range(J, 3, 9) == ([], 9, [(3, 9)])  # a stream not cached at all
    assert cache.range(K, 5, 6) == ([frame(K, 5)], 6, [])
    # Frames evicted from the middle of a stream leave their numbers missing, exactly.
    cache = cache_of(*STREAM, max_frames=4)
    cache.add(K, 12, 2, frame(K, 12), 0.0)  # drops the oldest, 1-3
    assert cache.range(K, 1, 13) == ([frame(K, 4), frame(K, 8), frame(K, 9), frame(K, 12)], 13,
                                     [(1, 3), (6, 7)])


def test_range_stops_at_the_frame_budget_and_says_how_far_it_looked() -> None:
    cache = cache_of((1, 2), (3, 1), (5, 3), (9, 1))
    assert cache.range(K, 1, 20, max_frames=2) == ([frame(K, 1), frame(K, 3)], 4, [(4, 4)])
    # The asker goes on from 5: the rest, with what is missing past the last frame.
    assert cache.range(K, 5, 20, max_frames=2) == ([frame(K, 5), frame(K, 9)], 20, [(8, 8), (10, 20)])
    assert cache.range(K, 1, 9, max_frames=1) == ([frame(K, 1)], 2, [])


def test_range_stops_at_the_byte_budget_but_always_sends_one_frame() -> None:
    cache = FrameCache(max_bytes=1 << 20, max_age=30.0)
    for seq, size in ((1, 40), (2, 40), (3, 40), (4, 10)):
        cache.add(K, seq, 1, frame(K, seq, size), 0.0)
    assert cache.range(K, 1, 4, max_bytes=80) == ([frame(K, 1, 40), frame(K, 2, 40)], 2, [])
    assert cache.range(K, 1, 4, max_bytes=79) == ([frame(K, 1, 40)], 1, [])
    assert cache.range(K, 1, 4, max_bytes=5) == ([frame(K, 1, 40)], 1, [])  # larger than the budget: sent
    assert cache.range(K, 3, 4, max_bytes=50) == ([frame(K, 3, 40), frame(K, 4, 10)], 4, [])


def test_range_defaults_to_the_answer_budget() -> None:
    cache = FrameCache(max_bytes=1 << 30, max_age=30.0)
    for seq in range(1, ANSWER_FRAMES + 11):
        cache.add(K, seq, 1, frame(K, seq), 0.0)
    frames, looked_to, missing = cache.range(K, 1, 1000)
    assert (len(frames), looked_to, missing) == (ANSWER_FRAMES, ANSWER_FRAMES, [])
    big = FrameCache(max_bytes=1 << 30, max_age=30.0)
    for seq in range(1, 6):
        big.add(K, seq, 1, frame(K, seq, ANSWER_BYTES // 2), 0.0)
    frames, looked_to, missing = big.range(K, 1, 5)
    assert (len(frames), looked_to, missing) == (2, 2, [])


def test_a_huge_range_is_answered_whole_at_the_cost_of_what_is_cached() -> None:
    # A member may number its own stream as it likes: a jump of 2^62 leaves a gap that every node pulls.
    # The answer covers the whole range in one go, frames and missing parts exact: the cache walks its
    # frames, not the numbers (the old walk stepped 2^18 numbers per answer and was asked again from
    # there, for as long as the gap stayed open).
    jump = 1 << 62
    cache = cache_of((1, 2), (3, 1), (jump, 2), (jump + 2, 1), (jump + 10, 1))
    assert cache.range(K, 4, 1 << 63) == ([frame(K, jump), frame(K, jump + 2), frame(K, jump + 10)], 1 << 63,
                                          [(4, jump - 1), (jump + 3, jump + 9), (jump + 11, 1 << 63)])
    assert cache.range(K, 1, 1 << 60) == ([frame(K, 1), frame(K, 3)], 1 << 60, [(4, 1 << 60)])
    assert cache.range(K, 5, jump - 1) == ([], jump - 1, [(5, jump - 1)])
    assert cache.range(K, 4, 1 << 63, max_frames=1) == ([frame(K, jump)], jump + 1, [(4, jump - 1)])


def test_frames_arriving_out_of_order_and_evicted_out_of_order_are_found_exactly() -> None:
    # 5 overtakes 1-4 and goes first; 2 is evicted, added again, and is then the newest copy.
    cache = cache_of((5, 1), (1, 1), (2, 1), (3, 1), (4, 1), max_frames=5)
    assert cache.range(K, 1, 6) == ([frame(K, s) for s in (1, 2, 3, 4, 5)], 6, [(6, 6)])
    cache.add(K, 6, 1, frame(K, 6), 0.0)  # evicts 5, the oldest, though not the lowest
    assert cache.range(K, 1, 6) == ([frame(K, s) for s in (1, 2, 3, 4, 6)], 6, [(5, 5)])
    for seq in (7, 8):
        cache.add(K, seq, 1, frame(K, seq), 0.0)  # evicts 1, then 2
    cache.add(K, 2, 1, frame(K, 2), 0.0)  # evicts 3; 2 is back, the newest
    assert cache.range(K, 1, 9) == ([frame(K, s) for s in (2, 4, 6, 7, 8)], 9,
                                    [(1, 1), (3, 3), (5, 5), (9, 9)])
    assert len(cache) == 5


def test_lookups_stay_right_after_many_evictions() -> None:
    cache = FrameCache(max_bytes=1 << 20, max_age=1e9, max_frames=10)
    seq = {K: 1, J: 1}
    starts: dict[bytes, list[tuple[int, int]]] = {K: [], J: []}
    for i in range(5000):
        key = K if i % 3 else J  # two streams interleaved: evictions hit both
        count = 1 + i % 4
        cache.add(key, seq[key], count, frame(key, seq[key]), float(i))
        starts[key].append((seq[key], count))
        seq[key] += count
        assert len(cache) <= 10
    live = [(s, n) for s, n in starts[K] if (K, s) in cache]
    assert len(cache) == 10 and live == [(s, n) for s, n in starts[K][-len(live):]]
    first = live[0][0]
    frames, looked_to, missing = cache.range(K, first, seq[K] + 5)
    assert frames == [frame(K, s) for s, _ in live]
    assert looked_to == seq[K] + 5 and missing == [(seq[K], seq[K] + 5)]
    frames, looked_to, missing = cache.range(K, starts[K][-30][0], seq[K] - 1)  # from an evicted frame
    assert frames == [frame(K, s) for s, _ in live] and missing == [(starts[K][-30][0], first - 1)]
    cache.expire(1e12)
    assert len(cache) == 0 and cache.bytes == 0
    cache.add(K, 3, 2, frame(K, 3), 1e12)
    assert cache.range(K, 1, 6) == ([frame(K, 3)], 6, [(1, 2), (5, 6)])


# A random run of adds (every stream cut into frames of 1..4 messages, added in any order, again after
# an eviction too), expiries and range lookups (from a frame's first message, or past a stream's end, as
# pulls ask), against a brute-force model.

Streams = dict[bytes, list[tuple[int, int]]]


@st.composite
def cache_runs(draw: st.DrawFn) -> tuple[dict[str, Any], list[tuple[Any, ...]], Streams]:
    streams: Streams = {}
    for key in (K, J):
        frames, seq = [], 1
        for count in draw(st.lists(st.integers(1, 4), min_size=1, max_size=12)):
            frames.append((seq, count))
            seq += count
        streams[key] = frames
    bounds = {"max_bytes": draw(st.integers(10, 200)), "max_age": draw(st.sampled_from([0.5, 1.0, 5.0])),
              "max_frames": draw(st.integers(1, 12))}
    op = st.one_of(
        st.tuples(st.just("add"), st.sampled_from([K, J]), st.integers(0, 11), st.integers(3, 40),
                  st.sampled_from([0.0, 0.0, 0.1, 0.4])),
        st.tuples(st.just("expire"), st.sampled_from([0.0, 0.2, 0.6])),
        st.tuples(st.just("range"), st.sampled_from([K, J]), st.integers(0, 13), st.integers(0, 30),
                  st.integers(1, 5), st.integers(1, 80)))
    return bounds, draw(st.lists(op, max_size=60)), streams


def model_range(kept: dict[tuple[bytes, int], tuple[bytes, int, float]], key: bytes, first: int, last: int,
                max_frames: int, max_bytes: int) -> tuple[list[bytes], int, list[tuple[int, int]]]:
    """What `range` must answer, from its contract: the kept frames of first..last in order, as many as
    fit the budget (the first always); how far that answers (to last, or to just before the first frame
    left out); the numbers up to there that no frame sent holds, as maximal ranges."""
    overlapping = sorted((seq, data, count) for (k, seq), (data, count, _) in kept.items()
                         if k == key and first <= seq <= last)
    taken: list[tuple[int, bytes, int]] = []
    size = 0
    for seq, data, count in overlapping:
        if len(taken) >= max_frames or (taken and size + len(data) > max_bytes):
            break
        taken.append((seq, data, count))
        size += len(data)
    looked_to = last if len(taken) == len(overlapping) else overlapping[len(taken)][0] - 1
    held = {n for seq, _, count in taken for n in range(seq, seq + count)}
    missing: list[tuple[int, int]] = []
    for n in range(first, looked_to + 1):
        if n in held:
            continue
        if missing and missing[-1][1] == n - 1:
            missing[-1] = (missing[-1][0], n)
        else:
            missing.append((n, n))
    return [data for _, data, _ in taken], looked_to, missing


@settings(max_examples=300, deadline=None, derandomize=True)
@given(run=cache_runs())
def test_range_agrees_with_a_brute_force_model_over_random_adds_and_evictions(
        run: tuple[dict[str, Any], list[tuple[Any, ...]], Streams]) -> None:
    bounds, ops, streams = run
    cache = FrameCache(**bounds)
    kept: OrderedDict[tuple[bytes, int], tuple[bytes, int, float]] = OrderedDict()  # oldest first
    now = 0.0
    for op in ops:
        if op[0] == "add":
            _, key, index, size, dt = op
            if index >= len(streams[key]):
                continue
            seq, count = streams[key][index]
            now += dt
            data = frame(key, seq, size)
            cache.add(key, seq, count, data, now)
            if (key, seq) not in kept:
                kept[(key, seq)] = (data, count, now)
            while kept and (len(kept) > bounds["max_frames"]
                            or sum(len(d) for d, _, _ in kept.values()) > bounds["max_bytes"]):
                kept.popitem(last=False)
        elif op[0] == "expire":
            now += op[1]
            cache.expire(now)
            for message in [m for m, (_, _, at) in kept.items() if at < now - bounds["max_age"]]:
                del kept[message]
        else:
            _, key, index, length, max_frames, max_bytes = op
            starts = [seq for seq, _ in streams[key]]
            end = streams[key][-1][0] + streams[key][-1][1]
            first = starts[index] if index < len(starts) else end + index - len(starts)
            assert cache.range(key, first, first + length, max_frames, max_bytes) == model_range(
                kept, key, first, first + length, max_frames, max_bytes), op
        assert len(cache) == len(kept)
        assert cache.bytes == sum(len(d) for d, _, _ in kept.values())
        assert all(cache.get(message) == data for message, (data, _, _) in kept.items())


# ------------------------------------------------------------------------------------------------ Pulls

P, Q, R = b"p", b"q", b"r"
PEERS = [P, Q, R]


def test_want_asks_the_first_candidate_and_a_covered_range_is_not_asked_twice() -> None:
    pulls = Pulls(timeout=1.0)
    assert pulls.want(K, 5, 9, PEERS, 0.0) == (P, 5, 9)
    assert pulls.pending() == [(K, 5, 9, P)]
    assert pulls.wakeup == 1.0
    assert pulls.want(K, 5, 9, PEERS, 0.1) is None
    assert pulls.want(K, 6, 8, PEERS, 0.1) is None  # inside the pending pull
    assert pulls.want(J, 5, 9, PEERS, 0.1) == (P, 5, 9)  # another stream is another gap
    assert pulls.want(K, 5, 4, PEERS, 0.1) is None  # an empty range
    assert len(pulls) == 2
    assert pulls.repairing(K, 5) and pulls.repairing(K, 9) and not pulls.repairing(K, 10)
    assert not pulls.repairing(K, 4)
    assert pulls.asked(K, 5) == [P]


def test_want_skips_the_candidates_asked_already_for_that_gap() -> None:
    pulls = Pulls(timeout=1.0)
    assert pulls.want(K, 5, 9, [Q, P, R], 0.0) == (Q, 5, 9)
    assert pulls.answered(Q, K, 5, 9, [(5, 9)], [], 0.1) == []  # Q had nothing; no one else offered
    assert not pulls.repairing(K, 5)
    assert pulls.want(K, 5, 9, [Q, P, R], 0.2) == (P, 5, 9)  # the same gap again: Q is not asked twice
    assert pulls.asked(K, 5) == [Q, P]


def test_answered_with_missing_asks_the_next_peer_for_just_those_parts() -> None:
    pulls = Pulls(timeout=1.0)
    assert pulls.want(K, 1, 10, PEERS, 0.0) == (P, 1, 10)
    asks = pulls.answered(P, K, 1, 10, [(3, 4), (8, 10)], PEERS, 0.2)
    assert asks == [(Q, 3, 4), (Q, 8, 10)]
    assert sorted(pulls.pending()) == [(K, 3, 4, Q), (K, 8, 10, Q)]
    assert not pulls.repairing(K, 1) and not pulls.repairing(K, 5) and pulls.repairing(K, 9)
    # Q lacks 3-4 too: R is asked; R lacks them as well: no one is left, nothing is sent.
    assert pulls.answered(Q, K, 3, 4, [(3, 4)], PEERS, 0.3) == [(R, 3, 4)]
    assert pulls.answered(R, K, 3, 4, [(3, 4)], PEERS, 0.4) == []
    assert not pulls.repairing(K, 3)
    assert pulls.want(K, 3, 4, PEERS, 0.5) is None  # every peer was asked for that gap
    # Q had 8-10: done.
    assert pulls.answered(Q, K, 8, 10, [], PEERS, 0.5) == []
    assert len(pulls) == 0 and not pulls.repairing(K, 9)


def test_answered_short_of_the_range_asks_the_same_peer_for_the_rest() -> None:
    pulls = Pulls(timeout=1.0)
    pulls.want(K, 1, 100, PEERS, 0.0)
    assert pulls.answered(P, K, 1, 40, [], PEERS, 0.1) == [(P, 41, 100)]
    assert pulls.pending() == [(K, 41, 100, P)]
    # The next part: some missing (asked of Q, clamped to what P looked at), and the rest of P again.
    asks = pulls.answered(P, K, 41, 70, [(43, 45), (69, 90)], PEERS, 0.2)
    assert asks == [(P, 71, 100), (Q, 43, 45), (Q, 69, 70)]
    assert pulls.answered(P, K, 71, 100, [], PEERS, 0.3) == []
    assert sorted(pulls.pending()) == [(K, 43, 45, Q), (K, 69, 70, Q)]


def test_every_missing_part_is_asked_of_the_next_peer_even_when_the_first_starts_the_range() -> None:
    pulls = Pulls(timeout=1.0)
    assert pulls.want(K, 1, 10, [P, Q], 0.0) == (P, 1, 10)
    # P lacks 1-2 and 6-7: Q (the only other peer) must be asked for both, or 6-7 is lost though Q has it.
    assert pulls.answered(P, K, 1, 10, [(1, 2), (6, 7)], [P, Q], 0.1) == [(Q, 1, 2), (Q, 6, 7)]


def test_an_answer_nobody_waits_for_is_ignored() -> None:
    pulls = Pulls(timeout=1.0)
    pulls.want(K, 1, 10, PEERS, 0.0)
    assert pulls.answered(Q, K, 1, 10, [(1, 10)], PEERS, 0.1) == []  # Q was not asked
    assert pulls.answered(P, K, 2, 10, [(2, 10)], PEERS, 0.1) == []  # not the range asked
    assert pulls.pending() == [(K, 1, 10, P)]


def test_due_passes_a_timed_out_pull_to_the_next_peer_then_gives_up() -> None:
    pulls = Pulls(timeout=1.0)
    pulls.want(K, 1, 10, PEERS, 0.0)
    assert pulls.due(0.99, linked=PEERS) == []
    assert pulls.due(1.0, linked=PEERS) == [(Q, K, 1, 10)]
    assert pulls.pending() == [(K, 1, 10, Q)] and pulls.wakeup == 2.0
    assert pulls.answered(P, K, 1, 10, [], PEERS, 1.5) == []  # P's late answer: passed on already
    assert pulls.pending() == [(K, 1, 10, Q)]
    assert pulls.due(2.0, linked=PEERS) == [(R, K, 1, 10)]
    assert pulls.repairing(K, 1)
    # Every candidate was asked: the last silent one is asked again (silence is no "I lack it": its PULL
    # or PULLED may have been dropped from a full queue), until PULL_ROUNDS asks went unanswered.
    for second in range(3, PULL_ROUNDS):
        assert pulls.due(float(second), linked=PEERS) == [(R, K, 1, 10)]
    assert pulls.due(float(PULL_ROUNDS), linked=PEERS) == []
    assert len(pulls) == 0 and not pulls.repairing(K, 1) and pulls.wakeup == float("inf")
    assert pulls.want(K, 1, 10, PEERS, PULL_ROUNDS + 0.1) is None
    assert pulls.asked(K, 1) == [P, Q] + [R] * (PULL_ROUNDS - 2)


def test_a_silent_peer_is_not_asked_again_once_its_link_is_gone() -> None:
    pulls = Pulls(timeout=1.0)
    pulls.want(K, 1, 10, [P], 0.0)
    assert pulls.due(1.0, linked=[P]) == [(P, K, 1, 10)]  # the only peer, silent: asked again
    assert pulls.due(1.5, linked=[]) == []  # its link went: nobody left to ask
    assert len(pulls) == 0


def test_due_passes_the_pull_of_an_unlinked_peer_on_at_once() -> None:
    pulls = Pulls(timeout=1.0)
    pulls.want(K, 1, 10, PEERS, 0.0)
    assert pulls.due(0.1, linked=[Q, R]) == [(Q, K, 1, 10)]  # P's link went: Q now, not at 1.0
    # The stream's own candidate order wins over the linked list when given.
    assert pulls.due(0.2, {K: [R, Q]}, linked=[R]) == [(R, K, 1, 10)]
    assert pulls.due(0.3, linked=[]) == []
    assert len(pulls) == 0


# --------------------------------------------------------------------------- end to end, in the simulator

class Lossy(MemNet):
    """MemNet whose wire drops the DATA frames of `drop` (stream key, first message number) on their
    way to `victim`, every copy, until `drop` is emptied."""

    def __init__(self, victim: str, **options: Any) -> None:
        super().__init__(**options)
        self.victim = victim
        self.drop: set[tuple[bytes, int]] = set()
        self.dropped: list[tuple[str, int, int]] = []  # (sender, seq, count) of each copy dropped

    def _transmit(self, end: End, data: bytes, raw: bool = False) -> None:
        assert end.peer is not None
        if self.drop and not raw and end.peer.owner.name == self.victim:
            kept = []
            for whole in split_frames(data):
                if wire.kind(whole) == wire.KIND_DATA:
                    _, key, seq, count = wire.data_stream(whole)
                    if (key, seq) in self.drop:
                        self.dropped.append((end.owner.name, seq, count))
                        continue
                kept.append(whole)
            if not kept:
                return
            data = b"".join(kept)
        super()._transmit(end, data, raw)


def mesh(net: Lossy, names: str = "abc", **options: Any) -> None:
    net.add_node(names[0], **options)
    for name in names[1:]:
        net.add_node(name, seeds=[names[0]], **options)
    assert net.run_until_true(lambda: all(
        set(net.state(n).linked_peers) == set(names) - {n} and net.state(n).ready for n in names), 10.0)


def publish_batch(net: Lossy, origin: str, messages: list[Any]) -> int:
    """Publish `messages` on "t" as one DATA frame; return its first message number."""
    for message in messages[:-1]:
        net.publish(origin, "t", message, seal=False)
    return net.publish(origin, "t", messages[-1], seal=True)


def counter(net: Lossy, name: str, key: str) -> int:
    return int(net.state(name).status()["counters"].get(key, 0))


def own_key(net: Lossy, name: str) -> bytes:
    return net.state(name).broadcast.own_key


def batcher(net: Any, sent: list[Any]) -> Any:
    """A function that publishes a batch of `size` new numbers on "a" (noted in `sent`) and returns the
    number of the batch's first message."""
    def batch(size: int) -> int:
        messages = [len(sent) + i for i in range(size)]
        sent.extend(messages)
        return publish_batch(net, "a", messages)
    return batch


def test_a_node_that_misses_frames_pulls_them_and_delivers_every_message_once_in_order() -> None:
    net = Lossy("c", seed=3)
    mesh(net)
    key = own_key(net, "a")
    sent: list[Any] = []
    batch = batcher(net, sent)

    batch(2)
    net.run_for(0.2)
    # The next three frames (2 + 3 + 1 messages) never reach c, from a or relayed by b.
    net.drop = {(key, 3), (key, 5), (key, 8)}
    assert [batch(2), batch(3), batch(1)] == [3, 5, 8]
    net.run_for(0.2)
    assert sorted((seq, count) for _, seq, count in net.dropped) == [(3, 2), (3, 2), (5, 3), (5, 3),
                                                                     (8, 1), (8, 1)]  # both copies
    assert net.delivered("c", "a") == sent[:2]
    net.drop = set()
    batch(4)  # reaches c: the gap (messages 3-8) shows, and is pulled
    net.run_for(3.0)
    for name in "bc":
        assert net.delivered(name, "a") == sent, name  # every message once, in order
    assert counter(net, "c", C.PULLS_SENT) > 0
    assert sum(counter(net, n, C.PULLED_FRAMES_SENT) for n in "ab") >= 3
    for name in "abc":
        assert counter(net, name, C.GAPS_GIVEN_UP) == 0, name
        assert net.state(name).status()["losses"] == []
    assert net.errors_of("c", "messages_lost") == []
    assert net.state("c").status()["pulls_pending"] == 0


def test_frames_no_peer_has_any_more_are_given_up_exactly_in_messages_and_reported() -> None:
    net = Lossy("c", seed=4)
    mesh(net, cache_seconds=1.0)
    key = own_key(net, "a")
    sent: list[Any] = []
    batch = batcher(net, sent)

    batch(3)
    net.run_for(0.2)
    net.drop = {(key, 4), (key, 7), (key, 8)}
    assert [batch(3), batch(1), batch(5)] == [4, 7, 8]  # 9 messages in 3 frames
    net.run_for(0.2)
    net.drop = set()
    net.run_for(1.5)  # past cacheSeconds: a and b have let the frames go
    for name in "ab":
        assert all((key, seq) not in net.state(name).broadcast.cache for seq in (4, 7, 8)), name
    batch(2)  # the gap shows at c now, and nobody has it
    net.run_for(1.0 + 3.0)
    lost = sent[3:12]
    assert net.delivered("c", "a") == [m for m in sent if m not in lost]
    assert net.delivered("b", "a") == sent
    assert counter(net, "c", C.PULLS_SENT) >= 2  # asked a and b
    assert counter(net, "c", C.GAPS_GIVEN_UP) == 9  # messages, not the 3 frames
    assert counter(net, "b", C.GAPS_GIVEN_UP) == 0
    assert [(loss["origin"], loss["messages"]) for loss in net.state("c").status()["losses"]] == [("a", 9)]
    reports = net.errors_of("c", "messages_lost")
    assert len(reports) == 1 and reports[0].startswith("9 messages lost") and "9 of a" in reports[0]
    assert net.state("c").status()["pulls_pending"] == 0



def test_a_range_partly_pending_is_asked_only_from_where_the_pending_pulls_end() -> None:
    # A node back from a stall links one peer after another, each showing the stream a little further:
    # each new link asks only for the new tail (the whole range each time resent it many times over).
    pulls = Pulls()
    assert pulls.want(b"k", 5, 100, [b"p"], 0.0) == (b"p", 5, 100)
    assert pulls.want(b"k", 5, 130, [b"q"], 0.1) == (b"q", 101, 130)
    assert pulls.want(b"k", 5, 120, [b"r"], 0.2) is None
    assert pulls.want(b"k", 5, 131, [b"r"], 0.3) == (b"r", 131, 131)


def test_an_answer_cut_on_the_way_is_asked_again_of_the_same_peer_for_half_as_many_frames() -> None:
    # The frames of an answer come before its PULLED on the same link: if the stream still stops short of
    # what the peer said it had, the peer's queue to us dropped part of it.
    pulls = Pulls()
    assert pulls.want(b"k", 1, 500, [b"p", b"q"], 0.0) == (b"p", 1, 500)
    assert pulls.answered(b"p", b"k", 1, 500, [], [b"p", b"q"], 0.1, arrived_to=40) == [(b"p", 41, 500)]
    assert pulls.budget[b"p"] == ANSWER_FRAMES // 2
    assert pulls.answered(b"p", b"k", 41, 500, [], [b"p", b"q"], 0.2, arrived_to=60) == [(b"p", 61, 500)]
    assert pulls.budget[b"p"] == ANSWER_FRAMES // 4
    # A whole answer: done with it, and the budget grows back.
    assert pulls.answered(b"p", b"k", 61, 500, [], [b"p", b"q"], 0.3, arrived_to=500) == []
    assert pulls.budget[b"p"] == ANSWER_FRAMES // 2 and not pulls.repairing(b"k", 100)


def test_what_the_peer_said_it_lacks_is_not_taken_for_an_answer_cut_on_the_way() -> None:
    pulls = Pulls()
    pulls.want(b"k", 1, 10, [b"p", b"q"], 0.0)
    assert pulls.answered(b"p", b"k", 1, 10, [(1, 4)], [b"p", b"q"], 0.1, arrived_to=0) == [(b"q", 1, 4)]
    assert b"p" not in pulls.budget


def test_a_nodes_cache_counts_what_each_frame_costs_besides_its_bytes() -> None:
    # Small frames cost more in bookkeeping than in bytes: a node counts ENTRY_OVERHEAD per frame, so that
    # cacheBytes bounds the memory the cache takes.
    from swarm.protocol.recovery import ENTRY_OVERHEAD

    cache = FrameCache(10 * (10 + ENTRY_OVERHEAD), float("inf"), entry_overhead=ENTRY_OVERHEAD)
    for seq in range(1, 31):
        cache.add(b"k", seq, 1, bytes(10), 0.0)
    assert len(cache) == 10 and cache.bytes == 10 * (10 + ENTRY_OVERHEAD)
