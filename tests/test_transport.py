"""The trio driver's write path over real sockets: publishes batched into few frames, lone frames written
directly (without waiting for the writer task), and a direct write the kernel cuts short finished intact."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio

import swarm
from swarm.protocol import wire
from swarm.transport.engine import SendQueue

pytestmark = pytest.mark.trio

OPTIONS = {"port": 0, "host": "127.0.0.1"}


@asynccontextmanager
async def linked_pair() -> AsyncIterator[tuple[swarm.Connector, list[object]]]:
    """A sender linked to a receiver subscribed to "t"; yields the sender and what the receiver got."""
    got: list[object] = []
    async with swarm.Connector({"serverName": "sender", **OPTIONS}) as sender:
        seed = "{}:{}".format(*sender.address)
        async with swarm.Connector({"serverName": "receiver", "seedNodes": [seed], **OPTIONS}) as receiver:
            receiver.subscribe("t", got.append)
            with trio.fail_after(10):
                await receiver.wait_ready()
                while "receiver" not in sender.status()["links"]:
                    await trio.sleep(0.01)
            yield sender, got


async def wait_for(got: list[object], count: int) -> None:
    with trio.fail_after(10):
        while len(got) < count:
            await trio.sleep(0.005)


async def test_a_burst_of_publishes_travels_in_a_few_frames_in_order() -> None:
    async with linked_pair() as (sender, got):
        before = sender.status()["counters"].get("batches_published", 0)
        for i in range(2000):  # one turn of the event loop: no await in between
            sender.publish("t", i)
        await sender.flush()
        await wait_for(got, 2000)
        frames = sender.status()["counters"]["batches_published"] - before
    assert got == list(range(2000))
    # The first goes alone (written at once), the rest in batches of up to wire.BATCH_BYTES of entries
    # (2,000 entries of ~11 bytes are about 22 KB: two batches).
    assert 2 <= frames <= 4, frames


async def test_lone_publishes_are_written_without_waiting_for_the_writer() -> None:
    async with linked_pair() as (sender, got):
        before = sender.status()["counters"].get("direct_writes", 0)
        for i in range(20):
            sender.publish("t", i)
            await wait_for(got, i + 1)
        direct = sender.status()["counters"]["direct_writes"] - before
    assert got == list(range(20))
    assert direct >= 10, direct  # keepalives and gossip may take a turn's direct write now and then


def parse_frames(data: bytes) -> tuple[list[bytes], bytes]:
    bodies, offset = [], 0
    while offset + 4 <= len(data):
        (length,) = wire.LENGTH.unpack_from(data, offset)
        if offset + 4 + length > len(data):
            break
        bodies.append(data[offset + 4:offset + 4 + length])
        offset += 4 + length
    return bodies, data[offset:]


async def test_a_direct_write_cut_short_is_finished_by_the_writer_intact() -> None:
    # A message far larger than the kernel's socket buffers (4 MiB at most by Linux's default tcp_wmem)
    # is cut short by its direct write; the writer must send the rest before anything queued after it.
    huge = b"x" * (24 << 20)
    async with swarm.Connector({"serverName": "sender", "maxMessageSize": 32 << 20, **OPTIONS}) as sender:
        stream = await trio.open_tcp_stream(*sender.address)
        await stream.send_all(wire.encode_control(wire.KIND_HELLO, {
            "version": wire.PROTOCOL_VERSION, "cluster": "swarm", "name": "raw", "epoch": 1,
            "address": ["127.0.0.1", 9], "nonce": 7}))
        with trio.fail_after(5):
            while "raw" not in sender.status()["links"]:
                await trio.sleep(0.01)
        await trio.sleep(0.05)  # the writer has sent the handshake frames and waits again
        sender.publish("t", [0, huge])
        cut = sender.status()["counters"].get("direct_writes_cut_short", 0)
        for i in range(1, 6):  # and a few more behind it
            sender.publish("t", [i, b"small"])
            await trio.sleep(0)
        # Read it all: every frame whole, its messages numbered 1, 2, 3... in order.
        buffer, seqs, messages = b"", [], []
        with trio.fail_after(30):
            while len(messages) < 6:
                buffer += await stream.receive_some(1 << 20)
                bodies, buffer = parse_frames(buffer)
                for body in bodies:
                    if body[0] != wire.KIND_DATA:
                        continue
                    header = wire.parse_data_header(body)
                    seqs.append((header.seq, header.count))
                    for _, start, end in wire.parse_entries(body, header.topic_offset):
                        messages.append(wire.decode_message(body[start:end]))
        await stream.aclose()
    assert cut == 1
    # Messages numbered 1, 2, 3... across the frames: each frame starts where the one before it ended.
    assert seqs[0][0] == 1
    assert all(seq + count == after for (seq, count), (after, _) in zip(seqs, seqs[1:], strict=False))
    assert sum(count for _, count in seqs) == 6
    assert [m[0] for m in messages] == list(range(6))
    assert messages[0][1] == huge


async def test_a_retired_link_keeps_the_rest_of_a_cut_frame_and_hands_on_whole_frames() -> None:
    queue = SendQueue(16)
    whole = wire.encode_data(wire.encode_origin("o"), 1, 2, wire.encode_topic("t"), b"\x01", 1 << 20)
    control = wire.encode_control(wire.KIND_PING, {})
    queue.put_rest(b"\x01rest of frame 1")  # its beginning is on the wire already
    queue.put(whole)
    queue.put(control)
    assert queue.messages() == 1  # the rest has no header: its messages went with its beginning
    cut = SendQueue(16)
    cut.put_rest(b"\x07")  # shorter than any header (a close then counted its messages by reading one)
    cut.put(whole)
    assert cut.messages() == 1
    bye = wire.encode_control(wire.KIND_BYE, {})
    moved = queue.finish(bye, keep_data=False)
    assert moved == [whole]  # a whole DATA frame may go on the connection that replaces this one
    assert list(queue.frames) == [b"\x01rest of frame 1", control, bye]


async def test_a_full_queue_still_takes_control_frames_up_to_a_bounded_reserve() -> None:
    # A PULL or PULLED dropped behind the payload that filled a queue would make its gap look
    # unrecoverable; a peer that asks and never reads must still not grow the queue without bound.
    from swarm.transport.engine import CONTROL_RESERVE_FRAMES

    queue = SendQueue(4, byte_limit=1 << 20)
    data = wire.encode_data(wire.encode_origin("o"), 1, 2, wire.encode_topic("t"), b"\x01", 1)
    pull = wire.encode_control(wire.KIND_PULL, {"key": b"k", "first": 1, "last": 2})
    assert all(queue.put(data) for _ in range(4))
    assert not queue.put(data)  # payload: full
    taken = sum(queue.put(pull) for _ in range(CONTROL_RESERVE_FRAMES + 10))
    assert taken == CONTROL_RESERVE_FRAMES
    assert not queue.put(data)
    assert len(queue.frames) == 4 + CONTROL_RESERVE_FRAMES
    queue.closed = True
    assert not queue.put(pull)


async def test_a_write_takes_large_frames_uncopied_and_joins_the_small_ones_between_them() -> None:
    from collections import deque

    from swarm.transport.framing import MAX_WRITE_BYTES, WRITEV_FROM, take_frames

    small, large = b"\x01" * 100, b"\x02" * WRITEV_FROM
    queued = deque([small, small, large, small, large, large])
    buffers, size = take_frames(queued)
    assert buffers == [small * 2, large, small, large, large] and size == 3 * 100 + 3 * WRITEV_FROM
    assert buffers[1] is large and buffers[2] is small  # no copy of a large frame, or of a lone small one
    assert take_frames(deque([small, large]), vectored=False)[0] == [small + large]  # TLS: one buffer
    many = deque([large] * (2 * MAX_WRITE_BYTES // WRITEV_FROM))
    buffers, size = take_frames(many)
    assert size == MAX_WRITE_BYTES and len(many) == len(buffers)  # one write holds about MAX_WRITE_BYTES


async def test_a_partial_vectored_write_resumes_inside_the_buffer_it_cut() -> None:
    from swarm.transport.framing import advance

    buffers = [b"abc", b"defg", b"hi"]
    assert advance(buffers, 0) == buffers
    rest = advance(buffers, 5)
    assert [bytes(b) for b in rest] == [b"fg", b"hi"] and rest[1] is buffers[2]
    assert advance(buffers, 7) == [b"hi"] and advance(buffers, 9) == []


async def test_a_vectored_write_larger_than_the_socket_buffer_arrives_whole_and_in_order() -> None:
    from swarm.transport.engine import _send_vectored

    a, b = trio.socket.socketpair()
    a.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_SNDBUF, 1 << 16)  # many partial writes
    buffers = [bytes([i]) * (5000 + 7919 * i) for i in range(60)]  # ~14 MiB, cut at odd places
    expected = b"".join(buffers)
    got = bytearray()
    with a, b, trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            async def read() -> None:
                while len(got) < len(expected):
                    got.extend(await b.recv(1 << 16))
            nursery.start_soon(read)
            await _send_vectored(a, list(buffers))
    assert got == expected


async def test_large_messages_queued_behind_each_other_arrive_intact_and_in_order() -> None:
    async with linked_pair() as (sender, got):
        messages = [[i, bytes([i]) * (20000 + i)] for i in range(40)]  # one frame each: not batched
        for message in messages:
            sender.publish("t", message)
        await sender.flush()
        await wait_for(got, len(messages))
    assert got == messages
