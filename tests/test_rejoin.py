"""Seeds are only a starting point: with every seed down, running nodes keep working, and a restarted
node rejoins through the nodes it remembers (its `peersFile`)."""

from __future__ import annotations

import json

import trio

import swarm


def addr(conn: swarm.Connector) -> str:
    return "{}:{}".format(*conn.address)


async def wait_for(predicate, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.02)


async def test_restarted_node_rejoins_through_remembered_nodes_with_every_seed_down(tmp_path) -> None:
    peers_file = tmp_path / "b.peers"
    async with swarm.Connector({"serverName": "seed", "port": 0}) as seed, \
            swarm.Connector({"serverName": "a", "port": 0, "seedNodes": [addr(seed)]}) as a:
        b_options = {"serverName": "b", "port": 0, "seedNodes": [addr(seed)], "peersFile": str(peers_file)}
        async with swarm.Connector(b_options) as b:
            await wait_for(lambda: {"a", "seed"} <= set(b.status()["links"]))
        # b wrote what it knew when it left.
        remembered = json.loads(peers_file.read_text())
        assert list(a.address) in remembered
        await seed.close()  # every seed is down now
        await wait_for(lambda: "seed" not in a.status()["links"])
        got: list[object] = []
        a.subscribe("t", got.append)
        async with swarm.Connector(b_options) as b_again:
            await wait_for(lambda: "a" in b_again.status()["links"])
            await wait_for(lambda: "b" in a.status()["links"])
            b_again.publish("t", "back")
            await wait_for(lambda: got == ["back"])


async def test_running_nodes_keep_working_with_every_seed_down() -> None:
    async with swarm.Connector({"serverName": "seed", "port": 0}) as seed:
        options = {"port": 0, "seedNodes": [addr(seed)]}
        async with swarm.Connector({"serverName": "a", **options}) as a, \
                swarm.Connector({"serverName": "b", **options}) as b:
            await wait_for(lambda: "b" in a.status()["links"])
            await seed.close()
            got: list[object] = []
            b.subscribe("t", got.append)
            with trio.fail_after(10):
                for i in range(20):
                    a.publish("t", i)
                    await trio.sleep(0.05)
            await wait_for(lambda: got == list(range(20)))
