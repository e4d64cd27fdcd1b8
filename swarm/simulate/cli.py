"""`python -m swarm.simulate`: model an overlay by graph analysis or by running the protocol.

Two modes:

* `--mode protocol` (the default): N real protocol cores over the simulated network
  (`swarm.simulate.protocol`): a broadcast on the intact overlay, then whatever the options ask for
  (`--crash`, `--partition`, `--churn`). Prints delivery ratio, RMR, LDH, latency percentiles, payload and
  control frames per node, and convergence times.
* `--mode graph`: graph analysis (`swarm.topology.analysis`) of swarm's overlay (`--model swarm`) or, for
  comparison, Watts-Strogatz (`ws`, `--k`, `--p`), random regular (`regular`, `--degree`) or full mesh
  (`full`): path length, diameter, clustering, degrees, links, flood hops, greedy routing, and the share of
  survivors still connected after a random or targeted crash (`--crash`, default 20%, 50%, 80%).

`--sweep PARAM=START:STOP:COUNT` (also `PARAM=log:START:STOP:COUNT`, or `PARAM=V1,V2,...`) runs a series
over one parameter (p, crash, nodes, shortcuts, ...). `--scenario FILE.yml` loads any of the options from
a YAML mapping (keys are the flags' names, `local-links` or `local_links`; `option:` a mapping of swarm
options); flags given on the command line override it. `--json` prints the results as JSON; `--plot
FILE.png` draws the figure that fits the run (needs matplotlib: `pip install 'swarm-bus[plot]'`). A
progress bar shows on stderr for runs over a second, when stderr is a terminal.

A bad parameter prints one line naming the flag and what it allows, and exits with status 2. The same
options and seed give byte-identical output (the results hold simulated time only; `--timing` prints the
wall time and peak memory on stderr).
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import yaml

from ..config import OPTIONS_BY_KEY, Options
from ..errors import ConfigError
from ..topology import analysis
from .network import Latency
from .protocol import Params
from .protocol import run as run_protocol

__all__ = ["UsageError", "main", "parse", "run_config"]

PROG = "swarm.simulate"
MAX_NODES = 1_000_000


class UsageError(Exception):
    """A bad parameter: printed as one line, exit status 2."""


@dataclass(frozen=True)
class Spec:
    """One option: its flag, kind, allowed range, default, and which mode reads it."""

    name: str  # the dest, as in Params or the graph options
    kind: str  # int | float | choice | str
    default: Any
    help: str
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] = ()
    mode: str = "both"  # protocol | graph | both
    sweep: bool = True

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def allowed(self) -> str:
        if self.kind == "choice":
            return "one of " + ", ".join(self.choices)
        what = "an integer" if self.kind == "int" else "a number"
        if self.low is not None and self.high is not None:
            return f"{what} in {_num(self.low)}..{_num(self.high)}"
        if self.low is not None:
            return f"{what} >= {_num(self.low)}"
        return what

    def coerce(self, value: Any) -> Any:
        if self.kind == "str":
            return str(value)
        if self.kind == "choice":
            if isinstance(value, bool) and "on" in self.choices:
                value = "on" if value else "off"  # YAML 1.1 reads a bare on/off as a boolean
            if str(value) not in self.choices:
                raise UsageError(f"{self.flag}: expected {self.allowed()}, got {value!r}")
            return str(value)
        try:
            if isinstance(value, bool):
                raise ValueError
            if self.kind == "int":
                if isinstance(value, float) and not value.is_integer():
                    raise ValueError
                number: float = int(value)
            else:
                number = float(value)
            if math.isnan(number) or (self.low is not None and number < self.low) or \
                    (self.high is not None and number > self.high):
                raise ValueError
        except (TypeError, ValueError):
            raise UsageError(f"{self.flag}: expected {self.allowed()}, got {value!r}") from None
        return number


def _num(value: float) -> str:
    return f"{int(value):,}".replace(",", "_") if float(value).is_integer() and abs(value) >= 10_000 else \
        f"{value:g}"


SPECS: tuple[Spec, ...] = (
    Spec("mode", "choice", "protocol", "protocol: run the real protocol; graph: analyse the overlay graph",
         choices=("protocol", "graph"), sweep=False),
    Spec("nodes", "int", 1000, "number of nodes", 2, MAX_NODES),
    Spec("local_links", "int", 4, "ring links per node (localLinks)", 2, 64),
    Spec("shortcuts", "int", 2, "long-range links per node", 0, 64),
    Spec("distribution", "choice", "harmonic", "how shortcuts are drawn", choices=("harmonic", "uniform"),
         sweep=False),
    Spec("seed", "int", 7, "seed of every random choice", 0, 2 ** 63 - 1),
    Spec("crash", "float", 0.0, "share of nodes crashed (graph: removed; default there 0.2, 0.5, 0.8)", 0, 1),
    # graph mode
    Spec("model", "choice", "swarm", "graph to analyse", choices=("swarm", "ws", "regular", "full"),
         mode="graph", sweep=False),
    Spec("view", "choice", "bounded", "swarm model: shortcuts drawn from a converged node's bounded view, or "
         "from every node", choices=("bounded", "full"), mode="graph", sweep=False),
    Spec("k", "int", 10, "Watts-Strogatz: ring neighbours per node", 2, MAX_NODES, mode="graph"),
    Spec("p", "float", 0.1, "Watts-Strogatz: rewiring probability", 0, 1, mode="graph"),
    Spec("degree", "int", 8, "random regular: degree", 1, MAX_NODES, mode="graph"),
    Spec("sources", "int", 0, "breadth-first searches sampled for path lengths (0: exact up to 2,000 nodes, "
         "else 64)", 0, MAX_NODES, mode="graph"),
    Spec("greedy_pairs", "int", 1000, "greedy routing: (source, target) pairs routed", 0, 10 ** 7,
         mode="graph"),
    # protocol mode
    Spec("bootstrap", "choice", "direct", "direct: open a converged overlay's links (skips the join phase); "
         "join: real joins through seeds", choices=("direct", "join"), mode="protocol", sweep=False),
    Spec("join_seeds", "choice", "tree", "join bootstrap: each node's seed is a random earlier node (tree) "
         "or the first node (one-seed)", choices=("tree", "one-seed"), mode="protocol", sweep=False),
    Spec("join_window", "float", 0.0, "join bootstrap: starts spread over this many seconds", 0, 3600,
         mode="protocol"),
    Spec("latency", "str", "5", "one-way link latency: MS, uniform:MIN_MS:MAX_MS or lognormal:MU:SIGMA "
         "(of ms)", mode="protocol", sweep=False),
    Spec("jitter", "float", 0.0, "per-send jitter, ms (uniform 0..jitter, FIFO kept)", 0, 10_000,
         mode="protocol"),
    Spec("loss", "float", 0.0, "share of segments lost (TCP retransmits them: +--retransmit ms)", 0, 0.99,
         mode="protocol"),
    Spec("retransmit", "float", 200.0, "cost of a lost segment, ms", 0, 60_000, mode="protocol"),
    Spec("messages", "int", 10, "broadcasts per measured phase", 1, 100_000, mode="protocol"),
    Spec("interval", "float", 10.0, "ms between two broadcasts of a phase", 0, 3_600_000, mode="protocol"),
    Spec("drain", "float", 3.0, "seconds to wait for a phase's deliveries at most", 0.01, 3600,
         mode="protocol"),
    Spec("crash_mode", "choice", "silent", "silent: connections go quiet (found by failureTimeout); reset: "
         "peers see them close", choices=("silent", "reset"), mode="protocol", sweep=False),
    Spec("repair", "choice", "both", "crash without repair (no dials), with repair, or both (two runs)",
         choices=("off", "on", "both"), mode="protocol", sweep=False),
    Spec("partition", "int", 0, "cut the cluster into this many random groups, then heal", 0, 64,
         mode="protocol"),
    Spec("partition_time", "float", 10.0, "seconds the partition lasts", 0.01, 3600, mode="protocol"),
    Spec("churn", "float", 0.0, "membership changes per second (joins and graceful leaves alternate)", 0,
         10_000, mode="protocol"),
    Spec("churn_time", "float", 10.0, "seconds of churn", 0.01, 3600, mode="protocol"),
    Spec("publish_rate", "float", 5.0, "broadcasts per second during churn", 0, 10_000, mode="protocol"),
    Spec("converge_timeout", "float", 60.0, "longest wait for the true ring, seconds", 0.01, 36_000,
         mode="protocol"),
)
BY_NAME = {spec.name: spec for spec in SPECS}
DEFAULTS = {spec.name: spec.default for spec in SPECS}
NUMERIC = tuple(spec.name for spec in SPECS if spec.kind in ("int", "float") and spec.sweep)


# ---------------------------------------------------------------------------------------------- parsing

class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=f"python -m {PROG}", description=__doc__.splitlines()[0],
                     argument_default=argparse.SUPPRESS)
    for spec in SPECS:
        extra: dict[str, Any] = {"metavar": "|".join(spec.choices)} if spec.choices else {}
        parser.add_argument(spec.flag, dest=spec.name, help=f"{spec.help} (default {spec.default})", **extra)
    parser.add_argument("--option", dest="option", action="append", metavar="KEY=VALUE",
                        help="a swarm option for every node, e.g. failureTimeout=3 (repeatable)")
    parser.add_argument("--sweep", dest="sweep", metavar="PARAM=START:STOP:COUNT",
                        help="run a series: linear START:STOP:COUNT, log:START:STOP:COUNT, or V1,V2,...")
    parser.add_argument("--scenario", dest="scenario", metavar="FILE.yml", help="load options from YAML")
    parser.add_argument("--json", dest="json", action="store_true", help="print results as JSON")
    parser.add_argument("--plot", dest="plot", metavar="FILE.png", help="draw the figure that fits the run")
    parser.add_argument("--timing", dest="timing", action="store_true",
                        help="print wall time and peak memory on stderr")
    return parser


def _load_scenario(path: str) -> dict[str, Any]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise UsageError(f"--scenario: cannot read {path}: {error.strerror or error}") from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise UsageError(f"--scenario: {path} is not valid YAML: {str(error).splitlines()[0]}") from None
    if document is None:
        return {}
    if not isinstance(document, dict):
        raise UsageError(f"--scenario: {path} must hold a mapping of option names to values")
    values: dict[str, Any] = {}
    for key, value in document.items():
        name = str(key).replace("-", "_")
        if name in ("option", "options"):
            if not isinstance(value, dict):
                raise UsageError(f"--scenario: {path}: option must be a mapping of swarm options")
            values["options"] = {str(k): v for k, v in value.items()}
        elif name in BY_NAME or name == "sweep":
            values[name] = value
        else:
            raise UsageError(f"--scenario: {path}: unknown option {key!r}")
    return values


def _swarm_options(items: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
    """Validate swarm options (camelCase) with swarm.config; the errors name `--option KEY`."""
    for key in items:
        if key not in OPTIONS_BY_KEY:
            raise UsageError(f"--option {key}: unknown swarm option (see docs/configuration.md)")
        if key in ("serverName", "seedNodes", "localLinks", "shortcuts", "shortcutDistribution"):
            raise UsageError(f"--option {key}: set by the simulator (use its own flags)")
    try:
        checked = Options.from_mapping({"serverName": "sim", **items}, from_text=True)
    except ConfigError as error:
        raise UsageError(f"--option {error}") from None
    return tuple((key, getattr(checked, key)) for key in items)


def parse(argv: Sequence[str]) -> dict[str, Any]:
    """Parse and validate the command line (and its scenario file) into one mapping of settings."""
    args = vars(_parser().parse_args(list(argv)))
    merged: dict[str, Any] = dict(DEFAULTS)
    options: dict[str, Any] = {}
    if "scenario" in args:
        scenario = _load_scenario(args["scenario"])
        options.update(scenario.pop("options", {}))
        merged.update(scenario)
    for item in args.get("option") or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--option: expected KEY=VALUE, got {item!r}")
        options[key] = value
    for name, value in args.items():
        if name in BY_NAME or name == "sweep":
            merged[name] = value
    settings = {name: BY_NAME[name].coerce(merged[name]) for name in BY_NAME}
    # Text values (from --option, or quoted in a scenario) are parsed; typed YAML values are checked as is.
    settings["options"] = _swarm_options(options) if options else ()
    settings["sweep"] = _parse_sweep(merged["sweep"], settings["mode"]) if merged.get("sweep") else None
    settings["json"] = bool(args.get("json"))
    settings["plot"] = args.get("plot")
    settings["timing"] = bool(args.get("timing"))
    _check(settings)
    if settings["plot"]:
        _need_matplotlib()
    return settings


def _parse_sweep(text: Any, mode: str) -> tuple[str, list[Any]]:
    text = str(text)
    name, sep, spec = text.partition("=")
    name = name.strip().replace("-", "_")
    allowed = [n for n in NUMERIC if BY_NAME[n].mode in ("both", mode)]
    if not sep or name not in allowed:
        raise UsageError(f"--sweep: expected PARAM=START:STOP:COUNT with PARAM one of "
                         f"{', '.join(n.replace('_', '-') for n in allowed)} (--mode {mode}); got {text!r}")
    param = BY_NAME[name]
    parts = spec.split(":")
    try:
        if len(parts) == 1:
            raw = [float(v) for v in spec.split(",") if v.strip()]
        elif len(parts) in (3, 4) and (len(parts) == 3 or parts[0] == "log"):
            log = len(parts) == 4
            start, stop, count = float(parts[-3]), float(parts[-2]), int(parts[-1])
            if not 1 <= count <= 1000:
                raise UsageError(f"--sweep: COUNT must be in 1..1000, got {count}")
            if log and not 0 < start and 0 < stop:
                raise UsageError("--sweep: log:START:STOP:COUNT needs START and STOP > 0")
            if count == 1:
                raw = [start]
            elif log:
                raw = [math.exp(math.log(start) + (math.log(stop) - math.log(start)) * i / (count - 1))
                       for i in range(count)]
            else:
                raw = [start + (stop - start) * i / (count - 1) for i in range(count)]
        else:
            raise ValueError
    except ValueError:
        raise UsageError(f"--sweep: expected {name}=START:STOP:COUNT, {name}=log:START:STOP:COUNT or "
                         f"{name}=V1,V2,...; got {text!r}") from None
    if not raw:
        raise UsageError(f"--sweep: no values in {text!r}")
    values: list[Any] = []
    for value in raw:
        value = round(value) if param.kind == "int" else float(f"{value:.12g}")
        value = param.coerce(value)
        if value not in values:
            values.append(value)
    return name, values


def _check(s: dict[str, Any]) -> None:
    """Checks across parameters (each alone was checked by its Spec)."""
    try:
        Latency.parse(s["latency"])
    except ValueError as error:
        raise UsageError(f"--latency: {error}") from None
    sweep = s["sweep"]
    for values in [[None]] if sweep is None else [[{sweep[0]: v} for v in sweep[1]]]:
        for override in values:
            t = {**s, **(override or {})}
            if s["mode"] == "graph":
                _check_graph(t)
            elif t["nodes"] > 200_000:
                raise UsageError(f"--nodes: expected an integer in 2..200_000 for --mode protocol, "
                                 f"got {t['nodes']}")
            elif t["bootstrap"] == "direct" and t["nodes"] <= 2 * t["local_links"] + 2:
                raise UsageError(f"--nodes: expected more than 2 x --local-links + 2 = "
                                 f"{2 * t['local_links'] + 2} nodes for --bootstrap direct, got {t['nodes']}")
    max_peers = dict(s["options"]).get("maxPeers")
    if max_peers is not None and max_peers < s["local_links"] + s["shortcuts"]:
        raise UsageError(f"--option maxPeers: expected an integer >= --local-links + --shortcuts "
                         f"({s['local_links'] + s['shortcuts']}), got {max_peers}")


def _check_graph(t: dict[str, Any]) -> None:
    n = t["nodes"]
    if t["model"] == "ws" and not t["k"] < n:
        raise UsageError(f"--k: expected an integer in 2..{n - 1} (less than --nodes), got {t['k']}")
    if t["model"] == "regular":
        if not t["degree"] < n:
            raise UsageError(f"--degree: expected an integer in 1..{n - 1} (less than --nodes), "
                             f"got {t['degree']}")
        if n * t["degree"] % 2:
            raise UsageError(f"--degree: --nodes x --degree must be even, got {n} x {t['degree']}")
    if t["model"] == "full" and n > 5000:
        raise UsageError(f"--nodes: expected an integer in 2..5000 for --model full (n^2/2 links), got {n}")


def _need_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise UsageError("--plot: matplotlib is not installed (pip install 'swarm-bus[plot]')") from None


# ---------------------------------------------------------------------------------------------- running

class ProgressBar:
    """A one-line progress bar on stderr: only on a terminal, and only once a run has taken a second."""

    def __init__(self, stream: Any = None, delay: float = 1.0) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = bool(getattr(self.stream, "isatty", lambda: False)())
        self.started = time.monotonic()
        self.delay = delay
        self.last = 0.0
        self.shown = False

    def __call__(self, fraction: float, label: str) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self.started < self.delay or now - self.last < 0.1:
            return
        self.last = now
        width = 30
        filled = int(width * min(max(fraction, 0.0), 1.0))
        self.stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {fraction:4.0%} {label[:40]:<40}")
        self.stream.flush()
        self.shown = True

    def close(self) -> None:
        if self.shown:
            self.stream.write("\r" + " " * 80 + "\r")
            self.stream.flush()


def _params(s: dict[str, Any]) -> Params:
    return Params(nodes=s["nodes"], local_links=s["local_links"], shortcuts=s["shortcuts"],
                  distribution=s["distribution"], seed=s["seed"], bootstrap=s["bootstrap"],
                  join_seeds=s["join_seeds"], join_window=s["join_window"], latency=s["latency"],
                  jitter_ms=s["jitter"], loss=s["loss"], retransmit_ms=s["retransmit"],
                  messages=s["messages"], interval_ms=s["interval"], drain=s["drain"], crash=s["crash"],
                  crash_mode=s["crash_mode"], repair=s["repair"], converge_timeout=s["converge_timeout"],
                  partition=s["partition"], partition_time=s["partition_time"], churn=s["churn"],
                  churn_time=s["churn_time"], publish_rate=s["publish_rate"], options=s["options"])


def _graph_params(s: dict[str, Any]) -> dict[str, Any]:
    keys = ["model", "nodes", "seed"]
    keys += {"swarm": ["local_links", "shortcuts", "distribution", "view"], "ws": ["k", "p"],
             "regular": ["degree"], "full": []}[s["model"]]
    keys += ["sources", "greedy_pairs"]
    return {key: s[key] for key in keys}


def build_graph(s: dict[str, Any]) -> Any:
    model, n, seed = s["model"], s["nodes"], s["seed"]
    if model == "swarm":
        return analysis.swarm_overlay(n, s["local_links"], s["shortcuts"], s["distribution"], seed,
                                      view=s["view"])
    if model == "ws":
        return analysis.watts_strogatz(n, s["k"], s["p"], seed)
    if model == "regular":
        return analysis.random_regular(n, s["degree"], seed)
    return analysis.full_mesh(n)


def run_graph(s: dict[str, Any]) -> dict[str, Any]:
    graph = build_graph(s)
    crash = (s["crash"],) if s["crash"] > 0 else (0.2, 0.5, 0.8)
    result = analysis.analyse(graph, sources=s["sources"] or None, greedy_pairs=s["greedy_pairs"],
                              crash=crash, seed=s["seed"]).as_dict()
    # The flood's hop histogram from one source (node 0): breadth-first distances.
    import networkx as nx

    first = next(iter(graph.nodes))
    distances = nx.single_source_shortest_path_length(graph, first)
    histogram: dict[int, int] = {}
    for d in distances.values():
        if d:
            histogram[d] = histogram.get(d, 0) + 1
    result["flood_from_first"] = {str(d): c for d, c in sorted(histogram.items())}
    return {"mode": "graph", "params": _graph_params(s), "analysis": result}


def run_config(s: dict[str, Any], progress: Callable[[float, str], None] | None = None) -> dict[str, Any]:
    """Run what the settings ask for (one run or a sweep); return the results as plain data."""
    def one(t: dict[str, Any], report: Callable[[float, str], None] | None) -> dict[str, Any]:
        if t["mode"] == "graph":
            if report:
                report(0.0, "graph analysis")
            return run_graph(t)
        return run_protocol(_params(t), report)

    sweep = s["sweep"]
    if sweep is None:
        return one(s, progress)
    name, values = sweep
    runs = []
    for index, value in enumerate(values):
        def report(fraction: float, label: str, index: int = index, value: Any = value) -> None:
            if progress:
                progress((index + fraction) / len(values), f"{name}={value:g}: {label}")
        runs.append({"value": value, **one({**s, name: value}, report)})
        if progress:
            progress((index + 1) / len(values), f"{name}={value:g}")
    result: dict[str, Any] = {"mode": s["mode"], "sweep": {"param": name, "values": values}, "runs": runs}
    if s["mode"] == "graph" and s["model"] == "ws" and name == "p":
        # The paper's normalisation: L(p)/L(0) and C(p)/C(0), against the unrewired lattice.
        lattice = runs[0] if values[0] == 0 else {"analysis": run_graph({**s, "p": 0.0})["analysis"]}
        l0, c0 = lattice["analysis"]["paths"]["mean"], lattice["analysis"]["clustering"]
        result["lattice"] = {"L0": l0, "C0": c0}
        for entry in runs:
            entry["L_ratio"] = round(entry["analysis"]["paths"]["mean"] / l0, 6) if l0 else None
            entry["C_ratio"] = round(entry["analysis"]["clustering"] / c0, 6) if c0 else None
    return result


# ---------------------------------------------------------------------------------------------- output

def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(headers, widths,
                                                                                            strict=True)))]
    lines.append("  ".join("-" * w for w in widths))
    for row in rows:
        lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                               for i, (c, w) in enumerate(zip(row, widths, strict=True))))
    return "\n".join(lines)


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


PHASE_HEADERS = ["phase", "live", "msgs", "delivery", "reachable", "RMR", "LDH", "hops", "p50 ms", "p90 ms",
                 "p99 ms", "payload/node", "control/node", "converged s"]


def _phase_row(ph: dict[str, Any], label: str | None = None) -> list[str]:
    lat = ph["latency_ms"]
    return [label or ph["phase"], str(ph["live"]), str(ph["broadcasts"]), f"{ph['delivery']:.4f}",
            f"{ph['reachable']:.4f}", f"{ph['rmr']:.2f}", str(ph["ldh"]), f"{ph['hops_mean']:.2f}",
            _fmt(lat["p50"], 1), _fmt(lat["p90"], 1), _fmt(lat["p99"], 1),
            f"{ph['payload_per_node']['mean']:.2f} / {ph['payload_per_node']['max']:g}",
            f"{ph['control_per_node']['mean']:.1f} / {ph['control_per_node']['max']}",
            _fmt(ph.get("convergence_s"), 2) if "convergence_s" in ph else ""]


def _protocol_header(r: dict[str, Any]) -> list[str]:
    p = r["params"]
    b = r["bootstrap"]
    lines = [f"swarm protocol simulation: {p['nodes']:,} nodes, localLinks {p['local_links']}, shortcuts "
             f"{p['shortcuts']} ({p['distribution']}), latency {p['latency_model']}"
             + (f", loss {p['loss']:g}" if p["loss"] else "") + f", seed {p['seed']}"]
    if p["options"]:
        lines.append("options: " + ", ".join(f"{k}={v}" for k, v in p["options"].items()))
    if b.get("mode") == "direct":
        lines.append(f"overlay: direct bootstrap (join phase skipped), {b['links']:,} links, degree "
                     f"{b['degree_min']}-{b['degree_max']} (mean {b['degree_mean']:.2f})")
    elif b:
        conv = "not within the timeout" if b["convergence_s"] is None else f"{b['convergence_s']:.3f} s"
        lines.append(f"overlay: {p['nodes']:,} real joins ({b['join_seeds']} seeds), true ring after {conv}; "
                     f"{b['links']:,} links, degree {b['degree_min']}-{b['degree_max']} "
                     f"(mean {b['degree_mean']:.2f})")
    return lines


def render_protocol(r: dict[str, Any]) -> str:
    lines = _protocol_header(r) + [""]
    lines.append(_table(PHASE_HEADERS, [_phase_row(ph) for ph in r["phases"]]))
    lines += ["", "delivery: deliveries / expected (live nodes but the origin); reachable: share of them "
              "connected to the publisher",
              "RMR = m/(n-1) - 1 (m payload transmissions); LDH: last delivery hop; latency: simulated ms "
              "after publication",
              "payload/node: DATA frames sent per node per broadcast (mean / max); control/node: control "
              "frames per node in the phase",
              "converged s: simulated time until every live node's local links are its true ring "
              "neighbours"]
    return "\n".join(lines)


def render_graph(r: dict[str, Any]) -> str:
    p, a = r["params"], r["analysis"]
    model = {"swarm": f"swarm overlay ({p.get('view')} view), localLinks {p.get('local_links')}, shortcuts "
                      f"{p.get('shortcuts')} ({p.get('distribution')})",
             "ws": f"Watts-Strogatz k {p.get('k')}, p {p.get('p')}",
             "regular": f"random {p.get('degree')}-regular", "full": "full mesh"}[p["model"]]
    paths = a["paths"]
    how = "exact" if paths["exact"] else f"sampled from {paths['sources']} sources"
    rows = [
        ["links", f"{a['links']['total']:,} total, {a['links']['per_node']:.2f} per node"
         + (f" ({a['links']['chosen_per_node']:.2f} chosen)" if a["links"]["chosen_per_node"] else "")],
        ["degree", f"min {a['degree']['min']}, mean {a['degree']['mean']:.2f}, max {a['degree']['max']}"],
        ["path length L", f"{paths['mean']:.3f} ({how})"],
        ["diameter", f"{paths['diameter']} ({'exact' if paths['exact'] else 'lower bound'})"],
        ["clustering C", f"{a['clustering']:.4f}" + ("" if a["clustering_samples"] == a["nodes"]
                                                     else f" (mean over {a['clustering_samples']} nodes)")],
        ["flood hops", f"mean {a['flood']['mean_hops']:.2f}, LDH mean {a['flood']['mean_ldh']:.2f}, "
                       f"max {a['flood']['max_ldh']}"],
    ]
    if a["greedy"]:
        g = a["greedy"]
        rows.append(["greedy routing", f"mean {g['mean_hops']:.2f} hops, max {g['max_hops']}, failures "
                                       f"{g['failure_rate']:.1%} of {g['pairs']} pairs"])
    for key, share in a["robustness"].items():
        rows.append([f"connected after {key} crash", f"{share:.4f} of survivors"])
    head = f"graph analysis: {model}; {a['nodes']:,} nodes, seed {p['seed']}"
    return head + "\n\n" + _table(["measure", "value"], rows)


def render_sweep(r: dict[str, Any]) -> str:
    name = r["sweep"]["param"]
    runs = r["runs"]
    if r["mode"] == "graph":
        ws_p = "lattice" in r
        headers = [name, "L", "C", "diameter", "links/node", "LDH max"] + (["L/L0", "C/C0"] if ws_p else [])
        rows = []
        for entry in runs:
            a = entry["analysis"]
            row = [f"{entry['value']:g}", f"{a['paths']['mean']:.3f}", f"{a['clustering']:.4f}",
                   str(a["paths"]["diameter"]), f"{a['links']['per_node']:.2f}", str(a["flood"]["max_ldh"])]
            if ws_p:
                row += [_fmt(entry["L_ratio"], 3), _fmt(entry["C_ratio"], 3)]
            rows.append(row)
        p = runs[0]["params"]
        head = f"graph sweep over {name}: model {p['model']}, seed {p['seed']}"
        if ws_p:
            head += f"; lattice L0 = {r['lattice']['L0']:.3f}, C0 = {r['lattice']['C0']:.4f}"
        return head + "\n\n" + _table(headers, rows)
    rows = []
    for entry in runs:
        for ph in entry["phases"]:
            rows.append(_phase_row(ph, f"{name}={entry['value']:g} {ph['phase']}"))
    head = _protocol_header(runs[0])[0].replace("swarm protocol simulation", f"protocol sweep over {name}")
    return head + "\n\n" + _table(PHASE_HEADERS, rows)


def render(r: dict[str, Any]) -> str:
    if "sweep" in r:
        return render_sweep(r)
    return render_graph(r) if r["mode"] == "graph" else render_protocol(r)


# ---------------------------------------------------------------------------------------------- plots

def plot(r: dict[str, Any], path: str) -> str:
    """Draw the figure that fits `r` into `path`; return what it shows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(7, 4.5))
    what: str
    if "sweep" in r:
        name, runs = r["sweep"]["param"], r["runs"]
        xs = [entry["value"] for entry in runs]
        if r["mode"] == "graph" and "lattice" in r:
            points = [(x, e["L_ratio"], e["C_ratio"]) for x, e in zip(xs, runs, strict=True) if x > 0]
            ax.plot([q[0] for q in points], [q[1] for q in points], "o-", label="L(p) / L(0)")
            ax.plot([q[0] for q in points], [q[2] for q in points], "s-", label="C(p) / C(0)")
            ax.set_xscale("log")
            ax.set_xlabel("rewiring probability p")
            ax.set_ylabel("relative to the lattice (p = 0)")
            ax.set_ylim(0, 1.05)
            what = "path length and clustering against p"
        elif r["mode"] == "graph":
            ax.plot(xs, [e["analysis"]["paths"]["mean"] for e in runs], "o-", label="path length L")
            ax2 = ax.twinx()
            ax2.plot(xs, [e["analysis"]["clustering"] for e in runs], "s--", color="tab:orange",
                     label="clustering C")
            ax2.set_ylabel("clustering C")
            ax.set_xlabel(name)
            what = f"path length and clustering against {name}"
        elif name == "crash":
            for repair, label, style in ((False, "without repair", "o-"), (True, "with repair", "s-")):
                points = []
                for x, entry in zip(xs, runs, strict=True):
                    phases = [ph for ph in entry["phases"] if ph.get("repair") is repair] or \
                             [ph for ph in entry["phases"] if ph["phase"] == "intact"][:1]
                    if phases and (x == 0 or phases[0].get("repair") is repair):
                        points.append((x, phases[0]["delivery"]))
                if points:
                    ax.plot([q[0] for q in points], [q[1] for q in points], style, label=label)
            ax.set_xlabel("share of nodes crashed")
            ax.set_ylabel("delivery ratio")
            ax.set_ylim(0, 1.05)
            what = "delivery against crash share"
        else:
            first = [e["phases"][0] for e in runs]
            ax.plot(xs, [ph["hops_mean"] for ph in first], "o-", label="mean hops")
            ax.plot(xs, [ph["ldh"] for ph in first], "s-", label="LDH")
            ax.set_xlabel(name)
            ax.set_ylabel("hops")
            what = f"hops against {name}"
    elif r["mode"] == "graph":
        hist = r["analysis"]["flood_from_first"]
        ax.bar([int(k) for k in hist], list(hist.values()))
        ax.set_xlabel("hops from node 0 (breadth-first distance)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("nodes")
        what = "flood hops histogram"
    else:
        phases = r["phases"]
        width = 0.8 / len(phases)
        for index, ph in enumerate(phases):
            hist = ph["hops"]
            total = sum(hist.values()) or 1
            ax.bar([int(k) + (index - (len(phases) - 1) / 2) * width for k in hist],
                   [v / total for v in hist.values()], width=width, label=ph["phase"])
        ax.set_xlabel("hops of the first copy")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("share of deliveries")
        what = "hops histogram"
    ax.legend()
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return what


# ---------------------------------------------------------------------------------------------- main

def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `python -m swarm.simulate`; returns the exit status."""
    started = time.perf_counter()
    try:
        settings = parse(sys.argv[1:] if argv is None else argv)
    except UsageError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2
    bar = ProgressBar()
    try:
        result = run_config(settings, bar)
    finally:
        bar.close()
    if settings["json"]:
        print(json.dumps(result, indent=2))
    else:
        print(render(result))
    if settings["plot"]:
        what = plot(result, settings["plot"])
        print(f"{PROG}: {what} written to {settings['plot']}", file=sys.stderr)
    if settings["timing"]:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"{PROG}: {time.perf_counter() - started:.1f} s wall, peak memory {peak:.0f} MB",
              file=sys.stderr)
    return 0

