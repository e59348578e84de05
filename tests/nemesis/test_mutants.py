"""The nemesis simulation catches deliberately broken versions of raftio and its KV service.

Each test installs one bug with monkeypatch and runs seeds in order until a
run fails; the run is a pure function of its seed, so the first failing seed
is stable until raftio or the simulation changes. Each asserts which check
caught the bug.
"""

from __future__ import annotations

from typing import Any

import pytest

from raftio.errors import NotLeaderError
from raftio.kv.client import KVClient, KVRequestError
from raftio.kv.machine import KVStateMachine
from raftio.raft import Raft
from raftio.testing.linearizability import KvModel, check
from raftio.testing.nemesis import NemesisReport, SimConfig, simulate

SEED_BOUND = 40  # the read mutant is caught at seed 3


def first_failure() -> NemesisReport:
    for seed in range(1, SEED_BOUND + 1):
        report = simulate(SimConfig(seed=seed, nodes=3 + 2 * (seed % 2)))
        if not report.ok:
            print(f"caught at seed {seed}:\n{report.explain()[:3000]}")
            return report
    raise AssertionError(f"no run of seeds 1..{SEED_BOUND} failed")


def doubled(value: Any) -> bool:
    """Whether a value read or returned holds some write's token twice."""
    tokens = value.split(";")[:-1] if isinstance(value, str) else []
    return len(tokens) != len(set(tokens))


async def read_index_without_a_heartbeat_round(self: Raft) -> int:
    """Raft.read_index trusting that it still leads (a deposed leader reads stale state)."""
    core = self._core
    if self._killed or not core.can_serve_reads():
        raise NotLeaderError(core.leader_id)
    return core.commit_index


def test_reads_without_confirming_leadership_are_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Raft, "read_index", read_index_without_a_heartbeat_round)

    report = first_failure()

    assert report.result is not None
    assert report.result.ok is False
    assert any(v.stuck.kind == "get" for v in report.result.violations)


def test_a_client_that_renumbers_its_retries_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    exchange = KVClient._exchange

    async def renumbering(
        self: KVClient, address: str, request: dict[str, Any], timeout: float | None
    ) -> Any:
        if "seq" in request:
            self.seq += 1
            request["seq"] = self.seq  # a retry looks like a new write
        return await exchange(self, address, request, timeout)

    monkeypatch.setattr(KVClient, "_exchange", renumbering)

    # Sessions now catch it first: a renumbered retry of a write that never
    # applied skips a seq, and the cluster refuses it (seq_gap) instead of
    # applying a write twice; the client stops with that error.
    with pytest.raises(KVRequestError, match="seq_gap"):
        first_failure()


def test_a_state_machine_without_duplicate_detection_is_caught(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    write = KVStateMachine._write

    def forgetful(
        self: KVStateMachine, op: str, key: str, value: str, session_id: str, seq: int
    ) -> str:
        session = self.sessions.get(session_id)
        if session is not None and seq <= session.seq:
            session.seq = seq - 1  # forget the write it applied: a retry applies again
        return write(self, op, key, value, session_id, seq)

    monkeypatch.setattr(KVStateMachine, "_write", forgetful)

    report = first_failure()

    assert report.result is not None
    assert report.result.ok is False
    assert any(doubled(op.output) for op in report.history.operations)


def test_a_retry_answered_with_the_current_value_is_caught(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    write = KVStateMachine._write

    def current_value_for_retries(
        self: KVStateMachine, op: str, key: str, value: str, session_id: str, seq: int
    ) -> str:
        session = self.sessions.get(session_id)
        if session is not None and seq == session.seq:
            return self.data.get(key, "")  # not what it answered
        return write(self, op, key, value, session_id, seq)

    monkeypatch.setattr(KVStateMachine, "_write", current_value_for_retries)

    report = first_failure()

    # Only the writes' answers are wrong: the values stored are right.
    assert report.problems == []
    assert report.result is not None
    assert report.result.ok is False
    # A write is among the operations that cannot be placed (a read may be too:
    # it saw the state a wrongly answered write left), and with the write
    # answers ignored the history is linearizable.
    assert {v.stuck.kind for v in report.result.violations} & {"put", "append"}
    assert check(report.history, model=KvModel()).ok is True
