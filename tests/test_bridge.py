"""The sidecar bridge (docs/bridge.md): local clients speaking framed JSON to a node, over real sockets.

Nodes run in this process (ClusterNodes with the `bridge` option, on 127.0.0.1 and unix sockets in
tmp_path); the clients are raw sockets that frame JSON by hand, as a server in another language would.
The last test runs `python -m swarm node --config FILE` processes. Every wait is bounded.
"""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import socket
from collections import defaultdict
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import trio
from cluster import HOST, WAIT, options, wait_mesh, wait_ready, wait_until
from test_cli import Launch, config_text, launch, run_swarm  # noqa: F401 - `launch` is a fixture

import swarm
import swarm.bridge
from swarm.bridge import FRAME_OVERHEAD

TOPIC = 4  # deepstream's EVENT


def frame(obj: Any) -> bytes:
    payload = json.dumps(obj).encode("utf-8")
    return len(payload).to_bytes(4, "big") + payload


def raw_frame(payload: bytes) -> bytes:
    return len(payload).to_bytes(4, "big") + payload


class Client:
    """A bridge client over a raw socket: frames written and read by hand."""

    def __init__(self, stream: trio.abc.Stream, name: str) -> None:
        self.stream = stream
        self.name = name
        self._buffer = b""
        self.welcome: dict[str, Any] = {}

    @classmethod
    async def connect(cls, address: str, name: str = "client", rcvbuf: int | None = None) -> Client:
        with trio.fail_after(WAIT):
            if address.startswith("/"):
                sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                target: Any = address
            else:
                host, _, port = address.rpartition(":")
                sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                target = (host, int(port))
            if rcvbuf is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            await sock.connect(target)
            return cls(trio.SocketStream(sock), name)

    async def send(self, obj: Any) -> None:
        await self.stream.send_all(frame(obj))

    async def send_raw(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def receive(self, timeout: float = WAIT) -> dict[str, Any] | None:
        """The next frame, or None once the sidecar has closed the connection."""
        with trio.fail_after(timeout):
            while True:
                if len(self._buffer) >= 4:
                    length = int.from_bytes(self._buffer[:4], "big")
                    if len(self._buffer) >= 4 + length:
                        body, self._buffer = self._buffer[4:4 + length], self._buffer[4 + length:]
                        value = json.loads(body.decode("utf-8"))
                        assert isinstance(value, dict)
                        return value
                try:
                    data = await self.stream.receive_some(65536)
                except trio.BrokenResourceError:  # reset: closed with our bytes unread
                    return None
                if not data:
                    return None
                self._buffer += data

    async def expect(self, op: str) -> dict[str, Any]:
        got = await self.receive()
        assert got is not None and got.get("op") == op, f"{self.name}: expected {op!r}, got {got!r}"
        return got

    async def hello(self) -> dict[str, Any]:
        await self.send({"op": "hello", "version": 1, "client": self.name})
        self.welcome = await self.expect("welcome")
        return self.welcome

    async def closed_by_sidecar(self) -> list[dict[str, Any]]:
        """Read until the sidecar closes the connection; what came before (an error op, say)."""
        frames = []
        while (got := await self.receive()) is not None:
            frames.append(got)
        return frames

    async def aclose(self) -> None:
        await trio.aclose_forcefully(self.stream)


def bridge_of(node: swarm.ClusterNode) -> str:
    assert node.bridge_address is not None
    return node.bridge_address


def counter(node: swarm.ClusterNode, key: str) -> int:
    return int(node.status()["counters"].get(key, 0))


async def wait_topics(node: swarm.ClusterNode, topics: Sequence[Any]) -> None:
    """Until the bridge's clients want exactly `topics` (subscribe has no answer: watch the node)."""
    want = sorted(topics, key=repr)
    await wait_until(lambda: node.status()["bridge"]["topics"] == want,
                     what=f"{node.server_name} bridge topics {want}: {node.status()['bridge']['topics']}")


async def wait_subscribed(node: swarm.ClusterNode, count: int, topic: Any) -> None:
    """Until `count` clients of `node` have subscribed to `topic`."""
    def done() -> bool:
        return sum(topic in c["topics"] for c in node.status()["bridge"]["clients"]) == count
    await wait_until(done, what=f"{count} clients of {node.server_name} on {topic!r}")


@contextlib.asynccontextmanager
async def sidecars(specs: Sequence[tuple[str, str | None]], **extra: Any
                   ) -> AsyncIterator[list[swarm.ClusterNode]]:
    """ClusterNodes (name, bridge address or None) seeded from the first, ready and fully linked."""
    async with contextlib.AsyncExitStack() as stack:
        nodes: list[swarm.ClusterNode] = []
        seeds: list[tuple[str, int]] = []
        for name, bridge in specs:
            opts = options(name, seeds, **extra)
            if bridge is not None:
                opts["bridge"] = bridge
            node = swarm.ClusterNode(opts)
            await stack.enter_async_context(node)
            nodes.append(node)
            if not seeds:
                seeds.append(node.address)
        await wait_ready(nodes)  # type: ignore[arg-type]
        await wait_mesh(nodes)  # type: ignore[arg-type]
        yield nodes


async def collect(client: Client, count: int, into: list[dict[str, Any]]) -> None:
    """Read `count` message ops into `into` (anything else is a failure)."""
    while len(into) < count:
        got = await client.receive()
        assert got is not None, f"{client.name}: closed after {len(into)} of {count} messages"
        assert got["op"] == "message", f"{client.name}: unexpected {got}"
        into.append(got)


# ------------------------------------------------------------------------------------------- options


@pytest.mark.parametrize("value", ["10.0.0.1:7101", "0.0.0.0:7101", "[::]:7101", "localhost:7101",
                                   "192.168.1.5:0", "127.0.0.1:70000", "127.0.0.1:port", 7101, ""])
def test_bridge_option_is_loopback_or_a_socket_path(value: Any) -> None:
    with pytest.raises(swarm.ConfigError, match=r"^bridge: "):
        swarm.ClusterNode({"bridge": value})


def test_bridge_option_accepted_forms(tmp_path: Path) -> None:
    assert swarm.Options.from_mapping({"bridge": "127.0.0.1:7101"}).bridge == "127.0.0.1:7101"
    assert swarm.Options.from_mapping({"bridge": "[::1]:0"}).bridge == "[::1]:0"
    path = tmp_path / "swarm.sock"
    assert swarm.Options.from_mapping({"bridge": str(path)}).bridge == str(path)


def test_docs_example_session_frames_are_right() -> None:
    text = (Path(__file__).resolve().parent.parent / "docs" / "bridge.md").read_text(encoding="utf-8")
    session = text.split("<!-- session:start -->", 1)[1].split("<!-- session:end -->", 1)[0]
    lines = [line for line in session.splitlines() if "->" in line]
    assert len(lines) == 6
    for line in lines:
        _who, _, rest = line.partition("->")
        length_hex, payload = rest.strip()[:11], rest.strip()[11:].strip()
        assert isinstance(json.loads(payload), dict)
        assert bytes.fromhex(length_hex) == raw_frame(payload.encode())[:4]


# ----------------------------------------------------------------------------------- the exchange


async def test_clients_on_three_nodes_exchange_messages(tmp_path: Path) -> None:
    count = 100
    sock = str(tmp_path / "b.sock")
    async with sidecars([("a", f"{HOST}:0"), ("b", sock), ("c", f"{HOST}:0"), ("py", None)]) as nodes:
        a, b, c, py = nodes
        assert bridge_of(b) == sock and bridge_of(a).startswith(f"{HOST}:")
        clients = {}
        for node in (a, b, c):
            client = await Client.connect(bridge_of(node), f"ds-{node.server_name}")
            welcome = await client.hello()
            assert welcome == {"op": "welcome", "version": 1, "serverName": node.server_name, "ready": True}
            await client.send({"op": "subscribe", "topic": TOPIC})
            await client.send({"op": "subscribe", "topic": "presence"})
            await client.send({"op": "subscribe", "topic": TOPIC})  # twice: still one subscription
            clients[node.server_name] = client
        for node in (a, b, c):
            await wait_topics(node, [TOPIC, "presence"])
        python_side: list[tuple[Any, str]] = []
        py.subscribe(TOPIC, lambda message, origin: python_side.append((message, origin)))

        # Each client sends `count` messages on TOPIC; a's client also sends direct to c and to py.
        for i in range(count):
            for name, client in clients.items():
                await client.send({"op": "send", "message": {"topic": TOPIC, "from": name, "i": i,
                                                               "nested": {"list": [1, 2.5, None, True]}}})
        for i in range(10):
            await clients["a"].send({"op": "send_direct", "server": "c",
                                     "message": {"topic": TOPIC, "direct": i, "from": "a"}})
        await clients["a"].send({"op": "send_direct", "server": "py", "message": {"topic": TOPIC, "hi": 1}})
        py.send({"topic": "presence", "user": "ünïcode ✓", "bytes": b"\x00\x01"})

        received: dict[str, list[dict[str, Any]]] = {name: [] for name in clients}
        expected = {"a": 2 * count + 1, "b": 2 * count + 1, "c": 2 * count + 10 + 1}
        async with trio.open_nursery() as nursery:
            for name, client in clients.items():
                nursery.start_soon(collect, client, expected[name], received[name])
        await wait_until(lambda: len(python_side) == 3 * count + 1, what=f"python side: {len(python_side)}")

    for name, ops in received.items():
        by_origin: dict[str, list[Any]] = defaultdict(list)
        for op in ops:
            assert set(op) == {"op", "origin", "message"}
            by_origin[op["origin"]].append(op["message"])
        assert name not in by_origin, f"{name} got its own message back"
        for origin in set(clients) - {name}:
            stream = [m for m in by_origin[origin] if "i" in m]
            assert [m["i"] for m in stream] == list(range(count)), (name, origin)
            assert all(m["from"] == origin and m["topic"] == TOPIC for m in stream)
            assert stream[0]["nested"] == {"list": [1, 2.5, None, True]}
        assert by_origin["py"] == [{"topic": "presence", "user": "ünïcode ✓", "bytes": "AAE="}]
        directs = [m["direct"] for m in by_origin["a"] if "direct" in m]
        assert directs == (list(range(10)) if name == "c" else []), name
    # The Python peer saw the clients' JSON objects as the same dicts.
    sent_by_b = {"topic": TOPIC, "from": "b", "i": 0, "nested": {"list": [1, 2.5, None, True]}}
    assert (sent_by_b, "b") in python_side
    assert ({"topic": TOPIC, "hi": 1}, "a") in python_side
    for client in clients.values():
        await client.aclose()


async def test_unreachable_target_and_bad_requests_are_error_ops_not_fatal() -> None:
    async with sidecars([("a", f"{HOST}:0"), ("b", None)], maxMessageSize=1024) as (a, b):
        client = await Client.connect(bridge_of(a))
        await client.hello()
        await client.send({"op": "subscribe", "topic": TOPIC})
        await client.send({"op": "send_direct", "server": "nobody", "message": {"topic": TOPIC}})
        error = await client.expect("error")
        assert error["code"] == "unreachable" and "nobody" in error["text"]
        await client.send({"op": "send_direct", "server": "a", "message": {"topic": TOPIC}})
        assert (await client.expect("error"))["code"] == "bad-request"
        # Too large for maxMessageSize, yet within the frame limit: refused, the client stays.
        await client.send({"op": "send", "message": {"topic": TOPIC, "pad": "x" * 2000}})
        error = await client.expect("error")
        assert error["code"] == "too-large" and "maxMessageSize" in error["text"]
        # An integer msgpack cannot carry.
        await client.send({"op": "send", "message": {"topic": TOPIC, "n": 2**70}})
        assert (await client.expect("error"))["code"] == "bad-request"
        await wait_subscribed(a, 1, TOPIC)
        b.send({"topic": TOPIC, "still": "attached"})
        got = await client.expect("message")
        assert got == {"op": "message", "origin": "b", "message": {"topic": TOPIC, "still": "attached"}}
        assert counter(a, "bridge_clients_dropped") == 0
        await client.aclose()


# --------------------------------------------------------------------------------- client lifetimes


async def test_a_client_that_leaves_loses_its_subscriptions_only(tmp_path: Path) -> None:
    async with sidecars([("a", str(tmp_path / "a.sock")), ("b", f"{HOST}:0")]) as (a, b):
        stays = await Client.connect(bridge_of(a), "stays")
        leaves = await Client.connect(bridge_of(a), "leaves")
        sender = await Client.connect(bridge_of(b), "sender")
        for client in (stays, leaves, sender):
            await client.hello()
        await stays.send({"op": "subscribe", "topic": TOPIC})
        await leaves.send({"op": "subscribe", "topic": TOPIC})
        await leaves.send({"op": "subscribe", "topic": "only-leaves"})
        await wait_topics(a, [TOPIC, "only-leaves"])
        await wait_subscribed(a, 2, TOPIC)
        await sender.send({"op": "send", "message": {"topic": TOPIC, "n": 1}})
        for client in (stays, leaves):
            assert (await client.expect("message"))["message"] == {"topic": TOPIC, "n": 1}

        await leaves.aclose()
        await wait_until(lambda: len(a.status()["bridge"]["clients"]) == 1, what="one client left")
        # Its topic is no longer the node's; the topic the other client wants still is.
        await wait_topics(a, [TOPIC])
        dropped = counter(a, "dropped_no_subscriber")
        await sender.send({"op": "send", "message": {"topic": "only-leaves", "n": 2}})
        await sender.send({"op": "send", "message": {"topic": TOPIC, "n": 3}})
        assert (await stays.expect("message"))["message"] == {"topic": TOPIC, "n": 3}
        assert counter(a, "dropped_no_subscriber") == dropped + 1
        # A new client may take the topic up again.
        again = await Client.connect(bridge_of(a), "again")
        await again.hello()
        await again.send({"op": "subscribe", "topic": "only-leaves"})
        await wait_topics(a, [TOPIC, "only-leaves"])
        await sender.send({"op": "send", "message": {"topic": "only-leaves", "n": 4}})
        assert (await again.expect("message")) == {"op": "message", "origin": "b",
                                                   "message": {"topic": "only-leaves", "n": 4}}
        assert counter(a, "bridge_clients_dropped") == 0
        for client in (stays, sender, again):
            await client.aclose()


HELLO = frame({"op": "hello", "version": 1, "client": "garbage"})

GARBAGE: dict[str, tuple[bytes, str]] = {
    "not-json": (HELLO + raw_frame(b"{not json"), "not JSON"),
    "not-utf8": (HELLO + raw_frame(b'{"op": "\xff"}'), "not UTF-8"),
    "nan": (HELLO + raw_frame(b'{"op": "send", "message": {"topic": 4, "x": NaN}}'), "not JSON"),
    "not-an-object": (HELLO + frame([1, 2, 3]), "not a JSON object"),
    "no-op": (HELLO + frame({"topic": 4}), "no string `op`"),
    "unknown-op": (HELLO + frame({"op": "publish", "topic": 4}), "unknown op"),
    "before-hello": (frame({"op": "subscribe", "topic": 4}), "expected `hello` first"),
    "empty-frame-first": (raw_frame(b""), "not JSON"),
    "hello-version-type": (frame({"op": "hello", "version": "1"}), "`version` must be an integer"),
    "hello-client-type": (frame({"op": "hello", "version": 1, "client": 7}), "`client` must be a string"),
    "second-hello": (HELLO + HELLO, "a second `hello`"),
    "topic-type": (HELLO + frame({"op": "subscribe", "topic": [4]}), "expected an int or a str"),
    "topic-bool": (HELLO + frame({"op": "subscribe", "topic": True}), "expected an int or a str"),
    "topic-too-big": (HELLO + frame({"op": "subscribe", "topic": 2**64}), "64 bits"),
    "message-type": (HELLO + frame({"op": "send", "message": "text"}), "must be a JSON object"),
    "message-no-topic": (HELLO + frame({"op": "send", "message": {"x": 1}}), "message.topic"),
    "server-type": (HELLO + frame({"op": "send_direct", "server": 3, "message": {"topic": 4}}),
                    "`server` must be a non-empty string"),
    "cut-mid-frame": (HELLO + frame({"op": "subscribe", "topic": 4})[:7], "in the middle of a frame"),
}


@pytest.mark.parametrize("case", sorted(GARBAGE))
async def test_garbage_clients_are_dropped_and_the_others_go_on(case: str,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    data, reason = GARBAGE[case]
    caplog.set_level(logging.INFO, logger="swarm.bridge")
    async with sidecars([("a", f"{HOST}:0"), ("b", None)]) as (a, b):
        good = await Client.connect(bridge_of(a), "good")
        await good.hello()
        await good.send({"op": "subscribe", "topic": TOPIC})
        bad = await Client.connect(bridge_of(a), "bad")
        await bad.send_raw(data)
        if case == "cut-mid-frame":
            await bad.stream.send_eof()  # type: ignore[attr-defined]
        frames = await bad.closed_by_sidecar()
        await bad.aclose()
        # It may have been welcomed first; the last thing it is told is why it is dropped.
        assert frames[-1]["op"] == "error" and reason in frames[-1]["text"], frames
        assert frames[-1]["code"] == "dropped"
        await wait_until(lambda: counter(a, "bridge_clients_dropped") == 1, what="the drop counted")
        dropped = [r.getMessage() for r in caplog.records
                   if r.name == "swarm.bridge" and "dropped" in r.getMessage()]
        assert len(dropped) == 1 and reason in dropped[0], dropped
        # The node and the other client go on.
        await wait_subscribed(a, 1, TOPIC)
        b.send({"topic": TOPIC, "after": case})
        assert (await good.expect("message"))["message"] == {"topic": TOPIC, "after": case}
        assert a.status()["bridge"]["topics"] == [TOPIC]
        await good.aclose()


async def test_hello_versions_and_what_json_cannot_carry() -> None:
    async with sidecars([("a", f"{HOST}:0"), ("py", None)]) as (a, py):
        future = await Client.connect(bridge_of(a), "future")
        await future.send({"op": "hello", "version": 2, "client": "from the future"})
        frames = await future.closed_by_sidecar()
        assert [(f["op"], f["code"]) for f in frames] == [("error", "version")]
        assert "version 1" in frames[0]["text"]
        await future.aclose()
        anonymous = await Client.connect(bridge_of(a))
        await anonymous.send({"op": "hello", "version": 1, "extra": "ignored"})  # `client` is optional
        assert (await anonymous.expect("welcome"))["serverName"] == "a"
        await anonymous.send({"op": "subscribe", "topic": TOPIC, "extra": "ignored"})
        await wait_subscribed(a, 1, TOPIC)
        py.send({"topic": TOPIC, "x": float("nan")})  # msgpack carries NaN, JSON does not
        py.send({"topic": TOPIC, b"key": b"value"})  # bytes become base64 text
        error = await anonymous.expect("error")
        assert error["code"] == "unencodable" and "py" in error["text"]
        assert (await anonymous.expect("message"))["message"] == {"topic": TOPIC, "a2V5": "dmFsdWU="}
        await anonymous.aclose()


async def test_a_client_that_never_says_hello_is_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(swarm.bridge, "HELLO_TIMEOUT", 0.2)
    async with sidecars([("a", f"{HOST}:0")]) as (a,):
        silent = await Client.connect(bridge_of(a), "silent")
        frames = await silent.closed_by_sidecar()
        assert frames == [{"op": "error", "code": "dropped", "text": "no `hello` within 0.2s"}]
        assert counter(a, "bridge_clients_dropped") == 1
        await silent.aclose()


async def test_oversized_length_is_refused_before_its_body() -> None:
    async with sidecars([("a", f"{HOST}:0"), ("b", None)], maxMessageSize=4096) as (a, b):
        limit = 4096 + FRAME_OVERHEAD
        good = await Client.connect(bridge_of(a), "good")
        await good.hello()
        await good.send({"op": "subscribe", "topic": TOPIC})
        # A frame of exactly the limit is read (and its message, over maxMessageSize, refused).
        head = b'{"op":"send","message":{"topic":4,"pad":"'
        payload = head + b"x" * (limit - len(head) - 3) + b'"}}'
        assert len(payload) == limit
        await good.send_raw(raw_frame(payload))
        assert (await good.expect("error"))["code"] == "too-large"
        # One byte more: the length alone gets the client dropped; the body is never sent.
        big = await Client.connect(bridge_of(a), "big")
        await big.hello()
        await big.send_raw((limit + 1).to_bytes(4, "big"))
        frames = await big.closed_by_sidecar()
        assert frames and frames[-1]["code"] == "dropped" and str(limit) in frames[-1]["text"]
        huge = await Client.connect(bridge_of(a), "huge")
        await huge.hello()
        await huge.send_raw(b"\xff\xff\xff\xff")
        await huge.closed_by_sidecar()
        await wait_until(lambda: counter(a, "bridge_clients_dropped") == 2, what="two drops")
        await wait_subscribed(a, 1, TOPIC)
        b.send({"topic": TOPIC, "n": 1})
        assert (await good.expect("message"))["message"] == {"topic": TOPIC, "n": 1}
        for client in (good, big, huge):
            await client.aclose()


async def test_a_client_that_stops_reading_is_not_disconnected_and_learns_what_it_lost(tmp_path: Path
                                                                                      ) -> None:
    # bridgeQueueBytes bounds each client's outbound queue (in bytes); a unix socket has small buffers.
    sock = str(tmp_path / "slow.sock")
    async with sidecars([("a", sock), ("b", None)], bridgeQueueBytes=1 << 16) as (a, b):
        slow = await Client.connect(sock, "slow", rcvbuf=4096)
        await slow.hello()
        await slow.send({"op": "subscribe", "topic": TOPIC})
        other = await Client.connect(sock, "other")
        await other.hello()
        await other.send({"op": "subscribe", "topic": "quiet"})
        await wait_topics(a, [TOPIC, "quiet"])
        payload = "x" * 4096
        sent = 0
        with trio.fail_after(WAIT * 2):
            # `slow` reads nothing meanwhile: its queue fills up, then messages are dropped for it
            while counter(a, "bridge_dropped") < 50:
                b.send({"topic": TOPIC, "i": sent, "pad": payload})
                sent += 1
                await b.drain()
                await trio.sleep(0)
            await b.flush()
            await wait_until(lambda: a.status()["bridge"]["clients"][0]["dropped"].get("b", 0)
                             + counter(a, "bridge_delivered") == sent, what="every message queued or dropped")
        # Still attached, and the node and the other client go on.
        assert len(a.status()["bridge"]["clients"]) == 2
        b.send({"topic": "quiet", "n": 1})
        assert (await other.expect("message"))["message"] == {"topic": "quiet", "n": 1}
        # It reads again: what it gets is in order, and the `dropped` op counts exactly what is missing.
        numbers: list[int] = []
        reports: list[dict[str, Any]] = []
        while len(numbers) + sum(r["total"] for r in reports) < sent:
            got = await slow.receive()
            assert got is not None, f"slow: closed after {len(numbers)} messages and {reports}"
            if got["op"] == "dropped":
                reports.append(got)
            else:
                assert got["op"] == "message", got
                numbers.append(got["message"]["i"])
        assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers)
        lost = sent - len(numbers)
        assert len(reports) == 1 and reports[0]["origins"] == {"b": lost} and reports[0]["total"] == lost
        assert lost == counter(a, "bridge_dropped") >= 50
        assert f"{lost} messages dropped" in reports[0]["text"]
        # It is still subscribed: the next message comes.
        b.send({"topic": TOPIC, "i": sent, "pad": ""})
        assert (await slow.expect("message"))["message"]["i"] == sent
        for client in (slow, other):
            await client.aclose()


async def test_ready_op_when_the_node_becomes_ready_after_welcome() -> None:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        port = probe.getsockname()[1]
    node = swarm.ClusterNode(options("late", [(HOST, port)], bridge=f"{HOST}:0", reconnectMaxDelay=0.2))
    async with node:
        client = await Client.connect(bridge_of(node), "early")
        welcome = await client.hello()
        assert welcome["ready"] is False and welcome["serverName"] == "late"
        async with swarm.ClusterNode(options("seed", port=port)):
            assert await client.expect("ready") == {"op": "ready"}
            # A client attaching now is welcomed as ready, with no ready op after.
            late = await Client.connect(bridge_of(node), "later")
            assert (await late.hello())["ready"] is True
            await late.send({"op": "subscribe", "topic": TOPIC})
            await wait_subscribed(node, 1, TOPIC)
            await late.send({"op": "send_direct", "server": "seed", "message": {"topic": TOPIC}})
            await late.send({"op": "send_direct", "server": "nobody", "message": {"topic": TOPIC}})
            assert (await late.expect("error"))["code"] == "unreachable"
            assert (await client.expect("error"))["code"] == "unreachable"  # node errors go to all
            await late.aclose()
        await client.aclose()


async def test_bridge_address_in_use_is_an_error(tmp_path: Path) -> None:
    async with sidecars([("a", f"{HOST}:0")]) as (a,):
        node = swarm.ClusterNode(options("b", bridge=bridge_of(a)))
        with pytest.raises(BaseException) as raised:  # noqa: B017 - a group from the node's nursery
            async with node:
                pass
        assert "bridge: cannot listen on" in repr(raised.value)
    # A socket file left by a process that is gone is replaced; a regular file is not.
    stale = tmp_path / "stale.sock"
    with socket.socket(socket.AF_UNIX) as old:
        old.bind(str(stale))
    async with sidecars([("c", str(stale))]) as (c,):
        client = await Client.connect(str(stale))
        await client.hello()
        await client.aclose()
    assert not stale.exists()  # removed when the node stopped
    regular = tmp_path / "regular"
    regular.write_text("keep me")
    with pytest.raises(BaseException) as raised:  # noqa: B017
        async with swarm.ClusterNode(options("d", bridge=str(regular))):
            pass
    assert "not a socket" in repr(raised.value)
    assert regular.read_text() == "keep me"


# ------------------------------------------------------------------------------------- processes


@pytest.mark.multiprocess
async def test_node_processes_with_bridges(launch: Launch, tmp_path: Path) -> None:  # noqa: F811
    first_config = tmp_path / "node-0.yml"
    first_config.write_text(config_text("node-0", bridge=f"{HOST}:0"))
    first = await launch("node-0", "node", "--config", str(first_config))
    name, address = (await first.expect("listening")).split()
    bridge_0 = await first.expect("bridge")
    assert bridge_0.startswith(f"{HOST}:") and not bridge_0.endswith(":0")
    assert await first.expect("ready") == "node-0"
    second_config = tmp_path / "node-1.yml"
    second_config.write_text(config_text("node-1", seeds=[address], bridge="node-1.sock"))  # relative
    second = await launch("node-1", "node", "--config", str(second_config))
    await second.expect("listening")
    bridge_1 = await second.expect("bridge")
    assert bridge_1 == str(tmp_path / "node-1.sock")
    assert await second.expect("ready") == "node-1"

    zero = await Client.connect(bridge_0, "zero")
    one = await Client.connect(bridge_1, "one")
    assert (await zero.hello())["serverName"] == "node-0"
    assert (await one.hello())["serverName"] == "node-1"
    await zero.send({"op": "subscribe", "topic": TOPIC})
    await one.send({"op": "subscribe", "topic": TOPIC})
    # subscribe has no answer: repeat a marker until it comes through, then the real messages follow it.
    await wait_marker(zero, one)
    await wait_marker(one, zero)
    for i in range(20):
        await zero.send({"op": "send", "message": {"topic": TOPIC, "i": i}})
        await one.send({"op": "send_direct", "server": "node-0", "message": {"topic": TOPIC, "d": i}})
    at_one = [await one.expect("message") for _ in range(20)]
    at_zero = [await zero.expect("message") for _ in range(20)]
    assert [(m["origin"], m["message"]["i"]) for m in at_one] == [("node-0", i) for i in range(20)]
    assert [(m["origin"], m["message"]["d"]) for m in at_zero] == [("node-1", i) for i in range(20)]
    # Garbage on one connection: dropped, logged, the other clients go on.
    bad = await Client.connect(bridge_1, "bad")
    await bad.send_raw(frame({"op": "send"}))
    await bad.closed_by_sidecar()
    await bad.aclose()
    await zero.send({"op": "send", "message": {"topic": TOPIC, "after": "garbage"}})
    assert (await one.expect("message"))["message"] == {"topic": TOPIC, "after": "garbage"}
    await zero.aclose()
    await one.aclose()
    for proc in (first, second):
        proc.process.send_signal(signal.SIGINT)  # leave cleanly
        assert await proc.wait() == 0
    assert "expected `hello` first" in second.stderr()
    assert not (tmp_path / "node-1.sock").exists()


@pytest.mark.multiprocess
async def test_node_process_bridge_errors(tmp_path: Path) -> None:
    exposed = await run_swarm("node", "--option", "port=0", "--option", "bridge=0.0.0.0:7101")
    assert exposed.returncode == 2
    assert exposed.stderr.decode().startswith("swarm: error: bridge: the bridge listens on loopback only")
    regular = tmp_path / "not-a-socket"
    regular.write_text("")
    blocked = await run_swarm("node", "--option", "port=0", "--option", f"bridge={regular}")
    assert blocked.returncode == 1
    assert blocked.stderr.decode().startswith("swarm: error: bridge: cannot listen on"), blocked.stderr


async def wait_marker(sender: Client, receiver: Client) -> None:
    """Send markers until one arrives (the receiver's subscribe has been read by then), then a last one
    and read up to it: the markers still on their way are out of the way (per-origin order)."""
    with trio.fail_after(WAIT):
        while True:
            await sender.send({"op": "send", "message": {"topic": TOPIC, "marker": True}})
            with trio.move_on_after(0.2):
                got = await receiver.expect("message")
                assert got["message"] == {"topic": TOPIC, "marker": True}
                break
        await sender.send({"op": "send", "message": {"topic": TOPIC, "marker": "last"}})
        while (await receiver.expect("message"))["message"]["marker"] != "last":
            pass


@pytest.mark.multiprocess
async def test_clients_are_told_when_a_peer_leaves_or_is_lost(launch: Launch, tmp_path: Path,  # noqa: F811
                                                              caplog: pytest.LogCaptureFixture) -> None:
    # `b` leaves gracefully (LEAVE); `c`, another process, is killed: its link fails.
    sock = str(tmp_path / "a.sock")
    async with sidecars([("a", sock)]) as (a,):
        async with swarm.ClusterNode(options("b", [a.address])) as b:
            config = tmp_path / "c.yml"
            config.write_text(config_text("c", seeds=["{}:{}".format(*a.address)]))
            c = await launch("c", "node", "--config", str(config))
            await c.expect("ready")
            await wait_until(lambda: sorted(a.status()["links"]) == ["b", "c"], what="a linked to b and c")
            client = await Client.connect(sock, "watcher")
            await client.hello()
            assert a.bridge is not None
            await wait_until(lambda: a.bridge.watched == {"b", "c"}, what="the bridge watching b and c")
            with caplog.at_level(logging.INFO, logger="swarm.bridge"):
                c.process.kill()
                got = await client.expect("peer")
                assert (got["server"], got["event"]) == ("c", "lost") and "is lost" in got["text"]
                await b.close()
                got = await client.expect("peer")
                assert (got["server"], got["event"]) == ("b", "left") and "left the cluster" in got["text"]
            assert "a: peer c is lost" in caplog.text and "a: peer b left the cluster" in caplog.text
            await c.wait()
            await client.aclose()
