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
import time
from collections.abc import Sequence
from dataclasses import dataclass

from raftio import codec
from raftio.membership import Configuration, decode_configuration
from raftio.messages import Entry
from raftio.storage import manifest, wal
from raftio.storage.base import DurableState, StorageCorruptError, StorageError
from raftio.storage.manifest import Mark
from raftio.storage.snapshot import NO_SNAPSHOT, SnapshotInfo
from raftio.storage.wal import Checkpoint
from raftio.storage.writer import Disk, WalWriter

logger = logging.getLogger(__name__)

QUARANTINE = "quarantine"  # bytes a repair cut from the log, kept for a post-mortem


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
        self.snapshot_config = b""  # encoded (raftio.membership); b"": the bootstrap
        self.snapshot_checksum = wal.NO_CHECKSUM  # crc32 of the snapshot's data
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

    def compact(
        self, index: int, term: int, file: str, config: bytes = b"", checksum: int = -1
    ) -> bool:
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
        self.snapshot_config, self.snapshot_checksum = config, checksum
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
        self.snapshot_config, self.snapshot_checksum = cp.snapshot_config, cp.snapshot_checksum
        self.entries, self._ends, self._base = [], [], 0
        self.append(cp.snapshot_index + 1, cp.entries)

    def checkpoint(self) -> Checkpoint:
        """The whole state as a checkpoint record (the writer fills in the segment seq)."""
        return Checkpoint(
            0, self.current_term, self.voted_for, self.snapshot_index, self.snapshot_term,
            self.snapshot_file, list(self.entries), self.snapshot_config, self.snapshot_checksum,
        )  # fmt: skip

    def durable_state(self) -> DurableState:
        return DurableState(
            self.current_term, self.voted_for, self.snapshot_index, self.snapshot_term,
            list(self.entries), self._decoded_config(),
        )  # fmt: skip

    def _decoded_config(self) -> Configuration | None:
        if not self.snapshot_config:
            return None
        config = decode_configuration(self.snapshot_config)
        if config is None:
            # Checksummed on disk, so only a bug writes one: never guess a membership.
            raise StorageCorruptError("the snapshot's configuration does not decode")
        return config


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


def recover(
    directory: str, disk: Disk, segment_size: int
) -> tuple[LogState, SnapshotInfo, WalWriter]:
    """Replay the log from the newest checkpoint; repair or refuse what is damaged.

    The durable watermark (the MANIFEST's mark, or a watermark record) says
    how far the log reached when it was last known synced: damage below it
    raises StorageCorruptError; a torn or out-of-order tail past it (a
    crash or power cut before the fdatasync) is moved to quarantine/ and cut.
    """
    listing = wal.list_directory(directory)
    _remove(directory, listing.temporary, "temporary file left by a crash", disk)
    found = _read_manifest(directory, listing)
    mark = found.mark if found is not None else None
    for line in found.damaged if found is not None else []:
        logger.warning("%s; using the other slot (%s)", line, _describe_mark(mark))
    newest = listing.segments[-1] if listing.segments else 0
    if mark is not None and mark.seq > newest:
        raise StorageCorruptError(
            f"{os.path.join(directory, wal.segment_name(mark.seq))}: missing, but "
            f"{manifest.MANIFEST_NAME} says it holds {mark.offset} durable bytes of records"
        )
    segments = _drop_torn_newest(directory, listing.segments, mark, disk)
    if not segments:
        if listing.snapshots:
            raise StorageCorruptError(f"{directory}: snapshot files {listing.snapshots} but no log")
        return LogState(), NO_SNAPSHOT, _fresh(directory, disk, segment_size, mark)
    assert mark is not None  # _read_manifest refuses segments without a MANIFEST
    start = _find_checkpoint(directory, segments)
    live = segments[start:]
    state, sizes, durable = _replay(directory, live, disk, mark)
    snapshot = NO_SNAPSHOT
    if state.snapshot_index:
        path = os.path.join(directory, state.snapshot_file)
        size, crc = wal.check_snapshot_file(path, state.snapshot_index, state.snapshot_term)
        if state.snapshot_checksum not in (wal.NO_CHECKSUM, crc):
            # A whole, self-consistent file that is not the snapshot the log
            # recorded (copied in from elsewhere, or swapped): never use it.
            raise StorageCorruptError(
                f"{path}: snapshot data has crc32 {crc:#010x}, "
                f"the log recorded {state.snapshot_checksum:#010x}"
            )
        snapshot = SnapshotInfo(state.snapshot_index, state.snapshot_term, size, crc)
    writer = WalWriter(directory, disk, segment_size, live, sizes, mark)
    try:
        if sizes[-1] > durable or mark.seq != live[-1] or (found is not None and found.damaged):
            # What was read may sit only in the page cache (after kill -9): make it
            # durable before the MANIFEST says so, and before older files go.
            writer.sync_newest()
            writer.write_manifest(force=True)
    except BaseException:
        writer.close()
        raise
    old = [wal.segment_name(s) for s in segments[:start]]
    _remove(directory, old, "segment before checkpoint", disk)
    unused = [name for name in listing.snapshots if name != state.snapshot_file]
    _remove(directory, unused, "snapshot the log does not name", disk)
    return state, snapshot, writer


def _fresh(directory: str, disk: Disk, segment_size: int, mark: Mark | None) -> WalWriter:
    """Start an empty log: the MANIFEST first, then segment 1 (a crash between is harmless)."""
    writer = WalWriter(directory, disk, segment_size, [], [], mark)
    try:
        if mark is None:
            writer.create_manifest()
        writer.start_first_segment(wal.encode_checkpoint(Checkpoint(1, 0, None, 0, 0, "", [])))
    except BaseException:
        writer.close()
        raise
    return writer


def _read_manifest(directory: str, listing: wal.Listing) -> manifest.Manifest | None:
    path = manifest.path_in(directory)
    found = manifest.read(path)
    if found is None and (listing.segments or listing.snapshots):
        raise StorageCorruptError(
            f"{path}: missing, but the directory holds {len(listing.segments)} segments and "
            f"{len(listing.snapshots)} snapshots; how far the log must reach is unknown"
        )
    return found


def _describe_mark(mark: Mark | None) -> str:
    if mark is None:
        return "none"
    name = wal.segment_name(mark.seq)
    return f"generation {mark.generation}: {name} through offset {mark.offset}"


def _remove(directory: str, names: list[str], why: str, disk: Disk) -> None:
    # No directory fsync: if a removal is lost in a crash, recovery removes it again.
    for name in names:
        logger.info("%s: removing %s (%s)", directory, name, why)
        disk.unlink(os.path.join(directory, name))


def _drop_torn_newest(
    directory: str, segments: list[int], mark: Mark | None, disk: Disk
) -> list[int]:
    """A crash while a segment was being started leaves it torn at offset 0: move it aside.

    Only past the watermark: the MANIFEST names a segment once its first
    record is durable, so a segment it names must start with a whole record.
    """
    if not segments:
        return segments
    seq = segments[-1]
    path = os.path.join(directory, wal.segment_name(seq))
    named = mark is not None and seq <= mark.seq
    try:
        if wal.read_first(path, last=True) is not None:
            return segments
        why = "first record torn by a crash"
    except StorageCorruptError as exc:
        if named:
            raise
        why = str(exc).split(": ", 1)[1]
    if named:
        raise wal.corrupt(
            path,
            0,
            f"first record missing or torn, below the durable watermark "
            f"({manifest.MANIFEST_NAME}: {_describe_mark(mark)})",
        )
    with open(path, "rb") as f:
        data = f.read()
    moved = _quarantine(path, data, 0, disk)
    logger.warning(
        "%s at offset 0: %s, past the durable watermark (%s: %s); moved the segment (%d bytes, "
        "%d of them non-zero) to %s",
        path, why, manifest.MANIFEST_NAME, _describe_mark(mark), len(data),
        len(data) - data.count(0), moved,
    )  # fmt: skip
    disk.unlink(path)
    return segments[:-1]


def _find_checkpoint(directory: str, segments: list[int]) -> int:
    """Index in `segments` of the newest one that starts with a checkpoint."""
    for i in range(len(segments) - 1, -1, -1):
        path = os.path.join(directory, wal.segment_name(segments[i]))
        first = wal.read_first(path, last=i == len(segments) - 1)
        if isinstance(first, Checkpoint):
            for a, b in zip(segments[i:], segments[i + 1 :], strict=False):
                if b != a + 1:
                    raise StorageCorruptError(
                        f"{os.path.join(directory, wal.segment_name(a + 1))}: missing, "
                        f"between {wal.segment_name(a)} and {wal.segment_name(b)}"
                    )
            return i
        if not isinstance(first, wal.SegmentStart):
            raise wal.corrupt(path, 0, "a segment must start with a checkpoint or segment start")
    # The oldest segment continues an older one: the log's start is lost.
    missing = os.path.join(directory, wal.segment_name(segments[0] - 1))
    raise StorageCorruptError(
        f"{missing}: missing, but {wal.segment_name(segments[0])} continues it "
        "(it starts with a segment start, not a checkpoint)"
    )


def _replay(
    directory: str, live: list[int], disk: Disk, mark: Mark
) -> tuple[LogState, list[int], int]:
    """The state the live segments hold, their sizes, and the newest one's durable watermark."""
    state = LogState()
    sizes: list[int] = []
    for seq in live[:-1]:
        path = os.path.join(directory, wal.segment_name(seq))
        with open(path, "rb") as f:
            data = f.read()
        replayer = _Replayer(state, seq, sizes[-1] if sizes else 0, directory)
        sizes.append(wal.scan_segment(path, data, on_record=replayer.apply).end)
    seq = live[-1]
    path = os.path.join(directory, wal.segment_name(seq))
    with open(path, "rb") as f:
        data = f.read()
    scan = wal.scan_newest(path, data)
    durable, source = _watermark(scan, mark if mark.seq == seq else None)
    if scan.end < durable:
        what = scan.problem or "the log ends here (only zeros follow)"
        raise wal.corrupt(
            path, scan.end, f"{what}, below the durable watermark at offset {durable} ({source})"
        )
    keep, why = _unsynced_markers(directory, scan, durable)
    replayer = _Replayer(state, seq, sizes[-1] if sizes else 0, directory)
    for off, record in scan.records[:keep]:
        try:
            replayer.apply(record, off)
        except ValueError as exc:
            raise wal.corrupt(path, off, str(exc)) from None
    end = scan.records[keep][0] if keep < len(scan.records) else scan.end
    if why is None and scan.problem is not None:
        why = scan.problem
    if why is not None:
        lost = scan.records[keep:] + scan.later
        _cut(path, data, end, max(scan.data_end, scan.end), why, lost, (durable, source), disk)
    sizes.append(end)
    return state, sizes, durable


def _watermark(scan: wal.Newest, mark: Mark | None) -> tuple[int, str]:
    """How far the newest segment was durable when last known, and who says so.

    The first record was synced before anything else; the MANIFEST's mark, and
    every watermark record (including those found past damage), say more.
    """
    records = scan.records
    durable = records[1][0] if len(records) > 1 else scan.end
    source = "the segment's first record"
    if mark is not None and mark.offset > durable:
        durable, source = mark.offset, manifest.MANIFEST_NAME
    for off, record in records + scan.later:
        if isinstance(record, wal.Watermark) and durable < record.offset <= off:
            durable, source = record.offset, f"the watermark record at offset {off}"
    return durable, source


def _unsynced_markers(directory: str, scan: wal.Newest, durable: int) -> tuple[int, str | None]:
    """How many records to keep so that the last snapshot marker names a file that exists.

    A batch writes only its newest snapshot file, so a crash before its
    fdatasync can leave markers of older snapshots in the same batch whose
    files were never written; they all lie past the watermark.
    """
    keep, why = len(scan.records), None
    for i in range(len(scan.records) - 1, -1, -1):
        off, record = scan.records[i]
        if not isinstance(record, wal.SnapshotMark):
            continue
        if off < durable or os.path.exists(os.path.join(directory, record.file)):
            break
        keep, why = i, f"snapshot marker naming {record.file}, which was never written"
    return keep, why


def _cut(
    path: str,
    data: bytes,
    at: int,
    stop: int,
    why: str,
    lost: list[tuple[int, wal.Record]],
    watermark: tuple[int, str],
    disk: Disk,
) -> None:
    """Move data[at:stop] to quarantine/, log what goes, then cut the segment at `at`."""
    moved = _quarantine(path, data[at:stop], at, disk)
    logger.warning(
        "%s at offset %d: %s, past the durable watermark at offset %d (%s), so never known "
        "synced: cutting %d bytes (%s); moved to %s",
        path, at, why, *watermark, stop - at, wal.describe(lost), moved,
    )  # fmt: skip
    _truncate(path, at, disk)


def _quarantine(path: str, chunk: bytes, at: int, disk: Disk) -> str:
    """Write `chunk` (bytes of `path` from offset `at`) durably under quarantine/."""
    directory = os.path.join(os.path.dirname(path), QUARANTINE)
    make_directory(directory, disk)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    base = f"{os.path.basename(path)}.at-{at}.{stamp}"
    target, n = os.path.join(directory, base), 1
    while os.path.exists(target):
        n += 1
        target = os.path.join(directory, f"{base}.{n}")
    fd = disk.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    try:
        disk.write(fd, chunk)
        disk.fdatasync(fd)
    finally:
        os.close(fd)
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        disk.fsync_dir(dir_fd)
    finally:
        os.close(dir_fd)
    return target


def _truncate(path: str, size: int, disk: Disk) -> None:
    fd = disk.open(path, os.O_WRONLY)
    try:
        disk.truncate(fd, size)
        disk.fsync(fd)
    finally:
        os.close(fd)


@dataclass(slots=True)
class _Replayer:
    """Applies one segment's records to the state; ValueError on a contradiction."""

    state: LogState
    seq: int
    prev_size: int  # bytes in the segment before this one
    directory: str

    def apply(self, record: wal.Record, offset: int) -> None:
        kind = type(record).__name__
        first = offset == 0
        if isinstance(record, Checkpoint | wal.SegmentStart):
            if not first:
                raise ValueError(f"{kind} record in the middle of a segment")
            if record.seq != self.seq:
                raise ValueError(f"{kind} record says segment {record.seq}, file name {self.seq}")
            if isinstance(record, wal.SegmentStart) and record.prev_size != self.prev_size:
                # Named by the segment that lost records, where its records end.
                prev = os.path.join(self.directory, wal.segment_name(self.seq - 1))
                raise wal.corrupt(
                    prev,
                    self.prev_size,
                    f"its records end here, but {wal.segment_name(self.seq)} "
                    f"says they reach offset {record.prev_size}",
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
        elif isinstance(record, wal.Watermark) and record.offset > offset:
            raise ValueError(f"watermark record claims offset {record.offset}, past itself")

    def _mark(self, mark: wal.SnapshotMark) -> None:
        if mark.file != wal.snapshot_name(mark.index, mark.term):
            raise ValueError(f"snapshot marker names {mark.file!r} for {mark.index}@T{mark.term}")
        if not self.state.compact(mark.index, mark.term, mark.file, mark.config, mark.checksum):
            raise ValueError(
                f"snapshot marker {mark.index} is not after snapshot {self.state.snapshot_index}"
            )
