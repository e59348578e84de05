"""The durable watermark: what FileStorage knows was synced tells damage from a torn tail.

A missing newest segment, or zeroed records that were synced, refuse to
start naming the file and offset; zeros followed by data past the watermark
(a power cut that wrote back a later page and lost an earlier one) are cut,
logged and moved aside; the watermark costs no fsync while batches follow
each other; one batch writes only its newest snapshot.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from raftio.messages import Entry
from raftio.storage import manifest, wal
from raftio.storage.base import StorageCorruptError, StorageError
from raftio.storage.file import Disk, FileStorage
from raftio.storage.memory import MemoryStorage
from raftio.testing import run


async def synced(storage: FileStorage) -> None:
    pending = storage.sync()
    if pending is not None:
        await pending


def append_batches(directory: Path, batches: int, per_batch: int = 5, **kw: object) -> list[int]:
    """Write `batches` synced batches of entries; return the segment's size after each."""

    async def write() -> list[int]:
        ends = []
        with FileStorage(directory, **kw) as storage:  # type: ignore[arg-type]
            index = 1
            for _ in range(batches):
                for _ in range(per_batch):
                    storage.append_entries(index, [Entry(1, b"entry %d" % index)])
                    index += 1
                await synced(storage)
                ends.append(storage._writer._size)
        return ends

    return run(write())


def newest_segment(directory: Path) -> Path:
    return sorted(directory.glob("wal-*.log"))[-1]


def read_mark(directory: Path) -> manifest.Mark:
    found = manifest.read(str(directory / manifest.MANIFEST_NAME))
    assert found is not None
    return found.mark


def set_mark(directory: Path, seq: int, offset: int) -> None:
    mark = manifest.Mark(10_000, seq, offset)
    data = bytearray(manifest.FILE_SIZE)
    at = manifest.slot_offset(mark.generation)
    data[at : at + manifest.SLOT_SIZE] = manifest.encode_slot(mark)
    (directory / manifest.MANIFEST_NAME).write_bytes(data)


def zero(path: Path, start: int, end: int) -> None:
    data = bytearray(path.read_bytes())
    data[start:end] = bytes(end - start)
    path.write_bytes(data)


def entries_after_reopen(directory: Path) -> list[Entry]:
    with FileStorage(directory) as storage:
        return storage.load().entries


# --- refusals -------------------------------------------------------------------


def test_a_deleted_newest_segment_is_refused(tmp_path: Path) -> None:
    append_batches(tmp_path, 20, segment_size=300)
    newest = newest_segment(tmp_path)
    assert newest.name != wal.segment_name(1)
    newest.unlink()

    with pytest.raises(StorageCorruptError, match=rf"{newest.name}: missing, but MANIFEST says"):
        FileStorage(tmp_path)


def test_zeroed_acknowledged_records_are_refused(tmp_path: Path) -> None:
    ends = append_batches(tmp_path, 3)
    segment = newest_segment(tmp_path)
    zero(segment, ends[1], ends[2])  # the last batch: synced, and recorded at close

    with pytest.raises(
        StorageCorruptError,
        match=rf"{segment.name} at offset {ends[1]}: the log ends here .* below the durable "
        rf"watermark at offset {ends[2]} \(MANIFEST\)",
    ) as refused:
        FileStorage(tmp_path)
    assert "\n" not in str(refused.value)  # one line, as the CLI prints it


def test_zeros_below_a_later_watermark_record_are_refused(tmp_path: Path) -> None:
    # The MANIFEST lags, but the third batch's watermark record proves the second synced.
    ends = append_batches(tmp_path, 3)
    segment = newest_segment(tmp_path)
    set_mark(tmp_path, 1, ends[0])
    zero(segment, ends[0] + 20, ends[0] + 40)

    with pytest.raises(StorageCorruptError, match=r"the watermark record at offset"):
        FileStorage(tmp_path)


def test_a_missing_manifest_is_refused(tmp_path: Path) -> None:
    append_batches(tmp_path, 1)
    (tmp_path / manifest.MANIFEST_NAME).unlink()

    with pytest.raises(StorageCorruptError, match="MANIFEST: missing, but the directory holds 1"):
        FileStorage(tmp_path)


def test_a_damaged_manifest_slot_falls_back_and_both_refuse(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    append_batches(tmp_path, 2)
    path = tmp_path / manifest.MANIFEST_NAME
    good = read_mark(tmp_path)
    data = bytearray(path.read_bytes())
    data[manifest.slot_offset(good.generation) + 20] ^= 0x10
    path.write_bytes(data)

    assert len(entries_after_reopen(tmp_path)) == 10

    assert f"MANIFEST at offset {manifest.slot_offset(good.generation)}: slot fails" in caplog.text
    assert read_mark(tmp_path).offset == good.offset  # rewritten
    data = bytearray(path.read_bytes())
    data[5] ^= 1
    data[manifest.SLOT_SIZE + 5] ^= 1
    path.write_bytes(data)
    with pytest.raises(StorageCorruptError, match="MANIFEST at offset 0: no valid slot"):
        FileStorage(tmp_path)


# --- repairs past the watermark -----------------------------------------------------


def test_zeros_then_data_past_the_watermark_are_cut_and_moved_aside(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A power cut during the third batch: a later page reached the disk, an
    # earlier one did not. Its watermark record claims only the second batch.
    ends = append_batches(tmp_path, 3, per_batch=40)
    segment = newest_segment(tmp_path)
    set_mark(tmp_path, 1, ends[1])
    hole = ends[1] + 100
    zero(segment, hole, hole + 200)
    damaged = segment.read_bytes()

    entries = entries_after_reopen(tmp_path)

    assert 80 <= len(entries) < 120
    assert entries == [Entry(1, b"entry %d" % i) for i in range(1, len(entries) + 1)]
    cut = segment.stat().st_size
    assert ends[1] <= cut <= hole
    assert f"at offset {cut}: a whole record of" in caplog.text
    assert f"past the durable watermark at offset {ends[1]} (MANIFEST)" in caplog.text
    assert "; entries " in caplog.text.split("cutting", 1)[1]  # what was cut, by index
    (moved,) = (tmp_path / "quarantine").iterdir()
    assert moved.read_bytes() == damaged[cut : ends[2]]


def test_reopening_makes_what_it_read_durable_and_says_so(tmp_path: Path) -> None:
    # After kill -9 the page cache may hold records no fsync covered: once the
    # node uses them they must not vanish in a later power cut.
    ends = append_batches(tmp_path, 3)
    set_mark(tmp_path, 1, ends[0])

    with FileStorage(tmp_path) as storage:
        assert read_mark(tmp_path).offset == ends[2]
        assert storage.fsync_count == 2  # the segment's fdatasync, then the MANIFEST's


# --- the cost ---------------------------------------------------------------------


class CountingDisk(Disk):
    def __init__(self) -> None:
        self.opened: list[str] = []

    def open(self, path: str, flags: int) -> int:
        self.opened.append(os.path.basename(path))
        return super().open(path, flags)


async def test_back_to_back_batches_cost_one_fsync_each_and_idleness_one_more(
    tmp_path: Path,
) -> None:
    storage = FileStorage(tmp_path, watermark_delay=0.05)
    before = storage.fsync_count

    for index in range(1, 101):  # 100 group commits, each right after the last
        storage.append_entries(index, [Entry(1, b"x")])
        await synced(storage)

    assert storage.fsync_count - before == 100
    await asyncio.sleep(0.2)
    assert storage.fsync_count - before == 101  # the MANIFEST, once idle
    assert read_mark(tmp_path).offset == storage._writer._size
    storage.close()


async def test_one_batch_writes_only_its_newest_snapshot(tmp_path: Path) -> None:
    # A follower applying a backlog while its service snapshots often.
    disk = CountingDisk()
    storage = FileStorage(tmp_path, disk=disk)
    mem = MemoryStorage()
    for s in (storage, mem):
        s.append_entries(1, [Entry(1, b"e%d" % i) for i in range(1, 4001)])
    await synced(storage)
    fsyncs, opened = storage.fsync_count, len(disk.opened)

    for index in range(2, 4001, 2):  # 2,000 snapshots in one batch
        for s in (storage, mem):
            s.save_snapshot(index, 1, b"state through %d" % index)
    await synced(storage)

    new_files = disk.opened[opened:]
    assert [name for name in new_files if name.endswith(".tmp")] == [
        wal.snapshot_name(4000, 1) + ".tmp"
    ]
    # The snapshot file, the directory (its rename), the segment: 3, where
    # writing each snapshot took 2 each (4,001 here).
    assert storage.fsync_count - fsyncs == 3
    storage.close()
    with FileStorage(tmp_path) as reopened:
        assert reopened.load() == mem.load()
        assert reopened.read_snapshot() == mem.read_snapshot()


class FailingSegmentSync(Disk):
    """The crash comes at the segment's fdatasync: what was written sits in the page cache."""

    def __init__(self) -> None:
        self.armed = False

    def fdatasync(self, fd: int) -> None:
        if self.armed and os.readlink(f"/proc/self/fd/{fd}").endswith(".log"):
            raise OSError("simulated crash before the fdatasync")
        super().fdatasync(fd)


async def test_a_crash_in_a_batch_of_snapshots_cuts_before_a_marker_never_written(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    disk = FailingSegmentSync()
    storage = FileStorage(tmp_path, disk=disk)
    storage.append_entries(1, [Entry(1, b"e%d" % i) for i in range(1, 11)])
    storage.save_snapshot(2, 1, b"durable snapshot")
    await synced(storage)
    disk.armed = True
    storage.save_snapshot(4, 1, b"never written: the batch has a newer one")
    storage.append_entries(11, [Entry(1, b"e11")])
    storage.save_snapshot(6, 1, b"written, but its marker never reached the disk")
    with pytest.raises(StorageError):
        await synced(storage)
    storage.close()
    # A crash that kept the log up to the first marker but not the second.
    segment = newest_segment(tmp_path)
    scan = wal.scan_newest(str(segment), segment.read_bytes())
    last_marker = [off for off, r in scan.records if isinstance(r, wal.SnapshotMark)][-1]
    data = bytearray(segment.read_bytes())
    data[last_marker:] = bytes(len(data) - last_marker)
    segment.write_bytes(data)

    with FileStorage(tmp_path) as reopened:
        state = reopened.load()
        assert (state.snapshot_index, reopened.read_snapshot()) == (2, b"durable snapshot")
        assert state.entries == [Entry(1, b"e%d" % i) for i in range(3, 11)]

    assert f"snapshot marker naming {wal.snapshot_name(4, 1)}, which was never written" in (
        caplog.text
    )
    assert sorted(os.listdir(tmp_path)) == [
        "LOCK", "MANIFEST", "quarantine", wal.snapshot_name(2, 1), wal.segment_name(1),
    ]  # fmt: skip


def test_a_repaired_directory_takes_writes_where_the_repair_left_off(tmp_path: Path) -> None:
    ends = append_batches(tmp_path, 2)
    set_mark(tmp_path, 1, ends[0])
    zero(newest_segment(tmp_path), ends[0] + 3, ends[0] + 5)

    async def more() -> None:
        with FileStorage(tmp_path) as storage:
            assert len(storage.load().entries) == 5
            storage.append_entries(6, [Entry(2, b"after the repair")])
            await synced(storage)

    run(more())

    assert entries_after_reopen(tmp_path)[5:] == [Entry(2, b"after the repair")]
