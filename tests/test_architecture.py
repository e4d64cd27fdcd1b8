"""The rules of docs/architecture.md that the code's shape must keep, checked on the source itself.

- The core is sans-IO: nothing in `swarm/protocol/` or `swarm/topology/` imports trio, sockets, TLS or a
  clock, and importing the core (or the simulator) loads none of them.
- The core's sub-machines never import one another: `state.py` composes them.
- The simulator drives the same core and never imports the transport.
- `wire.py` (and the frame reader) alone know where a field sits in a frame.
- No file of the core grows back into the old single class: `state.py` at most 400 lines, others 600.
- `CoreConfig` is `config.OPTIONS`: its defaults, derived ones included, are the options' defaults.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from swarm.config import OPTIONS, Options
from swarm.protocol.config import CoreConfig

ROOT = Path(__file__).resolve().parent.parent
SWARM = ROOT / "swarm"
SUB_MACHINES = ("links", "membership", "dialer", "broadcast", "direct", "delivery")
# What a sans-IO room must not import: the event loop, sockets, TLS, clocks, threads, processes.
IO_MODULES = ("trio", "socket", "ssl", "time", "datetime", "asyncio", "selectors", "threading",
              "subprocess", "swarm.transport")


def imported_modules(path: Path) -> set[str]:
    """Every module `path` imports, relative imports resolved against its package."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            module = ".".join(part for part in (base, node.module or "") if part)
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def sources(*rooms: str) -> list[Path]:
    return sorted(path for room in rooms for path in (SWARM / room).rglob("*.py"))


@pytest.mark.parametrize("path", sources("protocol", "topology"), ids=lambda p: p.name)
def test_the_core_and_the_topology_import_no_io(path: Path) -> None:
    banned = {m for m in imported_modules(path) for io in IO_MODULES if m == io or m.startswith(io + ".")}
    assert not banned, f"{path.relative_to(ROOT)} imports {sorted(banned)}"


@pytest.mark.parametrize("name", SUB_MACHINES)
def test_no_sub_machine_imports_another(name: str) -> None:
    others = {f"swarm.protocol.{other}" for other in SUB_MACHINES if other != name}
    found = imported_modules(SWARM / "protocol" / f"{name}.py") & (others | {"swarm.protocol.state"})
    assert not found, f"protocol/{name}.py imports {sorted(found)}: parts talk through events (state.py)"


@pytest.mark.parametrize("path", sources("simulate"), ids=lambda p: p.name)
def test_the_simulator_does_not_import_the_transport(path: Path) -> None:
    found = {m for m in imported_modules(path) if m.startswith("swarm.transport")}
    assert not found, f"{path.relative_to(ROOT)} imports {sorted(found)}"


def loaded_after_import(modules: str, prefixes: tuple[str, ...]) -> list[str]:
    """The modules starting with `prefixes` that a fresh interpreter has loaded after importing `modules`."""
    code = (f"import sys, {modules}\n"
            f"print(sorted(m for m in sys.modules if m.split('.')[0] in {prefixes!r} "
            "or m.startswith('swarm.transport')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                            check=True)
    return ast.literal_eval(result.stdout.strip())


def test_importing_the_core_and_the_simulated_network_loads_no_io() -> None:
    io = ("trio", "socket", "ssl")
    assert loaded_after_import("swarm.protocol.state, swarm.simulate.network", io) == []


def test_importing_the_simulator_loads_neither_trio_nor_the_transport() -> None:
    # (networkx, which the graph analysis uses, imports socket through importlib.metadata: not ours.)
    assert loaded_after_import("swarm.simulate.protocol, swarm.simulate.cli", ("trio",)) == []


def test_the_core_files_stay_small() -> None:
    sizes = {path.name: len(path.read_text(encoding="utf-8").splitlines()) for path in sources("protocol")}
    assert sizes["state.py"] <= 400, sizes
    assert max(sizes.values()) <= 600, sizes


# Names that hold frames, bodies or stream keys in swarm's code; reading them at a fixed offset is wire.py's.
FRAME_NAMES = {"frame", "body", "data", "key", "buffer"}
# Their own formats: the bridge's sidecar protocol (newline/length framed JSON, docs/bridge.md).
OWN_FORMATS = {"protocol/wire.py", "protocol/framing.py", "bridge.py"}


def fixed_offsets(path: Path, root: Path = ROOT) -> list[str]:
    """`frame[4]`, `body[2:]`, `key[1:1 + key[0]]`...: subscripts of frame-like names with a literal index."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not (isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name)
                and node.value.id in FRAME_NAMES):
            continue
        parts = [node.slice.lower, node.slice.upper] if isinstance(node.slice, ast.Slice) else [node.slice]
        if any(isinstance(p, ast.Constant) and isinstance(p.value, int)
               or isinstance(p, ast.BinOp) and any(isinstance(s, ast.Constant) for s in (p.left, p.right))
               for p in parts if p is not None):
            found.append(f"{path.relative_to(root)}:{node.lineno}: {ast.unparse(node)}")
    return found


def test_only_wire_py_reads_frames_at_fixed_offsets() -> None:
    found = [hit for path in sources("") if str(path.relative_to(SWARM)) not in OWN_FORMATS
             for hit in fixed_offsets(path)]
    assert not found, "frame offsets outside wire.py: " + "; ".join(found)


def test_the_offset_check_catches_what_it_is_for(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("def f(frame, body, key, i):\n"
                      "    return frame[4], body[2:], key[1:1 + key[0]], frame[i], wire.kind(frame)\n")
    assert len(fixed_offsets(sample, tmp_path)) == 4  # key[1:1 + key[0]] counts twice: its slice and key[0]


def snake(key: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in key)


@pytest.mark.parametrize("mapping", [{}, {"localLinks": 2, "shortcuts": 1}, {"failureTimeout": 1.5},
                                     {"seedNodes": ["127.0.0.1:6021"], "broadcast": "tree"}])
def test_core_config_defaults_are_the_options_defaults(mapping: dict[str, object]) -> None:
    options = Options.from_mapping({"serverName": "n", **mapping})
    given = {snake(key): getattr(options, key) for key in mapping}
    built = CoreConfig(server_name="n", **given)
    assert built == CoreConfig.from_options(options)
    assert {snake(o.key) for o in OPTIONS if o.core} == set(vars(built))
