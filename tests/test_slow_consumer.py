"""A slow subscriber costs only its own deliveries (swarm.node): relaying never waits for callbacks.

Three connectors in this process, on loopback with ephemeral ports, in a line S - X - Y: X is the only
path from S to Y, and X's subscriber is slow (a blocking `time.sleep`, or an async callback that sleeps)
with the smallest delivery queue, 64 KiB. S publishes a bounded burst; X drops what does not fit its
queue for its own subscriber only (counted per origin, reported once as `slow_consumer`), delivers the
rest in order, and relays every frame to Y, which gets the whole burst. (S and Y advertise loopback
addresses nobody listens on, so that they cannot link each other: each knows only X.)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
import trio
from cluster import Errors, node, wait_until

import swarm

pytestmark = pytest.mark.trio

BURST = 300  # messages of ~1 KiB: ~300 KiB, over four times X's delivery queue
QUEUE = 64 << 10
PAUSE = 0.005  # what X's subscriber takes per message


def counter(conn: swarm.Connector, key: str) -> int:
    return int(conn.status()["counters"].get(key, 0))


async def run_burst(make_callback: Callable[[list[int], Callable[[], int]], Any]) -> None:
    got_x: list[int] = []
    got_y: list[int] = []
    with trio.fail_after(30):
        async with node("S", advertiseHost="127.0.0.2") as s, \
                node("X", [s.address], deliveryQueueBytes=QUEUE) as x, \
                node("Y", [x.address], advertiseHost="127.0.0.3") as y:
            errors = Errors(x)
            x.subscribe("t", make_callback(got_x, lambda: len(got_y)))
            y.subscribe("t", lambda message: got_y.append(message[0]))
            await wait_until(lambda: y.is_ready and x.is_ready and sorted(x.status()["links"]) == ["S", "Y"]
                             and s.status()["links"] == ["X"], what="the line S - X - Y")
            assert y.status()["links"] == ["X"]  # Y gets S's messages from X only
            for i in range(BURST):  # one turn: a few DATA frames of ~16 KiB
                s.publish("t", [i, b"x" * 1000])
            await wait_until(lambda: len(got_y) == BURST and len(got_x) + x.status()[
                "slow_consumer_dropped"].get("S", 0) == BURST, 20, what="the burst at Y, and X done with it")
            status = x.status()
            frames = counter(s, "batches_published")
            links = (s.status()["links"], sorted(status["links"]), y.status()["links"])
    dropped = status["slow_consumer_dropped"]
    assert links == (["X"], ["S", "Y"], ["X"])  # the line held throughout
    # X's subscriber got part of the burst, in order and once each; the rest is counted, per origin.
    assert 0 < len(got_x) < BURST and set(dropped) == {"S"}
    assert len(got_x) + dropped["S"] == BURST
    assert got_x == sorted(set(got_x)) and got_x[0] == 0
    assert status["counters"]["slow_consumer_dropped"] == dropped["S"]
    assert status["counters"].get("gaps_given_up", 0) == 0  # dropped for the subscriber, not lost
    assert "slow_consumer" in errors.codes()
    report = next(e for e in errors.errors if e.code == "slow_consumer")
    assert "of S" in str(report) and "relaying goes on" in str(report)
    # X relayed every frame of the burst, and Y got it all, in order.
    assert status["counters"]["forwarded"] == frames > 1
    assert status["counters"]["forwarded_messages"] == BURST
    assert got_y == list(range(BURST))
    assert status["delivery_queue"] == 0 and status["delivery_queue_bytes"] == 0


async def test_a_slow_plain_callback_drops_its_own_deliveries_and_relaying_goes_on() -> None:
    seen_at_y: list[int] = []  # how much Y had when X's subscriber took each message

    def make(got: list[int], at_y: Callable[[], int]) -> Callable[[Any], None]:
        def slow(message: Any) -> None:
            seen_at_y.append(at_y())
            time.sleep(PAUSE)  # blocks the whole loop: every node in this process waits
            got.append(message[0])
        return slow

    await run_burst(make)
    # Relaying ran ahead of the callbacks: while X's subscriber was still at work on its queue, Y had
    # already received the whole burst through X.
    assert seen_at_y[-1] == BURST, seen_at_y


async def test_a_slow_async_callback_drops_its_own_deliveries_and_relaying_goes_on() -> None:
    seen_at_y: list[int] = []

    def make(got: list[int], at_y: Callable[[], int]) -> Callable[[Any], Any]:
        async def slow(message: Any) -> None:
            seen_at_y.append(at_y())
            await trio.sleep(PAUSE)
            got.append(message[0])
        return slow

    await run_burst(make)
    assert seen_at_y[-1] == BURST, seen_at_y
