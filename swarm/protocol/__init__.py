"""The sans-IO protocol core: wire format, seen-record and the node state machine.

Nothing in this package imports trio, opens a socket or reads a clock; the trio transport
(`swarm.transport`) and the simulator both drive the same `NodeState`.
"""
