"""A follower's AppendEntries reply and a vote leave only once storage reports the sync.

Figure 2: "Updated on stable storage before responding to RPCs". A reply
sent before the sync could be forgotten by a crash after the leader (or
candidate) counted it: an entry counted as replicated, or a second vote in
the same term. The storage here completes its sync only when the test says
so, and the reply must wait for exactly that.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Coroutine, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import raftio
from raftio import codec
from raftio.messages import (
    AppendEntriesArgs,
    AppendEntriesReply,
    Entry,
    InstallSnapshotArgs,
    RequestVoteArgs,
    RequestVoteReply,
)
from raftio.storage.base import StorageError
from raftio.testing import run
from raftio.transport.base import PendingReply
from raftio.transport.memory import Network

from .memory_cluster import leader_of, three_peers

T = TypeVar("T")
WAIT = 0.05  # virtual seconds the sync is held: far longer than any reply takes, < a timeout


class GatedStorage(raftio.MemoryStorage):
    """MemoryStorage whose sync completes when the test resolves `gate`."""

    def __init__(self) -> None:
        super().__init__()
        self.gate: asyncio.Future[None] | None = None
        self.writes = 0

    def save_hard_state(self, current_term: int, voted_for: int | None) -> None:
        self.writes += 1
        super().save_hard_state(current_term, voted_for)

    def append_entries(self, first_index: int, entries: Sequence[Entry]) -> None:
        self.writes += 1
        super().append_entries(first_index, entries)

    def sync(self) -> asyncio.Future[None] | None:
        return self.gate if self.gate is not None and not self.gate.done() else None


async def answer_waits_for_sync(call: Coroutine[Any, Any, T], storage: GatedStorage) -> T:
    """Start the RPC with the sync held; check it waits; release the sync; return the reply."""
    storage.gate = asyncio.get_running_loop().create_future()
    task = asyncio.ensure_future(call)
    await asyncio.sleep(WAIT)
    assert storage.writes > 0, "the RPC wrote nothing: it would not need a sync"
    assert not task.done(), f"replied before the sync: {task.result()}"

    storage.gate.set_result(None)
    async with asyncio.timeout(WAIT):
        return await task


@asynccontextmanager
async def follower() -> AsyncIterator[tuple[raftio.Raft, GatedStorage]]:
    """A fresh peer S1 of three (its peers unreachable), to be fed RPCs directly."""
    net = Network(0)
    ends = [net.make_end(j) for j in range(3)]
    storage = GatedStorage()
    raft = raftio.make(ends, 1, storage, asyncio.Queue(), rng=random.Random(0))
    try:
        yield raft, storage
    finally:
        raft.kill()
        net.cleanup()


async def append_reply() -> AppendEntriesReply | None:
    async with follower() as (raft, storage):
        args = AppendEntriesArgs(1, 0, 0, 0, [Entry(1, codec.encode_command("x"))], 0)
        return await answer_waits_for_sync(raft.append_entries(args), storage)


async def vote_reply() -> RequestVoteReply | None:
    async with follower() as (raft, storage):
        args = RequestVoteArgs(1, 0, 0, 0)
        return await answer_waits_for_sync(raft.request_vote(args), storage)


def test_an_append_entries_reply_waits_for_the_sync() -> None:
    reply = run(append_reply(), "virtual")

    assert reply == AppendEntriesReply(1, True, 1)


def test_a_granted_vote_waits_for_the_sync() -> None:
    reply = run(vote_reply(), "virtual")

    assert reply == RequestVoteReply(1, True)


# --- applying around a write in flight ------------------------------------------------
# A follower's reply waits for its write; its applying waits for nobody. So a
# follower applies what it learns is committed once the write in flight is
# done (applying first would hold the GIL the write's thread needs to begin),
# while a leader, whose clients wait for its applying, never waits for its own.


def _taken(queue: asyncio.Queue[raftio.ApplyMsg]) -> list[int]:
    out = []
    while not queue.empty():
        out.append(queue.get_nowait().command_index)
    return out


async def follower_applied_around_a_write() -> tuple[list[int], list[int]]:
    """(indexes applied while a write was held, indexes applied once it finished)."""
    net = Network(0)
    storage = GatedStorage()
    applied: asyncio.Queue[raftio.ApplyMsg] = asyncio.Queue()
    raft = raftio.make([net.make_end(j) for j in range(3)], 1, storage, applied)
    x = codec.encode_command("x")
    try:
        await raft.append_entries(AppendEntriesArgs(1, 0, 0, 0, [Entry(1, x), Entry(1, x)], 0))
        storage.gate = asyncio.get_running_loop().create_future()
        # Entry 3, with the news that 1 and 2 are committed.
        reply = asyncio.ensure_future(
            raft.append_entries(AppendEntriesArgs(1, 0, 2, 1, [Entry(1, x)], 2))
        )
        await asyncio.sleep(WAIT)
        while_writing = _taken(applied)
        storage.gate.set_result(None)
        assert await reply == AppendEntriesReply(1, True, 3)
        await asyncio.sleep(WAIT)
        return while_writing, _taken(applied)
    finally:
        raft.kill()
        net.cleanup()


def test_a_follower_applies_once_its_write_in_flight_is_done() -> None:
    while_writing, after = run(follower_applied_around_a_write(), "virtual")

    assert while_writing == []
    assert after == [1, 2]


async def leader_applies_with_its_own_write_held(seed: int) -> list[int]:
    """A leader whose every sync is held commits through its two followers: what it applies."""
    storages = [GatedStorage() for _ in range(3)]
    queues: list[asyncio.Queue[raftio.ApplyMsg]] = [asyncio.Queue() for _ in range(3)]
    async with three_peers(seed, storages=storages, apply_chs=queues) as (_, rafts):
        await asyncio.sleep(3.0)
        me = leader_of(rafts)
        _taken(queues[me])
        storages[me].gate = asyncio.get_running_loop().create_future()
        index, _, _ = rafts[me].start("held")
        await asyncio.sleep(0.2)
        return [i for i in _taken(queues[me]) if i >= index]


def test_a_leader_applies_while_its_own_write_is_held(seed: int) -> None:
    print(f"seed={seed} (rerun with --seed {seed})")
    applied = run(leader_applies_with_its_own_write_held(seed), "virtual")

    assert len(applied) == 1, applied


async def answers_now() -> tuple[Any, ...]:
    async with follower() as (raft, storage):
        storage.gate = asyncio.get_running_loop().create_future()
        args = AppendEntriesArgs(1, 0, 0, 0, [Entry(1, codec.encode_command("x"))], 0)
        pending = raft.answer_now(args)
        assert isinstance(pending, PendingReply)
        assert pending.durable is storage.gate
        storage.gate.set_result(None)
        await asyncio.sleep(0)
        durable = pending.settled()

        storage.gate = asyncio.get_running_loop().create_future()
        more = AppendEntriesArgs(1, 0, 1, 1, [Entry(1, codec.encode_command("y"))], 0)
        failing = raft.answer_now(more)
        assert isinstance(failing, PendingReply)
        storage.gate.set_exception(StorageError("disk gone"))
        await asyncio.sleep(0)
        return durable, failing.settled(), raft.status().role


def test_answer_now_hands_over_a_reply_that_waits_for_its_write() -> None:
    durable, failed, role = run(answers_now(), "virtual")

    assert durable == AppendEntriesReply(1, True, 1)
    assert failed is None  # the write failed: no answer, and the peer stopped
    assert role == "failed"


async def mismatched_calls() -> list[Any]:
    async with follower() as (raft, _):
        vote, append = RequestVoteArgs(1, 0, 0, 0), AppendEntriesArgs(1, 0, 0, 0, [], 0)
        chunk = InstallSnapshotArgs(1, 0, 5, 1, b"x")
        return [
            await raft.request_vote(append),  # type: ignore[arg-type]
            await raft.append_entries(vote),  # type: ignore[arg-type]
            await raft.timeout_now(vote),  # type: ignore[arg-type]
            raft.answer_now(chunk),  # snapshot chunks always run in a task
            raft.answer_now("not an RPC"),
            raft.view.current_term,
        ]


def test_a_handler_given_another_rpcs_arguments_answers_nothing_and_changes_nothing() -> None:
    assert run(mismatched_calls(), "virtual") == [None, None, None, None, None, 0]
