"""Clusters of KV node processes on one machine: the life of their `raftio node` processes.

Owns starting and stopping the processes of a cluster directory and their
pid files; the layout of the directory (cluster.json, the secret, ports,
each node's command line) is raftio.kv.spec's, re-exported here. The CLI's
`demo` and `cluster` commands and the real-process tests use it.

Nodes run as `python -P -m raftio node`: `-P` keeps a `raftio/` folder in
the working directory (a checkout's parent, say) from shadowing the
installed package. Every node gets `--secret-file D/secret`, and so do the
clients that `raftio kv --dir D` and `raftio status --dir D` make.

`LocalCluster` owns its node processes and stops them all on exit (even on
failure or Ctrl-C); started with `detached=True` the nodes outlive this
process, and `stop_detached()` later finds them through their pid files.
A first voter starts with `--bootstrap` only while it has never opened its
data directory (`ClusterSpec.needs_bootstrap`); `settle()` records in
cluster.json the ones that have.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

from raftio.kv.spec import SPEC_FILE, ClusterSpec, SecretFileError, free_ports, read_secret

__all__ = [
    "ClusterSpec",
    "LocalCluster",
    "SecretFileError",
    "free_ports",
    "read_secret",
    "running_detached",
    "settle",
    "stop_detached",
    "stop_node",
    "wait_stopped",
]

_STOP_GRACE = 5.0  # seconds a node gets to exit after SIGTERM before SIGKILL


class LocalCluster:
    """The node processes of one ClusterSpec, started and stopped by this process.

    Every node gets the cluster's secret (made on the first start). Use as
    a context manager: leaving it stops every node this object
    started and still owns (SIGTERM, then SIGKILL after a grace period).
    Non-detached nodes also exit by themselves if this process dies.
    """

    def __init__(
        self, spec: ClusterSpec, *, detached: bool = False, loop: str | None = None
    ) -> None:
        self.spec = spec
        self.detached = detached
        self.loop = loop  # the nodes' --loop; None: their default (uvloop where installed)
        self.procs: dict[int, subprocess.Popen[bytes]] = {}

    async def __aenter__(self) -> LocalCluster:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop_all()

    def start(self, i: int) -> subprocess.Popen[bytes]:
        """Start node i (it must not be running); its log starts afresh (the last: .log.1)."""
        if self.running(i):
            raise RuntimeError(f"node {i} is already running")
        spec = self.spec
        bootstrap = spec.needs_bootstrap(i)
        spec.data_dir(i).mkdir(parents=True, exist_ok=True)
        spec.ensure_secret()
        parent = None if self.detached else os.getpid()
        log_path = spec.log_path(i)
        with contextlib.suppress(FileNotFoundError):
            log_path.replace(log_path.with_name(log_path.name + ".1"))
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                spec.node_argv(i, parent_pid=parent, loop=self.loop, bootstrap=bootstrap),
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
        """Start every member (a new cluster's first voters bootstrap)."""
        for i in self.spec.ids:
            self.start(i)

    def exited(self) -> dict[int, int]:
        """node id -> exit code of the nodes this object started that have exited."""
        codes = {i: proc.poll() for i, proc in self.procs.items()}
        return {i: code for i, code in codes.items() if code is not None}

    def exit_cause(self, i: int) -> str:
        """One line on why node i's run ended, from its log: its last error, else its last line."""
        try:
            lines = self.spec.log_path(i).read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return "it left no log"
        for line in reversed(lines):
            match = _ERROR_LINE.match(line)
            if match:
                return match.group(1)
        # A traceback (an import failure) ends with its exception, unindented.
        last = [line for line in lines if line.strip() and not line[0].isspace()]
        return last[-1] if last else "it logged nothing"

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
        self._settle()
        self.procs.clear()

    def release(self) -> None:
        """Hand detached nodes over to their pid files: this object stops owning them."""
        for proc in self.procs.values():
            # They run on under init; marking them as collected keeps Popen
            # from warning that a child it never waited for is still running.
            if proc.returncode is None:
                proc.returncode = 0
        self._settle()
        self.procs.clear()

    def _settle(self) -> None:
        if self.procs:  # best effort in a finalizer: `cluster up` settles (and reports) too
            with contextlib.suppress(OSError, ValueError, TypeError):
                self.spec = settle(self.spec)

    def tail(self, i: int, lines: int = 20) -> str:
        """The end of node i's log, for error messages."""
        try:
            text = self.spec.log_path(i).read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def settle(spec: ClusterSpec) -> ClusterSpec:
    """Drop from cluster.json's `bootstrap` the first voters whose data now holds state.

    Reads the file first, so that changes another command saved meanwhile
    (`cluster add`) are kept; without a cluster.json, only returns the
    settled spec. Raises OSError (or ValueError) if the file cannot be
    read or written.
    """
    path = spec.directory / SPEC_FILE
    if not path.exists():
        return spec.settled()
    current = ClusterSpec.load(spec.directory)
    settled = current.settled()
    if settled != current:
        settled.save()
    return settled


def stop_node(spec: ClusterSpec, i: int) -> int | None:
    """SIGTERM detached node i (through its pid file); its pid, or None if it was not running."""
    pid = _read_pid(spec.pid_path(i))
    stopped = None
    if pid is not None and _is_node_process(pid):
        os.kill(pid, signal.SIGTERM)
        stopped = pid
    with contextlib.suppress(FileNotFoundError):
        spec.pid_path(i).unlink()
    return stopped


async def wait_stopped(pids: Sequence[int]) -> None:
    """Wait for these processes to exit; SIGKILL those alive after the grace period."""
    await _wait_until(lambda: not any(_alive(pid) for pid in pids), _STOP_GRACE)
    for pid in pids:
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


async def stop_detached(spec: ClusterSpec) -> list[tuple[int, int]]:
    """Stop the detached nodes named by spec's pid files; returns (node id, pid) of each."""
    stopped = []
    for i in range(len(spec.peers)):  # every id: a removed node left running is stopped too
        pid = stop_node(spec, i)
        if pid is not None:
            stopped.append((i, pid))
    await wait_stopped([pid for _, pid in stopped])
    return stopped


def running_detached(spec: ClusterSpec) -> dict[int, int]:
    """node id -> pid of the detached nodes of spec that are running."""
    pids = {}
    for i in range(len(spec.peers)):
        pid = _read_pid(spec.pid_path(i))
        if pid is not None and _is_node_process(pid):
            pids[i] = pid
    return pids


# An ERROR or CRITICAL line of the CLI's log format: "<date> <time> LEVEL logger: message".
_ERROR_LINE = re.compile(r"^\S+ \S+ (?:ERROR|CRITICAL) \S+: (.*)$")


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
