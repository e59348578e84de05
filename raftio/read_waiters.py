"""The callers of `Raft.read_index`, waiting for the core to settle their reads.

The core decides (ReadIndex, Raft thesis 6.4); this only matches each
ReadConfirmed / ReadRefused to the future its caller awaits.
"""

from __future__ import annotations

import asyncio

from raftio.errors import NotLeaderError
from raftio.messages import ReadConfirmed, ReadRefused, ReadResult


class ReadWaiters:
    """Futures of pending reads, by read id (ids are issued here, never reused)."""

    __slots__ = ("_loop", "_next_id", "waiting")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._next_id = 0
        # Public so the shell's drain tests it as a plain dict: no __bool__ call per drain.
        self.waiting: dict[int, asyncio.Future[int]] = {}

    def next_id(self) -> int:
        read_id = self._next_id
        self._next_id += 1
        return read_id

    def wait(self, read_id: int) -> asyncio.Future[int]:
        done: asyncio.Future[int] = self._loop.create_future()
        self.waiting[read_id] = done
        return done

    def settle(self, results: list[ReadResult], leader_id: int | None) -> None:
        for result in results:
            done = self.waiting.pop(result.read_id, None)
            if done is None or done.done():
                continue  # its caller gave up
            match result:
                case ReadConfirmed(_, index):
                    done.set_result(index)
                case ReadRefused():
                    done.set_exception(NotLeaderError(leader_id))

    def refuse_all(self) -> None:
        """The peer stops: every waiting read fails as it would on a lost leadership."""
        waiting, self.waiting = self.waiting, {}
        for done in waiting.values():
            if not done.done():
                done.set_exception(NotLeaderError(None))
