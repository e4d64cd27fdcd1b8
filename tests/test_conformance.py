"""deepstream's shared message-connector conformance cases (deepstream.md section 4), against swarm.

S1-S4 check one connector's life cycle; M1-M13 run in order against three connectors A, B, C in one
process and share their state, as in deepstream's suite; then subscription counting and security.
"""

from __future__ import annotations

from typing import Any

import pytest
from cluster import Errors, Inbox, barrier, cluster, node, wait_mesh, wait_ready, wait_until

import swarm

# ----------------------------------------------------------------------------------------------- S1-S4


async def test_s1_not_ready_at_construction_then_ready() -> None:
    conn = node("s1")
    ready_calls: list[bool] = []
    conn.on("ready", lambda: ready_calls.append(conn.is_ready))
    assert conn.is_ready is False
    assert ready_calls == []
    async with conn:
        await wait_ready([conn])
        assert conn.is_ready is True
        assert ready_calls == [True]


async def test_s2_interface_is_there() -> None:
    conn = node("s2")
    assert isinstance(conn.name, str) and conn.name
    assert isinstance(conn.version, str) and conn.version
    assert isinstance(conn.server_name, str) and conn.server_name == "s2"
    for method in ("publish", "subscribe", "unsubscribe", "on", "close", "wait_ready", "drain", "status"):
        assert callable(getattr(conn, method)), method
    assert conn.is_ready is False
    async with conn:
        host, port = conn.address
        assert host == "127.0.0.1"
        assert isinstance(port, int) and port > 0


async def test_s2_generated_server_names_are_unique() -> None:
    first = swarm.Connector({"port": 0})
    second = swarm.Connector({"port": 0})
    assert isinstance(first.server_name, str) and first.server_name
    assert first.server_name != second.server_name


@pytest.mark.parametrize(
    ("opts", "key"),
    [
        ({"noSuchOption": 1}, "noSuchOption"),
        ({"port": "6021"}, "port"),
        ({"port": 1.5}, "port"),
        ({"port": True}, "port"),
        ({"port": 70000}, "port"),
        ({"port": -1}, "port"),
        ({"seedNodes": ["localhost"]}, "seedNodes"),
        ({"seedNodes": ["127.0.0.1:notaport"]}, "seedNodes"),
        ({"seedNodes": ["127.0.0.1:0"]}, "seedNodes"),
        ({"seedNodes": 6021}, "seedNodes"),
        ({"minimumPeers": -1}, "minimumPeers"),
        ({"minimumPeers": "2"}, "minimumPeers"),
        ({"serverName": ""}, "serverName"),
        ({"serverName": 7}, "serverName"),
        ({"maxMessageSize": 10}, "maxMessageSize"),
        ({"failureTimeout": "3s"}, "failureTimeout"),
        ({"host": "not a host"}, "host"),
    ],
)
def test_s3_bad_options_raise_at_construction(opts: dict[str, Any], key: str) -> None:
    with pytest.raises(swarm.ConfigError) as info:
        swarm.Connector(opts)
    assert str(info.value).startswith(key), str(info.value)
    # The message says what was expected, not only which key.
    assert len(str(info.value)) > len(key) + 2


def test_s3_options_must_be_a_mapping() -> None:
    with pytest.raises(swarm.ConfigError):
        swarm.Connector(["port", 0])  # type: ignore[arg-type]


async def test_s4_close_emits_close() -> None:
    conn = node("s4")
    closes: list[int] = []
    conn.on("close", lambda: closes.append(1))
    async with conn:
        await wait_ready([conn])
        assert closes == []
        await conn.close()
        assert closes == [1]
    # Leaving the `async with` after an explicit close does not emit a second `close`.
    assert closes == [1]


async def test_s4_leaving_async_with_emits_close() -> None:
    conn = node("s4b")
    closes: list[int] = []
    conn.on("close", lambda: closes.append(1))
    async with conn:
        await wait_ready([conn])
    assert closes == [1]


# ---------------------------------------------------------------------------------------------- M1-M13


async def test_m1_to_m13_three_connectors() -> None:
    # M1: A starts not ready, and becomes ready (it is the first node: no peers required).
    a = node("A")
    errors = {"A": Errors(a)}
    assert a.is_ready is False
    async with a:
        # M2/M3: B and C, seeded from A's actual address, start not ready.
        b, c = node("B", [a.address]), node("C", [a.address])
        errors["B"], errors["C"] = Errors(b), Errors(c)
        assert (b.is_ready, c.is_ready) == (False, False)
        async with b, c:
            await wait_ready([a, b, c])
            assert (a.is_ready, b.is_ready, c.is_ready) == (True, True, True)
            conns = [a, b, c]
            await wait_mesh(conns)

            # M4: all subscribe to topic1; no callback yet.
            inbox = {"A": Inbox("A"), "B": Inbox("B"), "C": Inbox("C")}
            a.subscribe("topic1", inbox["A"])
            b.subscribe("topic1", inbox["B"])
            c.subscribe("topic1", inbox["C"])
            await barrier(conns)
            assert [len(inbox[n]) for n in "ABC"] == [0, 0, 0]

            # M5/M6: B publishes; A and C get it; B's callback is never called.
            b.publish("topic1", {"some": "data"})
            await wait_until(lambda: len(inbox["A"]) == 1 and len(inbox["C"]) == 1, what="M5")
            await barrier(conns)
            assert inbox["A"].messages == [{"some": "data"}]
            assert inbox["C"].messages == [{"some": "data"}]
            assert inbox["B"].messages == []

            # M7/M8: C publishes; A and B get it; C never gets its own message.
            c.publish("topic1", {"other": "value"})
            await wait_until(lambda: len(inbox["A"]) == 2 and len(inbox["B"]) == 1, what="M7")
            await barrier(conns)
            assert inbox["A"].messages == [{"some": "data"}, {"other": "value"}]
            assert inbox["B"].messages == [{"other": "value"}]
            assert inbox["C"].messages == [{"some": "data"}]

            # M9/M10: A and C publish back to back: A gets y only, B gets both, C gets x only.
            a.publish("topic1", {"val": "x"})
            c.publish("topic1", {"val": "y"})
            await wait_until(lambda: len(inbox["B"]) == 3, what="M9")
            await barrier(conns)
            assert inbox["A"].messages[2:] == [{"val": "y"}]
            assert sorted(m["val"] for m in inbox["B"].messages[1:]) == ["x", "y"]
            assert inbox["C"].messages[1:] == [{"val": "x"}]

            # M11-M13: B unsubscribes; A publishes; only C gets it.
            b.unsubscribe("topic1", inbox["B"])
            a.publish("topic1", {"notFor": "B"})
            await wait_until(lambda: len(inbox["C"]) == 3, what="M13")
            await barrier(conns)
            assert inbox["C"].messages[2:] == [{"notFor": "B"}]
            assert len(inbox["B"]) == 3 and {"notFor": "B"} not in inbox["B"].messages
            assert inbox["A"].messages[2:] == [{"val": "y"}]

            for name in "ABC":
                assert errors[name].errors == [], (name, errors[name].errors)


# -------------------------------------------------------------------------------------------- counting


async def test_subscription_counting() -> None:
    async with cluster(["A", "B"]) as (a, b):
        first, second = Inbox("first"), Inbox("second")
        a.subscribe("counted", first)
        a.subscribe("counted", second)

        b.publish("counted", 1)
        await wait_until(lambda: len(first) == 1 and len(second) == 1, what="both callbacks")

        a.unsubscribe("counted", first)
        b.publish("counted", 2)
        await wait_until(lambda: len(second) == 2, what="remaining callback")
        await barrier([a, b])
        assert first.messages == [1]
        assert second.messages == [1, 2]

        # Removing the last callback ends the node's interest: the message is dropped and counted.
        dropped_before = a.status()["counters"].get("dropped_no_subscriber", 0)
        a.unsubscribe("counted", second)
        b.publish("counted", 3)
        await wait_until(lambda: a.status()["counters"].get("dropped_no_subscriber", 0) == dropped_before + 1,
                         what="drop counted")
        await barrier([a, b])
        assert first.messages == [1]
        assert second.messages == [1, 2]

        # Unsubscribing what is not subscribed is an error of the caller.
        with pytest.raises(ValueError):
            a.unsubscribe("counted", second)


# -------------------------------------------------------------------------------------------- security


async def test_security_other_cluster_is_refused_and_never_ready() -> None:
    async with cluster(["A", "B"]) as (a, b):
        cluster_errors = Errors(a)
        intruder = node("X", [a.address], clusterName="other-cluster")
        errors = Errors(intruder)
        readies: list[int] = []
        intruder.on("ready", lambda: readies.append(1))
        async with intruder:
            # It keeps re-dialling its seed and is refused each time.
            await wait_until(lambda: len(errors.errors) >= 2, what="intruder refused twice")
            assert intruder.is_ready is False
            assert readies == []
            assert intruder.status()["links"] == []
            for error in errors.errors:
                assert isinstance(error, swarm.NodeError)
                assert error.code == "refused"
                assert "cluster" in str(error), str(error)
            assert "other-cluster" in str(errors.errors[0]) or "swarm" in str(errors.errors[0])
            # The cluster's node reports the refusal too, and never links to the intruder.
            await wait_until(lambda: "refused" in cluster_errors.codes(), what="A reports the refusal")
            assert "X" not in a.status()["links"]
            assert a.status()["links"] == ["B"]
        # The cluster itself still works.
        inbox = Inbox()
        b.subscribe("after", inbox)
        a.publish("after", "still fine")
        await wait_until(lambda: inbox.messages == ["still fine"], what="cluster delivers")
