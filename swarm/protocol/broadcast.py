"""Broadcast: how a node's DATA frames reach every other node, behind one interface, `Flood` or `Tree`.

Both share the parts that do not depend on the spreading rule (`Broadcast`):

* **The own stream.** Messages are published as entries of a *batch*: the messages a node publishes in
  one turn of its driver's event loop travel as one DATA frame under one sequence number. The rule
  (the core's, not the driver's): a message published when no frame of ours went out in this turn
  leaves at once, in a frame of its own (a lone message waits for nothing); later ones join the open
  batch, sealed when the driver reports the turn's end (`turn_end`), when it reaches
  `wire.BATCH_BYTES`, or at the next tick. So a burst costs two frames whatever its length, and the
  per-frame work of every relay and receiver is paid once per batch (Kafka's record batches, NATS's
  coalesced writes).
* **The seen-record** (`swarm.protocol.seen`): a duplicate is recognised from the header alone; messages
  are released in per-origin order; a newly linked peer is told where each stream stands
  (`positions`), so a late joiner knows what was published before it could be ready.
* **The hot path** (`on_data`): a DATA frame is checked (a batch whose entries do not fill it is never
  relayed), relayed before it is delivered, even when it is held behind a gap, and its bytes are reused
  as received, only the hop count rewritten. Most frames under flooding are copies already seen: a copy
  costs a header slice, one unpack and one dict lookup.

How a new frame spreads is the subclass's: `Flood` sends it on every link but the one it came from
(and its origin's); `Tree` (Plumtree, `tree.py`) pushes it on the links of a spanning tree and
announces its id on the others. Nothing outside this file asks which one runs.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from .. import counters as C
from ..errors import ProtocolError
from . import wire
from .actions import Action, Alarm, ReportError, ScheduleTimer, Send
from .events import LinkDown, LinkUp
from .recovery import ANSWER_FRAMES, ENTRY_OVERHEAD, PULL_AFTER, PULL_ROUNDS, PULL_TIMEOUT, FrameCache, Pulls
from .seen import SeenRecord
from .tree import MAX_GRAFT, REPAIR_ROUNDS, MessageId, TreeBroadcast, per_frame

__all__ = ["LOSS_REPORT_INTERVAL", "SEEN_SNAPSHOT_LIMIT", "TREE_IDS_READ", "Broadcast", "Flood", "Tree",
           "create"]

# Origins whose stream position a peer shares with a newcomer (a PEERS frame stays far below the
# control-frame limit: ~40 bytes each).
SEEN_SNAPSHOT_LIMIT = 2048
# Ids (or stream keys) read from one IHAVE or GRAFT frame at most, the rest ignored: swarm sends at
# most tree.MAX_IHAVE / MAX_GRAFT (512) per frame, so this only bounds the work a hostile frame costs.
TREE_IDS_READ = 4096
# Losses are reported (`error` code messages_lost) at most this often, with every origin's exact count
# since the last report: visible at once, but no error storm when a link drops thousands of frames.
LOSS_REPORT_INTERVAL = 1.0
# The last losses `status` shows.
LOSSES_KEPT = 16
# Streams whose last bringer is remembered (the first peer a gap is pulled from).
SOURCES_KEPT = 4096
# Streams whose position a node gossips in every PEERS (those active since the previous round, ours
# first): how a receiver learns of frames it lost at the very end of a stream, when no later frame
# comes to show the gap (GossipSub's heartbeat gossip of recent ids is the precedent). ~40 bytes each.
RECENT_POSITIONS = 64
# A peer's position ahead of ours is pulled only this long after it came, if we are still behind: the
# frames it counts are usually on their way to us, behind it in the same queue.
TAIL_AFTER = 1.0
# With signed origins, the own stream's frames leave at most this often from a turn's end (a full batch
# goes at once). A signature costs ~25 us, so signing takes at most 5% of the publisher's time, where a
# burst of two frames per turn of the driver (the lone first message, then the rest) cost a publisher
# of 100 B messages 28% of its rate. A message waits at most this long, and only when another frame
# left less than this long before it: at 500 msgs/s none waits. Nagle's rule, bounded in time.
SIGNED_FRAME_SPACING = 0.0005

Deliver = Callable[[bytes, "list[tuple[str | int, int, int]] | None"], None]


class Broadcast:
    """What flooding and the tree share: the own stream, the seen-record, links, delivery hand-off."""

    def __init__(self, config: Any, *, epoch: int, deliver: Deliver, counters: Counter[str],
                 out: list[Action], repair_timeout: float = 0.0, sign: Callable[[bytes], bytes] | None = None,
                 check: Callable[[bytes, int, bytes, float], bool] | None = None) -> None:
        """`config`: the node's `CoreConfig` (server_name, the seen-record's reorder_timeout,
        seen_max_entries, seen_ttl, and the frame cache's cache_bytes, cache_seconds are read). A gap under
        repair is given up after `repair_timeout` (at least as long as a pull from every peer takes).
        With signed origins (`origins.py`), `sign` signs our frames and `check(frame, conn, peer, now)`
        says whether a new frame may go further."""
        name: str = config.server_name
        repair_timeout = max(repair_timeout, config.reorder_timeout + PULL_ROUNDS * PULL_TIMEOUT)
        # An origin first met mid-stream (not at seq 1, and not in the positions a peer sends when it
        # links us) settles for `reorder_timeout`, as long as a gap may stay open: a message that
        # overtook an earlier one must not fix the starting point past it. Rare, so the wait is cheap.
        self.seen = SeenRecord(config.seen_max_entries, config.seen_ttl, config.reorder_timeout,
                               settle=config.reorder_timeout, repair_timeout=repair_timeout)
        self.hops: Counter[int] = Counter()  # broadcasts received, by hops of their first copy
        self.counters = counters
        self.out = out
        self._deliver = deliver
        self._sign, self._check = sign, check
        # Signed, the own stream spaces its frames: a turn's end seals the open batch only
        # SIGNED_FRAME_SPACING after the last frame (else a `seal` wake-up does), and batches hold up to
        # wire.SIGNED_BATCH_BYTES. Unsigned, every turn's end seals, and batches hold wire.BATCH_BYTES.
        self._spacing = SIGNED_FRAME_SPACING if sign is not None else 0.0
        self._batch_limit = wire.SIGNED_BATCH_BYTES if sign is not None else wire.BATCH_BYTES
        self._next_seal = float("-inf")  # when the spacing lets the next frame go
        self._seal_asked = float("-inf")  # the `seal` wake-up asked for last
        self._name_bytes = name.encode("utf-8")
        self._origin = wire.encode_origin(name)
        self.epoch = epoch
        self.own_key = wire.stream_key(self._origin, epoch)  # our stream's seen-record key
        self.seq = 0  # the number of our last message sent (messages are numbered from 1)
        self.last_frame_seq = 0  # the number of the first message of our last DATA frame
        # Recent frames for peers that pull (and tree grafts), the pulls of ours pending, the peer that
        # last brought each stream (asked first), and the losses reported and to report.
        self.cache = FrameCache(config.cache_bytes, config.cache_seconds, entry_overhead=ENTRY_OVERHEAD)
        self.pulls = Pulls()
        self._sources: dict[bytes, bytes] = {}
        self._tails: dict[bytes, tuple[int, bytes, float]] = {}  # key -> (highest, peer, when) at a peer
        self.losses: list[dict[str, Any]] = []
        self._unreported = C.PerOrigin(LOSS_REPORT_INTERVAL)
        # Messages published and not yet sealed into a DATA frame (encoded entries), and their size.
        self._batch: list[bytes] = []
        self._batch_bytes = 0
        self._turn_open = False  # a frame of ours went out in this turn of the driver
        self._links: dict[bytes, int] = {}  # linked peer (name as UTF-8) -> its connection
        self._active: tuple[int, ...] = ()  # the same connections, for Send
        self._pairs: tuple[tuple[int, bytes], ...] = ()  # (connection, peer) of the same
        self.alarm = Alarm(out)

    # ------------------------------------------------------------------ the own stream

    def publish(self, entry: bytes, now: float, seal: bool | None) -> None:
        """Publish one encoded entry (`wire.encode_entry`). `seal` None follows the batching rule of
        the module docstring; True sends it at once (as the last entry of the open batch, if one is
        open: alone otherwise); False adds it to the open batch."""
        self.counters[C.PUBLISHED] += 1
        if not self._active and not self._batch:
            self.counters[C.PUBLISHED_WITHOUT_PEERS] += 1
            return
        if seal is None:
            seal = not self._turn_open and now >= self._next_seal
        if self._batch and self._batch_bytes + len(entry) > self._batch_limit:
            self._seal(now)
        self._batch.append(entry)
        self._batch_bytes += len(entry)
        if seal:
            self._seal(now)

    @property
    def batch_open(self) -> bool:
        return bool(self._batch)

    def seal(self, now: float) -> None:
        """Send the open batch, if any, as one DATA frame."""
        if self._batch:
            self._seal(now)

    def turn_end(self, now: float) -> None:
        """The driver's turn ended: the open batch goes (signed: once the spacing allows, a wake-up
        asked for then), and the next message leaves at once again (signed: if the spacing allows)."""
        if self._batch and now < self._next_seal:
            if self._seal_asked != self._next_seal:
                self._seal_asked = self._next_seal
                self.out.append(ScheduleTimer(self._next_seal, seal=True))
        else:
            self.seal(now)
        self._turn_open = False

    def _seal(self, now: float) -> None:
        batch, self._batch, self._batch_bytes = self._batch, [], 0
        self._turn_open = True
        self._next_seal = now + self._spacing
        if not self._active:  # the links went while the batch was open
            self.counters[C.PUBLISHED_WITHOUT_PEERS] += len(batch)
            return
        first = self.last_frame_seq = self.seq + 1
        self.seq += len(batch)
        self.counters[C.BATCHES_PUBLISHED] += 1
        frame = wire.encode_batch(self._origin, self.epoch, first, batch)
        if self._sign is not None:
            frame = self._sign(frame)
        self.cache.add(self.own_key, first, len(batch), frame, now)
        self._originate(frame, first, now)

    def _originate(self, frame: bytes, first: int, now: float) -> None:
        """Spread a frame of our own stream (its first message numbered `first`)."""
        raise NotImplementedError

    def positions(self) -> list[list[Any]]:
        """Where each stream stands here, our own first, for the PEERS a newly linked peer gets: everything
        up to these numbers was published before the newcomer could be ready. Within half a control frame,
        whatever the names' lengths."""
        positions: list[list[Any]] = [[self.own_key, self.seq]]
        budget = wire.MAX_CONTROL_BODY // 2
        for key, seq in self.seen.snapshot(SEEN_SNAPSHOT_LIMIT):
            budget -= len(key) + 12
            if budget < 0:
                break
            positions.append([key, seq])
        return positions

    def peer_positions(self, conn: int, peer: bytes, seen: Any, now: float, *, adopt: bool) -> None:
        """A peer's `positions` (its PEERS "seen"): checked, and with `adopt` each stream we do not track
        yet starts after them. Only until the node is ready: a list arriving later may already count a
        message published after our ready, still on its way to us. Once ready, a stream we track that
        went further at the peer than here is a gap at its tail (we were stalled, or cut off): pulled,
        from that peer first (`recovery.py`)."""
        if not isinstance(seen, list) or not all(
                isinstance(e, list) and len(e) == 2 and isinstance(e[0], bytes) and isinstance(e[1], int)
                for e in seen):
            raise ProtocolError("PEERS seen-list malformed")
        for key, highest in seen[:SEEN_SNAPSHOT_LIMIT + 1]:
            if not key or wire.key_origin(key) == self._name_bytes:  # never track our own stream
                continue
            if adopt:
                self.seen.adopt(key, highest, now)
                continue
            expected = self.seen.next_expected(key)
            if expected is not None and expected <= highest:
                known = self._tails.get(key)
                if known is None or known[0] < highest:
                    if len(self._tails) >= SOURCES_KEPT:
                        self._tails.clear()
                    self._tails[key] = (highest, peer, now)

    def recent_positions(self, now: float, window: float) -> list[list[Any]]:
        """Our own stream's position and those of the streams active in the last `window` seconds."""
        positions: list[list[Any]] = [[self.own_key, self.seq]] if self.seq else []
        positions.extend([key, seq] for key, seq in self.seen.snapshot(RECENT_POSITIONS, now - window))
        return positions

    # ------------------------------------------------------------------ links

    def link_up(self, event: LinkUp) -> None:
        self._links[event.name.encode("utf-8")] = event.conn
        self._refresh()

    def link_down(self, event: LinkDown) -> None:
        self._links.pop(event.name.encode("utf-8"), None)
        self._refresh()

    def _refresh(self) -> None:
        self._active = tuple(self._links.values())
        self._pairs = tuple((conn, peer) for peer, conn in self._links.items())

    # ------------------------------------------------------------------ frames

    def on_data(self, conn: int, peer: bytes, frame: bytes, now: float) -> None:
        """A DATA frame from `peer` (by name: it may come on a connection being retired)."""
        counters = self.counters
        counters[C.DATA_FRAMES_RECEIVED] += 1  # copies included: what flooding costs (RMR)
        origin, key, seq, count = wire.data_stream(frame)
        if origin == self._name_bytes:
            # Our own message came back around a cycle: never deliver it (no echo).
            counters[C.OWN_MESSAGES_RETURNED] += 1
            self._own_returned(conn, peer)
            return
        check = self._check
        if check is not None and not self.seen.has(key, seq) and not check(frame, conn, peer, now):
            return  # forged, altered, a replay, or not checkable yet: never seen, relayed or delivered
        ready = self.seen.observe(key, seq, now, frame, count)
        if ready is None:
            if self.tracks_copies:
                self._duplicate(conn, peer, key, wire.hops(frame) + 1, seq)
            return
        deliver = self._deliver
        try:
            entries = wire.data_entries(frame)  # a malformed batch is never relayed
        except ProtocolError:
            for item in ready:  # it may have filled a gap: the good ones behind it still go out
                if item is not frame:
                    deliver(item, None)
            raise
        counters[C.RECEIVED_NEW] += 1
        self.cache.add(key, seq, count, frame, now)
        sources = self._sources
        if sources.get(key) != peer:
            if len(sources) >= SOURCES_KEPT:
                sources.clear()
            sources[key] = peer
        hops = wire.hops(frame) + 1
        self.hops[hops] += 1  # links the first copy crossed: the flood's hop distribution
        self._relay(conn, peer, origin, key, seq, hops, frame, len(entries), now)
        for item in ready:
            deliver(item, entries if item is frame else None)
        if not ready:  # held: a gap or a settle window may have opened
            self.alarm.ask(self.seen.wakeup)

    def _own_returned(self, conn: int, peer: bytes) -> None:
        """A frame of our own stream came back from `peer`."""

    # Does `_duplicate` want to hear of copies already seen? Most frames under flooding are such copies,
    # and a call that does nothing is a tenth of what one costs.
    tracks_copies = False

    def _duplicate(self, conn: int, peer: bytes, key: bytes, hops: int, seq: int) -> None:
        """A copy of a message already seen came from `peer` (if `tracks_copies`)."""

    def _relay(self, conn: int, peer: bytes, origin: bytes, key: bytes, seq: int, hops: int, frame: bytes,
               messages: int, now: float) -> None:
        """Spread a new frame received from `peer`; it has crossed `hops` links when it arrives."""
        raise NotImplementedError

    def on_control(self, conn: int, peer: bytes, kind: int, fields: dict[str, Any], now: float) -> None:
        """A PULL or PULLED frame (gap recovery, both modes); IHAVE, GRAFT and PRUNE are the tree's, and
        flooding ignores them (it pushes everything)."""
        if kind == wire.KIND_PULL:
            self._answer_pull(conn, fields)
        elif kind == wire.KIND_PULLED:
            self._pulled(peer, fields, now)

    # ------------------------------------------------------------------ gap recovery (recovery.py)

    def _candidates(self, key: bytes, first: Any = ()) -> list[bytes]:
        """The peers to pull stream `key` from, in order: `first`, the peer that last brought it, its
        origin (which keeps every frame it sent for the cache window, even those its own full queues
        dropped towards every peer), the others."""
        order = list(first)
        for peer in (self._sources.get(key), wire.key_origin(key)):
            if peer is not None and peer not in order:
                order.append(peer)
        order.extend(peer for peer in self._links if peer not in order)
        return [peer for peer in order if peer in self._links]

    def _pull(self, key: bytes, first: int, last: int, candidates: list[bytes], now: float) -> None:
        ask = self.pulls.want(key, first, last, self._candidates(key, candidates), now)
        if ask is not None:
            self._send_pull(ask[0], key, ask[1], ask[2])

    def _send_pull(self, peer: bytes, key: bytes, first: int, last: int) -> None:
        conn = self._links.get(peer)
        if conn is None:
            return
        self.counters[C.PULLS_SENT] += 1
        fields = {"key": key, "first": first, "last": last}
        budget = self.pulls.budget.get(peer)
        if budget is not None and budget < ANSWER_FRAMES:
            fields["frames"] = budget
        self.out.append(Send((conn,), wire.encode_control(wire.KIND_PULL, fields)))
        self.alarm.ask(self.pulls.wakeup)

    def _answer_pull(self, conn: int, fields: dict[str, Any]) -> None:
        key, first, last = fields.get("key"), fields.get("first"), fields.get("last")
        budget = fields.get("frames", ANSWER_FRAMES)
        if not (isinstance(key, bytes) and isinstance(first, int) and isinstance(last, int)
                and 0 < first <= last and isinstance(budget, int) and budget > 0):
            raise ProtocolError("PULL without a stream key and a range of message numbers")
        self.counters[C.PULLS_ANSWERED] += 1
        frames, looked_to, missing = self.cache.range(key, first, last, min(budget, ANSWER_FRAMES))
        for frame in frames:
            self.out.append(Send((conn,), wire.relayed(frame, wire.hops(frame) + 1)))
        self.counters[C.PULLED_FRAMES_SENT] += len(frames)
        self.out.append(Send((conn,), wire.encode_control(wire.KIND_PULLED, {
            "key": key, "first": first, "last": looked_to, "missing": [list(r) for r in missing]})))

    def _pulled(self, peer: bytes, fields: dict[str, Any], now: float) -> None:
        key, first, last, missing = (fields.get("key"), fields.get("first"), fields.get("last"),
                                     fields.get("missing"))
        if not (isinstance(key, bytes) and isinstance(first, int) and isinstance(last, int)
                and isinstance(missing, list) and all(
                    isinstance(r, list) and len(r) == 2 and all(isinstance(n, int) for n in r)
                    for r in missing)):
            raise ProtocolError("PULLED without a stream key, a range and a list of missing ranges")
        expected = self.seen.next_expected(key)
        asks = self.pulls.answered(peer, key, first, last, [(a, b) for a, b in missing[:TREE_IDS_READ]],
                                   self._candidates(key), now, None if expected is None else expected - 1)
        for ask_peer, ask_first, ask_last in asks:
            self._send_pull(ask_peer, key, ask_first, ask_last)

    def _recover(self, now: float) -> None:
        """Pull the gaps old enough; pass unanswered pulls on; report the losses given up."""
        for ask_peer, key, first, last in self.pulls.due(now, linked=list(self._links)):
            self._send_pull(ask_peer, key, first, last)
        for key, first, last in self.seen.gaps(now - PULL_AFTER):
            if not self.pulls.repairing(key, first):
                self._pull(key, first, last, [], now)
        for key, (highest, peer, when) in list(self._tails.items()):
            if now - when < TAIL_AFTER:
                continue
            del self._tails[key]
            expected = self.seen.next_expected(key)
            if expected is not None and expected <= highest:  # still behind the peer: pull the tail
                self._pull(key, expected, highest, [peer], now)
        self.cache.expire(now)
        lost = self.seen.take_losses()
        if lost:
            for key, count in lost.items():
                origin = wire.key_origin(key).decode("utf-8", "replace")
                self._unreported.add(origin, count)
                self.losses.append({"origin": origin, "messages": count, "cause": "gap given up", "at": now})
            del self.losses[:-LOSSES_KEPT]
        report = self._unreported.due(now)
        if report is not None:
            self.out.append(ReportError("messages_lost", f"{report[0]} messages lost (no peer had them when "
                                                         f"their gap was given up): {report[1]}"))

    def repairing(self, key: bytes, seq: int) -> bool:
        """Is message `seq` of stream `key` on its way (a pull of it pending)?"""
        return self.pulls.repairing(key, seq)

    # ------------------------------------------------------------------ time

    def tick(self, now: float) -> None:
        """Release what waited too long behind a gap (unless a pull of it is pending), pull the gaps;
        ask to be woken for the next deadline."""
        for item in self.seen.expire(now, self.repairing):
            self._deliver(item, None)
        self._recover(now)
        self.alarm.rang(min(self.seen.wakeup, self.pulls.wakeup))


class Flood(Broadcast):
    """Every link carries every message once: the simplest, and other paths route around a slow link."""

    def _originate(self, frame: bytes, first: int, now: float) -> None:
        self.out.append(Send(self._active, frame))
        self.counters[C.DATA_FRAMES_SENT] += len(self._active)

    def _relay(self, conn: int, peer: bytes, origin: bytes, key: bytes, seq: int, hops: int, frame: bytes,
               messages: int, now: float) -> None:
        targets = tuple(c for c, name in self._pairs if name != peer and name != origin)
        if targets:
            counters = self.counters
            self.out.append(Send(targets, wire.relayed(frame, hops)))
            counters[C.FORWARDED] += 1
            counters[C.FORWARDED_MESSAGES] += messages
            counters[C.DATA_FRAMES_SENT] += len(targets)


class Tree(Broadcast):
    """Plumtree's eager and lazy push (`tree.py` has the rules and their reasons)."""

    tracks_copies = True  # a duplicate may prune its sender

    def __init__(self, config: Any, **options: Any) -> None:
        """As `Broadcast`; `config.graft_timeout` is read too."""
        # A gap is repaired by GRAFT, which under load may take longer than reorder_timeout.
        repair_window = config.reorder_timeout + REPAIR_ROUNDS * config.graft_timeout
        super().__init__(config, repair_timeout=repair_window, **options)
        self.tree = TreeBroadcast(config.graft_timeout, cache=self.cache, parents=config.tree_parents)

    def _wake(self) -> None:
        self.alarm.ask(min(self.seen.wakeup, self.tree.wakeup))

    def _originate(self, frame: bytes, first: int, now: float) -> None:
        message = (self.own_key, first)
        self.tree.received(message, frame, now)
        self._push(frame, b"", b"", message)
        self._wake()

    def _push(self, frame: bytes, sender: bytes, origin: bytes, message: MessageId, hops: int = 0) -> None:
        """The payload to eager links, its id to lazy ones (not back to sender or origin); its copy here
        crossed `hops` links."""
        tree = self.tree
        lazy, pruned = tree.lazy, tree.lazy_for(message[0])
        eager = tuple(c for c, peer in self._pairs if peer != sender and peer != origin
                      and peer not in pruned and peer not in lazy)
        if eager:
            self.out.append(Send(eager, frame))
            self.counters[C.DATA_FRAMES_SENT] += len(eager)
        tree.announce(message, (peer for _, peer in self._pairs if (peer in pruned or peer in lazy)
                                and peer != sender and peer != origin), hops)

    def _own_returned(self, conn: int, peer: bytes) -> None:
        if self.tree.unwanted(peer, self.own_key):
            self.out.append(Send((conn,), wire.encode_control(wire.KIND_PRUNE, {"key": self.own_key})))

    def _duplicate(self, conn: int, peer: bytes, key: bytes, hops: int, seq: int) -> None:
        self._copy(conn, peer, key, hops, seq, False)

    def _relay(self, conn: int, peer: bytes, origin: bytes, key: bytes, seq: int, hops: int, frame: bytes,
               messages: int, now: float) -> None:
        self._copy(conn, peer, key, hops, seq, True)
        self.tree.received((key, seq), frame, now)
        self._push(wire.relayed(frame, hops), peer, origin, (key, seq), hops)
        self.counters[C.FORWARDED] += 1
        self.counters[C.FORWARDED_MESSAGES] += messages
        self._wake()

    def _copy(self, conn: int, peer: bytes, key: bytes, hops: int, seq: int, first: bool) -> None:
        """A copy of message `seq` of stream `key` came from `peer` (the first copy here, or a duplicate):
        PRUNE that peer or the parent it replaces."""
        victim = self.tree.copy_from(peer, key, hops, seq, first)
        if victim is None:
            return
        target = conn if victim == peer else self._links.get(victim)
        if target is not None:
            self.counters[C.PRUNES_SENT] += 1
            self.out.append(Send((target,), wire.encode_control(wire.KIND_PRUNE, {"key": key})))

    def on_control(self, conn: int, peer: bytes, kind: int, fields: dict[str, Any], now: float) -> None:
        tree = self.tree
        if kind in (wire.KIND_PULL, wire.KIND_PULLED):
            super().on_control(conn, peer, kind, fields, now)
            return
        if kind == wire.KIND_PRUNE:
            # Obeyed as it is: the pruner chose another parent for the stream, and only it knows
            # whether that one still brings it (our own sources are not affected: prunes are one-way).
            key = fields.get("key")
            if key is not None and not isinstance(key, bytes):
                raise ProtocolError("PRUNE with a key that is not bytes")
            tree.pruned_by(peer, key)
            self.counters[C.PRUNES_RECEIVED] += 1
            return
        ids = fields.get("ids")
        if not isinstance(ids, list) or not all(
                isinstance(i, list) and len(i) == 2 and isinstance(i[0], bytes) and isinstance(i[1], int)
                for i in ids):
            raise ProtocolError("IHAVE/GRAFT without a list of [key, seq] ids")
        messages = [(key, seq) for key, seq in ids[:TREE_IDS_READ]]
        if kind == wire.KIND_IHAVE:
            hops = fields.get("hops", [])  # optional: a node written before it sends none
            if not isinstance(hops, list) or not all(
                    isinstance(h, list) and len(h) == 2 and isinstance(h[0], bytes) and isinstance(h[1], int)
                    for h in hops):
                raise ProtocolError("IHAVE with hops that are not a list of [key, hops]")
            better = tree.ihave_from(peer, messages, now, lambda m: self.seen.has(m[0], m[1]),
                                     [(key, count) for key, count in hops[:TREE_IDS_READ]])
            for part in per_frame(better, MAX_GRAFT):  # Plumtree's optimization step: a shorter path
                self.counters[C.SHORTER_PATHS_GRAFTED] += len(part)
                graft = wire.encode_control(wire.KIND_GRAFT, {"ids": [], "more": part})
                self.out.append(Send((conn,), graft))
            self._wake()
            return
        # Streams to push again, nothing resent: `keys`, those the peer lost its source of; `more`,
        # those it asks spare parents for (it still has one).
        keys, more = fields.get("keys", []), fields.get("more", [])
        if not all(isinstance(k, list) and all(isinstance(key, bytes) for key in k) for k in (keys, more)):
            raise ProtocolError("GRAFT with keys that are not a list of bytes")
        keys, more = keys[:TREE_IDS_READ], more[:TREE_IDS_READ]
        for frame in tree.grafted_by(peer, messages, keys + more):  # GRAFT: resend, one hop further
            self.out.append(Send((conn,), wire.relayed(frame, wire.hops(frame) + 1)))
            self.counters[C.GRAFTED_PAYLOADS] += 1
        if keys:  # the peer lost its source of these streams: if it was ours too, we lost ours
            self._orphaned(*tree.orphaned(peer, keys), conn)

    def _orphaned(self, orphans: list[bytes], short: list[bytes], asker: int | None) -> None:
        """The streams `orphans` lost their last parent, `short` one of theirs. Ask every linked peer
        (but `asker`, which asked us for them) to push them, at once rather than after a graft timeout
        per orphaned node: tree.py's `orphaned` says what each peer does with it."""
        self.counters[C.STREAMS_ORPHANED] += len(orphans)
        targets = tuple(c for c in self._active if c != asker)
        if not targets:
            return
        for field, keys in (("keys", orphans), ("more", short)):
            for part in per_frame(keys, MAX_GRAFT):
                self.out.append(Send(targets, wire.encode_control(wire.KIND_GRAFT, {"ids": [], field: part})))

    def link_down(self, event: LinkDown) -> None:
        super().link_down(event)
        self._orphaned(*self.tree.link_lost(event.name.encode("utf-8")), None)

    def tick(self, now: float) -> None:
        """Send the batched IHAVEs, GRAFT what was announced but has not come; then the seen-record's
        gaps, each given up only once no repair of it is under way."""
        tree = self.tree
        conns = {peer: c for c, peer in self._pairs}
        for peer, messages in tree.due(now, set(conns), self.seen.progress):
            self.counters[C.GRAFTS] += len(messages)
            self.out.append(Send((conns[peer],), wire.encode_control(
                wire.KIND_GRAFT, {"ids": [[key, seq] for key, seq in messages]})))
        for peer, messages, hops in tree.take_ihaves():
            if peer in conns and messages:
                self.counters[C.IHAVE_IDS_SENT] += len(messages)
                self.out.append(Send((conns[peer],), wire.encode_control(wire.KIND_IHAVE, {
                    "ids": [[key, seq] for key, seq in messages], "hops": [[k, h] for k, h in hops]})))
        for item in self.seen.expire(now, lambda origin, seq: tree.repairing((origin, seq))
                                     or self.pulls.repairing(origin, seq)):
            self._deliver(item, None)
        self._recover(now)
        self.alarm.rang(min(self.seen.wakeup, tree.wakeup, self.pulls.wakeup))


def create(config: Any, **options: Any) -> Broadcast:
    """The broadcast that `config.broadcast` names, "flood" or "tree"."""
    return (Tree if config.broadcast == "tree" else Flood)(config, **options)
