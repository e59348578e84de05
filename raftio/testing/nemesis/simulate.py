"""simulate(): one nemesis run of the KV service on the virtual clock; one seed, one run.

`SimConfig(seed=...)` decides everything: a `MemoryKvCluster`, concurrent
`MemoryKvClient`s under a `Workload`, a `Nemesis` for `duration` seconds
of loop time, then heal and `verify()`. `SimConfig.replay()` is the
`python -m raftio.testing.nemesis` command that runs it again.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass

from raftio.config import RaftConfig
from raftio.testing.clock import run
from raftio.testing.nemesis.kvcluster import MemoryKvClient, MemoryKvCluster, StorageKind
from raftio.testing.nemesis.schedule import Nemesis
from raftio.testing.nemesis.verdict import NemesisReport, verify
from raftio.testing.nemesis.workload import Workload

__all__ = ["SIM_FAULTS", "SimConfig", "simulate"]

# A memory cluster cannot pause; "membership" is opt-in (--faults ...,membership).
SIM_FAULTS = ("partition", "crash", "flaky", "reorder")
SIM_KINDS = (*SIM_FAULTS, "membership")


@dataclass(frozen=True, slots=True)
class SimConfig:
    """One simulated nemesis run; `seed` decides everything else."""

    seed: int
    nodes: int = 3
    clients: int = 4
    keys: int = 3
    duration: float = 20.0  # seconds of loop time under faults
    faults: tuple[str, ...] = SIM_FAULTS
    storage: StorageKind = "memory"
    data_dir: str | None = None
    snapshot_bytes: int = 4 << 10
    snapshot_chunk_bytes: int = 256  # small: a snapshot travels in many chunks
    client_deadline: float = 2.0  # seconds a client retries an operation before giving up
    max_down: int | None = None  # nodes crashed at once (default: a minority)
    pre_vote: bool = True
    check_quorum: bool = True
    lease_reads: bool = False
    settle: float = 30.0  # seconds the healed cluster gets to recover
    check_timeout: float = 120.0  # real seconds for the linearizability check

    def replay(self) -> str:
        """The `python -m raftio.testing.nemesis` command that runs exactly this config."""
        return (
            f"python -m raftio.testing.nemesis --seed {self.seed} --nodes {self.nodes} "
            f"--clients {self.clients} --keys {self.keys} --duration {self.duration:g} "
            f"--faults {','.join(self.faults)} --storage {self.storage} "
            f"--snapshot-bytes {self.snapshot_bytes} "
            f"--snapshot-chunk-bytes {self.snapshot_chunk_bytes} "
            f"--client-deadline {self.client_deadline:g}"
            + ("" if self.max_down is None else f" --max-down {self.max_down}")
            + ("" if self.pre_vote else " --no-pre-vote")
            + ("" if self.check_quorum else " --no-check-quorum")
            + (" --lease-reads" if self.lease_reads else "")
        )


def simulate(config: SimConfig) -> NemesisReport:
    """Run one nemesis simulation on a fresh virtual-clock loop; same config, same run."""
    return run(_simulate(config), loop="virtual")


async def _simulate(config: SimConfig) -> NemesisReport:
    if not set(config.faults) <= set(SIM_KINDS):
        raise ValueError(f"a simulation cannot inject {config.faults}")
    rng = random.Random(config.seed)
    raft = RaftConfig(
        pre_vote=config.pre_vote,
        check_quorum=config.check_quorum,
        lease_reads=config.lease_reads,
        snapshot_chunk_bytes=config.snapshot_chunk_bytes,
        snapshot_chunks_inflight=2,
    )
    cluster = MemoryKvCluster(
        config.nodes,
        seed=rng.getrandbits(64),
        config=raft,
        storage=config.storage,
        data_dir=config.data_dir,
        snapshot_bytes=config.snapshot_bytes,
    )
    clients = [
        MemoryKvClient(
            cluster,
            f"client-{c}",
            random.Random(rng.getrandbits(64)),
            deadline=config.client_deadline,
        )
        for c in range(config.clients)
    ]
    # The final reads may wait for the healed cluster to elect a leader.
    reader = MemoryKvClient(
        cluster, "reader", random.Random(rng.getrandbits(64)), deadline=config.settle
    )
    keys = [f"k{k}" for k in range(config.keys)]
    workload = Workload(clients, keys=keys, rng=random.Random(rng.getrandbits(64)))
    nemesis = Nemesis(
        cluster, random.Random(rng.getrandbits(64)), kinds=config.faults, max_down=config.max_down
    )
    report = NemesisReport(workload.history, events=nemesis.events, replay=config.replay())
    try:
        await cluster.start_all()
        await asyncio.gather(workload.run(config.duration), nemesis.run(config.duration))
        await nemesis.heal()
        await verify(
            workload,
            reader,
            lambda: cluster.converged(config.settle),
            report,
            check_timeout=config.check_timeout,
        )
    finally:
        report.sim_time = asyncio.get_running_loop().time()
        await cluster.close()
    return report
