"""The shell's storage side: write the core's storage effects, time the syncs.

Writes return at once (the storage buffers them); `sync()` hands back a
future for the group commit that makes them durable, or None when they
already are. The syncs in flight tell the shell when its disk has stalled.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from raftio.messages import AppendLog, SaveHardState, SaveSnapshot, StorageEffect
from raftio.metrics import PeerMetrics
from raftio.storage.base import Storage


class Persister:
    """Writes storage effects in order and tracks the syncs in flight."""

    __slots__ = ("_clock", "_metrics", "_storage", "_syncs", "wrote_hard_state")

    def __init__(self, storage: Storage, metrics: PeerMetrics, clock: Callable[[], float]) -> None:
        self._storage = storage
        self._metrics = metrics
        self._clock = clock
        self._syncs: dict[asyncio.Future[None], float] = {}  # pending sync -> start time
        self.wrote_hard_state = False  # the last write() changed the term or vote

    def write(self, ops: list[StorageEffect]) -> asyncio.Future[None] | None:
        """Write `ops`, then sync: the sync's future, or None if they are durable already.

        Raises whatever the storage raises (the caller fail-stops on it).
        """
        storage, metrics = self._storage, self._metrics
        metrics.writes += len(ops)
        self.wrote_hard_state = False
        for op in ops:
            # Type tests, not `match`: a class pattern with captures costs ~4x as much.
            if type(op) is AppendLog:
                storage.append_entries(op.first_index, op.entries)
                metrics.entries_written += len(op.entries)
            elif type(op) is SaveHardState:
                storage.save_hard_state(op.term, op.voted_for)
                self.wrote_hard_state = True
            elif type(op) is SaveSnapshot:
                storage.save_snapshot(op.index, op.term, op.data, op.config)
        pending = storage.sync()
        if pending is not None and pending not in self._syncs:
            self._syncs[pending] = self._clock()
        return pending

    def synced(self, fut: asyncio.Future[None]) -> None:
        """`fut`, a sync `write` returned, is done (the shell's callback calls this:
        one callback per sync, not two)."""
        started = self._syncs.pop(fut, None)
        if started is not None:
            self._metrics.sync_latency.observe(self._clock() - started)

    def newest_sync(self) -> asyncio.Future[None] | None:
        """The sync most recently started that has not finished, if any."""
        return next(reversed(self._syncs), None)

    def stalled(self, timeout: float) -> bool:
        """A sync has been in flight for longer than `timeout` seconds."""
        return bool(self._syncs) and self._clock() - min(self._syncs.values()) > timeout
