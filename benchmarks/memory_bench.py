"""What raftio's memory costs: `python -m benchmarks --memory` (docs/benchmarks.md#memory).

Two measurements, each of one process's resident set (VmRSS, /proc/PID/status):

1. **The log**: a single-voter raftio `Node` (it commits alone, so nothing
   else is measured) with snapshots off appends N entries whose commands are
   `("set", "k", value)` with 16-character values, in bursts of 4096: 4095
   through `Raft.start` (no proposer futures: what stays is the log), the
   last through `Node.propose`, awaited (so a burst is committed and applied
   before the next), after a warm-up of 4 bursts. The peer commits and
   applies them (the state machine keeps one key: the growth is
   the log's). RSS after (everything applied, durable, `gc.collect()`) minus
   RSS before, per million entries. Once with `FileStorage` (fsync on), once
   with `MemoryStorage`; each in a fresh process
   (`python -m benchmarks.memory_bench --log ...`).
2. **Idle KV connections**: one `benchmarks.raftio_node` process (a
   single-node cluster serving the KV port); the harness opens N TCP
   connections to its KV port, each sends one `hello` (so the server admits
   it: unadmitted connections are evicted after 5 s), then all stay idle.
   The node's RSS growth over N, in KiB per connection; then the RSS after
   they are closed.

Results: OUT/memory.json and a table on stdout; progress on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime
import gc
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.control import die_with_parent, reply_line, run_loop
from benchmarks.counters import raise_fd_limit
from benchmarks.loadgen import random_values
from benchmarks.procs import Child, ChildError, ProcessGroup, child_env

__all__ = ["Settings", "log_growth", "main", "rss", "run", "table"]

PACKAGE_ROOT = Path(__file__).resolve().parent.parent
MiB = 1 << 20
BURST = 4096  # Raft.start calls between two yields to the loop
PAYLOAD = 16


@dataclasses.dataclass(slots=True)
class Settings:
    entries: int = 1_000_000
    connections: int = 1000
    storages: tuple[str, ...] = ("file", "memory")
    loop: str = "uvloop"
    out: Path | None = None
    timeout: float = 600.0  # seconds one measurement may take


def rss(pid: int | str = "self") -> int:
    """VmRSS of a process, in bytes."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise OSError(f"no VmRSS for {pid}")


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# ------------------------------------------------------------------ 1. the log


async def log_growth(entries: int, storage_kind: str, data: Path) -> dict[str, Any]:
    """In this process: a single-voter Node appends `entries` entries (see the module doc)."""
    from benchmarks.raftio_node import BenchMachine
    from raftio.codec import encode_command
    from raftio.kv.spec import free_ports
    from raftio.messages import Entry
    from raftio.node import Node
    from raftio.storage.file import FileStorage
    from raftio.storage.memory import MemoryStorage

    storage = FileStorage(data) if storage_kind == "file" else MemoryStorage()
    address = f"127.0.0.1:{free_ports(1)[0]}"
    node = Node(0, [address], data, BenchMachine(), cluster_id="raftio-memory",
                storage=storage, snapshot_bytes=1 << 62, propose_timeout=60.0)  # fmt: skip
    await node.start()
    try:
        await node.wait_for_leader(30.0)
        pool = random_values(PAYLOAD)
        values = [next(pool) for _ in range(BURST)]
        # Warm-up: code paths, the one key, the tables a burst grows to their size.
        await _append(node, values, 4 * BURST)
        before = await _settled_rss()
        started = time.perf_counter()
        last = await _append(node, values, entries)
        seconds = time.perf_counter() - started
        after = await _settled_rss()
        status = node.status()
        entry = Entry(status.term, encode_command(("set", "k", values[0])))  # as one held
        return {
            "storage": type(storage).__name__,
            "entries": entries,
            "entries_held": status.last_index - status.snapshot_index,
            "last_index": last,
            "rss_before": before,
            "rss_after": after,
            "growth": after - before,
            "bytes_per_entry": (after - before) / entries,
            "mib_per_million": (after - before) / MiB / (entries / 1e6),
            "seconds": seconds,
            "entry_object_bytes": sys.getsizeof(entry),
            "command_bytes_object": sys.getsizeof(entry.data),
            "command_bytes": len(entry.data),
        }
    finally:
        await node.close()


async def _append(node: Any, values: list[str], count: int) -> int:
    """Append `count` entries in bursts: each burst's last one is proposed and awaited,
    so the burst is applied (and durable) before the next starts. Returns the last index."""
    raft, last = node.raft, 0
    for first in range(0, count, BURST):
        size = min(BURST, count - first)
        for i in range(first, first + size - 1):
            last, _, is_leader = raft.start(("set", "k", values[i % len(values)]))
            if not is_leader:
                raise RuntimeError("the single voter lost its leadership")
        await node.propose(("set", "k", values[(first + size - 1) % len(values)]))
        last += 1
    return last


async def _settled_rss() -> int:
    """RSS once pending writes are out and garbage is collected."""
    await asyncio.sleep(0.2)  # the durable watermark's idle write, buffers freed
    gc.collect()
    return rss()


# ------------------------------------------------------------------ 2. idle connections


async def connections_growth(
    group: ProcessGroup, workdir: Path, logs: Path, count: int, loop: str
) -> dict[str, Any]:
    """RSS of one raftio node process before, with `count` idle KV connections, after."""
    from raftio.kv.spec import free_ports

    raft_port, kv_port = free_ports(2)
    argv = [sys.executable, "-m", "benchmarks.raftio_node", "--id", "0",
            "--peers", f"127.0.0.1:{raft_port}", "--client-peers", f"127.0.0.1:{kv_port}",
            "--data", str(workdir / "kv-node"), "--loop", loop,
            "--parent-pid", str(os.getpid())]  # fmt: skip
    child = Child("kv-node", argv, logs / "kv-node.log", env=child_env(PACKAGE_ROOT))
    node = await group.start(child)
    try:
        await node.read_reply(60.0)
        await _wait_leader(node)
        await asyncio.sleep(0.5)
        before = rss(node.pid)
        streams = await _open_idle(kv_port, count)
        try:
            await asyncio.sleep(0.5)
            held = rss(node.pid)
        finally:
            for _, writer in streams:
                writer.close()
            for _, writer in streams:
                with contextlib.suppress(ConnectionError):
                    await writer.wait_closed()
        await asyncio.sleep(1.0)  # the server's connection tasks end
        closed = rss(node.pid)
    finally:
        with contextlib.suppress(ChildError):
            await node.request({"cmd": "quit"}, 10.0)
        await group.stop([node])
    return {
        "connections": count,
        "rss_before": before,
        "rss_with": held,
        "rss_after_close": closed,
        "growth": held - before,
        "kib_per_connection": (held - before) / 1024 / count,
    }


async def _wait_leader(node: Child, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (await node.request({"cmd": "status"}, 10.0))["role"] == "leader":
            return
        await asyncio.sleep(0.1)
    raise ChildError("the single-node cluster elected no leader")


async def _open_idle(
    port: int, count: int, batch: int = 100
) -> list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """`count` KV connections, each admitted by one hello, then left idle."""
    streams: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    try:
        for first in range(0, count, batch):
            streams += await asyncio.gather(
                *(_hello(port) for _ in range(min(batch, count - first)))
            )
    except BaseException:
        for _, writer in streams:
            writer.close()
        raise
    return streams


async def _hello(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    from raftio.kv.protocol import encode_frame, read_frame

    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(encode_frame({"op": "hello", "nonce": os.urandom(16)}))
    reply = await read_frame(reader)
    if not (isinstance(reply, dict) and reply.get("ok")):
        writer.close()
        raise ChildError(f"the KV server did not admit a connection: {reply!r:.80}")
    return reader, writer


# ------------------------------------------------------------------ the run


async def _run_async(settings: Settings, workdir: Path, logs: Path) -> dict[str, Any]:
    results: dict[str, Any] = {"log": [], "connections": None}
    async with ProcessGroup() as group:
        for kind in settings.storages:
            log(f"log: {settings.entries:,} entries of {PAYLOAD} B, {kind} storage")
            argv = [sys.executable, "-m", "benchmarks.memory_bench", "--log",
                    "--entries", str(settings.entries), "--storage", kind,
                    "--data", str(workdir / f"log-{kind}"), "--loop", settings.loop,
                    "--parent-pid", str(os.getpid())]  # fmt: skip
            child = await group.start(
                Child(f"log-{kind}", argv, logs / f"log-{kind}.log", env=child_env(PACKAGE_ROOT))
            )
            results["log"].append(await child.read_reply(settings.timeout))
            await group.stop([child])
        log(f"connections: {settings.connections:,} idle KV connections to one node")
        results["connections"] = await connections_growth(
            group, workdir, logs, settings.connections, settings.loop
        )
    return results


def run(settings: Settings) -> int:
    """Both measurements; 0 if they ran, 1 if one failed, 130 if interrupted."""
    out = settings.out or Path("results") / (
        datetime.datetime.now().strftime("%Y%m%d-%H%M%S") + "-memory"
    )
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    raise_fd_limit()  # the harness holds the idle connections' client ends
    with tempfile.TemporaryDirectory(prefix="raftio-memory-bench-") as work:
        try:
            measured = run_loop(_run_async(settings, Path(work), logs), settings.loop)
        except (KeyboardInterrupt, asyncio.CancelledError):
            log("interrupted")
            return 130
        except (ChildError, OSError, RuntimeError) as exc:
            log(f"the memory benchmark failed: {exc!r}"[:4000])
            log(f"logs in {logs}/")
            return 1
    results = {"settings": {**dataclasses.asdict(settings), "out": str(out)}, **measured}
    (out / "memory.json").write_text(json.dumps(results, indent=1) + "\n")
    print(table(results))
    log(f"results in {out}/memory.json")
    return 0


def table(results: dict[str, Any]) -> str:
    """The results as a markdown table."""
    rows = ["| measurement | per unit | RSS before -> after | detail |"]
    rows.append("| --- | --- | --- | --- |")
    for r in results.get("log", ()):
        rows.append(
            f"| log of {r['entries']:,} entries of {PAYLOAD} B, {r['storage']} "
            f"| **{r['mib_per_million']:.1f} MiB per million entries** "
            f"({r['bytes_per_entry']:.0f} B each) "
            f"| {r['rss_before'] / MiB:.1f} -> {r['rss_after'] / MiB:.1f} MiB "
            f"| Entry object {r['entry_object_bytes']} B + command bytes object "
            f"{r['command_bytes_object']} B ({r['command_bytes']} B of msgpack); "
            f"appended, committed and applied in {r['seconds']:.1f} s |"
        )
    c = results.get("connections")
    if c:
        rows.append(
            f"| {c['connections']:,} idle KV connections to one node "
            f"| **{c['kib_per_connection']:.1f} KiB per connection** "
            f"| {c['rss_before'] / MiB:.1f} -> {c['rss_with'] / MiB:.1f} MiB "
            f"| {c['rss_after_close'] / MiB:.1f} MiB once they are closed |"
        )
    return "\n".join(rows)


# ------------------------------------------------------------------ the child


def main() -> None:
    """`python -m benchmarks.memory_bench --log ...`: measurement 1 in this process,
    one JSON line on stdout."""
    parser = argparse.ArgumentParser(description="the log's memory, for `raftio bench --memory`")
    parser.add_argument("--log", action="store_true", required=True)
    parser.add_argument("--entries", type=int, required=True)
    parser.add_argument("--storage", choices=["file", "memory"], required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    parser.add_argument("--parent-pid", type=int)
    options = parser.parse_args()
    die_with_parent(options.parent_pid)
    result = run_loop(log_growth(options.entries, options.storage, options.data), options.loop)
    reply_line({"ok": True, **result})


if __name__ == "__main__":
    main()
