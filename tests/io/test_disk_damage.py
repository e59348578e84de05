"""The disk-damage matrix: every kind of damage to a FileStorage directory whose writes
were all acknowledged either refuses to start (one line naming the file, and the
offset where there is one) or is repaired with a WARNING losing nothing; never a
silent loss.

Positions are drawn from a seeded RNG: the seed is printed; rerun with --seed N.
"""

from __future__ import annotations

import logging
import random
import shutil
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from raftio.messages import Entry
from raftio.storage import manifest, wal
from raftio.storage.base import DurableState, StorageCorruptError
from raftio.storage.file import FileStorage
from raftio.testing import run

CASES_PER_KIND = 12
State = tuple[DurableState, bytes]


@dataclass(slots=True)
class Base:
    directory: Path
    acked: State
    older_snapshot: bytes  # a snapshot file the log no longer names, for swaps


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Base:
    """Several segments, compactions, a snapshot and hard states, every write synced."""
    directory = tmp_path_factory.mktemp("damage") / "peer"
    older = b""

    async def write() -> bytes:
        nonlocal older
        with FileStorage(directory, segment_size=2048, compact_min_bytes=4096) as storage:
            index, term = 1, 1
            for batch in range(90):
                if batch % 9 == 0:
                    term += 1
                    storage.save_hard_state(term, batch % 3)
                storage.append_entries(
                    index, [Entry(term, b"batch %d entry %d" % (batch, i)) for i in range(5)]
                )
                index += 5
                if batch in (19, 39):  # then 50 batches: several segments
                    snapshots = list(directory.glob("snap-*.snap"))
                    if snapshots:
                        older = snapshots[0].read_bytes()
                    storage.save_snapshot(index - 12, term, b"state through %d" % (index - 12))
                pending = storage.sync()
                if pending is not None:
                    await pending
        return older

    older = run(write())
    with FileStorage(directory) as storage:
        acked = (storage.load(), storage.read_snapshot())
    assert len(segments(directory)) >= 3
    assert older
    return Base(directory, acked, older)


def segments(directory: Path) -> list[Path]:
    return sorted(directory.glob("wal-*.log"))


def snapshot(directory: Path) -> Path:
    (path,) = directory.glob("snap-*.snap")
    return path


def frames(path: Path) -> list[tuple[int, int]]:
    """(start, end) of each record of a segment."""
    data = path.read_bytes()
    out, off = [], 0
    while off + wal.HEADER_SIZE <= len(data) and data[off : off + wal.HEADER_SIZE] != bytes(12):
        end = off + wal.HEADER_SIZE + int.from_bytes(data[off : off + 4], "little")
        out.append((off, end))
        off = end
    return out


# --- the kinds of damage ----------------------------------------------------------
# Each takes the directory and an RNG, damages one thing, and returns the name of the
# file a refusal must name (None: any file of the directory, as for a deletion).

Damage = Callable[[Path, random.Random], str | None]


def edit(path: Path, change: Callable[[bytearray], None]) -> str:
    data = bytearray(path.read_bytes())
    change(data)
    path.write_bytes(data)
    return path.name


def flip_at(path: Path, lo: int, hi: int, rng: random.Random) -> str:
    at = rng.randrange(lo, hi)
    bit = 1 << rng.randrange(8)

    def change(data: bytearray) -> None:
        data[at] ^= bit

    return edit(path, change)


def flip_first_record(d: Path, rng: random.Random) -> str:
    seg = rng.choice(segments(d))
    return flip_at(seg, 0, frames(seg)[0][1], rng)


def flip_record_header(d: Path, rng: random.Random) -> str:
    seg = rng.choice(segments(d))
    start, _ = rng.choice(frames(seg)[1:] or frames(seg))
    return flip_at(seg, start, start + wal.HEADER_SIZE, rng)


def flip_record_payload(d: Path, rng: random.Random) -> str:
    seg = rng.choice(segments(d))
    start, end = rng.choice(frames(seg))
    return flip_at(seg, start + wal.HEADER_SIZE, end, rng)


def flip_manifest(d: Path, rng: random.Random) -> str:
    return flip_at(d / manifest.MANIFEST_NAME, 0, manifest.FILE_SIZE, rng)


def flip_both_manifest_slots(d: Path, rng: random.Random) -> str:
    flip_at(d / manifest.MANIFEST_NAME, 0, manifest.SLOT_SIZE, rng)
    return flip_at(d / manifest.MANIFEST_NAME, manifest.SLOT_SIZE, manifest.FILE_SIZE, rng)


def flip_snapshot_header(d: Path, rng: random.Random) -> str:
    return flip_at(snapshot(d), 0, 36, rng)


def flip_snapshot_data(d: Path, rng: random.Random) -> str:
    path = snapshot(d)
    return flip_at(path, 36, path.stat().st_size, rng)


def garbage_in_preallocated_tail(d: Path, rng: random.Random) -> str:
    seg = segments(d)[-1]
    end = frames(seg)[-1][1]
    assert seg.stat().st_size > end + 64
    return flip_at(seg, end, end + 64, rng)


def truncate_newest_segment(d: Path, rng: random.Random) -> str:
    seg = segments(d)[-1]
    at = rng.randrange(0, frames(seg)[-1][1])
    return edit(seg, lambda data: data.__delitem__(slice(at, None)))


def truncate_older_segment(d: Path, rng: random.Random) -> str:
    seg = rng.choice(segments(d)[:-1])
    at = rng.randrange(0, seg.stat().st_size)
    return edit(seg, lambda data: data.__delitem__(slice(at, None)))


def truncate_snapshot(d: Path, rng: random.Random) -> str:
    path = snapshot(d)
    at = rng.randrange(0, path.stat().st_size)
    return edit(path, lambda data: data.__delitem__(slice(at, None)))


def truncate_manifest(d: Path, rng: random.Random) -> str:
    at = rng.randrange(0, manifest.FILE_SIZE)
    return edit(d / manifest.MANIFEST_NAME, lambda data: data.__delitem__(slice(at, None)))


def zero_range(path: Path, lo: int, hi: int) -> str:
    def change(data: bytearray) -> None:
        data[lo:hi] = bytes(hi - lo)

    return edit(path, change)


def zero_sector(path: Path, end: int, rng: random.Random) -> str:
    sector = rng.randrange(0, (end + 511) // 512) * 512
    return zero_range(path, sector, min(sector + 512, path.stat().st_size))


def zero_segment_sector(d: Path, rng: random.Random) -> str:
    seg = rng.choice(segments(d))
    return zero_sector(seg, frames(seg)[-1][1], rng)


def zero_newest_tail(d: Path, rng: random.Random) -> str:
    seg = segments(d)[-1]
    end = frames(seg)[-1][1]
    return zero_range(seg, rng.randrange(0, end), seg.stat().st_size)


def zero_snapshot_sector(d: Path, rng: random.Random) -> str:
    path = snapshot(d)
    return zero_sector(path, path.stat().st_size, rng)


def zero_manifest_sector(d: Path, rng: random.Random) -> str:
    return zero_sector(d / manifest.MANIFEST_NAME, manifest.FILE_SIZE, rng)


def delete_segment(pick: Callable[[list[Path], random.Random], Path]) -> Damage:
    def damage(d: Path, rng: random.Random) -> str:
        path = pick(segments(d), rng)
        path.unlink()
        return path.name

    return damage


def delete_all_segments(d: Path, rng: random.Random) -> None:
    for path in segments(d):
        path.unlink()


def delete_snapshot(d: Path, rng: random.Random) -> str:
    path = snapshot(d)
    path.unlink()
    return path.name


def delete_manifest(d: Path, rng: random.Random) -> str:
    (d / manifest.MANIFEST_NAME).unlink()
    return manifest.MANIFEST_NAME


def swap_segments(d: Path, rng: random.Random) -> None:
    a, b = rng.sample(segments(d), 2)
    data_a, data_b = a.read_bytes(), b.read_bytes()
    a.write_bytes(data_b)
    b.write_bytes(data_a)


def newest_replaced_by_an_older_one(d: Path, rng: random.Random) -> None:
    files = segments(d)
    shutil.copy(rng.choice(files[:-1]), files[-1])


def older_snapshot_under_the_live_name(base: Base) -> Damage:
    def damage(d: Path, rng: random.Random) -> str:
        path = snapshot(d)
        path.write_bytes(base.older_snapshot)
        return path.name

    return damage


KINDS: dict[str, Damage | str] = {
    # bit flips, region by region
    "flip: a segment's first record": flip_first_record,
    "flip: a record header": flip_record_header,
    "flip: a record payload": flip_record_payload,
    "flip: MANIFEST, anywhere": flip_manifest,
    "flip: MANIFEST, both slots": flip_both_manifest_slots,
    "flip: snapshot header": flip_snapshot_header,
    "flip: snapshot data": flip_snapshot_data,
    "flip: the newest segment's preallocated tail": garbage_in_preallocated_tail,
    # truncations
    "truncate: the newest segment": truncate_newest_segment,
    "truncate: an older segment": truncate_older_segment,
    "truncate: the snapshot": truncate_snapshot,
    "truncate: MANIFEST": truncate_manifest,
    # zeroed sectors and tails
    "zero: a segment sector": zero_segment_sector,
    "zero: the newest segment's tail": zero_newest_tail,
    "zero: a snapshot sector": zero_snapshot_sector,
    "zero: a MANIFEST sector": zero_manifest_sector,
    # deleted files
    "delete: the newest segment": delete_segment(lambda s, rng: s[-1]),
    "delete: an older segment": delete_segment(lambda s, rng: rng.choice(s[:-1])),
    "delete: the oldest segment": delete_segment(lambda s, rng: s[0]),
    "delete: every segment": delete_all_segments,
    "delete: the snapshot": delete_snapshot,
    "delete: MANIFEST": delete_manifest,
    # swapped files
    "swap: two segments": swap_segments,
    "swap: an older segment copied over the newest": newest_replaced_by_an_older_one,
    "swap: an older snapshot under the live name": "older snapshot",
}


@pytest.mark.parametrize("kind", list(KINDS))
def test_damage_is_refused_or_repaired_without_loss(
    base: Base, kind: str, tmp_path: Path, seed: int, caplog: pytest.LogCaptureFixture
) -> None:
    print(f"seed={seed} (rerun with --seed {seed})")
    rng = random.Random(seed ^ zlib.crc32(kind.encode()))
    entry = KINDS[kind]
    damage = older_snapshot_under_the_live_name(base) if isinstance(entry, str) else entry
    outcomes: dict[str, int] = {"refused": 0, "repaired": 0}

    for case in range(CASES_PER_KIND):
        copy = tmp_path / f"case{case}"
        shutil.copytree(base.directory, copy)
        caplog.clear()
        named = damage(copy, rng)

        outcomes[check_outcome(copy, named, kind, base.acked, caplog)] += 1

    print(kind, outcomes)


def check_outcome(
    copy: Path, named: str | None, kind: str, acked: State, caplog: pytest.LogCaptureFixture
) -> str:
    with caplog.at_level(logging.WARNING):
        try:
            with FileStorage(copy) as storage:
                recovered = (storage.load(), storage.read_snapshot())
        except StorageCorruptError as exc:
            message = str(exc)
            assert "\n" not in message
            assert str(copy / (named or "")) in message, (kind, message)
            if named is not None and not kind.startswith(("delete", "swap")):
                assert " at offset " in message, (kind, message)
            return "refused"
    # Opened: nothing acknowledged may be missing, and the repair must be logged.
    assert recovered == acked, f"{kind}: opened with acknowledged state lost"
    assert any(r.levelno >= logging.WARNING for r in caplog.records), f"{kind}: silent"
    return "repaired"


def test_every_region_has_a_kind() -> None:
    # The matrix covers what the brief lists; a new file kind needs a row.
    regions = {kind.split(":")[0] for kind in KINDS}
    assert regions == {"flip", "truncate", "zero", "delete", "swap"}
