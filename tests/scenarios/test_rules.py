"""Fast, deterministic checks of two rules that only slow tests caught before.

Both run pure cores through `Env` (env.py), with pre-vote and check-quorum
on (the defaults of RaftConfig), and assert on every tick, across seeds and
phases, not on one lucky schedule.
"""

from __future__ import annotations

import pytest

from raftio.config import RaftConfig
from raftio.core import Role
from tests.scenarios.env import Env

CONFIG = RaftConfig(pre_vote=True, check_quorum=True)
ELECTION_MIN, ELECTION_MAX = CONFIG.election_ticks  # 30, 60 ticks


def quiet(n: int, seed: int) -> Env:
    return Env(n, CONFIG, seed=seed, out=lambda line: None)


def elect(env: Env, i: int) -> None:
    """Tick S`i` alone until it campaigns; deliver everything; it must have won."""
    for _ in range(ELECTION_MAX + 1):
        env.tick(i)
        if env.flight or env.nodes[i].waiting:
            break
    env.stabilize()
    assert env.nodes[i].live.is_leader


def run(env: Env, ticks: int) -> None:
    """`ticks` times: tick every running peer, then deliver everything."""
    for _ in range(ticks):
        for i in env.alive():
            env.tick(i)
        env.stabilize()


# Thesis 6.2: a leader cut off from the majority steps down within one
# (maximum) election timeout, wherever the cut falls in its check period.
@pytest.mark.parametrize("phase", range(0, ELECTION_MIN, 3))
@pytest.mark.parametrize("seed", range(3))
def test_check_quorum_steps_a_minority_leader_down_within_an_election_timeout(
    seed: int, phase: int
) -> None:
    env = quiet(3, seed)
    elect(env, 0)
    run(env, ELECTION_MIN + phase)
    assert env.nodes[0].live.is_leader

    env.cut = {(0, 1), (1, 0), (0, 2), (2, 0)}
    leader = env.nodes[0].live
    ticks = 0
    while leader.is_leader and ticks < ELECTION_MAX:
        run(env, 1)
        ticks += 1

    assert leader.role is Role.FOLLOWER, f"still leading {ticks} ticks after the cut"


# Thesis 9.6: S2 cannot hear the leader S0 but reaches S1, which still hears
# S0: S1 refuses S2's pre-votes, so S2 never raises its term and S0 stays.
@pytest.mark.parametrize(
    "cut",
    [{(0, 2)}, {(0, 2), (2, 0)}],
    ids=["leader-to-S2", "both-ways"],
)
@pytest.mark.parametrize("seed", range(3))
def test_a_node_that_cannot_hear_the_leader_does_not_depose_it(
    seed: int, cut: set[tuple[int, int]]
) -> None:
    env = quiet(3, seed)
    elect(env, 0)
    run(env, ELECTION_MIN)

    env.cut = set(cut)
    s0, s2 = env.nodes[0].live, env.nodes[2].live
    pre_campaigned = False
    for _ in range(10 * ELECTION_MAX):
        run(env, 1)
        pre_campaigned |= s2.role is Role.PRE_CANDIDATE
        assert s0.is_leader
        assert s0.current_term == s2.current_term == 1

    assert pre_campaigned, "S2 never timed out: the test exercised nothing"
