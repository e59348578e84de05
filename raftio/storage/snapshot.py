"""Snapshots as streams: what a storage hands out to read one and to write one.

A snapshot of any size never has to sit in memory whole. The leader reads
it in chunks to send (`SnapshotReader`), a follower writes the chunks it
receives into a staged file (`SnapshotWriter`), and so does a state
machine that streams its snapshot. A staged snapshot becomes the current
one only through `Storage.save_snapshot(index, term, staged, config)`.

MemoryStorage's snapshots are bytes (`BytesReader`, `BytesWriter`);
FileStorage's are files (raftio.storage.snapshot_file).
"""

from __future__ import annotations

import os
import zlib
from typing import Protocol

from raftio.messages import NO_SNAPSHOT, SnapshotInfo, StagedSnapshot

__all__ = [
    "NO_SNAPSHOT",
    "BytesReader",
    "BytesWriter",
    "SnapshotInfo",
    "SnapshotReader",
    "SnapshotWriter",
    "StagedSnapshot",
]


class SnapshotReader(Protocol):
    """Reads one snapshot; keeps reading it even after a newer one replaces it."""

    @property
    def info(self) -> SnapshotInfo: ...

    async def read(self, offset: int, n: int) -> bytes:
        """Up to `n` bytes at `offset` (fewer only at the end)."""
        ...

    def close(self) -> None: ...


class SnapshotWriter(Protocol):
    """Writes one snapshot, front to back; nothing is in use until it is saved."""

    @property
    def size(self) -> int:
        """Bytes written so far."""
        ...

    async def write(self, data: bytes) -> None:
        """Append `data`. Calls complete in the order they are made."""
        ...

    async def finish(self) -> StagedSnapshot:
        """Make what was written durable and return it, ready for `save_snapshot`."""
        ...

    def abort(self) -> None:
        """Discard what was written (safe to call at any time, more than once)."""
        ...


class BytesReader:
    """A snapshot held in memory."""

    __slots__ = ("_data", "info")

    def __init__(self, info: SnapshotInfo, data: bytes) -> None:
        self.info = info
        self._data = data

    async def read(self, offset: int, n: int) -> bytes:
        return self._data[offset : offset + n]

    def close(self) -> None:
        self._data = b""


class BytesWriter:
    """Collects a snapshot in memory (MemoryStorage)."""

    __slots__ = ("_checksum", "_chunks", "_done", "index", "size", "term")

    def __init__(self, index: int, term: int) -> None:
        self.index, self.term = index, term
        self._chunks: list[bytes] = []
        self._checksum = 0
        self.size = 0
        self._done = False

    async def write(self, data: bytes) -> None:
        if self._done:
            raise ValueError("the snapshot writer is finished or aborted")
        data = bytes(data)
        self._chunks.append(data)
        self._checksum = zlib.crc32(data, self._checksum)
        self.size += len(data)

    async def finish(self) -> StagedSnapshot:
        if self._done:
            raise ValueError("the snapshot writer is finished or aborted")
        self._done = True
        data = b"".join(self._chunks)
        self._chunks = []
        return StagedSnapshot(self.index, self.term, self.size, self._checksum, data=data)

    def abort(self) -> None:
        self._done = True
        self._chunks = []


async def read_all(reader: SnapshotReader, chunk: int = 1 << 20) -> bytes:
    """A whole snapshot in memory (the bytes API: small states and the Lab contract)."""
    parts, offset, size = [], 0, reader.info.size
    while offset < size:
        part = await reader.read(offset, min(chunk, size - offset))
        parts.append(part)
        offset += len(part)
    return b"".join(parts)


def staged_bytes(staged: StagedSnapshot) -> bytes:
    """A staged snapshot's data, whole (to validate it with a bytes-API state machine)."""
    if not staged.path:
        return staged.data
    from raftio.storage.wal import SNAPSHOT_HEADER_SIZE

    with open(staged.path, "rb") as f:
        f.seek(SNAPSHOT_HEADER_SIZE)
        return f.read()


def discard_staged(staged: StagedSnapshot) -> None:
    """Delete a staged snapshot that will not be used (recovery would, at the next start)."""
    if staged.path:
        try:
            os.unlink(staged.path)
        except OSError:
            pass
