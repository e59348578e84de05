"""The simulation fuzzer: explore many seeds, report every violation with its replay command.

    python -m raftio.testing.fuzz --seeds 1000 [--start S] [--peers 3-7] [--duration 60]
                                  [--profile mixed|figure8|membership] [--jobs N] [--trace-lines N]
                                  [--trace-file PATH] [-v]

Seed s runs `run_simulation(SimParams(seed=s, ...))` (raftio.testing.sim):
a run is a pure function of its seed and these options, so the printed
replay command repeats a failure exactly. Prints the seeds explored, the
simulated hours covered, the wall time and every violation (with its seed);
exits 1 if there was any.

Wall time is read with `time.perf_counter()` for this report only; the
simulations themselves run on the virtual clock and never read a real one.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

from raftio.testing.sim import SimParams, SimResult, run_simulation
from raftio.testing.sim.faults import PROFILES


@dataclass(slots=True)
class FuzzSummary:
    """What a fuzzing session covered and found."""

    seeds: int = 0
    sim_seconds: float = 0.0
    wall_seconds: float = 0.0
    violations: list[SimResult] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [
            f"seeds explored: {self.seeds}",
            f"simulated hours: {self.sim_seconds / 3600:.2f}",
            f"wall time: {self.wall_seconds:.1f} s",
            f"violations: {len(self.violations)}",
        ]
        out += [f"  seed {r.params.seed}: {r.violation}" for r in self.violations]
        return out


def explore(
    params: Sequence[SimParams],
    jobs: int = 1,
    verbose: bool = False,
    trace_lines: int = 40,
    trace_file: str | None = None,
) -> FuzzSummary:
    """Run every simulation in `params`; print each violation's report as it is found."""
    summary = FuzzSummary()
    started = time.perf_counter()
    for result in _results(params, jobs):
        summary.seeds += 1
        summary.sim_seconds += result.sim_time
        if verbose:
            verdict = "ok" if result.ok else f"VIOLATION {result.violation}"
            print(f"seed {result.params.seed} n={result.peer_count} {verdict}", flush=True)
        if not result.ok:
            summary.violations.append(result)
            print(result.report(trace_lines), flush=True)
        if trace_file is not None and result.trace is not None:
            _write_trace(trace_file, result.params.seed, result.trace)
    summary.wall_seconds = time.perf_counter() - started
    return summary


def _results(params: Sequence[SimParams], jobs: int) -> Iterator[SimResult]:
    if jobs <= 1:
        for p in params:
            yield run_simulation(p)
        return
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        yield from pool.map(run_simulation, params, chunksize=4)


def _write_trace(pattern: str, seed: int, lines: list[str]) -> None:
    path = pattern.replace("{seed}", str(seed))
    with open(path, "w", encoding="utf-8") as out:
        out.write("\n".join(lines) + "\n")
    print(f"trace of seed {seed}: {path}", flush=True)


def _peer_range(text: str) -> tuple[int, int]:
    low, _, high = text.partition("-")
    peers = (int(low), int(high or low))
    if not 1 <= peers[0] <= peers[1]:
        raise argparse.ArgumentTypeError(f"bad peer range {text!r}; e.g. 3-7 or 5")
    return peers


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m raftio.testing.fuzz", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--seeds", type=int, default=100, help="how many seeds (default 100)")
    parser.add_argument("--start", type=int, default=1, help="first seed (default 1)")
    parser.add_argument("--peers", type=_peer_range, default=(3, 7), help="e.g. 3-7 (default)")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of chaos per seed")
    parser.add_argument("--profile", choices=PROFILES, default="mixed", help="nemesis profile")
    parser.add_argument("--liveness-bound", type=float, default=10.0, help="seconds after heal")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes (default 1)")
    parser.add_argument("--trace-lines", type=int, default=40, help="trace lines per violation")
    parser.add_argument(
        "--trace-file", help="write each run's full trace here ({seed} is replaced)"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="one line per seed")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    params = [
        SimParams(
            seed=seed,
            peers=args.peers,
            duration=args.duration,
            profile=args.profile,
            liveness_bound=args.liveness_bound,
            trace_keep=max(args.trace_lines, 1),
            full_trace=args.trace_file is not None,
        )
        for seed in range(args.start, args.start + args.seeds)
    ]
    summary = explore(params, args.jobs, args.verbose, args.trace_lines, args.trace_file)
    print("\n".join(summary.lines()))
    return 1 if summary.violations else 0


if __name__ == "__main__":
    sys.exit(main())
