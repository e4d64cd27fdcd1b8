"""The `metrics` option (issue 14, part 1): real HTTP requests to a running node's /metrics, /healthz and
/readyz, the metrics text parsed with `prometheus_client.parser`."""

from __future__ import annotations

from typing import Any

import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

import swarm
from swarm import counters as C
from swarm.errors import ConfigError
from swarm.protocol import wire

OPTIONS = {"port": 0, "host": "127.0.0.1", "metrics": "127.0.0.1:0"}


async def get(address: tuple[str, int], path: str) -> tuple[int, str]:
    """One HTTP GET: (status code, body)."""
    with trio.fail_after(5):
        stream = await trio.open_tcp_stream(*address)
        async with stream:
            await stream.send_all(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            data = b""
            while chunk := await stream.receive_some(65536):
                data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body.decode()


def samples(text: str) -> dict[str, float]:
    return {sample.name: sample.value for family in text_string_to_metric_families(text)
            for sample in family.samples}


async def test_metrics_expose_every_counter_and_the_state_gauges() -> None:
    async with swarm.Connector({"serverName": "m1", **OPTIONS}) as first:
        seed = f"127.0.0.1:{first.address[1]}"
        async with swarm.Connector({"serverName": "m2", "seedNodes": [seed], **OPTIONS}) as second:
            got: list[Any] = []
            second.subscribe("t", got.append)
            with trio.fail_after(10):
                await second.wait_ready()
                while "m2" not in first.status()["links"]:
                    await trio.sleep(0.01)
                for i in range(20):
                    first.publish("t", i)
                    await trio.sleep(0)
                while len(got) < 20:
                    await trio.sleep(0.01)
            assert second.metrics is not None and second.metrics.address is not None
            code, text = await get(second.metrics.address, "/metrics")
            assert code == 200
            values = samples(text)
            # Every counter under its documented name, a counter's `_total`; the values are the node's.
            for name in C.COUNTERS:
                assert f"swarm_{name}_total" in values, name
            status = second.status()
            assert values["swarm_delivered_total"] == status["counters"][C.DELIVERED] == 20
            assert values["swarm_links"] == len(status["links"]) == 1
            assert values["swarm_ready"] == 1.0 and values["swarm_name_conflict"] == 0.0
            assert values["swarm_view_size"] == status["view_size"]
            types = {family.name: family.type for family in text_string_to_metric_families(text)}
            assert types["swarm_delivered"] == "counter" and types["swarm_links"] == "gauge"
            # The hop counts of the 20 first copies (one link each: m1 is m2's neighbour), a histogram.
            assert types["swarm_broadcast_hops"] == "histogram"
            assert status["hops"] == {"1": 20}
            assert values["swarm_broadcast_hops_count"] == 20 and values["swarm_broadcast_hops_sum"] == 20
            buckets = {sample.labels["le"]: sample.value for family in text_string_to_metric_families(text)
                       for sample in family.samples if sample.name == "swarm_broadcast_hops_bucket"}
            assert buckets["1"] == buckets["+Inf"] == 20 and buckets["12"] == 20


async def test_healthz_answers_while_running_and_readyz_only_while_ready() -> None:
    # minimumPeers 1 with no seeds: running, never ready.
    async with swarm.Connector({"serverName": "lonely", "minimumPeers": 1, **OPTIONS}) as lonely:
        assert lonely.metrics is not None and lonely.metrics.address is not None
        address = lonely.metrics.address
        assert (await get(address, "/healthz"))[0] == 200
        code, body = await get(address, "/readyz")
        assert code == 503 and "minimumPeers" in body
        assert (await get(address, "/nothing"))[0] == 404
    async with swarm.Connector({"serverName": "alone", **OPTIONS}) as alone:  # minimumPeers 0: ready
        assert alone.metrics is not None and alone.metrics.address is not None
        with trio.fail_after(5):
            await alone.wait_ready()
        assert await get(alone.metrics.address, "/readyz") == (200, "ready\n")


@pytest.mark.parametrize("value", ["nohost", ":9100", "127.0.0.1:70000", 9100])
def test_a_bad_metrics_address_is_a_config_error_naming_the_key(value: Any) -> None:
    with pytest.raises(ConfigError, match="^metrics: "):
        swarm.Connector({"serverName": "x", "metrics": value})


async def test_readyz_turns_503_when_another_live_process_takes_the_name() -> None:
    async with swarm.Connector({"serverName": "holder", **OPTIONS}) as holder:
        seed = f"127.0.0.1:{holder.address[1]}"
        async with swarm.Connector({"serverName": "twin", "seedNodes": [seed], **OPTIONS}) as twin:
            assert twin.metrics is not None and twin.metrics.address is not None
            with trio.fail_after(10):
                await twin.wait_ready()
                while "twin" not in holder.status()["links"]:
                    await trio.sleep(0.01)
            assert (await get(twin.metrics.address, "/readyz"))[0] == 200
            # A newer process named "twin" says HELLO to the holder, which takes it and tells the old one.
            newer = await trio.open_tcp_stream(*holder.address)
            async with newer:
                await newer.send_all(wire.encode_control(wire.KIND_HELLO, {
                    "version": wire.PROTOCOL_VERSION, "cluster": "swarm", "name": "twin",
                    "epoch": 1 << 62, "address": ["127.0.0.1", 9], "nonce": 5}))
                with trio.fail_after(10):
                    while twin.status()["name_conflict"] is None:
                        await trio.sleep(0.01)
                code, body = await get(twin.metrics.address, "/readyz")
                assert code == 503 and "name" in body
                assert samples((await get(twin.metrics.address, "/metrics"))[1])["swarm_name_conflict"] == 1.0


def test_the_operations_guide_lists_every_gauge() -> None:
    from pathlib import Path

    from swarm.transport.metrics import GAUGES

    text = (Path(__file__).parent.parent / "docs" / "operations.md").read_text(encoding="utf-8")
    assert [name for name, _, _ in GAUGES if f"| `{name}` | gauge |" not in text] == []
