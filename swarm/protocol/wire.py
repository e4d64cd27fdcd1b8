"""The wire format: how swarm frames look on a link, and the code that writes and reads them.

Every frame is a 4-byte big-endian length followed by that many bytes of body; the body's first byte is
its kind. Two families (full description in docs/protocol.md):

* **DATA** frames carry application messages. Their header is fixed binary, so that a relay can tell a
  duplicate and forward a message from the header alone, without decoding the payload and without
  re-encoding anything::

      kind=1 u8 | hops u8 | origin_len u8 | origin utf-8 | epoch u64 | seq u64 | count u16 |
      `count` entries: topic_kind u8 | topic (i64, or u16 length + utf-8) |
                       message_len u32 | message (msgpack)
      signature (sig_len bytes) | sig_len u8

  Forwarding rewrites only the 6-byte prefix (length, kind, hops) and reuses the rest of the received
  bytes as they are. A frame carries a *batch*: the messages its origin published in one turn of its
  event loop, in order, so the per-frame work of every relay and receiver (read, duplicate check,
  forward) is paid once per batch, not once per message (Kafka's record batches and NATS's coalesced
  writes are the precedents; the batch is sealed before the writer runs, so batching adds no wait).
  The stream is numbered per *message*, as Kafka numbers records and not batches: `seq` is the number
  of the frame's first message and `count` how many it carries, so the next frame starts at
  `seq + count`, and a receiver that misses frames knows from the header alone how many messages the
  hole held (a loss is counted in messages, whatever the batching).
* **Routed** frames go to one node, hop by hop along the ring (`sendDirect`): DIRECT carries a message
  to `target`, UNDELIVERABLE tells an origin that its DIRECT could not reach its target. Their header
  starts with the target, so a relay routes them without reading further::

      kind=2|3 u8 | hops u8 | target_len u8 | target utf-8 | ...
      DIRECT:        origin_len u8 | origin | epoch u64 | seq u64 | target_epoch u64 | topic |
                     message (msgpack) | signature | sig_len u8
      UNDELIVERABLE: msgpack map {"target": str, "reason": str}

  DATA and DIRECT frames end with their origin's **signature** and its length in the last byte (0, and no
  signature, in a cluster without `tls`). It covers the kind byte and everything after the hop count up
  to the signature, so a relay still rewrites the hop count alone and forwards the signed bytes as they
  came (`signed_pieces`; docs/protocol.md, "Signed origins").

* **Control** frames (hello, peers, ping, leave, refuse, bye, status) are rare; their body after the
  kind byte is one msgpack map, decoded in full.

Nothing here does I/O: these are pure functions over bytes. This is the only module that knows where a
field sits in a frame: the protocol core (which takes and sends whole frames, length prefix included), the
transport and the simulator read frames through the accessors at the end of this file. The `parse_*` and
`decode_*` functions further up read frame *bodies* (kind byte first), as inspection tools and tests see
them.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

import msgpack

from ..errors import MessageTooLarge, ProtocolError

# 4: DATA and DIRECT frames end with a signature trailer; LEAVE and peer entries may carry a signature;
#    CERTS; DIRECT says which process of its target its numbering is for (`target_epoch`).
# 3: DATA numbers messages (seq is the first's number, count their number); PULL and PULLED.
# 2: a DATA frame carries a batch of length-prefixed entries (1 carried one message, unprefixed).
PROTOCOL_VERSION = 4

LENGTH = struct.Struct(">I")
# length, kind, hops: the part of a DATA frame a relay rewrites.
DATA_PREFIX = struct.Struct(">IBB")
EPOCH_SEQ = struct.Struct(">QQ")
COUNT = struct.Struct(">H")  # a DATA frame's number of messages
TARGET_EPOCH = struct.Struct(">Q")  # a DIRECT frame's: the target's epoch its numbering is for (0: unknown)
MAX_BATCH_MESSAGES = (1 << 16) - 1
TOPIC_INT = struct.Struct(">q")
TOPIC_STR_LEN = struct.Struct(">H")
ENTRY_LEN = struct.Struct(">I")  # a DATA entry's message length

KIND_DATA = 1
KIND_DIRECT = 2
KIND_UNDELIVERABLE = 3
ROUTED_KINDS = frozenset({KIND_DIRECT, KIND_UNDELIVERABLE})
KIND_HELLO = 16
KIND_PEERS = 17
KIND_PING = 18
KIND_LEAVE = 20
KIND_REFUSE = 21
KIND_BYE = 22
KIND_STATUS_REQUEST = 23  # allowed instead of HELLO: an operator's tool asking for the node's status
KIND_STATUS = 24
# Tree broadcast (Plumtree, `broadcast: tree`): ids announced on lazy links, asked for, and pruning.
KIND_IHAVE = 25
KIND_GRAFT = 26
KIND_PRUNE = 27
# Gap recovery (both broadcast modes): a range of a stream asked of a peer's frame cache, and the
# answer's end, saying how far it looked and what it did not have (docs/protocol.md).
KIND_PULL = 28
KIND_PULLED = 29
# Signed origins (`tls`): the certificate chains a node holds, or the names it lacks a certificate of.
KIND_CERTS = 30
CONTROL_KINDS = frozenset({KIND_HELLO, KIND_PEERS, KIND_PING, KIND_LEAVE, KIND_REFUSE, KIND_BYE,
                           KIND_STATUS_REQUEST, KIND_STATUS, KIND_IHAVE, KIND_GRAFT, KIND_PRUNE,
                           KIND_PULL, KIND_PULLED, KIND_CERTS})
MAX_NAME_BYTES = 255  # a server name must fit the one-byte origin length
MAX_TOPIC_BYTES = 1024  # topics are few and coarse; a long one is a bug or an attack
TOPIC_KIND_INT = 0
TOPIC_KIND_STR = 1
# Largest DATA header with one entry's framing: kind, hops, origin length, origin, epoch, seq, count,
# topic kind, topic length, topic, message length.
MAX_DATA_HEADER = (3 + MAX_NAME_BYTES + EPOCH_SEQ.size + COUNT.size + 1 + TOPIC_STR_LEN.size
                   + MAX_TOPIC_BYTES + ENTRY_LEN.size)
# A batch is sealed once its entries reach this many bytes (a single larger message goes alone). 16 KiB
# amortises the per-frame work over ~100 small messages, and stays far below MAX_CONTROL_BODY, the
# smallest frame every reader accepts, whatever its maxMessageSize.
BATCH_BYTES = 16 * 1024
# With signed origins every frame costs a signature at its origin (~25 us, P-256) and a check (~65 us) at
# relays: batches grow to this (4 times as many messages per signature, still a quarter of
# MAX_CONTROL_BODY). At 1 KiB a 16 KiB batch held 15 messages, and signing halved a publisher's rate.
SIGNED_BATCH_BYTES = 64 * 1024
# Control frames are small (a hello, a list of peers); a body over this is refused.
MAX_CONTROL_BODY = 256 * 1024
MAX_HOPS = 255
MAX_SIGNATURE = 255  # its length is one byte; ECDSA P-256's raw r||s and Ed25519's are 64
UNSIGNED = b"\x00"  # the trailer of a frame without a signature


def max_frame_body(max_message_size: int) -> int:
    """The largest body a reader accepts before allocating a buffer for it (a DIRECT header is the
    longest: a DATA header plus the target's name and epoch), signature trailer included."""
    direct_header = MAX_DATA_HEADER + 1 + MAX_NAME_BYTES + TARGET_EPOCH.size
    return max(max_message_size + direct_header + 1 + MAX_SIGNATURE, MAX_CONTROL_BODY)


_packb = msgpack.Packer(use_bin_type=True).pack


def encode_message(message: Any) -> bytes:
    """msgpack-encode an application message; raise TypeError for what msgpack cannot carry."""
    return _packb(message)


def decode_message(data: bytes | memoryview) -> Any:
    # strict_map_key=False: messages may use int map keys, which msgpack carries.
    return msgpack.unpackb(data, raw=False, strict_map_key=False)


def encode_topic(topic: str | int) -> bytes:
    if isinstance(topic, bool) or not isinstance(topic, (str, int)):
        raise TypeError(f"topic must be a str or an int, got {type(topic).__name__}")
    if isinstance(topic, int):
        if not -(1 << 63) <= topic < (1 << 63):
            raise ValueError("an int topic must fit in 64 bits")
        return bytes((TOPIC_KIND_INT,)) + TOPIC_INT.pack(topic)
    raw = topic.encode("utf-8")
    if len(raw) > MAX_TOPIC_BYTES:
        raise ValueError(f"topic is {len(raw)} bytes encoded; at most {MAX_TOPIC_BYTES} are allowed")
    return bytes((TOPIC_KIND_STR,)) + TOPIC_STR_LEN.pack(len(raw)) + raw


def encode_origin(name: str) -> bytes:
    """The `origin_len origin` part of a DATA header."""
    raw = name.encode("utf-8")
    if not 0 < len(raw) <= MAX_NAME_BYTES:
        raise ValueError(f"server name must be 1..{MAX_NAME_BYTES} bytes of UTF-8, got {len(raw)}")
    return bytes((len(raw),)) + raw


def encode_entry(topic: bytes, message: bytes, max_size: int) -> bytes:
    """One DATA entry: the pre-encoded topic (`encode_topic`), the message's length and the msgpack
    `message`, checked against `max_size`."""
    if len(message) > max_size:
        raise MessageTooLarge(f"message is {len(message)} bytes encoded; maxMessageSize is {max_size}")
    return topic + ENTRY_LEN.pack(len(message)) + message


def encode_batch(origin: bytes, epoch: int, seq: int, entries: list[bytes]) -> bytes:
    """A whole DATA frame (length prefix included) carrying `entries` (from `encode_entry`) as messages
    `seq` .. `seq + len(entries) - 1` of the stream, hops = 0."""
    if len(entries) > MAX_BATCH_MESSAGES:
        raise ValueError(f"a DATA frame carries at most {MAX_BATCH_MESSAGES} messages")
    body_len = 3 + len(origin) + EPOCH_SEQ.size + COUNT.size + sum(map(len, entries))
    return b"".join((DATA_PREFIX.pack(body_len, KIND_DATA, 0), origin, EPOCH_SEQ.pack(epoch, seq),
                     COUNT.pack(len(entries)), *entries, UNSIGNED))


def encode_data(origin: bytes, epoch: int, seq: int, topic: bytes, message: bytes, max_size: int) -> bytes:
    """A whole DATA frame carrying one message, sent with hops = 0.

    `origin` and `topic` are the pre-encoded pieces from `encode_origin` and `encode_topic`; `message`
    is the msgpack-encoded message, checked against `max_size`.
    """
    return encode_batch(origin, epoch, seq, [encode_entry(topic, message, max_size)])


@dataclass(frozen=True, slots=True)
class DataHeader:
    """What a relay reads from a DATA frame without touching its payload."""

    hops: int
    origin: bytes  # the origin's name, UTF-8, as on the wire (a dict key without decoding)
    epoch: int
    seq: int
    topic_offset: int  # where the topic (the first entry) starts in the body
    count: int = 1  # messages in the frame (a DIRECT frame carries one)


def parse_data_header(body: bytes, start: int = 2, *, counted: bool = True) -> DataHeader:
    """Read the stream header (origin, epoch, seq, count) of a DATA body, or of a DIRECT body from
    `start` (the offset of its origin length, after the target) with `counted` False (a DIRECT frame
    has a target epoch where DATA has its count); raise ProtocolError if it is cut short."""
    # body[0] is the kind byte, checked by the caller.
    if len(body) < start + 1:
        raise ProtocolError("DATA frame shorter than its header")
    hops = body[1]
    name_len = body[start]
    end = start + 1 + name_len
    extra = COUNT.size if counted else TARGET_EPOCH.size
    if name_len == 0 or len(body) < end + EPOCH_SEQ.size + extra + 1:
        raise ProtocolError("DATA frame header cut short")
    epoch, seq = EPOCH_SEQ.unpack_from(body, end)
    count = COUNT.unpack_from(body, end + EPOCH_SEQ.size)[0] if counted else 1
    return DataHeader(hops, body[start + 1:end], epoch, seq, end + EPOCH_SEQ.size + extra, count)


def parse_topic(body: bytes, offset: int) -> tuple[str | int, int]:
    """Decode the topic at `offset`; return (topic, offset of the message)."""
    try:
        kind = body[offset]
        if kind == TOPIC_KIND_INT:
            (topic,) = TOPIC_INT.unpack_from(body, offset + 1)
            return topic, offset + 1 + TOPIC_INT.size
        if kind == TOPIC_KIND_STR:
            (length,) = TOPIC_STR_LEN.unpack_from(body, offset + 1)
            start = offset + 1 + TOPIC_STR_LEN.size
            if length > MAX_TOPIC_BYTES or start + length > len(body):
                raise ProtocolError("DATA frame topic cut short or too long")
            return body[start:start + length].decode("utf-8"), start + length
    except (IndexError, struct.error, UnicodeDecodeError) as error:
        raise ProtocolError(f"DATA frame topic malformed: {error}") from None
    raise ProtocolError(f"DATA frame topic kind {kind} unknown")


def parse_entries(body: bytes, offset: int, count: int | None = None,
                  end: int | None = None) -> list[tuple[str | int, int, int]]:
    """The entries of a DATA body from `offset` (after the count) to `end` (where its signature trailer
    starts: `trailer_start`): (topic, message start, message end) each.

    Raise ProtocolError unless the entries fill that span exactly, there is at least one, and there are
    `count` of them (if given: the header's count): a relay checks this before forwarding, so a
    malformed batch travels no further than one link.
    """
    entries = []
    end = trailer_start(body) if end is None else end
    unpack_length = ENTRY_LEN.unpack_from
    startswith = body.startswith
    last_raw, last_topic = b"", None  # a batch is mostly one topic: decode it once
    while offset < end:
        if last_raw and startswith(last_raw, offset):
            topic, start = last_topic, offset + len(last_raw)
        else:
            topic, start = parse_topic(body, offset)
            last_raw, last_topic = body[offset:start], topic
        if start + 4 > end:
            raise ProtocolError("DATA entry cut short before its message length")
        stop = start + 4 + unpack_length(body, start)[0]
        if stop > end:
            raise ProtocolError("DATA entry's message runs past the frame")
        entries.append((topic, start + 4, stop))
        offset = stop
    if not entries:
        raise ProtocolError("DATA frame without a message")
    if count is not None and len(entries) != count:
        raise ProtocolError(f"DATA frame says it carries {count} messages and carries {len(entries)}")
    return entries


def relay_prefix(body_len: int, hops: int, kind: int = KIND_DATA) -> bytes:
    """The rewritten 6-byte prefix for forwarding a DATA (or routed) body one hop further."""
    return DATA_PREFIX.pack(body_len, kind, min(hops, MAX_HOPS))


def encode_direct(target: bytes, origin: bytes, epoch: int, seq: int, topic: bytes, message: bytes,
                  max_size: int, target_epoch: int = 0) -> bytes:
    """A whole DIRECT frame, hops = 0. `target` and `origin` come from `encode_origin`; `seq` numbers
    the origin's direct messages to the target's process `target_epoch` (0: its epoch is not known)."""
    if len(message) > max_size:
        raise MessageTooLarge(f"message is {len(message)} bytes encoded; maxMessageSize is {max_size}")
    body_len = 3 + len(target) + len(origin) + EPOCH_SEQ.size + TARGET_EPOCH.size + len(topic) + len(message)
    return b"".join((DATA_PREFIX.pack(body_len, KIND_DIRECT, 0), target, origin,
                     EPOCH_SEQ.pack(epoch, seq), TARGET_EPOCH.pack(target_epoch), topic, message, UNSIGNED))


def trailer_start(data: bytes) -> int:
    """Where the signature trailer of a DATA or DIRECT frame (or body) starts: its last byte is the
    signature's length. Raise ProtocolError if that length runs past the start."""
    if not data:
        raise ProtocolError("payload frame without a signature trailer")
    start = len(data) - 1 - data[-1]
    if start < 2:
        raise ProtocolError("payload frame's signature runs past its header")
    return start


def signed_pieces(frame: bytes) -> tuple[bytes, memoryview]:
    """What the origin of a DATA or DIRECT frame signs, in two pieces (not joined: no copy): the kind
    byte, and everything after the hop count up to the signature. The hop count is left out because
    every relay rewrites it; the kind is in, so that a signature cannot be moved to another kind."""
    return frame[KIND_AT:KIND_AT + 1], memoryview(frame)[KIND_AT + 2:trailer_start(frame)]


def signature(frame: bytes) -> bytes:
    """The signature of a DATA or DIRECT frame (empty when it is unsigned)."""
    return frame[len(frame) - 1 - frame[-1]:-1]


def with_signature(frame: bytes, signature: bytes) -> bytes:
    """The frame (unsigned, as the encoders write it) with `signature` in its trailer."""
    if not 0 < len(signature) <= MAX_SIGNATURE:
        raise ValueError(f"a signature is 1..{MAX_SIGNATURE} bytes, got {len(signature)}")
    end = trailer_start(frame)
    return b"".join((LENGTH.pack(end - KIND_AT + len(signature) + 1), memoryview(frame)[KIND_AT:end],
                     signature, bytes((len(signature),))))


def leave_claim(name: str, epoch: int, address: list[Any]) -> bytes:
    """What a node signs to announce its own LEAVE (the map's `sig`)."""
    return _packb(["leave", name, epoch, address])


def peer_claim(name: str, address: list[Any], epoch: int) -> bytes:
    """What a node signs about itself for PEERS entries: its name, address and epoch (a signed peer
    record, as libp2p's): a member cannot pass on a false address or epoch for another node."""
    return _packb(["peer", name, address, epoch])


def encode_undeliverable(target: bytes, fields: dict[str, Any]) -> bytes:
    """A whole UNDELIVERABLE frame, routed back to `target` (the DIRECT's origin)."""
    payload = _packb(fields)
    return b"".join((DATA_PREFIX.pack(2 + len(target) + len(payload), KIND_UNDELIVERABLE, 0), target,
                     payload))


def parse_route(body: bytes, kind_at: int = 0) -> tuple[int, bytes, int]:
    """(hops, target name as UTF-8, offset after the target) of a routed body (of a whole frame, whose
    kind is at `kind_at` = 4: `route`)."""
    if len(body) < kind_at + 4:
        raise ProtocolError("routed frame shorter than its header")
    end = kind_at + 3 + body[kind_at + 2]  # for a frame: `_after_target`
    if body[kind_at + 2] == 0 or len(body) < end:
        raise ProtocolError("routed frame header cut short")
    return body[kind_at + 1], body[kind_at + 3:end], end


def encode_control(kind: int, fields: dict[str, Any]) -> bytes:
    """A whole control frame (length prefix included)."""
    payload = _packb(fields)
    return LENGTH.pack(1 + len(payload)) + bytes((kind,)) + payload


def body_kind(body: bytes) -> int:
    """The kind of a frame body."""
    return body[0]


def decode_control(body: bytes) -> dict[str, Any]:
    """Decode a control body (kind byte first) into its map; raise ProtocolError when it is not one."""
    return decode_map(body[1:])


def decode_map(data: bytes) -> dict[str, Any]:
    """Decode one msgpack map (a control frame's fields); raise ProtocolError when it is not one."""
    if len(data) >= MAX_CONTROL_BODY:
        raise ProtocolError(f"control frame of {len(data) + 1} bytes is over the {MAX_CONTROL_BODY} limit")
    try:
        fields = msgpack.unpackb(data, raw=False, strict_map_key=False)
    except Exception as error:  # msgpack raises several types for bad input: all mean the same here
        raise ProtocolError(f"control frame is not valid msgpack: {type(error).__name__}") from None
    if not isinstance(fields, dict):
        raise ProtocolError("control frame body is not a map")
    return fields


# ---------------------------------------------------------------------- whole frames
# The accessors the core, the transport and the simulator use. A frame is what travels: the 4-byte length,
# then the body. Offsets below are frame offsets: the kind at 4, the hop count at 5, then (DATA) the
# origin's length at 6, or (routed) the target's length at 6.

KIND_AT = 4
# Kinds below this carry payloads (DATA, DIRECT, UNDELIVERABLE); the rest are control frames.
FIRST_CONTROL_KIND = KIND_HELLO
_SEQ = struct.Struct(">Q")
_EPOCH = _SEQ  # both are 8-byte unsigned big-endian numbers
_SEQ_COUNT = struct.Struct(">QH")
# One byte per hop count, made once: a relay rewrites only this byte of a frame.
_HOP_BYTES = tuple(bytes((hops,)) for hops in range(MAX_HOPS + 1))
TLS_RECORD_START = b"\x16\x03"  # a TLS handshake record: what a peer with the `tls` option sends first


def kind(frame: bytes) -> int:
    """The kind byte of a whole frame."""
    return frame[KIND_AT]


def is_payload(frame: bytes) -> bool:
    """Does this whole frame carry application payload (DATA, DIRECT, UNDELIVERABLE)?"""
    return frame[KIND_AT] < FIRST_CONTROL_KIND


def body_of(frame: bytes) -> bytes:
    """The body of a whole frame (kind byte first), as `parse_*` and `decode_control` read it."""
    return frame[KIND_AT:]


def hops(frame: bytes) -> int:
    """Links a DATA or routed frame has crossed before the last one."""
    return frame[5]


# From this size on, `relayed` joins the rest of a frame from a view of it (one copy), rather than by
# slicing and concatenating (two copies, but no view to make): 0.8 against 1.1 us at 16 KiB here, while
# at 100 bytes the concatenation takes half the time of the join.
COPY_ONCE_FROM = 4096


def relayed(frame: bytes, hops: int) -> bytes:
    """The frame one hop further: the same bytes with the hop count set to `hops` (capped at MAX_HOPS)."""
    hop = _HOP_BYTES[hops if hops < MAX_HOPS else MAX_HOPS]
    if len(frame) < COPY_ONCE_FROM:
        return frame[:5] + hop + frame[6:]
    return b"".join((frame[:5], hop, memoryview(frame)[6:]))


def data_stream(frame: bytes) -> tuple[bytes, bytes, int, int]:
    """(origin name, stream key, seq, count) of a DATA frame; raise ProtocolError if its header is cut
    short.

    The stream key is `origin_len origin epoch`: it names one (origin, epoch) stream, as a slice of the
    frame, so that a duplicate costs no decoding (the seen-record's key). `seq` is the number of the
    frame's first message, `count` how many it carries (checked against its entries: `data_entries`)."""
    name_end = 7 + frame[6]
    if frame[6] == 0 or len(frame) < name_end + EPOCH_SEQ.size + COUNT.size + 1:
        raise ProtocolError("DATA frame header cut short")
    seq, count = _SEQ_COUNT.unpack_from(frame, name_end + 8)
    return frame[7:name_end], frame[6:name_end + 8], seq, count


def data_count(frame: bytes) -> int:
    """How many messages a DATA frame carries, from its header (checked against its entries on
    arrival: `data_entries`)."""
    return COUNT.unpack_from(frame, 7 + frame[6] + EPOCH_SEQ.size)[0]


def messages_in(frame: bytes) -> int:
    """Messages a whole frame carries: a DATA frame's count, 1 for DIRECT, 0 for the others (what a
    dropped frame costs, counted by message)."""
    kind = frame[KIND_AT]
    if kind == KIND_DATA:
        return data_count(frame)
    return 1 if kind == KIND_DIRECT else 0


def data_entries(frame: bytes) -> list[tuple[str | int, int, int]]:
    """The entries of a DATA frame (see `parse_entries`), with offsets into the frame, as many as its
    header's count."""
    offset = 7 + frame[6] + EPOCH_SEQ.size
    return parse_entries(frame, offset + COUNT.size, COUNT.unpack_from(frame, offset)[0],
                         trailer_start(frame))


def message_id(frame: bytes) -> bytes:
    """`stream key ‖ seq` of a DATA frame: one message's id (the simulator tracks broadcasts by it)."""
    return frame[6:7 + frame[6] + EPOCH_SEQ.size]


def stream_key(origin: bytes, epoch: int) -> bytes:
    """The stream key of `origin` (from `encode_origin`) in `epoch`, as `data_stream` reads it."""
    return origin + _EPOCH.pack(epoch)


def message_id_of(key: bytes, seq: int) -> bytes:
    """`message_id` of message `seq` of the stream `key`."""
    return key + _SEQ.pack(seq)


def key_origin(key: bytes) -> bytes:
    """The origin's name in a stream key."""
    return key[1:1 + key[0]]


def route(frame: bytes) -> tuple[int, bytes, int]:
    """(hops, target name as UTF-8, offset after the target) of a routed frame."""
    return parse_route(frame, KIND_AT)


def direct_stream(frame: bytes, after_target: int) -> tuple[bytes, int, int]:
    """(ordering key, seq, target epoch) of a DIRECT frame whose target ends at `after_target`; raise
    ProtocolError unless its header and topic are whole.

    Direct streams are numbered per (origin, target process): their key is the origin's `origin_len
    origin epoch` and the target epoch the numbering is for, marked by a leading 0 byte (a DATA stream
    key starts with the origin's length, never 0)."""
    header = parse_data_header(frame, after_target, counted=False)  # (its `hops` reads a body's offset)
    if trailer_start(frame) < parse_topic(frame, header.topic_offset)[1]:
        raise ProtocolError("DIRECT frame's signature runs into its topic")
    seq_at = header.topic_offset - TARGET_EPOCH.size - _SEQ.size
    target_epoch = frame[header.topic_offset - TARGET_EPOCH.size:header.topic_offset]
    return (b"\x00" + frame[after_target:seq_at] + target_epoch, header.seq,
            TARGET_EPOCH.unpack(target_epoch)[0])


def direct_parties(frame: bytes, after_target: int) -> tuple[bytes, bytes]:
    """(target, origin) names of a DIRECT frame; raise ProtocolError if it has no origin."""
    if len(frame) <= after_target or frame[after_target] == 0:
        raise ProtocolError("DIRECT frame without an origin")
    return frame[7:after_target], frame[after_target + 1:after_target + 1 + frame[after_target]]


def undeliverable_fields(frame: bytes, after_target: int) -> dict[str, Any]:
    """The map of an UNDELIVERABLE frame."""
    return decode_map(frame[after_target:])


def payload_origin(frame: bytes) -> bytes:
    """The origin's name of a DATA or DIRECT frame (checked on arrival)."""
    if frame[KIND_AT] == KIND_DATA:
        return frame[7:7 + frame[6]]
    return direct_parties(frame, _after_target(frame))[1]


def payload_epoch(frame: bytes) -> int:
    """The origin's epoch of a DATA or DIRECT frame (checked on arrival)."""
    if frame[KIND_AT] == KIND_DATA:
        return _EPOCH.unpack_from(frame, 7 + frame[6])[0]
    origin_at = _after_target(frame)
    return _EPOCH.unpack_from(frame, origin_at + 1 + frame[origin_at])[0]


def payload_entries(frame: bytes) -> list[tuple[str | int, int, int]]:
    """(topic, message start, message end) of each message of a DATA or DIRECT frame: a DIRECT frame
    carries one, after its target, origin, epoch and seq."""
    if frame[KIND_AT] == KIND_DATA:
        return data_entries(frame)
    header = parse_data_header(frame, _after_target(frame), counted=False)
    topic, offset = parse_topic(frame, header.topic_offset)
    end = trailer_start(frame)
    if end < offset:
        raise ProtocolError("DIRECT frame's signature runs into its message")
    return [(topic, offset, end)]


def _after_target(frame: bytes) -> int:
    """Where a routed frame's target name ends (checked on arrival: `route`)."""
    return 7 + frame[6]


def control_fields(frame: bytes) -> dict[str, Any]:
    """The map of a whole control frame (see `decode_control`)."""
    return decode_map(frame[KIND_AT + 1:])


def looks_like_tls(data: bytes) -> bool:
    """Do these first bytes of a stream start a TLS handshake rather than a frame?"""
    return data[:2] == TLS_RECORD_START
