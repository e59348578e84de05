"""Nemesis tests of a key/value service: a workload that records a History, faults, verdicts.

Reusable on their own, for raftio's KV service or any service with async
get/put/append clients; one concern a module:

* `workload`: `Workload`, clients issuing seeded get/put/append operations,
  one at a time each, recorded in a linearizability `History`; `token()`.
* `schedule`: `Nemesis`, a seeded schedule of faults against a
  `FaultTarget`: partitions (`raftio.testing.partitions`, shared with the
  Figure 2 simulator), crashes with restarts, pauses, flaky or reordering
  links; `heal()` undoes them all.
* `proxy`: `LinkProxy`, a TCP proxy for one ordered pair of peers, so that
  real processes can be partitioned (cut) or slowed (delay) link by link.
* `verdict`: `verify()`, after healing: a final read of every key, the
  linearizability check of the whole history, every acknowledged append
  present exactly once, and the replicas' agreement, in one `NemesisReport`.
* `kvcluster`: `MemoryKvCluster`, raftio Nodes with `KVStateMachine` on the
  in-memory `Network`; `MemoryKvClient`, the real `raftio.kv.KVClient`
  reaching them through an in-memory exchange.
* `simulate`: `simulate(SimConfig(seed=...))`, all of it on the virtual
  clock: one seed is one deterministic run.
* `soak`: `python -m raftio.testing.nemesis`, many seeds.
"""

from raftio.testing.nemesis.kvcluster import MemoryExchange, MemoryKvClient, MemoryKvCluster
from raftio.testing.nemesis.proxy import LinkProxy
from raftio.testing.nemesis.schedule import FAULT_KINDS, FaultTarget, Nemesis
from raftio.testing.nemesis.simulate import SimConfig, simulate
from raftio.testing.nemesis.verdict import (
    KvResultModel,
    NemesisReport,
    acknowledged_write_problems,
    verify,
)
from raftio.testing.nemesis.workload import KvClientLike, OpMix, Workload, token

__all__ = [
    "FAULT_KINDS",
    "FaultTarget",
    "KvClientLike",
    "KvResultModel",
    "LinkProxy",
    "MemoryExchange",
    "MemoryKvClient",
    "MemoryKvCluster",
    "Nemesis",
    "NemesisReport",
    "OpMix",
    "SimConfig",
    "Workload",
    "acknowledged_write_problems",
    "simulate",
    "token",
    "verify",
]
