"""The `swarm` command line: run a node, subscribe, publish one message, and the demo.

    python -m swarm node --config config.yml [--option key=value ...]
    python -m swarm sub  [--config FILE] [--option ...] TOPIC
    python -m swarm pub  [--config FILE] [--option ...] TOPIC JSON [--timeout S]
    python -m swarm demo [--nodes 8] [--messages N] [--publishers P] [--size BYTES] [--rate R]
    python -m swarm status HOST:PORT [--json] [--config FILE] [--option tls.ca=...]
    python -m swarm certs init DIR | issue DIR NAME [--days N] | show FILE | revoke DIR CERT

Options come from a deepstream-style config file (`plugins.message.options`, see `swarm.config`) and from
`--option key=value` flags, which win over the file. A bad configuration prints one line,
`swarm: error: <key>: <what was expected>`, on stderr and exits with status 2.

Lines meant for programs (each flushed at once):

* `node` prints `listening <serverName> <host>:<port>` once bound, then (with the `bridge` option)
  `bridge <address>` once the bridge listens, then `ready <serverName>` once joined, on stdout.
* `sub` keeps stdout for the messages, one JSON value per line (bytes as base64 strings), and prints the
  same `listening ...` and `ready ...` lines on stderr. A message published after `ready` is printed.
* `pub` prints nothing on success; it exits 1 with a reason on stderr when no peer is reachable.
* `node` re-reads its `tls` files on SIGHUP and prints `tls-reloaded <serverName> <serial>` (the serial
  of the certificate now in use, hex) or `tls-reload-failed <serverName>: <reason>` (the files in use
  before stay in use). A reload whose `tls.crl` or `tls.deny` now revokes a linked peer cuts that link.

A command whose stdout is closed early by its reader (`swarm status HOST:PORT | head -1`) stops quietly
with status 141 (128 + SIGPIPE); `sub` alone leaves the cluster and exits 0.

`pub` and `sub` are short-lived clients: unless the file or a flag sets `port`, they listen on an
ephemeral port (a node's default is 6021), so they run beside a node on the same machine.

`node` and `sub` run until SIGINT (Ctrl-C) or SIGTERM, then leave the cluster cleanly and exit 0;
`node` with `exitOnStdinClose` does the same when its stdin reaches end of file (its supervisor died).
The demo's logic lives in `swarm.demo` (its node processes in `swarm.harness`), the certificates' in
`swarm.certs`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import signal
import ssl
import sys
from collections.abc import Callable, Sequence
from typing import Any, TextIO, TypeVar

import trio

from . import __version__, certs, jsontext, logs
from .bridge import BridgeListenError
from .cluster_node import ClusterNode
from .config import OPTIONS_BY_KEY, Options, load_config_file, parse_address, parse_option_text
from .connector import Connector
from .errors import ConfigError, MessageTooLarge
from .node import Node
from .transport import tls
from .transport.engine import DROP_COUNTERS, fetch_status

__all__ = ["build_parser", "load_options", "main", "number_type", "parse_topic", "to_json_line"]

log = logging.getLogger("swarm.cli")

PROG = "swarm"
EXIT_OK, EXIT_FAILURE, EXIT_CONFIG = 0, 1, 2
# 128 + SIGINT, the shell's convention for "stopped by Ctrl-C".
EXIT_INTERRUPTED = 130
# `node`: another live process holds this serverName (docs/operations.md, "A name conflict").
EXIT_NAME_CONFLICT = 3
# 128 + SIGPIPE: what the shell reports for a program stopped because the reader of its output went away.
EXIT_BROKEN_PIPE = 128 + signal.SIGPIPE
# How often `pub` looks at its send queues while waiting for the message to leave.
POLL_INTERVAL = 0.005


NodeT = TypeVar("NodeT", bound=Node)


class CommandFailed(Exception):
    """A command could not do its job; the message is printed as `swarm: error: ...`, exit status 1."""


# ---------------------------------------------------------------------- helpers shared by the commands


def error_line(text: str) -> str:
    """`swarm: error: <text>` squeezed onto one line (YAML errors, for one, span several)."""
    return f"{PROG}: error: " + " ".join(str(text).split())


def emit(stream: TextIO, line: str) -> None:
    """Write one line and flush it: the readers are programs waiting for it."""
    stream.write(line + "\n")
    stream.flush()


def parse_option_flags(flags: Sequence[str]) -> dict[str, Any]:
    """`["port=0", "seedNodes=a:1,b:2"]` -> typed values, parsed like the config file would have them."""
    values: dict[str, Any] = {}
    for flag in flags:
        key, sep, text = flag.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--option: expected key=value, got {flag!r}")
        base, dot, part = key.partition(".")
        option = OPTIONS_BY_KEY.get(base)
        if option is not None and option.kind == "tls" and dot:
            # `--option tls.ca=FILE`: one file of the mapping (checked with the rest by Options).
            files = values.get(base)
            values[base] = dict(files if isinstance(files, dict) else {}, **{part: text})
            continue
        option = OPTIONS_BY_KEY.get(key)
        if option is None:
            raise ConfigError(f"{key}: unknown option (known: {', '.join(sorted(OPTIONS_BY_KEY))})")
        values[key] = parse_option_text(option, text)
    return values


def load_options(config: str | None, flags: Sequence[str], *,
                 defaults: dict[str, Any] | None = None) -> Options:
    """Options from the config file (if any), then `--option` flags on top; raise ConfigError on error.

    `defaults` fill keys that neither the file nor the flags set (pub and sub default `port` to 0). The
    `tls` files are read here too, and `serverName` taken from the certificate (`tls.resolve`), so that a
    bad file is reported before anything starts.
    """
    mapping: dict[str, Any] = dict(defaults or {})
    if config is not None:
        file_options, _document = load_config_file(config)
        mapping.update(file_options)
    flag_options = parse_option_flags(flags)
    if isinstance(mapping.get("tls"), dict) and isinstance(flag_options.get("tls"), dict):
        flag_options["tls"] = {**mapping["tls"], **flag_options["tls"]}  # `tls.cert=...` replaces one file
    mapping.update(flag_options)
    return tls.resolve(Options.from_mapping(mapping))


def parse_topic(text: str) -> str | int:
    """A topic of digits is an int topic (deepstream 4+ numbers its topics), anything else a str."""
    if text.isascii() and text.isdigit():
        return int(text)
    return text


def to_json_line(message: Any) -> str:
    """One message as one line of JSON."""
    return jsontext.dumps(message)


def _setup_logging(level: str) -> None:
    logging.basicConfig(stream=sys.stderr, level=getattr(logging, level), format=logs.TEXT_FORMAT)


def _node_options(config: str | None, flags: Sequence[str], **more: Any) -> Options:
    """The options of a command that runs a node, its log lines formatted as its `logFormat` says."""
    options = load_options(config, flags, **more)
    logs.use_format(options.logFormat, options.serverName)
    return options


def _log_errors(conn: Node) -> None:
    conn.on("error", lambda error: log.debug("%s: %s: %s", conn.server_name, error.code, error))


async def _wait_for_signal(signals: Any, stop: trio.Event | None = None) -> None:
    """Return at the first SIGINT/SIGTERM (or when `stop` is set)."""
    async with trio.open_nursery() as nursery:
        if stop is not None:
            async def watch_stop() -> None:
                await stop.wait()
                nursery.cancel_scope.cancel()
            nursery.start_soon(watch_stop)
        async for signum in signals:
            log.info("received %s, leaving the cluster", signal.Signals(signum).name)
            break
        nursery.cancel_scope.cancel()


async def _join(stack: contextlib.AsyncExitStack, conn: NodeT) -> NodeT:
    """Start `conn` inside `stack` (left with it); a port that cannot be bound is a CommandFailed."""
    try:
        await stack.enter_async_context(conn)
    except BaseException as raised:  # noqa: B036 - re-raised unless it is the bind failing
        error = _leaf(raised)
        if isinstance(error, BridgeListenError):
            raise CommandFailed(str(error)) from None
        if isinstance(error, OSError):
            options = conn.options
            raise CommandFailed(f"cannot listen on {options.host}:{options.port}: "
                                f"{error.strerror or error}") from None
        raise
    _log_errors(conn)
    return conn


async def _announce(conn: Node, stream: TextIO) -> None:
    host, port = conn.address
    emit(stream, f"listening {conn.server_name} {host}:{port}")
    bridge = getattr(conn, "bridge_address", None)
    if bridge is not None:
        emit(stream, f"bridge {bridge}")
    await conn.wait_ready()
    emit(stream, f"ready {conn.server_name}")


# ---------------------------------------------------------------------- the commands


async def run_node(options: Options) -> int:
    """Run a node until SIGINT/SIGTERM, then leave cleanly; re-read the TLS files on SIGHUP.

    The node is a ClusterNode, so that the `bridge` option, when set, serves local clients (docs/bridge.md).
    """
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals, \
            trio.open_signal_receiver(signal.SIGHUP) as hangups:
        async with contextlib.AsyncExitStack() as stack:
            conn = await _join(stack, ClusterNode(options))
            # Another live process holds our name, and the cluster refuses this one: say where, and stop
            # (a node that nobody links would publish into nothing).
            conflict: list[str] = []
            stop = trio.Event()

            def on_error(error: Any) -> None:
                if error.code == "name_conflict" and not conflict:
                    conflict.append(str(error))
                    stop.set()

            conn.on("error", on_error)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_announce, conn, sys.stdout)
                nursery.start_soon(_reload_on_hangup, conn, hangups, sys.stdout)
                if options.exitOnStdinClose:
                    nursery.start_soon(_stop_at_stdin_end, stop)
                await _wait_for_signal(signals, stop)
                nursery.cancel_scope.cancel()
        if conflict:
            print(error_line(conflict[0]), file=sys.stderr)
            return EXIT_NAME_CONFLICT
        log.info("%s left the cluster", options.serverName)
    return EXIT_OK


async def _stop_at_stdin_end(stop: trio.Event) -> None:
    """Set `stop` once stdin reaches end of file (the `exitOnStdinClose` option): its writer is gone."""
    def read_to_end() -> None:
        # A thread rather than trio's FdStream: that would make a shared stdin (a terminal) non-blocking
        # for the other processes that read it too.
        try:
            while os.read(0, 65536):
                pass  # what is written is ignored: only the end means something
        except OSError:
            pass  # no stdin at all (fd 0 closed): nothing can keep the node alive either

    await trio.to_thread.run_sync(read_to_end, abandon_on_cancel=True)
    log.warning("stdin closed (exitOnStdinClose): leaving the cluster")
    stop.set()


async def _reload_on_hangup(conn: Node, hangups: Any, out: TextIO) -> None:
    """On each SIGHUP, re-read the `tls` files: new connections use them, links up keep running."""
    async for _ in hangups:
        if conn.options.tls is None:
            log.info("%s: SIGHUP: no `tls` option, nothing to reload", conn.server_name)
            continue
        try:
            info = conn.reload_tls()
        except ConfigError as error:
            emit(out, f"tls-reload-failed {conn.server_name}: " + " ".join(str(error).split()))
            continue
        log.info("%s: SIGHUP: TLS files reloaded", conn.server_name)
        emit(out, f"tls-reloaded {conn.server_name} {info['serial']}")


async def run_sub(options: Options, topic: str | int) -> int:
    """Print every message on `topic` as a JSON line until SIGINT/SIGTERM (or stdout is closed)."""
    stop = trio.Event()
    out = sys.stdout

    def on_message(message: Any) -> None:
        if stop.is_set():
            return
        try:
            emit(out, to_json_line(message))
        except BrokenPipeError:  # e.g. `swarm sub t | head -3`: the reader has gone, so do we
            stop.set()
            # Nothing more can be written; keep the interpreter's final flush from complaining.
            os.dup2(os.open(os.devnull, os.O_WRONLY), out.fileno())

    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        conn = Connector(options)
        conn.subscribe(topic, on_message)
        async with contextlib.AsyncExitStack() as stack:
            await _join(stack, conn)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_announce, conn, sys.stderr)
                await _wait_for_signal(signals, stop)
                nursery.cancel_scope.cancel()
    return EXIT_OK


async def run_pub(options: Options, topic: str | int, message: Any, timeout: float) -> int:
    """Join, publish `message` once, and return once it has left for a peer (or fail after `timeout`)."""
    seeds = ", ".join(f"{host}:{port}" for host, port in options.seedNodes) or "none"
    async with contextlib.AsyncExitStack() as stack:
        conn = await _join(stack, Connector(options))
        deadline = trio.current_time() + timeout
        while True:
            with trio.move_on_at(deadline):
                await conn.wait_ready()
                while not conn.status()["links"]:
                    await trio.sleep(POLL_INTERVAL)
            if not conn.status()["links"]:
                raise CommandFailed(f"no peer reachable within {timeout:g} s (seedNodes: {seeds})")
            before = conn.status()["counters"]
            conn.publish(topic, message)
            # The frame is queued for every linked peer. Once the queues are empty it has been handed to
            # TCP, and the leave that `close()` sends follows it on the same connections.
            with trio.move_on_at(deadline) as scope:
                await conn.flush()
            if scope.cancelled_caught:
                raise CommandFailed(f"the message did not leave for a peer within {timeout:g} s")
            after = conn.status()["counters"]
            # Frames dropped while the message was queued (a link closed under it) may have been it.
            # Not those dropped later, when this node leaves: the message was written by then.
            dropped = {key: after.get(key, 0) - before.get(key, 0) for key in DROP_COUNTERS}
            if any(dropped.values()):
                counts = ", ".join(f"{key} {count}" for key, count in dropped.items() if count)
                raise CommandFailed(f"the link to the peers was lost before the message was sent ({counts})")
            # A new node's only link may be retired (the overlay moving it to its ring neighbours)
            # between the publish and the frame's sealing: the message then went to nobody, so sending
            # it again cannot duplicate it.
            if after.get("published_without_peers", 0) == before.get("published_without_peers", 0):
                break
    return EXIT_OK


async def run_status(address: tuple[str, int], as_json: bool, timeout: float,
                     tls_context: ssl.SSLContext | None = None) -> int:
    """Print the status of the node at `address` (over TLS with `tls_context`)."""
    try:
        status = await fetch_status(*address, timeout=timeout, tls_context=tls_context)
    except (OSError, trio.TooSlowError) as error:
        reason = "no answer in time" if isinstance(error, trio.TooSlowError) else str(error)
        raise CommandFailed(f"cannot get the status of {address[0]}:{address[1]}: {reason}") from None
    if as_json:
        print(json.dumps(status, indent=2, sort_keys=True, default=jsontext.json_default))
    else:
        print(format_status(status))
    return EXIT_OK


def format_status(status: dict[str, Any]) -> str:
    """A node's status as a readable page."""
    lines = [f"node      {status['name']} at {status['address'][0]}:{status['address'][1]}"
             f" ({'ready' if status['ready'] else 'not ready'})",
             f"position  {status['position']:#018x} ({status['position'] / 2 ** 64:.4f} of the ring)",
             f"links     {len(status['links'])} of at most {status['max_peers']}; view {status['view_size']} "
             f"nodes; seen-record {status['seen_entries']} entries",
             "", f"{'peer':<24} {'kind':<9} {'address':<22} position"]
    for link in status["link_details"]:
        where = "{}:{}".format(*link["address"])
        lines.append(f"{link['name']:<24} {link['kind']:<9} {where:<22} {link['position'] / 2 ** 64:.4f}")
    lines.append("")
    lines.append("counters")
    for key, value in sorted(status["counters"].items()):
        lines.append(f"  {key:<32} {value}")
    return "\n".join(lines)


# ---------------------------------------------------------------------- argument parsing


def number_type(convert: Callable[[str], Any], what: str, minimum: float, *, strict: bool = False,
            ) -> Callable[[str], Any]:
    """An argparse type: `what` (e.g. "an integer") at least `minimum` (above it, if `strict`)."""
    bound = f"> {minimum:g}" if strict else f">= {minimum:g}"

    def parse(text: str) -> Any:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not (value > minimum if strict else value >= minimum) or math.isinf(value):
            raise argparse.ArgumentTypeError(f"expected {what} {bound}, got {text!r}")
        return value
    return parse


_positive_float = number_type(float, "a number of seconds", 0, strict=True)
_positive_int = number_type(int, "an integer", 1)
_non_negative_int = number_type(int, "an integer", 0)
_non_negative_float = number_type(float, "a number", 0)


def _add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE",
                        help="deepstream-style config.yml with a `plugins: message: type: direct` section")
    parser.add_argument("--option", metavar="KEY=VALUE", action="append", default=[],
                        help="set one option (repeatable); wins over the config file. "
                             "Lists are comma-separated: seedNodes=127.0.0.1:6021,127.0.0.1:6022")
    parser.add_argument("--log-level", default="WARNING",
                        choices=["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"],
                        help="log level on stderr (default: WARNING)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `python -m swarm`."""
    parser = argparse.ArgumentParser(
        prog=PROG, description="swarm: a brokerless small-world message bus (deepstream's direct connector).")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="{node,sub,pub,status,demo,certs}",
                                     required=True)

    node = commands.add_parser("node", help="run a node until SIGINT/SIGTERM",
                               description="Run a node. Prints `listening <name> <host>:<port>`, "
                                           "`bridge <address>` (with the `bridge` option) and "
                                           "`ready <name>` on stdout.")
    _add_config_arguments(node)

    sub = commands.add_parser("sub", help="print each message on TOPIC as a JSON line",
                              description="Join the cluster and print each message on TOPIC as one JSON "
                                          "line on stdout (bytes as base64). Status lines go to stderr.")
    _add_config_arguments(sub)
    sub.add_argument("topic", metavar="TOPIC", help="topic; digits make an int topic")

    pub = commands.add_parser("pub", help="publish one JSON message on TOPIC",
                              description="Join the cluster, publish one message, exit once a peer has "
                                          "it (exit 1 if no peer is reachable within --timeout).")
    _add_config_arguments(pub)
    pub.add_argument("topic", metavar="TOPIC", help="topic; digits make an int topic")
    pub.add_argument("message", metavar="JSON", help="the message, as JSON")
    pub.add_argument("--timeout", type=_positive_float, default=10.0,
                     help="seconds to find a peer and hand it the message (default: 10)")

    status = commands.add_parser("status", help="print a running node's ring position, links and counters",
                                 description="Ask the node listening at HOST:PORT for its status: ring "
                                             "position, links (local, shortcut or inbound, with each "
                                             "peer's name and address), view size and counters.")
    status.add_argument("address", metavar="HOST:PORT", help="the node's listen address")
    status.add_argument("--json", action="store_true", help="print the status as JSON")
    status.add_argument("--timeout", type=_positive_float, default=5.0,
                        help="seconds to wait for the answer (default: 5)")
    status.add_argument("--config", metavar="FILE",
                        help="take the `tls` files from this config (a TLS node answers over TLS only)")
    status.add_argument("--option", metavar="KEY=VALUE", action="append", default=[],
                        help="as for node; only tls.ca, tls.cert and tls.key matter here")
    status.add_argument("--log-level", default="WARNING",
                        choices=["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"], help=argparse.SUPPRESS)

    demo = commands.add_parser("demo", help="run N node processes on loopback and check delivery",
                               description="Start N node processes on loopback, publish streams from "
                                           "several of them, print a table per node; exit 0 only when "
                                           "nothing was lost, duplicated or reordered.")
    demo.add_argument("--nodes", type=_positive_int, default=8, help="node processes (default: 8)")
    demo.add_argument("--tls", action="store_true",
                      help="make a throw-away cluster CA and run every link over mutual TLS 1.3")
    demo.add_argument("--messages", type=_positive_int, default=2000,
                      help="messages per publisher (default: 2000)")
    demo.add_argument("--publishers", type=_positive_int, default=3,
                      help="nodes that publish, at most --nodes (default: 3)")
    demo.add_argument("--size", type=_non_negative_int, default=64,
                      help="payload bytes per message (default: 64)")
    demo.add_argument("--rate", type=_non_negative_float, default=0.0,
                      help="messages per second per publisher; 0 = as fast as flow control allows "
                           "(default: 0)")
    demo.add_argument("--timeout", type=_positive_float, default=120.0,
                      help="give up after this many seconds (default: 120)")
    demo.add_argument("--log-level", default="WARNING",
                      choices=["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"],
                      help="log level of the node processes on stderr (default: WARNING)")

    certs.add_parser(commands)

    # Internal: one node process of the demo (and of the benchmarks), driven over stdin/stdout by the
    # parent (see swarm.harness).
    child = commands.add_parser("_demo-node")
    _add_config_arguments(child)
    child.add_argument("--peers", type=_non_negative_int, required=True,
                       help="links to wait for before reporting `linked`")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `python -m swarm` and of the `swarm` script; returns the exit status.

    When the reader of stdout goes away (`swarm status HOST:PORT | head -1`), the command stops quietly
    with status 141 (128 + SIGPIPE), as Python's documentation recommends
    (https://docs.python.org/3/library/signal.html#note-on-sigpipe): no traceback, and stdout pointed at
    /dev/null so that the interpreter's last flush does not complain either.
    """
    try:
        try:
            status = _main(argv)
        except SystemExit:  # argparse's --help, --version and usage errors: their text is in stdout's buffer
            sys.stdout.flush()
            raise
        sys.stdout.flush()  # here, not at exit, so that a reader gone is caught below
    except BrokenPipeError:
        return _stdout_gone()
    return status


def _stdout_gone() -> int:
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return EXIT_BROKEN_PIPE


def _is_broken_pipe(error: BaseException) -> bool:
    """A BrokenPipeError, or a group of nothing else (a write to stdout inside a nursery)."""
    if isinstance(error, BaseExceptionGroup):
        return error.split(BrokenPipeError)[1] is None
    return isinstance(error, BrokenPipeError)


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(args.log_level)
    try:
        return _dispatch(args)
    except BaseException as raised:  # noqa: B036 - re-raised below unless it is one we report
        error = _leaf(raised)
        if isinstance(error, KeyboardInterrupt):
            return EXIT_INTERRUPTED
        if isinstance(error, MessageTooLarge):
            error = ConfigError(f"JSON: {error}")
        if isinstance(error, ConfigError):
            print(error_line(error), file=sys.stderr, flush=True)
            return EXIT_CONFIG
        if isinstance(error, (CommandFailed, certs.CertError)):
            print(error_line(error), file=sys.stderr, flush=True)
            return EXIT_FAILURE
        if _is_broken_pipe(raised):
            return _stdout_gone()
        raise


def _leaf(error: BaseException) -> BaseException:
    """The one exception inside nested single-member exception groups (trio's nurseries wrap them)."""
    while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
        error = error.exceptions[0]
    return error


def _dispatch(args: argparse.Namespace) -> int:
    command = args.command
    if command == "demo":
        from .demo import run_demo
        return trio.run(run_demo, args.nodes, args.messages, args.publishers, args.size, args.rate,
                        args.timeout, args.log_level, args.tls)
    if command == "_demo-node":
        from .harness import run_demo_node
        return trio.run(run_demo_node, _node_options(args.config, args.option), args.peers)
    if command == "node":
        return trio.run(run_node, _node_options(args.config, args.option))
    if command == "status":
        address = parse_address(args.address, "HOST:PORT")
        tls_context = None
        if args.config is not None or args.option:
            files = load_options(args.config, args.option).tls
            if files is not None:
                tls_context = tls.load(files).client
        return trio.run(run_status, address, args.json, args.timeout, tls_context)
    if command == "certs":
        for line in certs.run(args):
            print(line)
        return EXIT_OK
    # pub and sub are clients: an ephemeral port unless told otherwise.
    options = _node_options(args.config, args.option, defaults={"port": 0})
    topic = parse_topic(args.topic)
    if command == "sub":
        return trio.run(run_sub, options, topic)
    try:
        message = json.loads(args.message)
    except ValueError as error:
        raise ConfigError(f"JSON: expected a JSON value, got {args.message!r} ({error})") from None
    return trio.run(run_pub, options, topic, message, args.timeout)
