"""Membership changes of real `raftio node` processes (TCP, FileStorage) under a KV load
whose whole history is checked for linearizability.

* Replace a dead node: SIGKILL one node, delete its data directory, add a
  node with a new id, remove the dead one.
* Grow 3 -> 5, then shrink 5 -> 3.

Clients keep writing and reading throughout (`raftio.testing.nemesis.Workload`);
afterwards every acknowledged append is present exactly once, the history
is linearizable, and every member holds the same state.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from raftio.kv import KVClient
from raftio.kv.local import ClusterSpec, running_detached
from raftio.testing.nemesis import NemesisReport, Workload, verify

from .test_membership import raftio

KEYS = ["k0", "k1", "k2"]


async def converged(directory: Path, token: bytes | None, timeout: float) -> str | None:
    """None once every member answers, one leads, and all applied the same state."""
    spec = ClusterSpec.load(directory)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    found: list[dict[str, Any] | None] = []
    async with KVClient(spec.member_client_peers, token=token) as client:
        while loop.time() < deadline:
            found = []
            for address in spec.member_client_peers:
                try:
                    found.append(await client.status(address, timeout=0.5))
                except Exception:
                    found.append(None)
            live = [s for s in found if s is not None]
            states = {(s["applied_index"], s["digest"]) for s in live}
            leaders = [s["role"] for s in live].count("leader")
            if len(live) == len(found) and leaders == 1 and len(states) == 1:
                return None
            await asyncio.sleep(0.1)
    return f"members never agreed: {found}"


async def under_load(
    directory: Path, seed: int, changes: Callable[[], Awaitable[None]]
) -> NemesisReport:
    """Run `changes` while four clients read and write; then verify the whole history."""
    spec = ClusterSpec.load(directory)
    token = spec.secret()
    rng = random.Random(seed)
    clients = [
        KVClient(spec.client_peers, token=token, client_id=f"c{c}-{seed}", deadline=10.0)
        for c in range(4)
    ]
    reader = KVClient(spec.client_peers, token=token, client_id=f"r-{seed}", deadline=20.0)
    workload = Workload(clients, keys=KEYS, rng=random.Random(rng.getrandbits(64)))
    report = NemesisReport(workload.history, replay=f"--seed {seed}")
    stop = asyncio.Event()

    async def load() -> None:
        while not stop.is_set():
            await workload.run(0.5)

    try:
        running = asyncio.create_task(load())
        await asyncio.sleep(1.0)
        await changes()
        await asyncio.sleep(1.0)  # writes after the last change too
        stop.set()
        await running
        await verify(workload, reader, lambda: converged(directory, token, 20.0), report)
    finally:
        for client in [*clients, reader]:
            await client.close()
    return report


async def ok(*args: str) -> str:
    code, out, err = await raftio(*args)
    assert code == 0, f"raftio {' '.join(args)}: {err}"
    return out


async def test_replace_a_dead_node_under_load(cluster_dir: Path, seed: int) -> None:
    d = str(cluster_dir)
    ClusterSpec.create(cluster_dir, 3, snapshot_bytes=16384).save()
    await ok("cluster", "up", "--dir", d)

    async def replace() -> None:
        spec = ClusterSpec.load(cluster_dir)
        os.kill(running_detached(spec)[2], signal.SIGKILL)  # its disk dies with it
        shutil.rmtree(spec.data_dir(2))
        await ok("cluster", "add", "--dir", d)  # node 3, a fresh id
        await ok("cluster", "remove", "--dir", d, "2")

    report = await under_load(cluster_dir, seed, replace)

    print(report.summary())
    assert report.ok, report.explain()
    assert report.acknowledged > 50
    spec = ClusterSpec.load(cluster_dir)
    assert (spec.ids, spec.removed) == ([0, 1, 3], [2])


async def test_grow_three_to_five_and_shrink_back_under_load(cluster_dir: Path, seed: int) -> None:
    d = str(cluster_dir)
    ClusterSpec.create(cluster_dir, 3, snapshot_bytes=16384).save()
    await ok("cluster", "up", "--dir", d)

    async def grow_and_shrink() -> None:
        await ok("cluster", "add", "--dir", d)
        await ok("cluster", "add", "--dir", d)
        assert ClusterSpec.load(cluster_dir).ids == [0, 1, 2, 3, 4]
        await asyncio.sleep(0.5)
        await ok("cluster", "remove", "--dir", d, "0")
        await ok("cluster", "remove", "--dir", d, "1")

    report = await under_load(cluster_dir, seed, grow_and_shrink)

    print(report.summary())
    assert report.ok, report.explain()
    assert report.acknowledged > 50
    listed = await ok("member", "list", "--dir", d)
    assert [line.split()[:2] for line in listed.splitlines()[2:]] == [
        ["2", "voter"], ["3", "voter"], ["4", "voter"]
    ]  # fmt: skip
