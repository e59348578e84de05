"""The run of `python -m benchmarks`: every series at every point, then the results.

Order of a run: `repeat` rounds, each made of the probes (fdatasync,
loopback RTT and commit floor samples; machine facts once) and then one cluster at a time:
raftio fsync on (embedded and end to end), raftio fsync off, PySyncObj in
memory, PySyncObj with its journal, etcd, then the read series named in
`--series` (raftio ReadIndex, raftio lease, etcd); every point once per round. Each
point keeps the run with the median throughput, every run's throughput
beside it. Then optional profiled runs of the raftio leader (last round),
then `results.json`, `results.md` and the plots (`benchmarks.report`).

Every process is a child of a `ProcessGroup` that stops them all when the
run ends, fails, or is interrupted (Ctrl-C, SIGTERM); the cluster data
lives in a temporary directory that is removed afterwards.
"""

from __future__ import annotations

import asyncio
import atexit
import datetime
import json
import os
import shlex
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmarks import probes, report, stage_profile
from benchmarks.commit_floor import commit_floor
from benchmarks.control import run_loop
from benchmarks.procs import ChildError, ProcessGroup, child_env
from benchmarks.profiles import py_spy_available
from benchmarks.progress import Progress
from benchmarks.stats import median_run, summarize
from benchmarks.workloads import (
    SERIES,
    Cluster,
    EtcdCluster,
    ProfileRequest,
    PySyncObjCluster,
    RaftioCluster,
    RunContext,
    etcd_available,
    lease_reads_available,
    pysyncobj_available,
)

__all__ = ["DEFAULTS", "PACKAGE_ROOT", "QUICK", "SERIES", "Settings", "command_line", "run"]

PACKAGE_ROOT = Path(__file__).resolve().parent.parent  # the checkout holding benchmarks/
INSTALL_HINT = "run scripts/install_bench_peers.sh (or pip install 'raftio[bench]' for PySyncObj)"

# PySyncObj's fastest settings here (docs/benchmarks.md, "Settings"): batched
# AppendEntries sent every 1 ms instead of every 100 ms, a 1 ms tick.
PYSYNCOBJ_FAST = {"batch": "on", "append-period": "0.001", "tick": "0.001"}


@dataclass(slots=True)
class Settings:
    concurrency: list[int] = field(default_factory=lambda: [1, 16, 256, 4096])
    payloads: list[int] = field(default_factory=lambda: [16, 1024])
    duration: float = 5.0
    warmup: float = 1.0
    repeat: int = 1
    only: str | None = None  # raftio | pysyncobj | etcd
    series: list[str] | None = None  # a subset of SERIES keys
    out: Path | None = None
    profile: bool = False
    profile_concurrency: int = 256
    loop: str = "uvloop"
    quick: bool = False
    command: str = ""
    docs: Path | None = None  # a page whose generated results block to replace


DEFAULTS = Settings()
QUICK = {"concurrency": [1, 256], "payloads": [16], "duration": 2.0, "warmup": 0.5}


@dataclass(frozen=True, slots=True)
class Plan:
    """One cluster and the series measured on it."""

    name: str
    system: str
    series: tuple[str, ...]
    make: Callable[[RunContext], Cluster]
    available: Callable[[], str | None]  # None, or why it cannot run


def _needs_pysyncobj() -> str | None:
    return None if pysyncobj_available() else f"PySyncObj is not installed; {INSTALL_HINT}"


def _needs_etcd() -> str | None:
    return None if etcd_available() else f"etcd is not on PATH; {INSTALL_HINT}"


def _needs_lease_reads() -> str | None:
    return None if lease_reads_available() else "this raftio has no lease_reads"


PLANS = (
    Plan(
        "raftio",
        "raftio",
        ("raftio-embedded", "raftio-e2e"),
        lambda ctx: RaftioCluster(ctx, fsync=True),
        lambda: None,
    ),
    Plan(
        "raftio-nofsync",
        "raftio",
        ("raftio-embedded-nofsync",),
        lambda ctx: RaftioCluster(ctx, fsync=False),
        lambda: None,
    ),
    Plan(
        "pysyncobj",
        "pysyncobj",
        ("pysyncobj",),
        lambda ctx: PySyncObjCluster(ctx, journal=False),
        _needs_pysyncobj,
    ),
    Plan(
        "pysyncobj-journal",
        "pysyncobj",
        ("pysyncobj-journal",),
        lambda ctx: PySyncObjCluster(ctx, journal=True),
        _needs_pysyncobj,
    ),
    Plan("etcd", "etcd", ("etcd",), lambda ctx: EtcdCluster(ctx), _needs_etcd),
    # Read series (docs/benchmarks.md, "Reads"): their own clusters, run only when named.
    Plan(
        "raftio-read",
        "raftio",
        ("raftio-read-embedded", "raftio-read-e2e"),
        lambda ctx: RaftioCluster(ctx, fsync=True, name="raftio-read"),
        lambda: None,
    ),
    Plan(
        "raftio-lease",
        "raftio",
        ("raftio-lease-read-embedded", "raftio-lease-read-e2e"),
        lambda ctx: RaftioCluster(ctx, fsync=True, lease_reads=True, name="raftio-lease"),
        _needs_lease_reads,
    ),
    Plan("etcd-read", "etcd", ("etcd-read",), lambda ctx: EtcdCluster(ctx), _needs_etcd),
)


def selected_plans(settings: Settings) -> list[tuple[Plan, tuple[str, ...]]]:
    """The plans to run and, for each, the series of it that were asked for."""
    chosen = []
    for plan in PLANS:
        if settings.only is not None and plan.system != settings.only:
            continue
        series = tuple(s for s in plan.series if _wanted(settings, s))
        if series:
            chosen.append((plan, series))
    return chosen


def _wanted(settings: Settings, key: str) -> bool:
    """Named in --series; without --series, every write series (reads are opt-in)."""
    if settings.series is None:
        return SERIES[key].op == "write"
    return key in settings.series


def default_out() -> Path:
    return Path("results") / datetime.datetime.now().strftime("%Y%m%d-%H%M%S")


def _summary_line(point: dict[str, Any]) -> str:
    lat = point["latency"]
    cpu = point["leader"].get("cpu_us_per_entry")
    errors = sum(point["errors"].values())
    text = (
        f"{SERIES[point['series']].label:28} C={point['concurrency']:<5} "
        f"{point['payload']:>5} B: {point['throughput']:>9,.0f} ops/s  "
        f"p50 {lat.get('p50_us', float('nan')) / 1e3:7.2f} ms  "
        f"p99 {lat.get('p99_us', float('nan')) / 1e3:7.2f} ms"
    )
    if cpu is not None:
        text += f"  leader CPU {cpu:6.1f} us/entry"
    text += f"  load {point['loadavg']:.1f}"
    if errors:
        text += f"  errors {errors} ({point['first_error'][:60]})"
    return text


class Run:
    """One invocation: its settings, its results so far, its processes."""

    def __init__(self, settings: Settings, out: Path) -> None:
        self.settings = settings
        self.out = out
        self.plans = selected_plans(settings)
        points = sum(len(series) for _, series in self.plans)
        points *= len(settings.concurrency) * len(settings.payloads) * settings.repeat
        self.progress = Progress(points + self._profile_runs())
        self.results: dict[str, Any] = {
            "version": 1,
            "command": settings.command,
            "started": datetime.datetime.now().isoformat(timespec="seconds"),
            "settings": {
                **asdict(settings),
                "out": str(out),
                "docs": None if settings.docs is None else str(settings.docs),
                "pysyncobj": PYSYNCOBJ_FAST,
            },
            "series": {key: asdict(s) for key, s in SERIES.items()},
            "skipped": {},
            "failed": {},
            "points": [],
        }
        self.runs: dict[tuple[str, int, int], list[dict[str, Any]]] = {}
        self.probe_samples: dict[str, list[float]] = {
            "fdatasync": [],
            "rtt": [],
            "commit_floor": [],
        }

    @staticmethod
    def _profilers() -> tuple[str, ...]:
        return ("wall", "cpu", "py-spy") if py_spy_available() else ("wall", "cpu")

    def _profiling(self) -> bool:
        return self.settings.profile and any(
            plan.name == "raftio" and "raftio-embedded" in series for plan, series in self.plans
        )

    # --profile's stage profile (benchmarks.stage_profile): its own section.
    def _stage_series(self, series: Sequence[str] = ()) -> tuple[str, ...]:
        """The series to stage-profile: of `series` (default: the raftio plan's)."""
        if not self.settings.profile:
            return ()
        if not series:
            series = next((s for plan, s in self.plans if plan.name == "raftio"), ())
        return tuple(s for s in stage_profile.SERIES if s in series)

    def _profile_runs(self) -> int:
        leader = len(self._profilers()) if self._profiling() else 0
        return leader + 2 * len(stage_profile.CONCURRENCY) * len(self._stage_series())

    async def _stage_profile(self, cluster: Cluster, series: Sequence[str]) -> None:
        """CPU by stage, wake-ups and fsyncs of all three processes; text and JSON."""
        assert isinstance(cluster, RaftioCluster)
        result = await stage_profile.run_stage_profiles(
            cluster, cluster.ctx, self.out, series, progress=self.progress
        )
        tables = self.out / "profile-stages.txt"
        tables.write_text(stage_profile.stage_tables(result))
        (self.out / "profile-stages-top.txt").write_text(stage_profile.top_functions(result))
        result["file"], result["top_file"] = tables.name, "profile-stages-top.txt"
        self.results["stage_profile"] = result

    async def execute(self) -> None:
        workdir = Path(tempfile.mkdtemp(prefix="raftio-bench-"))
        logs = self.out / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        group = ProcessGroup()
        atexit.register(group.kill_now)
        try:
            ctx = RunContext(
                group,
                workdir,
                child_env(PACKAGE_ROOT),
                self.settings.loop,
                self.settings.warmup,
                self.settings.duration,
                logs,
                dict(PYSYNCOBJ_FAST),
            )
            for round_ in range(self.settings.repeat):
                await self._probes(ctx)
                # Rounds, not repeats in place: every system meets the machine's
                # quiet and noisy spells alike (other tenants come and go).
                for plan, series in self.plans:
                    await self._run_plan(ctx, plan, series, round_)
        finally:
            await self.progress.close()
            await group.close()
            atexit.unregister(group.kill_now)
            shutil.rmtree(workdir, ignore_errors=True)

    async def _probes(self, ctx: RunContext) -> None:
        """fdatasync and RTT samples, taken at the start of every round: the disk of a
        shared machine changes its mind, and the bound should see it as the load did."""
        if "machine" not in self.results:
            self.progress.note("probing: machine, fdatasync latency, loopback RTT, commit floor")
            self.results["machine"] = probes.machine_facts(PACKAGE_ROOT)
        fsync = probes.fdatasync_latency(ctx.workdir)
        rtt = await probes.loopback_rtt(
            ctx.group, [sys.executable, "-m"], ctx.env, ctx.logs / "echo.log"
        )
        floor = await commit_floor(
            ctx.group, [sys.executable, "-m"], ctx.env, ctx.workdir, ctx.logs
        )
        self.probe_samples["fdatasync"] += fsync
        self.probe_samples["rtt"] += rtt
        self.probe_samples["commit_floor"] += floor
        self.results["probes"] = {k: summarize(v) for k, v in self.probe_samples.items()}
        self.progress.note(
            f"fdatasync p50 {statistics.median(fsync) * 1e6:.0f} us, "
            f"loopback RTT p50 {statistics.median(rtt) * 1e6:.0f} us, "
            f"commit floor p50 {statistics.median(floor) * 1e6:.0f} us"
        )

    async def _run_plan(
        self, ctx: RunContext, plan: Plan, series: Sequence[str], round_: int
    ) -> None:
        points = len(series) * len(self.settings.concurrency) * len(self.settings.payloads)
        missing = plan.available()
        if missing is not None:
            self.progress.done += points
            if missing is not None and round_ == 0:
                self.results["skipped"].update(dict.fromkeys(series, missing))
                self.progress.note(f"skipping {plan.name}: {missing}")
            return
        rounds = f" (round {round_ + 1}/{self.settings.repeat})" if self.settings.repeat > 1 else ""
        self.progress.note(f"starting {plan.name}{rounds}: 3 processes on 127.0.0.1")
        cluster = plan.make(ctx)
        try:
            await cluster.start()
            for payload in self.settings.payloads:
                for concurrency in self.settings.concurrency:
                    for key in series:
                        await self._run_point(cluster, key, concurrency, payload)
            last = round_ == self.settings.repeat - 1
            if (
                last
                and self.settings.profile
                and plan.name == "raftio"
                and "raftio-embedded" in series
            ):
                await self._profile(cluster)
            if last and plan.name == "raftio" and self._stage_series(series):
                await self._stage_profile(cluster, self._stage_series(series))
        except (ChildError, OSError, RuntimeError) as exc:
            # This round of this plan is lost; later rounds try again.
            message = f"{type(exc).__name__}: {exc}"
            self.results["failed"].update(dict.fromkeys(series, f"round {round_ + 1}: {message}"))
            self.progress.note(f"{plan.name} failed in round {round_ + 1}: {message}")
        finally:
            await cluster.stop()

    async def _run_point(self, cluster: Cluster, key: str, concurrency: int, payload: int) -> None:
        self.progress.begin(
            f"{SERIES[key].label} C={concurrency} {payload} B",
            self.settings.warmup + self.settings.duration,
        )
        run = await cluster.run_point(key, concurrency, payload)
        run["loadavg"] = os.getloadavg()[0]  # other tenants of a shared machine show here
        self.runs.setdefault((key, concurrency, payload), []).append(run)
        self.progress.end(_summary_line(run))

    def collect(self) -> None:
        """One point per (series, C, payload): the run with the median throughput."""
        points = []
        for _, series in self.plans:
            for payload in self.settings.payloads:
                for concurrency in self.settings.concurrency:
                    for key in series:
                        runs = self.runs.get((key, concurrency, payload))
                        if not runs:
                            continue
                        point = dict(median_run(runs))
                        point["runs"] = [run["throughput"] for run in runs]
                        point["loadavg"] = [run["loadavg"] for run in runs]
                        points.append(point)
        self.results["points"] = points

    async def _profile(self, cluster: Cluster) -> None:
        """Profiled runs of the leader: cProfile wall clock, cProfile CPU, py-spy."""
        concurrency, payload = self.settings.profile_concurrency, 16
        runs = []
        for timer in self._profilers():
            suffix = ".raw" if timer == "py-spy" else ".prof"
            path = (self.out / f"profile-leader-{timer}{suffix}").resolve()
            label = f"profiling the raftio leader ({timer}), embedded C={concurrency} {payload} B"
            self.progress.begin(label, self.settings.warmup + self.settings.duration)
            request = ProfileRequest(path, timer)
            point = await cluster.run_point("raftio-embedded", concurrency, payload, request)
            summary = path.with_suffix(".txt")
            summary.write_text(point.pop("profile", ""))
            runs.append(
                {
                    "timer": timer,
                    "throughput_under_profiler": point["throughput"],
                    "file": path.name,
                    "summary_file": summary.name,
                }
            )
            self.progress.end(
                f"profile ({timer}): {path.name}, {summary.name} "
                f"({point['throughput']:,.0f} ops/s while profiled)"
            )
        self.results["profile"] = {"concurrency": concurrency, "payload": payload, "runs": runs}

    def write(self) -> None:
        self.collect()
        self.results["finished"] = datetime.datetime.now().isoformat(timespec="seconds")
        self.results["targets"] = report.evaluate_targets(self.results)
        self.results["reads"] = report.read_rows(self.results)
        (self.out / "results.json").write_text(json.dumps(self.results, indent=1) + "\n")
        plots = report.write_plots(self.results, self.out)
        self.results["plots"] = plots
        (self.out / "results.md").write_text(report.markdown(self.results))
        (self.out / "results.json").write_text(json.dumps(self.results, indent=1) + "\n")


async def _run_async(run: Run) -> None:
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        await run.execute()
    finally:
        loop.remove_signal_handler(signal.SIGTERM)


def run(settings: Settings) -> int:
    """Run the benchmark; 0 if every selected series ran (targets met or not)."""
    out = settings.out or default_out()
    out.mkdir(parents=True, exist_ok=True)
    bench = Run(settings, out)
    started = time.monotonic()
    interrupted = False
    try:
        run_loop(_run_async(bench), settings.loop)
    except (KeyboardInterrupt, asyncio.CancelledError):
        interrupted = True
        bench.results["interrupted"] = True
    finally:
        if "machine" in bench.results:
            bench.write()
            if settings.repeat > 1:
                print(f"medians of {settings.repeat} rounds:", file=sys.stderr)
                for point in bench.results["points"]:
                    runs = "/".join(f"{r:,.0f}" for r in point["runs"])
                    print(
                        f"  {_summary_line({**point, 'loadavg': max(point['loadavg'])})}"
                        f"  runs {runs}",
                        file=sys.stderr,
                    )
    minutes = (time.monotonic() - started) / 60
    print(
        f"results in {out}/ (results.md, results.json, plots) after {minutes:.1f} min",
        file=sys.stderr,
    )
    if interrupted:
        return 130
    if settings.docs is not None and "machine" in bench.results:
        report.update_docs(settings.docs, bench.results)
        print(f"updated the results block of {settings.docs}", file=sys.stderr)
    for line in report.target_lines(bench.results):
        print(line)
    if bench.results.get("reads"):
        print("\n".join(report.reads_table(bench.results)))
    if bench.results.get("stage_profile"):
        print(stage_profile.stage_tables(bench.results["stage_profile"]))
    return 1 if bench.results["failed"] else 0


def command_line(settings: Settings) -> str:
    """The command that repeats this run, every setting spelled out."""
    argv = ["python", "-m", "benchmarks"]
    if settings.only:
        argv += ["--only", settings.only]
    if settings.series:
        argv += ["--series", ",".join(settings.series)]
    argv += [
        "--concurrency",
        ",".join(map(str, settings.concurrency)),
        "--payload",
        ",".join(map(str, settings.payloads)),
        "--duration",
        f"{settings.duration:g}",
        "--warmup",
        f"{settings.warmup:g}",
    ]
    if settings.repeat != 1:
        argv += ["--repeat", str(settings.repeat)]
    if settings.profile:
        argv.append("--profile")
    if settings.loop != "uvloop":
        argv += ["--loop", settings.loop]
    return shlex.join(argv)
