"""The sidecar bridge: local clients use a `ClusterNode` over a framed JSON protocol (docs/bridge.md).

Servers not written in Python (deepstream's, above all) run `python -m swarm node` beside them with the
`bridge` option, and talk to it over a loopback TCP port or a unix socket. Each frame is a 4-byte
big-endian length and that many bytes of UTF-8 JSON, one object:

    client -> sidecar   hello {version, client}, subscribe {topic}, send {message},
                        send_direct {server, message}
    sidecar -> client   welcome {version, serverName, ready}, ready, message {origin, message},
                        error {code, text}, dropped {total, origins, text}, peer {server, event, text}

The bridge holds no messaging logic of its own: `send` is `ClusterNode.send`, `send_direct` is
`ClusterNode.send_direct`, and the bridge subscribes the node to a topic (one callback per topic) while
at least one client wants it. Each client has its own subscriptions, its own bounded outbound queue and
its own writer task; one that disconnects or sends garbage is dropped, with its reason logged, and nothing
else is affected.

Flow control both ways, so that a burst loses nothing a broker would not. A client's publishes are paced
by the node: its reader stops reading the socket while the node's `drain()` waits, so TCP back-pressure
reaches the client, which buffers (the deepstream plugin, boundedly). Its deliveries are bounded in bytes
(`bridgeQueueBytes`, by default the node's own bound for slow subscribers): a client that does not read
fast enough is a slow consumer like any other (NATS's rule), never disconnected for it; further messages
are dropped for it alone, counted exactly per origin, and once its queue has room again it gets a
`dropped` op with the counts. The bridge also tells its clients, with a `peer` op, when a linked peer
leaves the cluster or its link is lost.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import socket
import stat
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import trio

from . import counters as C
from . import jsontext
from .config import format_bridge, parse_bridge
from .errors import MessageTooLarge, SwarmError
from .node import NodeError
from .protocol import wire
from .transport.framing import join_frames

if TYPE_CHECKING:
    from .cluster_node import ClusterNode

__all__ = ["FRAME_OVERHEAD", "HELLO_TIMEOUT", "PROTOCOL_VERSION", "Bridge", "BridgeListenError",
           "ClientDropped", "decode_frames", "encode_frame", "max_frame_size"]

log = logging.getLogger("swarm.bridge")

PROTOCOL_VERSION = 1
# A frame may be this much larger than `maxMessageSize`: room for the request around the message and
# for JSON being wordier than msgpack.
FRAME_OVERHEAD = 64 * 1024
# A client must say hello within this many seconds of connecting, or it is dropped.
HELLO_TIMEOUT = 10.0
# How long a client that is being dropped is given to read the `error` op that says why.
FAREWELL_WAIT = 1.0
# Frames that are not messages (welcome, ready, error, dropped, peer) may pass a full queue by this much:
# a slow client still learns what it lost and why; past it they are dropped (they are in the log too).
CONTROL_RESERVE = 1 << 20
# How often the bridge looks at the node's links to tell its clients of a peer that left or was lost.
PEER_WATCH = 0.5
RECEIVE_SIZE = 65536
LENGTH_BYTES = 4


class BridgeListenError(SwarmError):
    """The bridge could not listen at its address (in use, no permission, ...)."""


class ClientDropped(Exception):
    """A client broke the protocol: it is told why (`error` op with `code`), then disconnected."""

    def __init__(self, reason: str, code: str = "dropped") -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code


def max_frame_size(max_message_size: int) -> int:
    """Largest frame body (the JSON) either side accepts: `maxMessageSize` + 64 KiB."""
    return max_message_size + FRAME_OVERHEAD


def encode_frame(obj: Any) -> bytes:
    """One frame: 4-byte big-endian length, then `obj` as UTF-8 JSON.

    Raises ValueError for what JSON cannot carry (NaN, infinities, keys of other types).
    """
    payload = jsontext.dumps(obj, allow_nan=False).encode("utf-8")
    return len(payload).to_bytes(LENGTH_BYTES, "big") + payload


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def decode_frames(buffer: bytearray, limit: int) -> tuple[list[bytes], ClientDropped | None]:
    """Cut the whole frames off the front of `buffer`: their bodies (what is left stays), and the error
    to drop the client with if a length over `limit` follows them (seen before its body is waited for).
    """
    bodies = []
    start = 0
    size = len(buffer)
    error = None
    while size - start >= LENGTH_BYTES:
        length = int.from_bytes(buffer[start:start + LENGTH_BYTES], "big")
        if length > limit:
            error = ClientDropped(f"frame length {length} over the limit of {limit} bytes (maxMessageSize "
                                  f"+ {FRAME_OVERHEAD})")
            break
        end = start + LENGTH_BYTES + length
        if end > size:
            break
        bodies.append(bytes(buffer[start + LENGTH_BYTES:end]))
        start = end
    if start:
        del buffer[:start]
    return bodies, error


def _parse(body: bytes) -> dict[str, Any]:
    """A frame's body as a request object with a str `op`; ClientDropped otherwise."""
    try:
        request = json.loads(body.decode("utf-8"), parse_constant=_reject_constant)
    except UnicodeDecodeError as error:
        raise ClientDropped(f"frame is not UTF-8: {error}") from None
    except (ValueError, RecursionError) as error:
        raise ClientDropped(f"frame is not JSON: {error}") from None
    if not isinstance(request, dict):
        raise ClientDropped(f"frame is not a JSON object but {type(request).__name__}")
    if not isinstance(request.get("op"), str):
        raise ClientDropped(f"frame has no string `op`: {_excerpt(body)}")
    return request


def _excerpt(body: bytes, size: int = 80) -> str:
    text = body[:size].decode("utf-8", "replace")
    return repr(text + ("..." if len(body) > size else ""))


def _topic(value: Any, what: str) -> str | int:
    """A topic a swarm node can carry (an int of 64 bits, or a str); ClientDropped otherwise."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ClientDropped(f"{what}: expected an int or a str, got {type(value).__name__}")
    try:
        wire.encode_topic(value)
    except ValueError as error:
        raise ClientDropped(f"{what}: {error}") from None
    return value


def _message(request: dict[str, Any]) -> dict[str, Any]:
    message = request.get("message")
    if not isinstance(message, dict):
        raise ClientDropped(f"{request['op']}: `message` must be a JSON object, got "
                            f"{type(message).__name__}")
    _topic(message.get("topic"), f"{request['op']}: message.topic")
    return message


class _Client:
    """One attached local client: its stream, subscriptions and outbound queue."""

    def __init__(self, client_id: int, stream: trio.abc.Stream, peer: str, limit: int) -> None:
        self.id = client_id
        self.stream = stream
        self.peer = peer
        self.label = ""  # what it said in hello's `client`
        self.limit = limit  # bytes of queued messages at most
        self.queue: deque[bytes] = deque()
        self.queued_bytes = 0
        self.lost: dict[str, int] = {}  # messages dropped per origin, not yet reported to the client
        self.lost_total: dict[str, int] = {}  # ... and since it attached
        self.wakeup = trio.Event()
        self.idle = trio.Event()
        self.writing = False
        self.scope = trio.CancelScope()
        self.welcomed = False
        self.told_ready = False
        self.topics: set[str | int] = set()
        self.closed = False
        self.broken: str | None = None  # the connection error that ended it

    def __str__(self) -> str:
        label = f" {self.label!r}" if self.label else ""
        return f"#{self.id}{label} ({self.peer})"

    def put(self, frame: bytes, reserve: int = CONTROL_RESERVE) -> bool:
        """Queue `frame`; False (nothing queued) if it would take the queue `reserve` bytes past its bound
        (0 for messages; control frames have a reserve)."""
        if self.closed:
            return True  # being dropped: what it would have been sent no longer matters
        if self.queued_bytes + len(frame) > self.limit + reserve and self.queue:
            return False
        self.queue.append(frame)
        self.queued_bytes += len(frame)
        self.wakeup.set()
        return True

    def take(self) -> bytes:
        data = join_frames(self.queue)
        self.queued_bytes -= len(data)
        return data


class Bridge:
    """Serves local bridge clients on behalf of one `ClusterNode` (started by the node, in its nursery).

    A client's outbound queue holds at most `queue_bytes` bytes of messages (default: the node's
    `bridgeQueueBytes`); past it messages are dropped for that client, counted per origin and reported
    to it with a `dropped` op, see docs/bridge.md.
    """

    def __init__(self, node: ClusterNode, address: str, *, queue_bytes: int | None = None) -> None:
        self.node = node
        self.kind, self._host, self._port = parse_bridge(address)
        self.address = format_bridge(self.kind, self._host, self._port)  # the bound one once listening
        self.queue_limit = queue_bytes if queue_bytes is not None else node.options.bridgeQueueBytes
        self.max_frame = max_frame_size(node.options.maxMessageSize)
        self.counters = node.counters
        self.clients: dict[int, _Client] = {}
        self._subscribers: dict[str | int, dict[int, _Client]] = {}
        self._callbacks: dict[str | int, Callable[[Any, str], None]] = {}
        self._ids = itertools.count(1)
        self.watched: set[str] = set()  # the linked peers at the last look (PEER_WATCH)

    def status(self) -> dict[str, Any]:
        """Where the bridge listens, its attached clients and the topics they want."""
        return {"address": self.address,
                "clients": [{"id": c.id, "client": c.label, "welcomed": c.welcomed, "queued": len(c.queue),
                             "queued_bytes": c.queued_bytes, "dropped": dict(c.lost_total),
                             "topics": sorted(c.topics, key=repr)} for c in self.clients.values()],
                "topics": sorted(self._subscribers, key=repr)}

    # ------------------------------------------------------------------ listening

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen, then serve clients until cancelled; `task_status.started()` once listening."""
        listener = await self._listen()
        node = self.node
        node.on("ready", self._on_ready)
        node.on("error", self._on_error)
        try:
            async with listener, trio.open_nursery() as nursery:
                log.info("%s: bridge listening on %s", node.server_name, self.address)
                nursery.start_soon(self._watch_peers)
                task_status.started()
                while True:
                    try:
                        stream = await listener.accept()
                    except OSError as error:  # e.g. EMFILE: back off instead of spinning
                        log.warning("%s: bridge accept failed: %s", node.server_name, error)
                        await trio.sleep(0.1)
                        continue
                    nursery.start_soon(self._serve_client, stream)
        finally:
            node.off("ready", self._on_ready)
            node.off("error", self._on_error)
            if self.kind == "unix":
                _unlink_quietly(self._host)

    async def _watch_peers(self) -> None:
        """Tell the log and the clients when a linked peer leaves the cluster or its link is lost.

        A link the protocol retires or prunes (its peer still alive, still linked elsewhere) is neither;
        a lost link counts as a failure of its member, which is how the two are told apart."""
        while True:
            await trio.sleep(PEER_WATCH)
            now, fates = self.node.peer_fates(self.watched)
            for name, fate in sorted(fates.items()):
                if fate == "left":
                    self._peer_event(name, "left", f"peer {name} left the cluster")
                else:
                    self._peer_event(name, "lost", f"peer {name} is lost: its link failed (the node died, "
                                                   "or the network between is down); redialling it")
            self.watched = now

    def _peer_event(self, server: str, event: str, text: str) -> None:
        log.log(logging.INFO if event == "left" else logging.WARNING, "%s: %s", self.node.server_name, text)
        frame = encode_frame({"op": "peer", "server": server, "event": event, "text": text})
        for client in list(self.clients.values()):
            if client.welcomed:
                self._put(client, frame)

    async def _listen(self) -> trio.SocketListener:
        try:
            if self.kind == "tcp":
                listeners = await trio.open_tcp_listeners(self._port, host=self._host)
                for extra in listeners[1:]:
                    await extra.aclose()
                listener = listeners[0]
                host, port = listener.socket.getsockname()[:2]
                self.address = format_bridge("tcp", host, port)
                return listener
            path = self._host
            await _clear_stale_socket(path)
            sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                await sock.bind(path)
                sock.listen(128)
            except BaseException:
                sock.close()
                raise
            return trio.SocketListener(sock)
        except OSError as error:
            raise BridgeListenError(f"bridge: cannot listen on {self.address}: "
                                    f"{error.strerror or error}") from None

    # ------------------------------------------------------------------ one client

    async def _serve_client(self, stream: trio.SocketStream) -> None:
        try:
            peer = stream.socket.getpeername()
            where = format_bridge("tcp", *peer[:2]) if isinstance(peer, tuple) else "unix socket"
        except OSError:
            where = "?"
        client = _Client(next(self._ids), stream, where, self.queue_limit)
        self.clients[client.id] = client
        self.counters[C.BRIDGE_CLIENTS] += 1
        reason: str | None = None
        try:
            with client.scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._writer, client)
                    try:
                        await self._reader(client)
                    except ClientDropped as dropped:
                        reason = dropped.reason
                        await self._farewell(client, dropped)
                    except (trio.BrokenResourceError, trio.ClosedResourceError) as error:
                        client.broken = client.broken or str(error)
                    nursery.cancel_scope.cancel()
        finally:
            client.closed = True
            del self.clients[client.id]
            for topic in list(client.topics):
                self._drop_interest(client, topic)
            if client.lost:
                log.warning("%s: bridge client %s left with %d messages dropped for it and not yet reported "
                            "to it (%s)", self.node.server_name, client, sum(client.lost.values()),
                            ", ".join(f"{n} from {o}" for o, n in sorted(client.lost.items())))
            if reason is not None:
                self.counters[C.BRIDGE_CLIENTS_DROPPED] += 1
                log.warning("%s: bridge client %s dropped: %s", self.node.server_name, client, reason)
            elif client.broken is not None:
                log.info("%s: bridge client %s left: %s", self.node.server_name, client, client.broken)
            else:
                log.info("%s: bridge client %s left", self.node.server_name, client)
            with trio.CancelScope(shield=True):
                await trio.aclose_forcefully(stream)

    async def _reader(self, client: _Client) -> None:
        receive = client.stream.receive_some
        buffer = bytearray()
        hello_deadline = trio.current_time() + HELLO_TIMEOUT
        while True:
            if client.welcomed:
                data = await receive(RECEIVE_SIZE)
            else:
                data = None
                with trio.move_on_at(hello_deadline):
                    data = await receive(RECEIVE_SIZE)
                if data is None:
                    raise ClientDropped(f"no `hello` within {HELLO_TIMEOUT:g}s")
            if not data:
                if buffer:
                    raise ClientDropped(f"connection closed in the middle of a frame ({len(buffer)} bytes)")
                return
            buffer += data
            bodies, error = decode_frames(buffer, self.max_frame)
            sent = False
            for body in bodies:
                sent = self._handle(client, body) or sent
            if error is not None:
                raise error
            if sent:
                # A client publishing faster than the peers take it is not read until the node can send
                # again: TCP back-pressure paces it rather than full peer queues dropping its messages.
                # drain() does not wait for a lagging peer (it pulls what it misses), so this is bounded.
                await self.node.drain()

    async def _writer(self, client: _Client) -> None:
        try:
            while True:
                while not client.queue:
                    client.wakeup = trio.Event()
                    await client.wakeup.wait()
                data = client.take()
                client.writing = True
                await client.stream.send_all(data)
                client.writing = False
                if client.lost and client.queued_bytes <= client.limit // 2:
                    self._report_lost(client)
                if not client.queue:
                    client.idle.set()
        except (trio.BrokenResourceError, trio.ClosedResourceError) as error:
            client.broken = client.broken or str(error)
            client.scope.cancel()

    async def _farewell(self, client: _Client, dropped: ClientDropped) -> None:
        """Tell a client being dropped why, giving it a moment to read it."""
        client.scope.deadline = trio.current_time() + FAREWELL_WAIT
        if not client.put(encode_frame({"op": "error", "code": dropped.code, "text": dropped.reason})):
            return
        while client.queue or client.writing:
            client.idle = trio.Event()
            await client.idle.wait()

    def _report_lost(self, client: _Client) -> None:
        """The client reads again (its queue is half empty): tell it, and the log, what it lost."""
        lost, client.lost = client.lost, {}
        total = sum(lost.values())
        origins = ", ".join(f"{count} from {origin}" for origin, count in sorted(lost.items()))
        text = (f"{total} messages dropped for this client ({origins}): it did not read fast enough and its "
                f"outbound queue was full ({client.limit} bytes, bridgeQueueBytes)")
        log.warning("%s: bridge client %s: %s", self.node.server_name, client, text)
        client.put(encode_frame({"op": "dropped", "total": total, "origins": lost, "text": text}))

    # ------------------------------------------------------------------ requests

    def _handle(self, client: _Client, body: bytes) -> bool:
        """Carry out one request; True if it sent a message into the cluster."""
        request = _parse(body)
        op = request["op"]
        if not client.welcomed:
            if op != "hello":
                raise ClientDropped(f"expected `hello` first, got `{op}`")
            self._hello(client, request)
            return False
        if op == "subscribe":
            self._subscribe(client, _topic(request.get("topic"), "subscribe: topic"))
            return False
        if op == "send":
            return self._send(client, lambda: self.node.send(_message(request)))
        if op == "send_direct":
            server = request.get("server")
            if not isinstance(server, str) or not server:
                raise ClientDropped(f"send_direct: `server` must be a non-empty string, got {server!r}")
            message = _message(request)
            return self._send(client, lambda: self.node.send_direct(server, message))
        if op == "hello":
            raise ClientDropped("a second `hello`")
        raise ClientDropped(f"unknown op {op!r}")

    def _hello(self, client: _Client, request: dict[str, Any]) -> None:
        version = request.get("version")
        if isinstance(version, bool) or not isinstance(version, int):
            raise ClientDropped(f"hello: `version` must be an integer, got {version!r}")
        label = request.get("client", "")
        if not isinstance(label, str):
            raise ClientDropped(f"hello: `client` must be a string, got {type(label).__name__}")
        client.label = label[:200]
        if version != PROTOCOL_VERSION:
            raise ClientDropped(f"hello: protocol version {version} is not supported; this sidecar speaks "
                                f"version {PROTOCOL_VERSION}", "version")
        ready = self.node.is_ready
        client.told_ready = ready
        client.welcomed = True
        self._put(client, encode_frame({"op": "welcome", "version": PROTOCOL_VERSION,
                                        "serverName": self.node.server_name, "ready": ready}))
        log.info("%s: bridge client %s attached", self.node.server_name, client)

    def _send(self, client: _Client, send: Callable[[], None]) -> bool:
        """Run `send`; what the node refuses is reported to the client with an `error` op, not fatal."""
        try:
            send()
        except MessageTooLarge as error:
            self._report(client, "too-large", str(error))
            return False
        except RuntimeError as error:  # the node is closing
            self._report(client, "not-running", str(error))
            return False
        except (TypeError, ValueError, OverflowError) as error:  # e.g. an integer msgpack cannot carry
            self._report(client, "bad-request", str(error))
            return False
        self.counters[C.BRIDGE_SENT] += 1
        return True

    def _report(self, client: _Client, code: str, text: str) -> None:
        self.counters[C.BRIDGE_BAD_REQUESTS] += 1
        log.info("%s: bridge client %s: %s: %s", self.node.server_name, client, code, text)
        self._put(client, encode_frame({"op": "error", "code": code, "text": text}))

    # ------------------------------------------------------------------ subscriptions and delivery

    def _subscribe(self, client: _Client, topic: str | int) -> None:
        if topic in client.topics:
            return
        client.topics.add(topic)
        subscribers = self._subscribers.setdefault(topic, {})
        subscribers[client.id] = client
        if len(subscribers) == 1:
            def deliver(message: Any, origin: str, _topic: str | int = topic) -> None:
                self._deliver(_topic, message, origin)
            self._callbacks[topic] = deliver
            self.node.subscribe(topic, deliver)

    def _drop_interest(self, client: _Client, topic: str | int) -> None:
        client.topics.discard(topic)
        subscribers = self._subscribers.get(topic)
        if subscribers is None:
            return
        subscribers.pop(client.id, None)
        if not subscribers:
            del self._subscribers[topic]
            self.node.unsubscribe(topic, self._callbacks.pop(topic))

    def _deliver(self, topic: str | int, message: Any, origin: str) -> None:
        subscribers = self._subscribers.get(topic)
        if not subscribers:
            return
        try:
            frame = encode_frame({"op": "message", "origin": origin, "message": message})
            if len(frame) - LENGTH_BYTES > self.max_frame:
                raise ValueError(f"{len(frame) - LENGTH_BYTES} bytes of JSON, over the frame limit of "
                                 f"{self.max_frame}")
        except ValueError as error:
            self.counters[C.BRIDGE_UNENCODABLE] += 1
            frame = encode_frame({"op": "error", "code": "unencodable",
                                  "text": f"a message from {origin} on topic {topic!r} cannot be passed on "
                                          f"as JSON: {error}"})
        for client in list(subscribers.values()):
            if client.put(frame, 0):
                self.counters[C.BRIDGE_DELIVERED] += 1
                continue
            if not client.lost:
                log.warning("%s: bridge client %s does not read fast enough: its outbound queue is full "
                            "(%d bytes); dropping messages for it until it reads again (counted, and "
                            "reported to it then)", self.node.server_name, client, client.limit)
            client.lost[origin] = client.lost.get(origin, 0) + 1
            client.lost_total[origin] = client.lost_total.get(origin, 0) + 1
            self.counters[C.BRIDGE_DROPPED] += 1

    def _put(self, client: _Client, frame: bytes) -> None:
        """Queue a control frame (in the reserve past a full queue; beyond it, it is only in the log)."""
        client.put(frame)

    def _on_ready(self) -> None:
        frame = encode_frame({"op": "ready"})
        for client in list(self.clients.values()):
            if client.welcomed and not client.told_ready:
                client.told_ready = True
                self._put(client, frame)

    def _on_error(self, error: NodeError) -> None:
        frame = encode_frame({"op": "error", "code": error.code, "text": str(error)})
        for client in list(self.clients.values()):
            if client.welcomed:
                self._put(client, frame)


async def _clear_stale_socket(path: str) -> None:
    """Remove a socket file left by a process that is gone; refuse a live one or a non-socket file."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise OSError(f"{path} exists and is not a socket")
    probe = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        with trio.move_on_after(1.0):
            await probe.connect(path)
            raise OSError(f"another process listens on {path}")
    except (ConnectionRefusedError, FileNotFoundError):
        _unlink_quietly(path)
    finally:
        probe.close()


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
