"""Liveness edges (issue part 5): rejoining nodes and stalled disks.

(a) A node cut off from the cluster keeps timing out; when it rejoins, it
must not depose a healthy leader (pre-vote, Raft thesis 9.6).
(b) A leader whose disk stalls must lose leadership, so that the cluster
elects a leader that can make its writes durable.

Both run a scripted simulated cluster with the invariant checker on, and
print the seed and the trace tail on failure (`--seed` replays).
"""

from __future__ import annotations

import asyncio
from dataclasses import replace

from raftio.config import RaftConfig
from raftio.testing import run

from .helpers import Scripted

# The paper's algorithm only (§5): no pre-vote, no check-quorum.
PAPER = replace(RaftConfig(), pre_vote=False, check_quorum=False)


async def isolate_and_rejoin(s: Scripted) -> tuple[int, int, int]:
    """Isolate a follower for 5 s (many election timeouts), then let it rejoin for 3 s."""
    leader = await s.wait_leader(within=5)
    await s.commit("before", within=5)
    term = s.term(leader)
    follower = (leader + 1) % s.cluster.n

    s.links.isolate(follower)
    await asyncio.sleep(5)
    s.links.rejoin(follower)
    await asyncio.sleep(3)
    return leader, term, follower


def test_a_rejoining_node_does_not_disrupt_a_healthy_leader(seed: int) -> None:
    async def main() -> None:
        s = Scripted(seed, 3)
        leader, term, follower = await isolate_and_rejoin(s)

        assert s.leader() == leader, s.explain(f"S{leader} lost leadership to S{s.leader()}")
        assert s.term(leader) == term, s.explain(f"T{term} -> T{s.term(leader)}")
        assert max(s.checker.leaders) == term, s.explain("an election was held")
        await s.commit("after", within=2)  # the rejoined node catches up too
        assert s.term(follower) == term
        s.close()

    run(main(), loop="virtual")


def test_without_pre_vote_a_rejoining_node_deposes_the_leader(seed: int) -> None:
    """The same scenario on the paper's algorithm: shows the test above has teeth."""

    async def main() -> None:
        s = Scripted(seed, 3, PAPER)
        _, term, _ = await isolate_and_rejoin(s)

        assert max(s.checker.leaders) > term, s.explain("the rejoining node disrupted nothing")
        s.close()

    run(main(), loop="virtual")


def test_a_leader_whose_disk_stalls_loses_leadership(seed: int) -> None:
    async def main() -> None:
        s = Scripted(seed, 3)
        loop = asyncio.get_running_loop()
        stalled = await s.wait_leader(within=5)
        await s.commit("before", within=5)
        client = loop.create_task(s.client(gap=0.05))

        s.cluster.peers[stalled].storage.stall(60)
        new = await s.wait_leader(within=5, not_=stalled)
        assert s.cluster.raft(stalled) is not None
        assert stalled not in s.cluster.leaders(), s.explain(f"S{stalled} still leads")
        others = [i for i in range(3) if i != stalled]
        await s.commit("after", within=5, on=others)
        assert s.leader() == new

        client.cancel()
        s.close()

    run(main(), loop="virtual")
