"""The only I/O in swarm: trio listener and dialler, framing, bounded per-link send queues."""
