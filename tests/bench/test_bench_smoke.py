"""A tiny real run of `python -m benchmarks`: raftio's three series on 3-process clusters;
and one stopped with SIGTERM through its alias, `raftio bench`.

No throughput or latency target is asserted (a shared machine moves them);
what is checked is that the harness measures what it says: every point
completed operations without errors, the leader's counters moved the way
a replicated, fsynced write must move them, the results directory holds
the JSON, the markdown table and the plots, and no process outlives the run.
"""

from __future__ import annotations

import importlib.util
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.report import DOCS_BEGIN, DOCS_END

from .conftest import CHECKOUT

SERIES = ("raftio-embedded", "raftio-e2e", "raftio-embedded-nofsync")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _processes_naming(text: str) -> list[int]:
    """Pids of live processes whose command line contains `text`."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if text in cmdline:
            pids.append(int(entry.name))
    return pids


def _children(pid: int) -> list[int]:
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def test_a_small_run_measures_every_raftio_series_and_cleans_up(tmp_path: Path) -> None:
    out = tmp_path / "results"
    page = tmp_path / "page.md"
    page.write_text(f"# Results\n\n{DOCS_BEGIN}\nold\n{DOCS_END}\n\nafter\n")
    argv = [sys.executable, "-m", "benchmarks", "--only", "raftio",
            "--concurrency", "1,8", "--payload", "16", "--duration", "0.5", "--warmup", "0.3",
            "--out", str(out), "--docs", str(page)]  # fmt: skip

    proc = subprocess.Popen(argv, cwd=CHECKOUT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)  # fmt: skip
    stdout, stderr = proc.communicate(timeout=240)

    assert proc.returncode == 0, stderr
    assert _processes_naming(f"--parent-pid {proc.pid}") == []
    assert "[6/6]" in stderr  # the progress display counted every point
    assert "target leader-cpu:" in stdout

    results = json.loads((out / "results.json").read_text())
    points = {(p["series"], p["concurrency"]): p for p in results["points"]}
    assert set(points) == {(s, c) for s in SERIES for c in (1, 8)}
    for (series, _), point in points.items():
        assert point["ops"] > 0, point
        assert point["errors"] == {}, point["first_error"]
        assert point["latency"]["count"] == point["ops"]
        lat = point["latency"]
        assert 0 < lat["p50_us"] <= lat["p99_us"] <= lat["p999_us"] <= lat["max_us"]
        leader = point["leader"]
        assert leader["entries"] > 0
        assert leader["cpu_us_per_entry"] > 0
        # Each entry reaches two followers: RPCs go out, and more than the
        # entry's bytes cross the leader's sockets.
        assert leader["rpcs_per_entry"] > 0
        assert leader["bytes_per_entry"] > 16
        assert leader["fsyncs_per_entry"] > 0  # fsync off still counts its no-op syncs
        # /proc counts CPU in 10 ms ticks: over half a second, only "measured" is certain.
        assert leader["cluster_cpu_us_per_entry"] is not None
        is_e2e = series == "raftio-e2e"
        assert (leader["client_cpu_utilization"] is not None) == is_e2e
    probes = results["probes"]
    assert probes["fdatasync"]["p50_us"] > 0
    assert probes["rtt"]["p50_us"] > 0
    # A floor commit waits for a follower's sync after a round trip.
    assert probes["commit_floor"]["count"] == 2000
    assert probes["commit_floor"]["p50_us"] > 0
    assert results["machine"]["nproc"] >= 1

    written = page.read_text()  # --docs replaced the block and nothing else
    assert "old" not in written
    assert written.endswith(f"{DOCS_END}\n\nafter\n")
    assert "| 16 B | 8 |" in written
    assert results["settings"]["docs"] == str(page)

    markdown = (out / "results.md").read_text()
    assert "## Targets" in markdown
    assert "commit floor (one C=1 commit's I/O" in markdown
    assert "| 16 B | 8 |" in markdown  # a row of the throughput table
    assert "raftio KV end to end" in markdown
    for name in ("raftio-0.log", "raftio-nofsync-0.log", "echo.log"):
        assert (out / "logs" / name).exists()
    if importlib.util.find_spec("matplotlib") is not None:
        for name in ("throughput_vs_concurrency.png", "latency_cdf.png"):
            assert (out / name).read_bytes()[:8] == PNG_MAGIC
            assert f"]({name})" in markdown
    else:
        assert "Plots skipped: matplotlib is not installed" in markdown


def test_sigterm_mid_run_stops_every_process_and_keeps_what_was_measured(
    tmp_path: Path,
) -> None:
    out = tmp_path / "results"
    argv = [sys.executable, "-m", "raftio", "bench", "--only", "raftio",
            "--series", "raftio-embedded", "--concurrency", "1,2", "--payload", "16",
            "--duration", "30", "--warmup", "0.2", "--out", str(out)]  # fmt: skip
    proc = subprocess.Popen(argv, cwd=CHECKOUT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)  # fmt: skip
    assert proc.stderr is not None
    for line in proc.stderr:  # wait until the first point is under way
        if line.startswith("starting raftio"):
            break
    (harness,) = _children(proc.pid)  # `raftio bench` runs `python -m benchmarks`
    deadline = time.monotonic() + 60
    while len(_processes_naming(f"--parent-pid {harness}")) < 3:
        assert time.monotonic() < deadline, "the cluster never started"
        time.sleep(0.1)

    proc.send_signal(signal.SIGTERM)  # to the alias, which passes it on
    _, stderr = proc.communicate(timeout=60)

    assert proc.returncode == 130, stderr
    assert _processes_naming(f"--parent-pid {harness}") == []
    assert not Path(f"/proc/{harness}").exists()
    results = json.loads((out / "results.json").read_text())
    assert results["interrupted"] is True
    assert "(**interrupted**)" in (out / "results.md").read_text()
