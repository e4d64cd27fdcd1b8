"""The seen-record: duplicate suppression and per-origin ordering in one structure.

Every frame carries (origin, epoch, seq, count): the publishing node's name, a number fixed when that
node process started (so a restarted node's messages are never taken for old duplicates), the number of
its first message (an origin numbers its messages from 1) and how many messages it carries, so that it
holds messages seq .. seq + count - 1. Frames are never re-batched on the way, so the same numbers name
the same frame everywhere. Because the numbers are dense, a node need not remember every message id it
has seen, as GossipSub's seen-cache does: per (origin, epoch) it keeps

* `next_seq`, the number of the next message to deliver: everything below it was delivered (or given
  up), and
* `held`, the frames that arrived ahead of a gap, waiting for the gap to fill.

So a duplicate is `seq < next_seq or seq in held`, decided from the header alone, and memory is one small
record per live origin plus the out-of-order messages of the moment. A message that arrives ahead of its
turn (flooding brought it over a faster path) is held and delivered in order once the gap fills; a gap that
does not fill within `reorder_timeout` is given up, counted in messages (the numbers skipped, exact
whatever the batching), and the held messages go out in order.

The first message seen from an origin sets its starting point: a node that joins later delivers from
there on. Because flooding may bring a later message first (say seq 5 over a short path before seq 4
over a longer one), a new origin's messages are held for a short `settle` window and its starting point
is the lowest sequence number seen in that window.

A caller that is repairing a gap (a PULL of the missing range, or in tree mode a GRAFT, is pending)
says so to `expire`, and such a gap is given up only after `repair_timeout`: repair under load can take
longer than `reorder_timeout`, and giving up first loses a message that was on its way.

Bounds (both configurable): an origin silent for `ttl` seconds is forgotten, and the total of records plus
held messages never exceeds `max_entries` (the least recently active origin is dropped first; a single
origin's gap is given up early when its held messages alone would pass the bound).

A forgotten origin leaves its `next_seq` behind, *dormant* (one number per stream, at most `max_entries`
of them, the least recently forgotten dropped first). When the stream speaks again, its first message is
recognised: the next one is delivered at once, one after a gap is held and the gap recovered as any
other, and an old copy is a duplicate. Without this, a stream silent for longer than `ttl` had its next
message held for a whole settle window at every receiver: deepstream's RPCs between servers quiet for
two minutes timed out (its ack timeout is 1 s, as is `reorderTimeout`).

Pure code: time comes in as `now`.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

__all__ = ["SeenRecord"]


class _OriginLog:
    __slots__ = ("next_seq", "held", "spans", "last_active", "gap_since", "settle_until")

    def __init__(self, next_seq: int, now: float, settle_until: float) -> None:
        self.next_seq = next_seq
        self.held: dict[int, Any] = {}
        self.spans: dict[int, int] = {}  # messages of a held frame that carries more than one
        self.last_active = now
        self.gap_since = 0.0
        self.settle_until = settle_until  # 0.0 once the starting point is fixed


class SeenRecord:
    """Duplicate detection and in-order release of messages, per origin."""

    def __init__(self, max_entries: int, ttl: float, reorder_timeout: float, settle: float = 0.0,
                 repair_timeout: float = 0.0) -> None:
        self.max_entries = max_entries
        self.repair_timeout = max(repair_timeout, reorder_timeout)
        self.settle = settle
        self.ttl = ttl
        self.reorder_timeout = reorder_timeout
        self._logs: dict[Hashable, _OriginLog] = {}
        # next_seq of origins forgotten (silent, or dropped for room), oldest first (module docstring).
        self._dormant: dict[Hashable, int] = {}
        # Origins with held messages, in the order their gaps opened (a dict, not a set: iteration order
        # must not depend on hashing, or two runs of the simulator would differ).
        self._gapped: dict[Hashable, None] = {}
        # Earliest time at which `expire` has something to do (a settle window or a gap timing out).
        self.wakeup = float("inf")
        self.held_count = 0
        # Counters, read by the node's status.
        self.duplicates = 0
        self.gaps_given_up = 0  # messages never seen, whose turn was skipped
        self.origins_evicted = 0
        # Messages given up per origin since the caller last took them (`take_losses`).
        self.losses: dict[Hashable, int] = {}

    def __len__(self) -> int:
        """Entries in use: origin records plus held messages (what `max_entries` bounds)."""
        return len(self._logs) + self.held_count

    def observe(self, origin: Hashable, seq: int, now: float, item: Any, count: int = 1, *,
                settle: bool = True) -> list[Any] | None:
        """Record the frame of `origin` (a hashable of name and epoch) that holds messages `seq` ..
        `seq + count - 1`.

        Returns None for a duplicate; otherwise the list of items now deliverable in order (empty when
        this one is held behind a gap). Anything not None is new and should be forwarded. `settle`
        False: a stream not tracked yet starts at this message at once, whatever its number (the caller
        knows nothing earlier was meant for it).
        """
        log = self._logs.get(origin)
        if log is None:
            while self._logs and len(self) + 1 > self.max_entries:
                self._evict_one()
            resumed = self._dormant.pop(origin, None)
            if resumed is not None:
                # A stream we knew, silent for a while: its numbers say at once where it stands (the
                # next message, one past a gap, or an old copy: the rules below, as if never forgotten).
                log = self._logs[origin] = _OriginLog(resumed, now, 0.0)
            # Settle only with room for the record and a held message; a new epoch's first message
            # (seq 1) needs no settling: nothing can come before it.
            elif settle and self.settle > 0 and seq > 1 and len(self) + 2 <= self.max_entries:
                log = self._logs[origin] = _OriginLog(seq, now, now + self.settle)
                self.wakeup = min(self.wakeup, now + self.settle)
                log.held[seq] = item
                if count != 1:
                    log.spans[seq] = count
                self.held_count += 1
                self._gapped[origin] = None
                return []
            else:
                log = self._logs[origin] = _OriginLog(seq, now, 0.0)
        else:
            log.last_active = now
        if log.settle_until:
            # Still choosing the starting point: hold everything, the lowest seq seen starts the run.
            if seq in log.held:
                self.duplicates += 1
                return None
            log.held[seq] = item
            if count != 1:
                log.spans[seq] = count
            self.held_count += 1
            log.next_seq = min(log.next_seq, seq)
            if len(self) > self.max_entries:
                log.settle_until = 0.0  # out of room: the starting point is fixed now
                return self._give_up_gap(origin, log, now)
            return []
        next_seq = log.next_seq
        if seq == next_seq:
            if not log.held:
                log.next_seq = seq + count
                return [item]
            ready = [item]
            held, spans = log.held, log.spans
            seq += count
            while seq in held:
                ready.append(held.pop(seq))
                seq += spans.pop(seq, 1)
            self.held_count -= len(ready) - 1
            log.next_seq = seq
            if held:
                log.gap_since = now  # a new gap starts now
            else:
                self._gapped.pop(origin, None)
            return ready
        if seq < next_seq or seq in log.held:
            self.duplicates += 1
            return None
        if not log.held:
            log.gap_since = now
            self._gapped[origin] = None
            self.wakeup = min(self.wakeup, now + self.reorder_timeout)
        log.held[seq] = item
        if count != 1:
            log.spans[seq] = count
        self.held_count += 1
        if self.held_count + len(self._logs) > self.max_entries:
            return self._give_up_gap(origin, log, now)
        return []

    def has(self, origin: Hashable, seq: int) -> bool:
        """Has message `seq` of `origin` been seen (delivered, given up, or held)?"""
        log = self._logs.get(origin)
        if log is None:
            return seq < self._dormant.get(origin, 0)
        return seq in log.held or (not log.settle_until and seq < log.next_seq)

    def progress(self, origin: Hashable) -> tuple[int, float] | None:
        """(highest message number seen, when a frame of `origin` last arrived, duplicates included), or
        None for an origin not tracked: how far a stream has come and whether it still flows."""
        log = self._logs.get(origin)
        if log is None:
            return None
        return _highest(log), log.last_active

    def next_expected(self, origin: Hashable) -> int | None:
        """The number of the next message of `origin` to deliver, or None if it is not tracked (or still
        settling on its starting point)."""
        log = self._logs.get(origin)
        return None if log is None or log.settle_until else log.next_seq

    def gaps(self, older_than: float) -> list[tuple[Hashable, int, int]]:
        """(origin, first missing, last missing) of each gap open since before `older_than`: the
        messages between what was delivered and the first frame held."""
        found = []
        for origin in self._gapped:
            log = self._logs[origin]
            if log.held and not log.settle_until and log.gap_since <= older_than:
                found.append((origin, log.next_seq, min(log.held) - 1))
        return found

    def take_losses(self) -> dict[Hashable, int]:
        """Messages given up per origin since the last call."""
        losses, self.losses = self.losses, {}
        return losses

    def snapshot(self, limit: int, since: float = float("-inf")) -> list[tuple[Hashable, int]]:
        """(origin, highest seq seen) of up to `limit` most recently active origins (active at `since` or
        later).

        A peer that has just linked a newcomer sends this: every message up to those numbers reached the
        peer before the link existed, so it was published before the newcomer could be ready, and the
        newcomer can start each origin right after it (`adopt`) instead of guessing from arrivals.
        """
        live = [item for item in self._logs.items() if item[1].last_active >= since]
        recent = sorted(live, key=lambda item: item[1].last_active, reverse=True)[:limit]
        return [(origin, _highest(log)) for origin, log in recent]

    def adopt(self, origin: Hashable, highest_seen: int, now: float) -> None:
        """Start tracking `origin` after `highest_seen`, unless it is already tracked."""
        if origin in self._logs or highest_seen < 0:
            return
        self._dormant.pop(origin, None)  # the peer's position is newer than what we remembered
        while self._logs and len(self) + 1 > self.max_entries:
            self._evict_one()
        self._logs[origin] = _OriginLog(highest_seen + 1, now, 0.0)

    def expire(self, now: float, repairing: Callable[[Hashable, int], bool] | None = None) -> list[Any]:
        """Give up gaps older than `reorder_timeout` (or `repair_timeout`, for a gap whose missing
        message `repairing(origin, seq)` says is on its way), forget silent origins; return items
        released."""
        released: list[Any] = []
        for origin in list(self._gapped):
            log = self._logs[origin]
            if log.settle_until:
                if now < log.settle_until:
                    continue
                log.settle_until = 0.0
                log.gap_since = now
                released.extend(self._give_up_gap(origin, log, now))  # no gap: next_seq is the lowest held
            while log.held and now - log.gap_since >= self.reorder_timeout:
                if (repairing is not None and now - log.gap_since < self.repair_timeout
                        and repairing(origin, log.next_seq)):
                    break
                released.extend(self._give_up_gap(origin, log, log.gap_since + self.reorder_timeout))
        self.wakeup = float("inf")
        for origin in self._gapped:
            log = self._logs[origin]
            deadline = log.gap_since + self.reorder_timeout
            if deadline <= now:  # waiting for a repair: looked at again at the next regular tick
                deadline = log.gap_since + self.repair_timeout
            self.wakeup = min(self.wakeup, log.settle_until or deadline)
        deadline = now - self.ttl
        stale = [origin for origin, log in self._logs.items() if log.last_active < deadline and not log.held]
        for origin in stale:
            self._rest(origin, self._logs.pop(origin).next_seq)
        return released

    def _rest(self, origin: Hashable, next_seq: int) -> None:
        """Keep a forgotten origin's next number (at most max_entries of them, the oldest dropped)."""
        dormant = self._dormant
        dormant.pop(origin, None)
        dormant[origin] = next_seq
        if len(dormant) > self.max_entries:
            del dormant[next(iter(dormant))]

    def _give_up_gap(self, origin: Hashable, log: _OriginLog, now: float) -> list[Any]:
        """Skip to the first held message and release the run that follows it."""
        held, spans = log.held, log.spans
        first = min(held)
        if first > log.next_seq:
            self.gaps_given_up += first - log.next_seq
            self.losses[origin] = self.losses.get(origin, 0) + first - log.next_seq
        ready = []
        seq = first
        while seq in held:
            ready.append(held.pop(seq))
            seq += spans.pop(seq, 1)
        self.held_count -= len(ready)
        log.next_seq = seq
        if held:
            log.gap_since = now
        else:
            self._gapped.pop(origin, None)
        return ready

    def _evict_one(self) -> None:
        # Rare (only when more origins are live than max_entries allows), so a scan is acceptable.
        origin = min(self._logs, key=lambda key: self._logs[key].last_active)
        log = self._logs.pop(origin)
        self.held_count -= len(log.held)  # (not a loss of known size: the origin is forgotten whole)
        self._gapped.pop(origin, None)
        self.origins_evicted += 1
        if not log.held and not log.settle_until:
            self._rest(origin, log.next_seq)  # (with a gap open, where it stands is not known)


def _highest(log: _OriginLog) -> int:
    """The highest message number seen of a stream: the last of its highest held frame, or the last
    delivered."""
    if not log.held:
        return log.next_seq - 1
    top = max(log.held)
    return max(log.next_seq - 1, top + log.spans.get(top, 1) - 1)
