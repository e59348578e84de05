"""The fuzzer catches deliberately reintroduced bugs within a bounded number of seeds.

* Figure 8's bug: a leader commits an entry of an earlier term by counting
  replicas (§5.4.2 forbids it). The "figure8" profile builds the scenario.
* Replying before sync: a follower acknowledges (or votes) before its write
  is durable; a crash that loses unsynced writes then breaks a promise.
* Learners that vote: a candidate counts a learner's vote toward a quorum
  of the voters, so a node lacking committed entries can win.

Each test runs seeds in order until one finds a violation; the run is a pure
function of its seed, so the first finding seed is stable until raftio or
the simulation changes.
"""

from __future__ import annotations

import pytest

from raftio.core import RaftCore
from raftio.raft import Raft
from raftio.testing.sim import SimParams, SimResult, run_simulation

from .mutants import commit_by_counting_any_term, learners_vote, settle_before_sync

SEED_BOUND = 20


def first_violation(profile: str, expected: set[str], bound: int = SEED_BOUND) -> SimResult:
    tried = []
    for seed in range(1, bound + 1):
        result = run_simulation(SimParams(seed=seed, duration=20.0, profile=profile))
        tried.append(seed)
        if not result.ok:
            assert result.violation is not None
            assert result.violation.kind in expected, result.report()
            print(f"caught at seed {seed}: {result.violation}")
            return result
    raise AssertionError(f"no violation in seeds {tried} of profile {profile}")


def test_committing_an_old_term_entry_by_counting_is_caught(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(RaftCore, "_maybe_commit", commit_by_counting_any_term)

    first_violation(
        "figure8",
        {"leader completeness", "committed entry changed", "state machine safety", "fail-stop"},
    )


def test_replying_before_sync_is_caught_by_crashes_that_lose_unsynced_writes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(Raft, "_settle_now", settle_before_sync)

    first_violation(
        "mixed",
        {"durability", "election safety", "committed entry changed", "state machine safety"},
    )


def test_counting_learners_votes_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(RaftCore, "_config_changed", learners_vote)

    # Caught first at seed 63 since snapshots travel in chunks (the simulation
    # draws chunk sizes, which moves every seed's timing); before, within 40.
    first_violation(
        "membership",
        {
            "leader completeness",
            "election safety",
            "committed entry changed",
            "state machine safety",
        },
        bound=70,
    )
