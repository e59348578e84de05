"""Membership changes through Node on the in-memory network (virtual clock by default).

Grow, shrink, replace, learners, the leader removing itself, and every bad
request's typed error. Each node connects to members as the configuration
names them (Node's `peers` callable), as TCP nodes do.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable

import pytest

import raftio
from raftio.errors import (
    ChangePendingError,
    DuplicateMemberError,
    LastVoterError,
    NotLeaderError,
    UnknownMemberError,
)
from raftio.node import Node
from raftio.testing import LoopKind, run
from raftio.transport.base import ClientEnd
from raftio.transport.memory import Network

from .test_node_memory import Counter


def address(i: int) -> str:
    return f"127.0.0.1:{7000 + i}"


class Cluster:
    """Nodes that come and go; ids need not be contiguous."""

    def __init__(self, seed: int) -> None:
        self.net = Network(seed)
        self.rng = random.Random(seed)
        self.nodes: dict[int, Node] = {}
        self.machines: dict[int, Counter] = {}
        self.storages: dict[int, raftio.MemoryStorage] = {}

    def _connector(self, me: int) -> Callable[[int, str], ClientEnd]:
        def connect(peer: int, _address: str) -> ClientEnd:
            name = (me, peer, self.rng.random())
            end = self.net.make_end(name)
            self.net.connect(name, peer)
            self.net.enable(name, True)
            return end

        return connect

    async def start(self, i: int, initial: list[int], *, join: bool = False) -> Node:
        self.storages.setdefault(i, raftio.MemoryStorage())
        self.machines[i] = Counter()
        node = Node(
            i,
            {j: address(j) for j in sorted({*initial, i})},
            None,
            self.machines[i],
            join=join,
            storage=self.storages[i],
            peers=self._connector(i),
            propose_timeout=5.0,
            rng=random.Random(self.rng.random()),
        )
        await node.start()
        self.net.add_server(i, node.raft)
        self.nodes[i] = node
        return node

    async def crash(self, i: int) -> None:
        node = self.nodes.pop(i)
        self.net.delete_server(i)
        await node.close(transfer=False)
        self.storages[i] = self.storages[i].copy()

    async def leader(self) -> Node:
        for _ in range(200):
            for node in self.nodes.values():
                if node.raft.get_state()[1]:
                    return node
            await asyncio.sleep(0.05)
        raise AssertionError("no leader within 10 s")

    async def settle(self, key: str, value: int) -> None:
        """Wait until every running node has applied `key` = `value`."""
        for _ in range(200):
            if all(m.values.get(key) == value for i, m in self.machines.items() if i in self.nodes):
                return
            await asyncio.sleep(0.05)
        seen = {i: m.values.get(key) for i, m in self.machines.items() if i in self.nodes}
        raise AssertionError(f"{key} never reached {value} everywhere: {seen}")

    async def close(self) -> None:
        for node in self.nodes.values():
            await node.close(transfer=False)
        self.net.cleanup()


def membership_test(
    body: Callable[[Cluster], Awaitable[None]], loop: LoopKind, seed: int, n: int = 3
) -> None:
    async def main() -> None:
        cluster = Cluster(seed)
        try:
            for i in range(n):
                await cluster.start(i, list(range(n)))
            await body(cluster)
        finally:
            await cluster.close()

    print(f"seed={seed} (rerun with --seed {seed} --loop {loop})")
    run(main(), loop)


def test_grow_three_to_five_and_shrink_back(loop_kind: LoopKind, seed: int) -> None:
    async def body(c: Cluster) -> None:
        leader = await c.leader()
        for _ in range(20):
            await leader.propose(("add", "x", 1))
        for new in (3, 4):
            await c.start(new, [new], join=True)
            config = await leader.add_member(new, address(new))
            assert new in config.voters
            assert config.committed
        assert leader.configuration().voters == {i: address(i) for i in range(5)}
        await leader.propose(("add", "x", 1))
        await c.settle("x", 21)  # the new voters hold everything, snapshot or log

        for old in (4, 3):
            config = await leader.remove_member(old)
            assert old not in config.voters
            await c.crash(old)
        assert sorted(leader.configuration().voters) == [0, 1, 2]
        assert await leader.propose(("add", "x", 1)) == 22

    membership_test(body, loop_kind, seed)


def test_replace_a_dead_node_with_a_fresh_one(loop_kind: LoopKind, seed: int) -> None:
    async def body(c: Cluster) -> None:
        leader = await c.leader()
        for _ in range(10):
            await leader.propose(("add", "x", 1))
        dead = next(i for i in c.nodes if c.nodes[i] is not leader)
        await c.crash(dead)
        c.storages.pop(dead)  # its disk is gone

        await c.start(7, [7], join=True)
        await leader.add_member(7, address(7))
        config = await leader.remove_member(dead)

        assert sorted(config.voters) == sorted([*(i for i in range(3) if i != dead), 7])
        assert await leader.propose(("add", "x", 1)) == 11
        await c.settle("x", 11)

    membership_test(body, loop_kind, seed)


def test_a_learner_gets_everything_and_never_votes(loop_kind: LoopKind, seed: int) -> None:
    async def body(c: Cluster) -> None:
        leader = await c.leader()
        await leader.propose(("add", "x", 5))
        learner = await c.start(3, [3], join=True)

        config = await leader.add_member(3, address(3), voter=False)

        assert config.learners == {3: address(3)}
        assert 3 not in config.voters
        await c.settle("x", 5)
        assert learner.configuration().learners == {3: address(3)}
        # The learner alone with one voter: no quorum, and it never campaigns.
        others = [n for n in c.nodes.values() if n is not leader and n is not learner]
        term = learner.raft.get_state()[0]
        c.net.delete_server(leader.node_id)
        c.net.delete_server(others[0].node_id)
        await asyncio.sleep(5)
        assert learner.status().role == "follower"
        assert learner.raft.metrics()["raftio_elections_total"] == 0
        assert learner.raft.get_state()[0] >= term

    membership_test(body, loop_kind, seed)


def test_promoting_a_learner_keeps_its_address(loop_kind: LoopKind, seed: int) -> None:
    async def body(c: Cluster) -> None:
        leader = await c.leader()
        await c.start(3, [3], join=True)
        await leader.add_member(3, address(3), voter=False)

        config = await leader.add_member(3, address(3))

        assert config.voters[3] == address(3)
        assert config.learners == {}

    membership_test(body, loop_kind, seed)


def test_the_leader_removes_itself_and_another_takes_over(loop_kind: LoopKind, seed: int) -> None:
    async def body(c: Cluster) -> None:
        old = await c.leader()
        await old.propose(("add", "x", 1))
        campaigns = old.raft.metrics()["raftio_elections_total"]

        config = await old.remove_member(old.node_id)

        assert old.node_id not in config.voters
        new = await c.leader()
        assert new is not old
        assert not old.raft.get_state()[1]
        assert await new.propose(("add", "x", 1)) == 2
        await asyncio.sleep(3)
        assert old.raft.metrics()["raftio_elections_total"] == campaigns  # removed: never again

    membership_test(body, loop_kind, seed)


def test_a_joining_node_waits_without_campaigning(loop_kind: LoopKind, seed: int) -> None:
    async def body(c: Cluster) -> None:
        waiting = await c.start(5, [5, 0], join=True)
        await asyncio.sleep(5)
        assert waiting.status().role == "follower"
        assert waiting.raft.metrics()["raftio_elections_total"] == 0
        assert waiting.configuration().voters == {}

    membership_test(body, loop_kind, seed)


def test_bad_membership_requests_get_typed_errors(loop_kind: LoopKind, seed: int) -> None:
    async def body(c: Cluster) -> None:
        leader = await c.leader()
        follower = next(n for n in c.nodes.values() if n is not leader)
        with pytest.raises(NotLeaderError) as hint:
            await follower.add_member(3, address(3))
        assert hint.value.leader_id == leader.node_id
        assert hint.value.leader_address == leader.address
        with pytest.raises(NotLeaderError):
            await follower.remove_member(1)

        with pytest.raises(DuplicateMemberError):
            await leader.add_member(1, address(9))  # id taken
        with pytest.raises(DuplicateMemberError):
            await leader.add_member(9, address(1))  # address taken
        with pytest.raises(UnknownMemberError):
            await leader.remove_member(42)
        for bad_id, bad_address in ((-1, address(9)), (9, "nowhere"), ("9", address(9))):
            with pytest.raises(ValueError, match=r"node id|address"):
                await leader.add_member(bad_id, bad_address)  # type: ignore[arg-type]
        assert sorted(leader.configuration().voters) == [0, 1, 2]

        # A change while another is uncommitted: retriable.
        await c.start(3, [3], join=True)
        first = asyncio.ensure_future(leader.add_member(3, address(3), voter=False))
        await asyncio.sleep(0)
        with pytest.raises(ChangePendingError) as pending:
            await leader.remove_member(2)
        assert pending.value.retriable
        await first

    membership_test(body, loop_kind, seed)


def test_the_last_voter_cannot_be_removed(loop_kind: LoopKind, seed: int) -> None:
    async def body(c: Cluster) -> None:
        leader = await c.leader()
        with pytest.raises(LastVoterError):
            await leader.remove_member(leader.node_id)

    membership_test(body, loop_kind, seed, n=1)
