"""Clusters of KV node processes on one machine: ports, cluster.json, pid files, processes.

Owns the layout of a cluster directory and the life of the `raftio node`
processes started from it; the CLI's `demo` and `cluster` commands and the
real-process tests use it. A cluster directory D holds:

    D/cluster.json   {"cluster_id": ..., "peers": [...], "client_peers": [...], ...}
    D/secret         the cluster's shared secret: 32 random bytes, mode 0600, made once
    D/node-I/        node I's FileStorage
    D/node-I.log     node I's output since its last start (the run before: node-I.log.1)
    D/node-I.pid     node I's pid, while a detached node runs (`raftio cluster up`)

Nodes run as `python -P -m raftio node`: `-P` keeps a `raftio/` folder in
the working directory (a checkout's parent, say) from shadowing the
installed package. Every node gets `--secret-file D/secret`, and so do the
clients that `raftio kv --dir D` and `raftio status --dir D` make.

`LocalCluster` owns its node processes and stops them all on exit (even on
failure or Ctrl-C); started with `detached=True` the nodes outlive this
process, and `stop_detached()` later finds them through their pid files.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import signal
import socket
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "ClusterSpec",
    "LocalCluster",
    "SecretFileError",
    "free_ports",
    "read_secret",
    "running_detached",
    "stop_detached",
]

SPEC_FILE = "cluster.json"
SECRET_FILE = "secret"
SECRET_BYTES = 32
MIN_SECRET_BYTES = 16
_MAX_SECRET_FILE = 64 << 10
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


class SecretFileError(ValueError):
    """A secret file that cannot be used; the message is one line naming the file and the fix."""


def read_secret(path: str | Path) -> bytes:
    """The shared secret in `path` (the file's bytes, whitespace stripped).

    Refuses (SecretFileError) a file that is missing, not a regular file,
    open to group or others (the fix, `chmod 600`, is in the message),
    empty, or holding fewer than 16 bytes.
    """
    try:
        # O_NONBLOCK: a FIFO in its place must not hang the open.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise SecretFileError(f"the secret file {path} does not exist") from None
    except OSError as exc:
        raise SecretFileError(f"cannot read the secret file {path}: {exc.strerror}") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise SecretFileError(f"the secret file {path} is not a regular file")
        if mode & 0o077:
            raise SecretFileError(
                f"the secret file {path} is open to group or others (mode "
                f"{stat.S_IMODE(mode):04o}): chmod 600 {path}"
            )
        raw = _read_at_most(fd, _MAX_SECRET_FILE + 1)
    finally:
        os.close(fd)
    if len(raw) > _MAX_SECRET_FILE:
        raise SecretFileError(f"the secret file {path} is over 64 KiB: is it the right file?")
    secret = raw.strip()
    if not secret:
        raise SecretFileError(f"the secret file {path} is empty")
    if len(secret) < MIN_SECRET_BYTES:
        raise SecretFileError(
            f"the secret file {path} holds {len(secret)} bytes, fewer than {MIN_SECRET_BYTES}: "
            f"make a new one (head -c 32 /dev/urandom > {path}; chmod 600 {path})"
        )
    return secret


def _read_at_most(fd: int, limit: int) -> bytes:
    chunks, size = [], 0
    while size < limit and (chunk := os.read(fd, limit - size)):
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


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

    @property
    def secret_path(self) -> Path:
        return self.directory / SECRET_FILE

    def ensure_secret(self) -> Path:
        """The cluster's secret file, made first if missing: random bytes, mode 0600.

        Made atomically: written and fsynced under a temporary name created
        0600, then linked into place, so no reader ever sees a partial or
        world-readable secret, and of two racing callers the first one wins.
        """
        path = self.secret_path
        if path.exists():
            return path
        self.directory.mkdir(parents=True, exist_ok=True)
        secret = secrets.token_bytes(SECRET_BYTES)
        while secret.strip() != secret:  # readers strip whitespace (`echo x > secret`)
            secret = secrets.token_bytes(SECRET_BYTES)
        fd, tmp = tempfile.mkstemp(prefix=".secret-", dir=self.directory)  # mode 0600
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(secret)
                f.flush()
                os.fsync(f.fileno())
            with contextlib.suppress(FileExistsError):
                os.link(tmp, path)  # never replaces an existing secret
        finally:
            os.unlink(tmp)
        _fsync_dir(self.directory)
        return path

    def secret(self) -> bytes | None:
        """The cluster's secret, or None for a directory made before clusters had one."""
        if not self.secret_path.exists():
            return None
        return read_secret(self.secret_path)

    def node_argv(
        self, i: int, *, parent_pid: int | None = None, loop: str | None = None
    ) -> list[str]:
        """The command that runs node i: `python -P -m raftio node ... --secret-file D/secret`."""
        argv = [
            # -P: a raftio/ folder in the working directory must not shadow the package.
            sys.executable, "-P", "-m", "raftio", "node",
            "--id", str(i),
            "--peers", ",".join(self.peers),
            "--client-peers", ",".join(self.client_peers),
            "--data", str(self.data_dir(i)),
            "--cluster-id", self.cluster_id,
            "--secret-file", str(self.secret_path),
        ]  # fmt: skip
        if self.snapshot_bytes is not None:
            argv += ["--snapshot-bytes", str(self.snapshot_bytes)]
        if parent_pid is not None:
            argv += ["--parent-pid", str(parent_pid)]
        if loop is not None:
            argv += ["--loop", loop]
        return argv + self.extra_args


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
        spec.data_dir(i).mkdir(parents=True, exist_ok=True)
        spec.ensure_secret()
        parent = None if self.detached else os.getpid()
        log_path = spec.log_path(i)
        with contextlib.suppress(FileNotFoundError):
            log_path.replace(log_path.with_name(log_path.name + ".1"))
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                spec.node_argv(i, parent_pid=parent, loop=self.loop),
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


# An ERROR or CRITICAL line of the CLI's log format: "<date> <time> LEVEL logger: message".
_ERROR_LINE = re.compile(r"^\S+ \S+ (?:ERROR|CRITICAL) \S+: (.*)$")


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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
