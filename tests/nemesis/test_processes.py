"""Real KV node processes over TCP on 127.0.0.1 under a nemesis; every history is checked.

Three processes (`node_runner.py`: KVNode on FileStorage) reach each other
only through per-link TCP proxies in the test process, so the nemesis can
cut or slow any ordered link; it also SIGKILLs and restarts nodes and
SIGSTOPs / SIGCONTs them. Clients are `raftio.kv.KVClient`s (redirects,
retries with the same (client, seq)). After healing: final reads, the
linearizability check, every acknowledged append present exactly once,
and every replica on the same state. Processes and proxies are killed and
closed even when a test fails.

    pytest tests/nemesis/test_processes.py --seed 1234     # replay a schedule
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from raftio.kv import KVClient
from raftio.testing.nemesis import Nemesis, NemesisReport, Workload, token, verify

from .procs import ProcessKvCluster

KEYS = ["k0", "k1", "k2"]
WAIT = 5.0  # seconds an election may take (CONTRACT.md section 5)


@pytest.fixture
async def cluster(tmp_path: Path, seed: int) -> AsyncIterator[ProcessKvCluster]:
    print(f"seed={seed} (rerun with --seed {seed})")
    # Small snapshots: a node restarted or cut off catches up by InstallSnapshot.
    cluster = ProcessKvCluster(tmp_path, 3, random.Random(seed), snapshot_bytes=4096)
    try:
        await cluster.start()
        yield cluster
    finally:
        await cluster.close()


def kv_clients(cluster: ProcessKvCluster, count: int, seed: int) -> list[KVClient]:
    # An attempt gives up before the node's own 2 s timeout: retries race the first try.
    return [
        KVClient(cluster.client_peers, client_id=f"c{c}-{seed}", attempt_timeout=0.5, deadline=2.0)
        for c in range(count)
    ]


async def wait_status(
    cluster: ProcessKvCluster, i: int, ready: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    """Node i's status, once it answers and `ready(status)` holds."""
    async with asyncio.timeout(WAIT):
        while True:
            status = (await cluster.statuses())[i]
            if status is not None and ready(status):
                return status
            await asyncio.sleep(0.05)


async def wait_leader(
    cluster: ProcessKvCluster, *, other_than: int | None = None
) -> tuple[int, int]:
    """(node, term) of a node that leads, other than `other_than`."""
    async with asyncio.timeout(WAIT):
        while True:
            for i, status in enumerate(await cluster.statuses()):
                if status is not None and status["role"] == "leader" and i != other_than:
                    return i, status["term"]
            await asyncio.sleep(0.05)


async def test_partitions_kills_and_pauses_keep_the_service_linearizable(
    cluster: ProcessKvCluster, seed: int
) -> None:
    rng = random.Random(seed)
    clients = kv_clients(cluster, 4, seed)
    reader = KVClient(cluster.client_peers, client_id=f"reader-{seed}", deadline=20.0)
    workload = Workload(clients, keys=KEYS, rng=random.Random(rng.getrandbits(64)))
    kinds = ("partition", "crash", "pause", "flaky", "reorder")
    nemesis = Nemesis(cluster, random.Random(rng.getrandbits(64)), kinds=kinds, interval=(0.3, 1.0))
    report = NemesisReport(workload.history, events=nemesis.events, replay=f"--seed {seed}")
    await wait_leader(cluster)

    try:
        await asyncio.gather(workload.run(20.0), nemesis.run(20.0))
        await nemesis.heal()
        await verify(workload, reader, lambda: cluster.converged(20.0), report)
    finally:
        for client in [*clients, reader]:
            await client.close()

    print(report.summary())
    assert report.ok, report.explain() + "\n" + cluster.tail()
    for kind in ("partition", "crash", "restart", "pause", "resume", "network"):
        assert any(event.split()[1] == kind for event in nemesis.events), nemesis.events
    assert report.acknowledged > 100


async def test_a_paused_leader_loses_leadership_and_its_return_breaks_nothing(
    cluster: ProcessKvCluster, seed: int
) -> None:
    loop = asyncio.get_running_loop()
    rng = random.Random(seed)
    clients = kv_clients(cluster, 3, seed)
    reader = KVClient(cluster.client_peers, client_id=f"reader-{seed}", deadline=20.0)
    workload = Workload(clients, keys=KEYS, rng=random.Random(rng.getrandbits(64)))
    report = NemesisReport(workload.history, replay=f"--seed {seed}")
    old, term = await wait_leader(cluster)
    # Two clients that know only the old leader: their requests wait in its
    # sockets while it is stopped and reach it the moment it resumes.
    pinned = [
        KVClient([cluster.client_peers[old]], client_id=f"pinned{p}-{seed}",
                 attempt_timeout=10.0, deadline=10.0)
        for p in range(2)
    ]  # fmt: skip
    running = asyncio.create_task(workload.run(8.0))

    try:
        await asyncio.sleep(1.0)
        await cluster.pause(old)
        paused_at = loop.time()
        new, new_term = await wait_leader(cluster, other_than=old)
        stuck = [
            asyncio.create_task(workload.perform(5, pinned[0], "get", "k0")),
            asyncio.create_task(workload.perform(6, pinned[1], "append", "k0", token(6, 1))),
        ]
        await asyncio.sleep(2.0)
        await cluster.resume(old)
        resumed_at = loop.time()
        status = await wait_status(cluster, old, lambda s: s["term"] >= new_term)
        await asyncio.gather(running, *stuck)
        await verify(workload, reader, lambda: cluster.converged(20.0), report)
    finally:
        running.cancel()
        for client in [*clients, *pinned, reader]:
            await client.close()

    print(report.summary())
    assert report.ok, report.explain() + "\n" + cluster.tail()
    assert new != old
    assert new_term > term
    assert status["role"] == "follower"
    ops = workload.history.operations
    during = [op for op in ops if paused_at < op.call_time and op.return_time < resumed_at]
    assert sum(op.kind != "get" for op in during) > 10  # the new leader took writes meanwhile
    late = [op for op in ops if op.client_id in (5, 6)]
    assert all(op.return_time > resumed_at and not op.is_unknown for op in late), late
