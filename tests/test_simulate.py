"""`swarm.simulate`: the simulated network, protocol runs over it, and `python -m swarm.simulate`.

Small clusters (up to a few hundred nodes) so the file runs in well under a minute; the figures at
10,000 nodes and more are the benchmark's business, not the tests'.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import deque
from pathlib import Path

import pytest

from swarm.protocol import wire
from swarm.simulate import cli
from swarm.simulate.network import Latency, Network
from swarm.simulate.protocol import Params, Simulation, percentile, run

ROOT = Path(__file__).resolve().parent.parent


def simulate(*args: str, hash_seed: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONHASHSEED"}
    if hash_seed is not None:
        env["PYTHONHASHSEED"] = hash_seed
    return subprocess.run([sys.executable, "-m", "swarm.simulate", *args], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=120)


def bfs(links: dict[str, list[str]], start: str) -> dict[str, int]:
    distance = {start: 0}
    todo = deque([start])
    while todo:
        name = todo.popleft()
        for peer in links[name]:
            if peer not in distance:
                distance[peer] = distance[name] + 1
                todo.append(peer)
    return distance


# ------------------------------------------------------------------------------------------- the network

def test_latency_distributions_are_seeded_per_pair_and_in_range() -> None:
    uniform = Network(3, latency=Latency.parse("uniform:2:20"))
    other = Network(4, latency=Latency.parse("uniform:2:20"))
    draws = [uniform.latency_between(f"a{i}", f"b{i}") for i in range(500)]
    assert all(0.002 <= d <= 0.020 for d in draws)
    assert draws == [Network(3, latency=Latency.parse("uniform:2:20")).latency_between(f"b{i}", f"a{i}")
                     for i in range(500)]  # symmetric, and the same in a new network with the seed
    assert draws != [other.latency_between(f"a{i}", f"b{i}") for i in range(500)]
    lognormal = Network(3, latency=Latency.parse("lognormal:1.6:0.5"))
    median = sorted(lognormal.latency_between("x", f"y{i}") for i in range(2001))[1000]
    assert 0.0045 < median < 0.0055  # e^1.6 ms
    assert Latency.parse("7").quantile(0.3) == 0.007


def test_loss_delays_frames_but_never_drops_or_reorders_them() -> None:
    net = Network(5, latency=0.005, loss=0.3, record=True)
    net.add_node("a")
    net.add_node("b", seeds=["a"])
    net.run_for(3.0)
    for i in range(200):
        net.publish("a", "t", i)
    net.run_for(5.0)
    assert net.delivered("b", "a") == list(range(200))
    assert net.lost_segments > 20
    late = [d.time for d in net.deliveries]
    assert max(b - a for a, b in zip(late, late[1:], strict=False)) >= 0.0  # in order, by construction
    assert max(late) - 3.0 > 0.2  # some paid a retransmission


def test_partition_blackholes_traffic_and_dials_until_heal() -> None:
    net = Network(1, latency=0.001, record=True)
    for name in "abcd":
        net.add_node(name, seeds=["a"] if name != "a" else [], failure_timeout=1.0, handshake_timeout=1.0)
    net.run_for(2.0)
    net.partition([["a", "b"], ["c", "d"]])
    net.publish("a", "t", "cut")
    net.run_for(0.5)
    assert net.delivered("b") == ["cut"] and net.delivered("c") == []
    net.run_for(4.0)  # failure timeouts close the links across; dials across time out
    assert "c" not in net.state("a").linked_peers
    net.heal()
    net.run_for(15.0)
    net.publish("a", "t", "healed")
    net.run_for(2.0)
    assert all("healed" in net.delivered(name) for name in "bcd")


def test_percentile_is_nearest_rank() -> None:
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 99) == 4.0
    assert percentile([], 50) == 0.0


# ------------------------------------------------------------------------------------------- protocol runs

@pytest.fixture(scope="module")
def converged_200() -> tuple[Simulation, dict]:
    # Flooding, whose copies and hops the tests below derive from the graph (the tree's are its own).
    sim = Simulation(Params(nodes=200, seed=11, messages=5, options=(("broadcast", "flood"),)))
    sim.bootstrap()
    return sim, sim.broadcast_phase("intact", sim.names[0])


def test_direct_bootstrap_opens_the_true_ring_and_the_drawn_shortcuts(converged_200: tuple) -> None:
    sim, _ = converged_200
    assert sim.ring_mismatch() is None
    assert sim.bootstrap_result["mode"] == "direct"
    kinds = [sim.state(n).link_kind(p) for n in sim.names for p in sim.state(n).linked_peers]
    assert kinds.count("shortcut") >= 0.9 * 2 * 200  # the drawn shortcuts, kept as the node's own


def test_broadcast_on_a_converged_overlay_reaches_everyone_with_floodings_rmr(converged_200: tuple) -> None:
    sim, result = converged_200
    assert result["delivery"] == 1.0 and result["reachable"] == 1.0
    assert result["duplicates_delivered"] == 0
    links = sim.link_graph()
    n = len(links)
    edges = sum(len(peers) for peers in links.values()) // 2
    # Flooding: every node sends to all its peers but the one it heard from: m = 2E - (n - 1).
    expected_rmr = (2 * edges - (n - 1)) / (n - 1) - 1
    assert result["rmr"] == pytest.approx(expected_rmr, abs=0.05)
    assert result["payload_per_node"]["mean"] == pytest.approx(2 * edges / n - (n - 1) / n, abs=0.05)
    # Equal latencies: the first copy takes a shortest path, so hops are breadth-first distances and the
    # last delivery hop is the publisher's eccentricity.
    distance = bfs(links, sim.names[0])
    assert result["ldh"] == max(distance.values())
    histogram: dict[str, int] = {}
    for d in distance.values():
        if d:
            histogram[str(d)] = histogram.get(str(d), 0) + 5
    assert result["hops"] == dict(sorted(histogram.items(), key=lambda item: int(item[0])))
    assert 2 <= result["ldh"] <= 8
    assert result["latency_ms"]["p50"] <= result["latency_ms"]["p90"] <= result["latency_ms"]["p99"]
    assert result["latency_ms"]["max"] == pytest.approx(5.0 * result["ldh"])


def test_crash_without_repair_loses_deliveries_and_repair_restores_them() -> None:
    params = Params(nodes=150, seed=2, messages=2, crash=0.75, repair="both",
                    options=(("failureTimeout", 1.0), ("forgetAfter", 5.0)))
    result = run(params)
    intact, off, on = result["phases"]
    assert intact["delivery"] == 1.0
    assert off["phase"] == "crash 75% no repair" and off["live"] == on["live"] == 38
    assert off["delivery"] < 0.9
    assert off["delivery"] == pytest.approx(off["reachable"])  # the flood reaches exactly its component
    assert on["convergence_s"] is not None
    assert on["delivery"] == 1.0


def test_partition_then_heal_restores_delivery() -> None:
    params = Params(nodes=60, seed=4, messages=2, partition=2, partition_time=6.0,
                    options=(("failureTimeout", 1.0), ("forgetAfter", 5.0)))
    phases = run(params)["phases"]
    cut, healed = phases[1], phases[2]
    assert cut["delivery"] < 0.7 and cut["delivery"] == pytest.approx(cut["reachable"])
    assert healed["delivery"] == 1.0 and healed["convergence_s"] is not None


def test_join_bootstrap_and_churn_keep_delivering() -> None:
    params = Params(nodes=40, seed=5, messages=2, bootstrap="join", churn=2.0, churn_time=4.0,
                    publish_rate=5.0, drain=2.0)
    result = run(params)
    assert result["bootstrap"]["convergence_s"] is not None
    churn = result["phases"][-1]
    assert churn["broadcasts"] == 20 and churn["joined"] == 4 and churn["left"] == 4
    assert churn["delivery"] >= 0.95


# ------------------------------------------------------------------------------------------- the CLI

SMALL = ["--nodes", "60", "--messages", "2", "--crash", "0.5", "--option", "failureTimeout=1"]


def test_same_seed_gives_byte_identical_json_and_another_seed_differs() -> None:
    first = simulate(*SMALL, "--seed", "3", "--json")
    second = simulate(*SMALL, "--seed", "3", "--json")
    other = simulate(*SMALL, "--seed", "4", "--json")
    assert first.returncode == 0, first.stderr
    assert first.stdout == second.stdout
    assert other.stdout != first.stdout
    data = json.loads(first.stdout)
    assert [ph["phase"] for ph in data["phases"]] == ["intact", "crash 50% no repair",
                                                       "crash 50% with repair"]


def test_table_output() -> None:
    out = simulate("--nodes", "40", "--messages", "1", "--seed", "1")
    assert out.returncode == 0, out.stderr
    assert "swarm protocol simulation: 40 nodes" in out.stdout
    assert "intact" in out.stdout and "delivery" in out.stdout
    assert out.stderr == ""  # no progress bar when stderr is not a terminal


@pytest.mark.parametrize(("args", "flag"), [
    (["--crash", "1.5"], "--crash"),
    (["--nodes", "1"], "--nodes"),
    (["--nodes", "ten"], "--nodes"),
    (["--distribution", "zipf"], "--distribution"),
    (["--latency", "uniform:5"], "--latency"),
    (["--option", "failureTimeout=0"], "--option failureTimeout"),
    (["--sweep", "p=0:1"], "--sweep"),
    (["--mode", "graph", "--model", "ws", "--nodes", "10", "--k", "12"], "--k"),
])
def test_bad_parameters_exit_2_with_one_line_naming_the_flag(args: list[str], flag: str,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and flag in err and "expected" in err, err


def test_plot_without_matplotlib_fails_with_one_line(monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import fails as if not installed
    assert cli.main(["--nodes", "20", "--plot", "x.png"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--plot" in err and "matplotlib" in err


def test_scenario_file_sets_options_and_flags_override(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    scenario = tmp_path / "crash.yml"
    scenario.write_text("nodes: 50\nmessages: 1\ncrash: 0.4\nrepair: off\nseed: 9\n"
                        "option:\n  failureTimeout: 1.5\n")
    assert cli.main(["--scenario", str(scenario), "--seed", "10", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["params"]["nodes"] == 50 and data["params"]["seed"] == 10
    assert data["params"]["options"] == {"failureTimeout": 1.5}
    assert [ph["phase"] for ph in data["phases"]] == ["intact", "crash 40% no repair"]
    scenario.write_text("nodes: 50\nbogus: 1\n")
    assert cli.main(["--scenario", str(scenario)]) == 2
    assert "bogus" in capsys.readouterr().err


def test_graph_sweep_over_p_normalises_by_the_lattice(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--mode", "graph", "--model", "ws", "--nodes", "300", "--k", "10",
                     "--sweep", "p=log:0.001:1:4", "--greedy-pairs", "0", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["sweep"]["values"] == [0.001, 0.01, 0.1, 1.0]
    ratios = [run_["L_ratio"] for run_ in data["runs"]]
    assert ratios == sorted(ratios, reverse=True) and ratios[-1] < 0.3
    assert data["runs"][0]["C_ratio"] > 0.95 and data["runs"][-1]["C_ratio"] < 0.2


def test_protocol_sweep_over_crash(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--nodes", "40", "--messages", "1", "--repair", "off", "--sweep", "crash=0,0.5",
                     "--option", "failureTimeout=1"]) == 0
    out = capsys.readouterr().out
    assert "crash=0 intact" in out and "crash=0.5 crash 50% no repair" in out


def test_graph_mode_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--mode", "graph", "--nodes", "500", "--greedy-pairs", "200"]) == 0
    out = capsys.readouterr().out
    assert "swarm overlay (bounded view)" in out and "path length L" in out and "random 50%" in out


def test_plot_draws_a_png(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("matplotlib")
    target = tmp_path / "hops.png"
    assert cli.main(["--nodes", "30", "--messages", "1", "--plot", str(target)]) == 0
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "hops histogram" in capsys.readouterr().err


def test_wire_keys_match_the_simulators_bookkeeping() -> None:
    """The simulator finds a broadcast's (origin, epoch, seq) at fixed offsets of DATA frames."""
    frame = wire.encode_data(wire.encode_origin("node-7"), 3, 42, wire.encode_topic("t"),
                             wire.encode_message("m"), 1 << 20)
    key = frame[6:23 + frame[6]]
    body = frame[4:]
    assert body[2:19 + body[2]] == key
    assert key == wire.encode_origin("node-7") + (3).to_bytes(8, "big") + (42).to_bytes(8, "big")


def test_every_scenario_file_in_simulations_parses() -> None:
    """The scenario files live in simulations/ (read by simulations/figures.py): each must load as is."""
    files = sorted((ROOT / "simulations").glob("*.yml"))
    assert len(files) >= 5
    for path in files:
        settings = cli.parse(["--scenario", str(path)])
        assert settings["seed"] is not None, path
