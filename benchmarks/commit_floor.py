"""The commit floor: one commit's I/O with raftio's thread design, and no Raft.

Three processes on 127.0.0.1, as a 3-node cluster would be: a "leader"
sends a 64-byte message to two "followers" and appends it to its own file;
each follower hands the message to a writer thread that appends it and
fdatasyncs, then answers from its event loop; the leader's commit is done
once two of the three copies are durable: its own and one answer, or both
answers (as raftio commits, Raft thesis 10.2.1). The files are preallocated
as raftio's WAL segments are, so an fdatasync needs no journal commit for
the file's size. Each process is a uvloop loop plus
a writer thread woken through a condition variable and answering with
`call_soon_threadsafe`, as `FileStorage` does. A single client's commits run
back to back, so the samples are the latency of a C=1 commit with none of
the protocol's CPU: what remains between raftio's single-client p50 and this
floor is Python work of raftio's own, and what remains between the floor and
2 x (fdatasync + RTT) is the thread design and the 2-core machine.

`python -m benchmarks.commit_floor follower|leader ...` are the processes;
`commit_floor(group, ...)` runs one measurement from `raftio bench`.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from benchmarks.control import die_with_parent, reply_line, run_loop
from benchmarks.procs import Child, ProcessGroup

__all__ = ["Round", "commit_floor", "main"]

_MESSAGE = 64  # bytes: a 16-byte entry with its framing, as the fdatasync probe
_WARMUP = 200
_PREALLOCATE = 64 << 20  # room for every message of a run, as a WAL segment


class _Writer:
    """Appends and fdatasyncs on its own thread; tells the loop when each batch is durable."""

    def __init__(self, loop: asyncio.AbstractEventLoop, path: Path) -> None:
        self._loop = loop
        self._path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.posix_fallocate(self._fd, 0, _PREALLOCATE)
        self._ready = threading.Condition()
        self._jobs: list[tuple[bytes, Callable[[], None]]] = []
        threading.Thread(target=self._run, daemon=True, name="floor-writer").start()

    def submit(self, data: bytes, done: Callable[[], None]) -> None:
        with self._ready:
            self._jobs.append((data, done))
            self._ready.notify()

    def remove(self) -> None:
        """Delete the file at the end (the thread may still hold the descriptor)."""
        self._path.unlink(missing_ok=True)

    def _run(self) -> None:
        while True:
            with self._ready:
                while not self._jobs:
                    self._ready.wait()
                jobs, self._jobs = self._jobs, []
            os.write(self._fd, b"".join(data for data, _ in jobs))
            os.fdatasync(self._fd)
            for _, done in jobs:
                self._loop.call_soon_threadsafe(done)


class _Follower(asyncio.Protocol):
    def __init__(self, writer: _Writer) -> None:
        self._writer = writer
        self._buffer = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while len(self._buffer) >= _MESSAGE:
            message, self._buffer = self._buffer[:_MESSAGE], self._buffer[_MESSAGE:]
            self._writer.submit(message, functools.partial(self._answer, message))

    def _answer(self, message: bytes) -> None:
        self._transport.write(message[:8])  # type: ignore[attr-defined]


class _Answers(asyncio.Protocol):
    """Calls `on_answer(round)` for each 8-byte answer (the round it answers)."""

    def __init__(self, on_answer: Callable[[int], None]) -> None:
        self._on_answer = on_answer
        self._buffer = b""

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while len(self._buffer) >= 8:
            answer, self._buffer = self._buffer[:8], self._buffer[8:]
            self._on_answer(int.from_bytes(answer, "big"))


async def _follower(directory: Path) -> None:
    loop = asyncio.get_running_loop()
    writer = _Writer(loop, directory / f"floor-follower-{os.getpid()}.log")
    server = await loop.create_server(lambda: _Follower(writer), "127.0.0.1", 0)
    reply_line({"ok": True, "port": server.sockets[0].getsockname()[1]})
    await loop.run_in_executor(None, sys.stdin.read)  # until the parent closes stdin
    server.close()
    writer.remove()


class Round:
    """One floor commit: done once two of the three copies of this round are durable.

    A round's late copy (the second answer once the leader's sync and one
    answer are in) may arrive during the next round: it counts for none.
    """

    def __init__(self, number: int, loop: asyncio.AbstractEventLoop) -> None:
        self.number = number
        self.committed: asyncio.Future[None] = loop.create_future()
        self._durable = 0

    def durable(self, number: int) -> None:
        """A copy of round `number` is durable: the leader's own, or an answer."""
        if number == self.number:
            self._durable += 1
            if self._durable >= 2 and not self.committed.done():
                self.committed.set_result(None)


async def _leader(directory: Path, ports: list[int], count: int) -> None:
    loop = asyncio.get_running_loop()
    writer = _Writer(loop, directory / "floor-leader.log")
    current = Round(-1, loop)

    def durable(number: int) -> None:
        current.durable(number)

    transports = []
    for port in ports:
        transport, _ = await loop.create_connection(lambda: _Answers(durable), "127.0.0.1", port)
        transports.append(transport)
    body = os.urandom(_MESSAGE - 8)
    samples = []
    for i in range(count + _WARMUP):
        current = Round(i, loop)
        message = i.to_bytes(8, "big") + body  # the answer is its first 8 bytes
        start = time.perf_counter()
        for transport in transports:
            transport.write(message)
        writer.submit(message, functools.partial(durable, i))
        await current.committed
        if i >= _WARMUP:
            samples.append(time.perf_counter() - start)
    writer.remove()
    reply_line({"ok": True, "samples": samples})


async def commit_floor(
    group: ProcessGroup,
    argv_prefix: list[str],
    env: dict[str, str],
    directory: Path,
    logs: Path,
    count: int = 2000,
) -> list[float]:
    """Seconds each of `count` back-to-back floor commits took (after a warm-up)."""
    module = [*argv_prefix, "benchmarks.commit_floor"]
    parent = ["--parent-pid", str(os.getpid()), "--dir", str(directory)]
    followers = [
        await group.start(
            Child(f"floor-{n}", [*module, "follower", *parent], logs / f"floor-{n}.log", env=env)
        )
        for n in (1, 2)
    ]
    try:
        ports = [str((await f.read_reply(30.0))["port"]) for f in followers]
        leader = await group.start(
            Child(
                "floor-leader",
                [*module, "leader", *parent, "--ports", ",".join(ports), "--count", str(count)],
                logs / "floor-leader.log",
                env=env,
            )
        )
        try:
            samples = (await leader.read_reply(120.0))["samples"]
        finally:
            await group.stop([leader])
    finally:
        await group.stop(followers)
    return [float(s) for s in samples]


def main() -> None:
    parser = argparse.ArgumentParser(description="the commit floor's processes")
    parser.add_argument("role", choices=["follower", "leader"])
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--ports", default="")
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    parser.add_argument("--parent-pid", type=int)
    options = parser.parse_args()
    die_with_parent(options.parent_pid)
    if options.role == "follower":
        run_loop(_follower(options.dir), options.loop)
    else:
        ports = [int(p) for p in options.ports.split(",")]
        run_loop(_leader(options.dir, ports, options.count), options.loop)


if __name__ == "__main__":
    main()
