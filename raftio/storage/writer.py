"""The WAL writer: the system calls that append, sync, roll and compact segments.

Runs on FileStorage's worker thread (and once, synchronously, while a
fresh directory is opened); never on the event loop. `Disk` is the seam
where tests inject failing or slow writes and fsyncs. What the bytes mean
is `wal.py`'s business.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

from raftio.storage import manifest, wal
from raftio.storage.base import StorageError
from raftio.storage.manifest import Mark
from raftio.storage.wal import Checkpoint

logger = logging.getLogger(__name__)

# Segments grow by this much at a time, ahead of their records.
PREALLOCATE_BYTES = 1 << 20


class Disk:
    """The system calls that change the directory; tests subclass it to inject faults.

    Every fsync FileStorage makes, and every write, create, rename and delete
    of the writer, goes through one of these methods, so a test can fail or
    stall any single step (a crash between two steps is a failure at the second).
    """

    def open(self, path: str, flags: int) -> int:
        return os.open(path, flags, 0o644)

    def write(self, fd: int, data: bytes | bytearray) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]

    def fdatasync(self, fd: int) -> None:
        os.fdatasync(fd)

    def fsync(self, fd: int) -> None:
        os.fsync(fd)

    def preallocate(self, fd: int, offset: int, length: int) -> None:
        os.posix_fallocate(fd, offset, length)

    def truncate(self, fd: int, size: int) -> None:
        os.ftruncate(fd, size)

    def fsync_dir(self, fd: int) -> None:
        os.fsync(fd)

    def rename(self, src: str, dst: str) -> None:
        os.rename(src, dst)

    def unlink(self, path: str) -> None:
        os.unlink(path)


@dataclass(slots=True, frozen=True)
class SnapshotFile:
    """A snapshot to write durably before the marker that follows it in a batch."""

    name: str
    index: int
    term: int
    data: bytes | None  # None: already written and fsynced, under the name `staged`
    staged: str = ""


class Closed(Exception):
    """The storage was closed while a batch was being written."""


class WalWriter:
    """Appends to the newest segment, rolls, compacts. Used by one thread at a time.

    `close()` may come from another thread: every mutating system call runs
    under `_lock` after checking `_closed`, so nothing touches the directory
    once close() returns and the LOCK is released.
    """

    def __init__(
        self,
        directory: str,
        disk: Disk,
        segment_size: int,
        segments: list[int],
        sizes: list[int],
        mark: Mark | None,
    ) -> None:
        """Continue the segments `segments` (sizes in bytes); none: call start_first_segment.

        `mark` is the MANIFEST's newest mark; None: there is no MANIFEST yet
        (call create_manifest first).
        """
        self.directory = directory
        self.disk = disk
        self.segment_size = segment_size
        self.fsync_count = 0
        self._segments = segments  # live seqs, the oldest starts with a checkpoint
        self._size = sizes[-1] if sizes else 0  # bytes of records in the newest segment
        self.wal_bytes = sum(sizes)
        self._lock = threading.Lock()
        self._closed = False
        self._preallocating = True
        self._dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        self._fd = -1
        self._allocated = 0  # the newest segment's file size (records, then zeros)
        # Bytes of the newest segment known fdatasynced, and the most that a
        # watermark (MANIFEST or record) already claims: see docs/storage.md.
        # Invariant: _marked <= _synced <= _size.
        self._synced = self._marked = self._size
        self._mark = mark or Mark(0, 0, 0)  # the newest mark written to MANIFEST
        self._manifest_fd = -1
        if mark is not None:
            path = manifest.path_in(directory)
            self._manifest_fd = self._do("open", path, partial(disk.open, path, os.O_WRONLY))
        if segments:
            # Continue after the last record; zeros after it are preallocated space.
            path = self._path(segments[-1])
            self._fd = self._do("open", path, partial(disk.open, path, os.O_WRONLY))
            os.lseek(self._fd, self._size, os.SEEK_SET)
            self._allocated = os.fstat(self._fd).st_size

    def _path(self, name: int | str) -> str:
        return os.path.join(
            self.directory, wal.segment_name(name) if isinstance(name, int) else name
        )

    def _do(self, what: str, path: str, call: Callable[[], Any]) -> Any:
        with self._lock:
            if self._closed:
                raise Closed
            try:
                return call()
            except OSError as exc:
                raise StorageError(f"{what} {path} failed: {exc}") from exc

    def _sync(self, fd: int, path: str, *, directory: bool = False, metadata: bool = False) -> None:
        if self._closed:
            raise Closed
        self.fsync_count += 1
        if directory:
            sync = self.disk.fsync_dir
        else:
            sync = self.disk.fsync if metadata else self.disk.fdatasync
        try:
            sync(fd)
        except OSError as exc:
            raise StorageError(f"fsync of {path} failed: {exc}") from exc

    def write_batch(
        self, items: Sequence[bytearray | SnapshotFile], checkpoint: Checkpoint | None, keep: str
    ) -> int:
        """Write one group-commit batch durably; return the bytes in live segments.

        A snapshot file is durable (fsync, rename, directory fsync) before
        the marker after it is written. With a `checkpoint` the state starts
        over in a new segment and older segments go; `keep` names the
        snapshot file that the state refers to (others are deleted).
        """
        path = self._path(self._segments[-1])
        snapshots = False
        # What the last batch's fdatasync made durable, proven by this batch's records.
        mark = wal.frame(wal.watermark_body(self._synced)) if self._synced > self._marked else b""
        self._reserve(path, len(mark) + sum(len(i) for i in items if isinstance(i, bytearray)))
        if mark:
            self._do("write to", path, partial(self.disk.write, self._fd, mark))
            self._size += len(mark)
            self.wal_bytes += len(mark)
            self._marked = self._synced
        for item in items:
            if isinstance(item, SnapshotFile):
                self._write_snapshot(item)
                snapshots = True
            else:
                self._do("write to", path, partial(self.disk.write, self._fd, item))
                self._size += len(item)
                self.wal_bytes += len(item)
        self._sync(self._fd, path)
        self._synced = self._size
        if checkpoint is not None:
            self._start_segment(
                wal.encode_checkpoint(replace(checkpoint, seq=self._segments[-1] + 1))
            )
            self._delete_old_segments()
        elif self._size >= self.segment_size:
            self._start_segment(wal.encode_segment_start(self._segments[-1] + 1, self._size))
        if snapshots or checkpoint is not None:
            self._delete_snapshots(keep)
        return self.wal_bytes

    def _reserve(self, path: str, size: int) -> None:
        """Preallocate the newest segment past `size` more bytes of records.

        Overwriting allocated blocks lets fdatasync skip the journal commit
        that a growing file size needs: about 30% off each sync here.
        Preallocation is only an optimisation; where the file system cannot
        do it, records are appended as they come.
        """
        if not self._preallocating or self._size + size <= self._allocated:
            return
        want = max(self._size + size, self._allocated) + PREALLOCATE_BYTES
        try:
            self._do_raw(
                lambda: self.disk.preallocate(self._fd, self._allocated, want - self._allocated)
            )
        except OSError as exc:
            logger.info("%s: not preallocating segments (%s)", path, exc)
            self._preallocating = False
            return
        self._allocated = want

    def _do_raw(self, call: Callable[[], Any]) -> Any:
        with self._lock:
            if self._closed:
                raise Closed
            return call()

    def start_first_segment(self, checkpoint: bytes) -> None:
        """Write the first segment of a fresh directory (before any other)."""
        self._start_segment(checkpoint)

    def _start_segment(self, first_record: bytes) -> None:
        if self._fd >= 0 and self._allocated > self._size:
            # Only the newest segment may end in zeros: cut the old one to its records.
            old_path = self._path(self._segments[-1])
            self._do("truncate", old_path, partial(self.disk.truncate, self._fd, self._size))
            self._sync(self._fd, old_path, metadata=True)
        seq = self._segments[-1] + 1 if self._segments else 1
        path = self._path(seq)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
        fd = self._do("create", path, partial(self.disk.open, path, flags))
        self._do("write to", path, partial(self.disk.write, fd, first_record))
        allocated = len(first_record)
        if self._preallocating:
            try:
                self._do_raw(lambda: self.disk.preallocate(fd, 0, PREALLOCATE_BYTES))
                allocated = max(allocated, PREALLOCATE_BYTES)
            except OSError as exc:
                logger.info("%s: not preallocating segments (%s)", path, exc)
                self._preallocating = False
        self._sync(fd, path, metadata=True)
        self._sync(self._dir_fd, self.directory, directory=True)
        old, self._fd = self._fd, fd
        if old >= 0:
            os.close(old)
        self._segments.append(seq)
        self._allocated = allocated
        self._size = self._synced = self._marked = len(first_record)
        self.wal_bytes += len(first_record)
        # Before anything older goes: a lost newest segment is then detected.
        self.write_manifest()

    def create_manifest(self) -> None:
        """Write a new MANIFEST (nothing durable yet) durably: tmp file, fsync, rename."""
        path = manifest.path_in(self.directory)
        tmp = path + ".tmp"
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
        fd = self._do("create", tmp, partial(self.disk.open, tmp, flags))
        try:
            self._do("write to", tmp, partial(self.disk.write, fd, manifest.empty_file()))
            self._sync(fd, tmp)
        finally:
            os.close(fd)
        self._do("rename", tmp, partial(self.disk.rename, tmp, path))
        self._sync(self._dir_fd, self.directory, directory=True)
        self._manifest_fd = self._do("open", path, partial(self.disk.open, path, os.O_WRONLY))
        self._mark = Mark(1, 0, 0)

    def write_manifest(self, *, force: bool = False) -> bool:
        """Record in MANIFEST how far the newest segment is durable; False if it says so already.

        One slot write and one fdatasync. Called after a roll, and lazily
        once the storage is idle: records of later batches carry watermark
        records, so the MANIFEST need not follow every group commit.
        `force` rewrites it anyway (over a damaged slot).
        """
        seq = self._segments[-1] if self._segments else 0
        if (seq, self._synced) == (self._mark.seq, self._mark.offset) and not force:
            return False
        mark = Mark(self._mark.generation + 1, seq, self._synced)
        path = manifest.path_in(self.directory)
        fd = self._manifest_fd
        self._do("seek in", path, partial(os.lseek, fd, manifest.slot_offset(mark.generation), 0))
        self._do("write to", path, partial(self.disk.write, fd, manifest.encode_slot(mark)))
        self._sync(fd, path)
        self._mark = mark
        self._marked = max(self._marked, self._synced)
        return True

    def sync_newest(self) -> None:
        """fdatasync the newest segment: what recovery read from the page cache becomes durable."""
        path = self._path(self._segments[-1])
        self._sync(self._fd, path)
        self._synced = self._size

    def _delete_old_segments(self) -> None:
        # The new checkpoint segment is durable: replay never needs older ones.
        for seq in self._segments[:-1]:
            path = self._path(seq)
            self._do("delete", path, partial(self.disk.unlink, path))
        del self._segments[:-1]
        self.wal_bytes = self._size

    def _write_snapshot(self, snap: SnapshotFile) -> None:
        path = self._path(snap.name)
        if snap.data is None:  # streamed: durable already, needs only its name
            self._do("rename", snap.staged, partial(self.disk.rename, snap.staged, path))
            self._sync(self._dir_fd, self.directory, directory=True)
            return
        tmp = path + ".tmp"
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
        fd = self._do("create", tmp, partial(self.disk.open, tmp, flags))
        try:
            head = wal.snapshot_header(snap.index, snap.term, snap.data)
            self._do("write to", tmp, partial(self.disk.write, fd, head))
            self._do("write to", tmp, partial(self.disk.write, fd, snap.data))
            self._sync(fd, tmp)
        finally:
            os.close(fd)
        self._do("rename", tmp, partial(self.disk.rename, tmp, path))
        self._sync(self._dir_fd, self.directory, directory=True)

    def _delete_snapshots(self, keep: str) -> None:
        # Runs after the marker naming `keep` is durable, so older files are garbage.
        for name in wal.list_directory(self.directory).snapshots:
            if name != keep:
                path = self._path(name)
                self._do("delete", path, partial(self.disk.unlink, path))

    def close(self) -> None:
        """Stop all further writes (waits for a write in progress), close the files."""
        with self._lock:
            self._closed = True
            for fd in (self._fd, self._dir_fd, self._manifest_fd):
                if fd >= 0:
                    os.close(fd)
            self._fd = self._dir_fd = self._manifest_fd = -1
