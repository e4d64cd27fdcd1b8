"""The sans-IO protocol core: `NodeState` (state.py) and the sub-machines it composes (links, membership,
dialer, broadcast, direct, delivery), the wire format, the frame reader and the seen-record.

Nothing in this package imports trio, opens a socket or reads a clock; the trio transport
(`swarm.transport`) and the simulator both drive the same `NodeState` (docs/architecture.md, section 2).
"""
