"""Tree broadcast (`broadcast: tree`): Plumtree's eager and lazy push over the overlay's links.

Flooding sends every payload over every link, so a node of degree d receives about d copies of each
message (RMR ≈ d − 2). Plumtree (Leitão, Pereira and Rodrigues, "Epidemic Broadcast Trees", SRDS 2007)
keeps flooding's reliability at a fraction of the cost:

* every link starts *eager*: payloads are pushed on it;
* a node that receives a payload from a peer it does not want that stream from tells the peer PRUNE
  with the stream's key, and the peer stops pushing that stream to it (only message ids, IHAVE, batched
  once per tick, travel that way from then on);
* a node that hears IHAVE for a message it has not received within `graft_timeout` asks the announcer
  with GRAFT: the link carries the stream eagerly again (the tree repairs itself) and the payload is
  resent from a cache of recent messages.

Unlike the paper, eager and lazy are per stream (origin and epoch) and per direction, and a node
chooses which peer it takes each stream from: its *parent*, the peer whose copies crossed the fewest
links (the DATA frame's hop count). The paper prunes both directions of a link for any duplicate, by
arrival order. When per-frame delays vary, the first copy comes over a different path from one
message to the next, each node prunes whichever path lost the last race, and two nodes pruning two
different links of a cycle at once cut a whole branch off its source: its messages then came by
graft, ~100-200 ms late, and in-order delivery held everything behind them (16 nodes, 0-5 ms of
jitter per frame: p99 170 ms). Hop counts do not jitter, so the choice is stable: a node prunes a
peer that brings only duplicates over a path no shorter than its parent's, and switches parents to a
strictly shorter path (pruning the old one). So it never prunes its last live source of a stream, and a
source's neighbours always keep the source itself (one hop). A graft makes the answering peer the parent
until a shorter path shows up.

Crashes make hop counts stale. When the link to a stream's parent is lost, every other peer that pushed
the stream had been pruned, and the node's children do not know: by the paper's repair alone each
orphaned node waits for an IHAVE and a graft timeout, level after level of the orphaned subtree (without
the two rules below, 1,000 simulated nodes, 20/50/80% crashed, no overlay repair: p99 378/577/1,479 ms;
flooding 30/35/70 ms). Here the node asks every other linked peer at once with a GRAFT that names the
stream keys and no ids (nothing is resent). A peer it had pruned pushes the stream again; a peer whose
parent it was learns that its parent lost the stream, and does the same in turn (`orphaned`), so the
whole subtree hears of it within its depth of link latencies and re-attaches with the next message, at
flooding's cost for that one message: the first copy picks the new parent, and the others are pruned
again. And a parent that re-attached over a longer path may bring the stream later than a peer we pruned
long ago, or not at all (it may have taken the stream from us: a cycle). So a peer that brings a message
*first*, over a path that seems no shorter, is not pruned at once but kept as the stream's *challenger*:
when the parent brings that message, the shorter path of the two stays; when the challenger brings
CHALLENGES messages first and the parent none of them, it replaces the parent. With both, the crash runs
above give p99 30/35/70 ms, flooding's figures.

**Two parents** (`treeParents`, 2 by default). A single tree path is as late as its slowest link: a
retransmitted segment (TCP waits ~200 ms) delays every message behind it on that link, for the whole
branch below it, where flooding's other copies route around it (1,000 simulated nodes, 1% of segments
retransmitted: p99 210 ms against flooding's 25), and a parent that leaves holds its children until
they re-attach. So a node takes each stream from the `parents` peers with the shortest paths at once,
and prunes the rest: it reads two copies of each message instead of one (flooding reads its degree's
worth, 6-8), and one late or lost parent is covered by the other (p99 30 ms in the same run). The rules
above hold with "the parents" for "the parent": a shorter path replaces the worse parent, a challenger
is judged against the worse one, and a node that loses one parent of two is not orphaned: it asks its
other peers for spares (GRAFT `more`, passed on to nobody), and learns its new second parent from the
copies that follow. It is the "eager push to two tree parents per stream" the broadcast issue named; one
parent (`treeParents: 1`) is the paper's tree.

**The optimization step.** A peer pruned while its path was long is heard from only in IHAVEs, so the
tree could keep a longer path than the overlay offers (16 real nodes: a third of the first copies at
the far end crossed the shortest path's 3 links, most of the rest 4). Plumtree grafts a lazy link whose
IHAVE comes sufficiently earlier than the eager copy; here, where parents are chosen by hops, each IHAVE
says how many links the announcer's copies of each stream crossed, and an announcer whose path is
OPTIMIZE_HOPS shorter than the worse parent's is asked for the stream (GRAFT `more`, nothing resent).
The worse parent is pruned only when the announcer's copies come and prove the path (`copy_from`),
so no message falls between the two; a stream is re-grafted so at most once per OPTIMIZE_COOLDOWN
graft timeouts, so an announcement that proves wrong does not churn the tree.

Pure code, no I/O and no clock: `broadcast.Tree` calls it with `now`. iroh-gossip's `plumtree.rs` has the
same shape.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Protocol, TypeVar

from .recovery import FrameCache
from .wire import key_origin

__all__ = ["MAX_GRAFT", "REPAIR_ROUNDS", "STREAMS", "MessageId", "TreeBroadcast",
           "per_frame"]

MessageId = tuple[bytes, int]  # (stream key: origin length, origin, epoch; seq)

# Ids announced in one IHAVE frame at most (a control frame stays small); more go in further frames.
MAX_IHAVE = 512
# Ids asked for in one GRAFT frame at most, for the same reason: an id is ~30 bytes packed, so a backlog
# of ~9,000 ids in one frame passed wire.MAX_CONTROL_BODY and the peer closed the link over it.
MAX_GRAFT = MAX_IHAVE
# Ids asked of one peer by GRAFT and not yet answered, at most. A graft answer goes into one send queue
# at once, and the driver drops what finds it full: answering a backlog of thousands of grafts (a
# saturated link's holes) overflowed the publisher's queue and made new holes. Each answered payload
# has left the peer's queue before it arrives, so this also bounds what our grafts put in that queue.
GRAFT_WINDOW = MAX_GRAFT
# A gap whose missing message is being repaired (announced, waiting for its payload or a graft answer)
# is given up by the seen-record only this many graft timeouts after `reorder_timeout`: under load a
# repair waits for MAX_POSTPONE timeouts, a full graft window, and an answer behind a deep queue.
REPAIR_ROUNDS = 30
# Streams whose parent and pruned peers are remembered (one per live origin and epoch). Forgetting one
# costs a flooded message and its prunes, as when the stream was new.
STREAMS = 4096
# Hop count of a parent chosen by graft before its answer arrives: any real path is shorter.
UNKNOWN_HOPS = 1 << 16
# A graft waits for a late (not lost) payload at most this many graft timeouts after its IHAVE.
MAX_POSTPONE = 10
# Plumtree's optimization step: a lazy peer whose IHAVE says its copies cross at least this many links
# fewer than the worse parent's is grafted for the stream (GRAFT `more`), and its copies then replace
# that parent by the rule of copy_from. One link: hop counts do not jitter, so a path one link shorter is
# really shorter (the paper's threshold, in arrival time, guards against delays that do).
OPTIMIZE_HOPS = 1
# ...at most once per stream per this many graft timeouts: if the announced path was not what the copies
# show (the announcer's own path changed meanwhile), the peer is pruned again and not re-grafted at once.
OPTIMIZE_COOLDOWN = 20
# Messages a challenger (a peer whose copy came first) brings before the parent brought the first of
# them, after which it replaces the parent. One is noise (a delay on the parent's path); two in a row
# with nothing from the parent in between is a parent whose own source is gone (see copy_from).
CHALLENGES = 2

# Payloads (DATA frames) for grafts come from the node's frame cache (`recovery.FrameCache`, shared with
# gap recovery by pull). A graft must find its payload for as long as the seen-record keeps the gap open
# under repair (reorderTimeout + REPAIR_ROUNDS graft timeouts: 4 s by default), or the message is lost:
# `cacheSeconds` (30 s) covers that, and `cacheBytes` (128 MiB) 2.5 s at 50 MB/s, what a node here relays
# at most. (A 32 MiB bound lost up to 59% of the messages in `throughput.py --broadcast tree --size 1024`:
# the payloads had left the cache when the grafts for them came.)


_NONE: frozenset[bytes] = frozenset()

Item = TypeVar("Item")


def per_frame(items: list[Item], limit: int) -> list[list[Item]]:
    """`items` cut, in order, into the lists of at most `limit` that one IHAVE or GRAFT frame carries."""
    return [items[start:start + limit] for start in range(0, len(items), limit)]


class StreamProgress(Protocol):
    """(highest seq seen, when anything of the stream last arrived) of a stream key, or None."""

    def __call__(self, key: bytes) -> tuple[int, float] | None: ...


class _Pending:
    __slots__ = ("deadline", "announcers", "since", "asked")

    def __init__(self, deadline: float, announcer: bytes, since: float) -> None:
        self.deadline = deadline
        self.announcers = [announcer]
        self.since = since  # when the first IHAVE came
        self.asked: bytes | None = None  # the peer last sent a GRAFT for it (until `deadline`)


class _Stream:
    """One stream's eager and lazy peers, as this node sees them."""

    __slots__ = ("parents", "pruned", "lazy", "challenger", "challenger_hops", "challenged_seq",
                 "challenges", "optimized_at")

    def __init__(self) -> None:
        # The peers we take the stream from, and the links their last copies had crossed (at most the
        # tree's `parents` of them).
        self.parents: dict[bytes, int] = {}
        self.pruned: set[bytes] = set()  # peers we told PRUNE: their copies are leftovers in flight
        self.lazy: set[bytes] = set()  # peers that told us PRUNE: they get only IHAVE from us
        # A peer that brought a message first, not pruned yet: kept until a parent brings that
        # message too (then the shorter path stays) or misses CHALLENGES of them (then it is replaced).
        self.challenger: bytes | None = None
        self.challenger_hops = UNKNOWN_HOPS
        self.challenged_seq = 0  # the first message the challenger brought before the parents
        self.challenges = 0  # messages it has brought first since
        self.optimized_at = float("-inf")  # when a shorter announced path was last grafted

    def worst(self) -> bytes:
        """The parent over the longest path (of equals, the newest: the one in place stays)."""
        parents = self.parents
        return max(reversed(parents), key=parents.__getitem__)

    def replace(self, old: bytes, peer: bytes, hops: int) -> bytes:
        """Take the stream from `peer` instead of parent `old`; return `old`, to be pruned."""
        del self.parents[old]
        self.parents[peer] = hops
        self.challenger = None
        self.pruned.add(old)
        return old


class TreeBroadcast:
    """Which links carry payloads (eager) and which only ids (lazy), and the grafts to repair."""

    def __init__(self, graft_timeout: float, cache: FrameCache | None = None, parents: int = 1) -> None:
        """`cache`: the node's frame cache (a cache of the default size and no age bound if None);
        `parents`: peers each stream is taken from at once (`treeParents`)."""
        self.graft_timeout = graft_timeout
        self.cache = cache if cache is not None else FrameCache(128 << 20, float("inf"))
        self.parents = parents
        # Peers that sent a PRUNE without a stream key (swarm always sends one; the frame allows it):
        # nothing is pushed to them until they graft.
        self.lazy: set[bytes] = set()
        self._streams: dict[bytes, _Stream] = {}
        self._ihave: dict[bytes, list[MessageId]] = {}
        self._ihave_hops: dict[bytes, int] = {}  # per stream announced: links its last copy here crossed
        self._pending: dict[MessageId, _Pending] = {}
        self.wakeup = float("inf")
        # `now` of the last `due` call if it left messages waiting for a full window, else None: an
        # answer then asks for a tick at once (a wakeup in the past), so a window that empties in 10 ms
        # is not left idle until the next regular tick.
        self._window_wait: float | None = None

    # ------------------------------------------------------------------ payloads

    def received(self, message: MessageId, body: bytes, now: float, count: int = 1) -> None:
        """A new payload (published here, or received at `now`, `count` messages): cached for grafts
        (the broadcast caches every frame already: then this is a lookup), no longer waited for."""
        pending = self._pending.pop(message, None)
        if pending is not None and pending.asked is not None and self._window_wait is not None:
            self.wakeup = self._window_wait
            self._window_wait = None
        self.cache.add(message[0], message[1], count, body, now)

    def announce(self, message: MessageId, peers: Iterable[bytes], hops: int = 0) -> None:
        """Queue an IHAVE for `message` to each lazy peer in `peers`; its copy here crossed `hops` links
        (0: published here), which the IHAVE says, for the optimization step (`ihave_from`)."""
        queued = False
        for peer in peers:
            self._ihave.setdefault(peer, []).append(message)
            queued = True
        if queued:
            self._ihave_hops[message[0]] = hops

    def _stream(self, key: bytes) -> _Stream:
        stream = self._streams.get(key)
        if stream is None:
            if len(self._streams) >= STREAMS:
                del self._streams[next(iter(self._streams))]  # the oldest stream seen
            stream = self._streams[key] = _Stream()
        return stream

    def copy_from(self, peer: bytes, key: bytes, hops: int, seq: int, first: bool) -> bytes | None:
        """A payload of stream `key`, message `seq`, came from `peer` over `hops` links: the first copy
        of that message here (`first`) or a duplicate. Return the peer to send PRUNE for this stream, if
        any: `peer` itself, or the parent it replaces.

        The first peer to bring a stream becomes its parent. A peer whose path is strictly shorter
        replaces it (the old parent is pruned); a peer that brings only duplicates over a path no shorter
        is pruned. Hops, not arrival order: with varying delays the order changes from one message to
        the next, while hop counts only change when the tree does. Copies from a peer already pruned are
        in flight from before our PRUNE reached it: nothing to do (and it stops).

        A peer that brings a message *first* over a path no shorter than the parent's last is not pruned
        at once: it is the stream's challenger. The parent's hop count may be stale: when the parent's
        own source crashed, it re-attaches over a longer path, and may even take the stream from us (a
        cycle: then it never sends us anything again, and the challenger is our only live source). When
        the parent brings the challenged message, the shorter of the two stays and the other is pruned;
        if the challenger brings CHALLENGES messages first and the parent none of them, it replaces the
        parent.
        """
        stream = self._stream(key)
        parents = stream.parents
        if peer in parents:
            parents[peer] = hops
            challenger = stream.challenger
            if challenger is None or seq < stream.challenged_seq:
                return None
            stream.challenger = None  # a parent brought the challenged message after all
            worst = stream.worst()
            if stream.challenger_hops < parents[worst]:
                return stream.replace(worst, challenger, stream.challenger_hops)
            stream.pruned.add(challenger)
            return challenger
        if peer in stream.pruned:
            return None
        if len(parents) < self.parents:
            parents[peer] = hops
            if stream.challenger == peer:
                stream.challenger = None
            return None
        worst = stream.worst()
        if hops < parents[worst]:
            return stream.replace(worst, peer, hops)
        if peer == stream.challenger:
            if first:
                stream.challenges += 1
                if stream.challenges >= CHALLENGES:
                    return stream.replace(worst, peer, hops)
            return None
        if first and stream.challenger is None:
            stream.challenger, stream.challenger_hops = peer, hops
            stream.challenged_seq, stream.challenges = seq, 1
            return None
        stream.pruned.add(peer)
        return peer

    def unwanted(self, peer: bytes, key: bytes) -> bool:
        """`peer` sent us a payload of our own stream `key`: True if it must be told PRUNE (once)."""
        stream = self._stream(key)
        if peer in stream.pruned:
            return False
        stream.pruned.add(peer)
        return True

    def lazy_for(self, key: bytes) -> set[bytes] | frozenset[bytes]:
        """Peers that pruned stream `key` (they get its ids, not its payloads)."""
        stream = self._streams.get(key)
        return stream.lazy if stream is not None else _NONE

    # ------------------------------------------------------------------ control frames

    def pruned_by(self, peer: bytes, key: bytes | None = None) -> None:
        """`peer` wants stream `key` no more (no key: a PRUNE of the whole link)."""
        if key is None:
            self.lazy.add(peer)
        else:
            self._stream(key).lazy.add(peer)

    def grafted_by(self, peer: bytes, messages: Sequence[MessageId],
                   keys: Sequence[bytes] = ()) -> list[bytes]:
        """`peer` asks for these payloads: their streams, and the streams `keys` (a keyed GRAFT's
        `keys` or `more`), are pushed to it again; return the cached bodies, at most MAX_GRAFT of them
        (what one well-behaved GRAFT asks for; the answer goes into one send queue at once, and a peer
        asking for more gets the rest by asking again). A GRAFT with neither ids nor keys makes every
        stream eager towards it."""
        self.lazy.discard(peer)
        if not messages and not keys:
            for stream in self._streams.values():
                stream.lazy.discard(peer)
        for key in {key for key, _ in messages}:
            self._stream(key).lazy.discard(peer)
        for key in keys:  # a stream we do not know was never lazy: nothing to remember for it
            stream = self._streams.get(key)
            if stream is not None:
                stream.lazy.discard(peer)
        cache = self.cache
        return [frame for frame in map(cache.get, messages) if frame is not None][:MAX_GRAFT]

    def ihave_from(self, peer: bytes, messages: Iterable[MessageId], now: float,
                   seen: Callable[[MessageId], bool], hops: Iterable[tuple[bytes, int]] = ()) -> list[bytes]:
        """`peer` announces these ids; wait `graft_timeout` for any we have not seen, then graft.

        `hops`: (stream key, links the announcer's copies crossed) as the IHAVE says. Return the streams
        to graft from `peer` now (GRAFT `more`, nothing resent), Plumtree's optimization step: those of
        which `peer` has a path at least OPTIMIZE_HOPS shorter than our worse parent's. Its copies then
        replace that parent (`copy_from`), which is pruned only once they come, so no message falls
        between the two. A node whose parents are still being repaired (a graft-chosen parent of unknown
        path) waits for the repair."""
        for message in messages:
            if message in self.cache or seen(message):
                continue
            pending = self._pending.get(message)
            if pending is None:
                self._pending[message] = _Pending(now + self.graft_timeout, peer, now)
                self.wakeup = min(self.wakeup, now + self.graft_timeout)
            elif peer not in pending.announcers:
                pending.announcers.append(peer)
        better = []
        for key, announced in hops:
            stream = self._streams.get(key)
            if stream is None or peer in stream.parents or len(stream.parents) < self.parents:
                continue
            worst = stream.parents[stream.worst()]
            if worst == UNKNOWN_HOPS or announced + 1 > worst - OPTIMIZE_HOPS:
                continue
            if now - stream.optimized_at < OPTIMIZE_COOLDOWN * self.graft_timeout:
                continue
            stream.optimized_at = now
            stream.pruned.discard(peer)  # its copies are judged, not taken for leftovers
            if stream.challenger == peer:
                stream.challenger = None
            better.append(key)
        return better

    # ------------------------------------------------------------------ time and links
    # Peers are named by their server name as UTF-8 bytes, as the core's links are.

    def due(self, now: float, linked: set[bytes],
            progress: StreamProgress | None = None) -> list[tuple[bytes, list[MessageId]]]:
        """Grafts to send now, per peer, in batches of MAX_GRAFT ids (each such link becomes eager). A
        message whose graft got no answer within another timeout is asked of its next announcer.

        With `progress`, a payload that is late rather than lost is not grafted: when a link is
        saturated its queue delays the eager payload past `graft_timeout` while the small IHAVE from a
        lazy peer comes sooner, and grafting then would fetch a second copy, prune the eager link and
        churn the tree (under load most grafts were of this kind). Eager links are FIFO, so while the
        stream still flows and nothing past the message has come, the payload is on its way: wait
        another timeout (at most MAX_POSTPONE of them). A later message of the stream already here (a
        hole), or a stream silent for a timeout (a stalled or dead eager link), grafts at once.

        At most GRAFT_WINDOW ids are asked of one peer and unanswered at a time; a message whose
        linked announcers all have full windows stays due, and is asked when answers free room.
        """
        if now < self.wakeup and self._window_wait is None:
            # Nothing is due before `wakeup` (it is at most every deadline: set with each one), and no
            # message waits for a window: the scan would change nothing. Under load thousands of ids
            # wait for their payloads, and the scan of them on every tick was 5% of a relay's time.
            return []
        grafts: dict[bytes, list[MessageId]] = {}
        self._window_wait = None
        in_flight: dict[bytes, int] = {}
        for pending in self._pending.values():
            if pending.asked is not None and pending.deadline > now:
                in_flight[pending.asked] = in_flight.get(pending.asked, 0) + 1
        streams: dict[bytes, tuple[int, float] | None] = {}  # progress asked once per key per call
        self.wakeup = float("inf")
        for message, pending in list(self._pending.items()):
            if pending.deadline > now:
                self.wakeup = min(self.wakeup, pending.deadline)
                continue
            if progress is not None and now - pending.since < MAX_POSTPONE * self.graft_timeout:
                key = message[0]
                stream = streams[key] if key in streams else streams.setdefault(key, progress(key))
                if stream is not None and stream[0] < message[1] and now - stream[1] < self.graft_timeout:
                    pending.deadline = now + self.graft_timeout
                    self.wakeup = min(self.wakeup, pending.deadline)
                    continue
            while pending.announcers and pending.announcers[0] not in linked:
                pending.announcers.pop(0)
            if not pending.announcers:
                del self._pending[message]  # nobody left to ask: the seen-record's gap timeout decides
                continue
            peer = next((p for p in pending.announcers if p in linked
                         and in_flight.get(p, 0) < GRAFT_WINDOW), None)
            if peer is None:
                self._window_wait = now  # every window is full: due again when an answer frees one
                continue
            pending.announcers.remove(peer)
            in_flight[peer] = in_flight.get(peer, 0) + 1
            pending.asked = peer
            grafts.setdefault(peer, []).append(message)
            # The graft makes `peer` push the stream to us again: take it from `peer` until a shorter
            # path shows (the parent failed, or is so late that it might as well have).
            stream = self._stream(message[0])
            if peer not in stream.parents:
                if len(stream.parents) >= self.parents:
                    del stream.parents[stream.worst()]  # not pruned: it may be only late
                stream.parents[peer] = UNKNOWN_HOPS
                stream.challenger = None
            stream.pruned.discard(peer)
            pending.deadline = now + self.graft_timeout
            self.wakeup = min(self.wakeup, pending.deadline)
        return [(peer, part) for peer, messages in grafts.items() for part in per_frame(messages, MAX_GRAFT)]

    def repairing(self, message: MessageId) -> bool:
        """Is `message` announced by a peer and waiting for its payload or a graft answer?"""
        return message in self._pending

    def take_ihaves(self) -> list[tuple[bytes, list[MessageId], list[tuple[bytes, int]]]]:
        """The IHAVE batches to send now, per peer: everything queued, in frames of MAX_IHAVE ids (a
        backlog would outlive the payload cache, and its grafts could no longer be answered), each with
        the links our copies of its streams crossed."""
        hops = self._ihave_hops
        batches = [(peer, part, [(key, hops.get(key, 0)) for key in dict.fromkeys(key for key, _ in part)])
                   for peer, messages in self._ihave.items() for part in per_frame(messages, MAX_IHAVE)]
        self._ihave = {}
        self._ihave_hops = {}
        return batches

    def link_lost(self, peer: bytes) -> tuple[list[bytes], list[bytes]]:
        """A new link to `peer` later starts eager again; nothing more is queued for this one. Return
        the streams it was a parent of (`orphaned`: those left with none, and those left with fewer than
        `parents`), but those it was the source of: nobody else has their next message."""
        self.lazy.discard(peer)
        self._ihave.pop(peer, None)
        for stream in self._streams.values():
            stream.pruned.discard(peer)
            stream.lazy.discard(peer)
            if stream.challenger == peer:
                stream.challenger = None
        orphans, short = self.orphaned(peer, [key for key, stream in self._streams.items()
                                              if peer in stream.parents])
        return ([key for key in orphans if key_origin(key) != peer],
                [key for key in short if key_origin(key) != peer])

    def orphaned(self, peer: bytes, keys: Iterable[bytes]) -> tuple[list[bytes], list[bytes]]:
        """`peer` no longer brings streams `keys`: its link was lost, or it asked us for them with a
        keyed GRAFT (so it lost its own source). Return (orphans, short): those it was our only parent of
        have none now, those it was one of our parents of have fewer than `parents`; for both, every
        peer we had pruned may bring them again.

        The caller asks every other linked peer for the orphans with a keyed GRAFT (`keys`), in frames
        of MAX_GRAFT keys: a peer we had pruned pushes them again; a child of ours learns that its parent
        lost them and does the same, so a whole orphaned subtree is told at once and re-attaches with
        the next message. For the short ones it asks for spares (GRAFT `more`): the peers push them
        again, but nobody is told that we lost them (we did not), so it goes no further than us."""
        orphans, short = [], []
        for key in keys:
            stream = self._streams.get(key)
            if stream is None or peer not in stream.parents:
                continue
            del stream.parents[peer]
            stream.challenger = None
            stream.pruned.clear()  # leftovers of a pruned peer would be taken as a new parent: fine
            (short if stream.parents else orphans).append(key)
        return orphans, short
