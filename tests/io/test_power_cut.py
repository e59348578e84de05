"""Power cuts: whole groups of FileStorage directories replaced by what a disk may hold
after the power goes (unsynced writes dropped, torn or written back out of order;
metadata strict or journalled; see powercut.py). Every node starts, nothing
acknowledged is lost, and the state is a prefix of what was issued.

Seeded: the seed is printed; rerun with --seed N.
"""

from __future__ import annotations

import asyncio
import logging
import random
from pathlib import Path
from typing import Any

import pytest
from crash_writer import Op, apply_op, matching_prefix, next_op
from powercut import PowerCutDisk
from test_raft_file_storage import FileCluster

from raftio.storage.base import DurableState
from raftio.storage.file import FileStorage
from raftio.testing import LoopKind, run

NODES = 3
IMAGES = 8  # per metadata model, each a whole group cut at once


class Node:
    """One storage written by several tasks, like crash_writer's child, in this process."""

    def __init__(self, storage: FileStorage, rng: random.Random) -> None:
        self.storage, self.rng = storage, rng
        self.ops: list[Op] = []
        self.acked = 0

    async def writer(self) -> None:
        while True:
            burst = 5 if self.rng.random() < 0.05 else self.rng.randint(1, 3)
            for _ in range(burst):
                op = next_op(self.rng, self.storage.load())
                if burst == 5:  # snapshots in a row: one batch writes only the newest
                    op = snapshot_op(self.rng, self.storage.load()) or op
                apply_op(self.storage, op)
                self.ops.append(op)
            covered = len(self.ops)
            pending = self.storage.sync()
            if pending is not None:
                await pending
            self.acked = max(self.acked, covered)
            if self.rng.random() < 0.1:
                await asyncio.sleep(self.rng.uniform(0.0, 0.08))  # idle: the MANIFEST moves


def snapshot_op(rng: random.Random, state: DurableState) -> Op | None:
    last = state.snapshot_index + len(state.entries)
    if last <= state.snapshot_index:
        return None
    index = rng.randint(state.snapshot_index + 1, last)
    term = state.entries[index - state.snapshot_index - 1].term
    return ["snap", index, term, rng.randbytes(rng.choice([10, 3000])).hex()]


def start_state() -> tuple[DurableState, bytes]:
    return DurableState(), b""


@pytest.mark.parametrize("metadata", ["strict", "journalled"])
def test_a_power_cut_of_a_whole_group_loses_nothing_acknowledged(
    tmp_path: Path, seed: int, metadata: str, caplog: pytest.LogCaptureFixture
) -> None:
    print(f"seed={seed} (rerun with --seed {seed})")
    print(group_cut(tmp_path, seed, metadata, caplog))


@pytest.mark.slow
def test_many_power_cuts(tmp_path: Path, seed: int, caplog: pytest.LogCaptureFixture) -> None:
    print(f"seed={seed} (rerun with --seed {seed})")
    rng = random.Random(seed)
    for round_ in range(100):
        round_seed = rng.randrange(2**32)
        metadata = rng.choice(["strict", "journalled"])
        print(f"round {round_} seed {round_seed}:", group_cut(
            tmp_path / f"r{round_}", round_seed, metadata, caplog
        ))  # fmt: skip


def group_cut(tmp_path: Path, seed: int, metadata: str, caplog: pytest.LogCaptureFixture) -> str:
    """One group of NODES storages cut at once, checked on IMAGES images; returns figures."""
    rng = random.Random(seed)
    disk = PowerCutDisk()
    live = tmp_path / "live"

    async def main() -> list[Node]:
        nodes = []
        for i in range(NODES):
            storage = FileStorage(
                live / f"node{i}",
                disk=disk,
                segment_size=rng.choice([2048, 8192]),
                compact_min_bytes=rng.choice([0, 4096]),
                watermark_delay=0.02,
            )
            nodes.append(Node(storage, random.Random(rng.random())))
        tasks = [
            asyncio.create_task(node.writer()) for node in nodes for _ in range(rng.choice([1, 4]))
        ]
        # The power goes at a random disk call: every node at once, mid-batch.
        disk.cut_at = disk.calls + rng.randrange(50, 1500)
        for _ in range(400):
            if disk.is_cut:
                break
            await asyncio.sleep(0.01)
        disk.cut()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for node in nodes:
            node.storage.close()
        return nodes

    with caplog.at_level(logging.ERROR, logger="raftio.storage.file"):
        nodes = run(main(), "asyncio")
    assert any(node.acked > 0 for node in nodes)  # an early cut may find a node unacked
    repaired = 0

    for k in range(IMAGES):
        caplog.clear()
        image = tmp_path / f"image{k}"
        disk.image(random.Random(rng.random()), metadata, live, image)

        for i, node in enumerate(nodes):
            with FileStorage(image / f"node{i}") as storage:  # every node starts
                state = (storage.load(), storage.read_snapshot())
            done = matching_prefix(start_state(), node.ops, state, node.acked)
            assert done is not None, f"image {k} node {i}: acknowledged writes lost"
        repaired += "past the durable watermark" in caplog.text

    issued = sum(len(n.ops) for n in nodes)
    acked = sum(n.acked for n in nodes)
    return (
        f"{metadata}: {issued} ops issued, {acked} acknowledged, {disk.syncs} fsyncs, "
        f"{IMAGES} images, {repaired} with a tail cut past the watermark"
    )


def test_a_power_cut_of_a_whole_raft_cluster_keeps_every_committed_entry(
    tmp_path: Path, loop_kind: LoopKind, seed: int
) -> None:
    print(f"seed={seed} (rerun with --seed {seed} --loop {loop_kind})")
    rng = random.Random(seed)
    disk = PowerCutDisk()
    committed: dict[int, Any] = {}

    async def before(c: FileCluster) -> None:
        leader = await c.leader()
        for k in range(400):
            leader.start(f"w{k}")
            if k % 10 == 0:
                await asyncio.sleep(rng.uniform(0.0, 0.01))
        disk.cut_at = disk.calls + rng.randrange(20, 400)  # the whole cluster, mid-traffic
        for _ in range(300):
            if disk.is_cut:
                break
            await asyncio.sleep(0.01)
        disk.cut()
        for applied in c.applied:
            committed.update(applied)

    async def after(c: FileCluster) -> None:
        leader = await c.leader()  # every node started
        index, _, _ = leader.start("after the cut")
        await c.wait_committed(index)
        for i, applied in enumerate(c.applied):
            for idx, cmd in committed.items():
                assert applied.get(idx) == cmd, f"S{i} lost committed entry {idx}"

    in_cluster(tmp_path / "live", loop_kind, seed, before, disk=disk)
    assert len(committed) > 50
    for metadata in ("strict", "journalled"):
        image = tmp_path / metadata
        disk.image(random.Random(rng.random()), metadata, tmp_path / "live", image)
        in_cluster(image, loop_kind, seed, after)


def in_cluster(root: Path, loop: LoopKind, seed: int, body: Any, **kw: Any) -> None:
    async def main() -> None:
        cluster = FileCluster(root, seed, **kw)
        try:
            for i in range(cluster.n):
                cluster.start(i)
            await body(cluster)
        finally:
            cluster.close()

    run(main(), loop)
