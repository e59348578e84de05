"""FileStorage: durable Storage in a directory, a write-ahead log with group commit.

Owns the event-loop side: the write buffer, group commit (loop callbacks
that hand one batch at a time to `worker.py`'s thread), failure handling,
instrumentation and the fault hooks. The file format is `wal.py`'s, the
system calls `writer.py`'s, the in-memory state and opening `recovery.py`'s. See
docs/storage.md for the files and the crash story.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

from raftio import codec
from raftio.membership import Configuration, encode_configuration
from raftio.messages import Entry
from raftio.storage import manifest, wal
from raftio.storage.base import DurableState, StorageCorruptError, StorageError
from raftio.storage.recovery import StorageLockedError, lock_directory, make_directory, recover
from raftio.storage.snapshot import (
    BytesReader,
    SnapshotInfo,
    SnapshotReader,
    SnapshotWriter,
    StagedSnapshot,
    discard_staged,
)
from raftio.storage.snapshot_file import FileSnapshotReader, FileSnapshotWriter
from raftio.storage.wal import Checkpoint
from raftio.storage.worker import WorkerThread
from raftio.storage.writer import Closed, Disk, SnapshotFile

__all__ = ["Disk", "FileStorage", "StorageCorruptError", "StorageLockedError", "holds_state"]

logger = logging.getLogger(__name__)

_EAGER_FLUSH_BYTES = 4 << 20  # start writing without a sync() once this much is buffered


@dataclass(slots=True)
class _Batch:
    """One group commit: the writes it carries and who waits for them."""

    items: list[bytearray | SnapshotFile]
    version: int  # written_version when the batch was closed
    waiters: list[asyncio.Future[None]]
    checkpoint: Checkpoint | None
    keep: str  # the snapshot file the state refers to after this batch


class FileStorage:
    """Storage in a directory: write-ahead log segments, snapshot files, group commit.

    Writes update memory at once and append framed records to a buffer;
    `sync()` hands the buffer to a worker thread (write, fdatasync) and
    every waiter that arrived before the batch started shares its fsync.
    A failed write or fsync fails that sync and every later one.

    Args:
        directory: where the state lives; created if missing. Only one
            FileStorage may have it open at a time (a LOCK file).
        segment_size: start a new segment file once one reaches this size.
        compact_min_bytes: after a snapshot, rewrite the live state into a
            new segment (deleting the old ones) once the log holds more than
            this many bytes and more than twice the live state.
        disk: the write and fsync calls; tests pass a subclass that fails.
        sync_delay: seconds (event-loop clock) each batch waits before it
            is written, to model a slow disk; may be changed at any time.
        watermark_delay: seconds (event-loop clock) of idleness after a
            group commit before the MANIFEST records it as durable (one
            fdatasync per idle period; under load each batch's records
            carry the previous batch's watermark instead). None: only on
            segment rolls and at close.

    Raises:
        StorageLockedError: the directory is open elsewhere.
        StorageCorruptError: the directory is damaged where it held durable
            state (below the durable watermark, or contradicting itself); the
            message names the file and offset.
        StorageError: opening failed otherwise.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        segment_size: int = 64 << 20,
        compact_min_bytes: int = 1 << 20,
        disk: Disk | None = None,
        sync_delay: float = 0.0,
        watermark_delay: float | None = 0.05,
    ) -> None:
        self.directory = os.fspath(directory)
        self.sync_delay = sync_delay
        self.watermark_delay = watermark_delay
        self._watermark_timer: asyncio.TimerHandle | None = None
        self._last_commit = 0.0  # loop time of the last group commit
        self._compact_min_bytes = compact_min_bytes
        disk = disk or Disk()
        make_directory(self.directory, disk)
        self._lock_fd = lock_directory(self.directory)
        try:
            self._state, self._snapshot, self._writer = recover(self.directory, disk, segment_size)
            self._disk = disk
        except BaseException:
            os.close(self._lock_fd)
            raise
        self._wal_bytes = self._writer.wal_bytes
        self._buf = bytearray()
        self._items: list[bytearray | SnapshotFile] = []
        # The current snapshot while its file is not yet in place (a batch writes it).
        self._pending: SnapshotFile | None = None
        self._next_waiters: list[asyncio.Future[None]] = []
        self._inflight: _Batch | None = None
        self._flushing = False  # a batch is being written, or waits out sync_delay
        self._delay_served = False  # the next batch has waited sync_delay (then was paused)
        self._worker = WorkerThread("raftio-wal")
        self._resumed = True
        self._error: StorageError | None = None
        self._closed = False
        # Invariant: durable_version <= written_version; equal means nothing to sync.
        self.written_version = 0
        self.durable_version = 0

    def __repr__(self) -> str:
        return f"FileStorage({self.directory!r})"

    # --- reads ------------------------------------------------------------

    def load(self) -> DurableState:
        return self._state.durable_state()

    def read_snapshot(self) -> bytes:
        """The current snapshot's data, whole (small states and the Lab API only)."""
        pending = self._pending
        if pending is not None and pending.data is not None:
            return pending.data
        if not self._snapshot.index:
            return b""
        path = os.path.join(self.directory, self._state.snapshot_file)
        if pending is not None and os.path.exists(pending.staged):
            path = pending.staged
        return wal.read_snapshot_file(path, self._snapshot.index, self._snapshot.term)

    def snapshot_info(self) -> SnapshotInfo:
        return self._snapshot

    def open_snapshot(self) -> SnapshotReader | None:
        """A reader of the current snapshot (None if there is none yet)."""
        info = self._snapshot
        if not info.index:
            return None
        pending = self._pending
        if pending is not None and pending.data is not None:
            return BytesReader(info, pending.data)
        path = os.path.join(self.directory, self._state.snapshot_file)
        if pending is not None:
            try:  # still under its staged name, unless the batch just renamed it
                return FileSnapshotReader(pending.staged, info)
            except StorageError:
                pass
        return FileSnapshotReader(path, info)

    def create_snapshot(self, index: int, term: int) -> SnapshotWriter:
        """A writer for a snapshot through `index`, to stage and then `save_snapshot`."""
        self._check_usable()
        return FileSnapshotWriter(self.directory, index, term, self._disk)

    def raft_state_size(self) -> int:
        s = self._state
        header = codec.pack([s.current_term, s.voted_for, s.snapshot_index, s.snapshot_term])
        return len(header) + s.entries_size()

    def snapshot_size(self) -> int:
        return self._snapshot.size

    @property
    def fsync_count(self) -> int:
        """fsync/fdatasync calls made since opening (files and directories)."""
        return self._writer.fsync_count

    @property
    def failed(self) -> StorageError | None:
        """Why the storage stopped accepting writes, or None while it is healthy."""
        return self._error

    # --- writes -----------------------------------------------------------

    def save_hard_state(self, current_term: int, voted_for: int | None) -> None:
        self._check_usable()
        self._state.current_term, self._state.voted_for = current_term, voted_for
        self._append(wal.hard_state_body(current_term, voted_for))

    def append_entries(self, first_index: int, entries: Sequence[Entry]) -> None:
        self._check_usable()
        truncates = first_index <= self._state.last_index
        self._state.append(first_index, entries)
        if entries:
            self._append(wal.entries_body(first_index, entries))
        elif truncates:
            self._append(wal.truncate_body(first_index))

    def save_snapshot(
        self,
        index: int,
        term: int,
        data: bytes | StagedSnapshot,
        config: Configuration | None = None,
    ) -> None:
        self._check_usable()
        name = wal.snapshot_name(index, term)
        encoded = encode_configuration(config) if config is not None else b""
        if isinstance(data, StagedSnapshot) and (data.index, data.term) != (index, term):
            discard_staged(data)
            raise ValueError(f"staged snapshot {data.index}@T{data.term} saved as {index}@T{term}")
        if index <= self._state.snapshot_index:  # not newer: nothing changes
            if isinstance(data, StagedSnapshot):
                discard_staged(data)
            return
        if isinstance(data, StagedSnapshot):
            info = data.info
            snapshot = SnapshotFile(name, index, term, None, data.path)
        else:
            blob = bytes(data)
            info = SnapshotInfo(index, term, len(blob), zlib.crc32(blob))
            snapshot = SnapshotFile(name, index, term, blob)
        self._state.compact(index, term, name, encoded, info.checksum)
        self._snapshot = info
        self._pending = snapshot
        for i, item in enumerate(self._items):
            if isinstance(item, SnapshotFile):
                # A batch writes only its newest snapshot, in the place of the
                # first: its file is durable before any of the batch's markers.
                # Older markers name files never written; they lie past the
                # durable watermark until the batch is synced, and recovery cuts
                # the log before them if a crash comes first.
                if item.staged:  # superseded before its batch ran: never used
                    with contextlib.suppress(OSError):
                        os.unlink(item.staged)
                self._items[i] = snapshot
                break
        else:
            # The snapshot file must be durable before its marker can reach the disk.
            if self._buf:
                self._items.append(self._buf)
                self._buf = bytearray()
            self._items.append(snapshot)
        self._append(wal.snapshot_mark_body(index, term, name, encoded, info.checksum))

    def _check_usable(self) -> None:
        if self._error is None and not self._closed:
            return
        if self._closed:
            raise StorageError(f"{self.directory}: storage is closed")
        if self._error is not None:
            raise StorageError(f"{self.directory}: storage failed earlier: {self._error}")

    def _append(self, body: bytes) -> None:
        self.written_version += 1
        wal.frame_into(self._buf, body)
        if len(self._buf) >= _EAGER_FLUSH_BYTES and not self._flushing:
            try:
                asyncio.get_running_loop()
            except RuntimeError:
                return  # no loop yet: the first sync() writes it
            self._kick()

    # --- group commit -----------------------------------------------------

    def sync(self) -> asyncio.Future[None] | None:
        """A future for every write so far being durable; None if they are already."""
        if self._closed or self._error is not None:
            return _failed_future(self._error or StorageError(f"{self.directory} is closed"))
        if self.durable_version == self.written_version:
            return None
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._buf or self._items:
            self._next_waiters.append(fut)
            self._kick()
        else:
            # Everything written is in the batch being written now.
            assert self._inflight is not None
            self._inflight.waiters.append(fut)
        return fut

    def pause_syncs(self) -> None:
        """Hold every batch not yet started until resume_syncs() (a stalled disk)."""
        self._resumed = False

    def resume_syncs(self) -> None:
        self._resumed = True
        if not self._closed:
            self._kick()
            if not self._flushing:
                self._arm_watermark()

    def _kick(self) -> None:
        """Start writing the buffered records unless a batch is already on its way."""
        if self._flushing or self._error is not None or self._closed:
            return
        if not (self._buf or self._items):
            return
        if not self._resumed:
            return  # resume_syncs() kicks
        self._flushing = True
        loop = asyncio.get_running_loop()
        if self.sync_delay > 0 and not self._delay_served:
            loop.call_later(self.sync_delay, self._launch)
        else:
            # After the callbacks already queued: writes made in this loop
            # iteration (a burst of AppendEntries) share one fsync.
            loop.call_soon(self._launch)

    def _launch(self) -> None:
        if self._error is not None or self._closed:
            self._flushing = False
            return
        if not self._resumed:
            self._flushing = False  # paused during the delay: resume_syncs() kicks
            self._delay_served = True  # and the batch goes at once then
            return
        self._delay_served = False
        batch = self._inflight = self._take_batch()
        writer = self._writer
        self._worker.submit(
            lambda: writer.write_batch(batch.items, batch.checkpoint, batch.keep),
            lambda result, error: self._batch_written(batch, result, error),
        )

    def _batch_written(self, batch: _Batch, wal_bytes: int, error: BaseException | None) -> None:
        """On the loop, once the worker has written and synced `batch` (or failed)."""
        self._flushing = False
        if self._closed or isinstance(error, Closed):
            return
        if error is not None:
            self._fail(error if isinstance(error, Exception) else RuntimeError(repr(error)))
            return
        self._wal_bytes = wal_bytes
        self._inflight = None
        if self._pending is not None and any(item is self._pending for item in batch.items):
            self._pending = None  # its file is in place now
        self._last_commit = asyncio.get_running_loop().time()
        self.durable_version = batch.version
        for fut in batch.waiters:
            if not fut.done():
                fut.set_result(None)
        self._kick()  # what was written meanwhile: the next group commit
        if not self._flushing:
            self._arm_watermark()

    # --- the durable watermark ----------------------------------------------

    def _arm_watermark(self) -> None:
        if self._watermark_timer is None and self.watermark_delay is not None:
            loop = asyncio.get_running_loop()
            self._watermark_timer = loop.call_later(self.watermark_delay, self._write_watermark)

    def _write_watermark(self) -> None:
        """Idle since the last group commit: record it in the MANIFEST (off the hot path)."""
        self._watermark_timer = None
        if self._flushing or self._error is not None or self._closed or not self._resumed:
            return  # the next batch's end re-arms the timer
        assert self.watermark_delay is not None  # the timer is armed only with a delay
        loop = asyncio.get_running_loop()
        due = self._last_commit + self.watermark_delay
        if loop.time() < due - 1e-3:  # batches kept coming: their records carry it
            # An absolute deadline with a tolerance: a relative one can shrink
            # below the clock's float resolution and fire forever.
            self._watermark_timer = loop.call_at(due, self._write_watermark)
            return
        self._flushing = True  # batches wait for this one fdatasync
        self._worker.submit(self._writer.write_manifest, self._watermark_written)

    def _watermark_written(self, _wrote: object, error: BaseException | None) -> None:
        self._flushing = False
        if self._closed or isinstance(error, Closed):
            return
        if error is not None:
            self._fail(error if isinstance(error, Exception) else RuntimeError(repr(error)))
            return
        self._kick()

    def _take_batch(self) -> _Batch:
        items = self._items
        if self._buf:
            items.append(self._buf)
        self._items, self._buf = [], bytearray()
        checkpoint = self._state.checkpoint() if self._compaction_due(items) else None
        waiters, self._next_waiters = self._next_waiters, []
        return _Batch(items, self.written_version, waiters, checkpoint, self._state.snapshot_file)

    def _compaction_due(self, items: list[bytearray | SnapshotFile]) -> bool:
        """After a snapshot, rewrite the live state once most of the log is dead."""
        if not any(isinstance(item, SnapshotFile) for item in items):
            return False
        log_bytes = self._wal_bytes + sum(len(i) for i in items if isinstance(i, bytearray))
        return log_bytes > max(self._compact_min_bytes, 2 * self.raft_state_size())

    def _fail(self, exc: Exception) -> None:
        if isinstance(exc, StorageError):
            self._error = exc
        else:
            self._error = StorageError(f"{self.directory}: writing failed: {exc!r}")
            self._error.__cause__ = exc
        logger.error(
            "FileStorage %s failed, every later sync fails: %s", self.directory, exc,
            exc_info=not isinstance(exc, StorageError),
        )  # fmt: skip
        self._reject_waiters(self._error)

    def _reject_waiters(self, error: StorageError) -> None:
        waiters = self._next_waiters + (self._inflight.waiters if self._inflight else [])
        self._next_waiters, self._inflight = [], None
        for fut in waiters:
            if not fut.done() and not fut.get_loop().is_closed():
                _reject(fut, error)

    # --- closing ----------------------------------------------------------

    def close(self) -> None:
        """Release the directory at once; unsynced writes are lost, as in a crash.

        Waits only for a system call already running on the worker thread.
        """
        if self._closed:
            return
        self._closed = True
        if self._watermark_timer is not None:
            self._watermark_timer.cancel()
            self._watermark_timer = None
        if not self._flushing and self._error is None:
            self._record_watermark()
        self._writer.close()  # a batch still queued for the worker now fails fast
        self._worker.stop()
        self._reject_waiters(StorageError(f"{self.directory} was closed before this sync"))
        os.close(self._lock_fd)

    def _record_watermark(self) -> None:
        # The worker is idle: write the MANIFEST from here, so a clean close
        # leaves a watermark that covers every acknowledged write.
        try:
            self._writer.write_manifest()
        except (StorageError, Closed) as exc:
            logger.warning("FileStorage %s: MANIFEST not updated at close: %s", self.directory, exc)

    def __enter__(self) -> FileStorage:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def holds_state(directory: str | os.PathLike[str]) -> bool:
    """Whether `directory` holds a FileStorage's state (a MANIFEST, a segment or a snapshot).

    Read-only: a missing directory, or one holding only a LOCK, holds none.
    A FileStorage writes its MANIFEST and first segment when it opens, so
    a node that ever opened its directory leaves state behind.
    """
    path = os.fspath(directory)
    if not os.path.isdir(path):
        return False
    if os.path.exists(os.path.join(path, manifest.MANIFEST_NAME)):
        return True
    listing = wal.list_directory(path)
    return bool(listing.segments or listing.snapshots)


def _reject(fut: asyncio.Future[None], error: StorageError) -> None:
    exc = StorageError(str(error))
    exc.__cause__ = error.__cause__
    fut.set_exception(exc)
    fut.exception()  # retrieved: the failure is logged once, not once per waiter


def _failed_future(error: StorageError) -> asyncio.Future[None]:
    fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    _reject(fut, error)
    return fut
