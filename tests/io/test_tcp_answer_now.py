"""The TCP server's fast path: a handler's `answer_now` answers without a task.

Raft answers RequestVote, AppendEntries and TimeoutNow this way; a reply that
promises state still being written is a `PendingReply` and must leave only
once that write is durable (Figure 2: "respond after persisting"). Real
loopback sockets, on both asyncio's loop and uvloop.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from raftio.messages import (
    AppendEntriesArgs,
    AppendEntriesReply,
    InstallSnapshotArgs,
    InstallSnapshotReply,
    RequestVoteArgs,
    RequestVoteReply,
)
from raftio.storage.base import StorageError
from raftio.transport.base import PendingReply
from tests.io.test_tcp_transport import RV, Handler, Runner, end_to, logged, run, serving

__all__ = ["run"]  # the fixture, imported for pytest

AE = AppendEntriesArgs(3, 0, 5, 2, [], 4)


class Answering(Handler):
    """A Handler with `answer_now`; its replies wait on `durable` when that is set."""

    def __init__(self) -> None:
        super().__init__()
        self.durable: asyncio.Future[None] | None = None
        self.alive = True
        self.tasks_used: list[str] = []
        self.arrived = asyncio.Event()

    async def wait_calls(self, n: int) -> None:
        # answer_now cannot notify the base class's asyncio.Condition (not a coroutine).
        while len(self.calls) < n:
            self.arrived.clear()
            await self.arrived.wait()

    def answer_now(self, args: Any) -> Any | None:
        self.calls.append(args)
        self.arrived.set()
        if self.mode == "raise":
            raise RuntimeError("handler bug")
        reply: Any
        if isinstance(args, AppendEntriesArgs):
            reply = AppendEntriesReply(args.term, True, args.prev_log_index + len(args.entries))
        else:
            reply = RequestVoteReply(args.term, True)
        if self.durable is not None:
            return PendingReply(self.durable, reply, lambda: self.alive)
        return reply

    async def request_vote(self, args: RequestVoteArgs) -> RequestVoteReply | None:
        self.tasks_used.append("request_vote")
        return await super().request_vote(args)

    async def append_entries(self, args: AppendEntriesArgs) -> AppendEntriesReply:
        self.tasks_used.append("append_entries")
        return await super().append_entries(args)

    async def install_snapshot(self, args: InstallSnapshotArgs) -> InstallSnapshotReply:
        self.tasks_used.append("install_snapshot")
        return await super().install_snapshot(args)


def test_votes_and_appends_are_answered_without_a_task(run: Runner) -> None:
    async def main() -> None:
        handler = Answering()
        async with serving(handler) as server, end_to(server.port) as end:
            snap = InstallSnapshotArgs(3, 0, 9, 2, b"s" * 100)
            assert await end.call("request_vote", RV) == RequestVoteReply(3, True)
            assert await end.call("append_entries", AE) == AppendEntriesReply(3, True, 5)
            # A snapshot chunk may await its file: it still runs in a task.
            assert await end.call("install_snapshot", snap) == InstallSnapshotReply(103)

            assert handler.tasks_used == ["install_snapshot"]
            assert handler.calls == [RV, AE, snap]

    run(main())


def test_a_pending_reply_leaves_only_once_its_write_is_durable(run: Runner) -> None:
    async def main() -> None:
        handler = Answering()
        handler.durable = asyncio.get_running_loop().create_future()
        async with serving(handler, max_inflight=1) as server, end_to(server.port) as end:
            first = asyncio.ensure_future(end.call("append_entries", AE))
            await handler.wait_calls(1)
            await asyncio.sleep(0.05)
            assert not first.done()

            # The pending reply counts against max_inflight: the next request
            # waits unread until the first reply leaves.
            second = asyncio.ensure_future(end.call("request_vote", RV))
            await asyncio.sleep(0.05)
            assert len(handler.calls) == 1

            handler.durable.set_result(None)
            assert await first == AppendEntriesReply(3, True, 5)
            assert await second == RequestVoteReply(3, True)
            assert handler.tasks_used == []

    run(main())


@pytest.mark.parametrize("failure", ["write failed", "peer stopped", "write cancelled"])
def test_a_pending_reply_answers_none_if_its_write_did_not_become_durable(
    run: Runner, failure: str
) -> None:
    async def main() -> None:
        handler = Answering()
        durable = handler.durable = asyncio.get_running_loop().create_future()
        async with serving(handler) as server, end_to(server.port, timeout=10) as end:
            call = asyncio.ensure_future(end.call("append_entries", AE))
            await handler.wait_calls(1)
            if failure == "write failed":
                durable.set_exception(StorageError("disk gone"))
            elif failure == "peer stopped":
                handler.alive = False
                durable.set_result(None)
            else:
                durable.cancel()
            assert await call is None

            # The connection keeps serving.
            handler.durable, handler.alive = None, True
            assert await end.call("append_entries", AE) == AppendEntriesReply(3, True, 5)

    run(main())


def test_answer_now_raising_is_logged_and_answers_none(
    run: Runner, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> None:
        handler = Answering()
        handler.mode = "raise"
        async with serving(handler) as server, end_to(server.port, timeout=10) as end:
            assert await end.call("append_entries", AE) is None

            handler.mode = "answer"
            assert await end.call("append_entries", AE) == AppendEntriesReply(3, True, 5)

    run(main(), tracebacks=True)
    assert logged(caplog, "append_entries handler raised")
