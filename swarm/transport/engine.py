"""The trio driver: runs a `NodeState` over real TCP connections.

This is the only place where swarm touches sockets and the clock. One `Engine` owns:

* a listener, whose accepted connections and our own dials each become a `Link`;
* per link a reader task, which cuts the byte stream into frames (`FrameReader`) and feeds them to the
  core, and a writer task, which drains the link's `SendQueue` into one write per wake-up: writes
  are coalesced, so a burst of a hundred frames costs one system call (an order of magnitude on this
  machine: 99k frames/s one write each against 1.18M coalesced, in the anchors of shared/reference).
  On plain TCP that write is vectored (`sendmsg`): large frames go from their own bytes, uncopied,
  between the joined runs of small ones (`transport/framing.py`); under TLS it is one joined buffer.
  Publishes are coalesced one level up, by the core's batching rule (`swarm.protocol.broadcast`): the
  engine only reports the end of each turn of trio's loop in which it published (`on_turn_end`), and
  it does so from the first writer to run after that turn, before the writer writes, so the turn's
  batch is in the queue before any byte of it goes out. The first frame of each turn is written
  directly when its link's writer is idle, which saves a task switch on the latency path (a transport
  detail the core knows nothing of);
* a ticker that passes time to the core, every `min(0.1, failureTimeout / 10)` s, or sooner when the
  core asks (`ScheduleTimer`).

Everything runs in the nursery of `run`; cancelling it (or `close`) ends every task, and no task
outlives the engine.

With the `tls` option every connection, accepted or dialled, is wrapped in a `trio.SSLStream` (contexts
from `swarm.transport.tls`) before it becomes a link, and the name in the peer's certificate goes to the
core with the connection; without it, links are the plain `SocketStream`s and nothing of TLS is on the
path. A connection whose TLS handshake fails never reaches the core: it is counted, logged and
reported here.

Queues are bounded per link, in frames (`sendQueueSize`) and bytes (`sendQueueBytes`). **A slow link
costs only that link**: no reader ever pauses because a queue it forwards into is full (one stalled peer
would stall every link of its neighbours, and their neighbours in turn). A frame that finds its queue
full is dropped on that link only and counted by message; the peer recovers it by pull from a peer's frame
cache (`swarm.protocol.recovery`), or gets it by another path. A link whose queue stays over half full
for `LAG_GRACE` *lags*: `drain()`, which producers await, waits until every link that does not lag is at
most half full, so a publisher is paced by the node's ability to send, never by its slowest peer. A link
that lags for `SLOW_LINK_CUT` failure timeouts is cut loose, and told why in a REFUSE (code
`slow_consumer`), as Redis's client-output-buffer-limit and NATS's slow-consumer disconnect cut theirs;
the peer reconnects and pulls what it missed.
"""

from __future__ import annotations

import errno
import ipaddress
import itertools
import json
import logging
import os
import random
import socket
import ssl
import time
from collections import Counter, deque
from collections.abc import Callable, Collection
from typing import Any

import trio

from .. import counters as C
from ..config import Options, TlsFiles
from ..errors import ConfigError, ProtocolError
from ..protocol import actions as act
from ..protocol import wire
from ..protocol.framing import FrameReader
from ..protocol.state import CoreConfig, NodeState
from ..protocol.wire import KIND_DATA, max_frame_body
from . import origin_auth, tls
from .framing import advance, take_frames

__all__ = ["DROP_COUNTERS", "Engine", "SendQueue", "fetch_status", "open_bus_warning"]

log = logging.getLogger("swarm.transport")

# The counters of frames a send queue let go unsent: it was full (a slow peer), its link closed, or its
# link lost a duplicate tie-break and the surviving connection's queue was full (docs/architecture.md).
DROP_COUNTERS = (C.SEND_QUEUE_OVERFLOW, C.DROPPED_ON_CLOSE, C.DROPPED_ON_RETIRE)
# trio's default receive size; big enough that one read usually carries many small frames.
RECEIVE_SIZE = 65536
# Room a full send queue still has for control frames (keepalives, PEERS, PULL and PULLED, the tree's
# IHAVE, GRAFT, PRUNE): they are small, and dropping them behind the payload that filled the queue costs
# more than it saves: a lost PULL or PULLED makes a gap wait a pull timeout and then look unrecoverable
# (what a peer's full queue dropped is exactly what it must be asked for again). Bounded all the same,
# so that a peer that asks and never reads cannot grow the queue. NATS and Redis write control replies
# (PONG, +OK) ahead of the payload limits for the same reason.
CONTROL_RESERVE_FRAMES = 256
CONTROL_RESERVE_BYTES = 1 << 20
# How often the peers file is rewritten (when `peersFile` is set).
PEERS_FILE_INTERVAL = 5.0
# How long a closing node waits for its queues to empty before it cuts the links.
CLOSE_FLUSH_TIMEOUT = 2.0
# How long a connection closed with `flush` (after a REFUSE) may take to write its last frames.
LINK_FLUSH_TIMEOUT = 1.0
# A queue over half full for this long lags: `drain()` stops waiting for it. A burst that a healthy peer
# reads in a few hundred ms still paces the publisher; a peer that cannot keep up no longer does.
LAG_GRACE = 1.0
# A link that lags for this many `failureTimeout`s is cut (a stalled peer is cut sooner by the failure
# detector, which hears nothing from it; this one still talks, but reads too slowly). Redis's pub/sub
# soft limit is 8 MiB for 60 s; here the queue bounds are the hard limit, and this the soft one.
SLOW_LINK_CUT = 2
# After refusing a connection (a TLS alert, or a REFUSE to a plaintext peer), how long its bytes are
# read and thrown away so that closing does not reset the connection before the peer has read why.
REFUSAL_LINGER = 1.0
# TLS failures are reported (as `error` events and warnings) the 1st, 2nd, 4th, 8th... time for one
# peer and reason, and counted every time; this many distinct (peer, reason) pairs are remembered.
TLS_REPORT_KEYS = 1024


class SendQueue:
    """A bounded queue of frames for one link, with wake-ups for its writer and for `drain`."""

    __slots__ = ("frames", "limit", "byte_limit", "bytes", "_nonempty", "closed", "_poked", "partial_head")

    def __init__(self, limit: int, byte_limit: int = 1 << 62) -> None:
        self.frames: deque[bytes] = deque()
        self.limit = limit
        self.byte_limit = byte_limit
        self.bytes = 0
        self._nonempty = trio.Event()
        self.closed = False
        self._poked = False
        self.partial_head = False  # frames[0] is the unwritten tail of a frame begun by a direct write

    def put(self, frame: bytes) -> bool:
        """Queue `frame`; False (and nothing queued) if the queue is full (in frames or bytes) or closed.
        A control frame has CONTROL_RESERVE_* more room than payload."""
        if self.closed:
            return False
        if len(self.frames) >= self.limit or (self.bytes + len(frame) > self.byte_limit and self.frames):
            if wire.is_payload(frame) or len(self.frames) >= self.limit + CONTROL_RESERVE_FRAMES or (
                    self.bytes + len(frame) > self.byte_limit + CONTROL_RESERVE_BYTES):
                return False
        self.frames.append(frame)
        self.bytes += len(frame)
        if len(self.frames) == 1:
            self._nonempty.set()
        return True

    def put_rest(self, rest: bytes) -> None:
        """Queue the unwritten tail of a frame a direct write began: first in line, and bound to this
        connection (never moved to a successor: the peer has its beginning)."""
        self.frames.appendleft(rest)
        self.bytes += len(rest)
        self.partial_head = True
        self._nonempty.set()

    def take(self, vectored: bool = False) -> list[bytes]:
        """The queued frames (up to MAX_WRITE_BYTES), removed from the queue, as the buffers of one write
        (`take_frames`: with `vectored`, large frames uncopied, for a writev; else one buffer)."""
        self.partial_head = False
        buffers, size = take_frames(self.frames, vectored)
        self.bytes = self.bytes - size if self.frames else 0
        return buffers

    def messages(self) -> int:
        """Messages in the queued frames. The rest of a cut frame (`put_rest`) has no header to read: its
        messages are counted with its beginning, which was sent."""
        frames = iter(self.frames)
        if self.partial_head:
            next(frames)
        return sum(map(wire.messages_in, frames))

    @property
    def over_half(self) -> bool:
        """Is the queue more than half full, in frames or in bytes?"""
        return len(self.frames) * 2 > self.limit or self.bytes * 2 > self.byte_limit

    def finish(self, final: bytes, *, keep_data: bool) -> list[bytes]:
        """Close the queue for new frames, with `final` as its last; return the DATA frames taken out.

        Control frames stay and are written before `final`: they belong to this connection (its HELLO
        may not be out yet, and the peer needs it before anything else). DATA frames stay too with
        `keep_data` (no other connection to the peer: the peer reads this one to its end); otherwise they
        are returned, to go on the connection that replaces this one.
        """
        head = [self.frames.popleft()] if self.partial_head else []
        self.partial_head = False
        if keep_data:
            unsent = []
            kept = head + list(self.frames)
        else:
            unsent = [frame for frame in self.frames if wire.kind(frame) == KIND_DATA]
            kept = head + [frame for frame in self.frames if wire.kind(frame) != KIND_DATA]
        self.frames.clear()
        self.frames.extend(kept)
        self.frames.append(final)
        self.bytes = sum(map(len, self.frames))
        self.closed = True
        self._nonempty.set()
        return unsent

    def poke(self) -> None:
        """Wake the writer even though nothing is queued (a batch of published messages is open)."""
        self._poked = True
        self._nonempty.set()

    async def wait_nonempty(self) -> None:
        """Wait until a frame is queued or the queue is poked."""
        while not self.frames and not self._poked:
            self._nonempty = trio.Event()
            await self._nonempty.wait()
        self._poked = False


class Link:
    """One TCP connection and what belongs to it."""

    __slots__ = ("id", "stream", "queue", "scope", "retiring", "final", "close_reason", "outbound",
                 "identity", "peer_serial", "peer_certificate", "where", "fd", "writer_idle",
                 "over_half_since", "lagging")

    def __init__(self, conn_id: int, stream: trio.abc.Stream, queue_limit: int, outbound: bool,
                 queue_bytes: int = 1 << 62) -> None:
        self.id = conn_id
        self.identity: str | None = None  # the name in the peer's TLS certificate
        self.peer_serial: int | None = None
        self.peer_certificate: Any = None  # its x509.Certificate: a reload that revokes it cuts the link
        self.where = ""  # "the link to host:port" / "the connection from host:port", for TLS errors
        self.stream = stream
        self.queue = SendQueue(queue_limit, queue_bytes)
        self.scope = trio.CancelScope()
        self.retiring = False
        self.final: bytes | None = None
        self.close_reason = "closed"
        self.outbound = outbound
        # A plain TCP link's socket, for direct writes (`Engine._send`); None under TLS, whose records
        # only the SSLStream may write.
        self.fd = stream.socket.fileno() if isinstance(stream, trio.SocketStream) else None
        self.writer_idle = False  # the writer waits for frames (it is not inside send_all)
        self.over_half_since: float | None = None  # since when its queue is over half full (ticker's view)
        self.lagging = False  # over half full for LAG_GRACE: drain() does not wait for it


class Engine:
    """Runs one swarm node. `Connector` and `ClusterNode` are faces of it."""

    def __init__(self, options: Options, *, deliver: Callable[[act.Deliver], None],
                 ready: Callable[[], None], error: Callable[[str, str], None],
                 topics: Collection[str | int] = (),
                 lost: Callable[[], dict[str, Any]] | None = None,
                 rng: random.Random | None = None) -> None:
        """`lost`: what the node dropped for its own subscribers (shown in `status`)."""
        self.options = options
        self._deliver = deliver
        # The application's subscriptions (the node's callback registry): the core reads it on every
        # delivery, so they are kept in that one place.
        self._topics = topics
        self._lost = lost
        self._ready = ready
        self._error = error
        self._rng = rng or random.Random()
        self.counters: Counter[str] = Counter()
        self.core: NodeState | None = None
        self.address: tuple[str, int] | None = None
        self._links: dict[int, Link] = {}
        self._ids = itertools.count(1)
        self._nursery: trio.Nursery | None = None
        self._room = trio.lowlevel.ParkingLot()
        self._max_body = max_frame_body(options.maxMessageSize)
        self._tick = min(0.1, options.failureTimeout / 10)
        # The ticker sleeps in this scope; moving its deadline earlier wakes it (for a settle window or
        # a reorder gap that ends before the next regular tick).
        self._tick_scope = trio.CancelScope()
        self._closed = trio.Event()
        # The TLS contexts new connections get (replaced whole by `reload_tls`); None: plaintext.
        self._tls: tls.TlsSetup | None = tls.load(options.tls) if options.tls is not None else None
        self._tls_reports: dict[tuple[str, ...], int] = {}
        self._origins: origin_auth.OriginAuthenticator | None = None  # made with the core (`run`)
        # Set by a direct write, cleared by the next writer to run: at most one per turn of the event
        # loop, so a burst still leaves in coalesced writes.
        self._wrote_directly = False
        # A turn published: the core hears of its end from the next writer to run (or from `flush`).
        self._turn_pending = False
        # The earliest tick the core asked for (ScheduleTimer) and has not had yet.
        self._wake_at = float("inf")
        # When the core's open batch is due (signed origins space their frames): a turn's end, not a tick.
        self._seal_at = float("inf")

    # ------------------------------------------------------------------ lifecycle

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen, start the core, and serve until cancelled. `task_status.started()` once bound."""
        options = self.options
        listeners = await trio.open_tcp_listeners(options.port, host=options.host)
        listener = listeners[0]
        for extra in listeners[1:]:
            await extra.aclose()
        host, port = listener.socket.getsockname()[:2]
        self.address = (host, port)
        # The epoch tells this process's messages from those of an earlier run under the same name:
        # wall-clock microseconds grow across restarts, and two starts in one microsecond do not happen.
        epoch = time.time_ns() // 1000
        if options.host in ("0.0.0.0", "::") and options.advertiseHost == "127.0.0.1":
            log.warning("%s: listening on %s but advertising 127.0.0.1; set advertiseHost so that peers on "
                        "other hosts can dial this node", options.serverName, options.host)
        warning = open_bus_warning(options, port)
        if warning:
            log.warning("%s", warning)
        # Signed origins (`signOrigins`, with `tls`): the core signs and checks through this.
        self._origins = (origin_auth.OriginAuthenticator.from_tls(self._tls)
                         if self._tls is not None and options.signOrigins else None)
        self.core = NodeState(CoreConfig.from_options(options), epoch=epoch,
                              listen_address=(options.advertiseHost, port), rng=self._rng,
                              counters=self.counters, topics=self._topics, authenticator=self._origins)
        if options.peersFile:
            self.core.remember(read_peers_file(options.peersFile), trio.current_time())
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._accept_loop, listener)
                nursery.start_soon(self._ticker)
                if options.peersFile:
                    nursery.start_soon(self._keep_peers_file, options.peersFile)
                self._apply(self.core.start(trio.current_time()))
                task_status.started()
                await self._closed.wait()
                nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                await listener.aclose()

    async def close(self) -> None:
        """Announce the leave, give the queues a moment to flush, then end every task."""
        if self.core is None or self._closed.is_set():
            self._closed.set()
            return
        self._apply(self.core.leave(trio.current_time()))
        with trio.move_on_after(CLOSE_FLUSH_TIMEOUT):
            await self.flush()
        self._closed.set()

    # ------------------------------------------------------------------ application side

    @property
    def name_conflict(self) -> dict[str, Any] | None:
        """Set while peers refuse this node because another live process holds its name."""
        return self.core.links.name_conflict if self.core is not None else None

    @property
    def running(self) -> bool:
        """Is the node serving (started and not closed)?"""
        return self.core is not None and not self._closed.is_set()

    def publish(self, topic: str | int, message: Any) -> None:
        """Publish `message`. When it leaves is the core's rule: the first of a turn at once (and written
        directly to idle links by `_send`), the rest of the turn in one batch at the turn's end."""
        core = self.core
        assert core is not None, "the node is not running"
        self._apply(core.publish(topic, message, trio.current_time()))
        # The turn's first publish went out at once, queued (which wakes the writers) or written directly
        # (which pokes them): the first of them to run reports the turn's end. (If every queue refused
        # it, the next tick sends the batch.)
        self._turn_pending = True

    def _end_turn(self) -> None:
        """Tell the core that the turn in which it was given publishes has ended."""
        if self._turn_pending:
            self._turn_pending = False
            assert self.core is not None  # set only by publish, which needs a running core
            self._apply(self.core.on_turn_end(trio.current_time()))

    def send_direct(self, target: str, topic: str | int, message: Any) -> None:
        assert self.core is not None, "the node is not running"
        self._apply(self.core.send_direct(target, topic, message, trio.current_time()))

    async def flush(self) -> None:
        """Wait until every link's send queue is empty (everything handed to the kernel)."""
        self._end_turn()
        while any(link.queue.frames for link in self._links.values()):
            await self._room.park()

    async def drain(self) -> None:
        """Wait until the send queue of every link that does not lag is at most half full."""
        while True:
            if all(link.lagging or not link.queue.over_half for link in self._links.values()):
                return
            await self._room.park()

    def peer_fates(self, names: Collection[str]) -> tuple[set[str], dict[str, str]]:
        """(the peers linked now, and of `names` those no longer linked that "left" the cluster or are
        "lost": their link failed). A peer unlinked otherwise (pruned, retired, relinked) is neither."""
        core = self.core
        if core is None:
            return set(names), {}
        linked = set(core.linked_peers)
        fates = {}
        for name in names:
            if name in linked:
                continue
            member = core.membership.members.get(name)
            if member is not None and member.conn is not None:
                continue
            if member is None or member.left:
                fates[name] = "left"
            elif member.failures:
                fates[name] = "lost"
        return linked, fates

    def status(self) -> dict[str, Any]:
        assert self.core is not None
        status = self.core.status()  # its counters are ours too: one set per node
        status["queued"] = {link.id: len(link.queue.frames) for link in self._links.values()}
        status["queued_bytes"] = {link.id: link.queue.bytes for link in self._links.values()}
        status["lagging"] = sorted(link.id for link in self._links.values() if link.lagging)
        if self._lost is not None:
            status.update(self._lost())
        if self._tls is not None:
            # Our certificate, the CAs trusted, and the serial of the certificate each linked peer showed.
            status["tls"] = dict(self._tls.status(), peers={
                link.identity: f"{link.peer_serial:x}" for link in self._links.values()
                if link.identity is not None and link.peer_serial is not None})
            if self._origins is not None:
                status["tls"]["origins"] = self._origins.status()  # the certificates held for checking
        return status

    def reload_tls(self, files: TlsFiles | None = None) -> tls.TlsSetup:
        """Re-read the CA bundle, certificate, key and revocation files (or switch to `files`) for new
        connections.

        Links already up keep running on the contexts they were made with, but for those whose peer's
        certificate the new files revoke: they are cut (`_cut_revoked`). If the files do not load, or
        the certificate is for another name than this node's, ConfigError is raised, counted
        (`tls_reload_failures`), and the old files stay in use.
        """
        if self._tls is None:
            raise ConfigError("tls: this node runs without TLS, and TLS cannot be turned on while it runs; "
                              "restart it with the `tls` option")
        try:
            setup = tls.load(files if files is not None else self._tls.files)
            if setup.name != self.options.serverName:
                raise ConfigError(f"tls.cert: {setup.files.cert!r} is for {setup.name!r}, but this node is "
                                  f"{self.options.serverName!r}")
            if self._origins is not None:
                self._origins.reload(setup)  # (refused files leave it as it was, like the contexts)
        except ConfigError as error:
            self.counters[C.TLS_RELOAD_FAILURES] += 1
            log.error("%s: TLS files not reloaded, the previous ones stay in use: %s",
                      self.options.serverName, error)
            raise
        self._tls = setup
        if files is not None:
            self.options = self.options.replace(tls=files)
        if self._origins is not None and self.core is not None:
            self._apply(self.core.certificate_changed(trio.current_time()))
        self.counters[C.TLS_RELOADS] += 1
        log.info("%s: TLS files reloaded: certificate %x valid until %s, %d CA(s) trusted",
                 self.options.serverName, setup.serial, setup.not_after.isoformat(), len(setup.authorities))
        self._cut_revoked(setup)
        return setup

    # ------------------------------------------------------------------ carrying out the core's actions

    def _apply(self, actions: list[act.Action]) -> None:
        for action in actions:
            kind = type(action)
            if kind is act.Send:
                self._send(action)
            elif kind is act.Deliver:
                self._deliver(action)
            elif kind is act.Dial:
                assert self._nursery is not None
                self._nursery.start_soon(self._dial, action.address)
            elif kind is act.CloseConnection:
                link = self._links.get(action.conn)
                if link is not None:
                    link.close_reason = action.reason
                    if action.flush and link.queue.frames:
                        link.queue.closed = True  # the writer ends the link once the queue is empty
                        link.scope.deadline = trio.current_time() + LINK_FLUSH_TIMEOUT
                    else:
                        link.scope.cancel()
            elif kind is act.Retire:
                self._retire(action)
            elif kind is act.Ready:
                self._ready()
            elif kind is act.ReportError:
                # A name conflict ends `python -m swarm node` with one line of its own: not logged twice.
                level = logging.INFO if action.code == "name_conflict" else logging.WARNING
                log.log(level, "%s: %s", self.options.serverName, action.text)
                self._error(action.code, action.text)
            elif kind is act.ScheduleTimer:
                if action.seal:
                    self._seal_at = min(self._seal_at, action.at)
                else:
                    self._wake_at = min(self._wake_at, action.at)
                if action.at < self._tick_scope.deadline:
                    self._tick_scope.deadline = action.at

    def _send(self, action: act.Send) -> None:
        """Queue `action.data` on each of its links; or, if nothing was written directly yet in this turn of
        the event loop, write it to each idle plain-TCP link at once. A frame waiting in a queue waits
        for its writer's turn (a task switch, 8 µs here, more under load); the direct write saves that
        on the latency path (a lone publish, the first frame a relay forwards after a quiet spell), and
        one per turn keeps the rest of a burst coalesced."""
        data = action.data
        links = self._links
        direct = not self._wrote_directly
        for conn_id in action.conns:
            link = links.get(conn_id)
            if link is None or link.queue.closed:
                continue
            if direct and link.writer_idle and link.fd is not None and not link.queue.frames:
                self._write_directly(link, data)
                continue
            if not link.queue.put(data):
                self._overflowed(conn_id, data)

    def _overflowed(self, conn_id: int, frame: bytes) -> None:
        """`frame` found the queue of link `conn_id` full: dropped on that link only, counted by message."""
        counters = self.counters
        counters[C.SEND_QUEUE_OVERFLOW] += 1
        counters[C.SEND_QUEUE_OVERFLOW_MESSAGES] += wire.messages_in(frame)
        frames = counters[C.SEND_QUEUE_OVERFLOW]
        if frames & (frames - 1) == 0:
            # Report the 1st, 2nd, 4th, 8th... overflow: visible, but no error storm.
            self._error("overflow", f"send queue of link {conn_id} full: {frames} frames "
                        f"({counters[C.SEND_QUEUE_OVERFLOW_MESSAGES]} messages) dropped on slow links so "
                        "far; their peers pull them from a cache or get them by another path")

    def _write_directly(self, link: Link, data: bytes) -> None:
        # The writer is parked waiting for frames, so nothing else writes this socket now (trio is one
        # thread); it is non-blocking, so this never stalls the loop.
        self._wrote_directly = True
        link.queue.poke()  # the writer's next run ends the turn (clears _wrote_directly)
        try:
            sent = os.write(link.fd, data)  # type: ignore[arg-type]
        except OSError:  # BlockingIOError: the writer sends it all; any other: it fails there too and
            sent = 0  # closes the link the usual way
        self.counters[C.DIRECT_WRITES] += 1
        if sent < len(data):
            self.counters[C.DIRECT_WRITES_CUT_SHORT] += 1
            link.queue.put_rest(data[sent:])

    def _retire(self, action: act.Retire) -> None:
        link = self._links.get(action.conn)
        if link is None:
            return
        successor = self._links.get(action.successor) if action.successor is not None else None
        unsent = link.queue.finish(action.final, keep_data=successor is None)
        link.retiring = True
        for frame in unsent:
            if successor is None or not successor.queue.put(frame):
                self.counters[C.DROPPED_ON_RETIRE] += 1

    # ------------------------------------------------------------------ connections

    async def _accept_loop(self, listener: trio.SocketListener) -> None:
        while True:
            try:
                stream = await listener.accept()
            except OSError as error:  # e.g. EMFILE: back off instead of spinning
                log.warning("accept failed: %s", error)
                await trio.sleep(0.1)
                continue
            assert self._nursery is not None
            if self._tls is None:
                self._nursery.start_soon(self._run_link, stream, False, None)
            else:
                self._nursery.start_soon(self._accept_tls, stream, self._tls)

    async def _dial(self, address: tuple[str, int]) -> None:
        assert self.core is not None
        try:
            with trio.fail_after(self.options.handshakeTimeout):
                stream = await trio.open_tcp_stream(*address)
        except (OSError, trio.TooSlowError) as error:
            reason = "timed out" if isinstance(error, trio.TooSlowError) else str(error)
            self._apply(self.core.on_dial_failed(address, reason, trio.current_time()))
            return
        if self._tls is None:
            await self._run_link(stream, True, address)
            return
        where = f"the link to {address[0]}:{address[1]}"
        secure = trio.SSLStream(stream, self._tls.client, server_hostname=None, https_compatible=True)
        try:
            deadline = trio.current_time() + self.options.handshakeTimeout
            peer = await self._tls_handshake(secure, where, deadline)
        except _HandshakeFailed as failure:
            self._apply(self.core.on_dial_failed(address, failure.reason, trio.current_time()))
            return
        await self._run_link(secure, True, address, peer)

    async def _accept_tls(self, stream: trio.SocketStream, setup: tls.TlsSetup) -> None:
        """An inbound connection to a TLS node: TLS handshake first, then a link like any other."""
        try:
            host, port = stream.socket.getpeername()[:2]
        except OSError:
            host, port = "?", 0
        where = f"the connection from {host}:{port}"
        deadline = trio.current_time() + self.options.handshakeTimeout
        try:
            with trio.fail_at(deadline):
                first = await stream.socket.recv(1, socket.MSG_PEEK)  # what kind of client is it?
        except (OSError, trio.TooSlowError) as error:
            if isinstance(error, trio.TooSlowError):
                self.counters[C.TLS_HANDSHAKE_TIMEOUTS] += 1
            await trio.aclose_forcefully(stream)
            return
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise
        if not first:  # connected and closed without a byte (a port probe): nothing to refuse
            await trio.aclose_forcefully(stream)
            return
        if first[0] != tls.TLS_HANDSHAKE_RECORD:
            # A swarm node without `tls` (its HELLO is a plaintext frame): tell it, in a frame it reads.
            self._tls_failed(where, C.TLS_REFUSED, "it does not speak TLS (a node without the `tls` option?)")
            refusal = wire.encode_control(wire.KIND_REFUSE, {"reason": f"{self.options.serverName} accepts "
                                                                       "TLS connections only (`tls` option)"})
            await self._linger_close(stream, refusal)
            return
        secure = trio.SSLStream(stream, setup.server, server_side=True, https_compatible=True)
        try:
            peer = await self._tls_handshake(secure, where, deadline)
        except _HandshakeFailed:
            return
        await self._run_link(secure, False, None, peer)

    async def _tls_handshake(self, secure: trio.SSLStream[trio.SocketStream], where: str,
                             deadline: float) -> _TlsPeer:
        """Run the TLS handshake, to be done by `deadline`; return who the peer is. On failure the
        connection is counted, reported, closed, and _HandshakeFailed raised with the reason."""
        try:
            try:
                with trio.fail_at(deadline):
                    await secure.do_handshake()
                name, serial = tls.peer_certificate(secure)
            except trio.TooSlowError:
                self.counters[C.TLS_HANDSHAKE_TIMEOUTS] += 1
                log.info("%s: %s: no TLS handshake within %gs", self.options.serverName, where,
                         self.options.handshakeTimeout)
                await trio.aclose_forcefully(secure.transport_stream)
                raise _HandshakeFailed("TLS handshake timed out") from None
            except (trio.BrokenResourceError, OSError) as error:
                counter, reason = tls.explain(error)
                self._tls_failed(where, counter, reason)
                await self._linger_close(secure.transport_stream, tls.pending_alert(secure))
                raise _HandshakeFailed(reason) from None
            if name is None or serial is None:
                reason = "its certificate names no swarm node (no 'swarm:' URI in its subject alt. name)"
                self._tls_failed(where, C.TLS_REFUSED, reason)
                await trio.aclose_forcefully(secure.transport_stream)
                raise _HandshakeFailed(reason)
            leaf = tls.peer_leaf(secure)
            assert self._tls is not None and leaf is not None
            # The newest files decide: a revocation reloaded while this handshake ran counts.
            revoked = self._tls.revoked(leaf)
            if revoked is not None:
                reason = f"its certificate ({name!r}, serial {serial:x}) is revoked: {revoked}"
                self.counters[C.TLS_REVOKED_REFUSED] += 1
                self._tls_failed(where, C.TLS_REFUSED, reason)
                await self._refuse_revoked(secure, revoked)
                raise _HandshakeFailed(reason)
        except _HandshakeFailed:
            raise
        except BaseException:
            await trio.aclose_forcefully(secure.transport_stream)
            raise
        return _TlsPeer(where, name, serial, secure.getpeercert(binary_form=True), leaf)

    async def _refuse_revoked(self, secure: trio.SSLStream[trio.SocketStream], revoked: str) -> None:
        """Close a connection whose peer's certificate is revoked. A peer that dialled us is told why in a
        REFUSE (code `revoked`), so it reports it and redials only at `reconnectMaxDelay`; one we dialled
        is closed without a word (its core, an accepting end, has no dial to back off)."""
        if secure.server_side:
            with trio.move_on_after(REFUSAL_LINGER):
                try:
                    await secure.send_all(_revoked_refusal(revoked))
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    pass
        await self._linger_close(secure.transport_stream, b"")

    async def _linger_close(self, stream: trio.SocketStream, last_words: bytes) -> None:
        """Send `last_words`, end our side, read (and drop) what the peer still sends for a moment, close.

        Closing a socket with unread bytes makes the kernel reset the connection, and a reset can make
        the peer discard the refusal it has not read yet.
        """
        with trio.move_on_after(REFUSAL_LINGER):
            try:
                if last_words:
                    await stream.send_all(last_words)
                await stream.send_eof()
                while await stream.receive_some(RECEIVE_SIZE):
                    pass
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass
        await trio.aclose_forcefully(stream)

    def _tls_failed(self, where: str, counter: str, reason: str) -> None:
        """Count a TLS failure; log it and report it as an `error` event (code "tls"), the 1st, 2nd, 4th...
        time for one peer and reason."""
        self.counters[counter] += 1
        if counter == C.TLS_REFUSED:
            text = f"TLS: refused {where}: {reason}"
        else:
            text = f"TLS: {where} failed: {reason}"
        peer = where.rsplit(":", 1)[0] if where.startswith("the connection from") else where
        key = (counter, peer, reason)
        if key not in self._tls_reports and len(self._tls_reports) >= TLS_REPORT_KEYS:
            self._tls_reports.clear()
        seen = self._tls_reports[key] = self._tls_reports.get(key, 0) + 1
        if seen & (seen - 1) == 0:
            log.warning("%s: %s%s", self.options.serverName, text, f" ({seen} times)" if seen > 1 else "")
            self._error("tls", text)
        else:
            log.debug("%s: %s", self.options.serverName, text)

    def _link_broken(self, link: Link, error: BaseException) -> str:
        """The close reason of a link whose stream failed; a TLS failure is also counted and reported."""
        if link.where and isinstance(error.__cause__, ssl.SSLError) and link.close_reason == "closed":
            counter, reason = tls.explain(error)
            self._tls_failed(link.where, counter, reason)
            return f"TLS: {reason}"
        return f"connection error: {error}"

    async def _run_link(self, stream: trio.abc.Stream, outbound: bool, address: tuple[str, int] | None,
                        peer: _TlsPeer | None = None) -> None:
        core = self.core
        assert core is not None
        link = Link(next(self._ids), stream, self.options.sendQueueSize, outbound,
                    self.options.sendQueueBytes)
        if peer is not None:
            link.where, link.identity, link.peer_serial = peer.where, peer.name, peer.serial
            link.peer_certificate = peer.leaf
        self._links[link.id] = link
        try:
            with link.scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._writer, link)
                    self._apply(core.on_connection_open(link.id, outbound, address, trio.current_time(),
                                                        link.identity, peer and peer.certificate))
                    try:
                        await self._reader(link)
                    except (trio.BrokenResourceError, trio.ClosedResourceError) as error:
                        link.close_reason = self._link_broken(link, error)
                    nursery.cancel_scope.cancel()
        finally:
            del self._links[link.id]
            dropped = len(link.queue.frames)
            if dropped and not link.retiring:
                self.counters[C.DROPPED_ON_CLOSE] += dropped
                self.counters[C.DROPPED_ON_CLOSE_MESSAGES] += link.queue.messages()
            self._room.unpark_all()
            with trio.CancelScope(shield=True):
                await trio.aclose_forcefully(stream)
            self._apply(core.on_connection_closed(link.id, link.close_reason, trio.current_time()))

    async def _reader(self, link: Link) -> None:
        core = self.core
        assert core is not None
        reader = FrameReader(self._max_body, whole=True)
        receive = link.stream.receive_some
        apply = self._apply
        on_frame = core.on_frame
        conn_id = link.id
        while True:
            data = await receive(RECEIVE_SIZE)
            if not data:
                link.close_reason = "peer closed the connection"
                return
            try:
                frames = reader.feed(data)
            except ProtocolError as error:
                reason = str(error)
                if wire.looks_like_tls(data) and not reader.pending and not link.where:
                    # A TLS record where a frame should start: a peer with the `tls` option.
                    reason = f"the peer speaks TLS and this node runs without the `tls` option ({reason})"
                apply(core.on_stream_error(conn_id, reason, trio.current_time()))
                return
            now = trio.current_time()
            # Nothing here waits for room: a slow link costs only that link (the module docstring). The
            # next receive is a schedule point, where the writers and the delivery task run.
            for body in frames:
                actions = on_frame(conn_id, body, now)
                if actions:
                    apply(actions)

    async def _writer(self, link: Link) -> None:
        try:
            await self._write_queue(link)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as error:
            link.close_reason = self._link_broken(link, error)
            link.scope.cancel()

    async def _write_queue(self, link: Link) -> None:
        queue = link.queue
        send_all = link.stream.send_all
        # Plain TCP: large frames go to the kernel from their own bytes, in one vectored write with the
        # joined runs of small frames between them (transport/framing.py says why). TLS: one buffer.
        sock = link.stream.socket if link.fd is not None else None  # type: ignore[attr-defined]
        while True:
            link.writer_idle = True
            await queue.wait_nonempty()
            link.writer_idle = False
            self._wrote_directly = False  # a new turn: the next frame may be written directly again
            self._end_turn()
            if not queue.frames:
                continue  # poked for a batch that went to other links only, or after a direct write
            buffers = queue.take(sock is not None)
            # The queue has room again: drain() re-checks now, not after a send_all that a stalled peer
            # may block (it would then wait until the link is cut, never seeing the queue lag).
            self._room.unpark_all()
            if len(buffers) == 1:
                await send_all(buffers[0])
            else:
                await _send_vectored(sock, buffers)
            self._room.unpark_all()  # drain(), flush() and congested readers re-check
            if queue.closed and not link.retiring and not queue.frames:
                link.scope.cancel()  # closed with flush: the last frames are out
                return
            if link.retiring and not queue.frames:
                # Retired: everything we owed this connection is written; tell the peer and let the
                # reader run on to the peer's end of stream.
                stream = link.stream
                if isinstance(stream, trio.SSLStream):
                    # TLS has no half-close: end the TCP stream under it. The peer reads a clean end of
                    # stream (https_compatible): a cut there costs frames, never accepts a partial one.
                    stream = stream.transport_stream
                try:
                    await stream.send_eof()
                except (AttributeError, NotImplementedError, trio.BusyResourceError):
                    pass
                return

    async def _keep_peers_file(self, path: str) -> None:
        assert self.core is not None
        try:
            while True:
                await trio.sleep(PEERS_FILE_INTERVAL)
                write_peers_file(path, self.core.addresses_to_remember())
        finally:
            with trio.CancelScope(shield=True):
                write_peers_file(path, self.core.addresses_to_remember())

    async def _ticker(self) -> None:
        core = self.core
        assert core is not None
        tick_due = trio.current_time() + self._tick
        while True:
            self._tick_scope = trio.CancelScope(deadline=min(tick_due, self._wake_at, self._seal_at))
            with self._tick_scope:
                await trio.sleep_forever()
            now = trio.current_time()
            if now < tick_due and now < self._wake_at:  # only the open batch: far cheaper than a tick
                self._seal_at = float("inf")
                self._apply(core.on_turn_end(now))
                continue
            self._wake_at = self._seal_at = float("inf")  # the core asks again for what is still ahead
            self._apply(core.on_tick(now))  # (which seals the open batch too)
            self._watch_queues(trio.current_time())
            tick_due = trio.current_time() + self._tick

    def _watch_queues(self, now: float) -> None:
        """Mark the links whose queue stayed over half full for LAG_GRACE as lagging (drain() no longer
        waits for them), and cut the ones that lagged for SLOW_LINK_CUT failure timeouts."""
        changed = False
        cut_after = SLOW_LINK_CUT * self.options.failureTimeout
        for link in list(self._links.values()):
            queue = link.queue
            if queue.closed or not queue.over_half:
                if link.over_half_since is not None:
                    link.over_half_since, changed = None, changed or link.lagging
                    link.lagging = False
                continue
            if link.over_half_since is None:
                link.over_half_since = now
            elif not link.lagging and now - link.over_half_since >= LAG_GRACE:
                link.lagging = changed = True
            elif link.lagging and now - link.over_half_since >= cut_after:
                self._cut_slow(link, now - link.over_half_since)
        if changed:
            self._room.unpark_all()  # drain() re-checks

    def _cut_slow(self, link: Link, lagged: float) -> None:
        """Close a link whose peer reads too slowly, telling it why (after what it was already sent of
        control frames; its queued DATA is dropped, and pulled by the peer when it reconnects)."""
        reason = (f"slow consumer: {self.options.serverName}'s send queue to this node stayed over half full "
                  f"for {lagged:.1f}s ({len(link.queue.frames)} frames, {link.queue.bytes} bytes)")
        self.counters[C.SLOW_LINKS_CUT] += 1
        log.warning("%s: cutting link %d: %s", self.options.serverName, link.id, reason)
        refusal = wire.encode_control(wire.KIND_REFUSE, {"reason": reason, "code": "slow_consumer"})
        dropped = link.queue.finish(refusal, keep_data=False)
        self.counters[C.DROPPED_ON_CLOSE] += len(dropped)
        self.counters[C.DROPPED_ON_CLOSE_MESSAGES] += sum(map(wire.messages_in, dropped))
        link.close_reason = reason
        link.scope.deadline = trio.current_time() + LINK_FLUSH_TIMEOUT


    def _cut_revoked(self, setup: tls.TlsSetup) -> None:
        """Close every live link whose peer's certificate `setup` revokes, telling the peer why (REFUSE,
        code `revoked`, after the control frames it was already sent; its queued DATA is dropped). Its
        redials are refused at the handshake."""
        for link in list(self._links.values()):
            if link.peer_certificate is None or link.queue.closed:
                continue
            revoked = setup.revoked(link.peer_certificate)
            if revoked is None:
                continue
            text = (f"TLS: cutting the link to {link.identity} ({link.where}): its certificate is revoked: "
                    f"{revoked}")
            self.counters[C.LINKS_CUT_REVOKED] += 1
            log.warning("%s: %s", self.options.serverName, text)
            self._error("tls", text)
            dropped = link.queue.finish(_revoked_refusal(revoked), keep_data=False)
            self.counters[C.DROPPED_ON_CLOSE] += len(dropped)
            self.counters[C.DROPPED_ON_CLOSE_MESSAGES] += sum(map(wire.messages_in, dropped))
            link.close_reason = f"certificate revoked: {revoked}"
            link.scope.deadline = trio.current_time() + LINK_FLUSH_TIMEOUT


async def _send_vectored(sock: Any, buffers: list[Any]) -> None:
    """Write `buffers` in order to a plain TCP socket with as few writevs as the kernel takes, as
    `SocketStream.send_all` writes one buffer (and failing the same way); a partial write resumes from
    a view of the buffer it cut."""
    while buffers:
        try:
            sent = await sock.sendmsg(buffers)
        except OSError as error:
            if error.errno in (errno.EBADF, errno.ENOTSOCK):
                raise trio.ClosedResourceError("this socket was already closed") from None
            raise trio.BrokenResourceError(f"socket connection broken: {error}") from error
        buffers = advance(buffers, sent)


def _revoked_refusal(revoked: str) -> bytes:
    """The REFUSE a peer whose certificate is revoked gets (its node reports it, and backs off)."""
    return wire.encode_control(wire.KIND_REFUSE, {"reason": f"our certificate is revoked: {revoked}",
                                                  "code": "revoked"})


class _HandshakeFailed(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _TlsPeer:
    """Who is at the other end of a TLS connection (its certificate's name and serial)."""

    __slots__ = ("where", "name", "serial", "certificate", "leaf")

    def __init__(self, where: str, name: str, serial: int, certificate: bytes | None = None,
                 leaf: Any = None) -> None:
        self.where = where
        self.name = name
        self.serial = serial
        self.certificate = certificate  # DER: the core learns it, for checking the peer's signatures
        self.leaf = leaf  # the same, an x509.Certificate: checked against revocations on a reload


def open_bus_warning(options: Options, port: int | None = None) -> str | None:
    """The warning a node without `tls` logs when it listens on an address other hosts can reach."""
    if options.tls is not None or options.host == "localhost":
        return None
    try:
        if ipaddress.ip_address(options.host).is_loopback:
            return None
    except ValueError:
        return None
    return (f"{options.serverName}: listening on {options.host}:{port if port is not None else options.port} "
            "without the `tls` option: the bus is open, anyone who can reach this port can join the "
            "cluster, read every message and publish; set `tls` (docs/security.md)")


async def fetch_status(host: str, port: int, timeout: float = 5.0,
                       tls_context: ssl.SSLContext | None = None) -> dict[str, Any]:
    """Ask the node at host:port for its status (what `python -m swarm status` prints).

    A node with the `tls` option answers over TLS only, to a client with a certificate of its cluster:
    pass the client context of such a certificate (`swarm.transport.tls.load(files).client`).
    """
    with trio.fail_after(timeout):
        stream: trio.abc.Stream = await trio.open_tcp_stream(host, port)
        if tls_context is not None:
            stream = trio.SSLStream(stream, tls_context, server_hostname=None, https_compatible=True)
        async with stream:
            try:
                await stream.send_all(wire.encode_control(wire.KIND_STATUS_REQUEST, {}))
                reader = FrameReader(wire.MAX_CONTROL_BODY, whole=True)
                while True:
                    data = await stream.receive_some(RECEIVE_SIZE)
                    if not data:
                        raise ConnectionError(f"{host}:{port} closed the connection without a status")
                    for frame in reader.feed(data):
                        if wire.kind(frame) == wire.KIND_STATUS:
                            return wire.control_fields(frame)
                        if wire.kind(frame) == wire.KIND_REFUSE:
                            reason = wire.control_fields(frame).get("reason")
                            raise ConnectionError(f"{host}:{port} refused the request: {reason}")
            except trio.BrokenResourceError as error:
                if isinstance(error.__cause__, ssl.SSLError):
                    raise ConnectionError(f"TLS with {host}:{port} failed: {tls.explain(error)[1]}") from None
                raise ConnectionError(f"{host}:{port}: {error.__cause__ or error}") from None


def read_peers_file(path: str) -> list[tuple[str, int]]:
    """Addresses saved by an earlier run; a missing or unreadable file is an empty list (and logged)."""
    try:
        with open(path, encoding="utf-8") as handle:
            entries = json.load(handle)
        return [(host, port) for host, port in entries if isinstance(host, str) and isinstance(port, int)]
    except FileNotFoundError:
        return []
    except (OSError, ValueError, TypeError) as error:
        log.warning("peers file %s is unreadable, ignored: %s", path, error)
        return []


def write_peers_file(path: str, addresses: list[tuple[str, int]]) -> None:
    """Replace the peers file atomically (a crash mid-write leaves the old one)."""
    temporary = f"{path}.tmp"
    try:
        with open(temporary, "w", encoding="utf-8") as handle:
            json.dump([list(address) for address in addresses], handle)
        os.replace(temporary, path)
    except OSError as error:
        log.warning("cannot write peers file %s: %s", path, error)
