"""The command line, across real processes: `python -m swarm node|sub|pub|demo`.

Five nodes run as `python -m swarm node --config FILE` (ports ephemeral, seeded with the first node's
address as read from its stdout), messages go in through `python -m swarm pub` and come out of
`python -m swarm sub` as JSON lines. Every process a test starts is stopped by the `launch` fixture
(SIGTERM, then SIGKILL), every wait is bounded, and only 127.0.0.1 is used.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import trio
from procs import Proc

from swarm.cli import to_json_line

pytestmark = pytest.mark.multiprocess

HOST = "127.0.0.1"
ROOT = Path(__file__).resolve().parent.parent
# Bound of one wait for a process (start-up includes importing trio: slow on a loaded CI machine).
WAIT = 20.0


def config_text(name: str | None = None, *, seeds: Sequence[str] = (), plugin: str = "type: direct",
                **options: Any) -> str:
    """A deepstream-style config.yml for a loopback node on an ephemeral port."""
    lines = [f"serverName: {name}"] if name else []
    lines += ["plugins:", "  message:", f"    {plugin}", "    options:", f"      host: {HOST}",
              f"      port: {options.pop('port', 0)}"]
    if seeds:
        lines.append(f"      seedNodes: [{', '.join(seeds)}]")
    for key, value in options.items():
        lines.append(f"      {key}: {json.dumps(value)}")
    return "\n".join(lines) + "\n"


def swarm_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "swarm", *args]


Launch = Callable[..., Awaitable[Proc]]


@pytest.fixture
async def launch(tmp_path: Path) -> AsyncIterator[Launch]:
    """`await launch(name, *args)` starts `python -m swarm *args`; every process is stopped afterwards."""
    procs: list[Proc] = []

    async def start(name: str, *args: str) -> Proc:
        stderr_path = tmp_path / f"{name}.stderr"
        with open(stderr_path, "wb") as stderr:
            process = await trio.lowlevel.open_process(swarm_command(*args), stdin=subprocess.DEVNULL,
                                                       stdout=subprocess.PIPE, stderr=stderr, cwd=ROOT)
        proc = Proc(process, stderr_path, name)
        procs.append(proc)
        return proc

    try:
        yield start
    finally:
        with trio.CancelScope(shield=True):
            async with trio.open_nursery() as nursery:
                for proc in procs:
                    nursery.start_soon(proc.stop)


async def run_swarm(*args: str, timeout: float = WAIT) -> subprocess.CompletedProcess[bytes]:
    """Run `python -m swarm *args` to completion (killed if it outlives `timeout`)."""
    with trio.fail_after(timeout):
        return await trio.run_process(swarm_command(*args), stdin=subprocess.DEVNULL, capture_stdout=True,
                                      capture_stderr=True, check=False, cwd=ROOT)


async def start_cluster(launch: Launch, tmp_path: Path, count: int) -> list[str]:
    """`count` nodes from config files; returns their addresses once every node is ready."""
    first_config = tmp_path / "node-0.yml"
    first_config.write_text(config_text("node-0"))
    first = await launch("node-0", "node", "--config", str(first_config))
    name, address = (await first.expect("listening")).split()
    assert name == "node-0" and address.startswith(f"{HOST}:")
    nodes, addresses = [first], [address]
    for i in range(1, count):
        config = tmp_path / f"node-{i}.yml"
        config.write_text(config_text(f"node-{i}", seeds=[addresses[0]]))
        nodes.append(await launch(f"node-{i}", "node", "--config", str(config)))
    for i, node in enumerate(nodes[1:], start=1):
        name, address = (await node.expect("listening")).split()
        assert name == f"node-{i}"
        addresses.append(address)
    for i, node in enumerate(nodes):
        assert await node.expect("ready") == f"node-{i}"
    return addresses


async def test_five_nodes_pub_and_sub(launch: Launch, tmp_path: Path) -> None:
    addresses = await start_cluster(launch, tmp_path, 5)

    # A subscriber from a config file on a str topic, one from flags only on an int topic.
    sub_config = tmp_path / "sub.yml"
    sub_config.write_text(config_text(seeds=[addresses[2]]))
    events = await launch("sub-events", "sub", "--config", str(sub_config), "events")
    numbers = await launch("sub-7", "sub", "--option", f"seedNodes={addresses[4]}", "7")
    for sub in (events, numbers):
        name, address = (await sub.stderr_line("listening")).split()
        assert address.startswith(f"{HOST}:") and address not in addresses  # an ephemeral port of its own
        assert await sub.stderr_line("ready") == name

    messages = [
        {"n": 1, "text": "héllo wörld ✓", "nested": {"list": [1, 2.5, None, True, False], "empty": {}}},
        [1, "two", [3, [4, [5]]]],
        "a plain string",
        {"n": 4, "big": 2**62, "negative": -17, "float": 0.1},
        None,
        {"done": True},
    ]
    # Each publisher reaches the cluster through a different node; a pub ends once a peer has the message.
    for i, message in enumerate(messages):
        pub_config = tmp_path / f"pub-{i}.yml"
        pub_config.write_text(config_text(seeds=[addresses[i % len(addresses)]]))
        done = await run_swarm("pub", "--config", str(pub_config), "events", json.dumps(message),
                               "--timeout", "10")
        assert done.returncode == 0, done.stderr.decode()
        assert done.stdout == b""
    for value in (7, {"seven": 7}):
        done = await run_swarm("pub", "--option", f"seedNodes={addresses[1]}", "7", json.dumps(value))
        assert done.returncode == 0, done.stderr.decode()
    done = await run_swarm("pub", "--option", f"seedNodes={addresses[3]}", "nobody-listens", "1")
    assert done.returncode == 0, done.stderr.decode()

    received = []
    while len(received) < len(messages):
        line = await events.read_line()
        assert line is not None, events.stderr()
        received.append(json.loads(line))
    assert received == messages  # exactly once, in order, deep-equal; nothing from the other topics
    numbers_received = [json.loads(await numbers.read_line() or "null") for _ in range(2)]
    assert numbers_received == [7, {"seven": 7}]

    # SIGTERM: the subscribers leave cleanly, and nothing else (no duplicate) was printed.
    for sub in (events, numbers):
        sub.process.terminate()
        assert await sub.wait() == 0, sub.stderr()
        assert await sub.rest_of_stdout() == []


async def test_pub_fails_when_no_peer_is_reachable() -> None:
    # A bound socket that does not listen: connections are refused, and nobody else can take the port.
    with socket.socket() as closed_port:
        closed_port.bind((HOST, 0))
        port = closed_port.getsockname()[1]
        done = await run_swarm("pub", "--option", f"seedNodes={HOST}:{port}", "--timeout", "0.5",
                               "events", '{"lost": true}')
    assert done.returncode == 1
    lines = done.stderr.decode().splitlines()
    assert lines == [f"swarm: error: no peer reachable within 0.5 s (seedNodes: {HOST}:{port})"]


PLUGIN_OPTIONS = "plugins:\n  message:\n    type: direct\n    options:\n"

CONFIG_ERRORS = {
    # id: (config.yml text or None, extra arguments, words the one error line must contain)
    "no-plugins": ("serverName: a\n", [], ["plugins.message", "type: direct"]),
    "no-message-plugin": ("plugins:\n  cache:\n    name: redis\n", [], ["plugins.message", "missing"]),
    "type-redis": ("plugins:\n  message:\n    type: redis\n", [],
                   ["plugins.message.type", "'direct'", "redis"]),
    "name-redis": ("plugins:\n  message:\n    name: redis\n", [], ["plugins.message.type", "'direct'"]),
    "unknown-option": (PLUGIN_OPTIONS + "      colour: blue\n", [], ["colour", "unknown option"]),
    "port-not-int": (PLUGIN_OPTIONS + "      port: '6021'\n", [], ["port", "an integer in 0..65535"]),
    "port-range": (PLUGIN_OPTIONS + "      port: 70000\n", [], ["port", "an integer in 0..65535", "70000"]),
    "seed-not-address": (PLUGIN_OPTIONS + "      seedNodes: [nowhere]\n", [],
                         ["seedNodes[0]", "'host:port'"]),
    "timeout-negative": (PLUGIN_OPTIONS + "      failureTimeout: -1\n", [], ["failureTimeout", ">= 0.1"]),
    "not-yaml": ("plugins: [\n", [], ["config", "not valid YAML"]),
    "unreadable": (None, ["--config", "does-not-exist.yml"], ["config", "cannot read", "does-not-exist.yml"]),
    "option-syntax": (None, ["--option", "port"], ["--option", "key=value", "'port'"]),
    "option-type": (None, ["--option", "port=abc"], ["port", "an integer", "'abc'"]),
    "option-unknown": (None, ["--option", "colour=blue"], ["colour", "unknown option"]),
    "option-bool": (None, ["--option", "sendQueueSize=true"], ["sendQueueSize", "an integer"]),
}


# Every case for `node`; `sub` and `pub` share its loader, so a few cases suffice for them.
CONFIG_ERROR_RUNS = [(case, "node") for case in CONFIG_ERRORS] + [
    (case, command) for command in ("sub", "pub") for case in ("type-redis", "unknown-option", "option-type")]


@pytest.mark.parametrize(("case", "command"), CONFIG_ERROR_RUNS)
async def test_config_errors_exit_2_with_one_line(case: str, command: str, tmp_path: Path) -> None:
    text, extra, words = CONFIG_ERRORS[case]
    args = [command, *extra]
    if text is not None:
        config = tmp_path / "config.yml"
        config.write_text(text)
        args += ["--config", str(config)]
    args += {"node": [], "sub": ["events"], "pub": ["events", "{}"]}[command]
    done = await run_swarm(*args, timeout=WAIT)
    lines = done.stderr.decode().splitlines()
    assert done.returncode == 2, lines
    assert len(lines) == 1 and lines[0].startswith("swarm: error: "), lines
    for word in words:
        assert word in lines[0]
    assert done.stdout == b""


async def test_pub_rejects_bad_json() -> None:
    done = await run_swarm("pub", "--option", f"seedNodes={HOST}:9", "events", "{not json")
    lines = done.stderr.decode().splitlines()
    assert done.returncode == 2
    assert len(lines) == 1 and lines[0].startswith("swarm: error: JSON: expected a JSON value")


async def test_name_direct_is_accepted_and_sigterm_leaves_cleanly(launch: Launch, tmp_path: Path) -> None:
    leaving_config = tmp_path / "a.yml"
    leaving_config.write_text(config_text("node-a", plugin="name: direct"))  # deepstream 3's spelling
    leaving = await launch("node-a", "node", "--config", str(leaving_config))
    address = (await leaving.expect("listening")).split()[1]
    staying_config = tmp_path / "b.yml"
    staying_config.write_text(config_text("overridden", seeds=[address]))
    staying = await launch("node-b", "node", "--config", str(staying_config), "--log-level", "INFO",
                           "--option", "serverName=node-b")  # a flag wins over the file
    assert await staying.expect("ready") == "node-b"
    assert await leaving.expect("ready") == "node-a"

    leaving.process.send_signal(signal.SIGTERM)
    assert await leaving.wait() == 0, leaving.stderr()
    assert await leaving.rest_of_stdout() == []
    assert leaving.stderr() == ""  # no traceback, no warning
    # The peer was told: it logs the leave (it does not wait for a failure timeout to notice).
    with trio.fail_after(WAIT):
        while "node-b: node-a left the cluster" not in staying.stderr():
            await trio.sleep(0.02)

    staying.process.send_signal(signal.SIGINT)  # Ctrl-C works the same way
    assert await staying.wait() == 0, staying.stderr()


def demo_processes(demo_pid: int) -> list[int]:
    """Pids of the node processes a demo started (they carry its cluster name: swarm.harness.start_node)."""
    marker = f"clusterName=swarm-demo-{demo_pid}".encode()
    found: list[int] = []
    if not os.path.isdir("/proc"):
        return found
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if marker in cmdline and b"_demo-node" in cmdline:
                found.append(int(entry))
    return found


async def test_demo_reports_nothing_lost(launch: Launch) -> None:
    demo = await launch("demo", "demo", "--nodes", "4", "--messages", "200", "--publishers", "2")
    lines = await demo.rest_of_stdout(timeout=60)
    assert await demo.wait() == 0, "\n".join(lines) + demo.stderr()
    rows = [line for line in lines if line.startswith("node-")]
    assert len(rows) == 4
    assert any("delivered/expected" in line and "p99 ms" in line for line in lines)
    expected = {"node-0": "200/200", "node-1": "400/400", "node-2": "200/200", "node-3": "400/400"}
    for row in rows:
        name, *_, ratio, duplicates, out_of_order, dropped, _p50, _p99 = row.split()
        assert ratio == expected[name], row
        assert (duplicates, out_of_order, dropped) == ("0", "0", "0"), row
    assert lines[-1].startswith("OK: ") and "0 lost, 0 duplicated, 0 out of order" in lines[-1]
    assert demo_processes(demo.process.pid) == []


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="finds the node processes through /proc")
async def test_demo_over_mutual_tls_loses_nothing(launch: Launch) -> None:
    """Issue 6: a 5-node TLS cluster runs the demo with zero loss."""
    demo = await launch("demo", "demo", "--nodes", "5", "--messages", "300", "--publishers", "2", "--tls")
    lines = await demo.rest_of_stdout(timeout=60)
    assert await demo.wait() == 0, "\n".join(lines) + demo.stderr()
    assert "mutual TLS 1.3" in lines[0]
    assert len([line for line in lines if line.startswith("node-")]) == 5
    assert lines[-1].startswith("OK: ") and "0 lost, 0 duplicated, 0 out of order" in lines[-1]
    assert demo_processes(demo.process.pid) == []


async def test_interrupted_demo_stops_every_node(launch: Launch) -> None:
    demo = await launch("demo", "demo", "--nodes", "3", "--messages", "1000000", "--rate", "100")
    await demo.expect("3")  # "3 nodes linked ...": the nodes run and the stream has started
    assert len(demo_processes(demo.process.pid)) == 3
    demo.process.send_signal(signal.SIGINT)
    assert await demo.wait() == 130
    assert demo_processes(demo.process.pid) == []
    assert "interrupted" in demo.stderr()


def test_json_lines_carry_bytes_as_base64() -> None:
    assert to_json_line({"b": b"\x00\xffhi", "t": (1, 2)}) == '{"b":"AP9oaQ==","t":[1,2]}'
    assert to_json_line({b"key": [b"v"], 3: "x"}) == '{"a2V5":["dg=="],"3":"x"}'
