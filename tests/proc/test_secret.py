"""Secure by default (issue 11): clusters made by the CLI hold a secret, and nodes insist on one.

`raftio cluster up` and `raftio demo` write DIR/secret (32 random bytes,
mode 0600, made atomically, kept across restarts) and start every node with
`--secret-file`; `raftio node` refuses to start with neither `--secret-file`
nor `--insecure`, and refuses a secret file it should not trust.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from raftio.kv.local import ClusterSpec, SecretFileError, read_secret, running_detached

from .conftest import run_raftio

NODE = ["node", "--id", "0", "--peers", "127.0.0.1:7100", "--client-peers", "127.0.0.1:7101"]


@pytest.fixture
def cluster_dir(tmp_path: Path) -> Iterator[Path]:
    directory = tmp_path / "cluster"
    try:
        yield directory
    finally:
        if (directory / "cluster.json").exists():
            run_raftio("cluster", "down", "--dir", str(directory))
            assert running_detached(ClusterSpec.load(directory)) == {}


def write_secret(path: Path, data: bytes, mode: int = 0o600) -> Path:
    path.write_bytes(data)
    path.chmod(mode)
    return path


# --------------------------------------------------------------------------- the file


def test_ensure_secret_makes_32_private_random_bytes_once(tmp_path: Path) -> None:
    spec = ClusterSpec.create(tmp_path / "c", 3)
    old_umask = os.umask(0)  # even a permissive umask must not widen the mode
    try:
        path = spec.ensure_secret()
    finally:
        os.umask(old_umask)
    first = path.read_bytes()

    again = spec.ensure_secret()
    other = ClusterSpec.create(tmp_path / "d", 3).ensure_secret().read_bytes()

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(first) == 32
    assert first.strip() == first
    assert again == path
    assert path.read_bytes() == first  # kept, not replaced
    assert other != first
    assert spec.secret() == first
    assert [p.name for p in path.parent.iterdir()] == ["secret"]  # no temporary file left


def test_a_directory_without_a_secret_has_none(tmp_path: Path) -> None:
    spec = ClusterSpec.create(tmp_path, 3)

    assert spec.secret() is None


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p, "does not exist"),
        (lambda p: write_secret(p, b""), "is empty"),
        (lambda p: write_secret(p, b" \n\t\n"), "is empty"),
        (lambda p: write_secret(p, b"short-secret\n"), "holds 12 bytes, fewer than 16"),
        (lambda p: write_secret(p, b"x" * 32, 0o644), "(mode 0644): chmod 600 "),
        (lambda p: write_secret(p, b"x" * 32, 0o640), "(mode 0640): chmod 600 "),
        (lambda p: write_secret(p, b"x" * 32, 0o602), "(mode 0602): chmod 600 "),
        (lambda p: write_secret(p, b"x" * (65 << 10)), "is over 64 KiB"),
        (lambda p: (p.mkdir(), p)[1], "is not a regular file"),
        (lambda p: (os.mkfifo(p, 0o600), p)[1], "is not a regular file"),
    ],
    ids=["missing", "empty", "blank", "short", "0644", "0640", "0602", "huge", "dir", "fifo"],
)
def test_an_unfit_secret_file_is_refused_in_one_line(
    tmp_path: Path, make: object, message: str
) -> None:
    path = tmp_path / "secret"
    make(path)  # type: ignore[operator]

    with pytest.raises(SecretFileError) as refused:
        read_secret(path)

    assert message in str(refused.value)
    assert str(path) in str(refused.value)
    assert "\n" not in str(refused.value)


def test_a_symlink_to_a_readable_file_is_refused(tmp_path: Path) -> None:
    target = write_secret(tmp_path / "shared", b"x" * 32, 0o644)
    link = tmp_path / "secret"
    link.symlink_to(target)

    with pytest.raises(SecretFileError, match="chmod 600"):
        read_secret(link)


def test_a_fit_secret_is_read_stripped(tmp_path: Path) -> None:
    path = write_secret(tmp_path / "secret", b"  0123456789abcdef-secret\n")

    assert read_secret(path) == b"0123456789abcdef-secret"


# --------------------------------------------------------------------------- raftio node


@pytest.mark.parametrize(
    ("mode", "data", "expected"),
    [
        (0o644, b"x" * 32, "is open to group or others (mode 0644): chmod 600 {path}"),
        (0o600, b"x" * 8, "holds 8 bytes, fewer than 16"),
        (0o600, b"", "is empty"),
    ],
)
def test_node_refuses_an_unfit_secret_file(
    tmp_path: Path, mode: int, data: bytes, expected: str
) -> None:
    path = write_secret(tmp_path / "secret", data, mode)

    done = run_raftio(*NODE, "--data", str(tmp_path / "n0"), "--secret-file", str(path))

    assert done.returncode == 2
    assert len(done.stderr.splitlines()) == 1
    prefix = f"raftio node: the secret file {path} {expected.format(path=path)}"
    assert done.stderr.startswith(prefix), done.stderr
    assert not (tmp_path / "n0").exists()  # refused before touching its data directory


def test_node_refuses_a_missing_secret_file(tmp_path: Path) -> None:
    done = run_raftio(*NODE, "--data", str(tmp_path / "n0"), "--secret-file", str(tmp_path / "s"))

    assert done.returncode == 2
    assert done.stderr == f"raftio node: the secret file {tmp_path / 's'} does not exist\n"


def test_node_without_secret_or_insecure_names_both_options(tmp_path: Path) -> None:
    done = run_raftio(*NODE, "--data", str(tmp_path / "n0"))
    both = run_raftio(*NODE, "--data", str(tmp_path / "n0"), "--insecure", "--secret-file", "x")

    assert done.returncode == 2
    assert len(done.stderr.splitlines()) == 1
    assert "--secret-file" in done.stderr
    assert "--insecure" in done.stderr
    assert both.returncode == 2
    assert "not allowed with argument" in both.stderr
    assert len(both.stderr.splitlines()) == 1


# --------------------------------------------------------------------------- cluster up


def node_argv(pid: int) -> list[str]:
    return [a.decode() for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if a]


def test_cluster_up_makes_a_secret_and_keeps_it_across_down_and_up(cluster_dir: Path) -> None:
    d = str(cluster_dir)
    up = run_raftio("cluster", "up", "-n", "3", "--dir", d)
    secret_path = cluster_dir / "secret"
    secret = secret_path.read_bytes()
    argvs = [node_argv(pid) for pid in running_detached(ClusterSpec.load(cluster_dir)).values()]
    put = run_raftio("kv", "--dir", d, "put", "k", "v")
    run_raftio("cluster", "down", "--dir", d)
    again = run_raftio("cluster", "up", "--dir", d)
    get = run_raftio("kv", "--dir", d, "get", "k")

    assert up.returncode == 0, up.stderr
    assert len(secret) == 32
    assert stat.S_IMODE(secret_path.stat().st_mode) == 0o600
    assert len(argvs) == 3
    for argv in argvs:
        assert argv[argv.index("--secret-file") + 1] == str(secret_path)
        assert "--insecure" not in argv
    assert (put.returncode, put.stdout) == (0, "v\n")
    assert again.returncode == 0, again.stderr
    assert secret_path.read_bytes() == secret
    assert (get.returncode, get.stdout) == (0, "v\n")


def test_clients_need_the_secret(cluster_dir: Path, tmp_path: Path) -> None:
    d = str(cluster_dir)
    run_raftio("cluster", "up", "-n", "3", "--dir", d)
    peers = ",".join(ClusterSpec.load(cluster_dir).client_peers)
    wrong = write_secret(tmp_path / "wrong", os.urandom(32).hex().encode())

    without = run_raftio("kv", "--peers", peers, "--timeout", "2", "put", "k", "v")
    with_file = run_raftio("kv", "--peers", peers, "--secret-file", str(cluster_dir / "secret"),
                           "put", "k", "v")  # fmt: skip
    with_wrong = run_raftio("kv", "--peers", peers, "--secret-file", str(wrong), "--timeout", "2",
                            "get", "k")  # fmt: skip
    status_without = run_raftio("status", "--peers", peers)
    status_dir = run_raftio("status", "--dir", d)

    assert without.returncode == 1
    assert without.stderr.startswith("raftio kv: unauthorized: ")
    assert without.stderr.endswith(
        "; give the cluster's secret: --secret-file FILE, or --dir DIR\n"
    )
    assert len(without.stderr.splitlines()) == 1
    assert (with_file.returncode, with_file.stdout) == (0, "v\n")
    assert with_wrong.returncode == 1
    assert with_wrong.stderr.startswith("raftio kv: unauthorized: ")
    assert with_wrong.stderr.endswith("; is this the cluster's secret file?\n")
    assert len(with_wrong.stderr.splitlines()) == 1
    assert status_without.returncode == 1  # no node answers a client without the secret
    assert status_without.stderr.startswith("raftio status: unauthorized: ")
    assert len(status_without.stderr.splitlines()) == 1
    assert status_dir.returncode == 0
    assert sum(" leader " in row for row in status_dir.stdout.splitlines()[1:]) == 1


def test_a_loosened_secret_stops_cluster_up_before_any_node_starts(cluster_dir: Path) -> None:
    spec = ClusterSpec.create(cluster_dir, 3)
    spec.save()
    spec.ensure_secret().chmod(0o644)

    done = run_raftio("cluster", "up", "--dir", str(cluster_dir))

    assert done.returncode == 2
    assert done.stderr == (
        f"raftio cluster up: the secret file {spec.secret_path} is open to group or others "
        f"(mode 0644): chmod 600 {spec.secret_path}\n"
    )
    assert running_detached(spec) == {}
    assert not spec.log_path(0).exists()


def test_the_demo_keeps_its_secret_in_its_directory(tmp_path: Path) -> None:
    directory = tmp_path / "demo"

    done = run_raftio("demo", "--writes", "10", "--dir", str(directory))

    assert done.returncode == 0, done.stdout + done.stderr
    secret = directory / "secret"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert len(secret.read_bytes()) == 32
