"""FileStorage's snapshots: one file each, streamed in and out in chunks.

A snapshot file is wal.py's 36-byte header, then the data. A writer
streams the data into a temporary file behind a placeholder header,
then writes the real header (length, crc32), fsyncs and closes it: a
staged snapshot. FileStorage renames it into place and fsyncs the
directory before the WAL marker that names it can reach the disk, so a
crash never leaves a half-written snapshot in use (recovery deletes
temporary files).

Every system call runs on a small pool of threads of its own, one call
per chunk, so a 1 GiB snapshot costs the event loop about a thousand
thread hand-offs and never more than a chunk of memory. (aiofiles does the
same with more hops per write; docs/storage.md has the measurement that
retired it.)
"""

from __future__ import annotations

import asyncio
import itertools
import os
import threading
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from raftio.storage import wal
from raftio.storage.base import StorageError
from raftio.storage.snapshot import SnapshotInfo, StagedSnapshot
from raftio.storage.writer import Disk

T = TypeVar("T")

_serial = itertools.count(1)  # temporary names stay unique within a process
# Snapshot I/O gets threads of its own: a slow disk cannot starve the loop's default executor.
_POOL = ThreadPoolExecutor(max_workers=4, thread_name_prefix="raftio-snapshot")


class _Descriptor:
    """A file descriptor used from pool threads, closed only between two uses.

    Closing it while a thread still writes through it would let the number be
    reused by the next file opened (a WAL segment, another snapshot) and send
    the late write there. So every use and the close take one lock, in a pool
    thread: `close` waits for the call in progress, then nothing can use it.
    """

    __slots__ = ("_fd", "_lock", "path")

    def __init__(self, fd: int, path: str) -> None:
        self._fd = fd
        self.path = path
        self._lock = threading.Lock()

    def use(self, fn: Callable[..., T], *args: object) -> T:
        with self._lock:
            if self._fd < 0:
                raise StorageError(f"{self.path}: the snapshot file is closed")
            return fn(self._fd, *args)

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1


async def _in_pool(fn: Callable[..., T], *args: object) -> T:
    """Run `fn(*args)` on the snapshot pool; a virtual-clock test loop holds its clock meanwhile."""
    loop = asyncio.get_running_loop()
    started = getattr(loop, "thread_work_started", None)
    if started is not None:
        started()
    job = _POOL.submit(fn, *args)
    finished = getattr(loop, "thread_work_done", None)
    if finished is not None:
        # When the thread is done, not when an awaiting task was cancelled.
        job.add_done_callback(lambda _: _call_soon(loop, finished))
    return await asyncio.wrap_future(job)


def _call_soon(loop: asyncio.AbstractEventLoop, fn: Callable[[], object]) -> None:
    try:
        loop.call_soon_threadsafe(fn)
    except RuntimeError:
        pass  # the loop is closed


class FileSnapshotReader:
    """Reads one snapshot file; the open descriptor keeps it readable after deletion."""

    __slots__ = ("_file", "_path", "info")

    def __init__(self, path: str, info: SnapshotInfo) -> None:
        self._path = path
        self.info = info
        try:
            self._file = _Descriptor(os.open(path, os.O_RDONLY), path)
        except OSError as exc:
            raise StorageError(f"{path}: cannot open the snapshot: {exc}") from exc

    async def read(self, offset: int, n: int) -> bytes:
        n = max(0, min(n, self.info.size - offset))
        at = wal.SNAPSHOT_HEADER_SIZE + offset
        try:
            data: bytes = await _in_pool(self._file.use, _pread_full, n, at)
        except OSError as exc:
            raise StorageError(f"{self._path}: snapshot read failed: {exc}") from exc
        if len(data) != n:
            raise StorageError(f"{self._path}: the snapshot ends early, at offset {offset}")
        return data

    def close(self) -> None:
        _POOL.submit(self._file.close)  # after a read in progress, never during it


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

    __slots__ = ("_checksum", "_disk", "_file", "_lock", "_state", "index", "path", "size", "term")

    def __init__(self, directory: str, index: int, term: int, disk: Disk) -> None:
        self.index, self.term = index, term
        self._disk = disk
        self._lock = asyncio.Lock()  # FIFO: writes land in the order they were made
        name = f"{wal.snapshot_name(index, term)}.{os.getpid()}-{next(_serial)}.tmp"
        self.path = os.path.join(directory, name)
        self.size = 0
        self._checksum = 0
        self._state = "open"
        try:
            fd = disk.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        except OSError as exc:
            raise StorageError(f"{self.path}: cannot create a snapshot file: {exc}") from exc
        self._file = _Descriptor(fd, self.path)
        try:
            disk.write(fd, bytes(wal.SNAPSHOT_HEADER_SIZE))  # the real one comes last
        except OSError as exc:
            self.abort()
            raise StorageError(f"{self.path}: cannot write a snapshot file: {exc}") from exc

    async def write(self, data: bytes) -> None:
        async with self._lock:
            self._check_open()
            disk, crc = self._disk, self._checksum
            checksum: int = await self._run(self._file.use, _write_crc, disk, data, crc)
            self._checksum = checksum
            self.size += len(data)

    async def finish(self) -> StagedSnapshot:
        async with self._lock:
            self._check_open()
            self._state = "finishing"
            header = wal.snapshot_header_for(self.index, self.term, self.size, self._checksum)
            await self._run(self._file.use, _seal, self._disk, header)
            await _in_pool(self._file.close)
            self._state = "finished"
        return StagedSnapshot(self.index, self.term, self.size, self._checksum, path=self.path)

    def abort(self) -> None:
        """Close and delete the file (a finished one too, if it was never saved).

        Both happen on a pool thread, after any write in progress.
        """
        self._state = "aborted"
        _POOL.submit(_close_and_delete, self._file, self.path)

    def _check_open(self) -> None:
        if self._state != "open":
            raise StorageError(f"{self.path}: the snapshot writer is {self._state}")

    async def _run(self, fn: Callable[..., T], *args: object) -> T:
        try:
            return await _in_pool(fn, *args)
        except OSError as exc:
            self.abort()
            raise StorageError(f"{self.path}: snapshot write failed: {exc}") from exc


def _write_crc(fd: int, disk: Disk, data: bytes, checksum: int) -> int:
    disk.write(fd, data)
    return zlib.crc32(data, checksum)


def _seal(fd: int, disk: Disk, header: bytes) -> None:
    os.lseek(fd, 0, os.SEEK_SET)
    disk.write(fd, header)
    disk.fdatasync(fd)


def _close_and_delete(file: _Descriptor, path: str) -> None:
    file.close()
    try:
        os.unlink(path)
    except OSError:
        pass  # gone already, or recovery deletes it at the next start
