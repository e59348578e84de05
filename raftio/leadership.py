"""Who leads, as one peer sees it: waiters and subscribers woken on each change.

The shell calls `observe` after every drain of the core; it costs three
comparisons when nothing changed. Services wait on it instead of polling
`status()`: `Node.wait_for_leader()`, `Node.leadership_changes()`, and a
leadership transfer waiting for its outcome.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Leadership:
    """The leader a peer knows of in `term` (None: none known yet)."""

    term: int
    leader_id: int | None


class LeadershipWatch:
    """The latest (term, leader, transfer target) and whoever waits for it to change."""

    __slots__ = ("_changed", "_loop", "_queues", "closed", "leader_id", "target", "term")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.term = -1
        self.leader_id: int | None = None
        self.target: int | None = None  # a leader's transfer target
        self.closed = False
        self._changed: asyncio.Future[None] | None = None
        self._queues: list[asyncio.Queue[Leadership | None]] = []

    def observe(self, term: int, leader_id: int | None, target: int | None) -> None:
        if term == self.term and leader_id == self.leader_id and target == self.target:
            return
        leader_changed = term != self.term or leader_id != self.leader_id
        self.term, self.leader_id, self.target = term, leader_id, target
        self._wake()
        if leader_changed:
            now = Leadership(term, leader_id)
            for queue in self._queues:
                queue.put_nowait(now)

    def close(self) -> None:
        """The peer stopped: wake everyone, and end every subscription."""
        if self.closed:
            return
        self.closed = True
        self._wake()
        for queue in self._queues:
            queue.put_nowait(None)

    async def changed(self) -> None:
        """Return at the next change (at once if the peer has stopped)."""
        if self.closed:
            return
        if self._changed is None:
            self._changed = self._loop.create_future()
        await asyncio.shield(self._changed)

    async def wait_for_handover(self, me: int, timeout: float) -> int | None:
        """Wait until a peer other than `me` leads; returns its id.

        None if `me` leads on with no transfer pending (it was abandoned),
        the peer stopped, or `timeout` seconds passed.
        """
        try:
            async with asyncio.timeout(timeout):
                while not self.closed and not (self.leader_id == me and self.target is None):
                    if self.leader_id is not None and self.leader_id != me:
                        return self.leader_id
                    await self.changed()
        except TimeoutError:
            pass
        return None

    async def changes(self) -> AsyncIterator[Leadership]:
        """The current leadership, then each change, until the peer stops."""
        queue: asyncio.Queue[Leadership | None] = asyncio.Queue()
        queue.put_nowait(None if self.closed else Leadership(self.term, self.leader_id))
        self._queues.append(queue)
        try:
            while (item := await queue.get()) is not None:
                yield item
        finally:
            self._queues.remove(queue)

    def _wake(self) -> None:
        changed, self._changed = self._changed, None
        if changed is not None and not changed.done():
            changed.set_result(None)
