"""Tree broadcast (`broadcast: tree`): Plumtree's eager and lazy push over the overlay's links.

Flooding sends every payload over every link, so a node of degree d receives about d copies of each
message (RMR ≈ d − 2). Plumtree (Leitão, Pereira and Rodrigues, "Epidemic Broadcast Trees", SRDS 2007)
keeps flooding's reliability at a fraction of the cost:

* every link starts *eager*: payloads are pushed on it;
* a node that receives a payload it already has tells the sender PRUNE, and both ends make the link
  *lazy*: from then on only message ids (IHAVE) travel on it, batched once per tick;
* a node that hears IHAVE for a message it has not received within `graft_timeout` asks the announcer
  with GRAFT: the link becomes eager again (the tree repairs itself) and the payload is resent from a
  cache of recent messages.

The eager links soon form a spanning tree per source, and the lazy links are the safety net: a dead or
slow tree link costs one graft timeout, not a lost message. Ordering and duplicate suppression stay
with the seen-record; this module only decides which links carry payloads.

Pure code, no I/O and no clock: `NodeState` calls it with `now`. iroh-gossip's `plumtree.rs` has the
same shape.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Protocol

__all__ = ["REPAIR_ROUNDS", "MessageId", "TreeBroadcast"]

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
# Stream keys whose leading path is remembered (one entry per live origin).
LEADERS = 4096
# A graft waits for a late (not lost) payload at most this many graft timeouts after its IHAVE.
MAX_POSTPONE = 10

# Payloads (DATA frames) kept for grafts. A graft must find its payload for as long as the seen-record
# keeps the gap open under repair (reorderTimeout + REPAIR_ROUNDS graft timeouts: 4 s by default), or
# the message is lost. A frame may be a batch of up to wire.BATCH_BYTES, so the cache is bounded in
# bytes too: 256 MiB holds those 4 s at 50 MB/s (50,000 msgs/s of 1 KiB, what a node here relays at
# most). A 32 MiB bound lost up to 59% of the messages in `throughput.py --broadcast tree --size 1024`:
# the payloads had left the cache when the grafts for them came.
CACHE_SIZE = 65536
CACHE_BYTES = 256 << 20


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


class TreeBroadcast:
    """Which links carry payloads (eager) and which only ids (lazy), and the grafts to repair."""

    def __init__(self, graft_timeout: float, cache_size: int = CACHE_SIZE,
                 cache_bytes: int = CACHE_BYTES) -> None:
        self.graft_timeout = graft_timeout
        self.cache_size = cache_size
        self.cache_bytes = cache_bytes
        self._cached_bytes = 0
        self.lazy: set[bytes] = set()
        self._cache: OrderedDict[MessageId, bytes] = OrderedDict()
        self._ihave: dict[bytes, list[MessageId]] = {}
        self._pending: dict[MessageId, _Pending] = {}
        self.wakeup = float("inf")
        # `now` of the last `due` call if it left messages waiting for a full window, else None: an
        # answer then asks for a tick at once (a wakeup in the past), so a window that empties in 10 ms
        # is not left idle until the next regular tick.
        self._window_wait: float | None = None
        # Per stream key, (seq, peer) of the newest payload that came first: the stream's leading path.
        self._leader: dict[bytes, tuple[int, bytes]] = {}

    # ------------------------------------------------------------------ payloads

    def received(self, message: MessageId, body: bytes, sender: bytes = b"") -> None:
        """A new payload (published here, or first received from `sender`): cache it for grafts, stop
        waiting for it."""
        if sender:
            leader = self._leader.get(message[0])
            if leader is None or message[1] > leader[0]:
                if leader is None and len(self._leader) >= LEADERS:
                    self._leader.clear()  # many origins: forget, and prune as plain Plumtree would
                self._leader[message[0]] = (message[1], sender)
        pending = self._pending.pop(message, None)
        if pending is not None and pending.asked is not None and self._window_wait is not None:
            self.wakeup = self._window_wait
            self._window_wait = None
        old = self._cache.get(message)
        self._cache[message] = body
        self._cached_bytes += len(body) - (len(old) if old is not None else 0)
        while len(self._cache) > self.cache_size or self._cached_bytes > self.cache_bytes:
            self._cached_bytes -= len(self._cache.popitem(last=False)[1])

    def announce(self, message: MessageId, peers: Iterable[bytes]) -> None:
        """Queue an IHAVE for `message` to each lazy peer in `peers`."""
        for peer in peers:
            self._ihave.setdefault(peer, []).append(message)

    def duplicate_from(self, peer: bytes, key: bytes = b"") -> bool:
        """A payload we had came from `peer`: make the link lazy. True if the peer must be told (PRUNE).

        Not if `peer` brought the newest first copy of stream `key`. Under load two eager paths of one
        stream run at different delays (a graft made a fast one while a slow one still drains its
        queue); each brings some duplicates, and pruning on every duplicate (plain Plumtree) pruned
        both, left the node with no eager path, and turned the whole stream into grafts. The path
        that leads keeps its link; the lagging one is pruned by its own duplicates.
        """
        if peer in self.lazy:
            return False
        leader = self._leader.get(key) if key else None
        if leader is not None and leader[1] == peer:
            return False
        self.lazy.add(peer)
        return True

    # ------------------------------------------------------------------ control frames

    def pruned_by(self, peer: bytes) -> None:
        self.lazy.add(peer)

    def grafted_by(self, peer: bytes, messages: Iterable[MessageId]) -> list[bytes]:
        """`peer` asks for these payloads: the link is eager again; return the cached bodies, at most
        MAX_GRAFT of them (what one well-behaved GRAFT asks for; the answer goes into one send queue at
        once, and a peer asking for more gets the rest by asking again)."""
        self.lazy.discard(peer)
        cache = self._cache
        return [cache[message] for message in messages if message in cache][:MAX_GRAFT]

    def ihave_from(self, peer: bytes, messages: Iterable[MessageId], now: float,
                   seen: Callable[[MessageId], bool]) -> None:
        """`peer` announces these ids; wait `graft_timeout` for any we have not seen, then graft."""
        for message in messages:
            if message in self._cache or seen(message):
                continue
            pending = self._pending.get(message)
            if pending is None:
                self._pending[message] = _Pending(now + self.graft_timeout, peer, now)
                self.wakeup = min(self.wakeup, now + self.graft_timeout)
            elif peer not in pending.announcers:
                pending.announcers.append(peer)

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
            self.lazy.discard(peer)
            pending.deadline = now + self.graft_timeout
            self.wakeup = min(self.wakeup, pending.deadline)
        return [(peer, messages[start:start + MAX_GRAFT]) for peer, messages in grafts.items()
                for start in range(0, len(messages), MAX_GRAFT)]

    def repairing(self, message: MessageId) -> bool:
        """Is `message` announced by a peer and waiting for its payload or a graft answer?"""
        return message in self._pending

    def take_ihaves(self) -> list[tuple[bytes, list[MessageId]]]:
        """The IHAVE batches to send now, per peer: everything queued, in frames of MAX_IHAVE ids (a
        backlog would outlive the payload cache, and its grafts could no longer be answered)."""
        batches = [(peer, messages[start:start + MAX_IHAVE]) for peer, messages in self._ihave.items()
                   for start in range(0, len(messages), MAX_IHAVE)]
        self._ihave = {}
        return batches

    def link_lost(self, peer: bytes) -> None:
        """A new link to `peer` later starts eager again; nothing more is queued for this one."""
        self.lazy.discard(peer)
        self._ihave.pop(peer, None)
        self._leader = {key: leader for key, leader in self._leader.items() if leader[1] != peer}

