"""`python -m benchmarks --snapshot`: a small real run, and its command line.

The run is the 1 GiB benchmark shrunk to 32 MiB and half a second of load:
three node processes, a real snapshot over TCP, a raw loopback copy. No
rate or latency is asserted (a shared 2-core machine moves them); what is
checked is that every figure is there, that both ends' RSS growth stays
under the 64 MiB bound, and that no process outlives the run.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.cli import main as bench_main
from benchmarks.snapshot_transfer import parse_size

from .conftest import CHECKOUT
from .test_bench_smoke import _processes_naming

SIZE = 32 << 20


def test_a_small_snapshot_run_reports_every_figure_within_the_memory_bound(
    tmp_path: Path,
) -> None:
    out = tmp_path / "results"
    argv = [sys.executable, "-m", "benchmarks", "--snapshot", "--size", "32M",
            "--duration", "0.5", "--out", str(out)]  # fmt: skip
    proc = subprocess.Popen(argv, cwd=CHECKOUT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)  # fmt: skip
    stdout, stderr = proc.communicate(timeout=300)

    assert proc.returncode == 0, stdout + stderr
    assert _processes_naming(f"--parent-pid {proc.pid}") == []
    assert "ratio" in stdout
    assert "receiver RSS" in stdout

    r = json.loads((out / "snapshot.json").read_text())
    assert r["size_bytes"] == SIZE
    t = r["transfer"]
    for key in ("seconds", "rate_mib_s", "raw_rate_mib_s", "disk_rate_mib_s"):
        assert t[key] > 0, key
    assert t["ratio"] == pytest.approx(t["rate_mib_s"] / t["raw_rate_mib_s"])
    assert 0 < t["first_chunk_after"] <= t["installed_after"] <= t["seconds"]
    assert t["chunks_sent"] >= t["chunks_needed"]
    m = r["rss_mib"]
    for end in ("sender", "receiver"):
        assert 0 < m[end]["baseline"] <= m[end]["peak"]
        assert m[end]["growth"] < 64, m
    assert m["within_bound"] is True
    assert r["ok"] is True
    assert m["samples"] > 0
    w = r["writes"]
    for phase in ("baseline", "during"):
        lat = w[phase]
        assert lat["count"] > 0, lat
        assert 0 < lat["p50_us"] <= lat["p99_us"]
    assert w["p99_ratio"] == pytest.approx(w["during"]["p99_us"] / w["baseline"]["p99_us"])
    assert r["caught_up"] is True
    assert r["resnapshots_during"] == 0
    for name in ("node0.log", "node1.log", "node2.log"):
        assert (out / "logs" / name).exists()


@pytest.mark.parametrize(
    ("text", "expected"),
    [("4096", 4096), ("32M", 32 << 20), ("1G", 1 << 30), ("1GiB", 1 << 30), ("512k", 512 << 10)],
)
def test_sizes_parse_in_binary_units(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "0", "-1M", "lots", "1X"])
def test_a_bad_size_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="size"):
        parse_size(text)


@pytest.mark.parametrize(
    "argv",
    [
        ["--size", "32M"],  # --size without --snapshot
        ["--snapshot", "--only", "raftio"],
        ["--snapshot", "--quick"],
        ["--snapshot", "--concurrency", "1,2"],
        ["--snapshot", "--duration", "0"],
    ],
)
def test_options_that_do_not_fit_snapshot_mode_are_refused_before_anything_starts(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert bench_main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "python -m benchmarks:" in err
