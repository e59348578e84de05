"""The shell's half of chunked InstallSnapshot: moving snapshot bytes.

The core decides which chunk goes where and what a received chunk means
(raftio/core_snapshots.py); these drivers do the I/O around it:

- `ChunkPump` (leader): the core's chunks come without data; the pump reads
  each one from storage and sends it, in order per follower. At most
  `snapshot_chunks_inflight` chunks per follower are in memory at once.
- `Staging` (follower): the one snapshot being received, written chunk by
  chunk into a staged file through `Storage.create_snapshot`.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any

from raftio.messages import InstallSnapshotArgs
from raftio.snapshot_transfer import TransferKey
from raftio.storage.base import Storage
from raftio.storage.snapshot import SnapshotReader, SnapshotWriter


class ChunkPump:
    """Fills the core's InstallSnapshot chunks from storage and sends them, in order per peer."""

    def __init__(
        self,
        storage: Storage,
        chunk_length: Callable[[InstallSnapshotArgs], int],
        send: Callable[[int, InstallSnapshotArgs], None],
        lost: Callable[[int, InstallSnapshotArgs], None],
        spawn: Callable[[Coroutine[Any, Any, None], str], None],
    ) -> None:
        self._storage = storage
        self._chunk_length = chunk_length
        self._send = send  # sends a filled chunk
        self._lost = lost  # a chunk that cannot be read (its snapshot was replaced)
        self._spawn = spawn
        self._queues: dict[int, deque[InstallSnapshotArgs]] = {}
        self._pumping: set[int] = set()
        self._readers: dict[int, SnapshotReader] = {}

    def push(self, peer: int, args: InstallSnapshotArgs) -> None:
        self._queues.setdefault(peer, deque()).append(args)
        if peer not in self._pumping:
            self._pumping.add(peer)
            self._spawn(self._pump(peer), f"snapshot-to-S{peer}")

    async def _pump(self, peer: int) -> None:
        queue = self._queues[peer]
        try:
            while queue:
                args = queue.popleft()
                reader = self._reader(peer, args)
                if reader is None:
                    self._lost(peer, args)
                    continue
                data = await reader.read(args.offset, self._chunk_length(args))
                self._send(peer, dataclasses.replace(args, data=data))
        finally:
            self._pumping.discard(peer)

    def _reader(self, peer: int, args: InstallSnapshotArgs) -> SnapshotReader | None:
        """A reader of the chunk's snapshot, kept open for the whole transfer."""
        want = (args.last_included_index, args.last_included_term)
        reader = self._readers.get(peer)
        if reader is not None and (reader.info.index, reader.info.term) == want:
            return reader
        if reader is not None:
            reader.close()
            del self._readers[peer]
        reader = self._storage.open_snapshot()
        if reader is None:
            return None
        if (reader.info.index, reader.info.term) != want:
            reader.close()
            return None  # replaced since the core asked: it starts over with the new one
        self._readers[peer] = reader
        return reader

    def done_with(self, peer: int) -> None:
        """`peer` needs no snapshot now: release its reader."""
        reader = self._readers.pop(peer, None)
        if reader is not None:
            reader.close()

    def close(self) -> None:
        for reader in self._readers.values():
            reader.close()
        self._readers.clear()
        self._queues.clear()


class Staging:
    """The snapshot a follower is receiving, as a staged file (at most one)."""

    def __init__(self, storage: Storage) -> None:
        self._storage = storage
        self.key: TransferKey | None = None
        self._writer: SnapshotWriter | None = None

    def writer_for(self, key: TransferKey, offset: int) -> SnapshotWriter | None:
        """The writer of `key`'s transfer; its first chunk starts one and drops any other."""
        if self.key == key:
            return self._writer
        if offset != 0:
            return None  # that transfer was dropped here (superseded, or it failed)
        self.abort()
        self._writer = self._storage.create_snapshot(key.index, key.snapshot_term)
        self.key = key
        return self._writer

    def release(self, key: TransferKey) -> None:
        """`key`'s writer finished: what it staged is the caller's now."""
        if self.key == key:
            self.key, self._writer = None, None

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.abort()
        self.key, self._writer = None, None
