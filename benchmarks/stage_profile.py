"""`--profile`'s stage profile: every process of a raftio cluster, CPU per entry by stage.

For each series (raftio embedded and/or KV end to end, 16 B, fsync on) and
each concurrency (256 and 1), two runs on the running 3-process cluster:

1. unprofiled: each node measures its window (benchmarks.stages.WindowProbe):
   process CPU (/proc utime+stime), each thread's CPU and context switches,
   committed entries and fsyncs;
2. profiled: the same, with a cProfile (thread_time) of each node's event-loop
   thread, folded into stages by benchmarks.stages.STAGE_MAP, cProfile's own
   cost per call (calibrated in the node) taken off.

The stage shares come from run 2; totals, threads, context switches and
fsyncs from run 1, and "~unprof" (each stage's estimated us/entry without
cProfile) from both: the loop thread's shares x its unprofiled CPU, plus the
WAL thread's unprofiled CPU.

Everything is per committed entry (the leader's commit index advance in the
window). The three processes are the leader, follower 1 and follower 2 (the
followers in node-id order); every node is its own process, and in the
embedded series the load generator runs inside the leader's.

`stage_tables` prints the result; `run_stage_profiles` returns it as a dict
(results.json's "stage_profile").
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from benchmarks.loadgen import Window
from benchmarks.procs import Child
from benchmarks.stages import OTHER, STAGES, WAL
from benchmarks.workloads import RaftioCluster, RunContext, stop_clients

__all__ = [
    "CONCURRENCY",
    "PAYLOAD",
    "SERIES",
    "profile_point",
    "run_stage_profiles",
    "stage_tables",
    "summarize",
    "top_functions",
]

SERIES = ("raftio-embedded", "raftio-e2e")
CONCURRENCY = (256, 1)
PAYLOAD = 16
ROLES = ("leader", "follower 1", "follower 2")
_CLIENT_PROCESSES = 2  # as the end-to-end series: C/2 connections each
_GRACE = 120.0  # seconds a command may take past its window


class _Progress(Protocol):
    def begin(self, label: str, expected_seconds: float) -> None: ...
    def end(self, summary: str) -> None: ...


async def run_stage_profiles(
    cluster: RaftioCluster,
    ctx: RunContext,
    out: Path,
    series: Sequence[str] = SERIES,
    concurrency: Sequence[int] = CONCURRENCY,
    progress: _Progress | None = None,
) -> dict[str, Any]:
    """Unprofiled then profiled runs of every (series, C); the summary of each."""
    points = []
    for key in series:
        for c in concurrency:
            runs = {}
            for profiled in (False, True):
                how = "cProfile" if profiled else "unprofiled"
                label = f"stage profile {key} C={c} {PAYLOAD} B ({how})"
                if progress is not None:
                    progress.begin(label, ctx.warmup + ctx.duration)
                prof_dir = out if profiled else None
                runs[profiled] = await profile_point(cluster, ctx, key, c, PAYLOAD, prof_dir)
                if progress is not None:
                    progress.end(f"{label}: {runs[profiled]['throughput']:,.0f} ops/s")
            points.append(summarize(runs[False], runs[True]))
    return {"payload": PAYLOAD, "stages": list(STAGES), "points": points}


async def profile_point(
    cluster: RaftioCluster,
    ctx: RunContext,
    series: str,
    concurrency: int,
    payload: int,
    profile_dir: Path | None,
) -> dict[str, Any]:
    """One run: every node measures the same window; a cProfile of each if `profile_dir`."""
    leader = await cluster.leader()
    nodes = [leader] + [n for n in cluster.nodes if n is not leader]
    paths = [
        str((profile_dir / _profile_name(series, concurrency, role)).resolve())
        if profile_dir is not None
        else None
        for role in ROLES
    ]
    if series == "raftio-embedded":
        ops, seconds, processes = await _embedded(ctx, nodes, paths, concurrency, payload)
    else:
        target = cluster.client_peers[cluster.nodes.index(leader)]
        ops, seconds, processes = await _e2e(ctx, nodes, paths, target, concurrency, payload)
    for role, path, process in zip(ROLES, paths, processes, strict=True):
        process["role"] = role
        if path is not None:
            process["profile_file"] = Path(path).name
    return {
        "series": series,
        "concurrency": concurrency,
        "payload": payload,
        "profiled": profile_dir is not None,
        "ops": ops,
        "seconds": seconds,
        "throughput": ops / seconds if seconds > 0 else 0.0,
        "processes": processes,
    }


def _profile_name(series: str, concurrency: int, role: str) -> str:
    return f"profile-stages-{series}-c{concurrency}-{role.replace(' ', '')}.prof"


async def _arm(nodes: Sequence[Child], window: Window, paths: Sequence[str | None]) -> None:
    for node, path in zip(nodes, paths, strict=True):
        command = {"cmd": "stage_arm", "start": window.start, "end": window.end, "profile": path}
        await node.request(command, 30.0)


async def _collect(nodes: Sequence[Child], window: Window) -> list[dict[str, Any]]:
    timeout = max(0.0, window.end - time.perf_counter()) + _GRACE
    return [await node.request({"cmd": "stage_collect"}, timeout) for node in nodes]


async def _embedded(
    ctx: RunContext,
    nodes: Sequence[Child],
    paths: Sequence[str | None],
    concurrency: int,
    payload: int,
) -> tuple[int, float, list[dict[str, Any]]]:
    """The leader's own closed loop (as the raftio-embedded series)."""
    window = Window.after(ctx.warmup, ctx.duration)
    await _arm(nodes, window, paths)
    load = {"cmd": "load", "concurrency": concurrency, "payload": payload,
            "start": window.start, "end": window.end}  # fmt: skip
    reply = await nodes[0].request(load, ctx.warmup + ctx.duration + _GRACE)
    return int(reply["ops"]), float(reply["seconds"]), await _collect(nodes, window)


async def _e2e(
    ctx: RunContext,
    nodes: Sequence[Child],
    paths: Sequence[str | None],
    target: str,
    concurrency: int,
    payload: int,
) -> tuple[int, float, list[dict[str, Any]]]:
    """KV clients in their own processes (as the raftio-e2e series)."""
    clients: list[Child] = []
    tag = f"stages-c{concurrency}-{time.monotonic_ns() % 10**9}"
    try:
        for i, share in enumerate(_split(concurrency, _CLIENT_PROCESSES)):
            argv = ctx.python("benchmarks.kv_client", "--protocol", "raftio", "--target", target,
                              "--connections", str(share), "--payload", str(payload),
                              "--name", f"{tag}-{i}", "--loop", ctx.loop)  # fmt: skip
            log = ctx.logs / f"client-stages-{i}.log"
            clients.append(await ctx.group.start(Child(f"client-{i}", argv, log, env=ctx.env)))
        for client in clients:
            await client.read_reply(120.0)
        window = Window.after(ctx.warmup, ctx.duration)
        await _arm(nodes, window, paths)
        run = {"cmd": "run", "start": window.start, "end": window.end}
        parts = await asyncio.gather(
            *(c.request(run, ctx.warmup + ctx.duration + _GRACE) for c in clients)
        )
        processes = await _collect(nodes, window)
    finally:
        await stop_clients(ctx, clients)
    return sum(int(p["ops"]) for p in parts), float(parts[0]["seconds"]), processes


def _split(total: int, parts: int) -> list[int]:
    parts = max(1, min(parts, total))
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


# ------------------------------------------------------------------ per entry


def _per(value: float, count: int, scale: float = 1.0) -> float | None:
    return value * scale / count if count else None


def summarize(plain: dict[str, Any], profiled: dict[str, Any]) -> dict[str, Any]:
    """Per committed entry: stages from the profiled run; totals, threads, context
    switches and fsyncs from the unprofiled one (cProfile slows the loop thread)."""
    entries_p = profiled["processes"][0]["committed"]
    entries_u = plain["processes"][0]["committed"]
    processes = []
    for unprof, prof in zip(plain["processes"], profiled["processes"], strict=True):
        stages = prof.get("stages_s", {})
        total = sum(stages.values())
        processes.append(
            {
                "role": unprof["role"],
                "stages_us": {s: _per(v, entries_p, 1e6) for s, v in stages.items()},
                "shares": {s: (v / total if total else None) for s, v in stages.items()},
                "stages_sum_us": _per(total, entries_p, 1e6),
                "unprofiled_us": _unprofiled_stages(prof, unprof, entries_u),
                "wal_thread_us": _per(_thread_cpu(prof, "wal"), entries_p, 1e6),
                "profiler_overhead_us": _per(prof.get("profiler_overhead_s", 0.0), entries_p, 1e6),
                "cpu_us_profiled": _per(prof["cpu_proc_s"], entries_p, 1e6),
                "cpu_us": _per(unprof["cpu_proc_s"], entries_u, 1e6),
                "cpu_clock_us": _per(unprof["cpu_clock_s"], entries_u, 1e6),
                "fsyncs": unprof["fsyncs"],
                "entries_per_fsync": _per(entries_u, unprof["fsyncs"]),
                "threads": [_thread_row(t, entries_u, unprof["fsyncs"]) for t in unprof["threads"]],
                "switches": _thread_row(_sum_threads(unprof), entries_u, unprof["fsyncs"]),
                "top": prof.get("top", []),
                "profile_file": prof.get("profile_file"),
            }
        )
    return {
        "series": plain["series"],
        "concurrency": plain["concurrency"],
        "payload": plain["payload"],
        "entries": entries_u,
        "entries_profiled": entries_p,
        "throughput": plain["throughput"],
        "throughput_profiled": profiled["throughput"],
        "seconds": plain["seconds"],
        "processes": processes,
        "runs": {"unprofiled": plain, "profiled": _without_top(profiled)},
    }


def _unprofiled_stages(
    prof: dict[str, Any], unprof: dict[str, Any], entries: int
) -> dict[str, float | None]:
    """Estimated us/entry of each stage without cProfile: the loop thread's stage shares
    (cProfile run) x its CPU in the unprofiled run; the WAL thread's and any other
    thread's unprofiled CPU as measured (cProfile never slowed those)."""
    loop = prof.get("loop_stages_s", {})
    total = sum(loop.values())
    loop_cpu = _thread_cpu(unprof, "loop")
    out = {s: (v / total * loop_cpu if total else 0.0) for s, v in loop.items()}
    if out:
        out[WAL] += _thread_cpu(unprof, "wal")
        out[OTHER] += sum(t["cpu_s"] for t in unprof["threads"] if t["role"] not in ("loop", "wal"))
    return {s: _per(v, entries, 1e6) for s, v in out.items()}


def _thread_cpu(process: dict[str, Any], role: str) -> float:
    return float(sum(t["cpu_s"] for t in process["threads"] if t["role"] == role))


def _sum_threads(process: dict[str, Any]) -> dict[str, Any]:
    threads = process["threads"]
    return {
        "role": "process",
        "cpu_s": process["cpu_proc_s"],
        "voluntary": sum(t["voluntary"] for t in threads),
        "involuntary": sum(t["involuntary"] for t in threads),
    }


def _thread_row(thread: dict[str, Any], entries: int, fsyncs: int) -> dict[str, Any]:
    return {
        "role": thread["role"],
        "cpu_us": _per(thread["cpu_s"], entries, 1e6),
        "voluntary": thread["voluntary"],
        "involuntary": thread["involuntary"],
        "voluntary_per_entry": _per(thread["voluntary"], entries),
        "involuntary_per_entry": _per(thread["involuntary"], entries),
        "voluntary_per_fsync": _per(thread["voluntary"], fsyncs),
        "involuntary_per_fsync": _per(thread["involuntary"], fsyncs),
    }


def _without_top(run: dict[str, Any]) -> dict[str, Any]:
    """The raw run without the top-function lists (kept once, in the summary)."""
    processes = [{k: v for k, v in p.items() if k != "top"} for p in run["processes"]]
    return {**run, "processes": processes}


# ------------------------------------------------------------------ tables

_SERIES_LABEL = {"raftio-embedded": "raftio embedded", "raftio-e2e": "raftio KV end to end"}


def _n(value: float | None, digits: int = 2) -> str:
    if value is None:
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.{digits}f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def _grid(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """A plain-text table: the first column left-aligned, the others right-aligned."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = (c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True))
        return "  ".join([first, *rest]).rstrip()

    return [line(header), "  ".join("-" * w for w in widths), *(line(r) for r in rows)]


def stage_tables(result: dict[str, Any]) -> str:
    """The stage profile as text: per point, CPU by stage, then wake-ups."""
    out: list[str] = []
    for point in result.get("points", ()):
        out += [*_point_tables(point), ""]
    return "\n".join(out)


def _point_tables(point: dict[str, Any]) -> list[str]:
    procs = point["processes"]
    title = (
        f"== {_SERIES_LABEL.get(point['series'], point['series'])}, C={point['concurrency']}, "
        f"{point['payload']} B, fsync on: {point['entries']:,} entries committed in "
        f"{point['seconds']:.1f} s unprofiled ({point['throughput']:,.0f} ops/s), "
        f"{point['entries_profiled']:,} under cProfile ({point['throughput_profiled']:,.0f} ops/s)"
    )
    header = ["us/entry by stage"]
    for p in procs:
        header += [p["role"], "%", "~unprof"]
    rows = []
    for stage in STAGES:
        row = [stage]
        for p in procs:
            row += [_n(p["stages_us"].get(stage)), _pct(p["shares"].get(stage)),
                    _n(p["unprofiled_us"].get(stage))]  # fmt: skip
        rows.append(row)
    rows.append(["  WAL write: the WAL thread", *_cells(procs, "wal_thread_us")])
    sums = [p | {"unprofiled_sum_us": _sum(p["unprofiled_us"])} for p in procs]
    rows.append(["sum of stages", *_cells(sums, "stages_sum_us", "100%", "unprofiled_sum_us")])
    rows.append(["cProfile's own cost (removed above)", *_cells(procs, "profiler_overhead_us")])
    rows.append(["process CPU, /proc (cProfile run)", *_cells(procs, "cpu_us_profiled")])
    rows.append(["process CPU, /proc (unprofiled run)", *_cells(procs, "cpu_us")])
    legend = (
        "Per process: us/entry in the cProfile run with cProfile's calibrated cost removed; "
        "its share of the sum;\n~unprof: the estimate without cProfile (the loop thread's "
        "shares x its unprofiled CPU, plus the WAL thread's unprofiled CPU)."
    )
    lines = [title, legend, *_grid(header, rows), ""]
    return lines + _switch_table(point)


def _sum(values: dict[str, float | None]) -> float | None:
    known = [v for v in values.values() if v is not None]
    return sum(known) if known else None


def _cells(
    procs: Sequence[dict[str, Any]], key: str, share: str = "", third: str | None = None
) -> list[str]:
    """Cells of one row: `key` per process, `share` beside it, `third`'s value after."""
    cells = []
    for p in procs:
        cells += [_n(p.get(key)), share, _n(p.get(third)) if third else ""]
    return cells


def _switch_table(point: dict[str, Any]) -> list[str]:
    header = ["unprofiled run", "CPU us/entry", "vol/entry", "invol/entry",
              "vol/fsync", "invol/fsync"]  # fmt: skip
    rows = []
    for p in point["processes"]:
        fsyncs = f"{p['fsyncs']:,} fsyncs, {_n(p['entries_per_fsync'], 1)} entries each"
        rows.append(_switch_row(f"{p['role']} ({fsyncs})", p["switches"]))
        for thread in p["threads"]:
            if thread["cpu_us"] or thread["voluntary"] + thread["involuntary"] > 2:
                rows.append(_switch_row(f"  {thread['role']} thread", thread))
    title = ("Wake-ups: context switches, voluntary (vol) and involuntary (invol); "
             "threads idle in the window left out")  # fmt: skip
    return [title, *_grid(header, rows)]


def _switch_row(label: str, t: dict[str, Any]) -> list[str]:
    return [
        label,
        _n(t["cpu_us"]),
        _n(t["voluntary_per_entry"], 3),
        _n(t["involuntary_per_entry"], 3),
        _n(t["voluntary_per_fsync"]),
        _n(t["involuntary_per_fsync"]),
    ]


def top_functions(result: dict[str, Any], top: int = 15) -> str:
    """Each process's costliest functions by own time (cProfile run), with their stage."""
    out = []
    for point in result.get("points", ()):
        entries = point["entries_profiled"]
        for p in point["processes"]:
            out.append(f"== {point['series']} C={point['concurrency']} {p['role']}: "
                       f"top {top} functions by own CPU, us/entry (cProfile)")  # fmt: skip
            for row in p["top"][:top]:
                us = _per(row["own_s"], entries, 1e6)
                out.append(f"{_n(us):>8}  {row['stage']:<15} {row['function']}")
            out.append("")
    return "\n".join(out)
