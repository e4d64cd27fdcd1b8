"""Node processes driven over stdin and stdout: the harness of the demo, the benchmarks and the tests.

Used by `python -m swarm demo` (`swarm.demo`), by `benchmarks/` and by the multi-process tests
(`tests/procs.py`). Not part of swarm's API: tooling that starts node processes on one machine, drives
them one line at a time and stops them.

* **The child's side.** `child_node` runs a `Connector` in a process whose parent drives it: it says
  `listening <name> <host>:<port>` once bound, hands over the lines of stdin (the parent's commands), and
  leaves the cluster when its stdin closes (the parent died) or on SIGTERM. `say` writes one line to the
  parent, `read_lines` cuts a stream into lines.
* **The parent's side.** `start_process` starts a child with piped stdin and stdout (`Child`: its lines
  with `expect`, commands with `send`). `supervise` runs a piece of work and stops every child it
  started, whatever happens: closed stdin, then SIGTERM, then SIGKILL. `await_all` waits for a line from
  each child, `wait_converged` until every node is on its true ring neighbours, `first_of` finds an error
  in trio's exception groups.
* **The delivery round.** `run_demo_node` is the hidden command `python -m swarm _demo-node`: one node
  that publishes and counts what it receives (`Tally`). `run_cluster` starts N of them (`start_node`) —
  the first on an ephemeral port, the others seeded with the first one's address — and drives a round:

    child  -> parent   listening <name> <host>:<port>     bound
    child  -> parent   ready <name>                       joined (minimumPeers links)
    child  -> parent   linked <name>                      linked to a peer; the parent then waits for the
                                                      overlay to converge (each node's status)
    parent -> child    start {"publishers": [...], "messages": M, "size": S, "rate": R, "burst": B}
    child  -> parent   result {...}                       what it received (see `Tally.result`)
    parent -> child    stop                               leave the cluster and exit 0

Every message carries its publisher's name, a per-publisher sequence number from 1 and the wall-clock
send time (`time.time_ns()`, one clock on one machine), so each receiver can count what it lost, got
twice or got out of order, and how long each message took. Publishers `await conn.drain()` after every
B messages (default `BATCH`), so no send queue overflows.
"""

from __future__ import annotations

import json
import math
import os
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import trio

from . import certs
from .config import Options, TlsFiles, parse_address
from .connector import Connector
from .topology import ring
from .transport import tls
from .transport.engine import DROP_COUNTERS, fetch_status

__all__ = ["BATCH", "STOP_GRACE", "TOPIC", "Child", "HarnessError", "Tally", "await_all", "child_node",
           "first_of", "percentile", "read_lines", "run_cluster", "run_demo_node", "say", "start_node",
           "start_process", "supervise", "wait_converged", "wait_while_progressing"]

T = TypeVar("T")

TOPIC = "swarm-demo"
# A receiver that has heard nothing new for this long after the start reports what it has.
STALL_TIMEOUT = 10.0
# How long the cluster may take to start and link up.
STARTUP_TIMEOUT = 30.0
# Per stage of stopping a child: closed stdin, then SIGTERM, then SIGKILL.
STOP_GRACE = 3.0
# Publishers yield to the node's own tasks every this many messages, and wait for room in the queues
# (the default of the `start` command's "burst").
BATCH = 32


class HarnessError(Exception):
    """A child process could not do its part (it died, or exited before saying what it was to say)."""


# ---------------------------------------------------------------------- the child's side


def say(line: str) -> None:
    """One line to the parent: a child node process talks to its parent over stdout."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def read_lines(stream: trio.abc.ReceiveStream) -> AsyncIterator[str]:
    """Yield the lines (str, without the newline) of `stream` until it ends."""
    buffer = b""
    while True:
        chunk = await stream.receive_some(65536)
        if not chunk:
            if buffer:
                yield buffer.decode("utf-8", "replace")
            return
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            yield line.decode("utf-8", "replace")


@asynccontextmanager
async def child_node(conn: Connector) -> AsyncIterator[tuple[trio.Nursery, AsyncIterator[str]]]:
    """Run `conn` as a child process whose parent drives it over stdin and stdout (the demo's nodes,
    the benchmarks' `bench_node.py`, the tests' process clusters).

    Yields a nursery, in which `conn` runs and which SIGINT or SIGTERM cancels, and the lines of stdin
    (the parent's commands), after saying `listening <name> <host>:<port>`. Leaving the block (a
    `stop` command, or stdin closed: the parent is gone) stops the node and everything in the nursery.
    """
    stdin = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
    try:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with conn, trio.open_nursery() as nursery:
                async def stop_on_signal() -> None:
                    async for _ in signals:
                        nursery.cancel_scope.cancel()
                nursery.start_soon(stop_on_signal)
                host, port = conn.address
                say(f"listening {conn.server_name} {host}:{port}")
                yield nursery, read_lines(stdin)
                nursery.cancel_scope.cancel()
    finally:
        await stdin.aclose()


async def wait_while_progressing(done: Callable[[], bool], count: Callable[[], int],
                                 stall: float = STALL_TIMEOUT, poll: float = 0.02) -> None:
    """Wait until `done()`, or until `count()` (messages received) has not moved for `stall` seconds:
    a receiver that lost messages must still report, with what it has."""
    last_count, last_change = -1, trio.current_time()
    while not done():
        await trio.sleep(poll)
        if count() != last_count:
            last_count, last_change = count(), trio.current_time()
        elif trio.current_time() - last_change > stall:
            return


# ---------------------------------------------------------------------- the parent's side


class Child:
    """One child process (a node, or any program that talks one line at a time), with its stdout read
    line by line."""

    def __init__(self, name: str, process: trio.Process) -> None:
        self.name = name
        self.process = process
        assert process.stdout is not None
        self._lines = read_lines(process.stdout).__aiter__()

    async def expect(self, verb: str) -> str:
        """The rest of the next line that starts with `verb` (other lines are skipped)."""
        async for line in self._lines:
            head, _, rest = line.partition(" ")
            if head == verb:
                return rest
        code = await self.process.wait()
        raise HarnessError(f"node {self.name} exited with status {code} before saying {verb!r}")

    async def send(self, line: str) -> None:
        assert self.process.stdin is not None
        try:
            await self.process.stdin.send_all((line + "\n").encode())
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise HarnessError(f"node {self.name} is gone") from None

    async def stop(self) -> None:
        """Closed stdin (the node leaves), then SIGTERM, then SIGKILL; returns once it has exited."""
        process = self.process
        with trio.CancelScope(shield=True):
            if process.stdin is not None:
                await process.stdin.aclose()
            for signal_it in (None, process.terminate, process.kill):
                if signal_it is not None and process.returncode is None:
                    signal_it()
                with trio.move_on_after(STOP_GRACE):
                    await process.wait()
                if process.returncode is not None:
                    break
            if process.stdout is not None:
                await process.stdout.aclose()


async def start_process(children: list[Child], name: str, command: list[str]) -> Child:
    """Start `command` with piped stdin and stdout, in a session of its own (so Ctrl-C in the terminal
    reaches the parent only, which then stops it); append it to `children`, whose owner stops it."""
    process = await trio.lowlevel.open_process(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                               start_new_session=True)
    child = Child(name, process)
    children.append(child)
    return child


async def await_all(children: list[Child], verb: str) -> dict[str, str]:
    """The rest of each child's next `verb` line, by child name."""
    answers: dict[str, str] = {}

    async def one(child: Child) -> None:
        answers[child.name] = await child.expect(verb)

    async with trio.open_nursery() as nursery:
        for child in children:
            nursery.start_soon(one, child)
    return answers


def first_of(error: BaseException, kinds: tuple[type[BaseException], ...]) -> BaseException | None:
    """The first exception of one of `kinds` in `error` or in the exception groups it nests."""
    if isinstance(error, kinds):
        return error
    if isinstance(error, BaseExceptionGroup):
        for inner in error.exceptions:
            found = first_of(inner, kinds)
            if found is not None:
                return found
    return None


async def supervise(work: Callable[[list[Child]], Awaitable[T]], timeout: float) -> tuple[bool, T | None]:
    """Run `work(children)` within `timeout` seconds and stop every child it started, whatever happens.

    `work` appends the processes it starts to the list it is given (`start_process` and `start_node` do).
    Returns (False, what `work` returned), or (True, None) when SIGINT or SIGTERM cut it short. Errors
    propagate, wrapped in trio's exception groups (look for them with `first_of`); trio.TooSlowError
    means `timeout` passed. Signals are received, and so ignored, until every child is stopped: a second
    Ctrl-C cannot cut the clean-up short.
    """
    children: list[Child] = []
    interrupted = False
    result: T | None = None
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        try:
            async with trio.open_nursery() as nursery:
                async def watch_signals() -> None:
                    nonlocal interrupted
                    async for _ in signals:
                        interrupted = True
                        nursery.cancel_scope.cancel()
                nursery.start_soon(watch_signals)
                with trio.fail_after(timeout):
                    result = await work(children)
                nursery.cancel_scope.cancel()
        finally:
            async with trio.open_nursery() as nursery:
                for child in children:
                    nursery.start_soon(child.stop)
    return interrupted, None if interrupted else result


async def wait_converged(addresses: dict[str, tuple[str, int]],
                         tls_context: ssl.SSLContext | None = None) -> dict[str, dict[str, Any]]:
    """Poll every node's status until its ring links are its true ring neighbours; return the statuses.

    With TLS nodes, `tls_context` is a client context of a certificate of their cluster."""
    names = list(addresses)
    positions = {name: ring.position(name) for name in names}
    statuses: dict[str, dict[str, Any]] = {}

    async def one(name: str) -> None:
        statuses[name] = await fetch_status(*addresses[name], tls_context=tls_context)

    while True:
        async with trio.open_nursery() as nursery:
            for name in names:
                nursery.start_soon(one, name)
        per_side = max(1, (statuses[names[0]]["local_links"] + 1) // 2)
        if all({link["name"] for link in status["link_details"] if link["kind"] == "local"}
               == set(ring.nearest_per_side(positions[name],
                                            [(n, p) for n, p in positions.items() if n != name], per_side))
               for name, status in statuses.items()):
            return statuses
        await trio.sleep(0.1)


# ---------------------------------------------------------------------- the delivery round (`_demo-node`)


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of `values` (sorted or not); NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


@dataclass
class Tally:
    """What one node received from each publisher.

    Messages are recorded from the first one on, even before the node knows whom to expect (a fast
    publisher may start before the `start` line reached every node); `expected_from` is applied at the end.
    """

    expected_from: dict[str, int]
    seen: dict[str, set[int]] = field(default_factory=dict)
    highest: dict[str, int] = field(default_factory=dict)
    duplicates: int = 0
    out_of_order: int = 0
    foreign: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    # time.time_ns() of the first and the last new message (None until one arrives).
    first_ns: int | None = None
    last_ns: int | None = None

    @property
    def expected(self) -> int:
        return sum(self.expected_from.values())

    @property
    def delivered(self) -> int:
        return sum(len(self.seen.get(publisher, ())) for publisher in self.expected_from)

    def add(self, message: Any, now_ns: int) -> None:
        try:
            publisher, seq, sent_ns = message["from"], message["seq"], message["ts"]
        except (TypeError, KeyError):
            self.foreign += 1
            return
        seqs = self.seen.setdefault(publisher, set())
        if seq in seqs:
            self.duplicates += 1
            return
        seqs.add(seq)
        if seq < self.highest.get(publisher, 0):
            self.out_of_order += 1
        else:
            self.highest[publisher] = seq
        self.latencies_ms.append((now_ns - sent_ns) / 1e6)
        if self.first_ns is None:
            self.first_ns = now_ns
        self.last_ns = now_ns

    def complete(self) -> bool:
        return self.delivered >= self.expected

    def result(self) -> dict[str, Any]:
        foreign = self.foreign + sum(len(seqs) for publisher, seqs in self.seen.items()
                                     if publisher not in self.expected_from)
        return {"expected": self.expected, "delivered": self.delivered, "duplicates": self.duplicates,
                "out_of_order": self.out_of_order, "foreign": foreign,
                "p50_ms": percentile(self.latencies_ms, 0.50), "p99_ms": percentile(self.latencies_ms, 0.99),
                "first_ns": self.first_ns, "last_ns": self.last_ns}


async def _publish(conn: Connector, name: str, messages: int, size: int, rate: float, burst: int) -> None:
    payload = bytes(size)
    start = trio.current_time()
    for seq in range(1, messages + 1):
        if rate:
            delay = start + (seq - 1) / rate - trio.current_time()
            if delay > 0:
                await trio.sleep(delay)
        conn.publish(TOPIC, {"from": name, "seq": seq, "ts": time.time_ns(), "pad": payload})
        if seq % burst == 0:
            await conn.drain()
            await trio.sleep(0)
    await conn.drain()


async def _run_round(conn: Connector, tally: Tally, command: dict[str, Any]) -> None:
    name = conn.server_name
    async with trio.open_nursery() as nursery:
        if name in command["publishers"]:
            nursery.start_soon(_publish, conn, name, command["messages"], command["size"], command["rate"],
                               command.get("burst", BATCH))
        await wait_while_progressing(tally.complete, lambda: tally.delivered)
    status = conn.status()
    counters = status["counters"]
    result = tally.result()
    result["dropped"] = sum(counters.get(key, 0) for key in DROP_COUNTERS)
    result["links"] = len(status["links"])
    result["counters"] = {key: value for key, value in sorted(counters.items()) if value}
    say("result " + json.dumps(result))


async def run_demo_node(options: Options, peers: int) -> int:
    """One demo node: report `listening`/`ready`/`linked`, then obey `start` and `stop` from stdin."""
    tally = Tally({})

    def on_message(message: Any) -> None:
        tally.add(message, time.time_ns())

    conn = Connector(options)
    conn.subscribe(TOPIC, on_message)
    async with child_node(conn) as (nursery, commands):
        await conn.wait_ready()
        say(f"ready {conn.server_name}")

        async def announce_linked() -> None:
            while len(conn.status()["links"]) < peers:
                await trio.sleep(0.02)
            say(f"linked {conn.server_name}")
        nursery.start_soon(announce_linked)

        async for line in commands:
            verb, _, rest = line.partition(" ")
            if verb == "start":
                command = json.loads(rest)
                tally.expected_from = {name: command["messages"] for name in command["publishers"]
                                       if name != conn.server_name}
                nursery.start_soon(_run_round, conn, tally, command)
            elif verb == "stop":
                break
    return 0


async def start_node(children: list[Child], name: str, seeds: list[str], peers: int,
                     log_level: str, extra_options: Sequence[str] = ()) -> Child:
    """Start one `_demo-node` process on an ephemeral loopback port, seeded with `seeds`."""
    # A cluster name of its own, so two demos on one machine never mix (and their processes are easy
    # to find: `pgrep -f swarm-demo-<pid>`).
    command = [sys.executable, "-m", "swarm", "_demo-node", "--peers", str(peers), "--log-level", log_level,
               "--option", f"serverName={name}", "--option", "port=0", "--option", "host=127.0.0.1",
               "--option", f"clusterName=swarm-demo-{os.getpid()}"]
    if seeds:
        command += ["--option", "seedNodes=" + ",".join(seeds)]
    for option in extra_options:
        command += ["--option", option]
    return await start_process(children, name, command)


def issue_demo_certificates(directory: str, names: Sequence[str]) -> dict[str, TlsFiles]:
    """A throw-away cluster CA in `directory` and a certificate for each of `names`."""
    ca = str(certs.init(directory).cert)
    files = {}
    for name in names:
        paths = certs.issue(directory, name)
        files[name] = TlsFiles(ca=ca, cert=str(paths.cert), key=str(paths.key))
    return files


async def run_cluster(children: list[Child], nodes: int, messages: int, publishers: int, size: int,
                      rate: float, log_level: str, *, burst: int = BATCH, tls_dir: str | None = None,
                      node_options: Sequence[str] = (), on_linked: Callable[[], None] | None = None,
                      ) -> tuple[dict[str, dict[str, Any]], list[str], float]:
    """Start `nodes` node processes (into `children`), let `publishers` of them publish `messages`
    messages each (`size` bytes of padding, `burst` messages between drains), and tell them to stop.
    With `tls_dir`, a cluster CA is made there and every link is mutual TLS. `node_options` ("key=value")
    go to every node. `on_linked()` is called once every node is on its true ring neighbours, before
    anything is published.

    Returns each node's result (see `Tally.result`) by name, the publishing names and the seconds from
    `start` to the last result.
    """
    names = [f"node-{i}" for i in range(nodes)]
    publishing = [names[i * nodes // publishers] for i in range(publishers)]
    options: dict[str, list[str]] = {name: list(node_options) for name in names}
    tls_context = None
    if tls_dir is not None:
        files = issue_demo_certificates(tls_dir, [*names, "demo-parent"])
        for name in names:
            options[name] += [f"tls.ca={files[name].ca}", f"tls.cert={files[name].cert}",
                              f"tls.key={files[name].key}"]
        tls_context = tls.load(files["demo-parent"]).client  # to read the nodes' status
    with trio.fail_after(STARTUP_TIMEOUT):
        first = await start_node(children, names[0], [], 1, log_level, options[names[0]])
        seed = (await first.expect("listening")).split()[1]
        addresses = {names[0]: parse_address(seed)}
        for name in names[1:]:
            child = await start_node(children, name, [seed], 1, log_level, options[name])
            addresses[name] = parse_address((await child.expect("listening")).split()[1])
        await await_all(children, "ready")
        await await_all(children, "linked")
        await wait_converged(addresses, tls_context)
    if on_linked is not None:
        on_linked()
    command = json.dumps({"publishers": publishing, "messages": messages, "size": size, "rate": rate,
                          "burst": burst})
    started = time.monotonic()
    for child in children:
        await child.send("start " + command)
    answers = await await_all(children, "result")
    elapsed = time.monotonic() - started
    for child in children:
        await child.send("stop")
    return {name: json.loads(answers[name]) for name in names}, publishing, elapsed
