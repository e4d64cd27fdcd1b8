"""`swarm.ClusterNode`: deepstream 4+'s cluster-node API over a swarm node.

deepstream 4 and later cluster their servers through a `clusterNode` plugin: `send(message)` to every
other server, `sendDirect(serverName, message)` to one, `subscribe(topic, callback(message,
originServerName))`, `whenReady()`, `close()`. A message is an object whose `topic` field says which
subscribers get it. This is that API, in Python, on the same node as `swarm.Connector`: both are faces of
`swarm.node.Node` (one engine, one life cycle, one delivery path), and differ only in how the messaging
calls are spelled.

With the `bridge` option the node also runs the sidecar bridge (`swarm.bridge`, docs/bridge.md), through
which servers not written in Python use this face over a local socket.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import trio

from . import __version__
from .bridge import Bridge
from .config import Options
from .node import Node, check_topic
from .protocol.actions import Deliver

__all__ = ["ClusterNode", "topic_of"]


def topic_of(message: Any) -> str | int:
    """The topic of a cluster message, `message["topic"]`; TypeError or ValueError if it has none."""
    if not isinstance(message, Mapping):
        raise TypeError(f"a cluster message is a mapping with a 'topic' key, got {type(message).__name__}")
    if "topic" not in message:
        raise ValueError("a cluster message needs a 'topic' key (an int or a str)")
    return check_topic(message["topic"])


class ClusterNode(Node):
    """A swarm node with deepstream's cluster-node interface (deepstream 4+)."""

    name = "swarm"
    version = __version__
    _kind = "cluster node"

    def __init__(self, options: Mapping[str, Any] | Options | None = None) -> None:
        super().__init__(options)
        self.bridge: Bridge | None = None

    async def __aenter__(self) -> ClusterNode:
        await self.start()
        return self

    async def _start_services(self, nursery: trio.Nursery) -> None:
        if self.options.bridge is not None:
            bridge = Bridge(self, self.options.bridge)
            await nursery.start(bridge.run)
            self.bridge = bridge

    @property
    def bridge_address(self) -> str | None:
        """Where the bridge listens ('127.0.0.1:PORT' or a socket path), once started; None without it."""
        return self.bridge.address if self.bridge is not None else None

    def status(self) -> dict[str, Any]:
        """The node's links, view and counters, and with the bridge its clients (`"bridge"`)."""
        status = super().status()
        if self.bridge is not None:
            status["bridge"] = self.bridge.status()
        return status

    async def when_ready(self) -> None:
        """Return once the node is ready (linked to `minimumPeers` peers); deepstream's `whenReady`."""
        await self.wait_ready()

    def subscribe(self, topic: str | int, callback: Callable[[Any, str], Any]) -> None:
        """Call `callback(message, origin_server_name)` for each message other nodes send on `topic`.

        `callback` may be a plain function or an async one (see `swarm.node`)."""
        self._add_callback(topic, callback)

    def unsubscribe(self, topic: str | int, callback: Callable[[Any, str], Any]) -> None:
        """Remove one registration of `callback` on `topic` (deepstream has none; the bridge needs it)."""
        self._remove_callback(topic, callback)

    def send(self, message: Mapping[str, Any]) -> None:
        """Send `message` to every other node, to its subscribers of `message["topic"]`; returns at once.

        Raises TypeError or ValueError for a message without a str or int `topic`, MessageTooLarge over
        `maxMessageSize`, TypeError for what msgpack cannot carry; nothing is sent then.
        """
        topic = topic_of(message)
        self._check_running()
        self._engine.publish(topic, message)

    def send_direct(self, server_name: str, message: Mapping[str, Any]) -> None:
        """Send `message` to the node called `server_name` only; returns at once.

        It is routed along the ring, through other nodes if need be. A target that cannot be reached is
        reported as an `error` event with code "unreachable"; the message is never delivered elsewhere.
        Raises like `send`, and ValueError when `server_name` is this node's own name.
        """
        topic = topic_of(message)
        if not isinstance(server_name, str) or not server_name:
            raise TypeError(f"server_name must be a non-empty str, got {server_name!r}")
        self._check_running()
        self._engine.send_direct(server_name, topic, message)

    def _arguments(self, message: Any, delivery: Deliver) -> tuple[Any, ...]:
        return (message, delivery.origin)
