"""What bounds a single client here: fdatasync latency, loopback RTT, and machine facts.

* `fdatasync_latency(dir)`: append a small record to a file and fdatasync it,
  over and over, timing each pair (the disk the nodes' data directories use).
* `loopback_rtt(group)`: round trips of a small message to an echo server in
  another process (uvloop, asyncio streams), as two peers on this machine
  would see them. `python -m benchmarks.probes echo` is that server.
* `machine_facts()`: CPU model and count, memory, kernel, and the versions
  of Python, uvloop, raftio and the peers.

The single-client target of docs/benchmarks.md is 2 x (fdatasync p50 + RTT p50):
a leader and a follower each sync once and the entry crosses loopback twice
(proposal out, acknowledgement back) per commit.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.control import die_with_parent, reply_line, run_loop
from benchmarks.procs import Child, ProcessGroup

__all__ = ["fdatasync_latency", "loopback_rtt", "machine_facts", "main"]

_RECORD = 64  # bytes per append: a 16-byte entry with its framing, roughly
_MESSAGE = 64  # bytes per RTT probe message


def fdatasync_latency(directory: Path, count: int = 300) -> list[float]:
    """Seconds each write(64 bytes) + fdatasync took, on a file in `directory`."""
    path = directory / "fdatasync-probe.log"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    record = os.urandom(_RECORD)
    samples = []
    try:
        for _ in range(count):
            start = time.perf_counter()
            os.write(fd, record)
            os.fdatasync(fd)
            samples.append(time.perf_counter() - start)
    finally:
        os.close(fd)
        path.unlink()
    return samples


async def loopback_rtt(
    group: ProcessGroup, argv_prefix: list[str], env: dict[str, str], log: Path, count: int = 2000
) -> list[float]:
    """Seconds each round trip of a 64-byte message to an echo process on 127.0.0.1 took."""
    echo = await group.start(
        Child(
            "echo",
            [*argv_prefix, "benchmarks.probes", "echo", "--parent-pid", str(os.getpid())],
            log,
            env=env,
        )
    )
    try:
        port = int((await echo.read_reply(30.0))["port"])
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        message = os.urandom(_MESSAGE)
        samples = []
        try:
            for i in range(count + 200):
                start = time.perf_counter()
                writer.write(message)
                await reader.readexactly(_MESSAGE)
                if i >= 200:  # the first round trips warm up both processes
                    samples.append(time.perf_counter() - start)
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
    finally:
        await group.stop([echo])
    return samples


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    return platform.processor() or "unknown"


def _memory_gib() -> float | None:
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / (1 << 20), 1)
    return None


def _etcd_version() -> str | None:
    etcd = shutil.which("etcd")
    if etcd is None:
        return None
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run([etcd, "--version"], capture_output=True, text=True, timeout=10)
        return out.stdout.splitlines()[0].split(":", 1)[1].strip()
    return None


def _git(root: Path, *args: str) -> str | None:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10
        )
        if out.returncode == 0:
            return out.stdout.strip()
    return None


def _git_commit(root: Path) -> str | None:
    """HEAD's short hash, with "+changes" if raftio/ differs from it (a work tree in flux)."""
    commit = _git(root, "rev-parse", "--short", "HEAD")
    if commit and _git(root, "status", "--porcelain", "--", "raftio"):
        commit += "+changes"
    return commit


def machine_facts(checkout: Path) -> dict[str, Any]:
    """What the numbers were measured on."""
    return {
        "cpu_model": _cpu_model(),
        "nproc": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_count": os.cpu_count(),
        "memory_gib": _memory_gib(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "uvloop": _version("uvloop"),
        "msgpack": _version("msgpack"),
        "raftio": _version("raftio"),
        "raftio_commit": _git_commit(checkout),
        "pysyncobj": _version("pysyncobj"),
        "etcd": _etcd_version(),
        "platform": platform.platform(),
    }


# --------------------------------------------------------------------------- echo server


async def _echo_server() -> None:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
        except ConnectionError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    reply_line({"ok": True, "port": server.sockets[0].getsockname()[1]})
    loop = asyncio.get_running_loop()
    stdin_closed = loop.create_future()

    class _Eof(asyncio.Protocol):
        def connection_lost(self, exc: Exception | None) -> None:
            if not stdin_closed.done():
                stdin_closed.set_result(None)

    transport, _ = await loop.connect_read_pipe(_Eof, sys.stdin)
    try:
        await stdin_closed
    finally:
        transport.close()
        server.close()
        await server.wait_closed()


def main() -> None:
    parser = argparse.ArgumentParser(description="probes for `raftio bench`")
    parser.add_argument("what", choices=["echo"])
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    parser.add_argument("--parent-pid", type=int)
    options = parser.parse_args()
    die_with_parent(options.parent_pid)
    run_loop(_echo_server(), options.loop)


if __name__ == "__main__":
    main()
