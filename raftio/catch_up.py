"""Wait until a new member has caught up with the leader (Raft thesis 4.2.1).

Replication to the new server proceeds in rounds: each round waits until it
holds the entries the leader had when the round began. Once a round takes
less than an election timeout, the new server is close enough that making
it a voter cannot stall commits for long.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from raftio.config import RaftConfig
from raftio.errors import CatchUpError, NotLeaderError

if TYPE_CHECKING:
    from raftio.raft import Raft

MAX_ROUNDS = 10


async def wait_caught_up(raft: Raft, node_id: int, config: RaftConfig, timeout: float) -> None:
    """Return once `node_id` has caught up; CatchUpError after `timeout` or MAX_ROUNDS rounds.

    NotLeaderError if this peer stops leading meanwhile. Polls once a tick,
    on the event loop's clock.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    round_limit = config.election_ticks[0] * config.tick_interval
    for _ in range(MAX_ROUNDS):
        target = raft.status().last_index
        started = loop.time()
        while True:
            status = raft.status()
            if status.role != "leader":
                raise NotLeaderError(status.leader_id)
            if status.match_index.get(node_id, 0) >= target:
                break
            if loop.time() >= deadline:
                raise CatchUpError(
                    f"node {node_id} has {status.match_index.get(node_id, 0)} of {target} "
                    f"entries after {timeout:g} s; it stays a learner"
                )
            await asyncio.sleep(config.tick_interval)
        if loop.time() - started < round_limit:
            return
    raise CatchUpError(f"node {node_id} did not catch up in {MAX_ROUNDS} rounds")
