"""FrameReader (swarm.protocol.framing): cutting a byte stream into frame bodies, with a size limit.

Regression 3 of the old full-mesh connector: frames split across TCP reads were corrupted.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import swarm
from swarm.protocol import wire
from swarm.protocol.framing import FrameReader

LIMIT = 4096


def frame(body: bytes) -> bytes:
    return wire.LENGTH.pack(len(body)) + body


def sample_bodies() -> list[bytes]:
    data = wire.encode_data(wire.encode_origin("a"), 1, 1, wire.encode_topic("t"), wire.encode_message("hi"),
                            1000)[4:]
    ping = wire.encode_control(wire.KIND_PING, {})[4:]
    return [data, ping, b"\x01", bytes(range(256)) * 3, data]


def test_frames_split_at_every_byte_boundary() -> None:
    bodies = sample_bodies()
    stream = b"".join(frame(b) for b in bodies)
    for cut in range(len(stream) + 1):
        reader = FrameReader(LIMIT)
        got = reader.feed(stream[:cut]) + reader.feed(stream[cut:])
        assert got == bodies, f"split at {cut}"
        assert reader.pending == 0


def test_frames_split_at_every_pair_of_boundaries() -> None:
    bodies = [b"\x10abc", b"\x12", b"\x01" + bytes(range(20))]
    stream = b"".join(frame(b) for b in bodies)
    for i in range(len(stream) + 1):
        for j in range(i, len(stream) + 1):
            reader = FrameReader(LIMIT)
            got = reader.feed(stream[:i]) + reader.feed(stream[i:j]) + reader.feed(stream[j:])
            assert got == bodies, (i, j)


def test_byte_at_a_time() -> None:
    bodies = sample_bodies()
    stream = b"".join(frame(b) for b in bodies)
    ends = []
    offset = 0
    for b in bodies:
        offset += 4 + len(b)
        ends.append(offset)
    reader = FrameReader(LIMIT)
    got: list[bytes] = []
    for i in range(len(stream)):
        got += reader.feed(stream[i:i + 1])
        complete = sum(1 for e in ends if e <= i + 1)
        assert got == bodies[:complete]
        assert reader.pending == i + 1 - (ends[complete - 1] if complete else 0)
    assert got == bodies
    assert reader.pending == 0


def test_partial_frame_is_held_not_returned() -> None:
    reader = FrameReader(LIMIT)
    whole = frame(b"\x01hello")
    assert reader.feed(whole[:-1]) == []
    assert reader.pending == len(whole) - 1
    assert reader.feed(whole[-1:]) == [b"\x01hello"]
    assert reader.pending == 0


def test_many_frames_in_one_read() -> None:
    rng = random.Random(3)
    bodies = [bytes([rng.randrange(1, 256)]) + rng.randbytes(rng.randrange(0, 60)) for _ in range(2000)]
    tail = frame(b"\x01next")
    reader = FrameReader(LIMIT)
    assert reader.feed(b"".join(frame(b) for b in bodies) + tail[:5]) == bodies
    assert reader.pending == 5
    assert reader.feed(tail[5:]) == [b"\x01next"]


@settings(max_examples=200, deadline=None, derandomize=True)
@given(bodies=st.lists(st.binary(min_size=1, max_size=300), max_size=30),
       cuts=st.lists(st.integers(min_value=0), max_size=30))
def test_any_chunking_yields_original_bodies(bodies: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(frame(b) for b in bodies)
    points = sorted({c % (len(stream) + 1) for c in cuts} | {0, len(stream)})
    reader = FrameReader(LIMIT)
    got: list[bytes] = []
    for start, end in zip(points, points[1:], strict=False):
        got += reader.feed(stream[start:end])
    assert got == bodies
    assert reader.pending == 0


def test_oversized_length_prefix_refused_as_soon_as_its_four_bytes_arrive() -> None:
    reader = FrameReader(LIMIT)
    prefix = wire.LENGTH.pack(LIMIT + 1)
    for i in range(3):
        assert reader.feed(prefix[i:i + 1]) == []
    with pytest.raises(swarm.ProtocolError):
        reader.feed(prefix[3:])  # not a byte of the body has arrived: no waiting for 4 KiB


def test_hostile_4gib_prefix_refused_without_body() -> None:
    reader = FrameReader(1 << 20)
    with pytest.raises(swarm.ProtocolError):
        reader.feed(b"\xff\xff\xff\xff")


def test_oversized_prefix_after_valid_frames_in_same_read() -> None:
    reader = FrameReader(LIMIT)
    with pytest.raises(swarm.ProtocolError):
        reader.feed(frame(b"\x01ok") + wire.LENGTH.pack(LIMIT + 1) + b"\x01")


def test_frame_of_exactly_the_limit_is_accepted() -> None:
    reader = FrameReader(LIMIT)
    body = b"\x01" + bytes(LIMIT - 1)
    whole = frame(body)
    assert reader.feed(whole[:100]) == []
    assert reader.feed(whole[100:]) == [body]


def test_zero_length_frame_refused() -> None:
    with pytest.raises(swarm.ProtocolError):
        FrameReader(LIMIT).feed(b"\x00\x00\x00\x00")
    reader = FrameReader(LIMIT)
    assert reader.feed(frame(b"\x12")) == [b"\x12"]
    with pytest.raises(swarm.ProtocolError):
        reader.feed(b"\x00\x00\x00\x00\x12")


def test_a_huge_frame_over_many_reads_is_joined_once_and_is_bytes() -> None:
    body = b"\x01" + bytes(range(256)) * 8192  # 2 MiB, over 33 reads of 64 KiB
    stream = frame(body) + frame(b"\x12")
    reader = FrameReader(len(body))
    got: list[bytes] = []
    for start in range(0, len(stream), 65536):
        got += reader.feed(stream[start:start + 65536])
        if not got:
            assert reader.pending == min(start + 65536, len(stream))
    assert got == [body, b"\x12"] and all(type(f) is bytes for f in got)
    assert reader.pending == 0


def test_a_read_that_is_one_whole_frame_is_returned_without_a_copy() -> None:
    whole = frame(b"\x01" + bytes(20000))
    reader = FrameReader(1 << 20, whole=True)
    assert reader.feed(whole)[0] is whole
    assert reader.feed(whole[:7]) == [] and reader.feed(whole[7:]) == [whole]


def test_a_reused_receive_buffer_does_not_corrupt_the_unfinished_frame() -> None:
    # The reader keeps views of what it was fed until the frame is whole: only of immutable bytes.
    body = b"\x01" + bytes(range(100))
    stream = frame(body)
    buffer = bytearray(stream[:50])
    reader = FrameReader(LIMIT)
    assert reader.feed(buffer) == []
    buffer[:] = b"\xee" * 50  # the driver reads the next bytes into the same buffer
    assert reader.feed(memoryview(stream)[50:]) == [body]


def test_a_length_prefix_split_across_reads_then_frames_in_the_read_that_ends_it() -> None:
    bodies = [b"\x01" + bytes([i]) * (300 * i) for i in range(1, 8)]
    stream = b"".join(frame(b) for b in bodies)
    third = 4 + len(bodies[0]) + 4 + len(bodies[1])
    reader = FrameReader(LIMIT)
    assert reader.feed(stream[:third + 2]) == bodies[:2]  # and 2 bytes of the third's prefix
    assert reader.feed(stream[third + 2:third + 3]) == [] and reader.pending == 3
    assert reader.feed(stream[third + 3:third + 500]) == [] and reader.pending == 500
    assert reader.feed(stream[third + 500:]) == bodies[2:] and reader.pending == 0
