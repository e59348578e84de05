"""SimStorage: the Storage protocol with explicit, simulated durability.

Writes (`save_hard_state`, `append_entries`, `save_snapshot`) apply at once
to a *live* view (what the running peer reads back and what `raft_state_size`
measures) and are queued as *pending*. `sync()` hands every pending write to a
simulated disk that finishes one batch at a time, in order, after a seeded
fsync latency; only then do those writes reach the *durable* view and the
sync's future resolve. A crash keeps the durable view, and the pending writes
too unless `crash(lose_unsynced=True)`.

Faults: `stall(seconds)` holds every sync issued before the stall ends (slow
storage); `fail_next_sync()` makes the next batch fail with StorageError (the
peer must fail-stop), and every later sync fails too.

Timing comes only from the running loop (`loop.call_at`); randomness only
from the `random.Random` passed in.
"""

from __future__ import annotations

import asyncio
import random
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

from raftio.membership import Configuration
from raftio.messages import Entry
from raftio.storage.base import DurableState, StorageError
from raftio.storage.memory import MemoryStorage
from raftio.storage.snapshot import (
    BytesWriter,
    SnapshotInfo,
    SnapshotReader,
    SnapshotWriter,
    StagedSnapshot,
)

# One write, replayable on any MemoryStorage (the live view, then the durable one).
_Write = Callable[[MemoryStorage], None]


@dataclass(slots=True)
class _Batch:
    """One fsync: the writes it makes durable and when the disk finishes it."""

    writes: list[_Write]
    done_at: float
    future: asyncio.Future[None]


class SimStorage:
    """In-memory Storage whose writes become durable only when a simulated fsync finishes.

    Args:
        rng: draws every fsync latency.
        latency: (low, high) seconds of one fsync, drawn uniformly.
        durable: the storage a crash left behind (None: an empty peer).
    """

    def __init__(
        self,
        rng: random.Random,
        latency: tuple[float, float] = (0.0005, 0.005),
        durable: MemoryStorage | None = None,
    ) -> None:
        self._rng = rng
        self.latency = latency
        self._durable = durable if durable is not None else MemoryStorage()
        self._live = self._durable.copy()
        self._pending: list[_Write] = []
        self._disk: deque[_Batch] = deque()
        self._timer: asyncio.TimerHandle | None = None
        self._stalled_until = 0.0
        self._fail_next = False
        self.failed = False  # a sync failed: every later sync fails too
        self.syncs = 0  # batches made durable

    # --- Storage protocol ----------------------------------------------------

    def load(self) -> DurableState:
        return self._live.load()

    def read_snapshot(self) -> bytes:
        return self._live.read_snapshot()

    def snapshot_info(self) -> SnapshotInfo:
        return self._live.snapshot_info()

    def open_snapshot(self) -> SnapshotReader | None:
        return self._live.open_snapshot()

    def create_snapshot(self, index: int, term: int) -> SnapshotWriter:
        return BytesWriter(index, term)

    def save_hard_state(self, current_term: int, voted_for: int | None) -> None:
        self._write(
            partial(MemoryStorage.save_hard_state, current_term=current_term, voted_for=voted_for)
        )

    def append_entries(self, first_index: int, entries: Sequence[Entry]) -> None:
        self._write(
            partial(MemoryStorage.append_entries, first_index=first_index, entries=list(entries))
        )

    def save_snapshot(
        self,
        index: int,
        term: int,
        data: bytes | StagedSnapshot,
        config: Configuration | None = None,
    ) -> None:
        if not isinstance(data, StagedSnapshot):
            data = bytes(data)
        self._write(
            partial(MemoryStorage.save_snapshot, index=index, term=term, data=data, config=config)
        )

    def sync(self) -> asyncio.Future[None] | None:
        """Queue every pending write for one fsync; None if nothing is pending or in flight."""
        if not self._pending:
            return self._disk[-1].future if self._disk else None
        loop = asyncio.get_running_loop()
        start = max(loop.time(), self._stalled_until)
        if self._disk:
            start = max(start, self._disk[-1].done_at)
        done_at = start + self._rng.uniform(*self.latency)
        batch = _Batch(self._pending, done_at, loop.create_future())
        self._pending = []
        self._disk.append(batch)
        if self._timer is None:
            self._timer = loop.call_at(done_at, self._finish)
        return batch.future

    def raft_state_size(self) -> int:
        return self._live.raft_state_size()

    def snapshot_size(self) -> int:
        return self._live.snapshot_size()

    def close(self) -> None:
        """The peer was killed: the disk stops; pending writes wait for `crash()`."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # --- faults --------------------------------------------------------------

    def stall(self, seconds: float) -> None:
        """Slow storage: no fsync issued from now on finishes before `seconds` have passed."""
        until = asyncio.get_running_loop().time() + seconds
        self._stalled_until = max(self._stalled_until, until)

    def clear_faults(self) -> None:
        """Fast storage again: no stall for new fsyncs, no failure pending."""
        self._stalled_until = 0.0
        self._fail_next = False

    def fail_next_sync(self) -> None:
        """The next fsync to finish fails with StorageError (its writes are lost)."""
        self._fail_next = True

    def crash(self, lose_unsynced: bool) -> SimStorage:
        """A fresh storage holding what a crash now leaves behind.

        Writes whose fsync finished always survive; the others (pending or
        in flight) survive only if `lose_unsynced` is False.
        """
        self.close()
        if not lose_unsynced and not self.failed:
            return SimStorage(self._rng, self.latency, self._live.copy())
        return SimStorage(self._rng, self.latency, self._durable.copy())

    def has_unsynced(self) -> bool:
        """Some write is not durable yet (pending, or its fsync is in flight)."""
        return bool(self._pending or self._disk)

    def durable_state(self) -> DurableState:
        """What a crash that loses unsynced writes would keep."""
        return self._durable.load()

    # --- internals -----------------------------------------------------------

    def _write(self, write: _Write) -> None:
        write(self._live)  # validates the write (gaps raise ValueError)
        self._pending.append(write)

    def _finish(self) -> None:
        """The disk finished the batches due by now, oldest first."""
        self._timer = None
        now = asyncio.get_running_loop().time()
        while self._disk and self._disk[0].done_at <= now:
            batch = self._disk.popleft()
            if self._fail_next or self.failed:
                self._fail_next, self.failed = False, True
                batch.future.set_exception(StorageError("simulated fsync failure"))
                continue
            for write in batch.writes:
                write(self._durable)
            self.syncs += 1
            batch.future.set_result(None)
        if self._disk:
            self._timer = asyncio.get_running_loop().call_at(self._disk[0].done_at, self._finish)
