"""The in-memory network the protocol tests drive `NodeState` with: `swarm.simulate.network`, as tests use it.

The engine lives in `swarm/simulate/network.py` (the simulator's engine, `python -m swarm.simulate`), so
every test that runs the core in memory also exercises the simulator. This module only keeps the names
and defaults the tests were written against:

* `MemNet` is `Network` with 1 ms links, a 50 ms tick, `trace=True` (every frame in `frames`),
  `record=True` (dials, closes, retires, errors and decoded deliveries kept), a million-event limit, and
  ticks only on the regular schedule (`honour_wakeup=False`);
* `MemNode` is `SimNode`; `Delivery`, `End`, `FrameRecord`, `Publisher`, `RawEnd` and `split_frames` are
  the engine's.

See the engine's docstring for what each action does on the simulated wire.
"""

from __future__ import annotations

from swarm.simulate.network import (
    Delivery,
    End,
    FrameRecord,
    Latency,
    Network,
    Publisher,
    RawEnd,
    split_frames,
)
from swarm.simulate.network import SimNode as MemNode

__all__ = ["Delivery", "End", "FrameRecord", "MemNet", "MemNode", "Publisher", "RawEnd", "split_frames"]


class MemNet(Network):
    """`Network` with the tests' defaults (see the module docstring)."""

    def __init__(self, seed: int = 0, *, latency: float | Latency = 0.001, jitter: float = 0.0,
                 tick: float = 0.05, trace: bool = True, event_limit: int | None = 1_000_000,
                 **options: object) -> None:
        options.setdefault("record", True)
        options.setdefault("honour_wakeup", False)
        super().__init__(seed, latency=latency, jitter=jitter, tick=tick, trace=trace,
                         event_limit=event_limit, **options)  # type: ignore[arg-type]
