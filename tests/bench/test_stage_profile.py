"""`--profile`'s stage profile (benchmarks.stages, benchmarks.stage_profile): the stage
table and the folding of a cProfile into stages, then tiny real runs on 3-process
clusters, embedded and end to end, and one through the command line.

No figure is asserted beyond what a working measurement must show: entries were
committed, every process spent CPU on them and switched context, the WAL synced,
each stage lands where its work is (propose and encode at the leader, decode at
the followers, KV service end to end), and the stage table accounts for the hot
functions: what it names nothing for ("other") stays under OTHER_BOUND of a
process's CPU. Observed on a shared 2-core VM: 1-3.5% (embedded and end to end,
C=1 to 256).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from benchmarks import stage_profile
from benchmarks.control import run_loop
from benchmarks.procs import ProcessGroup, child_env
from benchmarks.profiles import py_spy_available
from benchmarks.runner import PACKAGE_ROOT
from benchmarks.stages import (
    EVENT_LOOP,
    OTHER,
    STAGE_MAP,
    STAGES,
    WAL,
    calibrate,
    stage_of,
    stage_seconds,
)
from benchmarks.workloads import RaftioCluster, RunContext

from .conftest import CHECKOUT

OTHER_BOUND = 0.10  # of a process's stage sum


# ------------------------------------------------------------------ the table


def test_every_stage_in_the_table_is_a_known_stage() -> None:
    assert {stage for _, _, stage in STAGE_MAP} <= set(STAGES)
    assert len({(path, name) for path, name, _ in STAGE_MAP}) == len(STAGE_MAP)  # no duplicates


@pytest.mark.parametrize(
    ("func", "stage"),
    [
        (("/x/raftio/codec.py", 130, "encode_command"), "encode"),
        (("/x/raftio/codec.py", 155, "decode_command"), "decode"),
        (("/x/raftio/storage/wal.py", 157, "entries_body"), "encode"),  # the module's "*"
        (("/x/raftio/node.py", 414, "propose"), "propose"),
        (("/x/raftio/core.py", 258, "start"), "propose"),  # its own line beats core.py's "*"
        (("/x/raftio/core.py", 456, "handle_append_entries"), "commit"),
        (("/x/raftio/storage/worker.py", 40, "submit"), "fsync hand-off"),
        (("/x/raftio/transport/server_connection.py", 286, "_reply"), "send"),
        (("/x/raftio/transport/server_connection.py", 239, "_dispatch"), "receive"),
        (("/x/raftio/kv/server.py", 299, "_serve"), "KV service"),
        (("/x/raftio/node.py", 510, "_apply"), "apply"),
    ],
)
def test_functions_map_to_their_stage(func: tuple[str, int, str], stage: str) -> None:
    assert stage_of(func) == stage


def test_functions_the_table_does_not_name_inherit() -> None:
    assert stage_of(("~", 0, "<method 'pack' of 'msgpack._cmsgpack.Packer' objects>")) is None
    assert stage_of(("/x/raftio/log.py", 57, "slice")) is None  # a helper of several stages
    assert stage_of(("/usr/lib/python3.11/asyncio/locks.py", 200, "wait")) is None


def _edge(calls: int, own: float, inclusive: float) -> tuple[int, int, float, float]:
    return (calls, calls, own, inclusive)


def test_an_unnamed_function_splits_its_time_by_its_callers_edges() -> None:
    encode = ("/x/raftio/codec.py", 177, "encode_message")
    reply = ("/x/raftio/transport/server_connection.py", 286, "_reply")
    helper = ("/x/raftio/log.py", 57, "slice")
    builtin = ("~", 0, "<built-in method builtins.len>")
    root = ("/x/elsewhere.py", 1, "callback")
    stats: dict[Any, Any] = {
        encode: (10, 10, 1.0, 4.0, {}),
        reply: (5, 5, 2.0, 3.0, {}),
        helper: (4, 4, 0.5, 1.5, {reply: _edge(4, 0.5, 1.5)}),
        # 3 s under the codec, 1 s under the helper (that is: under the reply's send)
        builtin: (9, 9, 4.0, 4.0, {encode: _edge(6, 3.0, 3.0), helper: _edge(3, 1.0, 1.0)}),
        root: (1, 1, 0.25, 0.25, {}),
    }

    stages, top = stage_seconds(stats)

    assert stages["encode"] == pytest.approx(1.0 + 3.0)
    assert stages["send"] == pytest.approx(2.0 + 0.5 + 1.0)
    assert stages[OTHER] == pytest.approx(0.25)  # called from C: no named caller
    assert sum(stages.values()) == pytest.approx(sum(entry[2] for entry in stats.values()))
    assert top[0] == {"function": "<built-in method builtins.len>", "calls": 9, "own_s": 4.0,
                      "stage": "encode"}  # fmt: skip


def test_cprofiles_own_cost_comes_off_each_function() -> None:
    encode = ("/x/raftio/codec.py", 177, "encode_message")
    leaf = ("/x/raftio/codec.py", 189, "_message_to_list")
    stats: dict[Any, Any] = {
        encode: (10, 10, 1.0, 2.0, {}),
        leaf: (100, 100, 1.0, 1.0, {encode: _edge(100, 1.0, 1.0)}),
    }

    stages, _ = stage_seconds(stats, overhead=(0.002, 0.004))

    # encode: 1.0 - 10 calls x 0.004 - 100 calls it made x 0.002; leaf: 1.0 - 100 x 0.004
    assert stages["encode"] == pytest.approx((1.0 - 0.04 - 0.2) + (1.0 - 0.4))


def test_calibration_finds_a_cost_per_call() -> None:
    per_caller, per_callee = calibrate(rounds=5)

    assert 0 < per_caller < 50e-6
    assert 0 < per_callee < 50e-6


# ------------------------------------------------------------------ real runs


def _on_a_cluster(
    body: Callable[[RaftioCluster, RunContext, Path], Awaitable[dict[str, Any]]],
) -> dict[str, Any]:
    async def main() -> dict[str, Any]:
        with tempfile.TemporaryDirectory(prefix="stage-test-") as work:
            out = Path(work) / "out"
            (out / "logs").mkdir(parents=True)
            async with ProcessGroup() as group:
                ctx = RunContext(group, Path(work), child_env(PACKAGE_ROOT), "uvloop", 0.4, 1.0,
                                 out / "logs")  # fmt: skip
                cluster = RaftioCluster(ctx, fsync=True)
                await cluster.start()
                try:
                    result = await body(cluster, ctx, out)
                finally:
                    await cluster.stop()
                result["files"] = sorted(p.name for p in out.iterdir())
                return result

    result: dict[str, Any] = run_loop(main(), "uvloop")
    return result


def _check_point(point: dict[str, Any]) -> None:
    """What every process of a working stage profile must show."""
    assert point["entries"] > 0
    assert point["entries_profiled"] > 0
    assert [p["role"] for p in point["processes"]] == ["leader", "follower 1", "follower 2"]
    for p in point["processes"]:
        assert p["cpu_us"] > 0
        assert p["cpu_us_profiled"] > p["cpu_us"]
        assert p["stages_sum_us"] > 0
        assert sum(p["shares"].values()) == pytest.approx(1.0)
        assert p["shares"][OTHER] < OTHER_BOUND, p["top"][:10]
        assert p["stages_us"][WAL] > 0
        assert p["wal_thread_us"] > 0
        assert p["stages_us"]["commit"] > 0
        assert p["stages_us"][EVENT_LOOP] > 0
        # The estimate without cProfile adds up to the unprofiled process's CPU.
        assert sum(p["unprofiled_us"].values()) == pytest.approx(p["cpu_us"], rel=0.3)
        assert p["fsyncs"] > 0
        assert p["entries_per_fsync"] >= 0.5
        assert {t["role"] for t in p["threads"]} >= {"loop", "wal"}
        switches = p["switches"]
        assert switches["voluntary"] > 0
        assert switches["voluntary_per_entry"] > 0
        assert switches["voluntary_per_fsync"] > 0
        # The hottest functions are all named by the table (or inherit a stage).
        assert all(row["stage"] != OTHER for row in p["top"][:3]), p["top"][:3]
    leader, follower = point["processes"][0], point["processes"][1]
    assert leader["stages_us"]["propose"] > 0
    assert leader["stages_us"]["encode"] > 0
    assert follower["stages_us"]["propose"] == 0
    assert follower["stages_us"]["decode"] > 0


def test_an_embedded_stage_profile_covers_all_three_processes() -> None:
    async def body(cluster: RaftioCluster, ctx: RunContext, out: Path) -> dict[str, Any]:
        return await stage_profile.run_stage_profiles(cluster, ctx, out, ["raftio-embedded"], [16])

    result = _on_a_cluster(body)

    (point,) = result["points"]
    assert (point["series"], point["concurrency"], point["payload"]) == ("raftio-embedded", 16, 16)
    _check_point(point)
    assert point["processes"][0]["stages_us"]["load generator"] > 0
    assert "profile-stages-raftio-embedded-c16-leader.prof" in result["files"]
    text = stage_profile.stage_tables(result)
    for words in ("raftio embedded, C=16", "follower 2", "sum of stages", "event loop",
                  "process CPU, /proc (unprofiled run)", "vol/fsync", "wal thread"):  # fmt: skip
        assert words in text
    json.dumps(result)  # results.json takes it as it is


def test_an_end_to_end_stage_profile_shows_the_kv_service() -> None:
    async def body(cluster: RaftioCluster, ctx: RunContext, out: Path) -> dict[str, Any]:
        return await stage_profile.run_stage_profiles(cluster, ctx, out, ["raftio-e2e"], [8])

    (point,) = _on_a_cluster(body)["points"]

    _check_point(point)
    leader = point["processes"][0]
    assert leader["stages_us"]["KV service"] > 0
    assert leader["stages_us"]["load generator"] == 0


def test_profile_on_the_command_line_writes_and_prints_the_stage_tables(tmp_path: Path) -> None:
    out = tmp_path / "results"
    argv = [sys.executable, "-m", "benchmarks", "--only", "raftio",
            "--series", "raftio-embedded,raftio-e2e", "--concurrency", "1", "--payload", "16",
            "--duration", "0.3", "--warmup", "0.2", "--profile", "--out", str(out)]  # fmt: skip

    done = subprocess.run(argv, cwd=CHECKOUT, capture_output=True, text=True, timeout=120)

    assert done.returncode == 0, done.stderr
    results = json.loads((out / "results.json").read_text())
    points = results["stage_profile"]["points"]
    assert [(p["series"], p["concurrency"]) for p in points] == [
        ("raftio-embedded", 256), ("raftio-embedded", 1), ("raftio-e2e", 256), ("raftio-e2e", 1),
    ]  # fmt: skip
    assert all(p["entries"] > 0 for p in points)
    assert "profile-leader-cpu.txt" in {f.name for f in out.iterdir()}  # the leader's, as before
    text = (out / "profile-stages.txt").read_text()
    assert "raftio KV end to end, C=1" in text
    assert text.strip() in done.stdout
    assert "by own CPU" in (out / "profile-stages-top.txt").read_text()
    steps = 2 + len(("wall", "cpu", "py-spy") if py_spy_available() else ("wall", "cpu")) + 8
    assert f"[{steps}/{steps}]" in done.stderr  # 2 points, the leader's profiles, 8 stage runs
