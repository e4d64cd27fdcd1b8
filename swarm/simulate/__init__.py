"""Simulation of swarm overlays at any size: graph analysis and the real protocol over a simulated network.

* `network`: the discrete-event engine that drives real `NodeState` instances (also the tests' memnet);
* `protocol`: protocol runs (bootstrap, broadcasts, crashes, churn, partitions) and their measures;
* `cli`: `python -m swarm.simulate`, which also runs graph analysis (`swarm.topology.analysis`).
"""
