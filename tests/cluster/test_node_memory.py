"""Node (the embedding API) on the in-memory network, on the loop chosen by --loop.

Covers propose/read results, leader redirects, failover, snapshots by size
and restart from a snapshot.
"""

from __future__ import annotations

import asyncio
import pickle
import random
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

import raftio
from raftio.errors import (
    NodeClosedError,
    NotLeaderError,
    ProposalLostError,
    ProposalTimeoutError,
)
from raftio.node import Node
from raftio.proposals import ProposalTimers
from raftio.testing import LoopKind, run
from raftio.transport.memory import Network

ADDRESSES = ["127.0.0.1:7000", "127.0.0.1:7001", "127.0.0.1:7002"]


class Counter:
    """A replicated dict of counters: ("add", key, n) -> new value."""

    def __init__(self) -> None:
        self.values: dict[str, int] = {}
        self.applied = 0

    def apply(self, command: Any) -> Any:
        op, key, n = command
        if op != "add":
            raise ValueError(f"unknown op {op!r}")
        self.values[key] = self.values.get(key, 0) + n
        self.applied += 1
        return self.values[key]

    def snapshot(self) -> bytes:
        return pickle.dumps((self.values, self.applied))

    def restore(self, data: bytes) -> None:
        self.values, self.applied = pickle.loads(data)

    def query(self, key: str) -> int:
        return self.values.get(key, 0)


class MemoryCluster:
    def __init__(self, seed: int, n: int = 3, snapshot_bytes: int = 1 << 20) -> None:
        self.net = Network(seed)
        self.n = n
        self.snapshot_bytes = snapshot_bytes
        self.storages = [raftio.MemoryStorage() for _ in range(n)]
        self.machines: list[Counter] = [Counter() for _ in range(n)]
        self.nodes: list[Node | None] = [None] * n
        self.rng = random.Random(seed)

    async def start(self, i: int) -> Node:
        ends = []
        for j in range(self.n):
            name = (i, j, self.rng.random())
            ends.append(self.net.make_end(name))
            self.net.connect(name, j)
            self.net.enable(name, True)
        self.machines[i] = Counter()
        node = Node(
            i,
            ADDRESSES[: self.n],
            None,
            self.machines[i],
            storage=self.storages[i],
            peers=ends,
            snapshot_bytes=self.snapshot_bytes,
            propose_timeout=3.0,
            rng=random.Random(self.rng.random()),
        )
        await node.start()
        self.net.add_server(i, node.raft)
        self.nodes[i] = node
        return node

    async def crash(self, i: int) -> None:
        node = self.nodes[i]
        assert node is not None
        self.net.delete_server(i)
        await node.close(transfer=False)
        self.storages[i] = self.storages[i].copy()
        self.nodes[i] = None

    async def leader(self) -> Node:
        for _ in range(100):
            for node in self.nodes:
                if node is not None and node.raft.get_state()[1]:
                    return node
            await asyncio.sleep(0.1)
        raise AssertionError("no leader within 10 s")

    async def close(self) -> None:
        for node in self.nodes:
            if node is not None:
                await node.close()
        self.net.cleanup()


def cluster_test(
    body: Callable[[MemoryCluster], Awaitable[None]], loop: LoopKind, seed: int, **kwargs: Any
) -> None:
    async def main() -> None:
        cluster = MemoryCluster(seed, **kwargs)
        try:
            for i in range(cluster.n):
                await cluster.start(i)
            await body(cluster)
        finally:
            await cluster.close()

    print(f"seed={seed} (rerun with --seed {seed} --loop {loop})")
    run(main(), loop)


def test_propose_returns_results_and_reads_are_linearizable(loop_kind: LoopKind, seed: int) -> None:
    async def body(c: MemoryCluster) -> None:
        leader = await c.leader()

        results = [await leader.propose(("add", "x", 1)) for _ in range(5)]
        many = await asyncio.gather(*(leader.propose(("add", "y", 2)) for _ in range(50)))

        assert results == [1, 2, 3, 4, 5]
        assert sorted(many) == list(range(2, 101, 2))
        assert await leader.read("x") == 5
        assert await leader.read("y") == 100

    cluster_test(body, loop_kind, seed)


def test_follower_refuses_with_leader_address(loop_kind: LoopKind, seed: int) -> None:
    async def body(c: MemoryCluster) -> None:
        leader = await c.leader()
        await leader.propose(("add", "x", 1))
        follower = next(n for n in c.nodes if n is not None and n is not leader)

        with pytest.raises(NotLeaderError) as propose_error:
            await follower.propose(("add", "x", 1))
        with pytest.raises(NotLeaderError) as read_error:
            await follower.read("x")

        assert propose_error.value.leader_id == leader.node_id
        assert propose_error.value.leader_address == ADDRESSES[leader.node_id]
        assert read_error.value.leader_id == leader.node_id

    cluster_test(body, loop_kind, seed)


def test_failover_keeps_every_acknowledged_write(loop_kind: LoopKind, seed: int) -> None:
    async def body(c: MemoryCluster) -> None:
        leader = await c.leader()
        for _ in range(20):
            await leader.propose(("add", "x", 1))

        await c.crash(leader.node_id)
        new_leader = await c.leader()
        value = await new_leader.propose(("add", "x", 1))
        await c.start(leader.node_id)
        await asyncio.sleep(1.0)

        assert new_leader is not leader
        assert value == 21
        assert await new_leader.read("x") == 21
        assert all(m.values == {"x": 21} for m in c.machines)

    cluster_test(body, loop_kind, seed)


def test_snapshots_bound_the_log_and_restore_on_restart(loop_kind: LoopKind, seed: int) -> None:
    async def body(c: MemoryCluster) -> None:
        leader = await c.leader()
        for k in range(300):
            await leader.propose(("add", f"k{k % 7}", 1))
        victim = next(n for n in c.nodes if n is not None and n is not leader)
        await c.crash(victim.node_id)
        for k in range(300):
            await leader.propose(("add", f"k{k % 7}", 1))

        restarted = await c.start(victim.node_id)
        await asyncio.sleep(1.0)

        assert all(s.raft_state_size() < 4000 for s in c.storages)
        assert all(s.snapshot_size() > 0 for s in c.storages)
        assert c.machines[victim.node_id].values == c.machines[leader.node_id].values
        assert sum(c.machines[victim.node_id].values.values()) == 600
        assert restarted.status().applied_index == leader.status().applied_index

    cluster_test(body, loop_kind, seed, snapshot_bytes=2000)


def test_closed_node_refuses_work(loop_kind: LoopKind, seed: int) -> None:
    async def body(c: MemoryCluster) -> None:
        leader = await c.leader()
        await leader.close()

        with pytest.raises(NodeClosedError):
            await leader.propose(("add", "x", 1))

    cluster_test(body, loop_kind, seed)


def test_proposal_times_out_when_the_leader_is_cut_off(loop_kind: LoopKind, seed: int) -> None:
    async def body(c: MemoryCluster) -> None:
        leader = await c.leader()
        await leader.propose(("add", "x", 1))
        for end_name in list(c.net._ends):  # isolate the leader: no link in or out
            if leader.node_id in (end_name[0], end_name[1]):
                c.net.enable(end_name, False)
        loop = asyncio.get_running_loop()

        started = loop.time()
        with pytest.raises(ProposalTimeoutError):
            await leader.propose(("add", "x", 1), timeout=0.25)
        waited = loop.time() - started

        assert 0.25 <= waited < 0.3
        assert leader._waiters == {}

    cluster_test(body, loop_kind, seed)


# --- proposal timeouts: 20 ms buckets ------------------------------------------------


def isolate(c: MemoryCluster, node: Node) -> None:
    """Cut every link into and out of `node`."""
    for end_name in list(c.net._ends):
        if node.node_id in (end_name[0], end_name[1]):
            c.net.enable(end_name, False)


def test_proposal_times_out_within_one_grain_of_its_timeout(seed: int) -> None:
    grain = ProposalTimers.GRAIN
    timeouts = [0.013, 0.02, 0.05, 0.1, 0.1, 0.1, 0.137, 0.2, 0.25]

    async def body(c: MemoryCluster) -> None:
        loop = asyncio.get_running_loop()
        leader = await c.leader()
        await leader.propose(("add", "x", 1))
        isolate(c, leader)
        await asyncio.sleep(0.0071)  # off the 20 ms grid

        async def expiry(timeout: float) -> float:
            started = loop.time()
            with pytest.raises(ProposalTimeoutError):
                await leader.propose(("add", "x", 1), timeout=timeout)
            return loop.time() - started

        # All at once (the longest stays inside the 0.3 s before check-quorum steps down).
        waited = await asyncio.gather(*(expiry(t) for t in timeouts))

        for timeout, took in zip(timeouts, waited, strict=True):
            assert timeout - 1e-9 <= took <= timeout + grain + 1e-9, (timeout, took)
        # Equal timeouts started together share a bucket: they expire together.
        assert waited[3] == waited[4] == waited[5]
        assert leader._waiters == {}
        assert leader._timers is not None
        # Their buckets fired and went; only the first proposal's (3 s) is left, empty.
        assert all(not bucket for bucket in leader._timers._buckets.values())
        assert len(leader._timers._buckets) <= 1

    cluster_test(body, "virtual", seed)


def test_a_committed_proposal_leaves_no_timer_behind(seed: int) -> None:
    async def body(c: MemoryCluster) -> None:
        leader = await c.leader()
        timers = leader._timers
        assert timers is not None

        assert await leader.propose(("add", "x", 1), timeout=2.0) == 1
        assert all(not bucket for bucket in timers._buckets.values())
        results = await asyncio.gather(
            *(leader.propose(("add", "y", 1), timeout=1.0 + i / 100) for i in range(30))
        )
        assert sorted(results) == list(range(1, 31))
        assert all(not bucket for bucket in timers._buckets.values())
        assert leader._waiters == {}

        await asyncio.sleep(2.1)  # the buckets' timers fire, finding nothing to expire
        assert timers._buckets == {}
        assert await leader.read("x") == 1  # nothing was expired or broken meanwhile

    cluster_test(body, "virtual", seed)


# --- proposals whose entries a new leader replaced ----------------------------------


def heal(c: MemoryCluster) -> None:
    for end_name in list(c.net._ends):
        c.net.enable(end_name, True)


async def strand_five(c: MemoryCluster) -> tuple[Node, Node, list[asyncio.Future[Any]]]:
    """Cut the leader off with five proposals only it holds; wait for the next leader,
    which writes one entry after its no-op. (old leader, new leader, the proposals)."""
    old = await c.leader()
    await old.propose(("add", "x", 1))
    isolate(c, old)
    stranded = [asyncio.ensure_future(old.propose(("add", "x", 1), timeout=60.0)) for _ in range(5)]
    await asyncio.sleep(0)
    first = old.status().commit_index + 1  # the five indexes after the commit
    assert old.raft.view.log.last_index == first + 4
    new = None
    while new is None or new is old:
        await asyncio.sleep(0.1)
        new = next((n for n in c.nodes if n is not old and n.raft.get_state()[1]), None)
    await new.propose(("add", "y", 1))  # the new leader's log: its no-op, then this
    assert new.status().applied_index == first + 1
    return old, new, stranded


@pytest.mark.parametrize("by", ["entries", "snapshot"])
def test_a_deposed_leaders_replaced_entries_fail_once_replaced(by: str, seed: int) -> None:
    """Proposals on a cut-off leader fail as lost when the new leader's log
    replaces their entries (by entries, or by a snapshot below the last of them),
    not when the log grows back to their indexes (which a quiet cluster may never
    do) nor at their timeout."""

    async def body(c: MemoryCluster) -> None:
        loop = asyncio.get_running_loop()
        old, new, stranded = await strand_five(c)
        if by == "snapshot":
            # The new leader compacts through its two entries: the old leader must
            # install the snapshot, and the three stranded entries above it go.
            applied = new.status().applied_index
            new.raft.snapshot(applied, c.machines[new.node_id].snapshot())
            assert new.raft.view.log.snapshot_index == applied

        heal(c)
        healed = loop.time()
        outcomes = await asyncio.gather(*stranded, return_exceptions=True)
        waited = loop.time() - healed

        assert all(isinstance(o, ProposalLostError) for o in outcomes), outcomes
        assert waited < 2.0  # a few heartbeats, not the 60 s timeout
        assert old._waiters == {}
        for _ in range(100):  # the old leader applies (or restores) the new log
            if old.status().applied_index >= new.status().applied_index:
                break
            await asyncio.sleep(0.01)
        assert c.machines[old.node_id].values == {"x": 1, "y": 1}
        if by == "snapshot":
            assert old.raft.view.log.snapshot_index == new.raft.view.log.snapshot_index

    cluster_test(body, "virtual", seed)
