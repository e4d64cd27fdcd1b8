"""Bad input over real sockets: each case closes only the offending connection, with a reason and an
`error` event, while an honest peer's messages keep arriving."""

from __future__ import annotations

import msgpack
import pytest
import trio

import swarm
from swarm.protocol import wire

pytestmark = pytest.mark.trio


def hello(name: str, *, cluster: str = "swarm", version: int = wire.PROTOCOL_VERSION) -> bytes:
    return wire.encode_control(wire.KIND_HELLO, {
        "version": version, "cluster": cluster, "name": name, "epoch": 1,
        "address": ["127.0.0.1", 9], "nonce": 7})


async def read_until_closed(stream: trio.SocketStream, timeout: float = 5.0) -> bytes:
    """Everything the node sends until it closes the connection."""
    received = bytearray()
    with trio.fail_after(timeout):
        while True:
            try:
                chunk = await stream.receive_some(65536)
            except trio.BrokenResourceError:
                break
            if not chunk:
                break
            received += chunk
    return bytes(received)


def frames_of(data: bytes) -> list[tuple[int, dict]]:
    """(kind, fields) of each control frame in `data`."""
    out = []
    offset = 0
    while offset + 4 <= len(data):
        (length,) = wire.LENGTH.unpack_from(data, offset)
        body = data[offset + 4: offset + 4 + length]
        offset += 4 + length
        if body and body[0] != wire.KIND_DATA:
            out.append((body[0], msgpack.unpackb(body[1:], raw=False)))
    return out


class Pair:
    """A node under attack (`target`) and an honest peer publishing to it."""

    def __init__(self, target: swarm.Connector, honest: swarm.Connector) -> None:
        self.target = target
        self.honest = honest
        self.errors: list[swarm.NodeError] = []
        self.received: list[int] = []
        target.on("error", self.errors.append)
        target.subscribe("t", lambda message: self.received.append(message))
        self.sent = 0

    async def check_honest_traffic(self) -> None:
        """A message published by the honest peer now still reaches the target."""
        self.honest.publish("t", self.sent)
        self.sent += 1
        with trio.fail_after(5):
            while len(self.received) < self.sent:
                await trio.sleep(0.01)
        assert self.received == list(range(self.sent))


@pytest.fixture
async def pair():
    options = {"port": 0, "handshakeTimeout": 0.5}
    async with swarm.Connector({"serverName": "target", **options}) as target:
        seed = "{}:{}".format(*target.address)
        async with swarm.Connector({"serverName": "honest", "seedNodes": [seed], **options}) as honest:
            with trio.fail_after(5):
                await honest.wait_ready()
                while "honest" not in target.status()["links"]:
                    await trio.sleep(0.01)
            yield Pair(target, honest)


async def connect(pair: Pair) -> trio.SocketStream:
    return await trio.open_tcp_stream(*pair.target.address)


async def test_oversized_length_prefix_is_refused_before_buffering(pair: Pair) -> None:
    stream = await connect(pair)
    await stream.send_all(hello("attacker") + wire.LENGTH.pack(0xFFFFFFF0) + b"x" * 10)
    await read_until_closed(stream)
    assert any(e.code == "protocol" and "over the limit" in str(e) for e in pair.errors)
    assert pair.target.status()["counters"]["protocol_errors"] >= 1
    await pair.check_honest_traffic()


async def test_garbage_before_handshake_closes_only_that_connection(pair: Pair) -> None:
    stream = await connect(pair)
    await stream.send_all(wire.LENGTH.pack(5) + b"\x99\x01\x02\x03\x04")
    await read_until_closed(stream)
    assert any(e.code == "protocol" and "unknown frame kind 153" in str(e) for e in pair.errors)
    await pair.check_honest_traffic()


async def test_data_before_hello_is_a_protocol_error(pair: Pair) -> None:
    stream = await connect(pair)
    frame = wire.encode_data(wire.encode_origin("x"), 1, 1, wire.encode_topic("t"), b"\xc0", 1024)
    await stream.send_all(frame)
    await read_until_closed(stream)
    assert any("before the handshake" in str(e) for e in pair.errors)
    assert pair.received == []
    await pair.check_honest_traffic()


async def test_truncated_data_header_after_handshake(pair: Pair) -> None:
    stream = await connect(pair)
    await stream.send_all(hello("attacker") + wire.LENGTH.pack(3) + bytes((wire.KIND_DATA, 0, 40)))
    await read_until_closed(stream)
    assert any("cut short" in str(e) for e in pair.errors)
    await pair.check_honest_traffic()


async def test_malformed_control_frames(pair: Pair) -> None:
    cases = [
        bytes((wire.KIND_HELLO,)) + b"\xc1",  # 0xc1 is never valid msgpack
        bytes((wire.KIND_HELLO,)) + msgpack.packb([1, 2, 3]),  # not a map
        bytes((wire.KIND_HELLO,)) + msgpack.packb({"version": wire.PROTOCOL_VERSION, "cluster": "swarm",
                                                   "name": 5}),
        bytes((wire.KIND_HELLO,)) + b"\x91" * 5000 + b"\xc0",  # deeply nested arrays
    ]
    for body in cases:
        stream = await connect(pair)
        await stream.send_all(wire.LENGTH.pack(len(body)) + body)
        await read_until_closed(stream)
    assert pair.target.status()["counters"]["protocol_errors"] >= len(cases)
    await pair.check_honest_traffic()


@pytest.mark.parametrize("field,value,reason", [
    ("version", 99, "protocol version 99 is not supported"),
    ("cluster", "other", "cluster name 'other' differs"),
])
async def test_refused_with_a_reason(pair: Pair, field: str, value: object, reason: str) -> None:
    stream = await connect(pair)
    kwargs = {field: value}
    await stream.send_all(hello("stranger", **kwargs))
    data = await read_until_closed(stream)
    refusals = [fields for kind, fields in frames_of(data) if kind == wire.KIND_REFUSE]
    assert refusals and reason in refusals[0]["reason"]
    assert any(e.code == "refused" and reason in str(e) for e in pair.errors)
    assert "stranger" not in pair.target.status()["links"]
    await pair.check_honest_traffic()


async def test_silent_connection_dropped_after_handshake_timeout(pair: Pair) -> None:
    stream = await connect(pair)
    await read_until_closed(stream, timeout=5)  # the node sends its hello, then gives up on us
    assert pair.target.status()["counters"]["handshake_timeouts"] >= 1
    await pair.check_honest_traffic()


async def test_trickling_peer_dropped_after_handshake_timeout(pair: Pair) -> None:
    stream = await connect(pair)
    frame = hello("slowpoke")
    with trio.move_on_after(5):
        for byte in frame[:-1]:  # never completes its hello
            try:
                await stream.send_all(bytes((byte,)))
            except trio.BrokenResourceError:
                break
            await trio.sleep(0.05)
    await read_until_closed(stream)
    assert pair.target.status()["counters"]["handshake_timeouts"] >= 1
    await pair.check_honest_traffic()
