"""swarm: a brokerless message bus for clusters, after deepstream's message-connector API.

Nodes link to each other directly over TCP and spread messages by gossip flooding with duplicate
suppression; every message reaches every other node exactly once, in its publisher's order, and never
comes back to its publisher. See README.md and docs/.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

from .config import Options  # noqa: E402
from .errors import ConfigError, MessageTooLarge, ProtocolError, SwarmError  # noqa: E402

# The faces of a running node bring trio and the transport with them: imported when first asked for, so
# that the sans-IO core and the simulator (`swarm.protocol`, `swarm.simulate`) load without them.
_LAZY = {"ClusterNode": "cluster_node", "Connector": "connector", "NodeError": "node"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'swarm' has no attribute {name!r}")
    from importlib import import_module
    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value

__all__ = ["ClusterNode", "ConfigError", "Connector", "MessageTooLarge", "NodeError", "Options",
           "ProtocolError", "SwarmError", "__version__"]
