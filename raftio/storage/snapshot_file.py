"""FileStorage's snapshots: one file each, streamed in and out in chunks.

A snapshot file is wal.py's 36-byte header, then the data. A writer
streams the data into a temporary file behind a placeholder header,
then writes the real header (length, crc32), fsyncs and closes it: a
staged snapshot. FileStorage renames it into place and fsyncs the
directory before the WAL marker that names it can reach the disk, so a
crash never leaves a half-written snapshot in use (recovery deletes
temporary files).

Every system call runs on the loop's default executor, one call per
chunk, so a 1 GiB snapshot costs the event loop about a thousand thread
hand-offs and never more than a chunk of memory. (aiofiles does the
same through three hops per write (write, flush, fsync); see
docs/storage.md for the measurement that retired it.)
"""

from __future__ import annotations

import asyncio
import itertools
import os
import zlib
from collections.abc import Callable
from typing import TypeVar

from raftio.storage import wal
from raftio.storage.base import StorageError
from raftio.storage.snapshot import SnapshotInfo, StagedSnapshot
from raftio.storage.writer import Disk

T = TypeVar("T")

_serial = itertools.count(1)  # temporary names stay unique within a process


class FileSnapshotReader:
    """Reads one snapshot file; the open descriptor keeps it readable after deletion."""

    __slots__ = ("_fd", "_loop", "_path", "info")

    def __init__(self, path: str, info: SnapshotInfo) -> None:
        self._path = path
        self.info = info
        self._loop = asyncio.get_running_loop()
        try:
            self._fd = os.open(path, os.O_RDONLY)
        except OSError as exc:
            raise StorageError(f"{path}: cannot open the snapshot: {exc}") from exc

    async def read(self, offset: int, n: int) -> bytes:
        if self._fd < 0:
            raise StorageError(f"{self._path}: the snapshot reader is closed")
        n = max(0, min(n, self.info.size - offset))
        at = wal.SNAPSHOT_HEADER_SIZE + offset
        try:
            data = await self._loop.run_in_executor(None, _pread_full, self._fd, n, at)
        except OSError as exc:
            raise StorageError(f"{self._path}: snapshot read failed: {exc}") from exc
        if len(data) != n:
            raise StorageError(f"{self._path}: the snapshot ends early, at offset {offset}")
        return data

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _pread_full(fd: int, n: int, offset: int) -> bytes:
    parts = []
    while n > 0:
        part = os.pread(fd, n, offset)
        if not part:
            break
        parts.append(part)
        n -= len(part)
        offset += len(part)
    return b"".join(parts) if len(parts) != 1 else parts[0]


class FileSnapshotWriter:
    """Streams one snapshot into a temporary file in `directory`."""

    __slots__ = (
        "_checksum",
        "_disk",
        "_fd",
        "_lock",
        "_loop",
        "_state",
        "index",
        "path",
        "size",
        "term",
    )

    def __init__(self, directory: str, index: int, term: int, disk: Disk) -> None:
        self.index, self.term = index, term
        self._disk = disk
        self._loop = asyncio.get_running_loop()
        self._lock = asyncio.Lock()  # FIFO: writes land in the order they were made
        name = f"{wal.snapshot_name(index, term)}.{os.getpid()}-{next(_serial)}.tmp"
        self.path = os.path.join(directory, name)
        self.size = 0
        self._checksum = 0
        self._state = "open"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
        try:
            self._fd = disk.open(self.path, flags)
            disk.write(self._fd, bytes(wal.SNAPSHOT_HEADER_SIZE))  # the real one comes last
        except OSError as exc:
            self._fd = -1
            self.abort()
            raise StorageError(f"{self.path}: cannot create a snapshot file: {exc}") from exc

    async def write(self, data: bytes) -> None:
        async with self._lock:
            self._check_open()
            self._checksum = await self._run(_write_crc, self._disk, self._fd, data, self._checksum)
            self.size += len(data)

    async def finish(self) -> StagedSnapshot:
        async with self._lock:
            self._check_open()
            self._state = "finishing"
            header = wal.snapshot_header_for(self.index, self.term, self.size, self._checksum)
            await self._run(_seal, self._disk, self._fd, header)
            os.close(self._fd)
            self._fd = -1
            self._state = "finished"
        return StagedSnapshot(self.index, self.term, self.size, self._checksum, path=self.path)

    def abort(self) -> None:
        """Close and delete the file (a finished one too, if it was never saved)."""
        self._state = "aborted"
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        except OSError:
            pass  # recovery deletes temporary files at the next start

    def _check_open(self) -> None:
        if self._state != "open":
            raise StorageError(f"{self.path}: the snapshot writer is {self._state}")

    async def _run(self, fn: Callable[..., T], *args: object) -> T:
        try:
            return await self._loop.run_in_executor(None, fn, *args)
        except OSError as exc:
            self.abort()
            raise StorageError(f"{self.path}: snapshot write failed: {exc}") from exc


def _write_crc(disk: Disk, fd: int, data: bytes, checksum: int) -> int:
    disk.write(fd, data)
    return zlib.crc32(data, checksum)


def _seal(disk: Disk, fd: int, header: bytes) -> None:
    os.lseek(fd, 0, os.SEEK_SET)
    disk.write(fd, header)
    disk.fdatasync(fd)
