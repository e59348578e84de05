"""Leadership transfer, graceful close and leader watching through Node (thesis 3.10).

On the virtual clock (the default --loop), so the time a hand-over takes is
the protocol's, not the machine's.
"""

from __future__ import annotations

import asyncio

import pytest

from raftio.config import RaftConfig
from raftio.errors import LeadershipTransferError, NotLeaderError
from raftio.leadership import Leadership
from raftio.node import Node
from raftio.testing import LoopKind

from .test_node_memory import MemoryCluster, cluster_test

ELECTION_MIN = RaftConfig().election_timeout_min


def others(c: MemoryCluster, node: Node) -> list[Node]:
    return [n for n in c.nodes if n is not None and n is not node]


def test_transfer_to_a_chosen_node_keeps_every_write(loop_kind: LoopKind, seed: int) -> None:
    async def body(c: MemoryCluster) -> None:
        old = await c.leader()
        for _ in range(10):
            await old.propose(("add", "x", 1))
        target = others(c, old)[-1]

        new_id = await old.transfer_leadership(target.node_id)

        assert new_id == target.node_id
        assert target.raft.get_state()[1]
        assert not old.raft.get_state()[1]
        assert await target.propose(("add", "x", 1)) == 11
        assert await target.read("x") == 11

    cluster_test(body, loop_kind, seed)


def test_transfer_without_a_target_picks_a_caught_up_node(loop_kind: LoopKind, seed: int) -> None:
    async def body(c: MemoryCluster) -> None:
        old = await c.leader()
        await old.propose(("add", "x", 1))
        term = old.raft.get_state()[0]

        new_id = await old.transfer_leadership()

        assert new_id != old.node_id
        new = c.nodes[new_id]
        assert new is not None
        assert new.raft.get_state() == (term + 1, True)

    cluster_test(body, loop_kind, seed)


def test_proposals_during_a_transfer_fail_fast_naming_the_target(
    loop_kind: LoopKind, seed: int
) -> None:
    async def body(c: MemoryCluster) -> None:
        old = await c.leader()
        await old.propose(("add", "x", 1))
        target = others(c, old)[0]
        transfer = asyncio.ensure_future(old.transfer_leadership(target.node_id))
        await asyncio.sleep(0)  # the transfer has begun; the target has not won yet

        with pytest.raises(NotLeaderError) as refused:
            await old.propose(("add", "x", 1))

        assert refused.value.leader_id == target.node_id
        assert refused.value.leader_address == target.address
        assert await transfer == target.node_id
        assert await target.propose(("add", "x", 1)) == 2  # the refused one never applied

    cluster_test(body, loop_kind, seed)


def test_bad_transfer_requests_get_typed_errors(loop_kind: LoopKind, seed: int) -> None:
    async def body(c: MemoryCluster) -> None:
        leader = await c.leader()
        follower = others(c, leader)[0]

        with pytest.raises(NotLeaderError) as not_leader:
            await follower.transfer_leadership()
        for bad in (7, -1, "1"):
            with pytest.raises(ValueError, match="not a voter"):
                await leader.transfer_leadership(bad)  # type: ignore[arg-type]

        assert not_leader.value.leader_id == leader.node_id
        assert await leader.transfer_leadership(leader.node_id) == leader.node_id
        assert leader.raft.get_state()[1]

    cluster_test(body, loop_kind, seed)


def test_a_transfer_to_a_dead_node_fails_and_the_leader_serves_on(
    loop_kind: LoopKind, seed: int
) -> None:
    async def body(c: MemoryCluster) -> None:
        leader = await c.leader()
        await leader.propose(("add", "x", 1))
        dead = others(c, leader)[0]
        await c.crash(dead.node_id)

        with pytest.raises(LeadershipTransferError):
            await leader.transfer_leadership(dead.node_id)

        assert leader.raft.get_state()[1]
        assert await leader.propose(("add", "x", 1)) == 2

    cluster_test(body, loop_kind, seed)


def test_closing_the_leader_hands_over_without_an_election_timeout(
    loop_kind: LoopKind, seed: int
) -> None:
    async def body(c: MemoryCluster) -> None:
        loop = asyncio.get_running_loop()
        old = await c.leader()
        await old.propose(("add", "x", 1))
        rest = others(c, old)

        started = loop.time()
        await old.close()
        new = next(n for n in rest if n.raft.get_state()[1])  # leads already
        value = await new.propose(("add", "x", 1))
        handover = loop.time() - started

        assert value == 2
        assert handover < ELECTION_MIN / 2, f"{handover:.3f} s"

    cluster_test(body, loop_kind, seed)


def test_a_crash_like_close_costs_an_election_timeout(loop_kind: LoopKind, seed: int) -> None:
    async def body(c: MemoryCluster) -> None:
        loop = asyncio.get_running_loop()
        old = await c.leader()
        await old.propose(("add", "x", 1))
        rest = others(c, old)

        started = loop.time()
        await old.close(transfer=False)
        assert not any(n.raft.get_state()[1] for n in rest)
        new = await c.leader()
        elected = loop.time() - started

        assert elected >= ELECTION_MIN
        assert await new.propose(("add", "x", 1)) == 2

    cluster_test(body, loop_kind, seed)


def test_watchers_see_the_leader_and_each_change(loop_kind: LoopKind, seed: int) -> None:
    async def body(c: MemoryCluster) -> None:
        old = await c.leader()
        follower = others(c, old)[0]
        term = old.raft.get_state()[0]
        assert await follower.wait_for_leader(timeout=1.0) == old.node_id
        changes = follower.leadership_changes()
        assert await anext(changes) == Leadership(term, old.node_id)

        new_id = await old.transfer_leadership()

        seen = [await anext(changes)]
        while seen[-1].leader_id is None:
            seen.append(await anext(changes))
        assert seen[-1] == Leadership(term + 1, new_id)
        await follower.close(transfer=False)
        with pytest.raises(StopAsyncIteration):
            await anext(changes)

    cluster_test(body, loop_kind, seed)


def test_wait_for_leader_times_out_without_a_majority(loop_kind: LoopKind, seed: int) -> None:
    async def body(c: MemoryCluster) -> None:
        leader = await c.leader()
        lone = others(c, leader)[0]
        for node in others(c, lone):
            await c.crash(node.node_id)
        await asyncio.sleep(1.0)  # the lone node forgets the dead leader

        with pytest.raises(TimeoutError):
            await lone.wait_for_leader(timeout=2.0)

    cluster_test(body, loop_kind, seed)
