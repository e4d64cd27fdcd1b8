"""Node processes for the multi-process overlay tests: a child program and the parent's side of it.

Run as a script (`python tests/procs.py --name NAME [--seed HOST:PORT] [--options JSON] [--slow-sync S |
--slow-async S]`), this module is one swarm node, driven over stdin and reporting on stdout, one line each:

    child  -> parent   listening <name> <host>:<port>        bound
    child  -> parent   ready <name> <time_ns>                 joined (wait_ready returned at time_ns)
    child  -> parent   m <src> <seq>                          a broadcast message on TOPIC arrived
    child  -> parent   d <json>                               a message on DIRECT_TOPIC arrived
    child  -> parent   error <code> <text>                    the connector's `error` event
    child  -> parent   pub <src> <seq> <time_ns>              this node published message seq (TOPIC)
    child  -> parent   halted <src> <count>                   this node stopped publishing
    child  -> parent   status <json>                          this node's `status()` (asked by `status`)
    parent -> child    publish {"rate": R, "count": N|null, "pad": B}
                                                              publish steadily until N, or until `halt`
                                                              (`pad`, optional: B bytes of padding each)
    parent -> child    halt                                   stop publishing
    parent -> child    direct {"target": ..., "message": ...} conn.send_direct(target, DIRECT_TOPIC, message)
    parent -> child    status                                 print `status <json>`
    parent -> child    stop                                   leave the cluster and exit 0

A broadcast message is `{"src": "<name>@<pid>", "seq": n, "ts": time_ns}` (plus `"pad"` when asked for):
`src` names one publishing process, so a restarted publisher is a new stream. A slow subscriber for the
fault tests: with `--slow-sync S` the TOPIC callback `time.sleep`s S seconds after printing its `m` line
(it blocks the node's whole trio loop meanwhile, as a careless application would), with `--slow-async S`
it is an async callback that `await trio.sleep(S)`s. The child also leaves on SIGTERM and when its stdin
closes (the parent died). Wall-clock times (`time.time_ns()`) are comparable: one machine, one clock.

Imported, it gives the parent's side: `NodeCluster` starts such processes (ephemeral ports on
127.0.0.1), reads every child's stdout in a task of its own, and stops every process on exit (SIGTERM,
then SIGKILL); plus status and ring helpers.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from swarm.connector import Connector
from swarm.harness import child_node, say
from swarm.topology import ring
from swarm.transport.engine import fetch_status

HOST = "127.0.0.1"
ROOT = Path(__file__).resolve().parent.parent
TOPIC = "overlay-test"
DIRECT_TOPIC = "overlay-direct"
# Bound of one wait for a process line (start-up includes importing trio: slow on a loaded machine).
WAIT = 20.0
# Per stage of stopping a child: SIGTERM, then SIGKILL after this.
STOP_GRACE = 5.0
BATCH = 32


# ---------------------------------------------------------------------- the child



async def _publish(conn: Connector, src: str, rate: float, count: int | None, halt: trio.Event,
                   pad: int = 0) -> None:
    start = trio.current_time()
    padding = {"pad": "x" * pad} if pad else {}
    seq = 0
    while not halt.is_set() and (count is None or seq < count):
        seq += 1
        delay = start + (seq - 1) / rate - trio.current_time()
        if delay > 0:
            await trio.sleep(delay)
        if halt.is_set():
            seq -= 1
            break
        now = time.time_ns()
        conn.publish(TOPIC, {"src": src, "seq": seq, "ts": now, **padding})
        say(f"pub {src} {seq} {now}")
        if seq % BATCH == 0:
            await conn.drain()
    await conn.drain()
    say(f"halted {src} {seq}")


async def child_main(name: str, seeds: list[str], options: dict[str, Any], slow_sync: float = 0.0,
                     slow_async: float = 0.0) -> int:
    mapping: dict[str, Any] = {"serverName": name, "host": HOST, "port": 0, **options}
    if seeds:
        mapping["seedNodes"] = seeds
    conn = Connector(mapping)
    src = f"{name}@{os.getpid()}"

    def on_message(message: Any) -> None:
        say(f"m {message['src']} {message['seq']}")
        if slow_sync:
            time.sleep(slow_sync)

    async def on_message_slowly(message: Any) -> None:
        say(f"m {message['src']} {message['seq']}")
        await trio.sleep(slow_async)

    def on_direct(message: Any) -> None:
        say(f"d {json.dumps(message)}")

    def on_error(error: Any) -> None:
        say(f"error {getattr(error, 'code', '?')} {' '.join(str(error).split())}")

    conn.subscribe(TOPIC, on_message_slowly if slow_async else on_message)
    conn.subscribe(DIRECT_TOPIC, on_direct)
    conn.on("error", on_error)
    async with child_node(conn) as (nursery, commands):
        async def announce_ready() -> None:
            await conn.wait_ready()
            say(f"ready {name} {time.time_ns()}")
        nursery.start_soon(announce_ready)

        halt = trio.Event()
        async for line in commands:
            verb, _, rest = line.partition(" ")
            if verb == "publish":
                command = json.loads(rest)
                halt = trio.Event()
                nursery.start_soon(_publish, conn, src, command["rate"], command.get("count"), halt,
                                   command.get("pad", 0))
            elif verb == "halt":
                halt.set()
            elif verb == "direct":
                command = json.loads(rest)
                try:
                    conn.send_direct(command["target"], DIRECT_TOPIC, command["message"])
                except Exception as error:  # reported, not fatal: the parent checks for it
                    say(f"error local {type(error).__name__}: {error}")
            elif verb == "status":
                say(f"status {json.dumps(conn.status(), default=str)}")
            elif verb == "stop":
                break
    return 0


def _child_entry() -> int:
    # Debugging aid: SWARM_TEST_LOG=INFO logs what each node does to its stderr file (tmp_path).
    logging.basicConfig(level=os.environ.get("SWARM_TEST_LOG", "WARNING"),
                        format="%(created).3f %(name)s %(message)s")
    parser = argparse.ArgumentParser()
    parser.add_argument("--name", required=True)
    parser.add_argument("--seed", action="append", default=[])
    parser.add_argument("--options", default="{}", help="more connector options, as a JSON object")
    slow = parser.add_mutually_exclusive_group()
    slow.add_argument("--slow-sync", type=float, default=0.0, metavar="SECONDS",
                      help="the TOPIC callback blocks (time.sleep) this long per message")
    slow.add_argument("--slow-async", type=float, default=0.0, metavar="SECONDS",
                      help="the TOPIC callback is async and awaits trio.sleep this long per message")
    args = parser.parse_args()
    return trio.run(child_main, args.name, args.seed, json.loads(args.options), args.slow_sync,
                    args.slow_async)


# ---------------------------------------------------------------------- the parent


async def stop_process(process: trio.Process, grace: float = STOP_GRACE) -> None:
    """SIGTERM, then SIGKILL after `grace` seconds; always ends with the process reaped (even when the
    caller is being cancelled)."""
    with trio.CancelScope(shield=True):
        if process.returncode is None:
            process.terminate()
            with trio.move_on_after(grace):
                await process.wait()
        if process.returncode is None:
            process.kill()
            await process.wait()


class Proc:
    """A process of a test (`python -m swarm ...`): stdout read line by line, stderr written to a file."""

    def __init__(self, process: trio.Process, stderr_path: Path, name: str) -> None:
        self.process = process
        self.stderr_path = stderr_path
        self.name = name
        self._buffer = b""
        self._eof = False

    async def _fill(self) -> bool:
        assert self.process.stdout is not None
        chunk = await self.process.stdout.receive_some(65536)
        if not chunk:
            self._eof = True
        self._buffer += chunk
        return bool(chunk)

    async def read_line(self, timeout: float = WAIT) -> str | None:
        """The next stdout line, or None at end of output."""
        with trio.fail_after(timeout):
            while b"\n" not in self._buffer:
                if self._eof or not await self._fill():
                    return None
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode()

    async def expect(self, verb: str, timeout: float = WAIT) -> str:
        """The rest of the next stdout line starting with `verb`."""
        with trio.fail_after(timeout):
            while True:
                line = await self.read_line()
                if line is None:
                    raise AssertionError(f"{self.name} ended before printing {verb!r}: {self.stderr()}")
                head, _, rest = line.partition(" ")
                if head == verb:
                    return rest

    async def rest_of_stdout(self, timeout: float = WAIT) -> list[str]:
        lines = []
        while (line := await self.read_line(timeout)) is not None:
            lines.append(line)
        return lines

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    async def stderr_line(self, verb: str, timeout: float = WAIT) -> str:
        """The rest of the first stderr line starting with `verb` (polls the file)."""
        with trio.fail_after(timeout):
            while True:
                for line in self.stderr().splitlines():
                    head, _, rest = line.partition(" ")
                    if head == verb:
                        return rest
                if self.process.returncode is not None:
                    raise AssertionError(f"{self.name} exited before printing {verb!r}: {self.stderr()}")
                await trio.sleep(0.02)

    async def wait(self, timeout: float = WAIT) -> int:
        with trio.fail_after(timeout):
            return await self.process.wait()

    async def stop(self) -> None:
        """SIGTERM, then SIGKILL after a grace period; always ends with the process reaped."""
        await stop_process(self.process)
        if self.process.stdout is not None:
            with trio.CancelScope(shield=True):
                await self.process.stdout.aclose()



@dataclass
class Published:
    seq: int
    ts: int


@dataclass
class Node:
    """One child process (one instance of a node: a restart is a new Node with the same name)."""

    name: str
    process: trio.Process
    stderr_path: Path
    address: str | None = None
    ready_ns: int | None = None
    # Broadcasts received, in arrival order: (src, seq).
    received: list[tuple[str, int]] = field(default_factory=list)
    directs: list[Any] = field(default_factory=list)
    errors: list[tuple[str, str]] = field(default_factory=list)
    published: list[Published] = field(default_factory=list)
    halted: bool = False
    halted_count: int | None = None  # the count of the last `halted` line
    src: str | None = None
    # time.time_ns() when the parent signalled it to stop (SIGTERM or SIGKILL); None while meant to run.
    stopped_ns: int | None = None
    eof: bool = False
    changed: trio.Event = field(default_factory=trio.Event)
    # Answers to `status` commands, in order.
    status_answers: list[dict[str, Any]] = field(default_factory=list)

    @property
    def host_port(self) -> tuple[str, int]:
        assert self.address is not None
        host, _, port = self.address.rpartition(":")
        return host, int(port)

    @property
    def alive(self) -> bool:
        return self.stopped_ns is None and self.process.returncode is None

    def stderr(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def _on_line(self, line: str) -> None:
        verb, _, rest = line.partition(" ")
        if verb == "m":
            src, seq = rest.split()
            self.received.append((src, int(seq)))
        elif verb == "pub":
            src, seq, ts = rest.split()
            self.src = src
            self.published.append(Published(int(seq), int(ts)))
        elif verb == "d":
            self.directs.append(json.loads(rest))
        elif verb == "error":
            code, _, text = rest.partition(" ")
            self.errors.append((code, text))
        elif verb == "listening":
            self.address = rest.split()[1]
        elif verb == "ready":
            self.ready_ns = int(rest.split()[1])
        elif verb == "halted":
            self.halted = True
            self.halted_count = int(rest.split()[1])
        elif verb == "status":
            self.status_answers.append(json.loads(rest))

    async def read_stdout(self) -> None:
        assert self.process.stdout is not None
        buffer = b""
        try:
            while True:
                chunk = await self.process.stdout.receive_some(65536)
                if not chunk:
                    break
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    self._on_line(line.decode())
                self.changed.set()
                self.changed = trio.Event()
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            pass
        finally:
            self.eof = True
            self.changed.set()

    async def wait_for(self, predicate: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
        """Wait until `predicate()` holds (checked after each batch of lines from the child)."""
        try:
            with trio.fail_after(timeout):
                while not predicate():
                    if self.eof:
                        raise AssertionError(f"{self.name} exited before {what}: {self.stderr()}")
                    await self.changed.wait()
        except trio.TooSlowError:
            raise AssertionError(f"{self.name}: no {what} within {timeout:g} s: {self.stderr()}") from None

    async def send(self, line: str) -> None:
        assert self.process.stdin is not None
        await self.process.stdin.send_all((line + "\n").encode())

    async def status(self, timeout: float = WAIT) -> dict[str, Any]:
        """The child's own `status()`, asked over stdin (no connection of the node's is used)."""
        count = len(self.status_answers)
        await self.send("status")
        await self.wait_for(lambda: len(self.status_answers) > count, "status", timeout)
        return self.status_answers[count]

    def kill(self) -> None:
        """SIGKILL, at once."""
        self.stopped_ns = time.time_ns()
        self.process.kill()

    async def terminate(self, timeout: float = WAIT) -> int:
        """SIGTERM (a graceful leave) and wait for the exit; returns the exit status."""
        self.stopped_ns = time.time_ns()
        self.process.terminate()
        with trio.fail_after(timeout):
            return await self.process.wait()

    async def stop(self) -> None:
        """SIGTERM, then SIGKILL after STOP_GRACE; always ends with the process reaped."""
        if self.process.returncode is None and self.stopped_ns is None:
            self.stopped_ns = time.time_ns()
        await stop_process(self.process)
        with trio.CancelScope(shield=True):
            if self.process.stdin is not None:
                with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                    await self.process.stdin.aclose()


class NodeCluster:
    """Node processes of one test; use `open_cluster`, which stops them all at the end."""

    def __init__(self, nursery: trio.Nursery, tmp_path: Path, options: dict[str, Any]) -> None:
        self._nursery = nursery
        self._tmp_path = tmp_path
        # A cluster name of its own, so that nothing from another test or run can join.
        self.options = {"clusterName": f"overlay-test-{uuid.uuid4().hex[:12]}", **options}
        self.instances: list[Node] = []  # every process started, in order

    @property
    def nodes(self) -> dict[str, Node]:
        """The latest instance of each name that is meant to be running."""
        latest: dict[str, Node] = {}
        for node in self.instances:
            latest[node.name] = node
        return {name: node for name, node in latest.items() if node.alive}

    async def start(self, name: str, seeds: Iterable[str] = (), *, child_args: Iterable[str] = (),
                    **options: Any) -> Node:
        """Start one node process (`child_args`: more flags of the child, e.g. `--slow-sync 0.005`);
        returns without waiting for it to listen."""
        command = [sys.executable, str(Path(__file__).resolve()), "--name", name,
                   "--options", json.dumps({**self.options, **options}), *child_args]
        for seed in seeds:
            command += ["--seed", seed]
        stderr_path = self._tmp_path / f"{name}-{len(self.instances)}.stderr"
        with open(stderr_path, "wb") as stderr:
            process = await trio.lowlevel.open_process(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                                       stderr=stderr, cwd=ROOT)
        node = Node(name, process, stderr_path)
        self.instances.append(node)
        self._nursery.start_soon(node.read_stdout)
        return node

    async def start_many(self, names: list[str], timeout: float = WAIT) -> list[Node]:
        """Start `names` together: the first on its own, the rest seeded with its address as soon as it
        listens. Returns once every one is listening (not necessarily ready)."""
        first = await self.start(names[0])
        await first.wait_for(lambda: first.address is not None, "listening", timeout)
        assert first.address is not None
        nodes = [first] + [await self.start(name, [first.address]) for name in names[1:]]
        with trio.fail_after(timeout):
            for node in nodes:
                await node.wait_for(lambda n=node: n.address is not None, "listening", timeout)
        return nodes

    async def wait_ready(self, nodes: Iterable[Node], timeout: float = WAIT) -> None:
        with trio.fail_after(timeout):
            for node in nodes:
                await node.wait_for(lambda n=node: n.ready_ns is not None, "ready", timeout)

    async def statuses(self, nodes: Iterable[Node] | None = None,
                       timeout: float = 5.0) -> dict[str, dict[str, Any]]:
        """The status of each node (all running ones by default), fetched concurrently."""
        targets = list(self.nodes.values() if nodes is None else nodes)
        result: dict[str, dict[str, Any]] = {}

        async def one(node: Node) -> None:
            result[node.name] = await fetch_status(*node.host_port, timeout=timeout)

        async with trio.open_nursery() as nursery:
            for node in targets:
                nursery.start_soon(one, node)
        return result

    async def stop_all(self) -> None:
        with trio.CancelScope(shield=True):
            async with trio.open_nursery() as nursery:
                for node in self.instances:
                    nursery.start_soon(node.stop)


@contextlib.asynccontextmanager
async def open_cluster(tmp_path: Path, **options: Any) -> AsyncIterator[NodeCluster]:
    """A NodeCluster whose processes are all stopped (SIGTERM, then SIGKILL) when the block ends."""
    async with trio.open_nursery() as nursery:
        cluster = NodeCluster(nursery, tmp_path, options)
        try:
            yield cluster
        finally:
            await cluster.stop_all()
            nursery.cancel_scope.cancel()


# ---------------------------------------------------------------------- the ring


def true_ring_neighbours(names: Iterable[str], local_links: int = 4) -> dict[str, set[str]]:
    """Each name's `local_links` true ring neighbours (half per side) among `names`."""
    names = list(names)
    per_side = max(1, (local_links + 1) // 2)
    positions = {name: ring.position(name) for name in names}
    return {name: set(ring.nearest_per_side(positions[name], [(other, positions[other]) for other in names
                                                              if other != name], per_side))
            for name in names}


def local_links(status: dict[str, Any]) -> set[str]:
    return {link["name"] for link in status["link_details"] if link["kind"] == "local"}


def ring_mismatches(statuses: dict[str, dict[str, Any]], local_count: int = 4) -> dict[str, Any]:
    """Nodes whose local links are not their true ring neighbours among the nodes of `statuses`:
    name -> (local links, expected)."""
    expected = true_ring_neighbours(statuses, local_count)
    return {name: (sorted(local_links(status)), sorted(expected[name]))
            for name, status in statuses.items() if local_links(status) != expected[name]}


if __name__ == "__main__":
    sys.exit(_child_entry())
