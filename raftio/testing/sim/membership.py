"""Membership actions for the simulator's "membership" profile.

The leader (if any) is asked to add a learner, promote one, remove a member
or hand leadership over, at random, among the usual faults. Refusals
(another change pending, no entry of the leader's term committed yet, not
the leader any more) are expected and only traced: the point is that no
schedule of changes, partitions and crashes breaks an invariant.
"""

from __future__ import annotations

import asyncio
import random

import raftio
from raftio.errors import LeadershipTransferError, MembershipError, NotLeaderError
from raftio.membership import Configuration

WEIGHTS: dict[str, float] = {"add_learner": 2, "promote": 2, "remove": 2, "transfer": 1}


def change(rf: raftio.Raft, rng: random.Random, n: int, action: str) -> str:
    """Ask leader `rf` for one membership action among peers 0..n-1; what happened."""
    config = rf.configuration
    voters, learners = dict(config.voters), dict(config.learners)
    outsiders = [i for i in range(n) if not config.is_member(i)]
    if action == "add_learner":
        if not outsiders:
            return "everyone is a member"
        new = rng.choice(outsiders)
        learners[new] = ""
    elif action == "promote":
        if not learners:
            return "no learner"
        new = rng.choice(sorted(learners))
        del learners[new]
        voters[new] = ""
    elif action == "remove":
        members = sorted(config.members())
        gone = rng.choice(members)
        if gone in voters and len(voters) == 1:
            return f"S{gone} is the last voter"
        voters.pop(gone, None)
        learners.pop(gone, None)
    else:
        return _transfer(rf, rng, sorted(voters))
    proposed = Configuration(voters, learners)
    try:
        index, term = rf.change_configuration(proposed)
    except (MembershipError, NotLeaderError) as exc:
        return f"refused ({type(exc).__name__})"
    return f"{proposed.describe()} at {index}@T{term}"


def _transfer(rf: raftio.Raft, rng: random.Random, voters: list[int]) -> str:
    others = [v for v in voters if v != rf.me]
    if not others:
        return "no other voter"
    target = rng.choice(others)
    task = asyncio.ensure_future(rf.transfer_leadership(target))
    task.add_done_callback(_quiet)
    return f"transfer to S{target}"


def _quiet(task: asyncio.Future[int]) -> None:
    """A transfer may fail or be cut short by the run's end: that is expected."""
    if not task.cancelled():
        exc = task.exception()
        if exc is not None and not isinstance(
            exc, LeadershipTransferError | NotLeaderError | ValueError
        ):
            raise exc
