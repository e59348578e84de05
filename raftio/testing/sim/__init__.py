"""Deterministic simulation of raftio clusters under faults, replayable by seed.

`run_simulation(SimParams(seed=...))` runs 3 to 7 real raftio peers over the
in-memory network, each on a `SimStorage`, on the virtual clock, under a
seeded nemesis, checking Raft's invariants after every step; the same
params always give the same trace (`SimResult.digest`). See
docs/simulation.md and `python -m raftio.testing.fuzz --help`.
"""

from raftio.testing.sim.runner import SimParams, SimResult, run_simulation
from raftio.testing.sim.storage import SimStorage

__all__ = ["SimParams", "SimResult", "SimStorage", "run_simulation"]
