"""FileStorage group commit against the disk's raw one-fsync-per-append rate.

    python benchmarks/storage_bench.py [--seconds 2] [--loop asyncio|uvloop] [--dir DIR]

Raw: one process appends an entry-sized record and fdatasyncs, in a loop.
FileStorage: N writer tasks, each appending one entry and awaiting sync(),
over and over. Prints entries/s, fsyncs per entry and the ratio to the raw
rate for 1, 16 and 256 writers with 16 B and 1 KiB entries, and the CPU
ceiling: 256 writers with fsync skipped. A script, not a test: the numbers
depend on the machine, and on a shared disk they move from run to run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from raftio.messages import Entry
from raftio.storage.file import Disk, FileStorage
from raftio.testing import LoopKind, run

WRITERS = (1, 16, 256)
SIZES = (16, 1024)
MAX_ENTRIES = 60_000  # caps memory and disk use of one run


class NoFsyncDisk(Disk):
    """For the CPU ceiling: everything but the fsyncs."""

    def fdatasync(self, fd: int) -> None:
        pass

    def fsync_dir(self, fd: int) -> None:
        pass


@dataclass(slots=True)
class Result:
    entries: int
    seconds: float
    fsyncs: int

    @property
    def rate(self) -> float:
        return self.entries / self.seconds


def raw_rate(directory: Path, size: int, seconds: float) -> Result:
    """Appends of `size` bytes, each followed by its own fdatasync."""
    path = directory / "raw.log"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    record = os.urandom(size + 12)  # an entry plus a frame header
    count, started = 0, time.perf_counter()
    try:
        while time.perf_counter() - started < seconds:
            os.write(fd, record)
            os.fdatasync(fd)
            count += 1
    finally:
        os.close(fd)
        path.unlink()
    return Result(count, time.perf_counter() - started, count)


async def group_commit(
    directory: Path, writers: int, size: int, seconds: float, disk: Disk | None = None
) -> Result:
    storage = FileStorage(directory, disk=disk)
    payload = os.urandom(size)
    next_index = 1
    fsyncs_before = storage.fsync_count
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds

    async def writer() -> None:
        nonlocal next_index
        while loop.time() < deadline and next_index <= MAX_ENTRIES:
            # No await between reading and using next_index: the loop is the lock.
            storage.append_entries(next_index, [Entry(1, payload)])
            next_index += 1
            pending = storage.sync()
            if pending is not None:
                await pending

    started = time.perf_counter()
    await asyncio.gather(*(writer() for _ in range(writers)))
    elapsed = time.perf_counter() - started
    result = Result(next_index - 1, elapsed, storage.fsync_count - fsyncs_before)
    storage.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="per measurement")
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    parser.add_argument("--dir", default=None, help="on the disk to measure (default: tmp)")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="raftio-bench-", dir=args.dir))
    try:
        report(base, args.seconds, args.loop)
    finally:
        shutil.rmtree(base)


def report(base: Path, seconds: float, loop: LoopKind) -> None:
    print(f"directory {base}, event loop {loop}, {seconds:g} s per measurement")
    print("raw/s: one write+fdatasync per append, measured just before each row\n")
    header = f"{'writers':>7} {'entry':>6} {'raw/s':>7} {'entries/s':>11} {'fsyncs/entry':>13}"
    print(header + f" {'x raw':>7}")
    for size in SIZES:
        label = f"{size} B" if size < 1024 else f"{size // 1024} KiB"
        for writers in WRITERS:
            raw = raw_rate(base, size, seconds / 2)
            result = run(group_commit(base / "fs", writers, size, seconds), loop)
            row(str(writers), label, result, raw)
            shutil.rmtree(base / "fs")
        raw = raw_rate(base, size, seconds / 2)
        ceiling = run(group_commit(base / "fs", 256, size, seconds, NoFsyncDisk()), loop)
        row("256 cpu", label, ceiling, raw)
        shutil.rmtree(base / "fs")
    print("\nfsyncs/entry counts every fdatasync and directory fsync FileStorage made;")
    print("'256 cpu' skips the fsyncs: the most this event loop can do with this code.")


def row(writers: str, label: str, result: Result, raw: Result) -> None:
    per_entry = result.fsyncs / result.entries
    ratio = result.rate / raw.rate
    print(
        f"{writers:>7} {label:>6} {raw.rate:>7,.0f} {result.rate:>11,.0f} "
        f"{per_entry:>13.3f} {ratio:>7.1f}"
    )


if __name__ == "__main__":
    main()
