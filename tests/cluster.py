"""Helpers for in-process cluster tests: start connectors on loopback, wait for conditions, collect.

Every wait here runs under `trio.fail_after`, so a test that cannot make progress fails in seconds
instead of hanging. Nodes bind 127.0.0.1 with port 0 (an ephemeral port) and are seeded from the first
node's actual address.
"""

from __future__ import annotations

import contextlib
import itertools
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from typing import Any

import trio

import swarm

HOST = "127.0.0.1"
# Upper bound for one network wait: generous for a loaded CI machine, short enough to fail fast.
WAIT = 5.0
BARRIER_TOPIC = "__test_barrier__"


def options(name: str, seeds: Iterable[tuple[str, int]] = (), **extra: Any) -> dict[str, Any]:
    """Options of a loopback node named `name` with an ephemeral port, seeded from `seeds`."""
    opts: dict[str, Any] = {"serverName": name, "host": HOST, "port": 0}
    seed_list = [f"{host}:{port}" for host, port in seeds]
    if seed_list:
        opts["seedNodes"] = seed_list
    opts.update(extra)
    return opts


def node(name: str, seeds: Iterable[tuple[str, int]] = (), **extra: Any) -> swarm.Connector:
    """A connector (not started: use it with `async with`)."""
    return swarm.Connector(options(name, seeds, **extra))


async def wait_until(predicate: Callable[[], Any], timeout: float = WAIT, what: str = "") -> None:
    """Poll `predicate` every 10 ms until it is true; fail with `what` after `timeout` seconds."""
    try:
        with trio.fail_after(timeout):
            while not predicate():
                await trio.sleep(0.01)
    except trio.TooSlowError:
        raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}") from None


async def wait_ready(conns: Iterable[swarm.Connector], timeout: float = WAIT) -> None:
    try:
        with trio.fail_after(timeout):
            for conn in conns:
                await conn.wait_ready()
    except trio.TooSlowError:
        raise AssertionError(f"connectors not ready within {timeout}s") from None


def links(conn: swarm.Connector) -> list[str]:
    return list(conn.status()["links"])


def mesh_complete(conns: Sequence[swarm.Connector]) -> bool:
    names = {conn.server_name for conn in conns}
    return all(set(links(conn)) == names - {conn.server_name} for conn in conns)


async def wait_mesh(conns: Sequence[swarm.Connector], timeout: float = WAIT) -> None:
    """Wait until every node is linked to every other one (and to nobody else)."""
    await wait_until(lambda: mesh_complete(conns), timeout,
                     what="full mesh: " + ", ".join(f"{c.server_name}->{links(c)}" for c in conns))


@contextlib.asynccontextmanager
async def cluster(names: int | Sequence[str], *, timeout: float = WAIT,
                  before_start: Callable[[Any], None] | None = None, mesh: bool = True,
                  make: Callable[..., Any] | None = None, **extra: Any) -> AsyncIterator[list[Any]]:
    """Start connectors (N of them, or one per name), seeded from the first, and wait for the mesh.

    `before_start(conn)` runs on each connector before it is started (to subscribe or add handlers).
    `extra` options apply to every node. `make(name, seeds, **extra)` builds each node (default
    `node`: a Connector; the ClusterNode tests pass their own); `mesh=False` waits only for ready.
    """
    if isinstance(names, int):
        names = [f"n{i}" for i in range(names)]
    body_cancelled = False
    async with contextlib.AsyncExitStack() as stack:
        conns: list[swarm.Connector] = []
        seeds: list[tuple[str, int]] = []
        for name in names:
            conn = (make or node)(name, seeds, **extra)
            if before_start is not None:
                before_start(conn)
            await stack.enter_async_context(conn)
            conns.append(conn)
            if not seeds:
                seeds.append(conn.address)
        await wait_ready(conns, timeout)
        if mesh:
            await wait_mesh(conns, timeout)
        try:
            yield conns
        except trio.Cancelled:
            body_cancelled = True
            raise
    if body_cancelled:
        # A Cancelled from outside would have propagated past this point: this one came from one of the
        # connectors' own scopes, and ended the test body early without any failure. Say so.
        raise AssertionError("the test body was cancelled by a connector (a cancel scope of the cluster's "
                             "own connectors was cancelled while the body was still running)")


class Inbox:
    """A subscriber callback that records what it receives (a copy of each message, in order)."""

    def __init__(self, name: str = "") -> None:
        self.name = name
        self.messages: list[Any] = []

    def __call__(self, message: Any) -> None:
        self.messages.append(message)

    def __len__(self) -> int:
        return len(self.messages)

    def __repr__(self) -> str:
        return f"Inbox({self.name!r}, {len(self.messages)} messages)"


class Errors:
    """An `error` event handler that records every NodeError."""

    def __init__(self, conn: swarm.Connector | None = None) -> None:
        self.errors: list[swarm.NodeError] = []
        if conn is not None:
            conn.on("error", self)

    def __call__(self, error: swarm.NodeError) -> None:
        self.errors.append(error)

    def codes(self) -> list[str]:
        return [error.code for error in self.errors]


_barrier_ids = itertools.count()


async def barrier(conns: Sequence[swarm.Connector], timeout: float = WAIT) -> None:
    """Every node publishes a marker; wait until every node has every other node's marker.

    With per-origin FIFO, once node X has delivered Y's marker, everything Y published before it has
    been delivered at X too: after the barrier no earlier message is still on its way.
    """
    token = f"{next(_barrier_ids)}-{uuid.uuid4().hex[:8]}"
    seen: dict[str, set[str]] = defaultdict(set)
    callbacks = {}
    for conn in conns:
        def record(message: Any, _name: str = conn.server_name) -> None:
            if isinstance(message, dict) and message.get("token") == token:
                seen[_name].add(message["from"])
        callbacks[conn.server_name] = record
        conn.subscribe(BARRIER_TOPIC, record)
    try:
        for conn in conns:
            conn.publish(BARRIER_TOPIC, {"token": token, "from": conn.server_name})
        names = {conn.server_name for conn in conns}
        await wait_until(lambda: all(seen[n] == names - {n} for n in names), timeout,
                         what=f"barrier {token}: {dict(seen)}")
    finally:
        for conn in conns:
            conn.unsubscribe(BARRIER_TOPIC, callbacks[conn.server_name])


class Proxy:
    """A TCP relay between a node and a target address, whose connections a test can cut or freeze.

    Used to break one link of a cluster from outside: `cut()` closes every relayed connection at once
    (as when a network path fails with a reset), `freeze()` stops relaying bytes while keeping the
    sockets open (a silent, half-dead connection that only a keepalive timeout can detect).
    `first_chunk_delay` holds back the first bytes from the dialling node to the target (its half of the
    handshake) on each connection: a slow, asymmetric path.
    """

    def __init__(self, target: tuple[str, int], first_chunk_delay: float = 0.0) -> None:
        self.target = target
        self.first_chunk_delay = first_chunk_delay
        self.address: tuple[str, int] | None = None
        self.accepted = 0
        self.frozen = False
        self._thaw = trio.Event()
        self._scopes: set[trio.CancelScope] = set()
        self._nursery: trio.Nursery | None = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host=HOST)
        listener = listeners[0]
        for extra in listeners[1:]:
            await extra.aclose()
        self.address = listener.socket.getsockname()[:2]
        async with listener, trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            while True:
                stream = await listener.accept()
                self.accepted += 1
                nursery.start_soon(self._relay, stream)

    async def _relay(self, client: trio.SocketStream) -> None:
        scope = trio.CancelScope()
        self._scopes.add(scope)
        try:
            with scope:
                try:
                    server = await trio.open_tcp_stream(*self.target)
                except OSError:
                    return
                try:
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(self._pump, client, server, nursery.cancel_scope,
                                           self.first_chunk_delay)
                        nursery.start_soon(self._pump, server, client, nursery.cancel_scope, 0.0)
                finally:
                    with trio.CancelScope(shield=True):
                        await trio.aclose_forcefully(server)
        finally:
            self._scopes.discard(scope)
            with trio.CancelScope(shield=True):
                await trio.aclose_forcefully(client)

    async def _pump(self, source: trio.SocketStream, sink: trio.SocketStream,
                    scope: trio.CancelScope, first_delay: float) -> None:
        try:
            while True:
                if self.frozen:
                    await self._thaw.wait()
                data = await source.receive_some(65536)
                if not data:
                    break
                if first_delay:
                    await trio.sleep(first_delay)
                    first_delay = 0.0
                if self.frozen:
                    await self._thaw.wait()
                await sink.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        scope.cancel()

    def cut(self) -> None:
        """Close every relayed connection now (new ones are still accepted)."""
        for scope in list(self._scopes):
            scope.cancel()

    def freeze(self) -> None:
        """Stop relaying bytes on every connection, present and future, without closing any."""
        self.frozen = True


async def run_concurrently(*functions: Callable[[], Awaitable[Any]]) -> None:
    async with trio.open_nursery() as nursery:
        for function in functions:
            nursery.start_soon(function)
