"""`python -m benchmarks [options]`: the harness's own command line (docs/benchmarks.md).

Owns argument parsing, the checks that refuse a run before it starts (a bad
setting, a docs page without a results block, a selection in which every
system would be skipped) and their one-line errors; the run itself is
`benchmarks.runner.run` (with `--snapshot`, `benchmarks.snapshot_transfer.run`).
Never imports `raftio.cli`: `raftio bench` is a thin alias that runs this
module in a child process.

Usage errors and refused runs exit 2, a run with failed points 1, an
interrupted run 130.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from benchmarks import memory_bench, report, runner, snapshot_transfer

__all__ = ["PROG", "build_parser", "main"]

PROG = "python -m benchmarks"


class UsageError(Exception):
    """The run cannot start as asked; main() prints it as one line and exits 2."""


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line, not usage plus message."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark as the command line asks; returns the process exit code."""
    args = build_parser().parse_args(argv)
    try:
        if args.snapshot:
            return snapshot_transfer.run(snapshot_settings_from(args))
        if args.memory:
            return memory_bench.run(memory_settings_from(args))
        settings = settings_from(args)
    except UsageError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    return runner.run(settings)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, description="Benchmark raftio against PySyncObj and etcd "
                "(docs/benchmarks.md). `raftio bench` runs the same.")  # fmt: skip
    p.add_argument("--quick", action="store_true",
                   help="C=1,256, 16 B, 2 s per point (unless given explicitly)")  # fmt: skip
    p.add_argument("--out", help="results directory (default results/<timestamp>/)")
    p.add_argument("--only", choices=["raftio", "pysyncobj", "etcd"], help="one system only")
    p.add_argument("--series", type=_name_list,
                   help="a subset of series, e.g. raftio-embedded,raftio-e2e; read series "
                   "(raftio-read-embedded, raftio-read-e2e, raftio-lease-read-embedded, "
                   "raftio-lease-read-e2e, etcd-read) run only when named")  # fmt: skip
    p.add_argument("--concurrency", type=_int_list, help="default 1,16,256,4096")
    p.add_argument("--payload", type=_int_list, help="payload bytes, default 16,1024")
    p.add_argument("--duration", type=float, help="measured seconds per point (default 5)")
    p.add_argument("--warmup", type=float, help="warm-up seconds per point (default 1)")
    p.add_argument("--repeat", type=int, default=1,
                   help="rounds over every system; each point keeps its median")  # fmt: skip
    p.add_argument("--profile", action="store_true",
                   help="also cProfile the raftio leader under embedded C=256 16 B, and "
                   "profile all three raftio processes by stage (CPU per entry, wake-ups) "
                   "at C=256 and C=1, embedded and end to end")  # fmt: skip
    p.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop",
                   help="event loop of every process (default uvloop)")  # fmt: skip
    p.add_argument("--docs", metavar="PAGE",
                   help="also write the results into PAGE's generated block, "
                   "e.g. docs/benchmarks.md")  # fmt: skip
    p.add_argument("--snapshot", action="store_true",
                   help="instead: a new node catching up from a --size snapshot over TCP "
                   "(RSS of both ends, rate against raw loopback, writes meanwhile); "
                   "takes --size, --duration, --concurrency, --payload, --loop, --out")  # fmt: skip
    p.add_argument("--size", type=_size, help="--snapshot's state, e.g. 32M (default 1G)")
    p.add_argument("--memory", action="store_true",
                   help="instead: RSS per million 16 B log entries (FileStorage, "
                   "MemoryStorage) and per idle KV connection; takes --entries, "
                   "--connections, --loop, --out")  # fmt: skip
    p.add_argument("--entries", type=int, help="--memory's log entries (default 1000000)")
    p.add_argument("--connections", type=int,
                   help="--memory's idle KV connections (default 1000)")  # fmt: skip
    return p


def _size(text: str) -> int:
    try:
        return snapshot_transfer.parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _name_list(text: str) -> list[str]:
    return [s.strip() for s in text.split(",") if s.strip()]


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers like 1,16,256, not {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("expected positive integers like 1,16,256")
    return values


def snapshot_settings_from(args: argparse.Namespace) -> snapshot_transfer.Settings:
    """--snapshot's settings: --size, one --concurrency and --payload, --duration..."""
    unfit = {"--quick": args.quick, "--only": args.only, "--series": args.series,
             "--warmup": args.warmup, "--repeat": args.repeat != 1, "--profile": args.profile,
             "--docs": args.docs, "--memory": args.memory, "--entries": args.entries,
             "--connections": args.connections}  # fmt: skip
    given = [name for name, value in unfit.items() if value]
    if given:
        raise UsageError(f"--snapshot does not take {', '.join(given)}")
    settings = snapshot_transfer.Settings(loop=args.loop)
    if args.size is not None:
        settings.size = args.size
    for option, values in (("--concurrency", args.concurrency), ("--payload", args.payload)):
        if values is not None and len(values) != 1:
            raise UsageError(f"--snapshot takes one {option} value, not {len(values)}")
    if args.concurrency:
        settings.writers = args.concurrency[0]
    if args.payload:
        settings.payload = args.payload[0]
    if args.duration is not None:
        if args.duration <= 0:
            raise UsageError("--duration must be > 0")
        settings.duration = args.duration
    settings.out = Path(args.out) if args.out else None
    return settings


def memory_settings_from(args: argparse.Namespace) -> memory_bench.Settings:
    """--memory's settings: --entries, --connections, --loop, --out."""
    unfit = {"--quick": args.quick, "--only": args.only, "--series": args.series,
             "--concurrency": args.concurrency, "--payload": args.payload,
             "--duration": args.duration, "--warmup": args.warmup, "--repeat": args.repeat != 1,
             "--profile": args.profile, "--docs": args.docs, "--snapshot": args.snapshot,
             "--size": args.size}  # fmt: skip
    given = [name for name, value in unfit.items() if value]
    if given:
        raise UsageError(f"--memory does not take {', '.join(given)}")
    settings = memory_bench.Settings(loop=args.loop)
    for name in ("entries", "connections"):
        value = getattr(args, name)
        if value is not None:
            if value < 1:
                raise UsageError(f"--{name} must be >= 1")
            setattr(settings, name, value)
    settings.out = Path(args.out) if args.out else None
    return settings


def settings_from(args: argparse.Namespace) -> runner.Settings:
    """The run's settings: --quick's, then every option given; UsageError if unfit."""
    if args.size is not None:
        raise UsageError("--size goes with --snapshot")
    if args.entries is not None or args.connections is not None:
        raise UsageError("--entries and --connections go with --memory")
    settings = runner.Settings(
        quick=args.quick, only=args.only, series=args.series, repeat=args.repeat,
        profile=args.profile, loop=args.loop,
    )  # fmt: skip
    given = {"concurrency": args.concurrency, "payloads": args.payload,
             "duration": args.duration, "warmup": args.warmup}  # fmt: skip
    for name, value in {**(runner.QUICK if args.quick else {}), **_given(given)}.items():
        setattr(settings, name, value)
    _check_settings(settings)
    settings.out = Path(args.out) if args.out else None
    if args.docs:
        settings.docs = Path(args.docs)
        _check_docs_page(settings.docs)
    _check_something_runs(settings)
    settings.command = runner.command_line(settings)
    return settings


def _given(options: dict[str, object]) -> dict[str, object]:
    return {name: value for name, value in options.items() if value is not None}


def _check_settings(settings: runner.Settings) -> None:
    if settings.series:
        unknown = sorted(set(settings.series) - set(runner.SERIES))
        if unknown:
            raise UsageError(f"unknown series {unknown}; known: {sorted(runner.SERIES)}")
    if settings.repeat < 1 or settings.duration <= 0 or settings.warmup < 0:
        raise UsageError("--repeat must be >= 1, --duration > 0, --warmup >= 0")


def _check_docs_page(page: Path) -> None:
    """Fail now, not after the run, if the page has no block to replace."""
    text = page.read_text() if page.is_file() else ""
    if report.DOCS_BEGIN not in text:
        raise UsageError(f"{page} has no generated results block to replace")


def _check_something_runs(settings: runner.Settings) -> None:
    """Refuse a run in which every selected system would be skipped (it would prove nothing)."""
    plans = runner.selected_plans(settings)
    if not plans:
        raise UsageError("--only and --series select no series to run")
    reasons = [plan.available() for plan, _ in plans]
    if all(reasons):
        raise UsageError("nothing to run: " + "; ".join(dict.fromkeys(reasons)))
