"""`swarm.Connector`: deepstream's message-connector API over a swarm node.

The names are deepstream's (`publish`, `subscribe`, `unsubscribe`, `is_ready`, `ready`/`error`/`close`
events), spelled in Python. A connector is an async context manager: entering it starts the node's tasks
in a nursery it owns, leaving it (or `await close()`) announces the leave to the peers, stops every task
and emits `close`.

The node itself (life cycle, events, delivery to callbacks, the async-callback queue) is `swarm.node.Node`,
shared with `swarm.ClusterNode`; this face adds deepstream 3's spelling of the messaging calls. A
subscriber is called as `callback(message)`, in the node's own task, in per-origin order, each with its
own decoded copy of the message; an async one is queued to a single delivery task.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from . import __version__
from .node import EVENTS, Node, NodeError
from .protocol.actions import Deliver

__all__ = ["EVENTS", "Connector", "NodeError"]


class Connector(Node):
    """A swarm node with deepstream's message-connector interface."""

    name = "swarm"
    version = __version__
    _kind = "connector"

    async def __aenter__(self) -> Connector:
        await self.start()
        return self

    def subscribe(self, topic: str | int, callback: Callable[[Any], Any]) -> None:
        """Call `callback(message)` for each message other nodes publish on `topic`."""
        self._add_callback(topic, callback)

    def unsubscribe(self, topic: str | int, callback: Callable[[Any], Any]) -> None:
        """Remove one registration of `callback` on `topic`; the last one ends the node's interest."""
        self._remove_callback(topic, callback)

    def publish(self, topic: str | int, message: Any) -> None:
        """Send `message` to every other node; returns at once.

        Raises MessageTooLarge over `maxMessageSize`, TypeError for what msgpack cannot carry.
        """
        self._check_running()
        self._engine.publish(topic, message)

    def send_direct(self, server_name: str, topic: str | int, message: Any) -> None:
        """Send `message` to the node called `server_name` only (deepstream's sendDirect); returns at once.

        It is routed along the ring, through other nodes if need be, and delivered to that node's
        subscribers of `topic` like a published message. A target that cannot be reached is reported as
        an `error` event with code "unreachable" (and counted); the message is never delivered elsewhere.
        """
        self._check_running()
        self._engine.send_direct(server_name, topic, message)

    def _arguments(self, message: Any, delivery: Deliver) -> tuple[Any, ...]:
        return (message,)
