"""The Storage protocol: what a Raft peer needs to make its state durable.

Writes are incremental and ordered: `save_hard_state`, `append_entries`
and `save_snapshot` record a change and return at once, in the order the
peer makes them. `sync()` makes every write issued before it durable; a
backend that writes to disk buffers the writes and shares one fsync among
everyone waiting (group commit). The peer never lets a reply or a vote
leave before the state it depends on is durable.

Invariant of the stored log: entries are contiguous, the first one has
index ``snapshot_index + 1``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Protocol

from raftio.membership import Configuration
from raftio.messages import DurableState, Entry
from raftio.storage.snapshot import SnapshotInfo, SnapshotReader, SnapshotWriter, StagedSnapshot

__all__ = ["DurableState", "Storage", "StorageCorruptError", "StorageError"]


class StorageError(Exception):
    """A write or fsync failed, or stored data is unreadable: state cannot be trusted."""


class StorageCorruptError(StorageError):
    """The directory is damaged where it held durable state; the peer must not start.

    The message is one line naming the file and, where there is one, the
    offset: ``<path> at offset <n>: <what is wrong>``.
    """


class Storage(Protocol):
    def load(self) -> DurableState:
        """The durable state as of now (a fresh storage gives an empty peer)."""
        ...

    def read_snapshot(self) -> bytes:
        """The latest snapshot's bytes, b"" if none: whole, in memory (small states only)."""
        ...

    def snapshot_info(self) -> SnapshotInfo:
        """Index, term, size and checksum of the latest snapshot (index 0: none)."""
        ...

    def open_snapshot(self) -> SnapshotReader | None:
        """A reader of the latest snapshot, in chunks; None if there is none."""
        ...

    def create_snapshot(self, index: int, term: int) -> SnapshotWriter:
        """A writer that stages a snapshot through `index` for `save_snapshot`."""
        ...

    def save_hard_state(self, current_term: int, voted_for: int | None) -> None:
        """Record the current term and vote."""
        ...

    def append_entries(self, first_index: int, entries: Sequence[Entry]) -> None:
        """Replace the log from `first_index` on with `entries`.

        Any stored entry at or after `first_index` is discarded first, so an
        empty `entries` truncates the log. `first_index` is at most one past
        the last stored index.
        """
        ...

    def save_snapshot(
        self,
        index: int,
        term: int,
        data: bytes | StagedSnapshot,
        config: Configuration | None = None,
    ) -> None:
        """Store a snapshot covering the log through `index` (whose term is `term`).

        `data` is the snapshot's bytes, or a snapshot staged through
        `create_snapshot` (which this takes over: used, or discarded if
        `index` is not newer than the current snapshot).

        `config` is the cluster configuration in effect at `index`; `load()`
        returns it as `snapshot_config`.

        Entries at or before `index` are discarded; later ones are kept. If
        `index` is past the last stored entry the log becomes empty.
        """
        ...

    def sync(self) -> asyncio.Future[None] | None:
        """Make every write issued so far durable.

        Returns None when everything is durable already, else a future that
        resolves once it is (or fails with StorageError).
        """
        ...

    def raft_state_size(self) -> int:
        """Encoded bytes of term, vote and the entries after the snapshot."""
        ...

    def snapshot_size(self) -> int: ...

    def close(self) -> None:
        """Release the storage (files, locks). Pending writes may be lost, as in a crash."""
        ...
