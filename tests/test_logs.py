"""The `logFormat` option (issue 14, part 4): `json` makes `python -m swarm` write one JSON object a line,
each naming the node. A real node process, its stderr read."""

from __future__ import annotations

import json
import select
import subprocess
import sys
from pathlib import Path

import pytest

from swarm.errors import ConfigError
from swarm.logs import JsonFormatter

ROOT = Path(__file__).parent.parent


def test_a_node_with_log_format_json_writes_one_object_a_line_naming_itself() -> None:
    # A node that cannot reach its seed logs (a warning, at the default level, when it gives up a dial
    # is too quiet): at INFO it logs its start. Run briefly, then stopped.
    process = subprocess.Popen(
        [sys.executable, "-m", "swarm", "node", "--log-level", "INFO", "--option", "serverName=jl",
         "--option", "port=0", "--option", "logFormat=json"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        ready, _, _ = select.select([process.stdout], [], [], 20)  # bounded: a hung start fails here
        assert ready, "the node did not start"
        line = process.stdout.readline()  # "listening jl host:port": started
        assert line.startswith("listening jl "), line
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=20)
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert lines, "the node logged nothing at INFO"
    for line in lines:
        entry = json.loads(line)  # every line one object
        assert entry["node"] == "jl" and {"time", "level", "logger", "message"} <= set(entry), entry
    assert any("left the cluster" in json.loads(line)["message"] for line in lines)


def test_an_exception_stays_inside_its_line() -> None:
    import logging

    try:
        raise ValueError("boom\nsecond line")
    except ValueError:
        record = logging.LogRecord("swarm", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    text = JsonFormatter("n1").format(record)
    assert "\n" not in text
    entry = json.loads(text)
    assert entry["node"] == "n1" and "ValueError: boom" in entry["exception"]


def test_an_unknown_log_format_is_a_config_error() -> None:
    from swarm.config import Options

    with pytest.raises(ConfigError, match="^logFormat: "):
        Options.from_mapping({"serverName": "x", "logFormat": "xml"})
