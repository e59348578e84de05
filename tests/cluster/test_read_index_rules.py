"""ReadIndex (Raft thesis 6.4): a leader cut off from the majority never confirms a read.

A read is linearizable only if a majority acknowledged this leader after
the read arrived; a leader partitioned from both followers cannot get that,
so `read_index()` must raise NotLeaderError, never return an index. Real
peers (`raftio.make`) over the memory network, on the virtual clock: the
whole test takes milliseconds.
"""

from __future__ import annotations

import asyncio
import random

import pytest

import raftio
from raftio.errors import NotLeaderError
from raftio.testing import run
from raftio.transport.memory import Network

N = 3
READ_DEADLINE = 5.0  # virtual seconds: ten election timeouts


async def cut_off_leader_read(seed: int, check_quorum: bool) -> None:
    net = Network(seed)
    rng = random.Random(seed)
    config = raftio.RaftConfig(check_quorum=check_quorum)
    rafts = []
    for i in range(N):
        ends = []
        for j in range(N):
            ends.append(net.make_end((i, j)))
            net.connect((i, j), j)
            net.enable((i, j), True)
        raft = raftio.make(
            ends,
            i,
            raftio.MemoryStorage(),
            asyncio.Queue(),
            config,
            rng=random.Random(rng.random()),
        )
        net.add_server(i, raft)
        rafts.append(raft)
    try:
        leader = await committed_leader(rafts)
        assert isinstance(await leader.read_index(), int)  # a connected leader serves reads

        for j in range(N):
            if j != leader.me:
                net.enable((leader.me, j), False)
                net.enable((j, leader.me), False)

        async with asyncio.timeout(READ_DEADLINE):
            outcome = await read_outcome(leader)
        assert outcome == "refused", f"a leader cut off from the majority confirmed {outcome}"
    finally:
        for raft in rafts:
            raft.kill()
        net.cleanup()


async def read_outcome(raft: raftio.Raft) -> str:
    try:
        return f"a read at index {await raft.read_index()}"
    except NotLeaderError:
        return "refused"


async def committed_leader(rafts: list[raftio.Raft]) -> raftio.Raft:
    """The leader, once an entry of its term is committed (before that it refuses reads)."""
    for _ in range(100):
        await asyncio.sleep(0.1)
        leader = next((r for r in rafts if r.get_state()[1]), None)
        if leader is None:
            continue
        index, _, ok = leader.start("x")
        for _ in range(10):
            await asyncio.sleep(0.01)
            if ok and leader.get_state()[1] and leader.status().commit_index >= index:
                return leader
    raise AssertionError("no leader committed an entry in 10 virtual seconds")


# With check-quorum the leader also steps down; without it, only the read
# round's own count can refuse the read.
@pytest.mark.parametrize("check_quorum", [True, False], ids=["check_quorum", "no_check_quorum"])
@pytest.mark.parametrize("seed", range(3))
def test_a_leader_cut_off_from_the_majority_never_confirms_a_read(
    seed: int, check_quorum: bool
) -> None:
    run(cut_off_leader_read(seed, check_quorum), "virtual")
