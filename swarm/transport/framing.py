"""Gathering queued frames into one write: the transport's half of framing.

A link's writer takes everything queued and writes it with one system call, so a burst of a hundred
frames costs one write (the receive side, `FrameReader`, is pure code and lives in the protocol core).

Small frames are joined into one buffer; a large frame is not copied at all: on a plain TCP link it goes
to the kernel as its own buffer of a vectored write (`sendmsg`, i.e. writev), beside the joined runs of
small frames around it. Joining is what small frames want: one buffer per 100-byte frame costs the
kernel more than the copy saves (0.14 against 0.06 us a frame, and 0.30 against 0.10 at 1 KiB, over
loopback TCP on this machine), while from some kilobytes the copy costs as much as the kernel's extra
work and a 16 KiB copy is pure waste. Under TLS everything is joined: `SSLStream.send_all` takes one
buffer, and a record per frame would cost more than the copy.
"""

from __future__ import annotations

from collections import deque

__all__ = ["MAX_WRITE_BYTES", "WRITEV_FROM", "advance", "join_frames", "take_frames"]

# Cap on one coalesced write: large enough to amortise the system call, small enough that one slow
# link does not hold megabytes of joined copies.
MAX_WRITE_BYTES = 1 << 20
# From this size a frame is written from its own bytes rather than copied into a joined buffer (see the
# module docstring: the two cost the same near 4 KiB here; 8 KiB keeps small batches in one buffer).
WRITEV_FROM = 8192
# One write holds at most ~MAX_WRITE_BYTES / WRITEV_FROM large frames and a joined run between each two:
# far below the kernel's limit on the buffers of one writev (IOV_MAX, 1024 on Linux).
assert 2 * MAX_WRITE_BYTES // WRITEV_FROM + 2 < 1024


def take_frames(frames: deque[bytes], vectored: bool = True) -> tuple[list[bytes], int]:
    """Take queued frames from the front of `frames`, about MAX_WRITE_BYTES at most (a single larger
    frame goes whole), as the buffers of one write and their total size: each frame of WRITEV_FROM bytes
    or more as it is (with `vectored`), the frames between them joined; without `vectored`, one buffer."""
    first = frames.popleft()
    if not frames:
        return [first], len(first)
    buffers: list[bytes] = []
    run = [first]  # small frames, to be joined
    size = len(first)
    if vectored and size >= WRITEV_FROM:
        buffers.append(first)
        run = []
    while frames and size < MAX_WRITE_BYTES:
        frame = frames.popleft()
        length = len(frame)
        size += length
        if vectored and length >= WRITEV_FROM:
            if run:
                buffers.append(b"".join(run))  # a run of one is that frame, uncopied
                run = []
            buffers.append(frame)
        else:
            run.append(frame)
    if run:
        buffers.append(b"".join(run))
    return buffers, size


def join_frames(frames: deque[bytes]) -> bytes:
    """Take queued frames from the front of `frames`, joined into one write of about MAX_WRITE_BYTES at
    most (a single larger frame goes whole)."""
    return take_frames(frames, vectored=False)[0][0]


def advance(buffers: list[bytes | memoryview], sent: int) -> list[bytes | memoryview]:
    """What is left of `buffers` once the first `sent` bytes of them are written (a partial write): the
    buffers not begun, after a view of the rest of the one cut (no copy)."""
    index = 0
    count = len(buffers)
    while index < count and sent >= len(buffers[index]):
        sent -= len(buffers[index])
        index += 1
    rest = buffers[index:]
    if sent:
        rest[0] = memoryview(rest[0])[sent:]
    return rest
