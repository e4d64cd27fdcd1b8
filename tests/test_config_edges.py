"""Bad input at the edges: non-finite numbers, over-long server names, config files that are not UTF-8,
repeat a key or are not YAML, and a command line whose stdout is closed by its reader.

The config cases run in-process (`Options.from_mapping`, `load_config_file`, the `--option` parser) and,
for the command line, as real `python -m swarm` processes: one line on stderr and exit status 2. The
closed-stdout cases give the process a pipe whose read end is already closed, so that every write fails
(deterministically, unlike `| head -1`, which may read everything before the writer is done). Every
process is bounded by a timeout and reaped by the test that started it.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from procs import Proc

import swarm.config
from swarm.cli import parse_option_flags
from swarm.config import OPTIONS, Options, load_config_file
from swarm.errors import ConfigError
from swarm.protocol import wire

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
# Bound of one process run (start-up includes importing trio: slow on a loaded machine).
WAIT = 20.0
EXIT_BROKEN_PIPE = 128 + signal.SIGPIPE

NUMERIC = [option for option in OPTIONS if option.kind in ("int", "float")]
NON_FINITE = [math.nan, math.inf, -math.inf]
PLUGIN_OPTIONS = "plugins:\n  message:\n    type: direct\n    options:\n"


def finite_pattern(key: str, got: str) -> str:
    return rf"^{key}: expected a finite (number|integer)\b.*, got {got}$"


# ---------------------------------------------------------------------- non-finite numbers


@pytest.mark.parametrize("value", NON_FINITE, ids=repr)
@pytest.mark.parametrize("option", NUMERIC, ids=lambda option: option.key)
def test_every_numeric_option_refuses_non_finite_numbers(option: swarm.config.Option, value: float) -> None:
    with pytest.raises(ConfigError, match=finite_pattern(option.key, repr(value))):
        Options.from_mapping({option.key: value})


def test_the_finite_message_keeps_the_bounds() -> None:
    with pytest.raises(ConfigError) as raised:
        Options.from_mapping({"failureTimeout": math.nan})
    assert str(raised.value) == "failureTimeout: expected a finite number >= 0.1, got nan"
    with pytest.raises(ConfigError) as raised:
        Options.from_mapping({"port": math.inf})
    assert str(raised.value) == "port: expected a finite integer in 0..65535, got inf"


@pytest.mark.parametrize(("text", "got"), [(".nan", "nan"), (".NaN", "nan"), (".inf", "inf"),
                                           ("-.inf", "-inf"), ("+.inf", "inf")])
@pytest.mark.parametrize("key", ["failureTimeout", "reconnectMaxDelay", "sendQueueSize"])
def test_non_finite_numbers_in_a_config_file_are_refused(key: str, text: str, got: str,
                                                         tmp_path: Path) -> None:
    config = tmp_path / "config.yml"
    config.write_text(PLUGIN_OPTIONS + f"      {key}: {text}\n")
    options, _document = load_config_file(config)
    with pytest.raises(ConfigError, match=finite_pattern(key, got)):
        Options.from_mapping(options)


@pytest.mark.parametrize(("text", "got"), [("nan", "nan"), (".nan", "nan"), ("NaN", "nan"), ("inf", "inf"),
                                           (".inf", "inf"), ("-inf", "-inf"), ("-.inf", "-inf"),
                                           ("Infinity", "inf")])
@pytest.mark.parametrize("key", ["failureTimeout", "cacheSeconds", "maxMessageSize"])
def test_non_finite_numbers_in_option_flags_are_refused(key: str, text: str, got: str) -> None:
    with pytest.raises(ConfigError, match=finite_pattern(key, got)):
        Options.from_mapping(parse_option_flags([f"{key}={text}"]))
    # The flag text reaches `Option.coerce` unparsed when given to the Connector as text.
    with pytest.raises(ConfigError, match=finite_pattern(key, got)):
        Options.from_mapping({key: text}, from_text=True)
    # Finite numbers still pass, and other text is still refused as text.
    assert getattr(Options.from_mapping(parse_option_flags([f"{key}=5000"])), key) == 5000
    with pytest.raises(ConfigError, match=rf"^{key}: expected (a number|an integer).*, got 'many'$"):
        Options.from_mapping(parse_option_flags([f"{key}=many"]))


# ---------------------------------------------------------------------- serverName's bound


def test_server_name_longer_than_the_wire_allows_is_a_config_error() -> None:
    longest = "é" * 127 + "a"  # 255 bytes of UTF-8, 128 characters
    assert Options.from_mapping({"serverName": longest}).serverName == longest
    wire.encode_origin(longest)  # the wire takes what the config accepts...
    too_long = "é" * 128  # ...and the config refuses what the wire would refuse at start
    with pytest.raises(ValueError):
        wire.encode_origin(too_long)
    with pytest.raises(ConfigError) as raised:
        Options.from_mapping({"serverName": too_long})
    message = str(raised.value)
    assert message.startswith("serverName: ")
    assert "256 bytes of UTF-8" in message and "at most 255" in message
    assert "\n" not in message
    # The default, derived name passes.
    default = Options.from_mapping({}).serverName
    assert 0 < len(default.encode("utf-8")) <= wire.MAX_NAME_BYTES


def test_server_name_bound_is_the_wires() -> None:
    assert swarm.config.MAX_NAME_BYTES == wire.MAX_NAME_BYTES == 255


def test_server_name_that_is_not_utf8_text_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"^serverName: .*UTF-8"):
        Options.from_mapping({"serverName": "node-\udcff"})


def test_top_level_server_name_in_a_config_file_is_bounded_too(tmp_path: Path) -> None:
    config = tmp_path / "config.yml"
    config.write_text(f"serverName: {'n' * 256}\n" + PLUGIN_OPTIONS + "      port: 0\n")
    options, _document = load_config_file(config)
    with pytest.raises(ConfigError, match=r"^serverName: .* 256 bytes of UTF-8; at most 255 are allowed$"):
        Options.from_mapping(options)


# ---------------------------------------------------------------------- the config file itself


DUPLICATES = {
    # id: (config text, dotted key, line of the repeat, line of the first)
    "top-level": ("serverName: a\nserverName: b\n" + PLUGIN_OPTIONS + "      port: 0\n",
                  "serverName", 2, 1),
    "options": (PLUGIN_OPTIONS + "      serverName: a\n      port: 0\n      serverName: b\n",
                "plugins.message.options.serverName", 7, 5),
    "plugin": ("plugins:\n  message:\n    type: direct\n    type: redis\n", "plugins.message.type", 4, 3),
    "section": (PLUGIN_OPTIONS + "      port: 0\nplugins: {}\n", "plugins", 6, 1),
    "tls": (PLUGIN_OPTIONS + "      tls:\n        ca: a.pem\n        cert: b.pem\n        ca: c.pem\n",
            "plugins.message.options.tls.ca", 8, 6),
    "flow-mapping": (PLUGIN_OPTIONS + "      tls: {ca: a.pem, ca: b.pem}\n", "plugins.message.options.tls.ca",
                     5, 5),
    "in-a-list": ("extra:\n  - {a: 1}\n  - {b: 1, b: 2}\n" + PLUGIN_OPTIONS, "extra[1].b", 3, 3),
    "same-value-too": (PLUGIN_OPTIONS + "      port: 0\n      port: 0\n", "plugins.message.options.port",
                       6, 5),
}


@pytest.mark.parametrize("case", DUPLICATES)
def test_a_duplicate_key_at_any_level_is_one_line_naming_file_and_key(case: str, tmp_path: Path) -> None:
    text, key, line, first = DUPLICATES[case]
    config = tmp_path / "config.yml"
    config.write_text(text)
    with pytest.raises(ConfigError) as raised:
        load_config_file(config)
    message = str(raised.value)
    assert "\n" not in message
    assert repr(str(config)) in message
    assert f"duplicate key {key!r} (line {line}; first given on line {first})" in message


def test_merge_keys_override_without_being_duplicates(tmp_path: Path) -> None:
    config = tmp_path / "config.yml"
    config.write_text("base: &base {port: 0, failureTimeout: 2}\n" + PLUGIN_OPTIONS
                      + "      <<: *base\n      failureTimeout: 5\n")
    options, _document = load_config_file(config)
    assert options == {"port": 0, "failureTimeout": 5}
    config.write_text("base: &base {port: 0}\n" + PLUGIN_OPTIONS
                      + "      <<: *base\n      failureTimeout: 5\n      failureTimeout: 6\n")
    with pytest.raises(ConfigError, match=r"duplicate key 'plugins.message.options.failureTimeout' \(line 8"):
        load_config_file(config)


def test_a_file_that_is_not_utf8_names_the_file_and_the_offset(tmp_path: Path) -> None:
    config = tmp_path / "config.yml"
    head = (PLUGIN_OPTIONS + "      serverName: caf").encode()
    config.write_bytes(head + b"\xe9\n")  # latin-1 é
    with pytest.raises(ConfigError) as raised:
        load_config_file(config)
    message = str(raised.value)
    assert message == (f"config: {str(config)!r} is not valid UTF-8: byte 0xe9 at offset {len(head)} "
                       "(line 5)")


SYNTAX_ERRORS = {
    # id: (config bytes, words the one line must contain beside the file's name)
    "unclosed-flow": (b"plugins: [\n", ["not valid YAML", "(line 2, column 1)"]),
    "tab-indent": (b"plugins:\n\tmessage: {}\n", ["not valid YAML", "'\\t'", "(line 2, column 1)"]),
    "bad-indent": (b"plugins:\n  message:\n    type: direct\n   options: {}\n", ["not valid YAML", "line 4"]),
    "control-character": (b"plugins:\n  message: \x01\n", ["not valid YAML", "#x0001", "line 2"]),
    "undefined-alias": (b"plugins: *nowhere\n", ["not valid YAML", "nowhere", "line 1"]),
    "python-tag": (b"plugins: !!python/object:os.system x\n", ["not valid YAML", "python/object"]),
    "nested-too-deep": (b"plugins: " + b"[" * 5000 + b"]" * 5000 + b"\n", ["not valid YAML", "too deeply"]),
    "two-documents": (b"plugins: {}\n---\nplugins: {}\n", ["not valid YAML", "single document"]),
}


@pytest.mark.parametrize("case", SYNTAX_ERRORS)
def test_any_yaml_error_is_one_line_naming_the_file(case: str, tmp_path: Path) -> None:
    content, words = SYNTAX_ERRORS[case]
    config = tmp_path / "config.yml"
    config.write_bytes(content)
    with pytest.raises(ConfigError) as raised:
        load_config_file(config)
    message = str(raised.value)
    assert "\n" not in message and "<unicode string>" not in message
    assert message.startswith(f"config: {str(config)!r} ")
    for word in words:
        assert word in message, message


# ---------------------------------------------------------------------- the command line


def swarm_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "swarm", *args]


def environment(*, buffered: bool) -> dict[str, str]:
    """The environment of a child: stdout block-buffered (as in a shell pipeline) or not."""
    env = dict(os.environ)
    env.pop("PYTHONUNBUFFERED", None)
    if not buffered:
        env["PYTHONUNBUFFERED"] = "1"
    return env


CLI_CONFIG_ERRORS = {
    # id: (config bytes, words the one error line must contain)
    "duplicate": ((PLUGIN_OPTIONS + "      port: 0\n      serverName: a\n      serverName: b\n").encode(),
                  ["duplicate key 'plugins.message.options.serverName'", "line 7"]),
    "not-utf8": (PLUGIN_OPTIONS.encode() + b"      serverName: caf\xe9\n", ["not valid UTF-8", "offset 71"]),
    "nan": ((PLUGIN_OPTIONS + "      port: 0\n      failureTimeout: .nan\n").encode(),
            ["failureTimeout: expected a finite number >= 0.1, got nan"]),
    "inf": ((PLUGIN_OPTIONS + "      port: 0\n      reconnectMaxDelay: .inf\n").encode(),
            ["reconnectMaxDelay: expected a finite number >= 0.01, got inf"]),
    "long-name": ((PLUGIN_OPTIONS + "      port: 0\n      serverName: " + "n" * 300 + "\n").encode(),
                  ["serverName:", "300 bytes of UTF-8", "at most 255"]),
}
COMMAND_ARGS = {"node": [], "sub": ["events"], "pub": ["events", "{}", "--timeout", "1"],
                "status": [f"{HOST}:9", "--timeout", "1"], "_demo-node": ["--peers", "0"]}
CLI_RUNS = [(case, "node") for case in CLI_CONFIG_ERRORS] + [
    (case, command) for command in ("sub", "pub", "status", "_demo-node") for case in ("duplicate", "nan")]


def run_swarm(*args: str, stdout: int = subprocess.PIPE, env: dict[str, str] | None = None,
              ) -> subprocess.CompletedProcess[bytes]:
    """Run `python -m swarm *args` to completion (killed if it outlives WAIT)."""
    return subprocess.run(swarm_command(*args), stdin=subprocess.DEVNULL, stdout=stdout,
                          stderr=subprocess.PIPE, cwd=ROOT, env=env, timeout=WAIT, check=False)


@pytest.mark.multiprocess
@pytest.mark.parametrize(("case", "command"), CLI_RUNS)
def test_config_file_errors_exit_2_with_one_line(case: str, command: str, tmp_path: Path) -> None:
    content, words = CLI_CONFIG_ERRORS[case]
    config = tmp_path / "config.yml"
    config.write_bytes(content)
    done = run_swarm(command, "--config", str(config), *COMMAND_ARGS[command])
    lines = done.stderr.decode().splitlines()
    assert done.returncode == 2, lines
    assert len(lines) == 1 and lines[0].startswith("swarm: error: "), lines
    assert str(config) in lines[0] or case in ("nan", "inf", "long-name")
    for word in words:
        assert word in lines[0], lines
    assert done.stdout == b""


@pytest.mark.multiprocess
@pytest.mark.parametrize("flag", ["failureTimeout=nan", "failureTimeout=.inf", "sendQueueSize=-inf",
                                  "serverName=" + "é" * 200])
def test_option_flag_errors_exit_2_with_one_line(flag: str) -> None:
    done = run_swarm("node", "--option", "port=0", "--option", flag)
    lines = done.stderr.decode().splitlines()
    assert done.returncode == 2, lines
    assert len(lines) == 1, lines
    key = flag.partition("=")[0]
    assert lines[0].startswith(f"swarm: error: {key}: ")
    assert "finite" in lines[0] or "400 bytes of UTF-8" in lines[0]


@pytest.fixture
def closed_stdout() -> Iterator[int]:
    """The write end of a pipe nobody reads: every write to it fails with EPIPE."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        yield write_end
    finally:
        os.close(write_end)


def assert_stopped_quietly(done: subprocess.CompletedProcess[bytes]) -> None:
    stderr = done.stderr.decode(errors="replace")
    assert "Traceback" not in stderr and "BrokenPipe" not in stderr, stderr
    assert stderr == ""
    assert done.returncode == EXIT_BROKEN_PIPE


@pytest.mark.multiprocess
@pytest.mark.parametrize("buffered", [True, False], ids=["buffered", "unbuffered"])
def test_certs_output_into_a_closed_pipe_stops_quietly(buffered: bool, closed_stdout: int,
                                                       tmp_path: Path) -> None:
    env = environment(buffered=buffered)
    done = run_swarm("certs", "init", str(tmp_path / "ca"), stdout=closed_stdout, env=env)
    assert_stopped_quietly(done)
    assert (tmp_path / "ca" / "ca.pem").exists()  # the work was done; only its report was lost
    done = run_swarm("certs", "show", str(tmp_path / "ca" / "ca.pem"), stdout=closed_stdout, env=env)
    assert_stopped_quietly(done)
    # With a reader, the same command prints its lines and exits 0.
    done = run_swarm("certs", "show", str(tmp_path / "ca" / "ca.pem"), env=env)
    assert done.returncode == 0 and done.stdout and done.stderr == b""


@pytest.mark.multiprocess
def test_help_into_a_closed_pipe_stops_quietly(closed_stdout: int) -> None:
    # argparse swallows the failed write itself; the text then sits in the buffer until stdout is flushed.
    done = run_swarm("--help", stdout=closed_stdout, env=environment(buffered=True))
    assert_stopped_quietly(done)


@pytest.mark.multiprocess
@pytest.mark.parametrize("buffered", [True, False], ids=["buffered", "unbuffered"])
def test_node_with_stdout_closed_stops_quietly(buffered: bool, closed_stdout: int) -> None:
    # Its `listening` line fails inside trio's nurseries: the error comes out wrapped in groups.
    done = run_swarm("node", "--option", "port=0", stdout=closed_stdout, env=environment(buffered=buffered))
    assert_stopped_quietly(done)


@pytest.mark.multiprocess
async def test_status_into_a_closed_pipe_stops_quietly(closed_stdout: int, tmp_path: Path) -> None:
    stderr_path = tmp_path / "node.stderr"
    with open(stderr_path, "wb") as stderr:
        process = await trio.lowlevel.open_process(
            swarm_command("node", "--option", "port=0", "--option", "serverName=status-node"),
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr, cwd=ROOT)
    node = Proc(process, stderr_path, "status-node")
    try:
        name, address = (await node.expect("listening")).split()
        assert name == "status-node"
        for env in (environment(buffered=True), environment(buffered=False)):
            for extra in ([], ["--json"]):
                with trio.fail_after(WAIT):
                    done = await trio.run_process(swarm_command("status", address, *extra),
                                                  stdin=subprocess.DEVNULL, stdout=closed_stdout,
                                                  capture_stderr=True, check=False, cwd=ROOT, env=env)
                assert_stopped_quietly(done)
        # The node is still there, and with a reader its status is printed.
        with trio.fail_after(WAIT):
            done = await trio.run_process(swarm_command("status", address), stdin=subprocess.DEVNULL,
                                          capture_stdout=True, capture_stderr=True, check=False, cwd=ROOT)
        assert done.returncode == 0, done.stderr
        assert done.stdout.decode().startswith(f"node      status-node at {address}")
    finally:
        await node.stop()
    assert process.returncode is not None
