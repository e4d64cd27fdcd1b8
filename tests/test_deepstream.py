"""Real deepstream 7 servers clustered by swarm: the proof of the deepstream drop-in (issue 5).

`@deepstream/server@7.0.2` and `@deepstream/client@7.0.5` are installed with npm into `.cache/deepstream-7`
(git-ignored, reused between runs; `uWebSockets.js`, fetched from a git host no registry serves and only
loaded for `httpServer.type: uws`, is overridden by an empty local package), together with the plugin of
`integrations/deepstream` (a `file:` dependency, so as an npm package). Each deepstream server runs the
plugin against its own `python -m swarm node` sidecar (option `bridge`), or, in the supervised test, runs
the plugin's own node (no `bridge`: the plugin starts, restarts and stops it); `@deepstream/client` clients,
driven by `tests/deepstream/driver.js` over stdin/stdout, connect to different servers and must see each
other's events, RPCs, record updates and presence. Everything binds to 127.0.0.1, every wait is bounded,
and every process started here is stopped here. Skipped only where `node` or `npm` is absent.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
PLUGIN = ROOT / "integrations" / "deepstream"
DRIVER = Path(__file__).resolve().parent / "deepstream" / "driver.js"
PLUGIN_UNIT = Path(__file__).resolve().parent / "deepstream" / "plugin_unit.js"
BURST = Path(__file__).resolve().parent / "deepstream" / "burst.js"
CACHE = Path(os.environ.get("SWARM_DEEPSTREAM_CACHE", ROOT / ".cache" / "deepstream-7"))
SERVER_PACKAGE = "@deepstream/server@7.0.2"
CLIENT_PACKAGE = "@deepstream/client@7.0.5"
HOST = "127.0.0.1"

NODE = shutil.which("node")
NPM = shutil.which("npm")

# Bounds of the waits (seconds).
INSTALL_TIMEOUT = 300.0  # the first `npm install`; a warm cache takes a few seconds
START_TIMEOUT = 30.0  # a sidecar or a deepstream server up and ready
CLUSTER_TIMEOUT = 30.0  # every deepstream server sees the others (heartbeats every 5 s)
EXCHANGE_TIMEOUT = 15.0  # one event, RPC, record update or presence change arriving
STOP_GRACE = 10.0  # SIGINT/SIGTERM, then SIGKILL
QUIET = 1.0  # how long to wait for a duplicate that must not come
RTT_CALLS = 200

pytestmark = [
    pytest.mark.multiprocess,
    pytest.mark.skipif(NODE is None or NPM is None,
                       reason="the deepstream drop-in test needs Node.js and npm (`node`, `npm` on PATH); "
                              "they are absent here"),
]


# ---------------------------------------------------------------------- npm packages in the cache


def _manifest() -> dict[str, Any]:
    server, _, server_version = SERVER_PACKAGE.rpartition("@")
    client, _, client_version = CLIENT_PACKAGE.rpartition("@")
    return {
        "name": "swarm-deepstream-test",
        "private": True,
        "description": "deepstream 7 for tests/test_deepstream.py (installed by the test; git-ignored)",
        "dependencies": {
            server: server_version,
            client: client_version,
            "swarm-clusternode": f"file:{PLUGIN}",
        },
        # deepstream 7 depends on uWebSockets.js from a git host that cannot be reached; it is loaded only
        # for `httpServer.type: uws`, so an empty local package stands in for it.
        "overrides": {"uWebSockets.js": "file:./empty-uws"},
    }


@pytest.fixture(scope="module")
def modules() -> Path:
    """`<cache>/node_modules` with deepstream's server and client and the plugin, installed once."""
    manifest = json.dumps(_manifest(), indent=2, sort_keys=True) + "\n"
    stamp_text = hashlib.sha256(f"{manifest}{_node_version()}".encode()).hexdigest()
    CACHE.mkdir(parents=True, exist_ok=True)
    stamp = CACHE / ".installed"
    with open(CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another test run installing into the same cache
        ready = (stamp.exists() and stamp.read_text() == stamp_text
                 and (CACHE / "node_modules" / "@deepstream" / "server" / "package.json").exists())
        if not ready:
            stamp.unlink(missing_ok=True)
            empty = CACHE / "empty-uws"
            empty.mkdir(exist_ok=True)
            (empty / "package.json").write_text(json.dumps({
                "name": "uWebSockets.js", "version": "0.0.0-empty", "main": "index.js",
                "description": "empty stand-in: deepstream loads it only for httpServer.type uws"}) + "\n")
            (empty / "index.js").write_text(
                "throw new Error('uWebSockets.js is not installed: use httpServer.type default')\n")
            (CACHE / "package.json").write_text(manifest)
            command = [NPM, "install", "--no-audit", "--no-fund", "--ignore-scripts", "--prefer-offline",
                       "--loglevel=error"]
            try:
                done = subprocess.run(command, cwd=CACHE, capture_output=True, text=True,
                                      timeout=INSTALL_TIMEOUT, stdin=subprocess.DEVNULL)
            except subprocess.TimeoutExpired:
                pytest.fail(f"`npm install` of {SERVER_PACKAGE} and {CLIENT_PACKAGE} into {CACHE} took over "
                            f"{INSTALL_TIMEOUT:g} s")
            if done.returncode != 0:
                pytest.fail(f"`npm install` into {CACHE} failed ({done.returncode}):\n"
                            f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
            stamp.write_text(stamp_text)
    return CACHE / "node_modules"


def _node_version() -> str:
    return subprocess.run([NODE, "--version"], capture_output=True, text=True, timeout=30).stdout.strip()


# ---------------------------------------------------------------------- processes


class Proc:
    """A child process whose stdout (and stderr) lines are collected by a thread."""

    def __init__(self, label: str, argv: list[str], *, cwd: Path, env: dict[str, str] | None = None,
                 stdin: bool = False, stop_signal: int = signal.SIGTERM) -> None:
        self.label = label
        self.stop_signal = stop_signal
        self.lines: list[str] = []
        self.cond = threading.Condition()
        self.popen = subprocess.Popen(
            argv, cwd=cwd, env=env, text=True, encoding="utf-8", errors="replace", bufsize=1,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.reader = threading.Thread(target=self._read, name=f"read-{label}", daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            with self.cond:
                self.lines.append(line.rstrip("\n"))
                self.cond.notify_all()
        with self.cond:
            self.cond.notify_all()

    def wait_line(self, predicate: Callable[[str], bool], timeout: float, what: str, start: int = 0) -> str:
        """The first line from index `start` on that satisfies `predicate`; fail after `timeout`."""
        deadline = time.monotonic() + timeout
        index = start
        with self.cond:
            while True:
                while index < len(self.lines):
                    line = self.lines[index]
                    index += 1
                    if predicate(line):
                        return line
                if self.popen.poll() is not None and not self.reader.is_alive():
                    raise AssertionError(f"{self.label} exited ({self.popen.returncode}) before {what}\n"
                                         f"{self.tail()}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{self.label}: no {what} within {timeout:g} s\n{self.tail()}")
                self.cond.wait(min(left, 0.5))

    def mark(self) -> int:
        with self.cond:
            return len(self.lines)

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, count: int = 30) -> str:
        with self.cond:
            lines = self.lines[-count:]
        return "\n".join(f"    {self.label}| {line}" for line in lines)

    def stop(self) -> None:
        """The stop signal, then SIGKILL after STOP_GRACE; always reaps the process."""
        if self.popen.stdin is not None:
            with contextlib.suppress(OSError):
                self.popen.stdin.close()
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(self.stop_signal)
            try:
                self.popen.wait(STOP_GRACE)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    self.popen.kill()
                self.popen.wait(STOP_GRACE)
        self.reader.join(STOP_GRACE)


class Driver(Proc):
    """tests/deepstream/driver.js: @deepstream/client instances, one JSON request or event a line."""

    def __init__(self, modules: Path, workdir: Path) -> None:
        env = {**os.environ, "NODE_PATH": str(modules)}
        super().__init__("clients", [NODE, str(DRIVER)], cwd=workdir, env=env, stdin=True)
        self.ids = iter(range(1, 1 << 30))
        self.wait_line(lambda line: line == '{"ev":"started"}', START_TIMEOUT, "driver start")

    def messages(self, start: int = 0) -> list[dict[str, Any]]:
        with self.cond:
            lines = self.lines[start:]
        found = []
        for line in lines:
            with contextlib.suppress(ValueError):
                found.append(json.loads(line))
        return found

    def call(self, cmd: str, timeout: float = EXCHANGE_TIMEOUT, **arguments: Any) -> Any:
        """Run one driver command; its result, or AssertionError with the driver's error."""
        request_id = next(self.ids)
        start = self.mark()
        assert self.popen.stdin is not None
        self.popen.stdin.write(json.dumps({"id": request_id, "cmd": cmd, **arguments}) + "\n")
        self.popen.stdin.flush()
        line = self.wait_line(lambda text: text.startswith(f'{{"id":{request_id},'), timeout,
                              f"answer to {cmd} {arguments}", start)
        answer = json.loads(line)
        if not answer["ok"]:
            raise DriverError(f"{cmd} {arguments}: {answer['error']}")
        return answer["result"]

    def wait_event(self, predicate: Callable[[dict[str, Any]], bool], what: str, start: int,
                   timeout: float = EXCHANGE_TIMEOUT) -> dict[str, Any]:
        def match(line: str) -> bool:
            try:
                return predicate(json.loads(line))
            except (ValueError, KeyError, TypeError):
                return False
        return json.loads(self.wait_line(match, timeout, what, start))

    def count_events(self, predicate: Callable[[dict[str, Any]], bool], start: int) -> int:
        count = 0
        for message in self.messages(start):
            with contextlib.suppress(KeyError, TypeError):
                count += bool(predicate(message))
        return count


class DriverError(AssertionError):
    pass


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


class Cluster:
    """Sidecars and deepstream servers started on loopback, each stopped by `close`."""

    def __init__(self, modules: Path, workdir: Path) -> None:
        self.modules = modules
        self.workdir = workdir
        self.procs: list[Proc] = []
        self.sidecars: dict[str, Proc] = {}
        self.swarm_addresses: dict[str, str] = {}
        self.bridges: dict[str, str] = {}
        self.servers: dict[str, Proc] = {}
        self.urls: dict[str, str] = {}
        self.driver: Driver | None = None

    def sidecar(self, name: str, seeds: list[str], bridge: str = f"{HOST}:0",
                options: dict[str, Any] | None = None) -> Proc:
        """`python -m swarm node` named `name` with a bridge (and further swarm `options`); returns once
        it is ready."""
        config = self.workdir / f"sidecar-{name}.yml"
        options = {"host": HOST, "port": 0, "seedNodes": seeds, "bridge": bridge, **(options or {})}
        config.write_text(json.dumps({"serverName": name, "plugins": {"message": {"type": "direct",
                                                                                  "options": options}}}))
        proc = Proc(f"sidecar {name}", [sys.executable, "-m", "swarm", "node", "--config", str(config)],
                    cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.procs.append(proc)
        self.sidecars[name] = proc
        listening = proc.wait_line(lambda line: line.startswith(f"listening {name} "), START_TIMEOUT,
                                   "`listening` line")
        self.swarm_addresses[name] = listening.split()[-1]
        self.bridges[name] = proc.wait_line(lambda line: line.startswith("bridge "), START_TIMEOUT,
                                            "`bridge` line").split(" ", 1)[1]
        proc.wait_line(lambda line: line == f"ready {name}", START_TIMEOUT, "`ready` line")
        return proc

    def server(self, name: str, cluster_options: dict[str, Any] | None = None,
               settings: dict[str, Any] | None = None) -> Proc:
        """A deepstream server named `name` using the plugin against sidecar `name`, or, given
        `cluster_options`, with those plugin options (the supervised mode: no sidecar); `settings`:
        more of deepstream's configuration (top-level keys)."""
        port = free_port()
        config = self.workdir / f"deepstream-{name}.yml"
        if cluster_options is None:
            cluster_options = {"bridge": self.bridges[name]}
        # JSON is YAML: deepstream reads this with its YAML loader.
        config.write_text(json.dumps({
            "serverName": name,
            "showLogo": False,
            "logLevel": "INFO",
            "dependencyInitializationTimeout": int(START_TIMEOUT * 1000),
            "logger": {"type": "default", "options": {"colors": False}},
            "httpServer": {"type": "default", "options": {"host": HOST, "port": port}},
            "connectionEndpoints": [{"type": "ws-binary", "options": {"urlPath": "/deepstream"}}],
            "clusterNode": {"path": str(self.modules / "swarm-clusternode"),
                            "options": cluster_options},
            **(settings or {}),
        }, indent=2))
        deepstream = self.modules / "@deepstream" / "server" / "dist" / "bin" / "deepstream"
        proc = Proc(f"deepstream {name}", [NODE, str(deepstream), "start", "-c", str(config)],
                    cwd=self.workdir, stop_signal=signal.SIGINT)  # SIGINT: deepstream's graceful stop
        self.procs.append(proc)
        self.servers[name] = proc
        self.urls[name] = f"ws://{HOST}:{port}/deepstream"
        proc.wait_line(lambda line: "Deepstream started" in line, START_TIMEOUT, "`Deepstream started`")
        return proc

    def supervised_server(self, name: str, port: int, seeds: list[str]) -> Proc:
        """A deepstream server whose plugin runs its own swarm node (this Python) on `port`."""
        return self.server(name, {"python": [sys.executable], "host": HOST, "port": port, "seeds": seeds,
                                  "env": {"PYTHONPATH": str(ROOT)}})

    def wait_cluster_size(self, names: list[str], size: int, start: dict[str, int] | None = None) -> None:
        """Every server in `names` logs that its cluster has `size` members (after line `start[name]`)."""
        for name in names:
            self.servers[name].wait_line(lambda line: line.endswith(f"The cluster size is now {size}"),
                                         CLUSTER_TIMEOUT, f"cluster of {size}", (start or {}).get(name, 0))

    def clients(self) -> Driver:
        if self.driver is None:
            self.driver = Driver(self.modules, self.workdir)
            self.procs.append(self.driver)
        return self.driver

    def close(self) -> None:
        """Stop the clients, then the deepstream servers, then the sidecars (each kind newest first)."""
        servers = set(map(id, self.servers.values()))
        order = sorted(reversed(self.procs), key=lambda proc: (
            0 if proc is self.driver else 1 if id(proc) in servers else 2))
        for proc in order:
            proc.stop()

    def report(self) -> str:
        return "\n".join(proc.tail() for proc in self.procs)


@pytest.fixture
def cluster(modules: Path) -> Iterator[Cluster]:
    with tempfile.TemporaryDirectory(prefix="swarm-deepstream-") as workdir:
        running = Cluster(modules, Path(workdir))
        try:
            yield running
        finally:
            running.close()
            # captured: pytest shows it only when the test failed
            print(f"--- the last lines of every process\n{running.report()}")


# ---------------------------------------------------------------------- the exchanges


def unique(tag: str) -> str:
    return f"{tag}-{uuid.uuid4().hex[:8]}"


def check_events(d: Driver, emitter: str, subscribers: list[str]) -> None:
    """Every subscriber gets the emitter's event exactly once."""
    event = unique("event")
    for client in subscribers:
        d.call("event_subscribe", client=client, event=event)
        d.call("sync", client=client)
    start = d.mark()
    payload = {"from": emitter, "nonce": uuid.uuid4().hex}
    d.call("event_emit", client=emitter, event=event, data=payload)
    for client in subscribers:
        d.wait_event(lambda m, c=client: m["ev"] == "event" and m["client"] == c and m["event"] == event
                     and m["data"] == payload, f"event {event} at {client}", start)
    time.sleep(QUIET)
    for client in subscribers:
        count = d.count_events(lambda m, c=client: m["ev"] == "event" and m["client"] == c
                               and m["event"] == event, start)
        assert count == 1, f"{client} got event {event} {count} times"


def check_rpc(d: Driver, provider: str, requester: str, transient: tuple[str, ...] = ()) -> int:
    """The requester's call reaches the provider (once the provider is known cluster-wide); returns the
    number of failed attempts (errors named in `transient` are retried, within EXCHANGE_TIMEOUT)."""
    rpc = unique("rpc")
    d.call("rpc_provide", client=provider, rpc=rpc)
    d.call("sync", client=provider)
    deadline = time.monotonic() + EXCHANGE_TIMEOUT
    failures = 0
    while True:
        try:
            answer = d.call("rpc_make", client=requester, rpc=rpc, data={"n": 7})
            break
        except DriverError as error:
            # deepstream learns of a remote provider through its cluster state registry: shortly after
            retry = any(code in str(error) for code in ("NO_RPC_PROVIDER", *transient))
            if not retry or time.monotonic() > deadline:
                raise
            failures += 1
            time.sleep(0.2)
    assert answer == {"by": provider, "echo": {"n": 7}}
    return failures


def check_record(d: Driver, writer: str, subscriber: str) -> None:
    """The subscriber sees the writer's update of a record."""
    record = unique("record")
    d.call("record_subscribe", client=subscriber, record=record)
    d.call("sync", client=subscriber)
    start = d.mark()
    value = {"by": writer, "nonce": uuid.uuid4().hex, "list": [1, 2, 3]}
    d.call("record_set", client=writer, record=record, data=value)
    d.wait_event(lambda m: m["ev"] == "record" and m["client"] == subscriber and m["record"] == record
                 and m["data"] == value, f"update of {record} at {subscriber}", start)


def check_presence(d: Driver, cluster: Cluster, watcher: str, server: str) -> None:
    """A login on `server` is seen by `watcher`'s presence subscription (and its `getAll`)."""
    d.call("presence_subscribe", client=watcher)
    d.call("sync", client=watcher)
    username = unique("user")
    start = d.mark()
    d.call("connect", client=username, url=cluster.urls[server], username=username)
    d.wait_event(lambda m: m["ev"] == "presence" and m["client"] == watcher and m["username"] == username
                 and m["online"] is True, f"presence of {username} at {watcher}", start)
    assert username in d.call("presence_get", client=watcher)


def rtt(d: Driver, provider: str, requester: str) -> list[float]:
    """Round-trip times (ms) of RTT_CALLS sequential calls of an RPC only `provider` provides."""
    rpc = unique("rtt")
    d.call("rpc_provide", client=provider, rpc=rpc)
    d.call("sync", client=provider)
    deadline = time.monotonic() + EXCHANGE_TIMEOUT
    while True:
        try:
            d.call("rpc_rtt", client=requester, rpc=rpc, count=20)  # warm-up
            break
        except DriverError as error:
            if "NO_RPC_PROVIDER" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    return d.call("rpc_rtt", client=requester, rpc=rpc, count=RTT_CALLS, timeout=60.0)


def summary(times: list[float]) -> str:
    ordered = sorted(times)
    p90 = ordered[int(0.9 * (len(ordered) - 1))]
    return f"median {statistics.median(ordered):.2f} ms, p90 {p90:.2f} ms, min {ordered[0]:.2f} ms"


# ---------------------------------------------------------------------- the tests


def test_plugin_against_a_scripted_sidecar() -> None:
    """The plugin alone (tests/deepstream/plugin_unit.js): handshake, whenReady, re-subscription, the
    bounded queue, reconnection, refusals, close."""
    done = subprocess.run([NODE, str(PLUGIN_UNIT)], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"


def test_three_deepstream_servers_on_swarm_then_one_stopped(cluster: Cluster, capsys) -> None:
    a = cluster.sidecar("server-a", [])
    seeds = [cluster.swarm_addresses["server-a"]]
    cluster.sidecar("server-b", seeds)
    cluster.sidecar("server-c", seeds)
    assert a.alive()
    for name in ("server-a", "server-b", "server-c"):
        cluster.server(name)
    cluster.wait_cluster_size(["server-a", "server-b", "server-c"], 3)

    d = cluster.clients()
    for client, server in (("a1", "server-a"), ("a2", "server-a"), ("b1", "server-b"), ("c1", "server-c")):
        d.call("connect", client=client, url=cluster.urls[server], username=client)

    # across three servers
    check_events(d, emitter="a1", subscribers=["c1", "b1"])
    check_rpc(d, provider="b1", requester="a1")
    check_record(d, writer="a1", subscriber="c1")
    check_presence(d, cluster, watcher="a1", server="server-b")

    # RTT of an RPC: provider on another server (through swarm) against provider on the same server
    across = rtt(d, provider="b1", requester="a1")
    single = rtt(d, provider="a2", requester="a1")
    with capsys.disabled():
        print(f"\ndeepstream RPC round trip, {RTT_CALLS} sequential calls each:\n"
              f"  across two servers through swarm: {summary(across)}\n"
              f"  on a single server:               {summary(single)}\n"
              f"  median ratio {statistics.median(across) / statistics.median(single):.2f}")

    # stop server C and its sidecar: A and B keep exchanging everything
    d.call("close", client="c1")
    marks = {name: cluster.servers[name].mark() for name in ("server-a", "server-b")}
    cluster.servers["server-c"].stop()
    cluster.sidecars["server-c"].stop()
    cluster.wait_cluster_size(["server-a", "server-b"], 2, marks)
    check_events(d, emitter="a1", subscribers=["b1"])
    check_events(d, emitter="b1", subscribers=["a1", "a2"])
    check_rpc(d, provider="b1", requester="a1")
    check_rpc(d, provider="a2", requester="b1")
    check_record(d, writer="a1", subscriber="b1")
    check_record(d, writer="b1", subscriber="a1")
    check_presence(d, cluster, watcher="a1", server="server-b")
    check_presence(d, cluster, watcher="b1", server="server-a")
    for name in ("server-a", "server-b"):
        assert cluster.servers[name].alive(), f"deepstream {name} went down"


def clients_a1_b1_with_a1_subscribed(cluster: Cluster) -> tuple[Driver, str]:
    """Clients a1 on server-a and b1 on server-b, an event checked between them, and a1 subscribed to a
    new event (returned) that b1 will emit while server-b's node is away."""
    d = cluster.clients()
    d.call("connect", client="a1", url=cluster.urls["server-a"], username="a1")
    d.call("connect", client="b1", url=cluster.urls["server-b"], username="b1")
    check_events(d, emitter="a1", subscribers=["b1"])
    queued = unique("queued")
    d.call("event_subscribe", client="a1", event=queued)
    d.call("sync", client="a1")
    return d, queued


def queued_event_then_events_both_ways(d: Driver, queued: str, payload: Any, start: int, when: str) -> None:
    """The event b1 emitted `when` (queued by B's plugin) reaches a1, and events flow again both ways."""
    d.wait_event(lambda m: m["ev"] == "event" and m["client"] == "a1" and m["event"] == queued
                 and m["data"] == payload, f"the event emitted {when}", start)
    check_events(d, emitter="a1", subscribers=["b1"])
    check_events(d, emitter="b1", subscribers=["a1"])


def test_sidecar_restart_is_survived(cluster: Cluster, capsys) -> None:
    """The sidecar of server B goes away and comes back at the same bridge address (a unix socket): B's
    deepstream logs the loss, stays up, queues what it sends meanwhile, reconnects, re-subscribes, and
    exchanges with A again."""
    bridge_b = str(cluster.workdir / "b.sock")
    cluster.sidecar("server-a", [])
    seeds = [cluster.swarm_addresses["server-a"]]
    cluster.sidecar("server-b", seeds, bridge=bridge_b)
    for name in ("server-a", "server-b"):
        cluster.server(name)
    cluster.wait_cluster_size(["server-a", "server-b"], 2)

    d, queued = clients_a1_b1_with_a1_subscribed(cluster)

    server_b = cluster.servers["server-b"]
    mark = server_b.mark()
    cluster.sidecars["server-b"].stop()
    server_b.wait_line(lambda line: "lost swarm sidecar" in line, EXCHANGE_TIMEOUT, "loss of the sidecar",
                       mark)
    start = d.mark()
    payload = {"sent": "while server-b had no sidecar"}
    d.call("event_emit", client="b1", event=queued, data=payload)
    time.sleep(1.0)  # a few failed reconnection attempts
    assert server_b.alive(), "deepstream server-b went down with its sidecar"

    mark = server_b.mark()
    cluster.sidecar("server-b", seeds, bridge=bridge_b)
    server_b.wait_line(lambda line: "reconnected" in line and "swarm sidecar" in line, EXCHANGE_TIMEOUT,
                       "reconnection to the new sidecar", mark)
    # what B's deepstream sent while its sidecar was away was queued by the plugin, and is delivered now
    queued_event_then_events_both_ways(d, queued, payload, start, "while the sidecar was away")
    # a restart loses what was in flight to the old process, and deepstream's RPC ack timeout is 1 s: a
    # first call may time out (since protocol 4 a rejoined node no longer holds direct messages counted
    # for its previous process, which made one time out per restart; the count is printed)
    transient = ("ACCEPT_TIMEOUT", "RESPONSE_TIMEOUT")
    failed = {"a1 -> b1": check_rpc(d, provider="b1", requester="a1", transient=transient),
              "b1 -> a1": check_rpc(d, provider="a1", requester="b1", transient=transient)}
    check_record(d, writer="a1", subscriber="b1")
    check_record(d, writer="b1", subscriber="a1")
    check_presence(d, cluster, watcher="a1", server="server-b")
    assert server_b.alive()
    if any(failed.values()):
        with capsys.disabled():
            print("\nafter the sidecar restart, RPC attempts that timed out before one succeeded: "
                  + ", ".join(f"{path}: {count}" for path, count in failed.items()))


# ---------------------------------------------------------------------- the supervised mode


def node_started(server: Proc, name: str, start: int = 0) -> tuple[int, Path]:
    """The pid and private directory of the swarm node the plugin of `server` started (after line `start`),
    from the plugin's log line `swarm node <name> started (pid N, bridge DIR/bridge.sock, ...)`."""
    line = server.wait_line(lambda text: f"swarm node {name} started (pid " in text, START_TIMEOUT,
                            "the plugin starting its swarm node", start)
    details = line.split(f"swarm node {name} started (pid ", 1)[1]
    pid_text, _, rest = details.partition(", bridge ")
    return int(pid_text), Path(rest.split(",", 1)[0]).parent


def process_gone(pid: int) -> bool:
    """No process `pid`, or only its zombie (its parent is gone and nobody reaps here)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def wait_gone(pid: int, what: str) -> None:
    deadline = time.monotonic() + STOP_GRACE
    while not process_gone(pid):
        assert time.monotonic() < deadline, f"{what} (pid {pid}) still runs {STOP_GRACE:g} s later"
        time.sleep(0.05)


def test_supervised_nodes_restart_after_kill_9_and_stop_with_deepstream(cluster: Cluster) -> None:
    """Two deepstream servers whose plugins run their own swarm nodes (no sidecar started here): events
    flow; B's node is killed with SIGKILL under its running server and comes back on its own, and events
    flow again (one emitted on B meanwhile included); stopping deepstream B stops its node and removes its
    private directory; deepstream A killed with SIGKILL takes its node with it (exitOnStdinClose)."""
    port_a, port_b = free_port(), free_port()
    server_a = cluster.supervised_server("server-a", port_a, [])
    pid_a, directory_a = node_started(server_a, "server-a")
    server_b = cluster.supervised_server("server-b", port_b, [f"{HOST}:{port_a}"])
    pid_b, directory_b = node_started(server_b, "server-b")
    assert directory_a != directory_b and directory_b.is_dir()
    assert directory_b.stat().st_mode & 0o777 == 0o700, "the bridge's directory is not private"
    cluster.wait_cluster_size(["server-a", "server-b"], 2)

    d, queued = clients_a1_b1_with_a1_subscribed(cluster)

    mark = server_b.mark()
    os.kill(pid_b, signal.SIGKILL)
    server_b.wait_line(lambda line: "lost swarm node" in line, EXCHANGE_TIMEOUT, "loss of the node", mark)
    start = d.mark()
    payload = {"sent": "while server-b's node was restarting"}
    d.call("event_emit", client="b1", event=queued, data=payload)
    server_b.wait_line(lambda line: "was killed by SIGKILL" in line and "starting it again in" in line,
                       EXCHANGE_TIMEOUT, "the plugin noticing its node's death", mark)
    new_pid_b, again_b = node_started(server_b, "server-b", mark)
    assert new_pid_b != pid_b and again_b == directory_b
    server_b.wait_line(lambda line: "swarm node" in line and "reconnected" in line, START_TIMEOUT,
                       "reconnection to the restarted node", mark)
    queued_event_then_events_both_ways(d, queued, payload, start, "while B's node restarted")
    assert server_b.alive() and server_a.alive()

    d.call("close", client="b1")
    server_b.stop()  # SIGINT: deepstream closes its plugins
    assert server_b.popen.returncode == 0, server_b.tail()
    assert process_gone(new_pid_b), "deepstream B stopped, its swarm node still runs"
    assert not directory_b.exists(), f"{directory_b} left behind"

    d.call("close", client="a1")
    server_a.popen.kill()  # no close at all: the node must notice that its stdin's writer is gone
    server_a.popen.wait(STOP_GRACE)
    wait_gone(pid_a, "the swarm node of deepstream A, killed with SIGKILL,")
    # what a SIGKILL leaves behind, as documented: the directory (its socket is removed by the node)
    assert not (directory_a / "bridge.sock").exists()
    shutil.rmtree(directory_a)


def test_a_server_that_leaves_gracefully_is_removed_at_once_not_after_the_inactive_timeout(
        cluster: Cluster) -> None:
    # deepstream 7.0.2 sends its leave as REMOVE {name} and reads a REMOVE's `serverName`: the plugin
    # fills it in from the sender. With nodeInactiveTimeout at 10 minutes, only the leave message can
    # remove B within CLUSTER_TIMEOUT (without the plugin's fix this waits for ever, and fails).
    settings = {"clusterRegistry": {"type": "default", "options": {
        "keepAliveInterval": 1000, "activeCheckInterval": 1000, "nodeInactiveTimeout": 600_000}}}
    cluster.sidecar("server-a", [])
    cluster.sidecar("server-b", [cluster.swarm_addresses["server-a"]])
    server_a = cluster.server("server-a", settings=settings)
    server_b = cluster.server("server-b", settings=settings)
    cluster.wait_cluster_size(["server-a", "server-b"], 2)
    mark = server_a.mark()
    server_b.stop()  # SIGINT: deepstream's graceful stop, which sends its leave
    assert server_b.popen.returncode == 0, server_b.tail()
    server_a.wait_line(lambda line: "server-b" in line and "CLUSTER_LEAVE" in line, CLUSTER_TIMEOUT,
                       "server-b's leave", mark)
    cluster.wait_cluster_size(["server-a"], 1, {"server-a": mark})
    assert cluster.sidecars["server-b"].alive()  # B's node is still up: the leave came from deepstream


# ---------------------------------------------------------------------- after a long silence (issue 16)

SEEN_TTL = 1.0  # swarm's seenTtl (its minimum), so that "longer than seenTtl" takes seconds, not minutes


def test_rpcs_between_servers_after_a_silence_longer_than_seen_ttl_do_not_time_out(cluster: Cluster) -> None:
    """deepstream's RPC ack timeout is 1 s, swarm's reorderTimeout too: a direct stream silent for longer
    than seenTtl used to have its next message held for a settle window, and the first RPC on each
    server pair after two quiet minutes failed with ACCEPT_TIMEOUT. Every RPC here must pass at once."""
    names = ["server-a", "server-b", "server-c"]
    options = {"seenTtl": SEEN_TTL}
    cluster.sidecar(names[0], [], options=options)
    for name in names[1:]:
        cluster.sidecar(name, [cluster.swarm_addresses[names[0]]], options=options)
    for name in names:
        cluster.server(name)
    cluster.wait_cluster_size(names, 3)
    d = cluster.clients()
    clients = {name: f"client-{name[-1]}" for name in names}
    for name, client in clients.items():
        d.call("connect", client=client, url=cluster.urls[name], username=client)
    pairs = [(provider, requester) for provider in clients.values() for requester in clients.values()
             if provider != requester]
    rpcs = {pair: unique("rpc") for pair in pairs}
    for (provider, _), rpc in rpcs.items():
        d.call("rpc_provide", client=provider, rpc=rpc)
        d.call("sync", client=provider)
    for (provider, requester), rpc in rpcs.items():  # each pair's direct streams start
        deadline = time.monotonic() + EXCHANGE_TIMEOUT
        while True:
            try:
                assert d.call("rpc_make", client=requester, rpc=rpc, data={"n": 1}) == {
                    "by": provider, "echo": {"n": 1}}
                break
            except DriverError as error:  # the provider not known cluster-wide yet
                if "NO_RPC_PROVIDER" not in str(error) or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
    time.sleep(3 * SEEN_TTL + 0.5)  # every direct stream silent for longer than seenTtl
    failed = []
    for (provider, requester), rpc in rpcs.items():
        try:
            answer = d.call("rpc_make", client=requester, rpc=rpc, data={"n": 2})
        except DriverError as error:
            failed.append(f"{requester} -> {provider}: {error}")
            continue
        assert answer == {"by": provider, "echo": {"n": 2}}
    assert not failed, f"RPCs after a silence failed on {len(failed)} of {len(pairs)} pairs: {failed}"


def reported(warnings: list[str], pattern: str) -> dict[str, int]:
    """Per origin, the counts of the plugin's log lines matching `pattern` that report losses: its own
    ("lost N messages from the cluster (X from a, Y from b; ...)", "dropped N messages while ... (not
    sent; ...)") and the node's `error` events it passes on (`slow_consumer`, `messages_lost`: "... (X of
    a, Y of b)")."""
    counts: dict[str, int] = {}
    for text in warnings:
        if re.search(pattern, text):
            inside = text[text.index("(") + 1:]
            for count, origin in re.findall(r"(\d+) (?:from|of) ([^,;)\s]+)", inside.split(";")[0]):
                counts[origin] = counts.get(origin, 0) + int(count)
    return counts


LOST = r"^lost \d+ messages from the cluster|reports (slow_consumer|messages_lost):"


def test_a_burst_through_the_bridge_loses_nothing_or_reports_the_exact_loss(cluster: Cluster) -> None:
    """Issue 16: 50,000 events of 100 B, a third from each of three servers (the plugin driven by
    tests/deepstream/burst.js, one process per server, as deepstream would drive it), each delivered to
    the two others. Server `c` is slower than the traffic and its sidecar's bound for it is small, so its
    sidecar drops for it: what `c` misses must be exactly what the plugin logs, per origin. `a` and `b`
    keep up: they lose nothing, and nobody is disconnected."""
    names = ["a", "b", "c"]
    cluster.sidecar("a", [])
    # c: a 1 MiB bound, so that its slowness overflows it within the burst
    cluster.sidecar("b", [cluster.swarm_addresses["a"]])
    cluster.sidecar("c", [cluster.swarm_addresses["a"]], options={"bridgeQueueBytes": 1 << 20})
    per_server = 50_000 // len(names)
    start_at = int(time.time() * 1000) + 1500  # every process starts its burst at once
    procs = {name: subprocess.Popen(
        [NODE, str(BURST), json.dumps({
            "name": name, "bridge": cluster.bridges[name], "peers": [n for n in names if n != name],
            "count": per_server, "size": 100, "batch": 500, "startAt": start_at, "quietMs": 1000,
            "reportMs": 500, "timeoutMs": 20000, "workUs": 40 if name == "c" else 0})],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for name in names}
    results = {}
    try:
        for name, proc in procs.items():
            out, err = proc.communicate(timeout=60)
            assert proc.returncode == 0, f"burst.js {name}: {err}"
            results[name] = json.loads(out)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for name, result in results.items():
        assert result["sent"] == per_server and result["disorder"] == [], result
        assert not any(re.match(r"dropped \d+ messages while", text) for text in result["warnings"]), \
            f"{name} could not send everything: {result['warnings']}"
        lost = reported(result["warnings"], LOST)
        for origin in names:
            if origin != name:
                missing = per_server - result["received"].get(origin, 0)
                assert missing == lost.get(origin, 0), (name, origin, result["received"], lost,
                                                        "\n".join(result["warnings"]))
        print(f"{name}: received {result['received']} of {per_server} per origin in {result['ms']} ms; "
              f"reported lost {lost}")
    assert sum(reported(results["c"]["warnings"], r"^lost \d+ messages").values()) > 0, \
        f"c was meant to be too slow for its bound: the bridge's drop path was not exercised {results['c']}"
    assert reported(results["a"]["warnings"], LOST) == reported(results["b"]["warnings"], LOST) == {}
    for result in results.values():
        # nobody was disconnected (the plugin would log "lost swarm sidecar ...; reconnecting")
        assert not any(text.startswith("lost swarm sidecar") for text in result["warnings"]), result


def test_deepstream_started_before_its_sidecar_starts_alone_then_joins(cluster: Cluster) -> None:
    """Issue 16, part 4: with no sidecar up yet, `deepstream start` does not fail its start (deepstream
    exits with code 1 when a plugin is not ready within `dependencyInitializationTimeout`, whatever
    `exitOnFatalError` says): the plugin's `readyTimeout` lets it start alone, saying so in its log, and
    it joins its cluster once its sidecar is up."""
    cluster.bridges["server-a"] = f"{HOST}:{free_port()}"  # nothing listens there yet
    server = cluster.server("server-a", {"bridge": cluster.bridges["server-a"], "readyTimeout": 300})
    server.wait_line(lambda line: "not ready after 300 ms (readyTimeout)" in line, START_TIMEOUT,
                     "the start without the cluster in the log")
    assert server.alive()
    mark = server.mark()
    cluster.sidecar("server-a", [], bridge=cluster.bridges["server-a"])
    server.wait_line(lambda line: "is ready: this server joins its cluster now" in line, START_TIMEOUT,
                     "the late join in the log", mark)
    cluster.sidecar("server-b", [cluster.swarm_addresses["server-a"]])
    cluster.server("server-b")
    cluster.wait_cluster_size(["server-a", "server-b"], 2)
    d = cluster.clients()
    for client, name in (("a1", "server-a"), ("b1", "server-b")):
        d.call("connect", client=client, url=cluster.urls[name], username=client)
    check_events(d, emitter="b1", subscribers=["a1"])
