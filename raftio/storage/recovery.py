"""Recovery: the in-memory durable state, and rebuilding it from a directory at open.

Owns `LogState` (term, vote, snapshot boundary, entries under
MemoryStorage's rules; both the write path and replay go through it, so
the state before a crash and after recovery agree), the directory LOCK,
and `recover()`: replay from the newest checkpoint, cut a torn tail, check
the snapshot, remove garbage. Runs synchronously, only while opening.
"""

from __future__ import annotations

import fcntl
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass

from raftio import codec
from raftio.messages import Entry
from raftio.storage import wal
from raftio.storage.base import DurableState, StorageError
from raftio.storage.wal import Checkpoint
from raftio.storage.writer import Disk, WalWriter

logger = logging.getLogger(__name__)


class StorageLockedError(StorageError):
    """Another FileStorage (in this process or another) has the directory open."""


def entry_size(entry: Entry) -> int:
    """`len(codec.pack([entry.term, entry.data]))`, computed without encoding."""
    n = len(entry.data)
    data = n + (2 if n < 0x100 else 3 if n < 0x1_0000 else 5)
    term = entry.term
    if 0 <= term < 0x80:
        return 2 + data
    if 0 <= term <= 0xFFFF_FFFF:
        return 1 + (2 if term < 0x100 else 3 if term < 0x1_0000 else 5) + data
    return len(codec.pack([term, entry.data]))


class LogState:
    """Term, vote, snapshot boundary and entries, under MemoryStorage's rules.

    Both the write path and replay go through these methods, so what a
    FileStorage answers before a crash and after recovery agree. Keeps a
    running encoded size so raft_state_size() is O(1).
    """

    def __init__(self) -> None:
        self.current_term = 0
        self.voted_for: int | None = None
        self.snapshot_index = 0
        self.snapshot_term = 0
        self.snapshot_file = ""
        # entries[i] has index snapshot_index + 1 + i; _ends[i] is the encoded
        # size of everything through entries[i], counted from _base.
        self.entries: list[Entry] = []
        self._ends: list[int] = []
        self._base = 0

    @property
    def last_index(self) -> int:
        return self.snapshot_index + len(self.entries)

    def append(self, first_index: int, entries: Sequence[Entry]) -> None:
        """Replace the log from `first_index` on; ValueError (and no change) on a gap."""
        offset = first_index - self.snapshot_index - 1
        ends = self._ends
        if offset != len(ends):  # not a plain append (the hot path)
            if offset < 0 or offset > len(ends):
                raise ValueError(
                    f"append at {first_index} leaves a gap or rewrites the snapshot "
                    f"(snapshot_index={self.snapshot_index}, entries={len(self.entries)})"
                )
            del self.entries[offset:]
            del ends[offset:]
        total = ends[-1] if ends else self._base
        for entry in entries:
            total += entry_size(entry)
            ends.append(total)
        self.entries.extend(entries)

    def compact(self, index: int, term: int, file: str) -> bool:
        """Move the snapshot boundary to `index`; False (no change) if it is not newer."""
        if index <= self.snapshot_index:
            return False
        drop = index - self.snapshot_index
        if drop >= len(self.entries):
            self.entries, self._ends, self._base = [], [], 0
        else:
            self._base = self._ends[drop - 1]
            self.entries, self._ends = self.entries[drop:], self._ends[drop:]
        self.snapshot_index, self.snapshot_term, self.snapshot_file = index, term, file
        return True

    def entries_size(self) -> int:
        return self._ends[-1] - self._base if self._ends else 0

    def reset(self, cp: Checkpoint) -> None:
        """Become exactly the state a checkpoint record holds."""
        expected = (
            wal.snapshot_name(cp.snapshot_index, cp.snapshot_term) if cp.snapshot_index else ""
        )
        if cp.snapshot_file != expected:
            raise ValueError(f"checkpoint names snapshot {cp.snapshot_file!r}, not {expected!r}")
        self.current_term, self.voted_for = cp.current_term, cp.voted_for
        self.snapshot_index, self.snapshot_term = cp.snapshot_index, cp.snapshot_term
        self.snapshot_file = cp.snapshot_file
        self.entries, self._ends, self._base = [], [], 0
        self.append(cp.snapshot_index + 1, cp.entries)

    def checkpoint(self) -> Checkpoint:
        """The whole state as a checkpoint record (the writer fills in the segment seq)."""
        return Checkpoint(
            0, self.current_term, self.voted_for, self.snapshot_index, self.snapshot_term,
            self.snapshot_file, list(self.entries),
        )  # fmt: skip

    def durable_state(self) -> DurableState:
        return DurableState(
            self.current_term, self.voted_for, self.snapshot_index, self.snapshot_term,
            list(self.entries),
        )  # fmt: skip


def make_directory(directory: str, disk: Disk) -> None:
    if os.path.isdir(directory):
        return
    os.makedirs(directory)
    parent = os.open(os.path.dirname(os.path.abspath(directory)), os.O_RDONLY | os.O_DIRECTORY)
    try:
        disk.fsync_dir(parent)  # the new directory's name is durable
    finally:
        os.close(parent)


def lock_directory(directory: str) -> int:
    """Take the directory's LOCK (flock: per open file, so also between objects)."""
    path = os.path.join(directory, wal.LOCK_NAME)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise StorageLockedError(
            f"{directory} is already open in another FileStorage ({path} held by pid {holder})"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def recover(directory: str, disk: Disk, segment_size: int) -> tuple[LogState, bytes, WalWriter]:
    """Replay the log from the newest checkpoint; cut a torn tail; check the snapshot."""
    listing = wal.list_directory(directory)
    _remove(directory, listing.temporary, "temporary file left by a crash")
    segments = _drop_torn_newest(directory, listing.segments)
    if not segments:
        if listing.snapshots:
            raise StorageError(f"{directory}: snapshot files {listing.snapshots} but no log")
        writer = WalWriter(directory, disk, segment_size, [], [])
        try:
            writer.start_first_segment(wal.encode_checkpoint(Checkpoint(1, 0, None, 0, 0, "", [])))
        except BaseException:
            writer.close()
            raise
        return LogState(), b"", writer
    start = _find_checkpoint(directory, segments)
    live = segments[start:]
    state, sizes = _replay(directory, live, disk)
    snapshot = b""
    if state.snapshot_index:
        path = os.path.join(directory, state.snapshot_file)
        snapshot = wal.read_snapshot_file(path, state.snapshot_index, state.snapshot_term)
    _remove(directory, [wal.segment_name(s) for s in segments[:start]], "segment before checkpoint")
    unused = [name for name in listing.snapshots if name != state.snapshot_file]
    _remove(directory, unused, "snapshot the log does not name")
    return state, snapshot, WalWriter(directory, disk, segment_size, live, sizes)


def _remove(directory: str, names: list[str], why: str) -> None:
    # No directory fsync: if a removal is lost in a crash, recovery removes it again.
    for name in names:
        logger.info("%s: removing %s (%s)", directory, name, why)
        os.unlink(os.path.join(directory, name))


def _drop_torn_newest(directory: str, segments: list[int]) -> list[int]:
    """A crash while a segment was being started leaves it torn at offset 0: drop it."""
    if not segments:
        return segments
    path = os.path.join(directory, wal.segment_name(segments[-1]))
    if wal.read_first(path, last=True) is not None:
        return segments
    logger.warning("%s at offset 0: first record torn by a crash; removing the segment", path)
    os.unlink(path)
    return segments[:-1]


def _find_checkpoint(directory: str, segments: list[int]) -> int:
    """Index in `segments` of the newest one that starts with a checkpoint."""
    for i in range(len(segments) - 1, -1, -1):
        path = os.path.join(directory, wal.segment_name(segments[i]))
        first = wal.read_first(path, last=i == len(segments) - 1)
        if isinstance(first, Checkpoint):
            for a, b in zip(segments[i:], segments[i + 1 :], strict=False):
                if b != a + 1:
                    raise StorageError(f"{directory}: segment {wal.segment_name(a + 1)} is missing")
            return i
        if not isinstance(first, wal.SegmentStart):
            raise wal.corrupt(path, 0, "a segment must start with a checkpoint or segment start")
    raise StorageError(f"{directory}: no segment starts with a checkpoint; the log's start is lost")


def _replay(directory: str, live: list[int], disk: Disk) -> tuple[LogState, list[int]]:
    state = LogState()
    sizes: list[int] = []
    for i, seq in enumerate(live):
        path = os.path.join(directory, wal.segment_name(seq))
        with open(path, "rb") as f:
            data = f.read()
        replayer = _Replayer(state, seq, sizes[-1] if sizes else 0)
        tail = wal.scan_segment(path, data, last=i == len(live) - 1, on_record=replayer.apply)
        if tail.torn is not None:
            logger.warning(
                "%s at offset %d: %s, a write cut short by a crash; truncating %d bytes",
                path, tail.end, tail.torn, len(data) - tail.end,
            )  # fmt: skip
            _truncate(path, tail.end, disk)
        sizes.append(tail.end)
    return state, sizes


def _truncate(path: str, size: int, disk: Disk) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.ftruncate(fd, size)
        disk.fdatasync(fd)
    finally:
        os.close(fd)


@dataclass(slots=True)
class _Replayer:
    """Applies one segment's records to the state; ValueError on a contradiction."""

    state: LogState
    seq: int
    prev_size: int  # bytes in the segment before this one

    def apply(self, record: wal.Record, first: bool) -> None:
        kind = type(record).__name__
        if isinstance(record, Checkpoint | wal.SegmentStart):
            if not first:
                raise ValueError(f"{kind} record in the middle of a segment")
            if record.seq != self.seq:
                raise ValueError(f"{kind} record says segment {record.seq}, file name {self.seq}")
            if isinstance(record, wal.SegmentStart) and record.prev_size != self.prev_size:
                raise ValueError(
                    f"{wal.segment_name(self.seq - 1)} should hold {record.prev_size} bytes "
                    f"of records, it holds {self.prev_size}"
                )
        elif first:
            raise ValueError(f"segment starts with a {kind} record, not a segment start")
        if isinstance(record, Checkpoint):
            self.state.reset(record)
        elif isinstance(record, wal.HardState):
            self.state.current_term, self.state.voted_for = record.current_term, record.voted_for
        elif isinstance(record, wal.Entries):
            self.state.append(record.first_index, record.entries)
        elif isinstance(record, wal.Truncate):
            self.state.append(record.first_index, [])
        elif isinstance(record, wal.SnapshotMark):
            self._mark(record)

    def _mark(self, mark: wal.SnapshotMark) -> None:
        if mark.file != wal.snapshot_name(mark.index, mark.term):
            raise ValueError(f"snapshot marker names {mark.file!r} for {mark.index}@T{mark.term}")
        if not self.state.compact(mark.index, mark.term, mark.file):
            raise ValueError(
                f"snapshot marker {mark.index} is not after snapshot {self.state.snapshot_index}"
            )
