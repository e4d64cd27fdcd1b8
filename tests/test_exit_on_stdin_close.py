"""The `exitOnStdinClose` option: `python -m swarm node` leaves when the writer of its stdin is gone.

This is what keeps a node started by the deepstream plugin (integrations/deepstream, supervised mode) from
outliving its deepstream server: the plugin holds a pipe to the node's stdin, and the kernel closes it
however the server dies. Real processes on 127.0.0.1, every wait bounded, every process stopped.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.multiprocess

ROOT = Path(__file__).resolve().parent.parent
WAIT = 20.0  # start-up includes importing trio: slow on a loaded machine


@contextlib.contextmanager
def node(*options: str, stdin: int) -> Iterator[subprocess.Popen[str]]:
    flags = [arg for option in ("host=127.0.0.1", "port=0", "serverName=lifeline", *options)
             for arg in ("--option", option)]
    proc = subprocess.Popen([sys.executable, "-m", "swarm", "node", *flags], cwd=ROOT, stdin=stdin,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(WAIT)
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()


def wait_ready(proc: subprocess.Popen[str]) -> None:
    """Read stdout up to `ready lifeline`; a node silent for WAIT seconds is killed (the read then ends)."""
    assert proc.stdout is not None
    watchdog = threading.Timer(WAIT, proc.kill)
    watchdog.start()
    try:
        for line in proc.stdout:  # `listening ...`, then `ready ...`
            if line.startswith("ready lifeline"):
                return
    finally:
        watchdog.cancel()
    raise AssertionError(f"the node exited ({proc.wait(WAIT)}) before `ready` (or took over {WAIT:g} s)")


def test_node_leaves_when_its_stdin_closes() -> None:
    with node("exitOnStdinClose=true", stdin=subprocess.PIPE) as proc:
        wait_ready(proc)
        assert proc.poll() is None
        assert proc.stdin is not None
        proc.stdin.write("anything written is ignored\n")
        proc.stdin.flush()
        proc.stdin.close()  # what the kernel does when the supervisor dies
        assert proc.wait(WAIT) == 0
        assert proc.stderr is not None
        stderr = proc.stderr.read()
        assert "stdin closed (exitOnStdinClose): leaving the cluster" in stderr


def test_without_the_option_a_closed_stdin_is_ignored() -> None:
    # stdin on /dev/null is at its end from the start: a node started so must run until signalled
    with node(stdin=subprocess.DEVNULL) as proc:
        wait_ready(proc)
        assert proc.poll() is None, "the node stopped by itself"
        proc.terminate()
        _, stderr = proc.communicate(timeout=WAIT)
        assert proc.returncode == 0, stderr
        assert "stdin closed" not in stderr


def test_the_option_is_a_boolean() -> None:
    from swarm.config import Options
    from swarm.errors import ConfigError

    assert Options.from_mapping({"serverName": "x"}).exitOnStdinClose is False
    assert Options.from_mapping({"serverName": "x", "exitOnStdinClose": True}).exitOnStdinClose is True
    with pytest.raises(ConfigError, match="^exitOnStdinClose: "):
        Options.from_mapping({"serverName": "x", "exitOnStdinClose": "sometimes"})
