"""Partition and heal (issue 3), with Linux network namespaces the test creates and removes itself.

"After the cluster is cut in two long enough for each side to declare the other dead, the halves merge
again within 30 s of the cut ending."

Two namespaces, A and B (named with this process's id, so parallel runs do not clash), are joined by one
veth pair with addresses 10.213.0.1 (A) and 10.213.0.2 (B), a private range used only inside them.
Five node processes run in each (`ip netns exec NS python -m swarm sub TOPIC`, ports ephemeral), all
seeded with the first node of A. Once the ten form one true ring, the veth is set down; when both halves
are separate true rings and their links across have been dead for failureTimeout + forgetAfter, it is
set up again, and the ten must form one true ring again within 30 s. Then a message published in B
(`python -m swarm pub` inside B, seeded with a node of B) must reach every node of both halves once.

Node status comes from the nodes themselves, over their status request: a small poller process per
namespace asks every node there (`swarm.transport.engine.fetch_status`, what `python -m swarm status`
uses) about three times a second and writes the answers to a file; each phase's final check also runs
`python -m swarm status HOST:PORT --json` for every node. Needs root and iproute2 (`ip netns`); skipped
otherwise. Every wait is bounded; processes and namespaces are removed in all cases.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from swarm.topology import ring

pytestmark = pytest.mark.multiprocess

ROOT = Path(__file__).resolve().parent.parent
SUBNET = "10.213.0"
TOPIC = "partition-heal"
PER_SIDE = 2  # localLinks 4 (the default)
MAX_PEERS = 12
FAILURE_TIMEOUT = 3.0
FORGET_AFTER = 5.0
NODE_OPTIONS = {"failureTimeout": FAILURE_TIMEOUT, "forgetAfter": FORGET_AFTER}
HEAL_WITHIN = 30.0  # the bound, from the moment the link is up again
STARTUP = 30.0  # generous: ten Python processes start at once on a possibly loaded machine
CONVERGE = 30.0

POLLER = r"""
import json, os, sys, time
import trio
from swarm.transport.engine import fetch_status

async def main(out, addresses):
    number = 0
    while True:
        started = time.time()
        nodes = {}
        for address in addresses:
            host, _, port = address.rpartition(":")
            try:
                nodes[address] = await fetch_status(host, int(port), timeout=2.0)
            except Exception as error:
                nodes[address] = {"error": repr(error)}
        number += 1
        with open(out + ".tmp", "w") as handle:
            json.dump({"number": number, "started": started, "nodes": nodes}, handle, default=str)
        os.replace(out + ".tmp", out)
        await trio.sleep(0.3)

trio.run(main, sys.argv[1], sys.argv[2:])
"""


def run(*command: str, check: bool = True, timeout: float = 10.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, check=check, timeout=timeout)


def true_neighbours(names: list[str], name: str) -> set[str]:
    others = [(other, ring.position(other)) for other in names if other != name]
    return set(ring.nearest_per_side(ring.position(name), others, PER_SIDE))


@dataclass
class Node:
    name: str
    namespace: str
    host: str
    process: subprocess.Popen[bytes]
    stdout: Path
    stderr: Path
    address: str = ""

    def stderr_text(self) -> str:
        return self.stderr.read_text(errors="replace") if self.stderr.exists() else ""

    def messages(self) -> list[Any]:
        if not self.stdout.exists():
            return []
        lines = self.stdout.read_text(errors="replace").splitlines()
        return [json.loads(line) for line in lines if line.strip()]


@dataclass
class Netns:
    """Two namespaces joined by a veth pair, and the processes run in them."""

    a: str
    b: str
    veth_a: str
    veth_b: str
    tmp: Path
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    host = {"A": f"{SUBNET}.1", "B": f"{SUBNET}.2"}

    def ns(self, side: str) -> str:
        return self.a if side == "A" else self.b

    def spawn(self, side: str, args: list[str], stdout: Path, stderr: Path) -> subprocess.Popen[bytes]:
        with open(stdout, "wb") as out, open(stderr, "wb") as err:
            process = subprocess.Popen(["ip", "netns", "exec", self.ns(side), sys.executable, *args],
                                       stdin=subprocess.DEVNULL, stdout=out, stderr=err, cwd=ROOT)
        self.processes.append(process)
        return process

    def set_link(self, up: bool) -> None:
        state = "up" if up else "down"
        run("ip", "-n", self.a, "link", "set", self.veth_a, state)
        run("ip", "-n", self.b, "link", "set", self.veth_b, state)

    def stop_all(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 5.0
        for process in self.processes:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5.0)


def netns_unavailable() -> str | None:
    if not sys.platform.startswith("linux"):
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "network namespaces need root (ip netns add)"
    if shutil.which("ip") is None:
        return "iproute2's `ip` command is not installed"
    return None


@contextlib.contextmanager
def namespaces(tmp: Path) -> Iterator[Netns]:
    """Create the two namespaces and their veth pair; on exit stop every process started in them and
    delete both (which deletes the veth pair), whatever happened."""
    pid = os.getpid()
    env = Netns(a=f"swarm-a-{pid}", b=f"swarm-b-{pid}", veth_a=f"swa{pid}", veth_b=f"swb{pid}", tmp=tmp)
    created: list[str] = []
    try:
        probe = run("ip", "netns", "add", env.a, check=False)
        if probe.returncode != 0:
            pytest.skip(f"partition test skipped: `ip netns add` failed: {probe.stderr.strip()}")
        created.append(env.a)
        run("ip", "netns", "add", env.b)
        created.append(env.b)
        run("ip", "link", "add", env.veth_a, "type", "veth", "peer", "name", env.veth_b)
        for side, veth in (("A", env.veth_a), ("B", env.veth_b)):
            ns = env.ns(side)
            run("ip", "link", "set", veth, "netns", ns)
            run("ip", "-n", ns, "addr", "add", f"{env.host[side]}/24", "dev", veth)
            run("ip", "-n", ns, "link", "set", "lo", "up")
            run("ip", "-n", ns, "link", "set", veth, "up")
        yield env
    finally:
        env.stop_all()
        for ns in created:
            run("ip", "netns", "del", ns, check=False)
        # Only if setup failed before moving the veth into a namespace (deleting one removes its pair).
        if run("ip", "link", "show", env.veth_a, check=False).returncode == 0:
            run("ip", "link", "del", env.veth_a, check=False)
        leftover = [ns for ns in created if ns in run("ip", "netns", "list", check=False).stdout.split()]
        assert not leftover, f"namespaces left behind: {leftover}"


@pytest.fixture
def netns(tmp_path: Path) -> Iterator[Netns]:
    reason = netns_unavailable()
    if reason:
        pytest.skip(f"partition test skipped: {reason}")
    with namespaces(tmp_path) as env:
        yield env


def wait_for(predicate: Callable[[], Any], timeout: float, what: Callable[[], str] | str) -> float:
    """Poll until `predicate()` is true; return the seconds it took; fail with `what` after `timeout`."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout:g}s waiting for "
                                 f"{what() if callable(what) else what}")
        time.sleep(0.1)
    return time.monotonic() - start


class Cluster:
    def __init__(self, env: Netns) -> None:
        self.env = env
        self.nodes: list[Node] = []
        self.pollers: dict[str, Path] = {}

    def start_node(self, name: str, side: str, seed: str | None) -> Node:
        host = self.env.host[side]
        options = {"serverName": name, "host": host, "port": 0, **NODE_OPTIONS}
        if seed:
            options["seedNodes"] = seed
        args = ["-m", "swarm", "sub", TOPIC]
        for key, value in options.items():
            args += ["--option", f"{key}={value}"]
        out, err = self.env.tmp / f"{name}.out", self.env.tmp / f"{name}.err"
        process = self.env.spawn(side, args, out, err)
        node = Node(name, self.env.ns(side), host, process, out, err)
        self.nodes.append(node)
        return node

    def wait_listening(self, node: Node) -> None:
        def listening() -> bool:
            for line in node.stderr_text().splitlines():
                head, _, rest = line.partition(" ")
                if head == "listening":
                    node.address = rest.split()[1]
                    return True
            if node.process.poll() is not None:
                raise AssertionError(f"{node.name} exited ({node.process.returncode}): {node.stderr_text()}")
            return False

        wait_for(listening, STARTUP, f"{node.name} to listen")

    def side(self, side: str) -> list[Node]:
        host = self.env.host[side]
        return [node for node in self.nodes if node.host == host]

    def start_pollers(self) -> None:
        for side in ("A", "B"):
            out = self.env.tmp / f"status-{side}.json"
            self.env.spawn(side, ["-c", POLLER, str(out), *(n.address for n in self.side(side))],
                           self.env.tmp / f"poller-{side}.out", self.env.tmp / f"poller-{side}.err")
            self.pollers[side] = out

    def statuses(self, newer_than: float = 0.0) -> dict[str, dict[str, Any]] | None:
        """The latest status of every node (by name), from snapshots started after `newer_than` (a
        time.time()); None if there is none yet or a node did not answer."""
        result: dict[str, dict[str, Any]] = {}
        for side, path in self.pollers.items():
            try:
                snapshot = json.loads(path.read_text())
            except (OSError, ValueError):
                return None
            if snapshot["started"] < newer_than:
                return None
            for node in self.side(side):
                status = snapshot["nodes"].get(node.address, {})
                if "error" in status or "name" not in status:
                    return None
                result[node.name] = status
        return result

    def cli_statuses(self) -> dict[str, dict[str, Any]]:
        """Every node's status through `python -m swarm status HOST:PORT --json`, inside its namespace."""
        launched = []
        for node in self.nodes:
            command = ["ip", "netns", "exec", node.namespace, sys.executable, "-m", "swarm", "status",
                       node.address, "--json", "--timeout", "5"]
            launched.append((node, subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                                    cwd=ROOT)))
        result = {}
        for node, process in launched:
            try:
                out, err = process.communicate(timeout=20.0)
            except subprocess.TimeoutExpired:
                process.kill()
                process.communicate(timeout=5.0)
                raise AssertionError(f"`swarm status` of {node.name} did not finish") from None
            assert process.returncode == 0, f"`swarm status` of {node.name}: {err.decode(errors='replace')}"
            result[node.name] = json.loads(out)
        return result


def ring_problems(statuses: dict[str, dict[str, Any]] | None, groups: list[list[str]]) -> list[str]:
    """What keeps the nodes from forming one true ring per group, with no link between groups."""
    if statuses is None:
        return ["no fresh status from every node yet"]
    problems = []
    for group in groups:
        members = set(group)
        for name in group:
            status = statuses[name]
            links = set(status["links"])
            local = {link["name"] for link in status["link_details"] if link["kind"] == "local"}
            truth = true_neighbours(group, name)
            if local != truth:
                problems.append(f"{name}: local links {sorted(local)}, true ring neighbours {sorted(truth)}")
            if links - members:
                problems.append(f"{name}: links across groups {sorted(links - members)}")
            if len(links) > MAX_PEERS:
                problems.append(f"{name}: {len(links)} links > maxPeers {MAX_PEERS}")
        adjacency = {name: set(statuses[name]["links"]) & members for name in group}
        seen, todo = {group[0]}, [group[0]]
        while todo:
            for peer in adjacency[todo.pop()]:
                if peer not in seen:
                    seen.add(peer)
                    todo.append(peer)
        if seen != members:
            problems.append(f"group {sorted(members)} not connected: reached {sorted(seen)}")
    return problems


def test_partition_heals_within_30s_and_messages_cross_again(netns: Netns) -> None:
    cluster = Cluster(netns)
    first = cluster.start_node("a0", "A", None)
    cluster.wait_listening(first)
    for i in range(1, 5):
        cluster.start_node(f"a{i}", "A", first.address)
    for i in range(5):
        cluster.start_node(f"b{i}", "B", first.address)
    for node in cluster.nodes[1:]:
        cluster.wait_listening(node)
    cluster.start_pollers()
    names = [node.name for node in cluster.nodes]
    half_a = [node.name for node in cluster.side("A")]
    half_b = [node.name for node in cluster.side("B")]

    def explain(groups: list[list[str]], since: float = 0.0) -> Callable[[], str]:
        return lambda: "; ".join(ring_problems(cluster.statuses(since), groups))

    # 1. One true ring of ten.
    wait_for(lambda: not ring_problems(cluster.statuses(), [names]), CONVERGE, explain([names]))
    assert ring_problems(cluster.cli_statuses(), [names]) == []

    # 2. The cut: each side finds the other dead (failureTimeout), the halves close their own rings.
    cut_at = time.time()
    netns.set_link(False)
    split = wait_for(lambda: not ring_problems(cluster.statuses(cut_at), [half_a, half_b]),
                     FAILURE_TIMEOUT + 20.0, explain([half_a, half_b], cut_at))
    # Long enough for the other side to be forgotten too: links timed out, re-dials failed, forgetAfter.
    time.sleep(max(0.0, FAILURE_TIMEOUT + FAILURE_TIMEOUT + FORGET_AFTER + 2.0 - (time.time() - cut_at)))
    during = cluster.cli_statuses()
    assert ring_problems(during, [half_a, half_b]) == [], "the halves are not two separate true rings"
    forgotten = {name: during[name]["counters"].get("members_forgotten", 0) for name in names}
    known = {name: during[name]["members"] for name in names}
    # Declared dead: each node knows only the four other nodes of its half (`members` in the status).
    assert known == dict.fromkeys(names, 4), f"members known during the cut: {known}"

    # 3. The heal: one true ring of ten again within 30 s of the link coming back.
    healed_from = time.time()
    netns.set_link(True)
    took = wait_for(lambda: not ring_problems(cluster.statuses(healed_from), [names]), HEAL_WITHIN,
                    explain([names], healed_from))
    after = cluster.cli_statuses()
    assert ring_problems(after, [names]) == []

    # 4. A message published in B after the heal reaches every node of A (and of B) exactly once.
    message = {"from": "B", "after": "heal", "t": time.time()}
    publisher = netns.spawn("B", ["-m", "swarm", "pub", TOPIC, json.dumps(message), "--timeout", "15",
                                  "--option", "serverName=pub-b", "--option", f"host={netns.host['B']}",
                                  "--option", f"seedNodes={cluster.side('B')[0].address}"],
                            netns.tmp / "pub.out", netns.tmp / "pub.err")
    assert publisher.wait(timeout=30.0) == 0, (netns.tmp / "pub.err").read_text(errors="replace")
    wait_for(lambda: all(message in node.messages() for node in cluster.nodes), 15.0,
             lambda: "the message on every node: " + ", ".join(
                 f"{node.name}: {len(node.messages())}" for node in cluster.nodes))
    time.sleep(1.0)  # a duplicate would have arrived by now
    for node in cluster.nodes:
        assert node.messages().count(message) == 1, (node.name, node.messages())
    print(f"\nsplit into two rings {split:.1f}s after the cut; one ring again {took:.1f}s after the heal; "
          f"members known during the cut {known}; members forgotten {forgotten}")
    for node in cluster.nodes:
        assert node.process.poll() is None, f"{node.name} exited: {node.stderr_text()}"


def test_namespaces_and_processes_are_removed_even_when_the_body_fails(tmp_path: Path) -> None:
    reason = netns_unavailable()
    if reason:
        pytest.skip(f"partition test skipped: {reason}")
    with pytest.raises(RuntimeError, match="body failed"):
        with namespaces(tmp_path) as env:
            sleeper = env.spawn("A", ["-c", "import time; time.sleep(60)"], tmp_path / "s.out",
                                tmp_path / "s.err")
            raise RuntimeError("the test body failed")
    assert sleeper.poll() is not None
    listed = run("ip", "netns", "list").stdout.split()
    assert env.a not in listed and env.b not in listed
    assert run("ip", "link", "show", env.veth_a, check=False).returncode != 0
