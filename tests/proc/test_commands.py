"""The command line as users run it: `python -m raftio demo`, `cluster up/down`, `kv`, `status`."""

from __future__ import annotations

import re
from pathlib import Path

import raftio
from raftio.kv.local import ClusterSpec, running_detached

from .conftest import run_raftio


def test_demo_passes_and_reports_the_failover_time() -> None:
    done = run_raftio("demo", "--writes", "50")

    print(done.stdout, done.stderr)
    assert done.returncode == 0
    assert "demo PASSED: 6/6 checks passed" in done.stdout
    failover = re.search(r"failover time: (\d+\.\d+) s", done.stdout)
    assert failover is not None
    assert float(failover.group(1)) < 5.0


def test_version() -> None:
    done = run_raftio("--version")

    assert done.stdout.strip() == f"raftio {raftio.__version__}"


def test_cluster_up_kv_status_down(cluster_dir: Path) -> None:
    d = str(cluster_dir)
    up = run_raftio("cluster", "up", "-n", "3", "--dir", d)
    pids = running_detached(ClusterSpec.load(cluster_dir))

    put = run_raftio("kv", "--dir", d, "put", "greeting", "hello")
    append = run_raftio("kv", "--dir", d, "append", "greeting", ", world")
    get = run_raftio("kv", "--dir", d, "get", "greeting")
    missing = run_raftio("kv", "--dir", d, "get", "nothing-here")
    status = run_raftio("status", "--dir", d)
    metrics = run_raftio("status", "--dir", d, "--metrics")
    down = run_raftio("cluster", "down", "--dir", d)
    after = run_raftio("status", "--dir", d)

    assert up.returncode == 0, up.stderr
    assert sorted(pids) == [0, 1, 2]
    assert (put.returncode, put.stdout) == (0, "hello\n")
    assert (append.returncode, append.stdout) == (0, "hello, world\n")
    assert (get.returncode, get.stdout) == (0, "hello, world\n")
    assert (missing.returncode, missing.stderr) == (1, "(nil)\n")
    assert status.returncode == 0
    rows = status.stdout.splitlines()[1:]
    assert len(rows) == 3
    assert sum(" leader " in row for row in rows) == 1
    assert all(" up " in row for row in rows)
    metric_lines = metrics.stdout.split("\n\n", 1)[1].splitlines()
    header = metric_lines[0].split()
    by_node = [dict(zip(header, line.split(), strict=True)) for line in metric_lines[1:]]
    assert len(by_node) == 3
    assert sum(int(row["led"]) for row in by_node) >= 1
    assert all(int(row["syncs"]) >= 1 for row in by_node)
    assert down.returncode == 0
    assert sorted(down.stdout.splitlines()) == [
        f"node {i} (pid {pids[i]}) stopped" for i in range(3)
    ]
    assert after.returncode == 1
    assert all(" down " in row for row in after.stdout.splitlines()[1:])


def test_kv_without_a_cluster_fails_fast() -> None:
    done = run_raftio("kv", "--peers", "127.0.0.1:1", "--timeout", "1", "put", "k", "v")

    assert done.returncode == 1
    assert "gave up" in done.stderr
