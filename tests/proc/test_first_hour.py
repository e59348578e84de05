"""What a new user trips over (issue 12): each mistake is one line on stderr, never a traceback.

The commands are the ones a user types, run as processes: a demo started
from a directory that holds a `raftio/` folder, `cluster up` with a node
that dies at start-up, malformed addresses, unusable directories, a closed
stdout, and the demo's live table on a terminal.
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import shutil
import socket
import struct
import subprocess
import sys
import sysconfig
import termios
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from raftio.kv.local import ClusterSpec, running_detached

from .conftest import ROOT, run_raftio

RAFTIO_SCRIPT = Path(sysconfig.get_path("scripts")) / "raftio"


@pytest.fixture
def cluster_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory for `raftio cluster up`; its nodes are stopped afterwards, whatever happened."""
    directory = tmp_path / "cluster"
    try:
        yield directory
    finally:
        if (directory / "cluster.json").exists():
            run_raftio("cluster", "down", "--dir", str(directory))
            assert running_detached(ClusterSpec.load(directory)) == {}


def one_line(done: subprocess.CompletedProcess[str]) -> str:
    """The single line a failed command printed on stderr (asserted to be one)."""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


def consecutive_free_ports(n: int) -> int:
    """A base port P such that P..P+n-1 are free on 127.0.0.1 right now."""
    for base in range(20000 + os.getpid() % 20000, 60000, 97):
        sockets = []
        try:
            for port in range(base, base + n):
                sock = socket.socket()
                sockets.append(sock)
                sock.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
    raise RuntimeError(f"no {n} consecutive free ports")


# --------------------------------------------------------------------------- item 2


def test_the_demo_runs_from_a_directory_holding_a_raftio_folder(tmp_path: Path) -> None:
    (tmp_path / "raftio").mkdir()  # e.g. the directory that holds a checkout named raftio

    done = subprocess.run(
        [str(RAFTIO_SCRIPT), "demo", "--writes", "20"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        check=False,
    )
    # As installed: a PYTHONPATH naming a checkout would find the package before the folder.
    installed = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    module = run_raftio("--version", cwd=tmp_path, env=installed)

    assert done.returncode == 0, done.stdout + done.stderr
    assert "demo PASSED: 6/6 checks passed" in done.stdout
    assert module.returncode == 1
    assert "shadows the installed raftio package" in one_line(module)


# --------------------------------------------------------------------------- item 3


def test_cluster_up_reports_a_node_whose_port_is_taken_at_once(cluster_dir: Path) -> None:
    base = consecutive_free_ports(6)
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", base + 1))  # node 1's Raft port
    squatter.listen()

    try:
        started = time.monotonic()
        done = run_raftio("cluster", "up", "-n", "3", "--dir", str(cluster_dir),
                          "--base-port", str(base))  # fmt: skip
        elapsed = time.monotonic() - started
    finally:
        squatter.close()
    line = one_line(done)
    running = running_detached(ClusterSpec.load(cluster_dir))

    assert done.returncode == 1
    assert line.startswith("raftio cluster up: node 1 exited at start-up (exit code 1): ")
    assert "address already in use" in line
    assert f"log: {cluster_dir}/node-1.log" in line
    assert elapsed < 10.0  # it did not wait out the 15 s for a leader
    assert sorted(running) == [0, 2]  # the healthy nodes run on


def test_cluster_up_reports_a_corrupt_wal_and_the_next_run_has_a_fresh_log(
    cluster_dir: Path,
) -> None:
    d = str(cluster_dir)
    first = run_raftio("cluster", "up", "-n", "3", "--dir", d)
    writes = [run_raftio("kv", "--dir", d, "append", "k", f"{i};") for i in range(20)]
    run_raftio("cluster", "down", "--dir", d)
    wal = sorted((cluster_dir / "node-1").glob("wal-*.log"))[0]
    data = bytearray(wal.read_bytes())
    data[len(data.rstrip(b"\0")) // 3] ^= 0xFF  # a flipped byte well inside the records
    wal.write_bytes(bytes(data))

    broken = run_raftio("cluster", "up", "--dir", d)
    line = one_line(broken)
    shutil.rmtree(cluster_dir / "node-1")  # its disk is lost: it must not come back empty
    again = run_raftio("cluster", "up", "--dir", d)
    refusal = one_line(again)
    log = (cluster_dir / "node-1.log").read_text()
    previous = (cluster_dir / "node-1.log.1").read_text()

    assert first.returncode == 0, first.stderr
    assert all(w.returncode == 0 for w in writes)
    assert broken.returncode == 1
    assert line.startswith("raftio cluster up: node 1 exited at start-up (exit code 1): ")
    assert str(wal) in line  # the cause names the damaged file
    assert again.returncode == 1
    assert refusal.startswith("raftio cluster up: node 1 exited at start-up (exit code 2): ")
    assert '"Replace a failed node"' in refusal  # where the procedure is
    assert "cannot run" in previous
    assert "cannot run" not in log  # the log is this run's, not every run's


# --------------------------------------------------------------------------- item 4


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["kv", "--peers", "localhost", "get", "x"],
         "raftio kv: argument --peers: 'localhost' is not host:port"),
        (["status", "--peers", "localhost"],
         "raftio status: argument --peers: 'localhost' is not host:port"),
        (["node", "--peers", "localhost"],
         "raftio node: argument --peers: 'localhost' is not host:port"),
        (["kv", "--peers", "127.0.0.1:70000", "get", "x"],
         "raftio kv: argument --peers: '127.0.0.1:70000': port 70000 is out of range (1-65535)"),
        (["kv", "--peers", "127.0.0.1:7100,", "get", "x", "extra"],
         "raftio kv: get takes no VALUE"),
        (["node", "--id", "0", "--peers", "127.0.0.1:7100", "--client-peers", "127.0.0.1:7101",
          "--data", "/nonexistent/raftio-n0"],
         "raftio node: give --secret-file FILE (the cluster's shared secret), or --insecure"),
        (["cluster", "up", "-n", "0", "--dir", "/nonexistent/raftio-c"],
         "raftio cluster up: -n must be at least 1"),
        (["cluster", "up", "--dir", "/nonexistent/raftio-c", "--base-port", "65534"],
         "raftio cluster up: --base-port 65534: the ports must lie in 1-65535"),
    ],
)  # fmt: skip
def test_an_ordinary_mistake_is_one_line_and_exit_2(argv: list[str], expected: str) -> None:
    done = run_raftio(*argv)

    assert done.returncode == 2
    assert one_line(done).startswith(expected)
    assert done.stdout == ""


@pytest.mark.parametrize(
    ("command", "prog"),
    [(["cluster", "up", "-n", "3"], "raftio cluster up"), (["demo"], "raftio demo")],
)
def test_an_unusable_dir_is_one_line(tmp_path: Path, command: list[str], prog: str) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("not a directory\n")

    under_a_file = run_raftio(*command, "--dir", str(a_file / "cluster"))
    is_a_file = run_raftio(*command, "--dir", str(a_file))

    for done in (under_a_file, is_a_file):
        assert done.returncode == 2
        line = one_line(done)
        assert line.startswith(f"{prog}: ")
        assert "ot a directory" in line  # "Not a directory" (errno), or "... is not a directory"


def test_cluster_up_into_a_closed_pipe_exits_141_quietly_and_the_cluster_runs(
    cluster_dir: Path,
) -> None:
    # `raftio cluster up ... | head -1`, deterministically: the reader is gone before any write.
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "raftio", "cluster", "up", "-n", "3", "--dir", str(cluster_dir)],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
            cwd=ROOT,
            check=False,
        )
    finally:
        os.close(write_end)
    status = run_raftio("status", "--dir", str(cluster_dir))

    assert done.returncode == 141
    assert done.stderr == ""
    assert sorted(running_detached(ClusterSpec.load(cluster_dir))) == [0, 1, 2]
    assert status.returncode == 0


# --------------------------------------------------------------------------- item 5

_ERASE = re.compile(r"\x1b\[\d+F\x1b\[J")


def run_on_a_terminal(argv: list[str], timeout: float) -> tuple[int, str]:
    """Run argv with stdout on a pseudo-terminal 200 columns wide; its exit code and output."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 200, 0, 0))
    env = {**os.environ, "COLUMNS": "200"}
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=slave,
                            stderr=subprocess.DEVNULL, cwd=ROOT, env=env)  # fmt: skip
    os.close(slave)
    chunks = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if not ready:
                continue
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the terminal's other side is closed
                break
            if not data:
                break
            chunks.append(data)
        code = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    return code, b"".join(chunks).decode(errors="replace").replace("\r\n", "\n")


def table_rows(screen: str) -> list[list[str]]:
    """The status table rows (cells) in a piece of output, header excluded."""
    rows = []
    for line in screen.splitlines():
        cells = line.split()
        if len(cells) >= 3 and cells[0].isdigit() and (cells[1].isdigit() or cells[1] == "-"):
            rows.append(cells)
    return rows


def test_the_live_demo_ends_on_the_healthy_table_and_never_shows_a_node_down() -> None:
    code, output = run_on_a_terminal(
        [sys.executable, "-m", "raftio", "demo", "--writes", "20"], timeout=120
    )
    frames = _ERASE.split(output)
    last = frames[-1]
    final = table_rows(last)
    states = {cells[2] for frame in frames for cells in table_rows(frame)}

    assert code == 0, output
    assert len(frames) > 3  # the table was redrawn in place
    assert "demo PASSED" in last
    assert [cells[0] for cells in final] == ["0", "1", "2"]
    assert all(cells[2] == "up" for cells in final), last
    assert sum(cells[3] == "leader" for cells in final) == 1
    assert len({cells[11] for cells in final}) == 1  # one digest
    assert "down" not in states
    assert "starting" in states  # nodes not answering yet say so
    assert "digest: a hash of" in output


# --------------------------------------------------------------------------- item 7


def test_bench_with_every_system_skipped_fails_before_running(tmp_path: Path) -> None:
    hide_pysyncobj = (
        "import sys; sys.modules['pysyncobj'] = None  # not installed, as far as raftio sees"
    )
    run = f"{hide_pysyncobj}\nfrom benchmarks.cli import main\nraise SystemExit(main(sys.argv[1:]))"

    done = subprocess.run(
        [sys.executable, "-c", run, "--only", "pysyncobj", "--out", str(tmp_path / "r")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        check=False,
    )

    assert done.returncode == 2
    assert one_line(done).startswith(
        "python -m benchmarks: nothing to run: PySyncObj is not installed"
    )
    assert not (tmp_path / "r").exists()  # refused before the run, not after


def test_kv_says_it_is_retrying_when_no_node_answers() -> None:
    nowhere = consecutive_free_ports(2)

    done = run_raftio("kv", "--peers", f"127.0.0.1:{nowhere},127.0.0.1:{nowhere + 1}",
                      "--timeout", "2", "get", "k")  # fmt: skip

    assert done.returncode == 1
    assert done.stderr.splitlines()[0] == (
        "raftio kv: no node has answered yet; retrying for up to 2 s (--timeout)"
    )
    assert done.stderr.splitlines()[1].startswith("raftio kv: gave up after ")
    assert len(done.stderr.splitlines()) == 2
