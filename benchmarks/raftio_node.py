"""One raftio peer for the benchmark: `python -m benchmarks.raftio_node --id I ...`.

A `raftio.Node` over TCP and FileStorage (fsync on, or off through a `Disk`
whose syncs do nothing), the KV service's client port (`KVServer`, for the
end-to-end workload), and a control channel on stdin/stdout
(`benchmarks.control`):

    status     role, term, leader, commit index
    counters   CPU seconds, fsyncs, RPCs by method, bytes on the Raft sockets,
               commit index: the harness reads them at a window's edges
    load       the embedded workload: C tasks in this process call
               `node.propose(("set", key, value))` in a closed loop; returns the
               latency samples and the counters at the window's edges;
               with `op` "read", C tasks call `node.read(key)` (linearizable:
               ReadIndex, or a lease with `--lease-reads on`) of one key
               written first;
               `profile` names a file to write a cProfile of the window to,
               `profile_timer` "wall" (default: where the loop's time goes,
               waits on the GIL and on system calls included) or "cpu" (this
               thread's CPU time, `time.thread_time`)
    stage_arm  measure a window [start, end] in the background (`--profile`'s
               stage profile, benchmarks.stages.WindowProbe): CPU of the
               process and of each thread, context switches, commit index and
               fsyncs at its edges; with `profile` (a path), a cProfile of the
               loop thread folded into stages
    stage_collect  that window's result (waits for its end)
    quit

RPCs are counted by wrapping each peer's `TcpClientEnd` (one counter bump
per call); bytes are read from the sockets' TCP_INFO, so counting costs the
measured code nothing. raftio's own modules are used as they are.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import logging
import os
import signal
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

from benchmarks.control import die_with_parent, reply_line, run_loop, serve_stdin
from benchmarks.counters import raise_fd_limit, wire_bytes
from benchmarks.loadgen import Window, closed_loop, random_values, wait_until
from benchmarks.profiles import cprofile_summary
from benchmarks.stages import WindowProbe
from raftio.config import RaftConfig
from raftio.kv.machine import KVStateMachine
from raftio.kv.server import KVServer
from raftio.node import Node, parse_address
from raftio.storage.file import Disk, FileStorage
from raftio.transport.tcp import TcpClientEnd, TcpServer, serve

__all__ = ["BenchMachine", "CountingEnd", "NoSyncDisk", "main"]

logger = logging.getLogger("benchmarks.raftio_node")

CLUSTER_ID = "raftio-bench"
READ_KEY = "read-key"  # the one key the embedded read workload reads


class NoSyncDisk(Disk):
    """fsync off: every write still happens, no fdatasync / directory fsync does."""

    def fdatasync(self, fd: int) -> None:
        pass

    def fsync_dir(self, fd: int) -> None:
        pass


class BenchMachine(KVStateMachine):
    """The KV service's state machine, plus a bare `("set", key, value)` for the
    embedded workload (a dict store, as PySyncObj's side of the comparison)."""

    def apply(self, command: Any) -> str | None:
        if len(command) == 3 and command[0] == "set":
            self.data[command[1]] = command[2]
            return None
        return super().apply(command)


class CountingEnd:
    """A ClientEnd that counts the calls it forwards, by method."""

    def __init__(self, end: TcpClientEnd) -> None:
        self.end = end
        self.calls: Counter[str] = Counter()

    async def call(self, method: str, args: Any) -> Any | None:
        self.calls[method] += 1
        return await self.end.call(method, args)

    def start_call(self, method: str, args: Any) -> asyncio.Future[Any]:
        self.calls[method] += 1
        return self.end.start_call(method, args)


class BenchNode:
    """The node, its RPC server, its client port and the counters the harness reads."""

    def __init__(self, options: argparse.Namespace) -> None:
        self.id: int = options.id
        self.peers: list[str] = options.peers.split(",")
        self.client_peers: list[str] = options.client_peers.split(",")
        self.fsync: bool = options.fsync == "on"
        # Built only when asked: a raftio without lease_reads refuses the keyword.
        config = RaftConfig(lease_reads=True) if options.lease_reads == "on" else None
        self.machine = BenchMachine()
        self.storage = FileStorage(options.data, disk=Disk() if self.fsync else NoSyncDisk())
        self.ends = [
            CountingEnd(TcpClientEnd(*parse_address(a), cluster_id=CLUSTER_ID, node_id=self.id))
            for a in self.peers
        ]
        self.node = Node(
            self.id,
            self.peers,
            options.data,
            self.machine,
            cluster_id=CLUSTER_ID,
            storage=self.storage,
            peers=self.ends,
            propose_timeout=30.0,
            config=config,
        )
        self.kv = KVServer(
            self.node,
            self.machine,
            self.client_peers,
            timeout=30.0,
            max_connections=1 << 16,
            max_pending=1 << 16,
            max_sessions=1 << 16,
            # A client process opens all its connections (2,048 at C=4096) before
            # its first request admits any of them: 5 s is not enough here.
            handshake_timeout=60.0,
        )
        self.server: TcpServer | None = None
        self.raft_port = parse_address(self.peers[self.id])[1]
        self.peer_ports = {parse_address(a)[1] for i, a in enumerate(self.peers) if i != self.id}
        self.probe = WindowProbe(self.counters)

    async def start(self) -> None:
        await self.node.start()
        host, port = parse_address(self.peers[self.id])
        self.server = await serve(
            self.node.raft, host, port, cluster_id=CLUSTER_ID, node_id=self.id
        )
        await self.kv.start()

    async def close(self) -> None:
        await self.kv.close()
        await self.node.close()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
        for counting in self.ends:
            counting.end.close()
        for counting in self.ends:
            await counting.end.wait_closed()

    # ------------------------------------------------------------------ control

    async def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        commands: dict[str, Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]] = {
            "status": self._status,
            "counters": self._counters,
            "load": self._load,
            "stage_arm": self._stage_arm,
            "stage_collect": self._stage_collect,
            "quit": self._quit,
        }
        return await commands[request["cmd"]](request)

    async def _status(self, _: dict[str, Any]) -> dict[str, Any]:
        st = self.node.status()
        return {
            "ok": True,
            "pid": os.getpid(),
            "role": st.role,
            "term": st.term,
            "leader_id": st.leader_id,
            "commit_index": st.commit_index,
            "applied_index": st.applied_index,
        }

    async def _counters(self, _: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, **self.counters()}

    async def _stage_arm(self, request: dict[str, Any]) -> dict[str, Any]:
        # Returns at once: the leader's `load` command comes next on this channel.
        self.probe.arm(float(request["start"]), float(request["end"]), request.get("profile"))
        return {"ok": True}

    async def _stage_collect(self, _: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, **await self.probe.collect()}

    async def _quit(self, _: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True}

    def counters(self) -> dict[str, Any]:
        """Cumulative costs of this process; the harness subtracts two readings."""
        st = self.node.status()
        calls: Counter[str] = Counter()
        for counting in self.ends:
            calls.update(counting.calls)
        wire = wire_bytes({self.raft_port}, self.peer_ports)
        return {
            "t": time.perf_counter(),
            "cpu": time.process_time(),
            "fsyncs": self.storage.fsync_count,
            "rpcs": sum(calls.values()),
            "rpcs_by_method": dict(calls),
            "wire_sent": wire.sent,
            "wire_received": wire.received,
            "commit_index": st.commit_index,
            "term": st.term,
            "role": st.role,
        }

    async def _load(self, request: dict[str, Any]) -> dict[str, Any]:
        """The embedded workload: closed-loop proposals from tasks in this process."""
        concurrency, payload = int(request["concurrency"]), int(request["payload"])
        window = Window(float(request["start"]), float(request["end"]))
        values = random_values(payload)
        if request.get("op") == "read":
            make_op = await self._read_ops(next(values))
        else:
            make_op = self._write_ops(values)

        edges = asyncio.ensure_future(
            self._edges(window, request.get("profile"), request.get("profile_timer", "wall"))
        )
        result = await closed_loop(make_op, concurrency, window)
        before, after, profile = await edges
        return {
            "ok": True,
            **result.to_json(window),
            "before": before,
            "after": after,
            "profile": profile,
        }

    def _write_ops(self, values: Iterator[str]) -> Callable[[int], Callable[[], Awaitable[Any]]]:
        """Worker i proposes ("set", "k<i>", value) over and over."""
        propose = self.node.propose

        def make_op(i: int) -> Callable[[], Awaitable[Any]]:
            key = f"k{i}"
            return lambda: propose(("set", key, next(values)))

        return make_op

    async def _read_ops(self, value: str) -> Callable[[int], Callable[[], Awaitable[Any]]]:
        """Linearizable reads of READ_KEY, written (and committed) first: every worker
        reads the same key, and a read that does not see it is an error."""
        await self.node.propose(("set", READ_KEY, value))
        read = self.node.read

        async def read_op() -> None:
            got = await read(READ_KEY)
            if got != value:
                raise ValueError(f"read {got!r:.40}, not the value written")

        return lambda _: read_op

    async def _edges(
        self, window: Window, profile_path: str | None, timer: str
    ) -> tuple[dict[str, Any], dict[str, Any], str]:
        """Counters at the window's start and end; a cProfile of the window if asked."""
        await wait_until(window.start)
        profiler = None
        if profile_path:
            profiler = cProfile.Profile(time.thread_time) if timer == "cpu" else cProfile.Profile()
        before = self.counters()
        if profiler is not None:
            profiler.enable()
        await wait_until(window.end)
        if profiler is not None:
            profiler.disable()
        after = self.counters()
        summary = ""
        if profiler is not None and profile_path:
            profiler.dump_stats(profile_path)
            summary = cprofile_summary(profiler)
        return before, after, summary


async def amain(options: argparse.Namespace) -> None:
    node = BenchNode(options)
    try:
        await node.start()
        reply_line({"ok": True, "ready": True, "pid": os.getpid()})
        control = asyncio.ensure_future(serve_stdin(node.handle))
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, control.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await control
    finally:
        await node.close()


def main() -> None:
    parser = argparse.ArgumentParser(description="one raftio peer for `raftio bench`")
    parser.add_argument("--id", type=int, required=True)
    parser.add_argument("--peers", required=True, help="every node's Raft host:port")
    parser.add_argument("--client-peers", required=True, help="every node's KV host:port")
    parser.add_argument("--data", required=True, type=Path)
    parser.add_argument("--fsync", choices=["on", "off"], default="on")
    parser.add_argument("--lease-reads", choices=["on", "off"], default="off",
                        help="RaftConfig(lease_reads=True): reads inside the leader's lease "
                        "skip the heartbeat round")  # fmt: skip
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    parser.add_argument("--parent-pid", type=int)
    parser.add_argument("--log-level", default="WARNING")
    options = parser.parse_args()
    die_with_parent(options.parent_pid)
    logging.basicConfig(level=options.log_level, format="%(asctime)s %(name)s: %(message)s")
    raise_fd_limit()
    run_loop(amain(options), options.loop)


if __name__ == "__main__":
    main()
