"""Cutting a byte stream into frames: the receive buffer of the sans-IO core.

TCP delivers bytes, not frames: one read may end in the middle of a frame (the old full-mesh connector's
bug 3) or hold hundreds of them. `FrameReader` keeps what is left over between reads and hands out whole
frames. Like h11's receive buffer, which lives in h11's sans-IO package for the same reason (any driver
needs exactly this, and it does no I/O), it has a documented limit: a length prefix larger than
`max_body` is refused *before* any buffer of that size is allocated, so a hostile 4 GiB prefix costs
nothing.
"""

from __future__ import annotations

from ..errors import ProtocolError
from .wire import LENGTH

__all__ = ["FrameReader"]


class FrameReader:
    """Accumulates received bytes; `feed` returns the complete frames they finish.

    With `whole` (what the core's `on_frame` takes) each frame comes with its length prefix; without, as
    its body (kind byte first), as inspection tools and tests read frames."""

    __slots__ = ("_buffer", "_skip", "max_body")

    def __init__(self, max_body: int, *, whole: bool = False) -> None:
        self.max_body = max_body
        self._skip = 0 if whole else LENGTH.size
        self._buffer = b""

    @property
    def pending(self) -> int:
        """Bytes received but not yet part of a complete frame."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[bytes]:
        """Add `data`; return every frame now complete, in order."""
        buffer = self._buffer + data if self._buffer else data
        frames: list[bytes] = []
        offset = 0
        end_of_data = len(buffer)
        unpack = LENGTH.unpack_from
        max_body = self.max_body
        skip = self._skip
        while end_of_data - offset >= 4:
            (length,) = unpack(buffer, offset)
            if length > max_body:
                raise ProtocolError(f"frame length {length} is over the limit of {max_body} bytes")
            if length == 0:
                raise ProtocolError("empty frame")
            end = offset + 4 + length
            if end > end_of_data:
                break
            frames.append(buffer[offset + skip:end])
            offset = end
        self._buffer = buffer[offset:] if offset else buffer
        return frames
