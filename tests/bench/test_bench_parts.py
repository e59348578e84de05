"""The harness's pure pieces: percentiles, targets, the report, parsers, counters, the CLI
(`python -m benchmarks` and its alias `raftio bench`).

Fast and deterministic; the real run is test_bench_smoke.py.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import zlib
from array import array
from pathlib import Path
from typing import Any

import pytest

import raftio
from benchmarks import report
from benchmarks.cli import main as bench_main
from benchmarks.commit_floor import Round, commit_floor
from benchmarks.control import run_loop
from benchmarks.counters import open_fds, wire_bytes
from benchmarks.kv_client import etcd_put_request, parse_etcd, parse_raftio
from benchmarks.loadgen import random_values
from benchmarks.procs import ProcessGroup, child_env
from benchmarks.runner import PACKAGE_ROOT, Run, Settings, selected_plans
from benchmarks.stats import decode_samples, encode_samples, median_run, percentile, summarize
from benchmarks.workloads import _split, costs
from raftio.cli import main as raftio_main
from raftio.kv.protocol import encode_frame

# --- stats ------------------------------------------------------------------


def test_the_commit_floor_times_each_commit_and_leaves_no_file(tmp_path: Path) -> None:
    data, logs = tmp_path / "data", tmp_path / "logs"
    data.mkdir()
    logs.mkdir()

    async def main() -> list[float]:
        async with ProcessGroup() as group:
            env = child_env(PACKAGE_ROOT)
            return await commit_floor(group, [sys.executable, "-m"], env, data, logs, count=100)

    samples = run_loop(main(), "asyncio")

    assert len(samples) == 100
    assert min(samples) > 0
    assert list(data.iterdir()) == []  # three files were written and fdatasync'd, then removed
    assert {p.name for p in logs.iterdir()} == {"floor-1.log", "floor-2.log", "floor-leader.log"}


def test_a_floor_commit_needs_two_copies_of_its_own_round() -> None:
    async def main() -> list[bool]:
        loop = asyncio.get_running_loop()
        seen = []
        current = Round(7, loop)
        current.durable(6)  # the last round's late answer: counts for none
        seen.append(current.committed.done())
        current.durable(7)  # the leader's own sync
        seen.append(current.committed.done())
        current.durable(8)  # not this round's either
        seen.append(current.committed.done())
        current.durable(7)  # one answer: two of three
        seen.append(current.committed.done())
        current.durable(7)  # the other answer changes nothing
        seen.append(current.committed.done())
        return seen

    assert run_loop(main(), "asyncio") == [False, False, False, True, True]


@pytest.mark.parametrize(
    ("q", "expected"),
    [
        (0.0, 1.0),  # nearest rank: the smallest sample
        (0.5, 50.0),
        (0.99, 99.0),
        (0.999, 100.0),
        (1.0, 100.0),
    ],
)
def test_percentile_is_nearest_rank(q: float, expected: float) -> None:
    ordered = [float(i) for i in range(1, 101)]

    assert percentile(ordered, q) == expected


def test_summary_in_microseconds_with_a_monotone_cdf() -> None:
    samples = [i / 1e6 for i in range(1, 1001)]  # 1..1000 us

    summary = summarize(samples)

    assert summary["count"] == 1000
    assert summary["p50_us"] == pytest.approx(500)
    assert summary["p99_us"] == pytest.approx(990)
    assert summary["p999_us"] == pytest.approx(999)
    assert summary["max_us"] == pytest.approx(1000)
    xs = [x for x, _ in summary["cdf"]]
    qs = [q for _, q in summary["cdf"]]
    assert xs == sorted(xs)
    assert qs == sorted(qs)
    assert (qs[0], qs[-1]) == (0.0, 1.0)


def test_samples_survive_the_control_channel() -> None:
    samples = array("d", [0.001, 0.5, 1e-9])

    assert decode_samples(encode_samples(samples)) == samples


def test_median_run_keeps_one_run_whole() -> None:
    runs = [{"throughput": 30.0, "tag": "c"}, {"throughput": 10.0, "tag": "a"},
            {"throughput": 20.0, "tag": "b"}, {"throughput": 40.0, "tag": "d"}]  # fmt: skip

    assert median_run(runs)["tag"] == "b"  # the lower median of an even count
    assert median_run(runs[:3])["tag"] == "b"


# --- load values ---------------------------------------------------------------


@pytest.mark.parametrize("payload", [16, 1024])
def test_values_have_the_payload_size_and_do_not_compress(payload: int) -> None:
    values = random_values(payload, count=64)

    batch = [next(values) for _ in range(64)]

    assert {len(v) for v in batch} == {payload}
    assert len(set(batch)) == 64
    assert next(values) == batch[0]  # a cycle: no generation cost per operation
    raw = "".join(batch).encode()
    assert len(zlib.compress(raw, 3)) > 0.7 * len(raw)  # PySyncObj's wire compression


# --- workloads ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("total", "parts", "expected"),
    [(1, 2, [1]), (16, 2, [8, 8]), (5, 2, [3, 2]), (4096, 2, [2048, 2048])],
)
def test_split_concurrency_over_client_processes(
    total: int, parts: int, expected: list[int]
) -> None:
    assert _split(total, parts) == expected


def test_costs_per_committed_entry() -> None:
    before = {"t": 10.0, "cpu": 1.0, "fsyncs": 5, "rpcs": 100, "wire_sent": 1000,
              "wire_received": 500, "commit_index": 1000, "term": 3}  # fmt: skip
    after = {"t": 12.0, "cpu": 1.5, "fsyncs": 15, "rpcs": 300, "wire_sent": 41000,
             "wire_received": 10500, "commit_index": 11000, "term": 3}  # fmt: skip

    got = costs(before, after, ops=9990)

    assert got["entries"] == 10000
    assert got["cpu_us_per_entry"] == pytest.approx(50.0)
    assert got["cpu_utilization"] == pytest.approx(0.25)
    assert got["fsyncs_per_entry"] == pytest.approx(0.001)
    assert got["rpcs_per_entry"] == pytest.approx(0.02)
    assert got["bytes_per_entry"] == pytest.approx(5.0)
    assert "leader_changed" not in got


def test_a_new_term_inside_the_window_is_flagged() -> None:
    before = {"t": 0.0, "cpu": 0.0, "commit_index": 0, "term": 3}
    after = {"t": 1.0, "cpu": 0.1, "commit_index": 10, "term": 4}

    assert costs(before, after, ops=10)["leader_changed"] is True


# --- load client parsers --------------------------------------------------------


def test_raftio_frames_are_parsed_only_when_whole() -> None:
    frame = encode_frame({"ok": True, "value": "v"})
    buf = bytearray(frame[:3])

    assert parse_raftio(buf) is None
    buf += frame[3:-1]
    assert parse_raftio(buf) is None
    buf += frame[-1:] + b"\x00"
    assert parse_raftio(buf) == ({"ok": True, "value": "v"}, len(frame))


def test_etcd_responses_are_parsed_only_when_whole() -> None:
    body = b'{"header":{}}'
    response = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
    response += b"Content-Length: %d\r\n\r\n" % len(body) + body

    assert parse_etcd(bytearray(response[:20])) is None
    assert parse_etcd(bytearray(response[:-1])) is None
    assert parse_etcd(bytearray(response)) == (200, len(response))


def test_etcd_put_request_is_base64_json() -> None:
    request = etcd_put_request("127.0.0.1", 2379, "k", "vv")

    head, _, body = request.partition(b"\r\n\r\n")
    assert head.startswith(b"POST /v3/kv/put HTTP/1.1\r\n")
    assert b"Content-Length: %d" % len(body) in head
    assert body == b'{"key": "aw==", "value": "dnY="}'


# --- counters ---------------------------------------------------------------------


def test_wire_bytes_reads_tcp_info_of_matching_sockets_only() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    server, _ = listener.accept()
    try:
        start = wire_bytes(set(), {port})
        client.sendall(b"x" * 5000)
        got = b""
        while len(got) < 5000:
            got += server.recv(65536)
        server.sendall(b"y" * 700)
        got = b""
        while len(got) < 700:
            got += client.recv(65536)

        end = wire_bytes(set(), {port})
        unrelated = wire_bytes(set(), {1})
    finally:
        for sock in (client, server, listener):
            sock.close()

    assert end.sent - start.sent == 5000  # the client side: connected to `port`
    assert end.received - start.received == 700
    assert unrelated.sockets == 0


def test_wire_bytes_leaves_no_descriptor_behind() -> None:
    read_end, write_end = os.pipe()  # not a socket: skipped, not leaked
    try:
        before = len(open_fds())
        for _ in range(5):
            wire_bytes({1}, {1})

        after = len(open_fds())
    finally:
        os.close(read_end)
        os.close(write_end)

    assert after == before


# --- report -----------------------------------------------------------------------


def _point(
    series: str, c: int, throughput: float, p50_us: float, cpu: float = 30.0
) -> dict[str, Any]:
    return {"series": series, "concurrency": c, "payload": 16, "throughput": throughput,
            "ops": int(throughput), "seconds": 1.0, "errors": {}, "first_error": "",
            "latency": {"count": 1, "p50_us": p50_us, "p99_us": p50_us * 2,
                        "p999_us": p50_us * 3, "max_us": p50_us * 4,
                        "cdf": [[p50_us, 0.5], [p50_us * 4, 1.0]]},
            "leader": {"cpu_us_per_entry": cpu, "entries": int(throughput)}}  # fmt: skip


def _results(points: list[dict[str, Any]]) -> dict[str, Any]:
    return {"points": points, "probes": {"fdatasync": {"p50_us": 1000.0, "p99_us": 3000.0},
                                         "rtt": {"p50_us": 25.0, "p99_us": 60.0}}}  # fmt: skip


def test_targets_met_and_not_met() -> None:
    results = _results([
        _point("raftio-embedded", 256, 50_000, 5000, cpu=35.0),
        _point("raftio-embedded", 1, 1000, 2000),  # bound: 2 x (1000 + 25) us = 2.05 ms
        _point("pysyncobj", 16, 10_000, 2000),
        _point("pysyncobj", 256, 30_000, 9000),  # the best PySyncObj point
        _point("raftio-e2e", 256, 9_000, 30_000),
        _point("etcd", 256, 10_000, 25_000),
        _point("raftio-e2e", 1, 700, 1200),
        _point("etcd", 1, 750, 1300),
    ])  # fmt: skip

    verdicts = {t["key"]: t for t in report.evaluate_targets(results)}

    assert verdicts["embedded-vs-pysyncobj"]["met"] is False  # 50k < 2 x 30k
    assert verdicts["embedded-vs-pysyncobj"]["ratio"] == pytest.approx(50 / 30)
    assert verdicts["single-client-latency"]["met"] is True
    assert verdicts["single-client-latency"]["reference"] == pytest.approx(2.05)
    assert verdicts["e2e-throughput-vs-etcd"]["met"] is False
    assert verdicts["e2e-latency-vs-etcd"]["met"] is True
    assert verdicts["leader-cpu"]["met"] is True


def test_targets_without_their_points_are_not_measured() -> None:
    results = _results([_point("raftio-embedded", 1, 1000, 2000)])

    verdicts = {t["key"]: t["met"] for t in report.evaluate_targets(results)}

    assert verdicts == {"embedded-vs-pysyncobj": None, "single-client-latency": True,
                        "e2e-throughput-vs-etcd": None, "e2e-latency-vs-etcd": None,
                        "leader-cpu": None}  # fmt: skip


def test_markdown_puts_ratios_next_to_the_figures() -> None:
    results = _results([_point("raftio-embedded", 256, 60_000, 5000),
                        _point("pysyncobj", 256, 30_000, 9000),
                        _point("raftio-e2e", 256, 9_000, 30_000),
                        _point("etcd", 256, 10_000, 25_000)])  # fmt: skip
    results["targets"] = report.evaluate_targets(results)

    text = report.markdown(results)

    assert "| 16 B | 256 | 60,000 | 30,000 | 9,000 | 10,000 | 2.00x | 0.90x |" in text
    assert "| 16 B | 256 | 5.00 / 10.0 / 15.0 | 9.00 / 18.0 / 27.0 |" in text
    assert "**met**" in text
    assert "**NOT met**" in text


def test_the_docs_block_is_replaced_and_the_rest_of_the_page_kept(tmp_path: Path) -> None:
    results = _results([_point("raftio-embedded", 256, 60_000, 5000),
                        _point("pysyncobj", 256, 30_000, 9000)])  # fmt: skip
    results["targets"] = report.evaluate_targets(results)
    results["command"] = "raftio bench --quick"
    page = tmp_path / "benchmarks.md"
    page.write_text(
        f"# Benchmarks\n\nprose before\n\n{report.DOCS_BEGIN}\nold tables\n"
        f"{report.DOCS_END}\n\nprose after\n"
    )

    report.update_docs(page, results)
    once = page.read_text()
    report.update_docs(page, results)

    assert page.read_text() == once  # the markers survive: the block can be replaced again
    assert "old tables" not in once
    assert once.startswith("# Benchmarks\n\nprose before\n\n" + report.DOCS_BEGIN)
    assert once.endswith(report.DOCS_END + "\n\nprose after\n")
    assert "`raftio bench --quick`" in once
    assert "| 16 B | 256 | 60,000 | 30,000 |" in once
    assert "### Targets, met or not" in once


def test_a_page_without_the_block_is_refused(tmp_path: Path) -> None:
    page = tmp_path / "benchmarks.md"
    page.write_text("# Benchmarks\n")

    with pytest.raises(ValueError, match="no generated results block"):
        report.update_docs(page, _results([]))

    assert page.read_text() == "# Benchmarks\n"


def test_the_shipped_page_has_a_block_to_replace() -> None:
    page = Path(__file__).resolve().parents[2] / "docs" / "benchmarks.md"
    text = page.read_text()

    assert text.count(report.DOCS_BEGIN) == 1
    assert text.index(report.DOCS_BEGIN) < text.index(report.DOCS_END)


# --- command line -------------------------------------------------------------------


def test_bench_refuses_a_docs_page_without_a_block_before_starting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    page = tmp_path / "page.md"
    page.write_text("# nothing generated here\n")

    code = bench_main(["--docs", str(page), "--out", str(tmp_path / "out")])

    assert code == 2
    assert "has no generated results block" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["--concurrency", "0,16"], "expected positive integers"),
        (["--payload", "x"], "expected integers like 1,16,256, not 'x'"),
    ],
)
def test_bench_rejects_malformed_lists(
    args: list[str], complaint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        bench_main(args)

    assert exited.value.code == 2
    assert complaint in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["--series", "raftio-embedded,nope"], "unknown series ['nope']"),
        (["--repeat", "0"], "--repeat must be >= 1"),
    ],
)
def test_bench_rejects_bad_settings_before_starting_anything(
    args: list[str], complaint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = bench_main(args)

    assert code == 2
    assert complaint in capsys.readouterr().err


def test_repeated_rounds_keep_the_median_run_of_each_point(tmp_path: Path) -> None:
    settings = Settings(concurrency=[1], payloads=[16], repeat=3, only="raftio",
                        series=["raftio-embedded"])  # fmt: skip
    run = Run(settings, tmp_path)
    for throughput, load in ((300.0, 1.0), (100.0, 2.0), (200.0, 3.0)):
        run.runs.setdefault(("raftio-embedded", 1, 16), []).append(
            {
                "series": "raftio-embedded",
                "concurrency": 1,
                "payload": 16,
                "throughput": throughput,
                "loadavg": load,
            }
        )

    run.collect()

    (point,) = run.results["points"]
    assert point["throughput"] == 200.0
    assert point["runs"] == [300.0, 100.0, 200.0]
    assert point["loadavg"] == [1.0, 2.0, 3.0]


def test_raftio_bench_outside_a_checkout_says_where_the_harness_lives(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # As from a wheel: no checkout around raftio.
    monkeypatch.setattr(raftio, "__file__", str(tmp_path / "site" / "raftio" / "__init__.py"))

    code = raftio_main(["bench", "--quick"])

    assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("raftio bench: the benchmark harness is not installed with raftio")
    assert "python -m benchmarks" in err
    assert "docs/benchmarks.md" in err


def test_raftio_bench_runs_the_harness_with_its_options_and_exit_code(tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "raftio", "bench"]

    refused = subprocess.run([*argv, "--repeat", "0", "--out", str(tmp_path / "r")],
                             cwd=tmp_path, capture_output=True, text=True, timeout=60,
                             check=False)  # fmt: skip
    helped = subprocess.run([*argv, "--help"], cwd=tmp_path, capture_output=True, text=True,
                            timeout=60, check=False)  # fmt: skip

    assert refused.returncode == 2
    assert refused.stderr == (
        "python -m benchmarks: --repeat must be >= 1, --duration > 0, --warmup >= 0\n"
    )
    assert not (tmp_path / "r").exists()
    assert helped.returncode == 0
    assert helped.stdout.startswith("usage: python -m benchmarks [-h] [--quick]")
    assert "--docs PAGE" in helped.stdout


def test_a_missing_peer_is_skipped_with_the_install_script_named(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PATH", "")  # no etcd binary to be found

    plans = {plan.name: plan for plan, _ in selected_plans(Settings(only="etcd"))}

    assert set(plans) == {"etcd"}
    why = plans["etcd"].available()
    assert why is not None
    assert "scripts/install_bench_peers.sh" in why
