"""swarm: a brokerless message bus for clusters, after deepstream's message-connector API.

Nodes link to each other directly over TCP and spread messages by gossip flooding with duplicate
suppression; every message reaches every other node exactly once, in its publisher's order, and never
comes back to its publisher. See README.md and docs/.
"""

__version__ = "0.1.0"

from .cluster_node import ClusterNode  # noqa: E402
from .config import Options  # noqa: E402
from .connector import Connector, NodeError  # noqa: E402
from .errors import ConfigError, MessageTooLarge, ProtocolError, SwarmError  # noqa: E402

__all__ = ["ClusterNode", "ConfigError", "Connector", "MessageTooLarge", "NodeError", "Options",
           "ProtocolError", "SwarmError", "__version__"]
