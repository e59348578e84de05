"""Lease reads across a partition (Raft thesis 6.4.1): real peers, virtual clock.

A leader cut off from the majority keeps answering reads from its lease for
a while, and must stop before the majority can elect another leader: else
a read could miss a write the new leader committed. The old leader reads
as fast as it can; every read it answered must come before the new
leader's election, and some must come after the cut (the lease was used).
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
CONFIG = raftio.RaftConfig(lease_reads=True, leader_noop=True)


class Cluster:
    def __init__(self, seed: int, config: raftio.RaftConfig) -> None:
        self.net = Network(seed)
        rng = random.Random(seed)
        self.rafts: list[raftio.Raft] = []
        for i in range(N):
            ends = []
            for j in range(N):
                ends.append(self.net.make_end((i, j)))
                self.net.connect((i, j), j)
                self.net.enable((i, j), True)
            raft = raftio.make(
                ends, i, raftio.MemoryStorage(), asyncio.Queue(), config,
                rng=random.Random(rng.random()),
            )  # fmt: skip
            self.net.add_server(i, raft)
            self.rafts.append(raft)

    def cut_off(self, me: int) -> None:
        for j in range(N):
            if j != me:
                self.net.enable((me, j), False)
                self.net.enable((j, me), False)

    def close(self) -> None:
        for raft in self.rafts:
            raft.kill()
        self.net.cleanup()


async def reading_leader(rafts: list[raftio.Raft]) -> raftio.Raft:
    for _ in range(200):
        await asyncio.sleep(0.05)
        for raft in rafts:
            if raft.get_state()[1]:
                try:
                    await raft.read_index()
                except NotLeaderError:
                    continue
                return raft
    raise AssertionError("no leader served a read in 10 virtual seconds")


async def partitioned_lease(seed: int, config: raftio.RaftConfig) -> tuple[float, float, float]:
    """(cut, last read the old leader answered, new leader elected), in loop time."""
    loop = asyncio.get_running_loop()
    cluster = Cluster(seed, config)
    try:
        old = await reading_leader(cluster.rafts)
        await asyncio.sleep(random.Random(seed).uniform(0, config.heartbeat_interval))
        cut = loop.time()
        cluster.cut_off(old.me)
        last_read = cut
        others = [r for r in cluster.rafts if r is not old]
        elected = None
        async with asyncio.timeout(10):
            while elected is None:
                try:
                    await old.read_index()
                    last_read = loop.time()
                except NotLeaderError:
                    pass
                if any(r.get_state()[1] for r in others):
                    elected = loop.time()
                await asyncio.sleep(0.001)
        return cut, last_read, elected
    finally:
        cluster.close()


@pytest.mark.parametrize("seed", range(20))
def test_a_cut_off_leader_stops_reading_before_another_is_elected(seed: int) -> None:
    cut, last_read, elected = run(partitioned_lease(seed, CONFIG), "virtual")

    assert last_read < elected, (
        f"seed {seed}: the old leader answered a read at {last_read - cut:.3f} s after the "
        f"cut, the new leader was elected at {elected - cut:.3f} s"
    )
    assert last_read > cut, f"seed {seed}: no read answered from the lease after the cut"


class DoubledLease(raftio.RaftConfig):
    """A broken lease: twice what the voters' refusal covers."""

    __slots__ = ()

    @property
    def lease_duration(self) -> float:
        return 2 * raftio.RaftConfig.lease_duration.__get__(self)


def test_a_lease_longer_than_the_voters_refusal_is_caught() -> None:
    # The check above has teeth: with the lease doubled, the old leader
    # answers after the new one was elected in some seeds.
    broken = DoubledLease(**{f: getattr(CONFIG, f) for f in CONFIG.__dataclass_fields__})
    stale = 0
    for seed in range(20):
        _, last_read, elected = run(partitioned_lease(seed, broken), "virtual")
        stale += last_read >= elected
    assert stale > 0


async def reads_while_another_task_counts(reads: int) -> tuple[int, int]:
    """(lease reads answered without a round, turns the other task got) over `reads` reads."""
    cluster = Cluster(0, CONFIG)
    turns = 0

    async def count() -> None:
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(0)

    try:
        leader = await reading_leader(cluster.rafts)
        await asyncio.sleep(CONFIG.heartbeat_interval * 2)  # a heartbeat round granted a lease
        counter = asyncio.create_task(count())
        leased = 0
        for _ in range(reads):
            leased += leader.view.lease_holds(asyncio.get_running_loop().time())
            await leader.read_index()
        counter.cancel()
        return leased, turns
    finally:
        cluster.close()


def test_lease_reads_in_a_loop_leave_the_loop_to_others() -> None:
    # A read answered from the lease suspends once all the same: a caller
    # reading in a loop must not hold the loop (and the heartbeats that
    # renew the lease) until the lease runs out.
    leased, turns = run(reads_while_another_task_counts(1000), "virtual")

    assert leased == 1000
    assert turns >= 900
