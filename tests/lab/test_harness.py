"""The lab harness itself: its checks catch broken peers, failures stop the test, seeds replay.

Stub peers stand in for Raft where a test needs a peer that misbehaves.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from raftio import codec
from raftio.messages import ApplyMsg, RequestVoteArgs

from .harness import Config, Lab, LabFailure

NODEID = "tests/lab/test_harness.py::example"


class StubPeer:
    """A peer that does nothing by itself; tests set what it reports."""

    def __init__(self, ends: list[Any], me: int, apply_ch: asyncio.Queue[ApplyMsg]) -> None:
        self.ends, self.me, self.apply_ch = ends, me, apply_ch
        self.term, self.leader = 0, False
        self.snapshots: list[tuple[int, bytes]] = []
        self.raise_on_rpc = False
        self._killed = False

    def start(self, command: Any) -> tuple[int, int, bool]:
        return -1, self.term, False

    def get_state(self) -> tuple[int, bool]:
        return self.term, self.leader

    def snapshot(self, index: int, snapshot: bytes) -> None:
        self.snapshots.append((index, snapshot))

    def kill(self) -> None:
        self._killed = True

    def killed(self) -> bool:
        return self._killed

    async def request_vote(self, args: Any) -> Any:
        if self.raise_on_rpc:
            raise RuntimeError("peer bug")
        return None

    async def append_entries(self, args: Any) -> Any:
        return None

    async def install_snapshot(self, args: Any) -> Any:
        return None


@pytest.fixture
def stubs(monkeypatch: pytest.MonkeyPatch) -> list[StubPeer]:
    """Make every Config build StubPeers; the list holds them in creation order."""
    made: list[StubPeer] = []

    def make_raft(self: Config, ends: Any, i: int, storage: Any, apply_ch: Any) -> Any:
        peer = StubPeer(ends, i, apply_ch)
        made.append(peer)
        return peer

    monkeypatch.setattr(Config, "make_raft", make_raft)
    return made


def run_failing(body: Any, seed: int = 1) -> LabFailure:
    lab = Lab(NODEID, seed, "virtual")
    with pytest.raises(LabFailure) as failure:
        lab.run(body)
    return failure.value


def cmd(index: int, command: Any) -> ApplyMsg:
    return ApplyMsg(command_valid=True, command=command, command_index=index, command_term=1)


def test_no_leader_is_reported(stubs: list[StubPeer]) -> None:
    async def body(lab: Lab) -> None:
        cfg = lab.make_config(3, unreliable=False, snapshot=False)
        await cfg.check_one_leader()

    failure = run_failing(body)

    assert str(failure) == "expected one leader, got none"
    assert f"rerun: pytest {NODEID} --seed 1 --loop virtual" in failure.__notes__


def test_two_leaders_in_one_term_are_reported(stubs: list[StubPeer]) -> None:
    async def body(lab: Lab) -> None:
        cfg = lab.make_config(3, unreliable=False, snapshot=False)
        for peer in stubs[1:]:
            peer.term, peer.leader = 4, True
        await cfg.check_one_leader()

    assert str(run_failing(body)) == "term 4 has 2 (>1) leaders"


def test_disconnected_leader_is_not_counted(stubs: list[StubPeer]) -> None:
    async def body(lab: Lab) -> None:
        cfg = lab.make_config(3, unreliable=False, snapshot=False)
        stubs[0].term, stubs[0].leader = 1, True
        stubs[2].term, stubs[2].leader = 2, True
        assert await cfg.check_one_leader() == 2
        cfg.disconnect(2)
        assert await cfg.check_one_leader() == 0
        cfg.disconnect(0)
        cfg.check_no_leader()

    Lab(NODEID, 1, "virtual").run(body)


def test_conflicting_applies_fail_from_the_applier_task(stubs: list[StubPeer]) -> None:
    async def body(lab: Lab) -> None:
        lab.make_config(3, unreliable=False, snapshot=False)
        stubs[0].apply_ch.put_nowait(cmd(1, 101))
        stubs[1].apply_ch.put_nowait(cmd(1, 999))
        await asyncio.sleep(3600)  # the applier's failure must cut this short

    failure = run_failing(body)

    assert str(failure) == "apply error: commit index=1 server=1 999 != server=0 101"


def test_gap_in_applies_is_reported(stubs: list[StubPeer]) -> None:
    async def body(lab: Lab) -> None:
        lab.make_config(3, unreliable=False, snapshot=False)
        stubs[0].apply_ch.put_nowait(cmd(1, 1))
        stubs[0].apply_ch.put_nowait(cmd(3, 3))
        await asyncio.sleep(1)

    assert str(run_failing(body)) == "apply error: server 0 apply out of order 3"


def test_applier_snap_snapshots_every_ten_and_ingests_snapshots(stubs: list[StubPeer]) -> None:
    async def body(lab: Lab) -> None:
        cfg = lab.make_config(1, unreliable=False, snapshot=True)
        peer = stubs[0]
        for index in range(1, 10):
            cfg.applier_snap(0, peer, cmd(index, index * 10))  # type: ignore[arg-type]

        assert [i for i, _ in peer.snapshots] == [9]
        assert codec.decode_command(peer.snapshots[0][1]) == [9, [None, *range(10, 100, 10)]]

        snap = codec.encode_command([20, [None, *range(1, 21)]])
        cfg.applier_snap(0, peer, ApplyMsg(snapshot_valid=True, snapshot=snap, snapshot_index=20))  # type: ignore[arg-type]
        assert cfg.last_applied[0] == 20
        assert cfg.logs[0][20] == 20

        cfg.applier_snap(0, peer, cmd(22, 22))  # type: ignore[arg-type]

    failure = run_failing(body)

    assert str(failure) == "apply error: server 0 apply out of order, expected index 21, got 22"


def test_live_peer_raising_in_a_handler_fails_the_test(stubs: list[StubPeer]) -> None:
    async def body(lab: Lab) -> None:
        lab.make_config(2, unreliable=False, snapshot=False)
        stubs[1].raise_on_rpc = True
        await stubs[0].ends[1].call("request_vote", RequestVoteArgs(1, 0, 0, 0))
        await asyncio.sleep(3600)

    failure = run_failing(body)

    assert str(failure) == "server 1: live peer's request_vote raised RuntimeError('peer bug')"


def test_peer_stopping_by_itself_is_reported(stubs: list[StubPeer]) -> None:
    async def body(lab: Lab) -> None:
        cfg = lab.make_config(3, unreliable=False, snapshot=False)
        stubs[1].kill()
        cfg.n_committed(1)

    expected = "server 1 stopped by itself (not crashed by the tester)"
    assert str(run_failing(body)) == expected


def test_crash_checks_what_was_applied_and_restart_gets_a_copy(stubs: list[StubPeer]) -> None:
    async def body(lab: Lab) -> None:
        cfg = lab.make_config(3, unreliable=False, snapshot=False)
        storage = cfg.saved[0]
        stubs[0].apply_ch.put_nowait(cmd(1, 7))

        cfg.crash1(0)  # kills the peer, then checks what it had put on apply_ch

        assert stubs[0].killed()
        assert cfg.rafts[0] is None
        assert cfg.logs[0] == {1: 7}
        assert cfg.saved[0] is not storage
        cfg.start1(0, cfg.applier)
        assert cfg.rafts[0] is stubs[3]
        assert stubs[3].ends[1] is not stubs[0].ends[1]

    Lab(NODEID, 1, "virtual").run(body)


def test_time_limit_is_enforced() -> None:
    async def body(lab: Lab) -> None:
        await asyncio.sleep(500)

    assert str(run_failing(body)) == "test took longer than 120 seconds"


def test_a_seed_replays_the_same_run() -> None:
    async def body(lab: Lab) -> None:
        cfg = lab.make_config(5, unreliable=True, snapshot=False)
        for value in range(20):
            await cfg.one(value, 3, retry=True)
        results.append((cfg.rpc_total(), cfg.bytes_total(), cfg.rand_int()))

    results: list[tuple[int, int, int]] = []
    for seed in (11, 11, 12):
        Lab(NODEID, seed, "virtual").run(body)

    assert results[0] == results[1]
    assert results[0] != results[2]
