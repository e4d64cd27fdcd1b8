"""Faults of the data plane across real processes (issue 12): where each message went, node by node.

Every node is a `tests/procs.py` child, an interpreter of its own, on an ephemeral loopback port; the
publisher prints `pub <src> <seq>` for each message and every node `m <src> <seq>` for each one its
subscriber got, so a test holds the whole (src, seq) history of every node and asserts on it: who got
which message, once, in order; what a node did not get must be counted by the node itself (its
`slow_consumer_dropped`), never silently gone. Counters come from each node's own `status()` (asked over
stdin, so a node that lost its links still answers).

1. A slow plain callback (5 ms of `time.sleep` per message) behind a 64 KiB delivery queue: it drops for
   itself only, exactly what it counts; every other node gets everything.
2. A slow async callback (10 ms of `trio.sleep`): the same, and its links stay up (no failure timeout,
   no slow link cut, no link lost) although its subscriber is far behind.
3. A relay (a ring neighbour of the publisher, on a ring without shortcuts) stopped (SIGSTOP) for 2.5
   failure timeouts while the publisher runs: its links are closed and re-made, and it catches up by
   pull with no loss at all, well inside the cache window; the others lose nothing; `flood` and `tree`.
4. Two processes named `dup`: the older one ends (exit 3, one line naming the newer one's address), the
   newer one keeps its links and its messages are delivered.
5. A publisher with the smallest send queues floods as fast as `drain()` lets it while a peer is
   stopped for less than the failure timeout: the queues towards the stalled peer overflow (counted by
   message), the publisher is not held back (it publishes all it was told while the peer is stopped),
   and the peer pulls every message it missed once it runs again; over 5 nodes and over 2 (where the
   stalled peer's link is the publisher's only one).

Every wait is bounded (`trio.fail_after`), every process is stopped by `procs.open_cluster` (a stopped one
is continued first), and no assertion is about speed: the rates only make the faults happen.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import pytest
import trio
from procs import HOST, ROOT, Node, NodeCluster, Proc, open_cluster, ring_mismatches, true_ring_neighbours

pytestmark = pytest.mark.multiprocess

# Bound for starting a handful of interpreters and their overlay converging (2 loaded cores).
STARTUP = 30.0
# Bound for the messages still in flight (or queued for a slow subscriber) to arrive once publishing ended.
SETTLE = 10.0
POLL = 0.05
# The smallest queues the options allow.
MIN_QUEUE_BYTES = 64 << 10
MIN_QUEUE_FRAMES = 16


def report(text: str) -> None:
    """A figure for the record: shown by `pytest -s`."""
    print(f"\n[faults] {text}", flush=True)


# ---------------------------------------------------------------------- histories


def stream(node: Node, src: str) -> list[int]:
    """The seqs of `src` that `node`'s subscriber got, in arrival order."""
    return [seq for source, seq in node.received if source == src]


def describe(seqs: list[int], published: int) -> str:
    """What a stream holds against 1..published: how many, duplicates, reorderings, missing ranges."""
    counts = Counter(seqs)
    duplicates = sorted(seq for seq, count in counts.items() if count > 1)
    reordered = [(a, b) for a, b in zip(seqs, seqs[1:], strict=False) if b < a]
    missing = sorted(set(range(1, published + 1)) - set(seqs))
    ranges: list[str] = []
    for seq in missing:
        if ranges and int(ranges[-1].split("-")[-1]) == seq - 1:
            ranges[-1] = f"{ranges[-1].split('-')[0]}-{seq}"
        else:
            ranges.append(str(seq))
    foreign = sorted(set(seqs) - set(range(1, published + 1)))
    return (f"{len(seqs)} of {published}; missing {len(missing)} {ranges[:20]}; "
            f"duplicates {duplicates[:20]}; reordered {reordered[:10]}; foreign {foreign[:10]}")


def assert_complete(node: Node, src: str, published: int, what: str) -> None:
    """`node` got every one of 1..published of `src`, exactly once, in order."""
    seqs = stream(node, src)
    assert seqs == list(range(1, published + 1)), f"{what} {node.name}: {describe(seqs, published)}"


def assert_in_order_subset(node: Node, src: str, published: int, dropped: int, what: str) -> None:
    """`node` got, in strictly increasing order (no duplicate, no reordering), messages of 1..published,
    and exactly `dropped` fewer than published: delivered + dropped == published."""
    seqs = stream(node, src)
    detail = f"{what} {node.name} (dropped {dropped} by its own count): {describe(seqs, published)}"
    assert all(b > a for a, b in zip(seqs, seqs[1:], strict=False)), detail
    assert set(seqs) <= set(range(1, published + 1)), detail
    assert len(seqs) + dropped == published, detail


def counter(status: dict[str, Any], name: str) -> int:
    return int(status["counters"].get(name, 0))


def error_codes(node: Node) -> Counter[str]:
    return Counter(code for code, _ in node.errors)


# ---------------------------------------------------------------------- clusters


async def wait_ring(cluster: NodeCluster, nodes: Iterable[Node], local_links: int = 4,
                    timeout: float = STARTUP) -> None:
    """Wait until every one of `nodes` has its true ring neighbours (`local_links` of them) as local links."""
    nodes = list(nodes)
    with trio.fail_after(timeout):
        while ring_mismatches(await cluster.statuses(nodes), local_links):
            await trio.sleep(POLL)


async def start_converged(cluster: NodeCluster, names: list[str],
                          extra: dict[str, dict[str, Any]] | None = None, local_links: int = 4,
                          ) -> dict[str, Node]:
    """Start `names` (the first on its own, the rest seeded with it; `extra[name]` holds keyword arguments
    of `cluster.start` for that node), wait until each is ready and the overlay has its true ring."""
    extra = extra or {}
    with trio.fail_after(STARTUP):
        first = await cluster.start(names[0], **extra.get(names[0], {}))
        await first.wait_for(lambda: first.address is not None, "listening", STARTUP)
        assert first.address is not None
        nodes = {names[0]: first}
        for name in names[1:]:
            nodes[name] = await cluster.start(name, [first.address], **extra.get(name, {}))
        await cluster.wait_ready(nodes.values(), STARTUP)
    await wait_ring(cluster, nodes.values(), local_links)
    return nodes


async def statuses(nodes: Iterable[Node]) -> dict[str, dict[str, Any]]:
    """Each node's own status (asked over stdin), concurrently."""
    result: dict[str, dict[str, Any]] = {}

    async def one(node: Node) -> None:
        result[node.name] = await node.status()

    async with trio.open_nursery() as nursery:
        for node in nodes:
            nursery.start_soon(one, node)
    return result


async def publish(node: Node, rate: float, count: int, pad: int = 0) -> None:
    await node.send(f'publish {{"rate": {rate}, "count": {count}, "pad": {pad}}}')


async def wait_halted(node: Node, count: int, timeout: float) -> str:
    """Wait for `node`'s `halted` line; returns its src."""
    await node.wait_for(lambda: node.halted, "halted", timeout)
    assert node.halted_count == count and node.src is not None, (node.halted_count, count)
    return node.src


async def wait_settled(nodes: Iterable[Node], src: str, published: int, timeout: float = SETTLE) -> None:
    """Wait, without failing (the assertions that follow say what is missing), until each node holds
    `published` messages of `src`."""
    with trio.move_on_after(timeout):
        for node in nodes:
            while len(stream(node, src)) < published and not node.eof:
                await node.changed.wait()


@contextlib.contextmanager
def sigstopped(node: Node) -> Any:
    """The node's process stopped (SIGSTOP) inside the block; continued (SIGCONT) on the way out, even on
    failure, so that the cluster's clean-up can stop it."""
    os.kill(node.process.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        if node.process.returncode is None:
            os.kill(node.process.pid, signal.SIGCONT)


# ---------------------------------------------------------------------- 1 and 2. slow subscribers


SLOW_NAMES = [f"node-{i}" for i in range(5)]
Statuses = dict[str, dict[str, Any]]


async def slow_subscriber_round(tmp_path: Path, child_args: list[str], rate: float, count: int, pad: int,
                                **options: Any) -> tuple[Statuses, Statuses]:
    """node-0 publishes `count` messages (`pad` bytes of padding each) at `rate`; node-3's subscriber is
    slow (`child_args`) behind the smallest delivery queue. Returns the statuses before and after.
    Asserts the histories: every healthy node has every message once in order; node-3 has
    published - dropped of them, in order, and dropped > 0 was reported as `slow_consumer`."""
    async with open_cluster(tmp_path, **options) as cluster:
        nodes = await start_converged(cluster, SLOW_NAMES, {"node-3": {
            "child_args": child_args, "deliveryQueueBytes": MIN_QUEUE_BYTES}})
        publisher, slow = nodes["node-0"], nodes["node-3"]
        healthy = [node for node in nodes.values() if node not in (publisher, slow)]
        before = await statuses(nodes.values())
        with trio.fail_after(count / rate + SETTLE + 10):
            await publish(publisher, rate, count, pad)
            src = await wait_halted(publisher, count, count / rate + 10)
            await wait_settled(healthy, src, count)
            # The slow node: until its delivery queue is empty, and nothing is left in flight.
            while True:
                status = await slow.status()
                dropped = status["slow_consumer_dropped"].get("node-0", 0)
                if status["delivery_queue"] == 0 and len(stream(slow, src)) + dropped >= count:
                    break
                await trio.sleep(POLL)
            after = await statuses(nodes.values())
        for node in healthy:
            assert_complete(node, src, count, "healthy node")
        dropped = after["node-3"]["slow_consumer_dropped"].get("node-0", 0)
        assert counter(after["node-3"], "slow_consumer_dropped") == dropped, after["node-3"]["counters"]
        assert_in_order_subset(slow, src, count, dropped, "slow node")
        assert dropped > 0, f"the 64 KiB queue never overflowed: {describe(stream(slow, src), count)}"
        assert error_codes(slow)["slow_consumer"] >= 1, slow.errors
        # Relaying went on: nobody else dropped for its subscribers, nothing was given up as lost.
        for name, status in after.items():
            assert status["losses"] == [], (name, status["losses"])
            if name != "node-3":
                assert counter(status, "slow_consumer_dropped") == 0, (name, status["counters"])
            # No link was cut for it: neither by a failure detector nor as a slow link.
            assert counter(status, "failure_timeouts") == counter(before[name], "failure_timeouts"), (
                name, status["counters"])
            assert counter(status, "slow_links_cut") == 0, (name, status["counters"])
        report(f"{child_args}: published {count} x {pad} B at {rate:g}/s; slow node delivered "
               f"{len(stream(slow, src))}, dropped {dropped} (errors {dict(error_codes(slow))}); "
               f"healthy nodes {[len(stream(node, src)) for node in healthy]}")
        return before, after


async def test_slow_sync_callback_drops_only_for_itself(tmp_path: Path) -> None:
    # 5 ms of blocking per message: at most ~200 msgs/s reach the callback, 400/s arrive; with 300 bytes
    # of padding the 64 KiB queue holds ~140 messages, so it overflows after well under a second.
    await slow_subscriber_round(tmp_path, ["--slow-sync", "0.005"], rate=400, count=800, pad=300)


async def test_slow_async_callback_drops_only_for_itself_and_keeps_its_links(tmp_path: Path) -> None:
    # 10 ms awaited per message: at most ~100 msgs/s reach the callback, 300/s arrive. A failure timeout
    # of 1 s makes a stalled relay (a reader that stopped reading) show within the run: its neighbours'
    # queues would lag and the link be cut after 2 s, or the failure detector would fire.
    before, after = await slow_subscriber_round(tmp_path, ["--slow-async", "0.01"], rate=300, count=600,
                                                pad=300, failureTimeout=1.0)
    # Beyond the checks of every slow round (no failure timeout, no slow link cut anywhere): the slow
    # node never lost a link, has the same peers, and no queue towards it lags.
    for name, status in after.items():
        assert status["lagging"] == [], (name, status["lagging"])
    slow_before, slow_after = before["node-3"], after["node-3"]
    assert counter(slow_after, "links_lost") == counter(slow_before, "links_lost"), slow_after["counters"]
    assert slow_after["links"] == slow_before["links"], (slow_before["links"], slow_after["links"])


# ---------------------------------------------------------------------- 3. a stalled relay


STALL_NAMES = [f"node-{i}" for i in range(5)]
STALL_FAILURE_TIMEOUT = 1.0
STALL_SECONDS = 2.5
STALL_RATE = 200
# A ring (2 local links, no shortcuts): node-0's ring neighbours relay its messages to the far side.
STALL_LOCAL_LINKS = 2


@pytest.mark.parametrize("broadcast", ["flood", "tree"])
async def test_stalled_relay_catches_up_by_pull(tmp_path: Path, broadcast: str) -> None:
    before_stop, after_resume = 0.5, 2.0
    count = int(STALL_RATE * (before_stop + STALL_SECONDS + after_resume))
    relay = sorted(true_ring_neighbours(STALL_NAMES, STALL_LOCAL_LINKS)["node-0"])[0]
    async with open_cluster(tmp_path, failureTimeout=STALL_FAILURE_TIMEOUT, broadcast=broadcast,
                            localLinks=STALL_LOCAL_LINKS, shortcuts=0) as cluster:
        nodes = await start_converged(cluster, STALL_NAMES, local_links=STALL_LOCAL_LINKS)
        publisher, stalled = nodes["node-0"], nodes[relay]
        others = [node for node in nodes.values() if node not in (publisher, stalled)]
        before = await statuses(nodes.values())
        with trio.fail_after(count / STALL_RATE + SETTLE + STARTUP):
            await publish(publisher, STALL_RATE, count)
            await trio.sleep(before_stop)
            relaying = await stalled.status()  # what it had forwarded when it was stopped
            with sigstopped(stalled):
                await trio.sleep(STALL_SECONDS)
                at_resume = len(stalled.received)
            src = await wait_halted(publisher, count, count / STALL_RATE + 10)
            await wait_settled([*others, stalled], src, count)
            await wait_ring(cluster, nodes.values(), STALL_LOCAL_LINKS)  # its links are back
            after = await statuses(nodes.values())
        relay_status, peers = after[relay], (publisher, *others)
        forwarded = counter(relaying, "forwarded") - counter(before[relay], "forwarded")
        closed = sum(counter(after[n.name], "failure_timeouts") - counter(before[n.name], "failure_timeouts")
                     for n in peers)
        made = counter(relay_status, "links_made") - counter(before[relay], "links_made")
        pulls = counter(relay_status, "pulls_sent") - counter(before[relay], "pulls_sent")
        pulled = sum(counter(after[n.name], "pulled_frames_sent") for n in peers)
        figures = (f"{broadcast}: relay {relay} (forwarded {forwarded} frames) stopped {STALL_SECONDS} s "
                   f"(failureTimeout {STALL_FAILURE_TIMEOUT}), {count} published; it had {at_resume} when "
                   f"continued and ends with {describe(stream(stalled, src), count)}; its pulls_sent "
                   f"{pulls}, links re-made {made}; peers' failure timeouts {closed}, pulled_frames_sent "
                   f"{pulled}; losses {relay_status['losses']}; the others "
                   f"{[describe(stream(n, src), count) for n in others]}")
        report(figures)
        for node in others:
            assert_complete(node, src, count, f"{broadcast}: node that ran throughout")
        assert_complete(stalled, src, count, f"{broadcast}: stalled node")
        # It was a relay when stopped; its links were closed (the failure detectors of its peers fired)
        # and made again (the ring is whole: waited for above)...
        assert forwarded > 0, figures
        assert closed >= 1, figures
        assert made >= 1, figures
        # ...and what it missed meanwhile came by pull.
        assert pulls > 0, figures
        for name, status in after.items():
            assert status["losses"] == [], (name, status["losses"])


# ---------------------------------------------------------------------- 4. a duplicate serverName


@contextlib.asynccontextmanager
async def swarm_node(tmp_path: Path, name: str, *options: str) -> AsyncIterator[Proc]:
    """`python -m swarm node --option ...` (stdout read by line, stderr to a file); stopped at the end."""
    command = [sys.executable, "-m", "swarm", "node", "--option", f"serverName={name}",
               "--option", f"host={HOST}", "--option", "port=0"]
    for option in options:
        command += ["--option", option]
    stderr_path = tmp_path / f"cli-{name}.stderr"
    with open(stderr_path, "wb") as stderr:
        process = await trio.lowlevel.open_process(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                                   stderr=stderr, cwd=ROOT)
    proc = Proc(process, stderr_path, f"cli-{name}")
    try:
        yield proc
    finally:
        await proc.stop()


async def test_duplicate_server_name_ends_the_older_process(tmp_path: Path) -> None:
    count, rate = 100, 200
    async with open_cluster(tmp_path) as cluster:
        a = await cluster.start("node-a")
        await a.wait_for(lambda: a.address is not None, "listening", STARTUP)
        assert a.address is not None
        b = await cluster.start("node-b", [a.address])
        await cluster.wait_ready([a, b], STARTUP)
        async with swarm_node(tmp_path, "dup", f"clusterName={cluster.options['clusterName']}",
                              f"seedNodes={a.address}") as older:
            with trio.fail_after(STARTUP):
                name, older_address = (await older.expect("listening")).split()
                assert name == "dup"
                assert await older.expect("ready") == "dup"
            newer = await cluster.start("dup", [a.address])
            with trio.fail_after(STARTUP):
                await cluster.wait_ready([newer], STARTUP)
                status = await older.wait(STARTUP)
            assert newer.address is not None and newer.address != older_address
            lines = older.stderr().splitlines()
            assert status == 3, (status, lines)
            # One line says why it ended, and names the address that holds the name (the engine logs the
            # conflict below the default level, so that it is said once).
            conflict = [line for line in lines if line.startswith("swarm: error:")]
            assert len(conflict) == 1, lines
            assert [line for line in lines if "held by" in line] == conflict, lines
            assert "name_conflict" in conflict[0] or "held by" in conflict[0], lines
            assert newer.address in conflict[0], (newer.address, lines)
            assert not any("Traceback" in line for line in lines), lines
        # The newer one keeps its links and is heard by everyone.
        with trio.fail_after(STARTUP):
            await wait_ring(cluster, [a, b, newer])
            await publish(newer, rate, count)
            src = await wait_halted(newer, count, count / rate + 10)
            await wait_settled([a, b], src, count)
            after = await statuses([a, b, newer])
        for node in (a, b):
            assert_complete(node, src, count, "node hearing the newer dup")
            assert "dup" in after[node.name]["links"], after[node.name]["links"]
        assert after["dup"]["name_conflict"] is None and after["dup"]["ready"], after["dup"]
        assert sorted(after["dup"]["links"]) == ["node-a", "node-b"], after["dup"]["links"]
        assert error_codes(newer)["name_conflict"] == 0, newer.errors
        report(f"duplicate name: older dup at {older_address} exit {status}: {conflict[0]!r}; newer at "
               f"{newer.address} delivered {count} to {[len(stream(n, src)) for n in (a, b)]}")


# ---------------------------------------------------------------------- 5. a queue overflow, one link


OVERFLOW_COUNT = 3000
OVERFLOW_PAD = 1000
# The peer's stall: more than LAG_GRACE (1 s, after which drain() stops waiting for its link) with room to
# publish the rest, and well under the failure timeout, so that its links stay up.
OVERFLOW_STALL = 2.5
OVERFLOW_FAILURE_TIMEOUT = 5.0


@pytest.mark.parametrize("size", [5, 2])
async def test_overflow_towards_a_stalled_peer_is_pulled_back(tmp_path: Path, size: int) -> None:
    # The smallest queues on every node: whoever forwards to the stalled peer overflows towards it, so
    # what it missed can only come back by pull. Two nodes: the stalled peer's link is the publisher's
    # only one (no other writer wakes drain() up); five: a full mesh.
    count = OVERFLOW_COUNT
    async with open_cluster(tmp_path, sendQueueSize=MIN_QUEUE_FRAMES, sendQueueBytes=MIN_QUEUE_BYTES,
                            failureTimeout=OVERFLOW_FAILURE_TIMEOUT) as cluster:
        nodes = await start_converged(cluster, [f"node-{i}" for i in range(size)])
        publisher, stalled = nodes["node-0"], nodes["node-1"]
        others = [node for node in nodes.values() if node not in (publisher, stalled)]
        before = await statuses(nodes.values())
        with trio.fail_after(OVERFLOW_STALL + SETTLE + 10):
            with sigstopped(stalled):
                await publish(publisher, 1e9, count, OVERFLOW_PAD)  # as fast as drain() lets it
                await trio.sleep(OVERFLOW_STALL)
                # What it had published when the peer was continued: a count, read before SIGCONT.
                published_while_stopped = len(publisher.published)
            src = await wait_halted(publisher, count, SETTLE)
            await wait_settled([*others, stalled], src, count)
            after = await statuses(nodes.values())
        overflow = counter(after["node-0"], "send_queue_overflow_messages") - counter(
            before["node-0"], "send_queue_overflow_messages")
        pulls = counter(after["node-1"], "pulls_sent") - counter(before["node-1"], "pulls_sent")
        node1 = after["node-1"]
        figures = (f"overflow ({size} nodes): {published_while_stopped} of {count} x {OVERFLOW_PAD} B "
                   f"published while node-1 was stopped; publisher's send_queue_overflow_messages "
                   f"{overflow}, pulled_frames_sent {counter(after['node-0'], 'pulled_frames_sent')}; "
                   f"node-1 pulls_sent {pulls}, got {describe(stream(stalled, src), count)}, losses "
                   f"{node1['losses']}, gaps_given_up {counter(node1, 'gaps_given_up')}; others "
                   f"{[len(stream(n, src)) for n in others]}")
        report(figures)
        # The publisher was not held back by the stalled peer, and its queue to it overflowed.
        assert published_while_stopped == count, figures
        assert overflow > 0, after["node-0"]["counters"]
        # The links stayed up.
        for name, status in after.items():
            assert counter(status, "failure_timeouts") == counter(before[name], "failure_timeouts"), (
                name, status["counters"])
            assert counter(status, "slow_links_cut") == 0, (name, status["counters"])
        assert sorted(after["node-1"]["links"]) == sorted(before["node-1"]["links"])
        for node in others:
            mine = after[node.name]
            assert_complete(node, src, count, f"node that ran throughout (losses {mine['losses']}, "
                            f"pulls_sent {counter(mine, 'pulls_sent')}, gaps_given_up "
                            f"{counter(mine, 'gaps_given_up')}; {figures})")
        # The stalled peer pulled what its queues dropped, and has every message, once, in order.
        assert pulls > 0, after["node-1"]["counters"]
        assert_complete(stalled, src, count, f"stalled node ({figures})")
        for name, status in after.items():
            assert status["losses"] == [], (name, status["losses"])
