"""Cutting a TCP byte stream into frames, and joining queued frames into one write.

TCP delivers bytes, not frames: one read may end in the middle of a frame (the old full-mesh connector's
bug 3) or hold hundreds of them. `FrameReader` keeps what is left over between reads and hands out whole
frame bodies. Like h11's receive buffer it has a documented limit: a length prefix larger than
`max_body` is refused *before* any buffer of that size is allocated, so a hostile 4 GiB prefix costs
nothing. In the other direction `join_frames` turns a queue of frames into one `send_all`.
"""

from __future__ import annotations

from collections import deque

from ..errors import ProtocolError
from ..protocol.wire import LENGTH

__all__ = ["MAX_WRITE_BYTES", "FrameReader", "join_frames"]

# Cap on one coalesced write: large enough to amortise the system call, small enough that one slow
# link does not hold megabytes of joined copies.
MAX_WRITE_BYTES = 1 << 20


def join_frames(frames: deque[bytes]) -> bytes:
    """Take queued frames from the front of `frames`, joined into one write of about MAX_WRITE_BYTES at
    most (a single larger frame goes whole)."""
    if len(frames) == 1:
        return frames.popleft()
    batch = []
    size = 0
    while frames and size < MAX_WRITE_BYTES:
        frame = frames.popleft()
        batch.append(frame)
        size += len(frame)
    return b"".join(batch)


class FrameReader:
    """Accumulates received bytes; `feed` returns the complete frame bodies they finish."""

    __slots__ = ("_buffer", "max_body")

    def __init__(self, max_body: int) -> None:
        self.max_body = max_body
        self._buffer = b""

    @property
    def pending(self) -> int:
        """Bytes received but not yet part of a complete frame."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[bytes]:
        """Add `data`; return the bodies (kind byte first) of every frame now complete, in order."""
        buffer = self._buffer + data if self._buffer else data
        frames: list[bytes] = []
        offset = 0
        end_of_data = len(buffer)
        unpack = LENGTH.unpack_from
        max_body = self.max_body
        while end_of_data - offset >= 4:
            (length,) = unpack(buffer, offset)
            if length > max_body:
                raise ProtocolError(f"frame length {length} is over the limit of {max_body} bytes")
            if length == 0:
                raise ProtocolError("empty frame")
            start = offset + 4
            end = start + length
            if end > end_of_data:
                break
            frames.append(buffer[start:end])
            offset = end
        self._buffer = buffer[offset:] if offset else buffer
        return frames
