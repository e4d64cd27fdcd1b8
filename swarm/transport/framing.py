"""Joining queued frames into one write: the transport's half of framing.

A link's writer takes everything queued and writes it with one `send_all`, so a burst of a hundred frames
costs one system call (the receive side, `FrameReader`, is pure code and lives in the protocol core).
"""

from __future__ import annotations

from collections import deque

__all__ = ["MAX_WRITE_BYTES", "join_frames"]

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
