"""`python -m benchmarks --memory` (benchmarks.memory_bench): a tiny real run of both
measurements, the option checks, and the table.

Sizes are not asserted (a shared machine's allocator and a small N move them);
what is checked is that each measured what it says: the log held every entry
appended and the node's RSS grew with it, and idle connections to a node grew
its RSS.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import memory_bench
from benchmarks.cli import main as bench_main


def test_a_small_memory_run_measures_the_log_and_idle_connections(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = memory_bench.Settings(entries=50_000, connections=200, out=tmp_path)

    assert memory_bench.run(settings) == 0

    results = json.loads((tmp_path / "memory.json").read_text())
    assert [row["storage"] for row in results["log"]] == ["FileStorage", "MemoryStorage"]
    for row in results["log"]:
        assert row["entries"] == 50_000
        assert row["entries_held"] >= 50_000  # no snapshot: every entry stays in the log
        assert row["growth"] > 0
        assert row["mib_per_million"] > 0
        assert row["command_bytes"] > 16  # the value plus the command's msgpack
    conns = results["connections"]
    assert conns["connections"] == 200
    assert conns["growth"] > 0
    assert conns["kib_per_connection"] > 0
    printed = capsys.readouterr().out
    assert "MiB per million entries" in printed
    assert "KiB per connection" in printed


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["--memory", "--profile"], "--memory does not take --profile"),
        (["--memory", "--entries", "0"], "--entries must be >= 1"),
        (["--entries", "10"], "--entries and --connections go with --memory"),
        (["--snapshot", "--memory"], "--snapshot does not take --memory"),
    ],
)
def test_memory_options_are_checked_before_anything_starts(
    args: list[str], complaint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert bench_main(args) == 2
    assert complaint in capsys.readouterr().err


def test_the_table_names_its_units() -> None:
    results = {
        "log": [{"entries": 1_000_000, "storage": "FileStorage", "mib_per_million": 180.0,
                 "bytes_per_entry": 188.7, "rss_before": 64 << 20, "rss_after": 244 << 20,
                 "entry_object_bytes": 48, "command_bytes_object": 58, "command_bytes": 25,
                 "seconds": 4.0}],
        "connections": {"connections": 1000, "kib_per_connection": 4.5,
                        "rss_before": 30 << 20, "rss_with": 34 << 20,
                        "rss_after_close": 33 << 20},
    }  # fmt: skip

    text = memory_bench.table(results)

    assert "**180.0 MiB per million entries** (189 B each) | 64.0 -> 244.0 MiB" in text
    assert "1,000 idle KV connections to one node | **4.5 KiB per connection**" in text
