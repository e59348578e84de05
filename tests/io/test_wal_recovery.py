"""Recovery from damaged directories: torn tails at every byte, flipped bytes at every
offset, missing and garbled files, and a crash at every step of a snapshot batch."""

from __future__ import annotations

import errno
import os
import shutil
import struct
from collections.abc import Callable
from pathlib import Path

import pytest

from raftio import codec
from raftio.messages import Entry
from raftio.storage import manifest, wal
from raftio.storage.base import DurableState, StorageCorruptError, StorageError
from raftio.storage.file import Disk, FileStorage
from raftio.storage.memory import MemoryStorage
from raftio.testing import run

State = tuple[DurableState, bytes]


class NoFsyncDisk(Disk):
    """Real files without fsync: these tests are about what is on disk after a
    crash, which fsync does not change, and they reopen hundreds of times.

    No preallocation either (as on a file system without fallocate): a crash
    cuts these segments short. `PreallocatingDisk` is the other crash model.
    """

    def fdatasync(self, fd: int) -> None:
        pass

    def fsync(self, fd: int) -> None:
        pass

    def fsync_dir(self, fd: int) -> None:
        pass

    def preallocate(self, fd: int, offset: int, length: int) -> None:
        raise OSError(errno.EOPNOTSUPP, "preallocation switched off for this test")


class PreallocatingDisk(NoFsyncDisk):
    """Segments preallocated with zeros: a crash leaves zeros after the cut, not a short file."""

    def preallocate(self, fd: int, offset: int, length: int) -> None:
        os.posix_fallocate(fd, offset, length)


# Each op writes exactly one record, so states[i] is the state after i records
# (record 0 is the segment's checkpoint: the empty state).
SCRIPT: list[Callable[[MemoryStorage | FileStorage], None]] = [
    lambda s: s.save_hard_state(1, 0),
    lambda s: s.append_entries(1, [Entry(1, b"one"), Entry(1, b"two"), Entry(1, b"three")]),
    lambda s: s.save_hard_state(2, 1),
    lambda s: s.append_entries(3, [Entry(2, b"THREE"), Entry(2, b"four")]),
    lambda s: s.append_entries(4, []),  # a truncation record
    lambda s: s.save_snapshot(2, 1, b"snapshot through 2"),
    lambda s: s.append_entries(4, [Entry(2, b"four again")]),
    lambda s: s.save_hard_state(3, None),
    lambda s: s.append_entries(5, [Entry(3, b"five"), Entry(3, b"six")]),
]


def build(
    directory: Path,
    segment_size: int = 64 << 20,
    compact_min_bytes: int = 1 << 20,
    disk: Disk | None = None,
) -> list[State]:
    """Write SCRIPT with a sync after each op; return the state after each record."""

    async def write() -> list[State]:
        mem = MemoryStorage()
        states = [(mem.load(), mem.read_snapshot())]
        with FileStorage(
            directory,
            segment_size=segment_size,
            compact_min_bytes=compact_min_bytes,
            disk=disk or NoFsyncDisk(),
        ) as storage:
            for op in SCRIPT:
                op(mem)
                op(storage)
                pending = storage.sync()
                assert pending is not None
                await pending
                states.append((mem.load(), mem.read_snapshot()))
        return states

    return run(write())


def record_ends(path: Path) -> list[int]:
    """Offsets where each record of a segment ends (up to zeros or the end of the file)."""
    data, ends, off = path.read_bytes(), [], 0
    while off + wal.HEADER_SIZE <= len(data) and data[off : off + wal.HEADER_SIZE] != bytes(12):
        off += wal.HEADER_SIZE + struct.unpack_from("<I", data, off)[0]
        ends.append(off)
    return ends


def is_op(path: Path, start: int) -> bool:
    """Whether the record at `start` is one op of SCRIPT (not a segment's first record or a
    watermark record, which change nothing)."""
    data = path.read_bytes()
    length = struct.unpack_from("<I", data, start)[0]
    record = wal.decode_body(data[start + wal.HEADER_SIZE : start + wal.HEADER_SIZE + length])
    return start > 0 and not isinstance(record, wal.Watermark)


def states_before(files: list[Path]) -> list[list[int]]:
    """For each record of each segment, the index in `states` of the state before it."""
    out, count = [], 0
    for path in files:
        before = []
        for start in [0, *record_ends(path)[:-1]]:
            before.append(count)
            count += is_op(path, start)
        out.append(before)
    return out


def crash_watermark(src: Path, dst: Path) -> None:
    """Give `dst` the MANIFEST a crash during `src`'s newest segment may leave: only its
    first record known durable (the idle update and the close that say more never came)."""
    newest = segments(src)[-1]
    set_watermark(dst, int(newest.name[4:20], 16), record_ends(newest)[0])


def set_watermark(directory: Path, seq: int, offset: int) -> None:
    mark = manifest.Mark(1000, seq, offset)
    data = bytearray(manifest.FILE_SIZE)
    at = manifest.slot_offset(mark.generation)
    data[at : at + manifest.SLOT_SIZE] = manifest.encode_slot(mark)
    (directory / manifest.MANIFEST_NAME).write_bytes(data)


def segments(directory: Path) -> list[Path]:
    return sorted(directory.glob("wal-*.log"))


def reopen(directory: Path) -> State:
    with FileStorage(directory, disk=NoFsyncDisk()) as storage:
        return storage.load(), storage.read_snapshot()


def reopen_or_error(directory: Path) -> State | StorageError:
    try:
        return reopen(directory)
    except StorageError as exc:
        return exc


def damaged_copy(
    src: Path, dst: Path, name: str, damage: Callable[[bytearray], None], *, crash: bool = False
) -> Path:
    """A copy of `src` with `damage` done to file `name`; `crash`: a crash, not a damaged
    disk (the watermark as a crash may leave it: see crash_watermark)."""
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst)
    path = dst / name
    data = bytearray(path.read_bytes())
    damage(data)
    path.write_bytes(data)
    if crash:
        crash_watermark(src, dst)
    return dst


# --- torn tails -----------------------------------------------------------------


@pytest.mark.parametrize("model", ["appended", "preallocated"])
def test_a_crash_at_every_byte_recovers_the_complete_records(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, model: str
) -> None:
    # Appended segments end short after a crash; in a preallocated one the
    # bytes from the cut on are zeros and the file keeps its size.
    preallocated = model == "preallocated"
    states = build(tmp_path / "log", disk=PreallocatingDisk() if preallocated else None)
    (segment,) = segments(tmp_path / "log")
    ends = record_ends(segment)
    starts = [0, *ends[:-1]]
    ops = [is_op(segment, start) for start in starts]
    assert sum(ops) == len(states) - 1  # one record per op, plus the checkpoint and watermarks
    assert (segment.stat().st_size > ends[-1]) == preallocated
    original = segment.read_bytes()

    def intact(i: int, cut: int) -> bool:
        # Zeroing bytes that were zero already leaves a record as it was.
        start = max(cut, starts[i])
        return cut >= ends[i] or (
            preallocated and original.count(0, start, ends[i]) == ends[i] - start
        )

    for cut in range(ends[-1] + 1):
        caplog.clear()
        damage = zero_from(cut) if preallocated else cut_at(cut)
        copy = damaged_copy(tmp_path / "log", tmp_path / "cut", segment.name, damage, crash=True)
        complete = 0
        while complete < len(ends) and intact(complete, cut):
            complete += 1
        if complete == 0:
            # The MANIFEST names the segment only once its checkpoint is durable.
            with pytest.raises(StorageCorruptError, match=rf"{segment.name} at offset 0: first"):
                reopen(copy)
            continue

        recovered = reopen(copy)

        assert recovered == states[sum(ops[:complete])], f"cut at {cut}"
        # Torn: the first damaged record had some of its bytes written; it is
        # past the watermark (the crash came before its fdatasync), so it is cut.
        torn = complete < len(ends) and cut > starts[complete]
        assert ("past the durable watermark" in caplog.text) == torn, cut
        if torn:
            assert f"{segment.name} at offset {starts[complete]}" in caplog.text
            assert list((copy / "quarantine").iterdir())


def cut_at(offset: int) -> Callable[[bytearray], None]:
    def damage(data: bytearray) -> None:
        del data[offset:]

    return damage


def test_a_cut_in_the_newest_of_several_segments_is_a_torn_tail(tmp_path: Path) -> None:
    states = build(tmp_path / "log", segment_size=60)
    files = segments(tmp_path / "log")
    assert len(files) >= 4
    newest, before = files[-1], states_before(files)[-1]
    ends = record_ends(newest)

    for cut in range(newest.stat().st_size + 1):
        copy = damaged_copy(
            tmp_path / "log", tmp_path / "cut", newest.name, cut_at(cut), crash=True
        )
        if cut < ends[0]:
            # The first record was durable before the MANIFEST named the segment.
            with pytest.raises(StorageCorruptError, match=f"{newest.name} at offset 0"):
                reopen(copy)
            continue

        recovered = reopen(copy)

        complete = [i for i, end in enumerate(ends) if end <= cut]
        last = complete[-1]
        expected = before[last] + is_op(newest, [0, *ends][last])
        assert recovered == states[expected], f"cut at {cut}"


def test_a_cut_in_an_older_segment_is_corruption(tmp_path: Path) -> None:
    build(tmp_path / "log", segment_size=60)
    older = segments(tmp_path / "log")[:-1]

    for segment in older:
        for cut in range(segment.stat().st_size):
            copy = damaged_copy(tmp_path / "log", tmp_path / "cut", segment.name, cut_at(cut))
            with pytest.raises(StorageError, match=segment.name):
                reopen(copy)


def test_zeros_after_the_last_record_are_the_clean_end(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Preallocated space, or a crash after the file grew but before the data landed.
    states = build(tmp_path / "log")
    (segment,) = segments(tmp_path / "log")
    records = segment.stat().st_size
    with segment.open("ab") as f:
        f.write(bytes(4096))

    assert reopen(tmp_path / "log") == states[-1]
    assert "torn" not in caplog.text
    assert "cut short" not in caplog.text
    assert segment.stat().st_size == records + 4096  # kept: writing resumes over the zeros

    async def append_more() -> None:
        with FileStorage(tmp_path / "log", disk=NoFsyncDisk()) as storage:
            storage.append_entries(7, [Entry(3, b"seven")])
            pending = storage.sync()
            assert pending is not None
            await pending

    run(append_more())
    state, _ = reopen(tmp_path / "log")
    assert state.entries[-1] == Entry(3, b"seven")
    assert len(state.entries) == len(states[-1][0].entries) + 1


def test_a_rolled_segment_is_cut_to_its_records(tmp_path: Path) -> None:
    # Only the newest segment may end in zeros; older ones end at their last record.
    states = build(tmp_path / "log", segment_size=60, disk=PreallocatingDisk())
    files = segments(tmp_path / "log")
    assert len(files) >= 4

    for older in files[:-1]:
        assert older.stat().st_size == record_ends(older)[-1]
    assert files[-1].stat().st_size > record_ends_before_zeros(files[-1])[-1]
    assert reopen(tmp_path / "log") == states[-1]


def record_ends_before_zeros(path: Path) -> list[int]:
    """Offsets where each record of a preallocated segment ends."""
    data, ends, off = path.read_bytes(), [], 0
    while off + wal.HEADER_SIZE <= len(data) and data[off : off + wal.HEADER_SIZE] != bytes(12):
        off += wal.HEADER_SIZE + struct.unpack_from("<I", data, off)[0]
        ends.append(off)
    return ends


def zero_from(offset: int) -> Callable[[bytearray], None]:
    def damage(data: bytearray) -> None:
        data[offset:] = bytes(len(data) - offset)

    return damage


def test_garbage_after_the_last_record_is_moved_aside(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Past the watermark: not acknowledged, so a repair, logged, bytes kept aside.
    states = build(tmp_path / "log")
    (segment,) = segments(tmp_path / "log")
    end = segment.stat().st_size
    with segment.open("ab") as f:
        f.write(b"not a record header at all")

    assert reopen(tmp_path / "log") == states[-1]

    assert f"{segment.name} at offset {end}: record header checksum mismatch" in caplog.text
    assert "cutting 26 bytes (no whole record)" in caplog.text
    (moved,) = (tmp_path / "log" / "quarantine").iterdir()
    assert moved.read_bytes() == b"not a record header at all"
    assert segment.stat().st_size == end


# --- flipped bytes --------------------------------------------------------------


@pytest.mark.parametrize("segment_size", [64 << 20, 60])
def test_a_flipped_byte_anywhere_below_the_watermark_is_refused(
    tmp_path: Path, segment_size: int
) -> None:
    # Every write was acknowledged and the storage closed: the MANIFEST covers
    # every record, so no flipped byte is ever taken for a torn write.
    build(tmp_path / "log", segment_size=segment_size)
    files = segments(tmp_path / "log")

    for segment in files:
        for offset in range(segment.stat().st_size):
            copy = damaged_copy(tmp_path / "log", tmp_path / "flip", segment.name, flip(offset))

            with pytest.raises(StorageCorruptError, match=rf"{segment.name} at offset \d+: "):
                reopen(copy)


def test_a_flipped_byte_in_the_unsynced_final_record_is_cut_and_named(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Past the watermark, a whole record that fails its checksum is cut, but
    # the log line says what it is: not "a write cut short".
    states = build(tmp_path / "log")
    (segment,) = segments(tmp_path / "log")
    ends = record_ends(segment)
    final = ends[-2]
    copy = damaged_copy(tmp_path / "log", tmp_path / "flip", segment.name, flip(ends[-1] - 1))
    set_watermark(copy, 1, final)

    assert reopen(copy) == states[-2]

    assert f"{segment.name} at offset {final}: a whole record of" in caplog.text
    assert "fails its checksum, past the durable watermark" in caplog.text


def flip(offset: int) -> Callable[[bytearray], None]:
    def damage(data: bytearray) -> None:
        data[offset] ^= 0xFF

    return damage


def test_a_record_that_contradicts_the_log_is_an_error(tmp_path: Path) -> None:
    build(tmp_path / "log")
    (segment,) = segments(tmp_path / "log")
    with segment.open("ab") as f:
        f.write(wal.encode_entries(40, [Entry(3, b"after a gap")]))  # valid checksums

    with pytest.raises(StorageError, match=rf"{segment.name} at offset \d+: append at 40"):
        reopen(tmp_path / "log")


# --- missing and garbled files ------------------------------------------------------


def snapshot_file(directory: Path) -> Path:
    (path,) = directory.glob("snap-*.snap")
    return path


def test_a_missing_snapshot_is_an_error(tmp_path: Path) -> None:
    build(tmp_path)
    snapshot_file(tmp_path).unlink()

    with pytest.raises(StorageError, match="snapshot file named by the log is missing"):
        reopen(tmp_path)


def test_a_garbled_snapshot_is_an_error_at_every_byte(tmp_path: Path) -> None:
    build(tmp_path / "log")
    name = snapshot_file(tmp_path / "log").name

    for offset in range(snapshot_file(tmp_path / "log").stat().st_size):
        copy = damaged_copy(tmp_path / "log", tmp_path / "flip", name, flip(offset))
        with pytest.raises(StorageError, match=name):
            reopen(copy)


@pytest.mark.parametrize("compacted", [False, True])
def test_a_whole_snapshot_file_the_log_did_not_record_is_refused(
    tmp_path: Path, compacted: bool
) -> None:
    # Self-consistent (header, length, crc32 all agree), same index and term,
    # other data: a file copied in from another node, or swapped. Only the
    # crc32 the log recorded (in its marker, or in the checkpoint a
    # compaction wrote) tells it apart.
    build(tmp_path, segment_size=60, compact_min_bytes=0) if compacted else build(tmp_path)
    first = segments(tmp_path)[0].read_bytes()
    (length,) = struct.unpack_from("<I", first)
    checkpoint = wal.decode_body(first[wal.HEADER_SIZE : wal.HEADER_SIZE + length])
    assert isinstance(checkpoint, wal.Checkpoint)
    assert (checkpoint.snapshot_index > 0) == compacted
    path = snapshot_file(tmp_path)
    index, term = (int(part, 16) for part in path.stem.split("-")[1:])
    other = b"another node's state"
    path.write_bytes(wal.snapshot_header(index, term, other) + other)

    with pytest.raises(StorageCorruptError, match=r"crc32 0x[0-9a-f]{8}, the log recorded"):
        reopen(tmp_path)


def test_markers_and_checkpoints_without_a_checksum_still_open(tmp_path: Path) -> None:
    # Directories written before the crc32 was recorded: the file's own
    # header checksum is all there is, and it still guards the data.
    marker = wal.snapshot_mark_body(4, 2, wal.snapshot_name(4, 2))
    assert wal.decode_body(marker) == wal.SnapshotMark(4, 2, wal.snapshot_name(4, 2))
    old = wal.Checkpoint(3, 2, None, 4, 2, wal.snapshot_name(4, 2), [])
    assert wal.decode_body(wal.encode_checkpoint(old)[wal.HEADER_SIZE :]) == old


@pytest.mark.parametrize("checksum", [-2, 1 << 32, 1 << 63])
def test_a_recorded_checksum_that_is_no_crc32_is_refused(checksum: int) -> None:
    name = wal.snapshot_name(4, 2)
    marker = codec.pack([5, 4, 2, name, b"", checksum])
    checkpoint = codec.pack([0, 3, 2, None, 4, 2, name, [], b"", checksum])

    for body in (marker, checkpoint):
        with pytest.raises(ValueError, match="is not a crc32"):
            wal.decode_body(body)


def test_a_missing_middle_segment_is_an_error(tmp_path: Path) -> None:
    build(tmp_path, segment_size=60)
    segments(tmp_path)[2].unlink()

    with pytest.raises(StorageError, match=r"wal-0000000000000003\.log: missing, between"):
        reopen(tmp_path)


def test_a_segment_under_the_wrong_name_is_an_error(tmp_path: Path) -> None:
    build(tmp_path, segment_size=60)
    files = segments(tmp_path)
    files[-1].unlink()
    shutil.copy(files[-2], files[-1])

    with pytest.raises(StorageError, match="says segment"):
        reopen(tmp_path)


def test_snapshots_without_a_log_are_an_error(tmp_path: Path) -> None:
    build(tmp_path)
    for segment in segments(tmp_path):
        segment.unlink()
    (tmp_path / manifest.MANIFEST_NAME).unlink()

    with pytest.raises(StorageCorruptError, match="MANIFEST: missing, but the directory holds"):
        reopen(tmp_path)
    set_watermark(tmp_path, 0, 0)  # as if the log had never begun
    with pytest.raises(StorageCorruptError, match="but no log"):
        reopen(tmp_path)


def test_crash_leftovers_are_removed(tmp_path: Path) -> None:
    states = build(tmp_path)
    leftovers = ["snap-00000000000000ff-0000000000000009.snap", "snap-x.snap.tmp"]
    for name in leftovers:
        (tmp_path / name).write_bytes(b"half written")

    assert reopen(tmp_path) == states[-1]

    assert not any((tmp_path / name).exists() for name in leftovers)


def test_a_torn_first_record_removes_the_newest_segment(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    states = build(tmp_path, segment_size=60)
    newest = segments(tmp_path)[-1]
    seq = int(newest.name[4:20], 16)
    (tmp_path / wal.segment_name(seq + 1)).write_bytes(wal.encode_segment_start(seq + 1, 0)[:7])

    assert reopen(tmp_path) == states[-1]

    assert "first record torn by a crash, past the durable watermark" in caplog.text
    assert segments(tmp_path)[-1] == newest
    assert len(list((tmp_path / "quarantine").iterdir())) == 1


# --- a crash at every step of a snapshot batch ----------------------------------------


class CrashingDisk(NoFsyncDisk):
    """Every call after the first `budget` ones fails, as if the process died there."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.calls = 0
        self.armed = False  # opening (recovery) is not part of the batch

    def _step(self) -> None:
        if not self.armed:
            return
        self.calls += 1
        if self.calls > self.budget:
            raise OSError("simulated crash")

    def open(self, path: str, flags: int) -> int:
        self._step()
        return super().open(path, flags)

    def write(self, fd: int, data: bytes | bytearray) -> None:
        self._step()
        super().write(fd, data)

    def fdatasync(self, fd: int) -> None:
        self._step()
        super().fdatasync(fd)

    def fsync_dir(self, fd: int) -> None:
        self._step()
        super().fsync_dir(fd)

    def rename(self, src: str, dst: str) -> None:
        self._step()
        super().rename(src, dst)

    def unlink(self, path: str) -> None:
        self._step()
        super().unlink(path)


def snapshot_batch(storage: MemoryStorage | FileStorage, step: int) -> None:
    """The ops of one batch: entries, a snapshot that triggers compaction, more entries."""
    ops: list[Callable[[], None]] = [
        lambda: storage.append_entries(7, [Entry(4, b"seven"), Entry(4, b"eight")]),
        lambda: storage.save_snapshot(8, 4, b"new snapshot"),
        lambda: storage.save_hard_state(5, 2),
        lambda: storage.append_entries(9, [Entry(5, b"nine")]),
    ]
    ops[step]()


def test_a_crash_at_any_step_of_a_snapshot_batch_recovers_a_prefix(tmp_path: Path) -> None:
    base = tmp_path / "base"
    build(base, segment_size=150, compact_min_bytes=0)
    with FileStorage(base) as storage:
        mem = MemoryStorage()
        mem.save_snapshot(2, 1, storage.read_snapshot())
        mem.save_hard_state(storage.load().current_term, storage.load().voted_for)
        mem.append_entries(3, storage.load().entries)
    prefixes = [(mem.load(), mem.read_snapshot())]
    for step in range(4):
        snapshot_batch(mem, step)
        prefixes.append((mem.load(), mem.read_snapshot()))

    seen = set()
    for budget in range(100):
        copy = tmp_path / "crash"
        if copy.exists():
            shutil.rmtree(copy)
        shutil.copytree(base, copy)
        completed = run(crash_during_batch(copy, budget))

        recovered = reopen(copy)

        assert recovered in prefixes, f"crash after {budget} disk calls"
        assert not list(copy.glob("*.tmp"))
        seen.add(prefixes.index(recovered))
        if completed:
            assert recovered == prefixes[-1]
            break
    else:
        pytest.fail("the batch never completed")
    # A batch is not atomic: a crash keeps what was written before it, in order.
    assert seen == {0, 1, 4}


async def crash_during_batch(directory: Path, budget: int) -> bool:
    disk = CrashingDisk(budget)
    with FileStorage(directory, disk=disk, segment_size=150, compact_min_bytes=0) as storage:
        disk.armed = True
        for step in range(4):
            snapshot_batch(storage, step)
        pending = storage.sync()
        assert pending is not None
        try:
            await pending
        except StorageError:
            return False
        return True
