"""Digests across replicas: one caught up by InstallSnapshot, two by replay (virtual clock)."""

from __future__ import annotations

import random

from raftio.testing.clock import run
from raftio.testing.nemesis import MemoryKvClient, MemoryKvCluster


def test_a_replica_restored_from_a_snapshot_agrees_with_replayed_ones(seed: int) -> None:
    print(f"seed {seed} (rerun: pytest tests/kv/test_replicas.py --seed {seed})")

    async def scenario() -> tuple[int, int, list[str], list[str], str | None]:
        cluster = MemoryKvCluster(3, seed=seed, snapshot_bytes=2048)
        await cluster.start_all()
        c = MemoryKvClient(cluster, "w", random.Random(seed), deadline=30.0, spread=0.0)
        await c.put("k0", "start")
        node2 = cluster.nodes[2]
        assert node2 is not None
        left_at = node2.status().last_index
        await cluster.crash(2)
        for i in range(300):
            await c.append(f"k{i % 7}", f"{i};")
        compacted = min(n.status().snapshot_index for n in cluster.nodes[:2] if n is not None)
        await cluster.restart(2)
        problem = await cluster.converged(timeout=30.0)
        digests = [m.digest() for m in cluster.machines]
        cluster.machines[1]._set("k0", "forged")  # one key differs on one replica
        after = [m.digest() for m in cluster.machines]
        await cluster.close()
        return left_at, compacted, digests, after, problem

    left_at, compacted, digests, after, problem = run(scenario(), loop="virtual")

    assert compacted > left_at  # node 2 could only catch up from a snapshot
    assert problem is None
    assert len(set(digests)) == 1
    assert after[1] != after[0] == after[2]
