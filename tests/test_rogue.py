"""Signed origins against a real rogue member: a process with a valid certificate of the cluster
(`tests/rogue.py`) that writes hand-made frames.

The cluster: honest nodes `a` and `b` (linked to each other), the rogue dialling `a`, and an honest node
`c` whose only seed, and so only link, is the rogue: everything `c` gets from the cluster the rogue has
relayed. The rogue forges a DATA frame under `b`'s name (with `b`'s next message number), alters a
frame of `a` it relays to `c`, forges a LEAVE of `b` and a PEERS entry saying `b` moved and restarted,
and replays frames it relayed before. Every honest node must refuse each, say so (counters, an `error`
event naming the relay), and keep delivering honest traffic: the assertions are on what each node
delivered, as (origin, seq) histories, never on timings.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio
from cluster import Errors, wait_until
from test_tls import HOST, Pki, tls_options

import swarm

ROOT = Path(__file__).resolve().parent.parent
WAIT = 15.0
TOPIC = "t"


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path)


class RogueProcess:
    """The rogue's process: commands in on stdin, its lines read by a task into `lines`."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self.lines: list[str] = []
        self.address: tuple[str, int] | None = None

    async def read(self) -> None:
        assert self.process.stdout is not None
        buffer = b""
        async for data in self.process.stdout:
            buffer += data
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                text = line.decode()
                self.lines.append(text)
                if text.startswith("listening "):
                    host, port = text.split()[1].rsplit(":", 1)
                    self.address = (host, int(port))

    async def command(self, **fields: Any) -> None:
        done = len([line for line in self.lines if line == f"done {fields['cmd']}"])
        assert self.process.stdin is not None
        await self.process.stdin.send_all(json.dumps(fields).encode() + b"\n")
        await wait_until(lambda: len([line for line in self.lines if line == f"done {fields['cmd']}"]) > done,
                         WAIT, f"the rogue to carry out {fields['cmd']}")

    def linked(self, name: str) -> bool:
        return f"linked {name}" in self.lines


@contextlib.asynccontextmanager
async def rogue_process(pki: Pki, dial: tuple[str, int]) -> AsyncIterator[RogueProcess]:
    files = pki.files("rogue")
    command = [sys.executable, str(ROOT / "tests" / "rogue.py"), "--ca", files["ca"], "--cert", files["cert"],
               "--key", files["key"], "--dial", f"{dial[0]}:{dial[1]}"]
    process = await trio.lowlevel.open_process(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    rogue = RogueProcess(process)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(rogue.read)
            await wait_until(lambda: rogue.address is not None, WAIT, "the rogue to listen")
            yield rogue
            nursery.cancel_scope.cancel()
    finally:
        process.kill()
        with trio.move_on_after(5):
            await process.wait()


class History:
    """What one node delivered on TOPIC: (origin, seq) in order, and the messages themselves."""

    def __init__(self, conn: swarm.Connector) -> None:
        self.items: list[tuple[str, int]] = []
        self.messages: list[Any] = []
        conn.subscribe(TOPIC, self)

    def __call__(self, message: Any) -> None:
        self.messages.append(message)
        if isinstance(message, dict) and "src" in message:
            self.items.append((message["src"], message["seq"]))

    def of(self, origin: str) -> list[int]:
        return [seq for src, seq in self.items if src == origin]


def counter(conn: swarm.Connector, name: str) -> int:
    return conn.status()["counters"].get(name, 0)


@pytest.mark.trio
async def test_a_rogue_member_cannot_forge_alter_leave_for_or_replay_others(pki: Pki) -> None:
    with trio.fail_after(90):
        async with contextlib.AsyncExitStack() as stack:
            a = await stack.enter_async_context(swarm.Connector(tls_options(pki, "a")))
            b = await stack.enter_async_context(swarm.Connector(tls_options(pki, "b", [a.address])))
            histories = {conn.server_name: History(conn) for conn in (a, b)}
            errors = {conn.server_name: Errors(conn) for conn in (a, b)}
            rogue = await stack.enter_async_context(rogue_process(pki, a.address))
            assert rogue.address is not None
            c = swarm.Connector(tls_options(pki, "c", [rogue.address]))
            histories["c"], errors["c"] = History(c), Errors(c)
            await stack.enter_async_context(c)
            await wait_until(lambda: rogue.linked("a") and rogue.linked("c") and "b" in a.status()["links"],
                             WAIT, "a-b, rogue-a and rogue-c linked")
            assert c.status()["links"] == ["rogue"]  # all c gets from the cluster comes through the rogue

            async def publish(conn: swarm.Connector, first: int, last: int) -> None:
                for seq in range(first, last + 1):
                    conn.publish(TOPIC, {"src": conn.server_name, "seq": seq})
                await conn.flush()

            # 1. An honest relay: signed frames check out through an untrusted relay.
            await publish(a, 1, 10)
            await wait_until(lambda: histories["c"].of("a") == list(range(1, 11))
                             and histories["b"].of("a") == list(range(1, 11)), WAIT, "a's 1..10 everywhere")

            # 2. The rogue alters a's frames on their way to c, while b's go through honestly.
            await rogue.command(cmd="alter", origin="a")
            await publish(a, 11, 20)
            await publish(b, 1, 10)
            await wait_until(lambda: histories["c"].of("b") == list(range(1, 11))
                             and histories["a"].of("b") == list(range(1, 11))
                             and histories["b"].of("a") == list(range(1, 21)), WAIT, "honest traffic")
            await wait_until(lambda: counter(c, "forged_frames_refused") > 0, WAIT, "c to refuse")
            assert histories["c"].of("a") == list(range(1, 11))  # nothing altered delivered
            await wait_until(lambda: "unverified" in errors["c"].codes(), WAIT, "c's error event")
            reported = [e for e in errors["c"].errors if e.code == "unverified"]
            assert any("rogue" in str(e) for e in reported), reported  # it names the relay
            await rogue.command(cmd="alter", origin=None)

            # 3. A forged DATA frame under b's name, numbered as b's next message, signed by the rogue.
            b_epoch = b.status()["epoch"]
            forged_before = {name: counter(conn, "forged_frames_refused") for name, conn in
                             (("a", a), ("c", c))}
            await rogue.command(cmd="forge", origin="b", epoch=b_epoch, seq=11, topic=TOPIC,
                                message={"src": "b", "seq": 11, "forged": True})
            await wait_until(lambda: all(counter(conn, "forged_frames_refused") > forged_before[name]
                                         for name, conn in (("a", a), ("c", c))), WAIT, "a and c to refuse")
            await publish(b, 11, 15)  # the genuine 11 still takes its number everywhere
            await wait_until(lambda: histories["a"].of("b") == list(range(1, 16))
                             and histories["c"].of("b") == list(range(1, 16)), WAIT, "b's genuine 11..15")

            # 4. A forged LEAVE for b, and a PEERS entry saying b moved and restarted.
            await rogue.command(cmd="leave", name="b", epoch=b_epoch, address=list(b.address))
            await rogue.command(cmd="peers", name="b", address=[HOST, 1], epoch=b_epoch + 1)
            await wait_until(lambda: counter(a, "leaves_refused") > 0
                             and counter(a, "peer_records_refused") > 0, WAIT, "a to refuse LEAVE and record")
            await publish(b, 16, 20)
            await wait_until(lambda: histories["a"].of("b") == list(range(1, 21)), WAIT, "b's 16..20 at a")
            assert "b" in a.status()["links"]  # a neither dropped b nor took the false address

            # 5. Replays: every frame of a and b the rogue relayed, again, byte for byte.
            duplicates = counter(c, "duplicates")
            await rogue.command(cmd="replay", origin="a")
            await rogue.command(cmd="replay", origin="b")
            await wait_until(lambda: counter(c, "duplicates") > duplicates, WAIT, "c to see the replays")
            await publish(a, 21, 25)
            await wait_until(lambda: histories["b"].of("a") == list(range(1, 26)), WAIT, "a's 21..25 at b")

            for name, history in histories.items():
                assert len(history.items) == len(set(history.items)), f"{name} delivered something twice"
                for origin in ("a", "b"):
                    assert history.of(origin) == sorted(history.of(origin)), f"{name}: {origin} out of order"
                assert not any(isinstance(m, dict) and m.get("forged") for m in history.messages), name
            assert histories["b"].of("a") == list(range(1, 26))
            assert histories["a"].of("b") == list(range(1, 21))
            assert histories["c"].of("b") == list(range(1, 21))
