"""MemoryStorage: durable state held in memory, for tests and simulations.

Every write is durable the moment it is made; `copy()` captures exactly
what a crash would keep (CONTRACT.md section 4).
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Sequence

from raftio import codec
from raftio.membership import Configuration
from raftio.messages import Entry
from raftio.storage.base import DurableState
from raftio.storage.snapshot import (
    NO_SNAPSHOT,
    BytesReader,
    BytesWriter,
    SnapshotInfo,
    SnapshotReader,
    SnapshotWriter,
    StagedSnapshot,
)


class MemoryStorage:
    """In-memory Storage with `copy()` (tests restart a peer from a copy)."""

    def __init__(self) -> None:
        self._state = DurableState()
        self._snapshot = b""
        self._info = NO_SNAPSHOT
        self._entry_bytes = 0  # encoded size of the entries, kept current on every write

    def copy(self) -> MemoryStorage:
        """A new MemoryStorage holding the durable state as of now."""
        twin = MemoryStorage()
        twin._state = self.load()
        twin._snapshot = self._snapshot
        twin._info = self._info
        twin._entry_bytes = self._entry_bytes
        return twin

    def load(self) -> DurableState:
        s = self._state
        return DurableState(
            s.current_term,
            s.voted_for,
            s.snapshot_index,
            s.snapshot_term,
            list(s.entries),
            s.snapshot_config,
        )

    def read_snapshot(self) -> bytes:
        return self._snapshot

    def snapshot_info(self) -> SnapshotInfo:
        return self._info

    def open_snapshot(self) -> SnapshotReader | None:
        return BytesReader(self._info, self._snapshot) if self._info.index else None

    def create_snapshot(self, index: int, term: int) -> SnapshotWriter:
        return BytesWriter(index, term)

    def save_hard_state(self, current_term: int, voted_for: int | None) -> None:
        self._state.current_term = current_term
        self._state.voted_for = voted_for

    def append_entries(self, first_index: int, entries: Sequence[Entry]) -> None:
        s = self._state
        offset = first_index - s.snapshot_index - 1
        if offset < 0 or offset > len(s.entries):
            raise ValueError(
                f"append at {first_index} leaves a gap or rewrites the snapshot "
                f"(snapshot_index={s.snapshot_index}, entries={len(s.entries)})"
            )
        self._entry_bytes += _size(entries) - _size(s.entries[offset:])
        del s.entries[offset:]
        s.entries.extend(entries)

    def save_snapshot(
        self,
        index: int,
        term: int,
        data: bytes | StagedSnapshot,
        config: Configuration | None = None,
    ) -> None:
        s = self._state
        if index <= s.snapshot_index:
            return
        drop = index - s.snapshot_index
        self._entry_bytes -= _size(s.entries[:drop])
        s.entries = s.entries[drop:]  # a fresh list: no references to discarded entries
        s.snapshot_index, s.snapshot_term = index, term
        s.snapshot_config = config
        self._snapshot = data.data if isinstance(data, StagedSnapshot) else bytes(data)
        self._info = SnapshotInfo(index, term, len(self._snapshot), zlib.crc32(self._snapshot))

    def sync(self) -> asyncio.Future[None] | None:
        return None

    def raft_state_size(self) -> int:
        s = self._state
        header = codec.pack([s.current_term, s.voted_for, s.snapshot_index, s.snapshot_term])
        return len(header) + self._entry_bytes

    def snapshot_size(self) -> int:
        return self._info.size

    def close(self) -> None:
        """Nothing to release; a killed peer stops writing on its own."""


def _size(entries: Sequence[Entry]) -> int:
    return sum(len(codec.pack([e.term, e.data])) for e in entries)
