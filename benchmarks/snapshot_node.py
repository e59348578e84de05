"""One node of the snapshot benchmark: `python -m benchmarks.snapshot_node --id I ...`.

A `raftio.Node` over TCP (HMAC secret from $RAFTIO_BENCH_SECRET) and
FileStorage in its own data directory, whose state machine is a
`BulkState` (bytes generated on demand: a 1 GiB state costs no memory).
It is its own process so that its RSS is its own. The node starts only
when asked, so the harness can read the RSS of a warmed-up process first.
Control lines on stdin/stdout (`benchmarks.control`):

    start        start the Node; replies with the perf_counter time it began;
                 {"expect_bytes": n} names the snapshot size to expect, so that
                 the time its last chunk arrived is noted too
    status       role, leader, indexes, BulkState size/register, VmRSS/VmHWM
    propose      {"command": ["grow", n] | ["put", s]}: one proposal, its result
    fill         {"count", "bytes", "concurrency"}: that many puts of that size
                 (to push the log past `--snapshot-bytes`, so the node snapshots)
    load_start   {"concurrency", "payload"}: closed-loop puts until load_stop
    load_stop    their latency samples (seconds, `stats.encode_samples`)
    wait_size    {"size", "timeout"}: wait until BulkState.size >= size; the
                 times (perf_counter) the first InstallSnapshot chunk arrived,
                 the snapshot was installed, and the state restored
    trace_start  tracemalloc on (a diagnosis: it costs memory and time itself)
    trace_stop   the allocation sites that grew most, at the traced peak
    quit

`--raw-sink PORT --bytes N` is the other half of the raw loopback copy the
harness compares the transfer with: connect to 127.0.0.1:PORT, read N bytes
into one reused buffer, answer one byte, exit.

`--chunk-bytes` and `--inflight` are RaftConfig's `snapshot_chunk_bytes` and
`snapshot_chunks_inflight`; `--snapshot-bytes` is Node's `snapshot_bytes`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
import tracemalloc
from array import array
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from benchmarks.control import die_with_parent, reply_line, run_loop, serve_stdin
from benchmarks.stats import encode_samples
from raftio.config import RaftConfig
from raftio.node import Node
from raftio.testing.bulk_state import BulkState

__all__ = ["SECRET_ENV", "main", "memory"]

logger = logging.getLogger("benchmarks.snapshot_node")

CLUSTER_ID = "raftio-snapshot-bench"
SECRET_ENV = "RAFTIO_BENCH_SECRET"
SEED = 7
_POLL = 0.005  # seconds between looks at the receiver's progress
_CHUNK_KEY = 'raftio_rpc_received_total{method="install_snapshot"}'
_SENT_KEY = 'raftio_rpc_sent_total{method="install_snapshot"}'
_FAILED_KEY = 'raftio_rpc_failed_total{method="install_snapshot"}'


def memory(pid: int | str = "self") -> dict[str, int]:
    """VmRSS and VmHWM of a process, in bytes (from /proc/<pid>/status)."""
    out = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(("VmRSS:", "VmHWM:")):
                name, value, _unit = line.split()
                out[name[:-1]] = int(value) * 1024
    return out


class Load:
    """Closed-loop puts at this node: C workers, each proposing when its last one returns."""

    def __init__(self, node: Node, concurrency: int, payload: int) -> None:
        self.samples: array[float] = array("d")
        self.errors: dict[str, int] = {}
        self.first_error = ""
        self._stop = asyncio.Event()
        pad = "x" * max(0, payload - 8)
        self._tasks = [
            asyncio.ensure_future(self._worker(node, f"{i:03d}{pad}")) for i in range(concurrency)
        ]

    async def _worker(self, node: Node, value: str) -> None:
        clock, samples = time.perf_counter, self.samples
        n = 0
        while not self._stop.is_set():
            n += 1
            start = clock()
            try:
                await node.propose(("put", f"{value}{n % 100000:05d}"))
            except Exception as exc:  # counted, reported; the load goes on
                name = type(exc).__name__
                self.errors[name] = self.errors.get(name, 0) + 1
                self.first_error = self.first_error or f"{name}: {exc}"
                await asyncio.sleep(0.005)
                continue
            samples.append(clock() - start)

    async def cancel(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def stop(self) -> dict[str, Any]:
        self._stop.set()
        _, pending = await asyncio.wait(self._tasks, timeout=30.0)
        for task in pending:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        return {
            "ops": len(self.samples),
            "samples": encode_samples(self.samples),
            "errors": self.errors,
            "first_error": self.first_error,
        }


class PeakTracer:
    """tracemalloc from now on; a snapshot whenever traced memory reaches a new peak."""

    def __init__(self) -> None:
        tracemalloc.start(8)
        self.base = tracemalloc.take_snapshot()
        self.base_bytes = tracemalloc.get_traced_memory()[0]
        self.peak_bytes = self.base_bytes
        self.at_peak = self.base
        self._task = asyncio.ensure_future(self._watch())

    async def _watch(self) -> None:
        while True:
            current = tracemalloc.get_traced_memory()[0]
            if current > self.peak_bytes + (1 << 20):
                self.at_peak = tracemalloc.take_snapshot()
                self.peak_bytes = tracemalloc.get_traced_memory()[0]
            await asyncio.sleep(0.02)

    async def stop(self, top: int = 12) -> dict[str, Any]:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        stats = self.at_peak.compare_to(self.base, "traceback")[:top]
        tracemalloc.stop()
        sites = [
            {
                "growth": st.size_diff,
                "count": st.count_diff,
                "frames": [f"{frame.filename}:{frame.lineno}" for frame in st.traceback],
            }
            for st in stats
        ]
        return {"base": self.base_bytes, "peak": self.peak_bytes, "sites": sites}


class SnapshotNode:
    """The node, its BulkState, and the control commands the harness sends."""

    def __init__(self, options: argparse.Namespace) -> None:
        secret = os.environ.get(SECRET_ENV, "")
        if not secret:
            raise SystemExit(f"{SECRET_ENV} is not set")
        self.machine = BulkState(seed=SEED)
        config = RaftConfig(
            snapshot_chunk_bytes=options.chunk_bytes,
            snapshot_chunks_inflight=options.inflight,
        )
        self.node = Node(
            options.id,
            options.peers.split(","),
            str(options.data),
            self.machine,
            cluster_id=CLUSTER_ID,
            config=config,
            secret=secret.encode(),
            snapshot_bytes=options.snapshot_bytes,
            propose_timeout=60.0,
        )
        self.chunk_bytes: int = options.chunk_bytes
        self.started = False
        self.load: Load | None = None
        self.tracer: PeakTracer | None = None
        self.events: dict[str, float] = {}  # first time each was seen (perf_counter)
        self._watch: asyncio.Task[None] | None = None
        self._quit = asyncio.Event()

    async def close(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            await asyncio.gather(self._watch, return_exceptions=True)
        if self.load is not None:
            await self.load.cancel()  # its proposals may never commit now: do not wait
        if self.started:
            await self.node.close(transfer=False)

    async def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        commands: dict[str, Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]] = {
            "start": self._start,
            "status": self._status,
            "propose": self._propose,
            "fill": self._fill,
            "load_start": self._load_start,
            "load_stop": self._load_stop,
            "wait_size": self._wait_size,
            "trace_start": self._trace_start,
            "trace_stop": self._trace_stop,
            "quit": self._quit_cmd,
        }
        return await commands[request["cmd"]](request)

    async def _start(self, request: dict[str, Any]) -> dict[str, Any]:
        began = time.perf_counter()
        await self.node.start()
        self.started = True
        chunks = -(-(int(request.get("expect_bytes", 0)) + 1) // self.chunk_bytes)
        rss = memory()["VmRSS"]  # before any chunk: this task has not yielded since start()
        self._watch = asyncio.ensure_future(self._watch_progress(chunks))
        return {"ok": True, "began": began, "started": time.perf_counter(), "rss_started": rss}

    async def _watch_progress(self, chunks: int) -> None:
        """Note when the first and the last chunk arrived (the last: when `chunks` have,
        retransmissions included), the snapshot was installed, the state restored."""
        raft = self.node.raft
        while "restored" not in self.events:
            now = time.perf_counter()
            received = raft.metrics().get(_CHUNK_KEY, 0)
            if "first_chunk" not in self.events and received > 0:
                self.events["first_chunk"] = now
            if "last_chunk" not in self.events and chunks > 0 and received >= chunks:
                self.events["last_chunk"] = now
            if "installed" not in self.events and raft.status().snapshot_index > 0:
                self.events["installed"] = now
            if self.machine.restores > 0:
                self.events["restored"] = now
            await asyncio.sleep(_POLL)

    async def _status(self, _: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {
            "ok": True,
            "pid": os.getpid(),
            "size": self.machine.size,
            "restores": self.machine.restores,
            "register": self.machine.register,
            **memory(),
        }
        if self.started:
            st = self.node.status()
            metrics = self.node.metrics()
            out.update(
                role=st.role,
                term=st.term,
                leader_id=st.leader_id,
                commit_index=st.commit_index,
                applied_index=st.applied_index,
                snapshot_index=st.snapshot_index,
                log_bytes=st.log_bytes,
                snapshots_taken=metrics["raftio_node_snapshots_total"],
                chunks_sent=metrics.get(_SENT_KEY, 0),  # answered or failed
                chunks_failed=metrics.get(_FAILED_KEY, 0),
                chunks_received=metrics.get(_CHUNK_KEY, 0),
                failure=st.failure,
            )
        return out

    async def _propose(self, request: dict[str, Any]) -> dict[str, Any]:
        result = await self.node.propose(tuple(request["command"]))
        return {"ok": True, "result": result, "index": self.node.applied_index}

    async def _fill(self, request: dict[str, Any]) -> dict[str, Any]:
        count, size = int(request["count"]), int(request["bytes"])
        value = "f" * size
        left = iter(range(count))

        async def worker() -> None:
            for _ in left:
                await self.node.propose(("put", value))

        await asyncio.gather(*(worker() for _ in range(int(request["concurrency"]))))
        return {"ok": True, "index": self.node.applied_index}

    async def _load_start(self, request: dict[str, Any]) -> dict[str, Any]:
        if self.load is not None:
            raise RuntimeError("a load is already running")
        self.load = Load(self.node, int(request["concurrency"]), int(request["payload"]))
        return {"ok": True, "t": time.perf_counter()}

    async def _load_stop(self, _: dict[str, Any]) -> dict[str, Any]:
        if self.load is None:
            raise RuntimeError("no load is running")
        load, self.load = self.load, None
        return {"ok": True, "t": time.perf_counter(), **(await load.stop())}

    async def _wait_size(self, request: dict[str, Any]) -> dict[str, Any]:
        size = int(request["size"])
        async with asyncio.timeout(float(request.get("timeout", 600))):
            while self.machine.size < size:
                if self.node.failure is not None:
                    raise RuntimeError(f"the node failed: {self.node.failure}")
                await asyncio.sleep(_POLL)
        if self._watch is not None:
            await asyncio.wait_for(self._watch, 1.0)  # it notes "restored" at its next look
        return {"ok": True, "size": self.machine.size, "events": self.events, **memory()}

    async def _trace_start(self, _: dict[str, Any]) -> dict[str, Any]:
        self.tracer = PeakTracer()
        return {"ok": True}

    async def _trace_stop(self, _: dict[str, Any]) -> dict[str, Any]:
        if self.tracer is None:
            raise RuntimeError("not tracing")
        tracer, self.tracer = self.tracer, None
        return {"ok": True, **(await tracer.stop())}

    async def _quit_cmd(self, _: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True}


async def amain(options: argparse.Namespace) -> None:
    node = SnapshotNode(options)
    try:
        reply_line({"ok": True, "ready": True, "pid": os.getpid(), **memory()})
        control = asyncio.ensure_future(serve_stdin(node.handle))
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, control.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await control
    finally:
        await node.close()


def raw_sink(port: int, total: int) -> None:
    """Read `total` bytes from 127.0.0.1:`port` and discard them; then answer one byte."""
    buf = bytearray(1 << 20)
    view = memoryview(buf)
    with socket.create_connection(("127.0.0.1", port)) as sock:
        left = total
        while left > 0:
            n = sock.recv_into(view, min(left, len(buf)))
            if n == 0:
                raise SystemExit(f"the sender stopped {left} bytes short")
            left -= n
        sock.sendall(b"k")


def main() -> None:
    parser = argparse.ArgumentParser(description="one node of `raftio bench --snapshot`")
    parser.add_argument("--id", type=int)
    parser.add_argument("--peers", help="every node's Raft host:port")
    parser.add_argument("--data", type=Path)
    parser.add_argument("--snapshot-bytes", type=int, default=16 << 20)
    parser.add_argument("--chunk-bytes", type=int, default=RaftConfig().snapshot_chunk_bytes)
    parser.add_argument("--inflight", type=int, default=RaftConfig().snapshot_chunks_inflight)
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    parser.add_argument("--parent-pid", type=int)
    parser.add_argument("--log-level", default="WARNING")
    parser.add_argument("--raw-sink", type=int, metavar="PORT", help="be the raw copy's reader")
    parser.add_argument("--bytes", type=int, default=0, help="what --raw-sink reads")
    options = parser.parse_args()
    die_with_parent(options.parent_pid)
    if options.raw_sink is not None:
        raw_sink(options.raw_sink, options.bytes)
        return
    if options.id is None or options.peers is None or options.data is None:
        parser.error("--id, --peers and --data are required (unless --raw-sink)")
    logging.basicConfig(level=options.log_level, format="%(asctime)s %(name)s: %(message)s")
    run_loop(amain(options), options.loop)


if __name__ == "__main__":
    main()
