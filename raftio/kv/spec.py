"""A local cluster's directory: cluster.json, the secret, ports, and each node's command line.

Owns the layout of a cluster directory (raftio.kv.local runs the
processes). A cluster directory D holds:

    D/cluster.json   {"cluster_id": ..., "peers": [...], "client_peers": [...], ...}
    D/secret         the cluster's shared secret: 32 random bytes, mode 0600, made once
    D/node-I/        node I's FileStorage
    D/node-I.log     node I's output since its last start (the run before: node-I.log.1)
    D/node-I.pid     node I's pid, while a detached node runs (`raftio cluster up`)

`peers` and `client_peers` are indexed by node id and keep a slot for every
id ever given out, so ids are never reused. Three optional lists (written
only when not empty, so older raftio reads a cluster that never changed):

    bootstrap   first voters that have not yet opened their data directory:
                only they start with `--bootstrap`. A node leaves the list
                once its directory holds state (`settled`), so a node whose
                directory is later lost refuses to start instead of coming
                back as an empty voter (docs/operations.md, "Replace a
                failed node").
    joined      nodes added by `raftio cluster add`: they start with `--join`
    removed     nodes removed by `raftio cluster remove`: never started again

The first voters (ids 0..k-1, every id not in `joined`) always get the
first configuration as positional `--peers`/`--client-peers` lists: with no
configuration stored yet, that list is their configuration. Joined nodes
get `ID=HOST:PORT` maps of the current members.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import stat
import sys
import tempfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from raftio.storage.file import holds_state

__all__ = [
    "SECRET_FILE",
    "SPEC_FILE",
    "ClusterSpec",
    "SecretFileError",
    "free_ports",
    "read_secret",
]

SPEC_FILE = "cluster.json"
SECRET_FILE = "secret"
SECRET_BYTES = 32
MIN_SECRET_BYTES = 16
_MAX_SECRET_FILE = 64 << 10
_OPTIONAL_LISTS = ("bootstrap", "joined", "removed")


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
    """Where a local cluster's nodes listen and keep their files (see the module docstring).

    Never mutated: a change (`with_new_node`, `without_node`, `settled`)
    makes a new one, which the caller saves.
    """

    directory: Path
    peers: list[str]  # Raft host:port by node id, one slot for every id ever given out
    client_peers: list[str]  # client host:port by node id
    cluster_id: str = "raftio"
    snapshot_bytes: int | None = None
    extra_args: list[str] = field(default_factory=list)
    bootstrap: list[int] = field(default_factory=list)  # first voters yet to open their data
    joined: list[int] = field(default_factory=list)  # added by `cluster add`: --join
    removed: list[int] = field(default_factory=list)  # removed: never started again

    def __post_init__(self) -> None:
        if len(self.peers) != len(self.client_peers):
            raise ValueError("peers and client_peers must list the same nodes")
        for name in _OPTIONAL_LISTS:
            ids = getattr(self, name)
            if not isinstance(ids, list) or not all(
                type(i) is int and 0 <= i < len(self.peers) for i in ids
            ):
                raise ValueError(f"{name} must list node ids of this cluster")
        if self.joined and min(self.joined) < len(self.peers) - len(self.joined):
            raise ValueError("joined must list the last ids: nodes added after the first ones")

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
        first = list(range(n))  # a new cluster: every node bootstraps at its first start
        return cls(Path(directory), addresses[:n], addresses[n:], bootstrap=first, **options)

    @classmethod
    def load(cls, directory: str | Path) -> ClusterSpec:
        path = Path(directory) / SPEC_FILE
        raw = json.loads(path.read_text())
        raw["directory"] = Path(directory)
        return cls(**raw)

    def save(self) -> None:
        """Write cluster.json atomically (a reader sees the old file or the new one)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        raw = asdict(self)
        del raw["directory"]  # the spec travels with its directory
        for name in _OPTIONAL_LISTS:
            if not raw[name]:
                del raw[name]
        fd, tmp = tempfile.mkstemp(prefix=".cluster-", dir=self.directory)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(json.dumps(raw, indent=2) + "\n")
            os.chmod(tmp, 0o644)
            os.replace(tmp, self.directory / SPEC_FILE)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    @property
    def ids(self) -> list[int]:
        """The members' node ids (every id given out, but for the removed ones)."""
        return [i for i in range(len(self.peers)) if i not in self.removed]

    @property
    def n(self) -> int:
        """How many members the cluster has."""
        return len(self.ids)

    @property
    def member_client_peers(self) -> list[str]:
        """The members' client addresses, in id order (what clients of the cluster need)."""
        return [self.client_peers[i] for i in self.ids]

    def with_new_node(self, host: str = "127.0.0.1") -> tuple[ClusterSpec, int]:
        """This spec with one more node (free ports, the next id, `joined`), and its id."""
        raft, client = (f"{host}:{port}" for port in free_ports(2, host))
        new = len(self.peers)
        spec = replace(
            self,
            peers=[*self.peers, raft],
            client_peers=[*self.client_peers, client],
            joined=[*self.joined, new],
        )
        return spec, new

    def without_node(self, i: int) -> ClusterSpec:
        """This spec with node i removed (its id is never given out again)."""
        if i not in self.ids:
            raise ValueError(f"node {i} is not a member of the cluster in {self.directory}")
        bootstrap = [b for b in self.bootstrap if b != i]
        return replace(self, removed=sorted([*self.removed, i]), bootstrap=bootstrap)

    def needs_bootstrap(self, i: int) -> bool:
        """Whether node i starts with --bootstrap: a first voter that never opened its data."""
        return i in self.bootstrap and not holds_state(self.data_dir(i))

    def settled(self) -> ClusterSpec:
        """This spec without the `bootstrap` ids whose data directory now holds state."""
        pending = [i for i in self.bootstrap if not holds_state(self.data_dir(i))]
        return self if pending == self.bootstrap else replace(self, bootstrap=pending)

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
        self,
        i: int,
        *,
        parent_pid: int | None = None,
        loop: str | None = None,
        bootstrap: bool = False,
    ) -> list[str]:
        """The command that runs node i: `python -P -m raftio node ... --secret-file D/secret`.

        `bootstrap`: node i's very first start, in a brand-new cluster.
        """
        argv = [
            # -P: a raftio/ folder in the working directory must not shadow the package.
            sys.executable, "-P", "-m", "raftio", "node",
            "--id", str(i),
            *self._addresses_argv(i),
            "--data", str(self.data_dir(i)),
            "--cluster-id", self.cluster_id,
            "--secret-file", str(self.secret_path),
        ]  # fmt: skip
        if bootstrap:
            argv.append("--bootstrap")
        if self.snapshot_bytes is not None:
            argv += ["--snapshot-bytes", str(self.snapshot_bytes)]
        if parent_pid is not None:
            argv += ["--parent-pid", str(parent_pid)]
        if loop is not None:
            argv += ["--loop", loop]
        return argv + self.extra_args

    def _addresses_argv(self, i: int) -> list[str]:
        if i not in self.joined:  # a first voter: the first configuration, as it was
            first = len(self.peers) - len(self.joined)
            return ["--peers", ",".join(self.peers[:first]),
                    "--client-peers", ",".join(self.client_peers[:first])]  # fmt: skip
        ids = self.ids if i in self.ids else [*self.ids, i]
        return ["--join",
                "--peers", ",".join(f"{j}={self.peers[j]}" for j in ids),
                "--client-peers", ",".join(f"{j}={self.client_peers[j]}" for j in ids)]  # fmt: skip


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
