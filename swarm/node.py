"""`Node`: what both faces of a swarm node share, `swarm.Connector` and `swarm.ClusterNode`.

One `Node` owns one `Engine` (the sockets, the protocol core) and everything around it that does not
depend on the API spelling: the life cycle (`async with`, `start`, `close`), the nursery of the node's
tasks, the `ready`/`error`/`close` events, the per-topic callback registry and the delivery of messages
to it, and the queue of async callbacks. A face adds only its own spelling of publish, subscribe and
direct messages, and says with which arguments a subscriber is called (`_arguments`).

Callbacks run in the node's own task, in per-origin order, each with its own decoded copy of the
message. A plain function is called inline; an async one is queued to a single delivery task, so its
order is kept too and a slow one slows reading (TCP backpressure) rather than growing memory. A callback
that raises is logged, counted and reported as an `error` event; the node goes on.
"""

from __future__ import annotations

import inspect
import logging
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

import trio

from . import counters as C
from .config import Options, TlsFiles
from .errors import SwarmError
from .protocol.actions import Deliver
from .protocol.wire import decode_message
from .transport import tls
from .transport.engine import Engine

__all__ = ["ASYNC_BACKLOG", "EVENTS", "Node", "NodeError", "check_topic"]

log = logging.getLogger("swarm")

EVENTS = ("ready", "error", "close")
# Async callbacks queued beyond this make the reader wait: memory stays bounded.
ASYNC_BACKLOG = 4096


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
                              error=self._on_error, topics=self._callbacks,
                              delivery_room=self._delivery_room)
        self.counters = self._engine.counters  # the node's one set of counters
        self._ready_event = trio.Event()
        self._async_queue: deque[tuple[Callable[..., Any], Any]] = deque()
        self._async_wakeup = trio.Event()
        self._async_room = trio.lowlevel.ParkingLot()
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
                nursery.start_soon(self._run_async_callbacks)
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
        for _, awaitable in self._async_queue:
            close = getattr(awaitable, "close", None)
            if close is not None:
                close()  # a coroutine never to be awaited: close it rather than leak a warning
        self._async_queue.clear()
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
        if not self._engine.running or self._closed:
            raise RuntimeError(f"the {self._kind} is not running")

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
        """Wait until every peer's send queue has room again (asyncio's StreamWriter.drain)."""
        await self._engine.drain()
        await self._delivery_room()

    async def flush(self) -> None:
        """Wait until every send queue is empty: all published so far is handed to the kernel."""
        await self._engine.flush()

    def status(self) -> dict[str, Any]:
        """The node's links, view and counters (see `python -m swarm status`)."""
        return self._engine.status()

    def reload_tls(self, tls: Mapping[str, Any] | TlsFiles | None = None) -> dict[str, Any]:
        """Re-read the `tls` files (CA bundle, certificate, key), or switch to the files of `tls`.

        New connections use them; links already up keep running. What `python -m swarm node` does on
        SIGHUP. Returns what is now in use (certificate name, serial, expiry, trusted CAs). Raises
        ConfigError, naming `tls.ca`, `tls.cert` or `tls.key`, if the files do not load or the certificate
        is for another node; the files in use before stay in use. Raises ConfigError too if the node
        was started without `tls`.
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
            self._call(callback, self._arguments(message, delivery))

    def _call(self, callback: Callable[..., Any], arguments: tuple[Any, ...]) -> None:
        try:
            result = callback(*arguments)
        except Exception as error:
            self._callback_failed(callback, error)
            return
        if result is not None and inspect.isawaitable(result):
            self._async_queue.append((callback, result))
            self._async_wakeup.set()

    def _callback_failed(self, callback: Callable[..., Any], error: BaseException) -> None:
        log.error("%s: subscriber %r raised", self.server_name, callback, exc_info=error)
        self.counters[C.CALLBACK_ERRORS] += 1
        self._on_error("callback", f"subscriber {getattr(callback, '__qualname__', callback)!r} raised "
                                   f"{type(error).__name__}: {error}")

    async def _delivery_room(self) -> None:
        """Wait while more than ASYNC_BACKLOG async callbacks are queued."""
        while len(self._async_queue) > ASYNC_BACKLOG:
            await self._async_room.park()

    async def _run_async_callbacks(self) -> None:
        queue = self._async_queue
        while True:
            while not queue:
                self._async_wakeup = trio.Event()
                await self._async_wakeup.wait()
            callback, awaitable = queue.popleft()
            if len(queue) <= ASYNC_BACKLOG // 2:
                self._async_room.unpark_all()
            try:
                await awaitable
            except Exception as error:
                self._callback_failed(callback, error)
