"""The read series of `python -m benchmarks` (docs/benchmarks.md, "Reads"): a tiny real
run of every one of them, and the pieces around it (selection, the lease variant's
skip, the reads table and its ratios, the etcd range request).

As in test_bench_smoke.py, no throughput is asserted; what is checked is that
reads were measured (and were linearizable reads of the value written), that
the results JSON and the printed table carry them with their ratios to etcd,
and that lease reads skip the heartbeat round that ReadIndex reads pay for.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from benchmarks import report, runner, workloads
from benchmarks.cli import main as bench_main
from benchmarks.kv_client import etcd_range_request, parse_etcd_body
from benchmarks.runner import Run, Settings, selected_plans
from benchmarks.workloads import SERIES, costs

from .conftest import CHECKOUT
from .test_bench_smoke import _processes_naming

READS = (
    "raftio-read-embedded",
    "raftio-read-e2e",
    "raftio-lease-read-embedded",
    "raftio-lease-read-e2e",
    "etcd-read",
)
NO_LEASE = "this raftio has no lease_reads"


def test_a_small_read_run_measures_every_read_series_against_etcd(tmp_path: Path) -> None:
    out = tmp_path / "results"
    argv = [sys.executable, "-m", "benchmarks", "--series", ",".join(READS),
            "--concurrency", "1,4", "--payload", "16", "--duration", "0.5", "--warmup", "0.3",
            "--out", str(out)]  # fmt: skip

    proc = subprocess.Popen(argv, cwd=CHECKOUT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)  # fmt: skip
    stdout, stderr = proc.communicate(timeout=240)

    assert proc.returncode == 0, stderr
    assert _processes_naming(f"--parent-pid {proc.pid}") == []
    results = json.loads((out / "results.json").read_text())
    skipped = results["skipped"]
    assert results["failed"] == {}
    # Only a peer the harness itself skips may be missing, for its own reason.
    assert set(skipped) <= {"raftio-lease-read-embedded", "raftio-lease-read-e2e", "etcd-read"}
    if "etcd-read" in skipped:
        assert "scripts/install_bench_peers.sh" in skipped["etcd-read"]
    for key in ("raftio-lease-read-embedded", "raftio-lease-read-e2e"):
        assert skipped.get(key, NO_LEASE) == NO_LEASE

    measured = [key for key in READS if key not in skipped]
    points = {(p["series"], p["concurrency"]): p for p in results["points"]}
    assert set(points) == {(s, c) for s in measured for c in (1, 4)}
    for point in points.values():
        assert point["ops"] > 0, point
        assert point["errors"] == {}, point["first_error"]  # every read saw the value put
        lat = point["latency"]
        assert 0 < lat["p50_us"] <= lat["p99_us"] <= lat["max_us"]
        assert point["leader"]["entries"] == point["ops"]  # costs are per read

    rows = {(r["series"], r.get("concurrency")): r for r in results["reads"]}
    for key in measured:
        for c in (1, 4):
            row = rows[(key, c)]
            assert row["throughput"] > 0
            assert 0 < row["p50_us"] <= row["p99_us"]
            assert row["leader_cpu_us_per_read"] > 0
            if key == "etcd-read" or "etcd-read" in skipped:
                assert row["throughput_vs_etcd"] is None
            else:
                etcd = points[("etcd-read", c)]
                ratio = row["throughput"] / etcd["throughput"]
                assert row["throughput_vs_etcd"] == pytest.approx(ratio)
                assert row["p50_vs_etcd"] > 0
    for key in skipped:
        assert rows[(key, None)]["skipped"] == skipped[key]

    # ReadIndex: one heartbeat round (an RPC to each follower) per read at C=1.
    assert rows[("raftio-read-embedded", 1)]["rpcs_per_read"] >= 1.5
    if "raftio-lease-read-embedded" not in skipped:
        # Inside the lease a read sends nothing; only the periodic heartbeats go out.
        assert rows[("raftio-lease-read-embedded", 1)]["rpcs_per_read"] < 0.1

    assert "| series | payload | C | reads/s | p50 ms | p99 ms | reads/s vs etcd |" in stdout
    markdown = (out / "results.md").read_text()
    assert "## Reads (linearizable)" in markdown
    assert "| raftio read KV e2e | 16 B | 4 |" in markdown
    assert "## Throughput" not in markdown  # no write series ran: no empty write tables


def test_read_series_run_only_when_named() -> None:
    default = {s for _, series in selected_plans(Settings()) for s in series}
    named = {s for _, series in selected_plans(Settings(series=list(READS))) for s in series}

    assert default.isdisjoint(READS)
    assert "raftio-embedded" in default
    assert named == set(READS)
    assert all(SERIES[key].op == "read" for key in READS)


class _ConfigWithoutLeases:
    """A RaftConfig from before lease reads: the keyword is refused."""

    def __init__(self, **fields: Any) -> None:
        if "lease_reads" in fields:
            raise TypeError("__init__() got an unexpected keyword argument 'lease_reads'")


def test_without_lease_reads_the_lease_series_are_skipped_not_crashed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(workloads, "RaftConfig", _ConfigWithoutLeases)
    settings = Settings(concurrency=[1], payloads=[16],
                        series=["raftio-lease-read-embedded", "raftio-lease-read-e2e"])  # fmt: skip
    run = Run(settings, tmp_path)

    for plan, series in run.plans:  # an unavailable plan returns before starting anything
        asyncio.run(run._run_plan(None, plan, series, 0))  # type: ignore[arg-type]
    run.write()

    assert not workloads.lease_reads_available()
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["skipped"] == {
        "raftio-lease-read-embedded": NO_LEASE,
        "raftio-lease-read-e2e": NO_LEASE,
    }
    assert {"series": "raftio-lease-read-e2e", "label": "raftio-lease read KV e2e",
            "skipped": NO_LEASE} in results["reads"]  # fmt: skip
    assert f"| raftio-lease read embedded | skipped: {NO_LEASE} |" in report.markdown(results)


def test_a_run_of_only_lease_reads_without_them_is_refused(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(runner, "lease_reads_available", lambda: False)

    code = bench_main(["--series", "raftio-lease-read-embedded", "--duration", "1"])

    assert code == 2
    assert capsys.readouterr().err == f"python -m benchmarks: nothing to run: {NO_LEASE}\n"


@dataclass
class _Read:
    series: str
    concurrency: int
    throughput: float
    p50_us: float
    rpcs: float | None = None


def _points(*reads: _Read) -> list[dict[str, Any]]:
    return [_point(r) for r in reads]


def _point(r: _Read) -> dict[str, Any]:
    return {"series": r.series, "concurrency": r.concurrency, "payload": 16,
            "throughput": r.throughput, "errors": {},
            "latency": {"p50_us": r.p50_us, "p99_us": 2 * r.p50_us},
            "leader": {"cpu_us_per_entry": 10.0, "rpcs_per_entry": r.rpcs}}  # fmt: skip


def test_read_rows_carry_ratios_to_etcd_at_the_same_point() -> None:
    results = {
        "series": {key: {"label": SERIES[key].label, "op": SERIES[key].op} for key in SERIES},
        "points": _points(
            _Read("raftio-read-e2e", 256, 30_000, 8000, 0.01),
            _Read("etcd-read", 256, 10_000, 20_000),
            _Read("raftio-read-e2e", 1, 2000, 400, 2.0),
            _Read("raftio-embedded", 1, 1500, 600),  # a write series: not a read row
        ),
    }

    rows = report.read_rows(results)
    table = "\n".join(report.reads_table(results))

    assert [(r["series"], r["concurrency"]) for r in rows] == [
        ("raftio-read-e2e", 1), ("raftio-read-e2e", 256), ("etcd-read", 256),
    ]  # fmt: skip
    assert rows[0]["throughput_vs_etcd"] is None  # no etcd point at C=1
    assert rows[1]["throughput_vs_etcd"] == pytest.approx(3.0)
    assert rows[1]["p50_vs_etcd"] == pytest.approx(0.4)
    assert rows[2]["throughput_vs_etcd"] is None  # etcd is not compared with itself
    assert "| raftio read KV e2e | 16 B | 256 | 30,000 | 8.00 | 16.0 | 3.00x | 0.40x |" in table
    assert "| raftio read KV e2e | 16 B | 1 | 2,000 | 0.40 | 0.80 | - | - | 10.0 | 2.00 |" in table


def test_reads_are_costed_per_read_even_if_something_committed() -> None:
    before = {"t": 0.0, "cpu": 1.0, "rpcs": 0, "commit_index": 10}
    after = {"t": 1.0, "cpu": 1.5, "rpcs": 2000, "commit_index": 12}

    got = costs(before, after, ops=1000, per_op=True)

    assert got["entries"] == 1000
    assert got["cpu_us_per_entry"] == pytest.approx(500.0)
    assert got["rpcs_per_entry"] == pytest.approx(2.0)


def test_etcd_range_request_is_a_linearizable_get_and_its_body_is_kept() -> None:
    request = etcd_range_request("127.0.0.1", 2379, "k")
    head, _, body = request.partition(b"\r\n\r\n")
    response = b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n" + b'{"count":"1"}'[:12]

    assert head.startswith(b"POST /v3/kv/range HTTP/1.1\r\n")
    assert json.loads(body) == {"key": "aw=="}  # no "serializable": etcd's linearizable default
    assert f"Content-Length: {len(body)}".encode() in head
    assert parse_etcd_body(bytearray(response[:-1])) is None
    assert parse_etcd_body(bytearray(response + b"HTTP")) == ((200, b'{"count":"1"'), len(response))
