"""`Node`: what both faces of a swarm node share, `swarm.Connector` and `swarm.ClusterNode`.

One `Node` owns one `Engine` (the sockets, the protocol core) and everything around it that does not
depend on the API spelling: the life cycle (`async with`, `start`, `close`), the nursery of the node's
tasks, the `ready`/`error`/`close` events, the per-topic callback registry and the delivery of messages
to it, and the queue of async callbacks. A face adds only its own spelling of publish, subscribe and
direct messages, and says with which arguments a subscriber is called (`_arguments`).

Callbacks run in the node's own task, in per-origin order, each with its own decoded copy of the
message. **Relaying never waits for them**: the engine forwards a frame before it hands its messages
over, and the messages go into the node's delivery queue, bounded in bytes (`deliveryQueueBytes`), which
one delivery task empties in order, a slice of `DELIVERY_SLICE` at a time before it lets the readers
and writers run again. An async callback is awaited there, so its order is kept too. A cheap plain
callback is called at once while the queue is empty (no task switch on the latency path); callbacks
that take longer than `INLINE_LIMIT` on average send the deliveries through the queue for
`INLINE_COOLDOWN`. When the
callbacks fall `deliveryQueueBytes` behind, further messages are dropped for the local subscribers only
(never for the relaying), counted per origin (`slow_consumer_dropped`), and reported as an `error` event
with code `slow_consumer`, at most once a second with the exact counts since the last report: NATS's
slow-consumer rule, so that a slow *application* never turns into a slow *relay*. A callback that raises
is logged, counted and reported as an `error` event; the node goes on.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Collection, Mapping
from typing import Any

import trio

from . import counters as C
from .config import Options, TlsFiles, parse_address
from .errors import SwarmError
from .protocol.actions import Deliver
from .protocol.wire import decode_message
from .transport import tls
from .transport.engine import Engine
from .transport.metrics import MetricsServer

__all__ = ["DELIVERY_SLICE", "EVENTS", "Node", "NodeError", "check_topic"]

log = logging.getLogger("swarm")

EVENTS = ("ready", "error", "close")
# The delivery task runs callbacks for this long at most before it yields to the readers and writers:
# relaying waits this long at worst for a burst of cheap callbacks (or for one slow callback).
DELIVERY_SLICE = 0.002
# A plain callback is called at once while the queue is empty, as long as its calls take INLINE_LIMIT on
# average (a moving average over ~8 calls, so one preempted call does not count); a slower one sends the
# deliveries through the queue (and its task) for INLINE_COOLDOWN seconds.
INLINE_LIMIT = 0.0005
INLINE_COOLDOWN = 10.0
INLINE_WEIGHT = 1 / 8
# What a queued delivery costs besides its message's bytes (the objects that hold it).
DELIVERY_OVERHEAD = 128
# Slow-consumer drops are reported at most this often, with the exact counts since the last report.
SLOW_REPORT_INTERVAL = 1.0


class NodeError(SwarmError):
    """What the `error` event carries: `code` says which kind of fault (refused, protocol, overflow,
    callback, unreachable, ...), the message says what happened."""

    def __init__(self, code: str, text: str) -> None:
        super().__init__(text)
        self.code = code


def check_topic(topic: Any) -> str | int:
    """`topic` if it is a str or an int (not a bool); TypeError otherwise."""
    if isinstance(topic, bool) or not isinstance(topic, (str, int)):
        raise TypeError(f"topic must be a str or an int, got {type(topic).__name__}")
    return topic


class Node:
    """A running swarm node without an API face: subclassed by `Connector` and `ClusterNode`."""

    # What the error messages call this face ("the connector is not running").
    _kind = "node"

    def __init__(self, options: Mapping[str, Any] | Options | None = None) -> None:
        self.options = tls.resolve(Options.from_mapping(options), check_name=not isinstance(options, Options))
        self.server_name = self.options.serverName
        self.is_ready = False
        self._handlers: dict[str, list[Callable[..., Any]]] = {event: [] for event in EVENTS}
        self._callbacks: dict[str | int, list[Callable[..., Any]]] = {}
        self._engine = Engine(self.options, deliver=self._on_deliver, ready=self._on_ready,
                              error=self._on_error, topics=self._callbacks, lost=self._slow_losses)
        self.counters = self._engine.counters  # the node's one set of counters
        self._ready_event = trio.Event()
        # Deliveries waiting for the callbacks (a Deliver, or a callback's awaitable still to await), and
        # the bytes they hold (bounded by deliveryQueueBytes).
        self._deliveries: deque[Deliver | tuple[Callable[..., Any], Any]] = deque()
        self._delivery_bytes = 0
        self._delivery_limit = self.options.deliveryQueueBytes
        self._delivery_wakeup = trio.Event()
        self._delivering = False  # the delivery task is inside a slice (the queue's order is its)
        self._inline_until = 0.0  # inline calls stay off until then (a slow callback was seen)
        self._inline_cost = 0.0  # moving average of an inline call's duration
        self._slow_unreported = C.PerOrigin(SLOW_REPORT_INTERVAL)
        self._slow_total: Counter[str] = Counter()
        self.metrics: MetricsServer | None = None  # with the `metrics` option, once started
        self._nursery_manager: Any = None
        self._scope = trio.CancelScope()
        self._closed = False

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> Any:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: Any) -> bool | None:
        await self.close()
        manager, self._nursery_manager = self._nursery_manager, None
        if manager is None:
            return None
        return await manager.__aexit__(*exc_info)

    async def start(self) -> None:
        """Bind and start the node's tasks (done by `async with`)."""
        if self._nursery_manager is not None:
            raise RuntimeError(f"{self._kind} already started")
        self._nursery_manager = trio.open_nursery()
        nursery = await self._nursery_manager.__aenter__()
        try:
            await nursery.start(self._serve)
        except BaseException:
            self._scope.cancel()
            manager, self._nursery_manager = self._nursery_manager, None
            await manager.__aexit__(None, None, None)
            raise

    async def _serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        # The node's tasks live under a cancel scope of their own: the nursery opened by `start` also
        # encloses the caller's `async with` body, which `close()` must not cancel.
        with self._scope:
            async with trio.open_nursery() as nursery:
                await nursery.start(self._engine.run)
                nursery.start_soon(self._run_deliveries)
                if self.options.metrics is not None:
                    host, port = parse_address(self.options.metrics, "metrics", any_port=True)
                    self.metrics = MetricsServer(host, port, self.status)
                    await nursery.start(self.metrics.run)
                await self._start_services(nursery)
                task_status.started()

    async def _start_services(self, nursery: trio.Nursery) -> None:
        """Start what a face runs beside the engine (the ClusterNode's bridge); nothing by default."""

    async def close(self) -> None:
        """Leave the cluster cleanly and stop the node; emits `close` once."""
        if self._closed:
            return
        self._closed = True
        if self._nursery_manager is not None:
            await self._engine.close()
            self._scope.cancel()
        for item in self._deliveries:
            close = getattr(item[1], "close", None) if isinstance(item, tuple) else None
            if close is not None:
                close()  # a coroutine never to be awaited: close it rather than leak a warning
        self._deliveries.clear()
        self._emit("close")

    @property
    def address(self) -> tuple[str, int]:
        """(host, port) actually bound."""
        if self._engine.address is None:
            raise RuntimeError(f"the {self._kind} is not started")
        return self._engine.address

    async def wait_ready(self) -> None:
        await self._ready_event.wait()

    def _check_running(self) -> None:
        """Before a publish or a direct message: the node runs, and the cluster does not refuse it."""
        if not self._engine.running or self._closed:
            raise RuntimeError(f"the {self._kind} is not running")
        conflict = self._engine.name_conflict
        if conflict is not None:
            raise NodeError("name_conflict", f"not sent: serverName {self.server_name!r} is held by another "
                            f"live process at {conflict['holder']}, and the cluster refuses this one "
                            f"({conflict['reason']})")

    # ------------------------------------------------------------------ events

    def on(self, event: str, handler: Callable[..., Any]) -> None:
        """Register `handler` for "ready", "error" (called with a NodeError) or "close"."""
        if event not in self._handlers:
            raise ValueError(f"unknown event {event!r}; expected one of {', '.join(EVENTS)}")
        self._handlers[event].append(handler)

    def off(self, event: str, handler: Callable[..., Any]) -> None:
        self._handlers[event].remove(handler)

    def _emit(self, event: str, *args: Any) -> None:
        for handler in list(self._handlers[event]):
            try:
                handler(*args)
            except Exception:
                log.exception("%s: %r handler raised", self.server_name, event)

    def _on_ready(self) -> None:
        self.is_ready = True
        self._ready_event.set()
        self._emit("ready")

    def _on_error(self, code: str, text: str) -> None:
        self.counters[C.error_counter(code)] += 1
        if code == "name_conflict":  # the cluster refuses us: not ready until a peer links us again
            self.is_ready = False
            if self._ready_event.is_set():
                self._ready_event = trio.Event()
        self._emit("error", NodeError(code, text))

    # ------------------------------------------------------------------ subscriptions

    def _add_callback(self, topic: str | int, callback: Callable[..., Any]) -> None:
        check_topic(topic)
        if not callable(callback):
            raise TypeError("callback must be callable")
        # The registry is the node's subscriptions: the core reads it (shared with the engine).
        self._callbacks.setdefault(topic, []).append(callback)

    def _remove_callback(self, topic: str | int, callback: Callable[..., Any]) -> None:
        callbacks = self._callbacks.get(topic)
        if not callbacks or callback not in callbacks:
            raise ValueError(f"callback is not subscribed to topic {topic!r}")
        callbacks.remove(callback)
        if not callbacks:
            del self._callbacks[topic]

    # ------------------------------------------------------------------ flow and operations

    async def drain(self) -> None:
        """Wait until the node can send again (asyncio's StreamWriter.drain): until the send queue of
        every link that keeps up is at most half full. A lagging link (a slow or stalled peer) does not
        hold it back: that peer pulls what its queue dropped."""
        await self._engine.drain()

    async def flush(self) -> None:
        """Wait until every send queue is empty: all published so far is handed to the kernel."""
        await self._engine.flush()

    def peer_fates(self, names: Collection[str]) -> tuple[set[str], dict[str, str]]:
        """(the peers linked now, and of `names` those unlinked since that "left" or are "lost")."""
        return self._engine.peer_fates(names)

    def status(self) -> dict[str, Any]:
        """The node's links, view and counters (see `python -m swarm status`), and with the `metrics`
        option where they are served (`"metrics"`: "host:port")."""
        status = self._engine.status()
        if self.metrics is not None and self.metrics.address is not None:
            status["metrics"] = "{}:{}".format(*self.metrics.address)
        return status

    def reload_tls(self, tls: Mapping[str, Any] | TlsFiles | None = None) -> dict[str, Any]:
        """Re-read the `tls` files (CA bundle, certificate, key, CRL, deny-list), or switch to the files
        of `tls`.

        New connections use them; links already up keep running, but for those of peers whose
        certificate they now revoke, which are cut. What `python -m swarm node` does on SIGHUP. Returns
        what is now in use (certificate name, serial, expiry, trusted CAs, revocation entries). Raises
        ConfigError, naming `tls.ca`, `tls.cert`, `tls.key`, `tls.crl` or `tls.deny`, if the files do
        not load or the certificate is for another node; the files in use before stay in use. Raises
        ConfigError too if the node was started without `tls`.
        """
        files = TlsFiles.from_value(tls) if tls is not None else None
        setup = self._engine.reload_tls(files)
        self.options = self._engine.options
        return setup.status()

    # ------------------------------------------------------------------ delivery

    def _arguments(self, message: Any, delivery: Deliver) -> tuple[Any, ...]:
        """What a subscriber of this face is called with."""
        raise NotImplementedError

    def _on_deliver(self, delivery: Deliver) -> None:
        """The engine hands over a message (after relaying its frame): call the callbacks now if they are
        cheap and nothing waits before it, else queue it, or drop it if the queue is full."""
        if not self._deliveries and not self._delivering and self._inline_until == 0.0:
            start = time.perf_counter()
            self._dispatch(delivery, None)
            cost = self._inline_cost = (self._inline_cost * (1 - INLINE_WEIGHT)
                                        + (time.perf_counter() - start) * INLINE_WEIGHT)
            if cost > INLINE_LIMIT:
                self._inline_until = trio.current_time() + INLINE_COOLDOWN
                self._inline_cost = 0.0
            return
        if self._inline_until and trio.current_time() >= self._inline_until and not self._deliveries:
            self._inline_until = 0.0
        size = delivery.end - delivery.offset + DELIVERY_OVERHEAD
        if self._delivery_bytes + size > self._delivery_limit:
            self._slow_consumer(delivery.origin)
            return
        self._delivery_bytes += size
        self._deliveries.append(delivery)
        if len(self._deliveries) == 1:
            self._delivery_wakeup.set()

    def _slow_consumer(self, origin: str) -> None:
        """Drop a message for the local subscribers: their queue is full. Count it, report it."""
        self.counters[C.SLOW_CONSUMER_DROPPED] += 1
        self._slow_unreported.add(origin)
        self._slow_total[origin] += 1
        self._report_slow()

    def _report_slow(self) -> None:
        """Report the drops since the last report, if one may go now. Called on each drop and after each
        delivery slice: drops of the last second before the drops stop are reported too."""
        report = self._slow_unreported.due(trio.current_time())
        if report is not None:
            self._on_error("slow_consumer", f"subscribers fell deliveryQueueBytes "
                           f"({self._delivery_limit} bytes) behind: {report[0]} messages dropped for them "
                           f"since the last report ({report[1]}); relaying goes on")

    def _slow_losses(self) -> dict[str, Any]:
        """What `status` shows of the slow-consumer drops: per origin since start, and not yet reported."""
        return {"slow_consumer_dropped": dict(self._slow_total), "delivery_queue": len(self._deliveries),
                "delivery_queue_bytes": self._delivery_bytes}

    def _dispatch(self, delivery: Deliver, awaitables: list[tuple[Callable[..., Any], Any]] | None) -> None:
        """Call the callbacks of `delivery`'s topic. An async one's awaitable goes to `awaitables` (the
        delivery task awaits it at once), or to the front of the queue when called inline."""
        callbacks = self._callbacks.get(delivery.topic)
        if not callbacks:
            self.counters[C.DROPPED_AFTER_UNSUBSCRIBE] += 1
            return
        encoded = delivery.encoded
        for callback in callbacks:
            try:
                message = decode_message(encoded)  # each callback gets its own copy
            except Exception as error:
                self._on_error("malformed", f"message from {delivery.origin} does not decode: {error}")
                return
            try:
                result = callback(*self._arguments(message, delivery))
            except Exception as error:
                self._callback_failed(callback, error)
                continue
            if result is not None and inspect.isawaitable(result):
                if awaitables is not None:
                    awaitables.append((callback, result))
                else:
                    self._deliveries.append((callback, result))
                    self._delivery_bytes += DELIVERY_OVERHEAD
                    if len(self._deliveries) == 1:
                        self._delivery_wakeup.set()

    def _callback_failed(self, callback: Callable[..., Any], error: BaseException) -> None:
        log.error("%s: subscriber %r raised", self.server_name, callback, exc_info=error)
        self.counters[C.CALLBACK_ERRORS] += 1
        self._on_error("callback", f"subscriber {getattr(callback, '__qualname__', callback)!r} raised "
                                   f"{type(error).__name__}: {error}")

    async def _run_deliveries(self) -> None:
        """Empty the delivery queue in order, a slice at a time, awaiting async callbacks in turn."""
        queue = self._deliveries
        clock = time.perf_counter
        while True:
            while not queue:
                self._delivery_wakeup = trio.Event()
                await self._delivery_wakeup.wait()
            self._delivering = True
            try:
                start = clock()
                while queue and clock() - start < DELIVERY_SLICE:
                    item = queue.popleft()
                    if isinstance(item, tuple):
                        self._delivery_bytes -= DELIVERY_OVERHEAD
                        await self._await_callback(*item)
                        break  # it yielded: the slice is over
                    self._delivery_bytes -= item.end - item.offset + DELIVERY_OVERHEAD
                    awaitables: list[tuple[Callable[..., Any], Any]] = []
                    self._dispatch(item, awaitables)
                    for callback, awaitable in awaitables:
                        await self._await_callback(callback, awaitable)
                    if awaitables:
                        break
            finally:
                self._delivering = False
            self._report_slow()
            await trio.lowlevel.checkpoint()  # the readers and writers run between two slices

    async def _await_callback(self, callback: Callable[..., Any], awaitable: Any) -> None:
        try:
            await awaitable
        except Exception as error:
            self._callback_failed(callback, error)
