"""Seeds given by DNS name (issue 14, part 2), with names the test controls: trio's hostname-resolver hook
(`trio.socket.set_custom_hostname_resolver`) answers for `seeds.test`, the way a Kubernetes headless
service answers with one A record per pod, and nothing reaches the network.

A seed `name:port` is dialled through `trio.open_tcp_stream`, which resolves the name at every dial
(so every retry sees the records of the moment) and tries every address it gets, in turn, until one
connects (RFC 8305, happy eyeballs). These tests pin both properties."""

from __future__ import annotations

import socket
from typing import Any

import trio

import swarm

NAME = "seeds.test"


class Records:
    """A resolver for `seeds.test` only: the A records it answers with, and how often it was asked."""

    def __init__(self) -> None:
        self.addresses: list[str] = []
        self.asked = 0

    async def getaddrinfo(self, host: bytes | str, port: Any, family: int = 0, type: int = 0,
                          proto: int = 0, flags: int = 0) -> list[Any]:
        name = host.decode() if isinstance(host, bytes) else host
        if name != NAME:
            return socket.getaddrinfo(host, port, family, type, proto, flags)  # loopback literals
        self.asked += 1
        if not self.addresses:
            raise socket.gaierror(socket.EAI_NONAME, "no such name (yet)")
        return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (address, int(port)))
                for address in self.addresses]

    async def getnameinfo(self, sockaddr: Any, flags: int) -> Any:  # pragma: no cover - not used
        return socket.getnameinfo(sockaddr, flags)


def node(name: str, host: str, port: int = 0, **options: Any) -> swarm.Connector:
    return swarm.Connector({"serverName": name, "host": host, "port": port, "failureTimeout": 1.0,
                            "reconnectMaxDelay": 0.2, **options})


async def test_a_seed_name_is_tried_at_every_address_it_resolves_to() -> None:
    # Three "pods" behind one name: the first record has nobody listening, the node gets in through the
    # next one.
    records = Records()
    trio.socket.set_custom_hostname_resolver(records)
    try:
        async with node("pod-a", "127.0.0.2") as pod:
            port = pod.address[1]
            records.addresses = ["127.0.0.9", "127.0.0.2"]  # 127.0.0.9: connection refused
            async with node("joiner", "127.0.0.1", seedNodes=[f"{NAME}:{port}"]) as joiner:
                with trio.fail_after(10):
                    await joiner.wait_ready()
                    while "pod-a" not in joiner.status()["links"]:
                        await trio.sleep(0.02)
        assert records.asked >= 1
    finally:
        trio.socket.set_custom_hostname_resolver(None)


async def test_a_seed_name_is_resolved_again_at_every_retry() -> None:
    # The name has no record when the node starts (a headless service before its first pod is ready),
    # then points at a pod: a retry finds it. Then the pod moves (a new pod IP, the old one gone): the
    # node, cut off, finds the new one through the same name.
    records = Records()
    trio.socket.set_custom_hostname_resolver(records)
    try:
        async with node("pod-a", "127.0.0.2") as first:
            port = first.address[1]
            async with node("joiner", "127.0.0.1", seedNodes=[f"{NAME}:{port}"]) as joiner:
                with trio.fail_after(10):
                    while records.asked < 2:  # failed, and tried again
                        await trio.sleep(0.02)
                assert joiner.status()["links"] == []
                records.addresses = ["127.0.0.2"]
                with trio.fail_after(10):
                    while "pod-a" not in joiner.status()["links"]:
                        await trio.sleep(0.02)
                asked = records.asked
                async with node("pod-b", "127.0.0.3", port=port) as second:
                    records.addresses = ["127.0.0.3"]
                    await first.close()  # the old pod is gone; the joiner is cut off
                    with trio.fail_after(15):
                        while "pod-b" not in joiner.status()["links"]:
                            await trio.sleep(0.02)
                    assert records.asked > asked
                    assert second.address[0] == "127.0.0.3"
    finally:
        trio.socket.set_custom_hostname_resolver(None)
