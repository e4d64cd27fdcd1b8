"""The wire format (swarm.protocol.wire): DATA and control frames, header parsing, relaying, limits."""

from __future__ import annotations

import random

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import swarm
from swarm.protocol import wire
from swarm.protocol.state import CoreConfig, NodeState

MAX = 1 << 20
DEFAULT = object()

messages = st.recursive(
    st.none() | st.booleans() | st.integers(-(1 << 63), (1 << 64) - 1) | st.floats(allow_nan=False)
    | st.text(max_size=20) | st.binary(max_size=20),
    lambda children: (st.lists(children, max_size=4)
                      | st.dictionaries(st.text(max_size=5), children, max_size=4)),
    max_leaves=10,
)
topics = st.text(max_size=40) | st.integers(-(1 << 63), (1 << 63) - 1)
names = st.text(min_size=1, max_size=40).filter(lambda s: 0 < len(s.encode()) <= 255)


def data_frame(origin: str = "node-a", epoch: int = 7, seq: int = 3, topic: str | int = "news",
               message: object = DEFAULT, max_size: int = MAX) -> bytes:
    return wire.encode_data(wire.encode_origin(origin), epoch, seq, wire.encode_topic(topic),
                            wire.encode_message({"x": 1} if message is DEFAULT else message), max_size)


def decode_data(frame: bytes) -> tuple[wire.DataHeader, str | int, object]:
    (length,) = wire.LENGTH.unpack_from(frame)
    assert length == len(frame) - 4
    body = frame[4:]
    assert body[0] == wire.KIND_DATA
    header = wire.parse_data_header(body)
    ((topic, start, end),) = wire.parse_entries(body, header.topic_offset)
    assert end == len(body) - 1 and body[-1] == 0  # then the trailer of an unsigned frame
    return header, topic, wire.decode_message(body[start:end])


# ---------------------------------------------------------------------- round trips


@settings(max_examples=200, deadline=None, derandomize=True)
@given(origin=names, epoch=st.integers(0, (1 << 64) - 1), seq=st.integers(0, (1 << 64) - 1), topic=topics,
       message=messages)
def test_data_frame_round_trip(origin: str, epoch: int, seq: int, topic: str | int, message: object) -> None:
    frame = data_frame(origin, epoch, seq, topic, message)
    header, got_topic, got_message = decode_data(frame)
    assert header.hops == 0
    assert header.origin == origin.encode("utf-8")
    assert (header.epoch, header.seq) == (epoch, seq)
    assert got_topic == topic and type(got_topic) is type(topic)
    assert got_message == message


@pytest.mark.parametrize("topic", ["", "news", "ünïcødé/topic", "x" * 1024, 0, 1, -1, 4, (1 << 63) - 1,
                                   -(1 << 63)])
def test_parse_topic_str_and_int(topic: str | int) -> None:
    frame = data_frame(topic=topic, message=[1, "two"])
    body = frame[4:]
    header = wire.parse_data_header(body)
    got, offset = wire.parse_topic(body, header.topic_offset)
    assert got == topic and type(got) is type(topic)
    assert wire.decode_message(body[offset + wire.ENTRY_LEN.size:-1]) == [1, "two"]
    # The topic's encoding is exactly what encode_topic produced, at topic_offset.
    encoded = wire.encode_topic(topic)
    assert body[header.topic_offset:header.topic_offset + len(encoded)] == encoded
    assert offset == header.topic_offset + len(encoded)


@pytest.mark.parametrize("kind", sorted(wire.CONTROL_KINDS))
def test_control_frame_round_trip(kind: int) -> None:
    fields = {"version": 1, "cluster": "swarm", "name": "ä", "address": ["10.0.0.1", 7000], "nonce": 1 << 62,
              "peers": [["b", ["10.0.0.2", 7000], 3]], "bin": b"\x00\xff"}
    frame = wire.encode_control(kind, fields)
    (length,) = wire.LENGTH.unpack_from(frame)
    assert length == len(frame) - 4
    assert frame[4] == kind
    assert wire.decode_control(frame[4:]) == fields


def test_control_empty_map_round_trip() -> None:
    frame = wire.encode_control(wire.KIND_PING, {})
    assert frame[4] == wire.KIND_PING
    assert wire.decode_control(frame[4:]) == {}


# ---------------------------------------------------------------------- malformed input


def test_truncated_data_header_raises_protocol_error() -> None:
    body = data_frame(origin="origin", topic="topic")[4:]
    header = wire.parse_data_header(body)
    # Every cut that leaves no byte of the topic is a cut-short header.
    for cut in range(header.topic_offset + 1):
        with pytest.raises(swarm.ProtocolError):
            wire.parse_data_header(body[:cut])


@pytest.mark.parametrize("topic", ["topic", "ü" * 10, 12345])
def test_truncated_topic_raises_protocol_error(topic: str | int) -> None:
    body = data_frame(topic=topic)[4:]
    header = wire.parse_data_header(body)
    topic_end = header.topic_offset + len(wire.encode_topic(topic))
    for cut in range(header.topic_offset, topic_end):
        with pytest.raises(swarm.ProtocolError):
            wire.parse_topic(body[:cut], header.topic_offset)


def test_zero_length_origin_raises() -> None:
    body = bytearray(data_frame()[4:])
    body[2] = 0
    with pytest.raises(swarm.ProtocolError):
        wire.parse_data_header(bytes(body))


def test_unknown_topic_kind_raises() -> None:
    body = bytearray(data_frame()[4:])
    header = wire.parse_data_header(bytes(body))
    body[header.topic_offset] = 9
    with pytest.raises(swarm.ProtocolError):
        wire.parse_topic(bytes(body), header.topic_offset)


def test_topic_length_over_limit_raises() -> None:
    body = bytearray(data_frame(topic="abc")[4:])
    header = wire.parse_data_header(bytes(body))
    wire.TOPIC_STR_LEN.pack_into(body, header.topic_offset + 1, wire.MAX_TOPIC_BYTES + 1)
    body += b"x" * 2000  # enough bytes follow: it is the length itself that is refused
    with pytest.raises(swarm.ProtocolError):
        wire.parse_topic(bytes(body), header.topic_offset)


def test_topic_invalid_utf8_raises() -> None:
    body = bytearray(data_frame(topic="abc")[4:])
    header = wire.parse_data_header(bytes(body))
    body[header.topic_offset + 3] = 0xFF
    with pytest.raises(swarm.ProtocolError):
        wire.parse_topic(bytes(body), header.topic_offset)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.binary(max_size=80))
def test_garbage_data_body_raises_only_protocol_error(tail: bytes) -> None:
    body = bytes((wire.KIND_DATA,)) + tail
    try:
        header = wire.parse_data_header(body)
        wire.parse_entries(body, header.topic_offset)
    except swarm.ProtocolError:
        pass


# ---------------------------------------------------------------------- batches


@settings(max_examples=100, deadline=None, derandomize=True)
@given(batch=st.lists(st.tuples(topics, messages), min_size=1, max_size=20), seq=st.integers(1, 1 << 40))
def test_batch_round_trip_keeps_every_message_in_order(batch: list[tuple[str | int, object]],
                                                       seq: int) -> None:
    entries = [wire.encode_entry(wire.encode_topic(topic), wire.encode_message(message), MAX)
               for topic, message in batch]
    frame = wire.encode_batch(wire.encode_origin("batcher"), 9, seq, entries)
    assert wire.LENGTH.unpack_from(frame)[0] == len(frame) - 4
    body = frame[4:]
    header = wire.parse_data_header(body)
    assert (header.origin, header.epoch, header.seq) == (b"batcher", 9, seq)
    parsed = wire.parse_entries(body, header.topic_offset)
    assert [(topic, wire.decode_message(body[start:end])) for topic, start, end in parsed] == batch
    assert parsed[-1][2] == len(body) - 1


def test_batch_cut_anywhere_inside_its_entries_raises() -> None:
    entries = [wire.encode_entry(wire.encode_topic(topic), wire.encode_message(message), MAX)
               for topic, message in [("a", 1), (7, "two"), ("ü", [3, 3, 3])]]
    body = wire.encode_batch(wire.encode_origin("o"), 1, 1, entries)[4:]
    header = wire.parse_data_header(body)
    boundaries = {header.topic_offset + sum(map(len, entries[:i])) for i in range(1, len(entries) + 1)}
    for cut in range(header.topic_offset, len(body) - 1):
        if cut in boundaries:  # a whole number of entries is a valid (shorter) batch
            whole = sorted(boundaries).index(cut) + 1
            assert len(wire.parse_entries(body, header.topic_offset, end=cut)) == whole
            continue
        with pytest.raises(swarm.ProtocolError):
            wire.parse_entries(body, header.topic_offset, end=cut)


def test_batch_without_entries_and_overlong_entry_raise() -> None:
    empty = wire.encode_batch(wire.encode_origin("o"), 1, 1, [])[4:]
    with pytest.raises(swarm.ProtocolError, match="without a message"):
        wire.parse_entries(empty, wire.parse_data_header(empty + b"\x00").topic_offset)
    body = bytearray(data_frame(topic="t")[4:])
    offset = wire.parse_data_header(bytes(body)).topic_offset + len(wire.encode_topic("t"))
    wire.ENTRY_LEN.pack_into(body, offset, 1 << 31)  # a length that runs past the frame
    with pytest.raises(swarm.ProtocolError, match="past the frame"):
        wire.parse_entries(bytes(body), offset - len(wire.encode_topic("t")))


@pytest.mark.parametrize("payload", [b"\xc1", b"\x92\x01", msgpack.packb([1, 2]), msgpack.packb("map?"),
                                     b"", msgpack.packb({"a": 1}) + b"\x00"])
def test_malformed_control_body_raises(payload: bytes) -> None:
    with pytest.raises(swarm.ProtocolError):
        wire.decode_control(bytes((wire.KIND_HELLO,)) + payload)


def test_control_body_over_limit_raises() -> None:
    body = bytes((wire.KIND_PEERS,)) + msgpack.packb({"peers": "x" * wire.MAX_CONTROL_BODY})
    with pytest.raises(swarm.ProtocolError):
        wire.decode_control(body)


# ---------------------------------------------------------------------- relaying


@pytest.mark.parametrize("hops", [0, 1, 17, 254])
def test_relay_prefix_rewrites_only_the_hop_count(hops: int) -> None:
    received = bytearray(data_frame(origin="relay-me", message={"payload": list(range(50))}))
    received[5] = hops
    received = bytes(received)
    body = received[4:]
    header = wire.parse_data_header(body)
    forwarded = wire.relay_prefix(len(body), header.hops + 1) + body[2:]
    assert len(forwarded) == len(received)
    assert forwarded[:4] == received[:4]  # same length
    assert forwarded[4] == wire.KIND_DATA
    assert forwarded[5] == hops + 1
    assert forwarded[6:] == received[6:]  # the bytes after the prefix are the received ones
    assert [i for i in range(len(received)) if forwarded[i] != received[i]] == [5]
    again = wire.parse_data_header(forwarded[4:])
    assert (again.origin, again.epoch, again.seq, again.hops) == (header.origin, header.epoch, header.seq,
                                                                    hops + 1)


def test_relay_prefix_saturates_at_max_hops() -> None:
    prefix = wire.relay_prefix(100, wire.MAX_HOPS + 1)
    assert len(prefix) == 6
    assert prefix[5] == wire.MAX_HOPS
    assert wire.LENGTH.unpack_from(prefix)[0] == 100


# ---------------------------------------------------------------------- limits


def test_message_over_max_size_raises_message_too_large() -> None:
    limit = 1000
    fits = b"x" * (limit - 3)  # bin 16 header is 3 bytes: encodes to exactly `limit`
    assert len(wire.encode_message(fits)) == limit
    frame = data_frame(message=fits, max_size=limit)
    assert decode_data(frame)[2] == fits
    with pytest.raises(swarm.MessageTooLarge):
        data_frame(message=fits + b"x", max_size=limit)


def test_publish_over_max_size_raises_and_sends_nothing() -> None:
    state = NodeState(CoreConfig(server_name="a", max_message_size=100), epoch=1,
                      listen_address=("10.0.0.1", 7000), rng=random.Random(1))
    state.start(0.0)
    with pytest.raises(swarm.MessageTooLarge):
        state.publish("t", "x" * 200, 0.0)
    assert state.counters["published"] == 0
    assert state.broadcast.seq == 0
    assert issubclass(swarm.MessageTooLarge, swarm.SwarmError)


def test_topic_limits() -> None:
    assert wire.encode_topic("x" * wire.MAX_TOPIC_BYTES)
    with pytest.raises(ValueError):
        wire.encode_topic("x" * (wire.MAX_TOPIC_BYTES + 1))
    with pytest.raises(ValueError):
        wire.encode_topic("é" * 513)  # 1026 bytes of UTF-8 in 513 characters: bytes are what count
    with pytest.raises(ValueError):
        wire.encode_topic(1 << 63)
    with pytest.raises(ValueError):
        wire.encode_topic(-(1 << 63) - 1)


@pytest.mark.parametrize("topic", [1.5, b"bytes", None, True, False, ("t",), ["t"], {"t": 1}])
def test_non_str_int_topics_rejected(topic: object) -> None:
    with pytest.raises(TypeError):
        wire.encode_topic(topic)  # type: ignore[arg-type]


@pytest.mark.parametrize("topic", [1.5, None, True, "x" * 1025])
def test_publish_with_bad_topic_raises_before_sending(topic: object) -> None:
    state = NodeState(CoreConfig(server_name="a"), epoch=1, listen_address=("10.0.0.1", 7000),
                      rng=random.Random(2))
    state.start(0.0)
    with pytest.raises((TypeError, ValueError)):
        state.publish(topic, "m", 0.0)  # type: ignore[arg-type]
    assert state.broadcast.seq == 0


def test_origin_name_limits() -> None:
    assert wire.encode_origin("a" * 255)[0] == 255
    with pytest.raises(ValueError):
        wire.encode_origin("")
    with pytest.raises(ValueError):
        wire.encode_origin("a" * 256)


def test_max_frame_body_covers_largest_data_frame() -> None:
    limit = 5000
    frame = wire.encode_data(wire.encode_origin("n" * 255), 1, 1, wire.encode_topic("t" * 1024),
                             wire.encode_message(b"x" * (limit - 3)), limit)
    assert len(frame) - 4 <= wire.max_frame_body(limit)
    assert wire.max_frame_body(limit) >= wire.MAX_CONTROL_BODY


# ---------------------------------------------------------------------- signature trailer (version 4)


def test_a_signature_rides_in_the_trailer_and_leaves_the_signed_bytes_alone() -> None:
    frame = data_frame(message="signed")
    signed = wire.with_signature(frame, b"S" * 64)
    assert wire.signature(frame) == b"" and wire.signature(signed) == b"S" * 64
    assert wire.LENGTH.unpack_from(signed)[0] == len(signed) - 4
    assert signed[-1] == 64 and wire.data_entries(signed) == wire.data_entries(frame)
    # What is signed: the kind and everything after the hop count, not the trailer nor the hop count,
    # which every relay rewrites.
    kind, rest = wire.signed_pieces(signed)
    assert kind == bytes((wire.KIND_DATA,)) and bytes(rest) == frame[6:-1]
    relayed = wire.relayed(signed, 9)
    assert [bytes(p) for p in wire.signed_pieces(relayed)] == [kind, bytes(rest)]
    assert wire.signature(relayed) == b"S" * 64


def test_a_direct_frame_carries_a_signature_after_its_message() -> None:
    frame = wire.encode_direct(wire.encode_origin("t"), wire.encode_origin("o"), 3, 1,
                               wire.encode_topic("rpc"), wire.encode_message({"ask": 1}), MAX)
    signed = wire.with_signature(frame, b"\x01" * 70)
    ((topic, start, end),) = wire.payload_entries(signed)
    assert topic == "rpc" and wire.decode_message(signed[start:end]) == {"ask": 1}
    assert wire.payload_epoch(signed) == 3 and wire.payload_origin(signed) == b"o"
    assert bytes(wire.signed_pieces(signed)[1]) == frame[6:-1]  # the target is signed too


@pytest.mark.parametrize("length", [0, 256])
def test_a_signature_of_no_bytes_or_too_many_is_refused(length: int) -> None:
    with pytest.raises(ValueError, match="signature"):
        wire.with_signature(data_frame(), b"x" * length)


def test_a_trailer_that_claims_more_than_the_frame_holds_is_a_protocol_error() -> None:
    frame = bytearray(data_frame())
    frame[-1] = 250  # a signature longer than the whole frame
    with pytest.raises(swarm.ProtocolError, match="signature"):
        wire.data_entries(bytes(frame))
    frame[-1] = 3  # a signature that eats into the message: the entries no longer fit
    with pytest.raises(swarm.ProtocolError):
        wire.data_entries(bytes(frame))
