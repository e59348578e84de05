"""InvariantChecker: each safety property is caught, and legal histories pass.

Cores are real RaftCores whose fields the tests set directly, as a buggy
peer might; the checker only reads them.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import pytest

from raftio.config import RaftConfig
from raftio.core import RaftCore, Role
from raftio.messages import (
    AppendEntriesArgs,
    AppendEntriesReply,
    Entry,
    RequestVoteArgs,
    RequestVoteReply,
)
from raftio.storage.base import DurableState
from raftio.testing.invariants import InvariantChecker, Violation


def e(term: int, data: str) -> Entry:
    return Entry(term, data.encode())


class Harness:
    def __init__(self, n: int = 3) -> None:
        self.found: list[Violation] = []
        self.checker = InvariantChecker(n, lambda: 1.5, self.found.append)
        self.cores: dict[int, RaftCore] = {}

    def start(
        self,
        me: int,
        term: int = 0,
        entries: Sequence[Entry] = (),
        vote: int | None = None,
        incarnation: int = 1,
    ) -> RaftCore:
        state = DurableState(term, vote, 0, 0, list(entries))
        core = RaftCore(me, 3, state, RaftConfig(), random.Random(me))
        self.cores[me] = core
        self.checker.peer_started(me, incarnation, core, state)
        return core

    def lead(self, core: RaftCore, term: int) -> None:
        core.current_term = term
        core.role = Role.LEADER
        self.checker.on_trace(core.me, "role", "became leader (last=0)")

    @property
    def kinds(self) -> list[str]:
        return [v.kind for v in self.found]


def test_leader_completeness() -> None:
    h = Harness()
    a, b = h.start(0), h.start(1)
    h.lead(a, 1)
    a.log.append([e(1, "x"), e(1, "y")])
    b.current_term = 1
    b.log.append([e(1, "x")])
    h.checker.step()
    a.commit_index = 2
    b.commit_index = 1
    h.checker.step()
    h.lead(b, 2)  # lacks 2@T1, committed in T1

    assert h.kinds == ["leader completeness"]
    assert "2@T1" in h.found[0].message


def test_a_legal_history_passes() -> None:
    h = Harness()
    a, b = h.start(0), h.start(1)
    h.lead(a, 1)
    a.log.append([e(1, "x"), e(1, "y")])
    b.current_term = 1
    b.log.append([e(1, "x"), e(1, "y")])
    h.checker.step()
    a.commit_index = 2
    h.checker.step()
    h.lead(b, 2)
    b.log.append([e(2, "z")])
    b.commit_index = 3
    h.checker.step()
    h.checker.on_applied(0, 1, 1, "x", b"d1")
    h.checker.on_applied(1, 1, 1, "x", b"d1")

    assert h.found == []
    assert h.checker.max_committed == 3


def test_two_leaders_in_one_term() -> None:
    h = Harness()
    a, b = h.start(0), h.start(1)
    h.lead(a, 3)
    h.lead(b, 3)
    assert h.kinds == ["election safety"]


def test_a_leader_the_trace_did_not_announce_is_still_counted() -> None:
    h = Harness()
    a, b = h.start(0), h.start(1)
    h.lead(a, 3)
    b.current_term, b.role = 3, Role.LEADER
    h.checker.step()
    assert h.kinds == ["election safety"]


def test_leading_the_same_term_again_after_a_restart() -> None:
    h = Harness()
    h.lead(h.start(0), 2)
    h.checker.peer_stopped(0)
    h.lead(h.start(0, term=2, vote=0, incarnation=2), 2)
    assert h.kinds == ["election safety"]


def test_term_and_commit_never_decrease() -> None:
    h = Harness()
    a = h.start(0, term=5)
    a.current_term = 4
    h.checker.step()
    assert h.kinds == ["term monotonicity"]

    h = Harness()
    b = h.start(0, term=1, entries=[e(1, "x")])
    b.commit_index = 1
    h.checker.step()
    b.commit_index = 0
    h.checker.step()
    assert h.kinds == ["commit monotonicity"]


@pytest.mark.parametrize(
    ("other", "why"),
    [
        ([e(1, "x"), e(2, "other")], "same index and term, different command"),
        ([e(2, "x"), e(2, "y")], "same index and term, different previous term"),
    ],
)
def test_log_matching(other: list[Entry], why: str) -> None:
    h = Harness()
    h.start(0, term=2, entries=[e(1, "x"), e(2, "y")])
    h.start(1, term=2, entries=other)
    assert h.kinds == ["log matching"], why


def test_terms_along_a_log_never_decrease() -> None:
    h = Harness()
    h.start(0, term=3, entries=[e(3, "x"), e(2, "y")])
    assert h.kinds == ["log terms"]


def test_committed_entries_never_change() -> None:
    h = Harness()
    a, b = h.start(0, term=2, entries=[e(1, "x")]), h.start(1, term=2, entries=[e(2, "y")])
    a.commit_index = 1
    h.checker.step()
    b.commit_index = 1
    h.checker.step()
    assert h.kinds == ["committed entry changed"]


def test_a_peer_never_replaces_its_own_committed_entry() -> None:
    h = Harness()
    a = h.start(0, term=2, entries=[e(1, "x")])
    a.commit_index = 1
    h.checker.step()
    a.log.truncate_from(1)
    a.log.append([e(2, "y")])
    h.checker.step()
    assert h.kinds == ["committed entry changed"]


def test_state_machine_safety() -> None:
    h = Harness()
    h.checker.on_applied(0, 1, 1, "x", b"d-x")
    h.checker.on_applied(1, 1, 1, "y", b"d-y")
    assert h.kinds == ["state machine safety"]


def test_a_restart_must_keep_the_vote_it_granted() -> None:
    h = Harness()
    h.start(0)
    h.checker.on_reply(0, RequestVoteArgs(3, 1, 0, 0), RequestVoteReply(3, True))
    h.checker.peer_stopped(0)

    h.start(0, term=3, vote=1, incarnation=2)  # kept: fine
    assert h.found == []
    h.start(0, term=3, vote=None, incarnation=3)  # forgot the vote
    assert h.kinds == ["durability"]


def test_a_restart_must_keep_its_term_and_acknowledged_entries() -> None:
    h = Harness()
    h.start(0)
    args = AppendEntriesArgs(2, 1, 0, 0, [e(2, "x")], 0)
    h.checker.on_reply(0, args, AppendEntriesReply(2, True, 1))

    h.start(0, term=2, entries=[e(2, "x")], incarnation=2)
    assert h.found == []
    h.start(0, term=2, entries=[], incarnation=3)
    assert h.kinds == ["durability"]
    assert "1@T2" in h.found[0].message

    h = Harness()
    h.start(0)
    h.checker.on_reply(0, args, AppendEntriesReply(2, True, 1))
    h.start(0, term=1, incarnation=2)
    assert h.kinds == ["durability"]


def test_a_pre_vote_promises_nothing() -> None:
    h = Harness()
    h.start(0)
    h.checker.on_reply(0, RequestVoteArgs(3, 1, 0, 0, pre_vote=True), RequestVoteReply(0, True))
    h.start(0, incarnation=2)
    assert h.found == []


def test_only_the_first_violation_is_reported() -> None:
    h = Harness()
    a, b, c = h.start(0), h.start(1), h.start(2)
    h.lead(a, 1)
    h.lead(b, 1)
    h.lead(c, 1)
    assert len(h.found) == 1
