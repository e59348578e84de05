"""Streamed snapshots through Node on the in-memory network (virtual clock, by seed).

A BulkState (a big state generated on demand) grows on two nodes while the
third is down; it comes back empty and catches up from the leader's
snapshot, 64 KiB a chunk. Its handlers are wrapped to record what arrives.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from typing import Any

import raftio
from raftio.config import RaftConfig
from raftio.messages import AppendEntriesArgs, InstallSnapshotArgs
from raftio.node import Node
from raftio.testing import LoopKind, run
from raftio.testing.bulk_state import BulkState
from raftio.transport.memory import Network

ADDRESSES = ["127.0.0.1:7000", "127.0.0.1:7001", "127.0.0.1:7002"]
STATE = 8 << 20
CONFIG = RaftConfig(snapshot_chunk_bytes=64 << 10, snapshot_chunks_inflight=4)


class Recorder:
    """Peer 2's handlers as the network calls them, noting chunks and heartbeats."""

    def __init__(self, raft: raftio.Raft, on_chunk: Callable[[int], None] | None = None) -> None:
        self._raft = raft
        self._on_chunk = on_chunk
        self.chunks: list[tuple[float, int, int]] = []  # (time, transfer, offset)
        self.beats: list[float] = []

    async def install_snapshot(self, args: Any) -> Any:
        if isinstance(args, InstallSnapshotArgs):
            self.chunks.append((asyncio.get_running_loop().time(), args.transfer, args.offset))
            if self._on_chunk is not None:
                self._on_chunk(args.offset)
        return await self._raft.install_snapshot(args)

    async def append_entries(self, args: Any) -> Any:
        if isinstance(args, AppendEntriesArgs):
            self.beats.append(asyncio.get_running_loop().time())
        return await self._raft.append_entries(args)

    async def request_vote(self, args: Any) -> Any:
        return await self._raft.request_vote(args)

    async def timeout_now(self, args: Any) -> Any:
        return await self._raft.timeout_now(args)


class Cluster:
    def __init__(self, seed: int) -> None:
        self.net = Network(seed)
        self.rng = random.Random(seed)
        self.machines = [BulkState(seed=3) for _ in range(3)]
        self.nodes: list[Node | None] = [None, None, None]
        self.names: dict[tuple[int, int], Any] = {}

    async def start(self, i: int) -> Node:
        ends = []
        for j in range(3):
            name = (i, j, self.rng.random())
            self.names[i, j] = name
            ends.append(self.net.make_end(name))
            self.net.connect(name, j)
            self.net.enable(name, True)
        node = Node(
            i,
            ADDRESSES,
            None,
            self.machines[i],
            storage=raftio.MemoryStorage(),
            peers=ends,
            snapshot_bytes=2048,
            config=CONFIG,
            rng=random.Random(self.rng.random()),
        )
        await node.start()
        self.nodes[i] = node
        return node

    def link(self, src: int, dst: int, up: bool) -> None:
        self.net.enable(self.names[src, dst], up)

    async def leader(self) -> Node:
        async with asyncio.timeout(10):
            while True:
                for node in self.nodes:
                    if node is not None and node.is_leader():
                        return node
                await asyncio.sleep(0.05)

    async def close(self) -> None:
        for node in self.nodes:
            if node is not None:
                await node.close(transfer=False)
        self.net.cleanup()


async def grown(cluster: Cluster) -> Node:
    """Nodes 0 and 1 grow the state and snapshot it; node 2 is not started yet."""
    for i in (0, 1):
        cluster.net.add_server(i, (await cluster.start(i)).raft)
    leader = await cluster.leader()
    for _ in range(4):
        await leader.propose(("grow", STATE // 4))
    for k in range(30):
        await leader.propose(("put", f"v{k}" + "x" * 100))
    async with asyncio.timeout(30):
        while leader.raft.status().snapshot_index < 5:  # noqa: ASYNC110 - polls the peer
            await asyncio.sleep(0.05)
    return leader


def test_a_transfer_resumes_where_the_follower_is_after_the_link_drops(
    loop_kind: LoopKind, seed: int
) -> None:
    print(f"seed={seed} (rerun with --seed {seed} --loop {loop_kind})")
    out: dict[str, Any] = {}

    async def main() -> None:
        cluster = Cluster(seed)
        try:
            leader = await grown(cluster)
            late = await cluster.start(2)
            loop = asyncio.get_running_loop()
            cut: list[int] = []

            def drop_a_third_of_the_way(offset: int) -> None:
                """Cut the leader's link to 2 for a second, once, a third of the way in."""
                if not cut and offset >= STATE // 3:
                    cut.append(len(recorder.chunks))
                    cluster.link(leader.node_id, 2, False)
                    loop.call_later(1.0, cluster.link, leader.node_id, 2, True)

            recorder = Recorder(late.raft, drop_a_third_of_the_way)
            cluster.net.add_server(2, recorder)
            async with asyncio.timeout(60):
                while cluster.machines[2].size < STATE:  # noqa: ASYNC110 - polls the machine
                    await asyncio.sleep(0.01)
            out.update(recorder=recorder, cut_at=cut[0], term=late.raft.get_state()[0])
            out["leader_term"] = leader.raft.get_state()[0]
        finally:
            await cluster.close()

    run(main(), loop_kind)
    recorder: Recorder = out["recorder"]
    before, after = recorder.chunks[: out["cut_at"]], recorder.chunks[out["cut_at"] :]
    held = max(offset for _, transfer, offset in before if transfer == before[-1][1])
    assert after, "no chunk after the link came back"
    _, transfer, first_offset = after[0]
    assert transfer == before[-1][1], "the transfer started over instead of resuming"
    assert 0 < first_offset <= held + CONFIG.snapshot_chunk_bytes
    # About one copy of the state crossed, not two: it resumed, it did not restart.
    assert len(recorder.chunks) < 1.5 * STATE / CONFIG.snapshot_chunk_bytes
    assert out["term"] == out["leader_term"], "the follower campaigned during the transfer"


def test_heartbeats_flow_while_a_snapshot_streams(loop_kind: LoopKind, seed: int) -> None:
    print(f"seed={seed} (rerun with --seed {seed} --loop {loop_kind})")
    out: dict[str, Any] = {}

    async def main() -> None:
        cluster = Cluster(seed)
        try:
            leader = await grown(cluster)
            late = await cluster.start(2)
            recorder = Recorder(late.raft)
            cluster.net.add_server(2, recorder)
            writes = 0
            async with asyncio.timeout(60):
                while cluster.machines[2].size < STATE:
                    await leader.propose(("put", f"during{writes}"))  # the service goes on
                    writes += 1
                    # A client's think time: on the virtual clock, commits take no time,
                    # so a writer that never sleeps would never let a timer fire.
                    await asyncio.sleep(0.005)
            out.update(recorder=recorder, writes=writes)
        finally:
            await cluster.close()

    run(main(), loop_kind)
    recorder = out["recorder"]
    start, end = recorder.chunks[0][0], recorder.chunks[-1][0]
    beats = [t for t in recorder.beats if start <= t <= end]
    gaps = [b - a for a, b in zip([start, *beats], [*beats, end], strict=True)]
    assert max(gaps) <= 2 * CONFIG.heartbeat_interval, max(gaps)
    assert out["writes"] > 0
