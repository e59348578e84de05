"""Clusters of KV node processes on one machine: ports, cluster.json, pid files, processes.

Owns the layout of a cluster directory and the life of the `raftio node`
processes started from it; the CLI's `demo` and `cluster` commands and the
real-process tests use it. A cluster directory D holds:

    D/cluster.json   {"cluster_id": ..., "peers": [...], "client_peers": [...], ...}
    D/node-I/        node I's FileStorage
    D/node-I.log     node I's output (appended across restarts)
    D/node-I.pid     node I's pid, while a detached node runs (`raftio cluster up`)

`LocalCluster` owns its node processes and stops them all on exit (even on
failure or Ctrl-C); started with `detached=True` the nodes outlive this
process, and `stop_detached()` later finds them through their pid files.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["ClusterSpec", "LocalCluster", "free_ports", "running_detached", "stop_detached"]

SPEC_FILE = "cluster.json"
_STOP_GRACE = 5.0  # seconds a node gets to exit after SIGTERM before SIGKILL


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """n distinct ports free right now (held open together, then released)."""
    sockets = []
    try:
        for _ in range(n):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((host, 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@dataclass(frozen=True, slots=True)
class ClusterSpec:
    """Where a local cluster's nodes listen and keep their files."""

    directory: Path
    peers: list[str]
    client_peers: list[str]
    cluster_id: str = "raftio"
    snapshot_bytes: int | None = None
    extra_args: list[str] = field(default_factory=list)

    @classmethod
    def create(
        cls,
        directory: str | Path,
        n: int,
        *,
        base_port: int | None = None,
        host: str = "127.0.0.1",
        **options: Any,
    ) -> ClusterSpec:
        """Raft ports base..base+n-1 and client ports base+n..base+2n-1, or free ports."""
        if n < 1:
            raise ValueError("a cluster needs at least one node")
        if base_port is None:
            ports = free_ports(2 * n, host)
        else:
            ports = list(range(base_port, base_port + 2 * n))
        addresses = [f"{host}:{port}" for port in ports]
        return cls(Path(directory), addresses[:n], addresses[n:], **options)

    @classmethod
    def load(cls, directory: str | Path) -> ClusterSpec:
        path = Path(directory) / SPEC_FILE
        raw = json.loads(path.read_text())
        raw["directory"] = Path(directory)
        return cls(**raw)

    def save(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        raw = asdict(self)
        del raw["directory"]  # the spec travels with its directory
        (self.directory / SPEC_FILE).write_text(json.dumps(raw, indent=2) + "\n")

    @property
    def n(self) -> int:
        return len(self.peers)

    def data_dir(self, i: int) -> Path:
        return self.directory / f"node-{i}"

    def log_path(self, i: int) -> Path:
        return self.directory / f"node-{i}.log"

    def pid_path(self, i: int) -> Path:
        return self.directory / f"node-{i}.pid"

    def node_argv(self, i: int, *, parent_pid: int | None = None) -> list[str]:
        """The command that runs node i: `python -m raftio node ...`."""
        argv = [
            sys.executable, "-m", "raftio", "node",
            "--id", str(i),
            "--peers", ",".join(self.peers),
            "--client-peers", ",".join(self.client_peers),
            "--data", str(self.data_dir(i)),
            "--cluster-id", self.cluster_id,
        ]  # fmt: skip
        if self.snapshot_bytes is not None:
            argv += ["--snapshot-bytes", str(self.snapshot_bytes)]
        if parent_pid is not None:
            argv += ["--parent-pid", str(parent_pid)]
        return argv + self.extra_args


class LocalCluster:
    """The node processes of one ClusterSpec, started and stopped by this process.

    Use as a context manager: leaving it stops every node this object
    started and still owns (SIGTERM, then SIGKILL after a grace period).
    Non-detached nodes also exit by themselves if this process dies.
    """

    def __init__(self, spec: ClusterSpec, *, detached: bool = False) -> None:
        self.spec = spec
        self.detached = detached
        self.procs: dict[int, subprocess.Popen[bytes]] = {}

    async def __aenter__(self) -> LocalCluster:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop_all()

    def start(self, i: int) -> subprocess.Popen[bytes]:
        """Start node i (it must not be running)."""
        if self.running(i):
            raise RuntimeError(f"node {i} is already running")
        spec = self.spec
        spec.data_dir(i).mkdir(parents=True, exist_ok=True)
        parent = None if self.detached else os.getpid()
        with open(spec.log_path(i), "ab") as log:
            proc = subprocess.Popen(
                spec.node_argv(i, parent_pid=parent),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=self.detached,
            )
        self.procs[i] = proc
        if self.detached:
            spec.pid_path(i).write_text(f"{proc.pid}\n")
        return proc

    def start_all(self) -> None:
        for i in range(self.spec.n):
            self.start(i)

    def running(self, i: int) -> bool:
        proc = self.procs.get(i)
        return proc is not None and proc.poll() is None

    def pid(self, i: int) -> int | None:
        proc = self.procs.get(i)
        return proc.pid if proc is not None else None

    async def kill(self, i: int, sig: int = signal.SIGKILL) -> None:
        """Send `sig` to node i and wait for it to exit (SIGKILL after the grace period)."""
        proc = self.procs.get(i)
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(sig)
        await _wait_exit([proc])
        with contextlib.suppress(FileNotFoundError):
            self.spec.pid_path(i).unlink()

    async def stop_all(self) -> None:
        """Stop every node this object owns: SIGTERM, then SIGKILL whoever outlives the grace."""
        procs = list(self.procs.values())
        try:
            for proc in procs:
                if proc.poll() is None:
                    proc.terminate()
            await _wait_exit(procs)
        finally:
            self.kill_all_now()  # also when cancelled (Ctrl-C) while waiting

    def kill_all_now(self) -> None:
        """SIGKILL every node this object owns and reap them; for finalizers. Never blocks long."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
        for i, proc in self.procs.items():
            proc.wait()
            if not self.detached:
                continue
            with contextlib.suppress(FileNotFoundError):
                self.spec.pid_path(i).unlink()
        self.procs.clear()

    def release(self) -> None:
        """Hand detached nodes over to their pid files: this object stops owning them."""
        for proc in self.procs.values():
            # They run on under init; marking them as collected keeps Popen
            # from warning that a child it never waited for is still running.
            if proc.returncode is None:
                proc.returncode = 0
        self.procs.clear()

    def tail(self, i: int, lines: int = 20) -> str:
        """The end of node i's log, for error messages."""
        try:
            text = self.spec.log_path(i).read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


async def stop_detached(spec: ClusterSpec) -> list[tuple[int, int]]:
    """Stop the detached nodes named by spec's pid files; returns (node id, pid) of each."""
    stopped = []
    for i in range(spec.n):
        pid = _read_pid(spec.pid_path(i))
        if pid is not None and _is_node_process(pid):
            os.kill(pid, signal.SIGTERM)
            stopped.append((i, pid))
        with contextlib.suppress(FileNotFoundError):
            spec.pid_path(i).unlink()
    await _wait_until(lambda: not any(_alive(pid) for _, pid in stopped), _STOP_GRACE)
    for _, pid in stopped:
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    return stopped


def running_detached(spec: ClusterSpec) -> dict[int, int]:
    """node id -> pid of the detached nodes of spec that are running."""
    pids = {}
    for i in range(spec.n):
        pid = _read_pid(spec.pid_path(i))
        if pid is not None and _is_node_process(pid):
            pids[i] = pid
    return pids


async def _wait_exit(procs: Sequence[subprocess.Popen[bytes]]) -> None:
    await _wait_until(lambda: all(proc.poll() is not None for proc in procs), _STOP_GRACE)
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def _wait_until(done: Callable[[], bool], timeout: float) -> bool:
    """Poll `done` until it holds (True) or `timeout` seconds pass (False)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not done():
        if loop.time() >= deadline:
            return False
        await asyncio.sleep(0.01)
    return True


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A detached node's parent has exited, so init reaps it; until then a
    # zombie still answers signal 0.
    return not _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] == "Z"


def _is_node_process(pid: int) -> bool:
    """Whether pid still runs `raftio node` (a stale pid file may name a reused pid)."""
    if not _alive(pid):
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return True  # no /proc here: trust the pid file
    return b"raftio" in cmdline and b"node" in cmdline
