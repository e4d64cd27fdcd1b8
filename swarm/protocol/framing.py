"""Cutting a byte stream into frames: the receive buffer of the sans-IO core.

TCP delivers bytes, not frames: one read may end in the middle of a frame (the old full-mesh connector's
bug 3) or hold hundreds of them. `FrameReader` keeps what is left over between reads and hands out whole
frames. Like h11's receive buffer, which lives in h11's sans-IO package for the same reason (any driver
needs exactly this, and it does no I/O), it has a documented limit: a length prefix larger than
`max_body` is refused *before* any buffer of that size is allocated, so a hostile 4 GiB prefix costs
nothing.

Each frame is copied once, from the reads that brought it into a `bytes` of its own, and nothing else is
(the copy-free path for large messages, docs/performance.md). The buffer is never rebuilt per read: a
frame inside one read is sliced out of it; the unfinished frame at a read's end is kept as a view of
that read, and the reads after it are kept as they are, until the frame is whole and joined. (Before,
each read was concatenated to the leftover bytes, and a 16 KiB frame spread over two reads cost a copy
of the whole read besides its own slice; a 1 MiB frame over sixteen reads cost sixteen growing copies.)
"""

from __future__ import annotations

from ..errors import ProtocolError
from .wire import LENGTH

__all__ = ["FrameReader"]

_PREFIX = LENGTH.size


def _bad_length(length: int, max_body: int) -> ProtocolError:
    """The error for a length prefix over `max_body` or of 0 (checked inline, where it is hot)."""
    if length == 0:
        return ProtocolError("empty frame")
    return ProtocolError(f"frame length {length} is over the limit of {max_body} bytes")


class FrameReader:
    """Accumulates received bytes; `feed` returns the complete frames they finish.

    With `whole` (what the core's `on_frame` takes) each frame comes with its length prefix; without, as
    its body (kind byte first), as inspection tools and tests read frames.

    Every frame returned is a `bytes` of its own, never a view: the core keeps frames (its frame cache,
    the send queues, deliveries held behind a gap) long after the read that brought them, and uses their
    slices as dict keys. A view would pin the whole read it came from (64 KiB for a 100-byte frame kept
    in the cache), and it would be corrupted if a caller reused its receive buffer. Views are used only
    for the unfinished frame's part of the last read, held until that frame is joined, and only into a
    `bytes` (immutable): anything else fed is copied first."""

    __slots__ = ("_parts", "_pending", "_need", "_skip", "max_body")

    def __init__(self, max_body: int, *, whole: bool = False) -> None:
        self.max_body = max_body
        self._skip = 0 if whole else _PREFIX
        # The unfinished frame: its pieces as received (a view of a read's tail, then whole reads), their
        # total length, and the frame's length with its prefix once the prefix is whole (0 before).
        self._parts: list[bytes | memoryview] = []
        self._pending = 0
        self._need = 0

    @property
    def pending(self) -> int:
        """Bytes received but not yet part of a complete frame."""
        return self._pending


    def feed(self, data: bytes) -> list[bytes]:
        """Add `data`; return every frame now complete, in order."""
        if type(data) is not bytes:
            data = bytes(data)  # a bytearray or view may be reused by its owner: the views below need bytes
        frames: list[bytes] = []
        offset = self._finish(data, frames) if self._parts else 0
        if offset < 0:
            return frames
        end_of_data = len(data)
        unpack = LENGTH.unpack_from
        max_body = self.max_body
        skip = self._skip
        while end_of_data - offset >= _PREFIX:
            (length,) = unpack(data, offset)
            if length > max_body or length == 0:
                raise _bad_length(length, max_body)
            end = offset + _PREFIX + length
            if end > end_of_data:
                # Unfinished: its length is known (and checked), its bytes stay in this read.
                self._need = end - offset
                break
            frames.append(data[offset + skip:end])  # the whole read, uncopied, when it is one frame
            offset = end
        if offset < end_of_data:
            self._parts.append(memoryview(data)[offset:] if offset else data)
            self._pending = end_of_data - offset
        return frames

    def _finish(self, data: bytes, frames: list[bytes]) -> int:
        """Add `data` to the unfinished frame; if that completes it, append it to `frames` and return
        where its end is in `data`; else keep `data` and return -1."""
        parts = self._parts
        if not self._need:  # fewer than 4 bytes of the prefix so far: join them (tiny)
            head = b"".join(parts) + data[:_PREFIX - self._pending]
            if len(head) < _PREFIX:
                self._parts, self._pending = [head], len(head)
                return -1
            (length,) = LENGTH.unpack_from(head)
            if length > self.max_body or length == 0:
                raise _bad_length(length, self.max_body)
            self._need = _PREFIX + length
        taken = self._need - self._pending  # bytes of `data` the frame still needs
        if taken > len(data):
            parts.append(data)
            self._pending += len(data)
            return -1
        parts.append(memoryview(data)[:taken] if taken < len(data) else data)
        frame = b"".join(parts)
        frames.append(frame[self._skip:] if self._skip else frame)  # bodies: tools and tests only
        self._parts, self._pending, self._need = [], 0, 0
        return taken
