"""The workloads: which cluster each series runs on, and how one point is measured.

A *series* is one line of the report (raftio embedded with fsync on,
PySyncObj in memory, etcd...); a *point* is one (concurrency, payload) of a
series. Every cluster has three processes on 127.0.0.1 and is started once
per series group; between points only the load changes.

    raftio-embedded          C tasks in the leader call Node.propose     fsync on
    raftio-embedded-nofsync  the same, FileStorage with a no-op fdatasync
    raftio-e2e               2 client processes, C/2 KV connections each  fsync on
    pysyncobj                C callbacks outstanding in the leader        memory
    pysyncobj-journal        the same with PySyncObj's file journal       (no fsync)
    etcd                     2 client processes, HTTP/JSON gateway puts   fsync on

Read series (run only when named in --series): linearizable reads of one
key written before the window.

    raftio-read-embedded        C tasks in the leader call Node.read (ReadIndex)
    raftio-read-e2e             2 client processes, C/2 KV connections, gets
    raftio-lease-read-embedded  the same two with RaftConfig(lease_reads=True)
    raftio-lease-read-e2e
    etcd-read                   2 client processes, HTTP/JSON gateway ranges

A point's result is a plain dict (see `point_result`); the leader's costs
are the difference of two counter readings taken at the window's edges.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import shutil
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.counters import cpu_seconds_of
from benchmarks.loadgen import Window, wait_until
from benchmarks.peers.etcd import EtcdMembers, etcd_binary
from benchmarks.procs import Child, ChildError, ProcessGroup
from benchmarks.profiles import py_spy
from benchmarks.stats import merge_summaries
from raftio.config import RaftConfig
from raftio.kv.local import free_ports

__all__ = [
    "SERIES",
    "Cluster",
    "EtcdCluster",
    "ProfileRequest",
    "PySyncObjCluster",
    "RaftioCluster",
    "RunContext",
    "Series",
    "costs",
    "lease_reads_available",
    "point_result",
    "pysyncobj_available",
]

_LEADER_TIMEOUT = 30.0
_CLIENT_PROCESSES = 2  # end-to-end load is split over this many processes


@dataclass(frozen=True, slots=True)
class Series:
    key: str
    system: str  # raftio | raftio-lease | pysyncobj | etcd
    label: str
    workload: str  # embedded | e2e
    fsync: str  # on | off | journal (no fsync) | memory
    op: str = "write"  # write | read (linearizable reads of a preloaded key)


SERIES: dict[str, Series] = {
    s.key: s
    for s in (
        Series("raftio-embedded", "raftio", "raftio embedded", "embedded", "on"),
        Series(
            "raftio-embedded-nofsync", "raftio", "raftio embedded, fsync off", "embedded", "off"
        ),
        Series("raftio-e2e", "raftio", "raftio KV end to end", "e2e", "on"),
        Series("pysyncobj", "pysyncobj", "PySyncObj, memory", "embedded", "memory"),
        Series(
            "pysyncobj-journal",
            "pysyncobj",
            "PySyncObj, file journal",
            "embedded",
            "journal (no fsync)",
        ),
        Series("etcd", "etcd", "etcd, HTTP gateway", "e2e", "on"),
        # Reads: not in the default selection (the write series' run and its time stay).
        Series("raftio-read-embedded", "raftio", "raftio read embedded", "embedded", "on", "read"),
        Series("raftio-read-e2e", "raftio", "raftio read KV e2e", "e2e", "on", "read"),
        Series(
            "raftio-lease-read-embedded",
            "raftio-lease",
            "raftio-lease read embedded",
            "embedded",
            "on",
            "read",
        ),
        Series(
            "raftio-lease-read-e2e", "raftio-lease", "raftio-lease read KV e2e", "e2e", "on", "read"
        ),
        Series("etcd-read", "etcd", "etcd get, HTTP gateway", "e2e", "on", "read"),
    )
}


@dataclass(frozen=True, slots=True)
class ProfileRequest:
    """Profile the leader during a point: cProfile with `timer` "wall" or "cpu" (the
    loop thread's CPU time), or "py-spy" (sampling every thread from outside)."""

    path: Path
    timer: str = "wall"


@dataclass(slots=True)
class RunContext:
    """What every cluster needs from the runner."""

    group: ProcessGroup
    workdir: Path
    env: dict[str, str]
    loop: str
    warmup: float
    duration: float
    logs: Path
    pysyncobj_settings: dict[str, str] = field(default_factory=dict)
    clusters_started: int = 0

    def fresh_dir(self, name: str) -> Path:
        """A new, empty directory for one cluster's data: a restarted etcd member or
        PySyncObj journal would otherwise resume the previous cluster's state."""
        self.clusters_started += 1
        path = self.workdir / f"{name}-{self.clusters_started}"
        path.mkdir(parents=True)
        return path

    def python(self, module: str, *args: str) -> list[str]:
        return [sys.executable, "-m", module, *args, "--parent-pid", str(os.getpid())]


def pysyncobj_available() -> bool:
    return importlib.util.find_spec("pysyncobj") is not None


def lease_reads_available() -> bool:
    """Whether this raftio has `RaftConfig.lease_reads` (opt-in lease reads)."""
    try:
        RaftConfig(lease_reads=True)
    except TypeError:
        return False
    return True


def costs(
    before: dict[str, Any], after: dict[str, Any], ops: int, per_op: bool = False
) -> dict[str, Any]:
    """The leader's costs per committed entry between two counter readings; with
    `per_op` (reads, which commit nothing) per operation instead."""
    committed = int(after.get("commit_index", 0) - before.get("commit_index", 0))
    entries = ops if per_op else committed or ops
    seconds = after["t"] - before["t"]
    cpu = after["cpu"] - before["cpu"]
    out: dict[str, Any] = {
        "entries": entries,
        "cpu_seconds": cpu,
        "cpu_utilization": cpu / seconds if seconds > 0 else None,
        "cpu_us_per_entry": cpu / entries * 1e6 if entries else None,
    }
    for name in ("rpcs", "fsyncs"):
        if name in after:
            out[f"{name}_per_entry"] = (after[name] - before[name]) / entries if entries else None
    if "wire_sent" in after:
        wire = after["wire_sent"] - before["wire_sent"] + after["wire_received"]
        wire -= before["wire_received"]
        out["bytes_per_entry"] = wire / entries if entries else None
    if before.get("term") is not None and before.get("term") != after.get("term"):
        out["leader_changed"] = True
    return out


def point_result(
    series: str,
    concurrency: int,
    payload: int,
    parts: Sequence[dict[str, Any]],
    before: dict[str, Any],
    after: dict[str, Any],
    edges: Edges | None = None,
) -> dict[str, Any]:
    """One point from the load replies of one or more processes, the leader's counters
    and the CPU of every process of the point."""
    ops = sum(int(p["ops"]) for p in parts)
    seconds = float(parts[0]["seconds"])
    errors: dict[str, int] = {}
    for part in parts:
        for name, count in part.get("errors", {}).items():
            errors[name] = errors.get(name, 0) + int(count)
    leader = costs(before, after, ops, per_op=SERIES[series].op == "read")
    if edges is not None and seconds > 0:
        entries = leader["entries"]
        leader["cluster_cpu_us_per_entry"] = edges.cluster_cpu / entries * 1e6 if entries else None
        leader["cluster_cpu_utilization"] = edges.cluster_cpu / seconds
        leader["client_cpu_utilization"] = edges.client_cpu / seconds if edges.clients else None
    return {
        "series": series,
        "concurrency": concurrency,
        "payload": payload,
        "ops": ops,
        "seconds": seconds,
        "throughput": ops / seconds if seconds > 0 else 0.0,
        "latency": merge_summaries([p["samples"] for p in parts]),
        "leader": leader,
        "errors": errors,
        "first_error": next((p["first_error"] for p in parts if p.get("first_error")), ""),
    }


@dataclass(slots=True)
class Edges:
    """CPU seconds every process of a point used inside the window, and the
    leader's counters at its edges (when the harness reads them)."""

    cluster_cpu: float = 0.0
    client_cpu: float = 0.0
    clients: int = 0
    before: dict[str, Any] = field(default_factory=dict)
    after: dict[str, Any] = field(default_factory=dict)


def _cpu(pids: Sequence[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            total += cpu_seconds_of(pid)
        except OSError:
            pass  # exited: counts nothing more
    return total


async def window_edges(
    window: Window,
    servers: Sequence[int],
    clients: Sequence[int] = (),
    counters: Callable[[], Awaitable[dict[str, Any]]] | None = None,
) -> Edges:
    """Read every process's CPU (and the leader's counters) at the window's edges."""
    edges = Edges(clients=len(clients))
    await wait_until(window.start)
    server0, client0 = _cpu(servers), _cpu(clients)
    if counters is not None:
        edges.before = await counters()
    await wait_until(window.end)
    edges.cluster_cpu, edges.client_cpu = _cpu(servers) - server0, _cpu(clients) - client0
    if counters is not None:
        edges.after = await counters()
    return edges


class Cluster:
    """Three processes of one system; `run_point` measures one (series, C, payload)."""

    name = "cluster"

    def pids(self) -> list[int]:
        """The cluster's processes (for their CPU time)."""
        raise NotImplementedError

    async def start(self) -> None:
        raise NotImplementedError

    async def run_point(
        self, series: str, concurrency: int, payload: int, profile: ProfileRequest | None = None
    ) -> dict[str, Any]:
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError


async def _leader_of(nodes: Sequence[Child], timeout: float) -> int:
    """Index of the node that leads once every node reports the same term and one leader."""
    deadline = time.monotonic() + timeout
    seen: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        seen = [await node.request({"cmd": "status"}, 10.0) for node in nodes]
        leaders = [i for i, s in enumerate(seen) if s["role"] == "leader"]
        if len(leaders) == 1 and len({s["term"] for s in seen}) == 1:
            return leaders[0]
        await asyncio.sleep(0.1)
    raise ChildError(f"no stable leader within {timeout:.0f} s: {seen}")


class _ControlledCluster(Cluster):
    """Nodes that are control-channel children (raftio, PySyncObj)."""

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx
        self.nodes: list[Child] = []
        self.data: Path | None = None

    async def _start_nodes(self, argvs: Sequence[list[str]]) -> None:
        for i, argv in enumerate(argvs):
            log = self.ctx.logs / f"{self.name}-{i}.log"
            self.nodes.append(
                await self.ctx.group.start(Child(f"{self.name}-{i}", argv, log, env=self.ctx.env))
            )
        for node in self.nodes:
            await node.read_reply(60.0)
        await _leader_of(self.nodes, _LEADER_TIMEOUT)

    async def leader(self) -> Child:
        return self.nodes[await _leader_of(self.nodes, _LEADER_TIMEOUT)]

    def pids(self) -> list[int]:
        return [node.pid for node in self.nodes]

    async def _py_spy(self, pid: int, window: Window, raw_path: Path) -> str:
        await wait_until(window.start)
        return await py_spy(pid, window.seconds, raw_path, self.ctx.logs / "py-spy.log")

    async def _embedded_point(
        self, series: str, concurrency: int, payload: int, profile: ProfileRequest | None
    ) -> dict[str, Any]:
        leader = await self.leader()
        window = Window.after(self.ctx.warmup, self.ctx.duration)
        command: dict[str, Any] = {
            "cmd": "load",
            "concurrency": concurrency,
            "payload": payload,
            "start": window.start,
            "end": window.end,
        }
        if SERIES[series].op == "read":
            command["op"] = "read"
        spy: asyncio.Future[str] | None = None
        if profile is not None and profile.timer == "py-spy":
            spy = asyncio.ensure_future(self._py_spy(leader.pid, window, profile.path))
        elif profile is not None:
            command["profile"] = str(profile.path)
            command["profile_timer"] = profile.timer
        edges = asyncio.ensure_future(window_edges(window, self.pids()))
        try:
            reply = await leader.request(command, self.ctx.warmup + self.ctx.duration + 120.0)
            measured = await edges
            if spy is not None:
                reply["profile"] = await spy
        finally:
            edges.cancel()
            if spy is not None:
                spy.cancel()
        result = point_result(
            series, concurrency, payload, [reply], reply["before"], reply["after"], measured
        )
        if reply.get("profile"):
            result["profile"] = reply["profile"]
        return result

    async def stop(self) -> None:
        for node in self.nodes:
            if node.running():
                try:
                    await node.request({"cmd": "quit"}, 10.0)
                except ChildError:
                    pass
        await self.ctx.group.stop(self.nodes)
        self.nodes.clear()
        if self.data is not None:
            shutil.rmtree(self.data, ignore_errors=True)


class RaftioCluster(_ControlledCluster):
    """Three `benchmarks.raftio_node` processes; fsync on or off; lease reads optional."""

    def __init__(
        self, ctx: RunContext, fsync: bool, lease_reads: bool = False, name: str | None = None
    ) -> None:
        super().__init__(ctx)
        self.fsync = fsync
        self.lease_reads = lease_reads
        self.name = name or ("raftio" if fsync else "raftio-nofsync")
        self.peers: list[str] = []
        self.client_peers: list[str] = []

    async def start(self) -> None:
        ports = free_ports(6)
        self.peers = [f"127.0.0.1:{p}" for p in ports[:3]]
        self.client_peers = [f"127.0.0.1:{p}" for p in ports[3:]]
        self.data = data = self.ctx.fresh_dir(self.name)
        argvs = [
            self.ctx.python(
                "benchmarks.raftio_node",
                "--id",
                str(i),
                "--peers",
                ",".join(self.peers),
                "--client-peers",
                ",".join(self.client_peers),
                "--data",
                str(data / f"n{i}"),
                "--fsync",
                "on" if self.fsync else "off",
                *(["--lease-reads", "on"] if self.lease_reads else []),
                "--loop",
                self.ctx.loop,
            )
            for i in range(3)
        ]
        await self._start_nodes(argvs)

    async def run_point(
        self, series: str, concurrency: int, payload: int, profile: ProfileRequest | None = None
    ) -> dict[str, Any]:
        if SERIES[series].workload == "embedded":
            return await self._embedded_point(series, concurrency, payload, profile)
        leader_index = self.nodes.index(await self.leader())
        leader = self.nodes[leader_index]
        target = self.client_peers[leader_index]
        return await e2e_point(
            self.ctx,
            series,
            concurrency,
            payload,
            "raftio",
            target,
            leader_counters(leader),
            self.pids(),
        )


class PySyncObjCluster(_ControlledCluster):
    """Three `benchmarks.peers.pysyncobj_node` processes, in memory or with the journal."""

    def __init__(self, ctx: RunContext, journal: bool) -> None:
        super().__init__(ctx)
        self.journal = journal
        self.name = "pysyncobj-journal" if journal else "pysyncobj"

    async def start(self) -> None:
        addresses = [f"127.0.0.1:{p}" for p in free_ports(3)]
        self.data = data = self.ctx.fresh_dir(self.name)
        argvs = []
        for i, address in enumerate(addresses):
            partners = ",".join(a for a in addresses if a != address)
            argv = self.ctx.python(
                "benchmarks.peers.pysyncobj_node", "--self", address, "--partners", partners
            )
            if self.journal:
                argv += ["--journal", str(data / f"journal-{i}.bin")]
            for name, value in self.ctx.pysyncobj_settings.items():
                argv += [f"--{name}", value]
            argvs.append(argv)
        await self._start_nodes(argvs)

    async def run_point(
        self, series: str, concurrency: int, payload: int, profile: ProfileRequest | None = None
    ) -> dict[str, Any]:
        return await self._embedded_point(series, concurrency, payload, None)


class EtcdCluster(Cluster):
    name = "etcd"

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx
        self.members = EtcdMembers(ctx.group, ctx.fresh_dir("etcd"), ctx.logs)

    async def start(self) -> None:
        await self.members.start(_LEADER_TIMEOUT)

    async def run_point(
        self, series: str, concurrency: int, payload: int, profile: ProfileRequest | None = None
    ) -> dict[str, Any]:
        leader = await self.members.leader(_LEADER_TIMEOUT)
        target = self.members.client_addresses[leader]

        async def counters() -> dict[str, Any]:
            return await self.members.counters(leader)

        return await e2e_point(
            self.ctx, series, concurrency, payload, "etcd", target, counters, self.pids()
        )

    def pids(self) -> list[int]:
        return [member.pid for member in self.members.members]

    async def stop(self) -> None:
        await self.members.stop()
        shutil.rmtree(self.members.directory, ignore_errors=True)


def leader_counters(leader: Child) -> Callable[[], Awaitable[dict[str, Any]]]:
    async def read() -> dict[str, Any]:
        return await leader.request({"cmd": "counters"}, 30.0)

    return read


async def e2e_point(
    ctx: RunContext,
    series: str,
    concurrency: int,
    payload: int,
    protocol: str,
    target: str,
    counters: Callable[[], Awaitable[dict[str, Any]]],
    servers: Sequence[int],
) -> dict[str, Any]:
    """Client processes put (or, for read series, get) through `target`; the leader's
    counters at the window's edges."""
    shares = _split(concurrency, _CLIENT_PROCESSES)
    clients: list[Child] = []
    tag = f"{series}-c{concurrency}-p{payload}-{time.monotonic_ns() % 10**9}"
    try:
        for i, share in enumerate(shares):
            argv = ctx.python(
                "benchmarks.kv_client",
                "--protocol",
                protocol,
                "--target",
                target,
                "--connections",
                str(share),
                "--payload",
                str(payload),
                "--name",
                f"{tag}-{i}",
                "--op",
                "get" if SERIES[series].op == "read" else "put",
                "--loop",
                ctx.loop,
            )
            log = ctx.logs / f"client-{series}-{i}.log"
            clients.append(await ctx.group.start(Child(f"client-{i}", argv, log, env=ctx.env)))
        for client in clients:
            await client.read_reply(120.0)
        window = Window.after(ctx.warmup, ctx.duration)
        run = {"cmd": "run", "start": window.start, "end": window.end}
        loads = [
            asyncio.ensure_future(c.request(run, ctx.warmup + ctx.duration + 120.0))
            for c in clients
        ]
        try:
            edges = await window_edges(window, servers, [c.pid for c in clients], counters)
            parts = await asyncio.gather(*loads)
        finally:
            for load in loads:
                load.cancel()
        return point_result(series, concurrency, payload, parts, edges.before, edges.after, edges)
    finally:
        await stop_clients(ctx, clients)


async def stop_clients(ctx: RunContext, clients: list[Child]) -> None:
    """Ask each load client still running to quit, then stop them all."""
    for client in clients:
        if client.running():
            try:
                await client.request({"cmd": "quit"}, 10.0)
            except ChildError:
                pass
    await ctx.group.stop(clients)


def _split(total: int, parts: int) -> list[int]:
    """total split into at most `parts` positive shares, as even as possible."""
    parts = max(1, min(parts, total))
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def etcd_available() -> bool:
    return etcd_binary() is not None
