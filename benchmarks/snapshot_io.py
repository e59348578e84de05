"""Snapshot file I/O from the event loop: aiofiles against raftio's executor calls.

Writes SIZE bytes in 1 MiB chunks (then fdatasync) and reads them back, three
ways, in one run:

- ``executor``: what raftio/storage/snapshot_file.py does, one
  `loop.run_in_executor` call per chunk (os.write + crc32; os.pread);
- ``aiofiles``: `aiofiles.open`, `await f.write(chunk)` per chunk, then
  `await f.flush()` and an fdatasync through the executor; `await f.read()`;
- ``blocking``: the same system calls on the loop itself (the floor for
  throughput, and what the loop would suffer).

For each: MB/s, and the loop's worst stall (a 1 ms ticker's largest lateness)
while the I/O runs. Run: ``python -m benchmarks.snapshot_io [--size MiB]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
import zlib
from collections.abc import Awaitable, Callable

CHUNK = 1 << 20


async def _ticker(stop: asyncio.Event, worst: list[float]) -> None:
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        due = loop.time() + 0.001
        await asyncio.sleep(0.001)
        worst[0] = max(worst[0], loop.time() - due)


async def _measure(fn: Callable[[], Awaitable[None]]) -> tuple[float, float]:
    stop, worst = asyncio.Event(), [0.0]
    ticker = asyncio.create_task(_ticker(stop, worst))
    await asyncio.sleep(0.01)
    started = time.perf_counter()
    await fn()
    elapsed = time.perf_counter() - started
    stop.set()
    await ticker
    return elapsed, worst[0]


def _write_crc(fd: int, data: bytes, crc: int) -> int:
    os.write(fd, data)
    return zlib.crc32(data, crc)


async def executor_write(path: str, size: int, block: bytes) -> None:
    loop = asyncio.get_running_loop()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    crc = 0
    for _ in range(size // CHUNK):
        crc = await loop.run_in_executor(None, _write_crc, fd, block, crc)
    await loop.run_in_executor(None, os.fdatasync, fd)
    os.close(fd)


async def executor_read(path: str, size: int) -> None:
    loop = asyncio.get_running_loop()
    fd = os.open(path, os.O_RDONLY)
    for offset in range(0, size, CHUNK):
        await loop.run_in_executor(None, os.pread, fd, CHUNK, offset)
    os.close(fd)


async def aiofiles_write(path: str, size: int, block: bytes) -> None:
    import aiofiles

    loop = asyncio.get_running_loop()
    async with aiofiles.open(path, "wb") as f:
        crc = 0
        for _ in range(size // CHUNK):
            await f.write(block)
            crc = zlib.crc32(block, crc)
        await f.flush()
        await loop.run_in_executor(None, os.fdatasync, f.fileno())


async def aiofiles_read(path: str, size: int) -> None:
    import aiofiles

    async with aiofiles.open(path, "rb") as f:
        for _ in range(0, size, CHUNK):
            await f.read(CHUNK)


async def blocking_write(path: str, size: int, block: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    crc = 0
    for _ in range(size // CHUNK):
        crc = _write_crc(fd, block, crc)
        await asyncio.sleep(0)
    os.fdatasync(fd)
    os.close(fd)


async def blocking_read(path: str, size: int) -> None:
    fd = os.open(path, os.O_RDONLY)
    for offset in range(0, size, CHUNK):
        os.pread(fd, CHUNK, offset)
        await asyncio.sleep(0)
    os.close(fd)


async def main(size: int, rounds: int, directory: str) -> None:
    block = os.urandom(CHUNK)
    ways = {
        "executor": (executor_write, executor_read),
        "aiofiles": (aiofiles_write, aiofiles_read),
        "blocking": (blocking_write, blocking_read),
    }
    try:
        import aiofiles  # noqa: F401
    except ImportError:
        print("aiofiles is not installed (pip install -e '.[bench]'): its row is left out")
        del ways["aiofiles"]
    results: dict[str, list[tuple[float, float, float, float]]] = {name: [] for name in ways}
    path = os.path.join(directory, "snapshot-io.bin")
    for _ in range(rounds):  # interleaved rounds: a noisy machine hits each way alike
        for name, (write, read) in ways.items():
            w, w_stall = await _measure(lambda write=write: write(path, size, block))
            r, r_stall = await _measure(lambda read=read: read(path, size))
            results[name].append((w, w_stall, r, r_stall))
            os.unlink(path)
    mb = size / 1e6
    print(f"{size >> 20} MiB, 1 MiB chunks, median of {rounds} rounds")
    head = ("way", "write MB/s", "write stall ms", "read MB/s", "read stall ms")
    print(f"{head[0]:10} {head[1]:>11} {head[2]:>15} {head[3]:>10} {head[4]:>14}")
    for name, rows in results.items():
        rows.sort()
        w, w_stall, r, r_stall = (sorted(col)[len(col) // 2] for col in zip(*rows, strict=True))
        print(
            f"{name:10} {mb / w:11.0f} {w_stall * 1000:15.1f} {mb / r:10.0f} {r_stall * 1000:14.1f}"
        )


def cli() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=1024, help="MiB to write and read (default 1024)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--dir", default=None, help="where to write (default: a temporary directory)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as directory:
        asyncio.run(main(args.size << 20, args.rounds, directory))


if __name__ == "__main__":
    cli()
