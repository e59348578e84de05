"""Raft peers on FileStorage (real files, real fsync) over the in-memory network.

The promises of the storage issue at the level of the peer: no reply or
vote leaves before the state it promises is durable; a whole cluster
crashed at once mid-traffic loses no committed entry; a leader whose disk
stalls or fails stops leading.
"""

from __future__ import annotations

import asyncio
import contextvars
import random
from pathlib import Path
from typing import Any

import raftio
from raftio.storage.file import FileStorage
from raftio.storage.writer import Disk
from raftio.testing import LoopKind, run
from raftio.transport.memory import Network

# The written_version at this task's last sync() call: the state its reply promises.
_promised: contextvars.ContextVar[int] = contextvars.ContextVar("promised", default=0)


class RecordingStorage(FileStorage):
    def sync(self) -> asyncio.Future[None] | None:
        _promised.set(self.written_version)
        return super().sync()


class OrderChecker:
    """Stands between the network and a peer; checks durability when a reply leaves."""

    def __init__(self, raft: raftio.Raft, storage: RecordingStorage) -> None:
        self.raft, self.storage = raft, storage
        self.checked = 0
        self.violations: list[str] = []

    async def _check(self, method: str, args: Any) -> Any:
        _promised.set(0)
        reply = await getattr(self.raft, method)(args)
        if reply is not None:
            self.checked += 1
            if self.storage.durable_version < _promised.get():
                self.violations.append(f"{method} replied before write {_promised.get()} synced")
        return reply

    async def request_vote(self, args: Any) -> Any:
        return await self._check("request_vote", args)

    async def append_entries(self, args: Any) -> Any:
        return await self._check("append_entries", args)

    async def install_snapshot(self, args: Any) -> Any:
        return await self._check("install_snapshot", args)


class FileCluster:
    def __init__(self, root: Path, seed: int, n: int = 3, **storage_kw: Any) -> None:
        self.root, self.n, self.storage_kw = root, n, storage_kw
        self.rng = random.Random(seed)
        self.net = Network(seed)
        self.rafts: list[raftio.Raft | None] = [None] * n
        self.storages: list[RecordingStorage | None] = [None] * n
        self.checkers: list[OrderChecker] = []
        self.applied: list[dict[int, Any]] = [{} for _ in range(n)]
        self.consumers: list[asyncio.Task[None]] = []
        self.applied_more = asyncio.Event()

    def start(self, i: int) -> raftio.Raft:
        storage = RecordingStorage(self.root / f"peer{i}", **self.storage_kw)
        ends = []
        for j in range(self.n):
            name = (i, j, self.rng.random())
            ends.append(self.net.make_end(name))
            self.net.connect(name, j)
            self.net.enable(name, True)
        apply_ch: asyncio.Queue[raftio.ApplyMsg] = asyncio.Queue()
        raft = raftio.make(ends, i, storage, apply_ch, rng=random.Random(self.rng.random()))
        checker = OrderChecker(raft, storage)
        self.checkers.append(checker)
        self.net.add_server(i, checker)
        self.rafts[i], self.storages[i] = raft, storage
        self.consumers.append(asyncio.get_running_loop().create_task(self._consume(i, apply_ch)))
        return raft

    async def _consume(self, i: int, apply_ch: asyncio.Queue[raftio.ApplyMsg]) -> None:
        while True:
            msg = await apply_ch.get()
            assert msg.command_valid
            seen = self.applied[i].setdefault(msg.command_index, msg.command)
            assert seen == msg.command, f"S{i} applied two commands at {msg.command_index}"
            self.applied_more.set()

    def crash(self, i: int) -> None:
        raft = self.rafts[i]
        assert raft is not None
        self.net.delete_server(i)
        raft.kill()  # FileStorage.close(): unsynced writes are lost, as in a crash
        self.rafts[i] = None

    async def leader(self) -> raftio.Raft:
        for _ in range(100):
            for raft in self.rafts:
                if raft is not None and not raft.killed() and raft.get_state()[1]:
                    return raft
            await asyncio.sleep(0.1)
        raise AssertionError("no leader within 10 s")

    async def wait_committed(self, index: int, timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while not all(index in a for a in self.applied):
                self.applied_more.clear()
                await self.applied_more.wait()

    def close(self) -> None:
        for raft in self.rafts:
            if raft is not None:
                raft.kill()
        for task in self.consumers:
            task.cancel()
        self.net.cleanup()


def in_cluster(tmp_path: Path, loop: LoopKind, seed: int, body: Any, **kw: Any) -> None:
    async def main() -> None:
        cluster = FileCluster(tmp_path, seed, **kw)
        try:
            for i in range(cluster.n):
                cluster.start(i)
            await body(cluster)
        finally:
            cluster.close()

    print(f"seed={seed} (rerun with --seed {seed} --loop {loop})")
    run(main(), loop)


def test_no_reply_or_vote_leaves_before_its_state_is_durable(
    tmp_path: Path, loop_kind: LoopKind, seed: int
) -> None:
    async def body(c: FileCluster) -> None:
        for round_ in range(3):
            leader = await c.leader()
            for k in range(60):
                leader.start(f"r{round_}-{k}")
                if k % 7 == 0:
                    await asyncio.sleep(0.001)
            await asyncio.sleep(0.5)
            c.crash(leader.me)  # forces an election: votes are checked too
            await asyncio.sleep(0.2)
            c.start(leader.me)
        await c.leader()
        await asyncio.sleep(1.0)

        checked = sum(ch.checked for ch in c.checkers)
        violations = [v for ch in c.checkers for v in ch.violations]
        fsyncs = sum(s.fsync_count for s in c.storages if s is not None)
        assert violations == []
        assert checked > 100
        assert fsyncs < 180 * 3  # group commit: far fewer fsyncs than writes

    in_cluster(tmp_path, loop_kind, seed, body)


def test_whole_cluster_crash_mid_traffic_loses_no_committed_entry(
    tmp_path: Path, loop_kind: LoopKind, seed: int
) -> None:
    async def body(c: FileCluster) -> None:
        leader = await c.leader()
        for k in range(300):
            leader.start(k)
            if k % 10 == 0:
                await asyncio.sleep(0.002)
        await asyncio.sleep(c.rng.uniform(0.0, 0.05))
        committed_before = [dict(a) for a in c.applied]
        for i in range(c.n):
            c.crash(i)  # all at once, while entries are still in flight

        for i in range(c.n):
            c.applied[i] = {}
            c.start(i)
        leader = await c.leader()
        index, _, _ = leader.start("after-restart")
        await c.wait_committed(index)

        for before in committed_before:
            for i, after in enumerate(c.applied):
                for idx, cmd in before.items():
                    assert after.get(idx) == cmd, f"S{i} lost or changed entry {idx}"
        assert all(a == c.applied[0] for a in c.applied)
        assert any(committed_before)

    in_cluster(tmp_path, loop_kind, seed, body)


def test_leader_whose_disk_stalls_steps_down(
    tmp_path: Path, loop_kind: LoopKind, seed: int
) -> None:
    async def body(c: FileCluster) -> None:
        leader = await c.leader()
        index, _, _ = leader.start("before")
        await c.wait_committed(index)
        stalled = c.storages[leader.me]
        assert stalled is not None

        stalled.pause_syncs()
        leader.start("during-stall")
        await asyncio.sleep(3.0)
        new_leader = await c.leader()
        index, _, _ = new_leader.start("elsewhere")
        await asyncio.sleep(1.0)

        assert not leader.get_state()[1]
        assert new_leader is not leader
        others = [a for i, a in enumerate(c.applied) if i != leader.me]
        assert all(a.get(index) == "elsewhere" for a in others)
        stalled.resume_syncs()
        await c.wait_committed(index)

    in_cluster(tmp_path, loop_kind, seed, body)


class FailingDisk(Disk):
    def __init__(self) -> None:
        self.broken = False

    def fdatasync(self, fd: int) -> None:
        if self.broken:
            raise OSError(5, "Input/output error")
        super().fdatasync(fd)


def test_leader_whose_fsync_fails_stops(tmp_path: Path, loop_kind: LoopKind, seed: int) -> None:
    disk = FailingDisk()

    async def body(c: FileCluster) -> None:
        leader = await c.leader()
        index, _, _ = leader.start("before")
        await c.wait_committed(index)
        # Make the leader's next fsync fail: restart it on the failing disk first.
        c.crash(leader.me)
        c.storage_kw = {"disk": disk}
        c.start(leader.me)
        c.storage_kw = {}
        while True:
            current = await c.leader()
            if current.me == leader.me:
                break
            c.crash(current.me)
            await asyncio.sleep(0.5)
            c.start(current.me)
        broken = current

        disk.broken = True
        broken.start("doomed")
        await asyncio.sleep(1.0)
        new_leader = await c.leader()
        index, _, _ = new_leader.start("after")
        await asyncio.sleep(1.0)

        assert broken.killed()
        assert new_leader is not broken
        others = [a for i, a in enumerate(c.applied) if i != broken.me]
        assert all(a.get(index) == "after" for a in others)

    in_cluster(tmp_path, loop_kind, seed, body)
