"""Gap recovery by pull: the cache of recent frames every node keeps, and the ranges it asks peers for.

A DATA frame that does not reach a node (dropped from a full send queue, lost with a link that closed,
sent while the node was stopped) leaves a *gap* in its origin's stream: the seen-record holds what came
after it, or a peer's stream positions (the PEERS a new link begins with) say that the stream went
further than this node got. Flooding's other paths fill most gaps on their own within a round trip;
for the rest, before giving up, the node asks its peers:

* every node keeps the frames it received or published recently in a `FrameCache`, bounded in bytes
  (`cacheBytes`), frames, and age (`cacheSeconds`), the role of GossipSub's message cache (mcache,
  answered for IWANT) and of Plumtree's payload store for GRAFT (the tree's grafts read this same
  cache);
* a node that sees a gap older than `PULL_AFTER` sends PULL `{key, first, last}` (a range of message
  numbers of one stream) to one peer: first the peer that last brought that stream, then its origin,
  then each other linked peer in turn, and again a peer that stayed silent (`Pulls`);
* the peer answers with the cached frames that hold messages of the range, in order and one hop further,
  at most `ANSWER_FRAMES` frames or `ANSWER_BYTES` bytes, then PULLED `{key, first, last, missing}`:
  how far it looked (`last`) and the sub-ranges it did not have;
* the asker goes on from `last + 1` with the same peer, asks the next peer for what was missing, and the
  next peer too when no PULLED comes within `PULL_TIMEOUT`. While a pull is pending the seen-record
  keeps the gap open (`repairing`); once every peer has been asked and none had the frames, the gap is
  given up, and the messages are counted and reported as lost (`messages_lost`), exactly, since frames
  number messages (`wire.py`).

So a member stalled for less than the cache window catches up with no loss when it resumes, even if
its links were closed and re-made meanwhile: the new links' positions show what it missed, and it pulls
it. Pure code: time comes in as `now`.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections import OrderedDict
from collections.abc import Iterable, Sequence

__all__ = ["ANSWER_BYTES", "ANSWER_FRAMES", "PULL_AFTER", "PULL_TIMEOUT", "FrameCache", "Pulls"]

MessageId = tuple[bytes, int]  # (stream key, number of a frame's first message)

# What keeping a frame costs besides its bytes (its key tuple, its entry, the dict slot), counted into
# the cache's bytes so that `cacheBytes` bounds the memory it takes, even for small frames.
ENTRY_OVERHEAD = 160
# Frames a cache holds at most, whatever their size: ~200 bytes of bookkeeping each, so 50 MiB at most.
MAX_FRAMES = 1 << 18
# A gap this old is pulled. Under flooding a copy that overtook another is followed by the other within
# a link latency or two (ms); waiting a little saves a pull for every reordering, and costs a lost
# frame this long. GossipSub's heartbeat, after which its IWANTs go out, is 1 s.
PULL_AFTER = 0.1
# An asked peer that has not answered within this long is passed over for the next one. Its answer may
# wait behind a full queue of its own: a second is a deep queue on a loopback link.
PULL_TIMEOUT = 1.0
# A gap under repair is kept open this many pull timeouts past `reorderTimeout`: each peer in turn, and
# rounds of a long catch-up (a range answered in parts).
PULL_ROUNDS = 8
# One answer carries at most this much; the asker asks again for the rest (`PULLED.last`). A catch-up
# after a 10 s stall at 1,000 frames/s is 40 such rounds, each a round trip.
ANSWER_FRAMES = 256
ANSWER_BYTES = 4 << 20
# Answers cut on the way (frames dropped from the peer's full queue to us) asked again of the same peer,
# each for half as many frames, before the pull goes on as if that peer had answered.
MAX_CUT_ROUNDS = 64
# (stream, first missing) whose asked peers are remembered, so that a gap that stays open after every
# peer was asked is not asked again without end.
TRIED_LIMIT = 4096


class _Starts:
    """The first message numbers of one stream's cached frames, ascending: `starts[head:]` (a head
    index rather than `del starts[0]`, which would move the whole list at every eviction)."""

    __slots__ = ("starts", "head")

    def __init__(self) -> None:
        self.starts: list[int] = []
        self.head = 0


class FrameCache:
    """Recent DATA frames by (stream key, first message number), oldest first, bounded three ways.

    Each stream also keeps the numbers its cached frames start at, in order (`_Starts`), so that `range`
    costs what it finds, whatever the width of the range asked: a frame arriving in order is one
    `append` (out of order, an `insort` near the end), an eviction one comparison. The previous design,
    stepping one number at a time over the numbers it did not have, let a member that numbered its own
    stream with a jump of 2^62 make every answer of every PULL of that gap step over 2^18 numbers
    (~30 ms), again and again while the gap stayed open: the signed fuzzer's slowdown (issue 15).
    An evicted frame's number stays in its stream's list until the eviction of the lowest one passes it
    (frames go oldest first, so that is within one cache lifetime); `range` skips such numbers."""

    def __init__(self, max_bytes: int, max_age: float, max_frames: int = MAX_FRAMES,
                 entry_overhead: int = 0) -> None:
        """`entry_overhead`: bytes counted per frame besides its own (`ENTRY_OVERHEAD` for a node)."""
        self.max_bytes = max_bytes
        self.entry_overhead = entry_overhead
        self.max_age = max_age
        self.max_frames = max_frames
        self.bytes = 0
        # (frame, count, arrival time, its stream's starts), in arrival order.
        self._frames: OrderedDict[MessageId, tuple[bytes, int, float, _Starts]] = OrderedDict()
        self._streams: dict[bytes, _Starts] = {}

    def __len__(self) -> int:
        return len(self._frames)

    def __contains__(self, message: MessageId) -> bool:
        return message in self._frames

    def get(self, message: MessageId) -> bytes | None:
        entry = self._frames.get(message)
        return entry[0] if entry is not None else None

    def add(self, key: bytes, seq: int, count: int, frame: bytes, now: float) -> None:
        """Keep `frame`, which holds messages `seq` .. `seq + count - 1` of stream `key` (once: a frame
        already kept stays as it is)."""
        frames = self._frames
        message = (key, seq)
        if message in frames:
            return
        stream = self._streams.get(key)
        if stream is None:
            stream = self._streams[key] = _Starts()
        frames[message] = (frame, count, now, stream)
        starts = stream.starts
        if starts and seq < starts[-1]:
            insort(starts, seq, stream.head)
        else:
            starts.append(seq)
        self.bytes += len(frame) + self.entry_overhead
        while self.bytes > self.max_bytes or len(frames) > self.max_frames:
            self._drop_oldest()

    def expire(self, now: float) -> None:
        """Drop the frames older than `max_age` (some may have gone for size already)."""
        frames = self._frames
        cutoff = now - self.max_age
        while frames and next(iter(frames.values()))[2] < cutoff:
            self._drop_oldest()

    def _drop_oldest(self) -> None:
        frames = self._frames
        (key, seq), (frame, _, _, stream) = frames.popitem(last=False)
        self.bytes -= len(frame) + self.entry_overhead
        starts = stream.starts
        head = stream.head
        if starts[head] != seq:
            return  # not the lowest: skipped by `range` until the head passes it
        head += 1
        end = len(starts)
        while head < end and (key, starts[head]) not in frames:
            head += 1
        if head == end:
            del self._streams[key]
        elif head > 64 and head + head > end:
            del starts[:head]  # amortised: at least as many evictions as numbers moved
            head = 0
        stream.head = head

    def range(self, key: bytes, first: int, last: int, max_frames: int = ANSWER_FRAMES,
              max_bytes: int = ANSWER_BYTES) -> tuple[list[bytes], int, list[tuple[int, int]]]:
        """The cached frames holding messages `first` .. `last` of stream `key` (the first of them
        starting at `first`), in order, within the budget: (frames, the last message number looked at,
        the sub-ranges not cached).

        Exact because frames are never re-batched and a PULL starts where the asker's stream stopped,
        at a frame's first message: a frame that starts inside the previous one's messages is not
        another frame, and is skipped."""
        found: list[bytes] = []
        missing: list[tuple[int, int]] = []
        stream = self._streams.get(key)
        seq = first  # the next number not accounted for
        if stream is not None:
            frames, starts, size = self._frames, stream.starts, 0
            for at in range(bisect_left(starts, first, stream.head), len(starts)):
                start = starts[at]
                if start > last:
                    break
                entry = frames.get((key, start)) if start >= seq else None
                if entry is None:
                    continue  # evicted, a second copy of its number, or inside the previous frame
                frame, count = entry[0], entry[1]
                if len(found) >= max_frames or (found and size + len(frame) > max_bytes):
                    if start > seq:
                        missing.append((seq, start - 1))
                    return found, start - 1, missing
                if start > seq:
                    missing.append((seq, start - 1))
                found.append(frame)
                size += len(frame)
                seq = start + count
        if seq <= last:
            missing.append((seq, last))
        return found, last, missing


class _Want:
    __slots__ = ("key", "first", "last", "peer", "deadline", "rounds", "silences")

    def __init__(self, key: bytes, first: int, last: int, peer: bytes, deadline: float,
                 rounds: int = 0, silences: int = 0) -> None:
        self.key = key
        self.first = first
        self.last = last
        self.peer = peer  # asked, answer pending
        self.deadline = deadline
        self.rounds = rounds  # answers cut on the way, before this ask
        self.silences = silences  # asks of this range that went unanswered, before this one


class Pulls:
    """The ranges asked of peers and not answered yet, and which peers each gap has been asked of."""

    def __init__(self, timeout: float = PULL_TIMEOUT) -> None:
        self.timeout = timeout
        self._wants: list[_Want] = []
        # (stream key, first missing number) -> peers asked for it, oldest first.
        self._tried: OrderedDict[MessageId, list[bytes]] = OrderedDict()
        self.wakeup = float("inf")
        # Frames to ask of each peer's answer at most: halved when an answer was cut on the way, doubled
        # back after one that came whole (the PULL's "frames").
        self.budget: dict[bytes, int] = {}

    def __len__(self) -> int:
        return len(self._wants)

    def pending(self) -> list[tuple[bytes, int, int, bytes]]:
        """(key, first, last, peer asked) of each pull waiting for its answer."""
        return [(w.key, w.first, w.last, w.peer) for w in self._wants]

    def repairing(self, key: bytes, seq: int) -> bool:
        """Is message `seq` of stream `key` asked of a peer, answer pending?"""
        return any(w.key == key and w.first <= seq <= w.last for w in self._wants)

    def want(self, key: bytes, first: int, last: int, candidates: Sequence[bytes],
             now: float) -> tuple[bytes, int, int] | None:
        """Messages `first` .. `last` of stream `key` are missing: return the PULL to send, as (peer,
        first, last), for the part no pending pull covers from `first` on (each new link of a node that
        was stalled shows the stream a little further: only the new tail is asked), or None when it is
        all covered or every candidate was asked already."""
        pending = sorted((w.first, w.last) for w in self._wants if w.key == key)
        for low, high in pending:
            if low <= first <= high:
                first = high + 1
        if last < first:
            return None
        return self._ask(key, first, last, candidates, now)

    def _ask(self, key: bytes, first: int, last: int, candidates: Sequence[bytes],
             now: float, rounds: int = 0, silences: int = 0,
             again: bool = False) -> tuple[bytes, int, int] | None:
        tried = self._tried.get((key, first))
        peer = next((p for p in candidates if again or tried is None or p not in tried), None)
        if peer is None:
            return None
        if tried is None:
            tried = self._tried[(key, first)] = []
            while len(self._tried) > TRIED_LIMIT:
                self._tried.popitem(last=False)
        tried.append(peer)
        self._wants.append(_Want(key, first, last, peer, now + self.timeout, rounds, silences))
        self.wakeup = min(self.wakeup, now + self.timeout)
        return peer, first, last

    def answered(self, peer: bytes, key: bytes, first: int, looked_to: int,
                 missing: Iterable[tuple[int, int]], candidates: Sequence[bytes],
                 now: float, arrived_to: int | None = None) -> list[tuple[bytes, int, int]]:
        """`peer` answered the pull of `key` from `first`: it sent what it had up to `looked_to` and
        lacked `missing`. Return the pulls to send next: the rest of the range of the same peer, the
        missing parts of the next peers.

        `arrived_to`: the asker's stream is delivered up to there now. The answer's frames came before
        PULLED on the same link, so if it still stops short of `looked_to` at a number the peer said it
        had, part of the answer was dropped on the way (the peer's queue to us was full): the same peer
        is asked again from there, for half as many frames (`budget`), at most MAX_CUT_ROUNDS times."""
        want = next((w for w in self._wants if w.peer == peer and w.key == key and w.first == first), None)
        if want is None:
            return []  # answered late, after it was passed on (or never asked)
        self._wants.remove(want)
        missing = list(missing)
        budget = self.budget.get(peer, ANSWER_FRAMES)
        if (arrived_to is not None and first - 1 <= arrived_to < looked_to
                and want.rounds < MAX_CUT_ROUNDS
                and not any(low <= arrived_to + 1 <= high for low, high in missing)):
            self.budget[peer] = max(1, budget // 2)
            self._tried.pop((key, arrived_to + 1), None)
            ask = self._ask(key, arrived_to + 1, want.last, [peer], now, want.rounds + 1)
            return [ask] if ask is not None else []
        if arrived_to is not None and budget < ANSWER_FRAMES:
            self.budget[peer] = min(ANSWER_FRAMES, budget * 2)
        asks = []
        if looked_to < want.last:  # more to come from this peer
            self._tried.pop((key, looked_to + 1), None)
            ask = self._ask(key, looked_to + 1, want.last, [peer], now)
            if ask is not None:
                asks.append(ask)
        # Each missing part has the history of the range it came from: a peer asked for it is not asked
        # again (taken before the loop: asking for a part that starts at `first` adds to that history).
        history = list(self._tried.get((key, first), [peer]))
        for low, high in missing:
            low, high = max(low, want.first), min(high, looked_to)
            if low > high:
                continue
            self._tried[(key, low)] = list(history)
            ask = self._ask(key, low, high, candidates, now)
            if ask is not None:
                asks.append(ask)
        return asks

    def due(self, now: float, candidates_of: dict[bytes, Sequence[bytes]] | None = None,
            linked: Sequence[bytes] = ()) -> list[tuple[bytes, bytes, int, int]]:
        """Pulls whose peer did not answer in time (or whose link went): each passed to the next peer.
        Once every peer was asked, a peer that stayed silent (still linked) is asked again, up to
        PULL_ROUNDS silences in all: silence is not an answer that it lacks the frames (its PULL or its
        PULLED may have been dropped from a full queue), and it may be the only one that has them (the
        origin of a frame its own full queues dropped towards every peer).
        Returns (peer, key, first, last) of the pulls to send."""
        asks: list[tuple[bytes, bytes, int, int]] = []
        late = [w for w in self._wants if w.deadline <= now or w.peer not in linked]
        for want in late:
            self._wants.remove(want)
            candidates = (candidates_of or {}).get(want.key, linked)
            silences = want.silences + 1
            ask = self._ask(want.key, want.first, want.last, candidates, now, silences=silences)
            if ask is None and silences < PULL_ROUNDS and want.peer in linked:
                ask = self._ask(want.key, want.first, want.last, [want.peer], now, silences=silences,
                                again=True)
            if ask is not None:
                asks.append((ask[0], want.key, ask[1], ask[2]))
        self.wakeup = min((w.deadline for w in self._wants), default=float("inf"))
        return asks

    def asked(self, key: bytes, first: int) -> list[bytes]:
        """The peers asked so far for the gap of `key` that starts at `first`."""
        return list(self._tried.get((key, first), ()))
