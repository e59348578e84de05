"""The nemesis soak: many seeded simulations of the KV service, every history checked.

    python -m raftio.testing.nemesis --seeds 200 --jobs 4          # seeds 1..200
    python -m raftio.testing.nemesis --seed 17 --nodes 5 -v        # replay one
    python -m raftio.testing.nemesis --seeds 50 --nodes 3,5 --vary-raft --duration 40

Each seed is one `simulate()` run: Nodes with KVStateMachine on the
in-memory network, on the virtual clock, under partitions, crashes and
flaky / reordering links, with concurrent clients; then heal, final reads,
the linearizability check, lost or doubled writes, replica agreement. A
seed replays exactly (memory storage).

Prints a line per seed, and for a failure the replay command, the checker's
explanation and the nemesis's log, then a summary; exits 1 if any seed failed.
Wall time is read for the summary only; the runs never read a real clock.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace

from raftio.testing.nemesis.simulate import SIM_FAULTS, SIM_KINDS, SimConfig, simulate
from raftio.testing.nemesis.verdict import NemesisReport

__all__ = ["main"]


@dataclass(frozen=True, slots=True)
class Outcome:
    """One seed's run, as the summary counts it."""

    seed: int
    ok: bool
    operations: int
    acknowledged: int
    unknown: int
    sim_time: float
    text: str  # the summary, or the whole explanation of a failure
    failures: tuple[str, ...]  # what failed: see failure_kinds()


def failure_kinds(report: NemesisReport) -> tuple[str, ...]:
    """The checks a run failed, in a few words each."""
    kinds = set()
    if report.result is None or report.result.ok is not True:
        kinds.add(
            "not linearizable" if report.result and report.result.ok is False else "unchecked"
        )
    for problem in report.problems:
        if "disagree" in problem or "down" in problem:
            kinds.add("replicas disagree")
        elif "final read" in problem:
            kinds.add("final read failed")
        elif "checker" in problem:
            kinds.add("unchecked")
        else:
            kinds.add("lost or doubled write")
    return tuple(sorted(kinds))


def config_for(seed: int, args: argparse.Namespace) -> SimConfig:
    """The run for `seed`: node counts cycle by seed; --vary-raft draws pre-vote/check-quorum."""
    nodes = args.nodes[seed % len(args.nodes)]
    pre_vote, check_quorum = not args.no_pre_vote, not args.no_check_quorum
    if args.vary_raft:
        pre_vote, check_quorum = bool(seed & 1), bool(seed & 2)
    return SimConfig(
        seed=seed,
        nodes=nodes,
        clients=args.clients,
        keys=args.keys,
        duration=args.duration,
        faults=tuple(args.faults),
        storage=args.storage,
        client_deadline=args.client_deadline,
        snapshot_bytes=args.snapshot_bytes,
        snapshot_chunk_bytes=args.snapshot_chunk_bytes,
        max_down=args.max_down,
        pre_vote=pre_vote,
        check_quorum=check_quorum,
        lease_reads=args.lease_reads and check_quorum,  # a lease needs check-quorum
    )


def run_one(config: SimConfig, verbose: bool) -> Outcome:
    """Simulate `config` (in a temporary directory for file storage)."""
    if config.storage == "file":
        with tempfile.TemporaryDirectory(prefix="raftio-nemesis-") as directory:
            report = simulate(replace(config, data_dir=directory))
    else:
        report = simulate(config)
    text = report.explain() if (verbose or not report.ok) else report.summary()
    return Outcome(
        config.seed,
        report.ok,
        report.operations,
        report.acknowledged,
        report.unknown,
        report.sim_time,
        text,
        failure_kinds(report),
    )


def _int_list(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m raftio.testing.nemesis",
        description=__doc__,
        formatter_class=argparse.RawTextHelpFormatter,
    )
    p.add_argument("--seeds", type=int, default=20, help="how many seeds (default 20)")
    p.add_argument("--start", type=int, default=1, help="first seed (default 1)")
    p.add_argument("--seed", type=int, help="run this one seed only")
    p.add_argument("--nodes", type=_int_list, default=[3], help="node counts, cycled by seed")
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--keys", type=int, default=3)
    p.add_argument("--duration", type=float, default=20.0, help="seconds of faults (loop time)")
    p.add_argument(
        "--faults",
        type=lambda text: text.split(","),
        default=list(SIM_FAULTS),
        help=f"comma-separated, of {','.join(SIM_KINDS)} (default {','.join(SIM_FAULTS)})",
    )
    p.add_argument("--storage", choices=["memory", "file"], default="memory")
    p.add_argument("--client-deadline", type=float, default=2.0)
    p.add_argument("--snapshot-bytes", type=int, default=4096, help="nodes snapshot past this")
    p.add_argument(
        "--snapshot-chunk-bytes",
        type=int,
        default=256,
        help="InstallSnapshot chunk size (small: every snapshot travels in many chunks)",
    )
    p.add_argument("--max-down", type=int, help="nodes crashed at once (default: a minority)")
    p.add_argument("--no-pre-vote", action="store_true")
    p.add_argument("--no-check-quorum", action="store_true")
    p.add_argument("--lease-reads", action="store_true",
                   help="RaftConfig.lease_reads (where check-quorum is on)")  # fmt: skip
    p.add_argument("--vary-raft", action="store_true", help="pre-vote and check-quorum by seed")
    p.add_argument("--jobs", type=int, default=1, help="parallel processes")
    p.add_argument("-v", "--verbose", action="store_true", help="explain every run")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the seeds `argv` asks for; 0 if every one passed, else 1."""
    args = parse_args(argv)
    seeds = [args.seed] if args.seed is not None else range(args.start, args.start + args.seeds)
    configs = [config_for(seed, args) for seed in seeds]
    started = time.monotonic()
    outcomes: list[Outcome] = []
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        futures = [pool.submit(run_one, config, args.verbose) for config in configs]
        for config, future in zip(configs, futures, strict=True):
            outcome = future.result()
            outcomes.append(outcome)
            print(f"seed {config.seed} ({config.nodes} nodes): {outcome.text}", flush=True)
    failed = [o.seed for o in outcomes if not o.ok]
    print(f"seeds explored: {len(outcomes)}")
    print(f"operations checked: {sum(o.operations for o in outcomes)}")
    print(f"acknowledged: {sum(o.acknowledged for o in outcomes)}")
    print(f"unknown outcome: {sum(o.unknown for o in outcomes)}")
    print(f"simulated seconds: {sum(o.sim_time for o in outcomes):.0f}")
    print(f"wall time: {time.monotonic() - started:.1f} s")
    print(f"violations: {len(failed)}" + (f" (seeds {failed})" if failed else ""))
    kinds = Counter(kind for o in outcomes for kind in o.failures)
    for kind, count in sorted(kinds.items()):
        print(f"  {kind}: {count}")
    return 1 if failed else 0
