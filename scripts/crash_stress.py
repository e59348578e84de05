"""Long kill -9 run for FileStorage: many rounds of tests/io/crash_writer.py.

    python scripts/crash_stress.py --rounds 1000 [--seed N] [--fresh-every 100]

Each round starts a writer process on the same directory (so each round
also recovers the previous round's crash), SIGKILLs it at a seeded random
moment and checks the reopened state (see crash_writer.run_round). Stops at
the first failure, printing the round seed and keeping the directory.
"""

from __future__ import annotations

import argparse
import logging
import random
import secrets
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "io"))

from crash_writer import Round, run_round


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--fresh-every", type=int, default=100, help="new directory every N")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)  # recovery warns of every torn tail it cuts
    seed = args.seed if args.seed is not None else secrets.randbits(32)
    print(f"seed {seed}, {args.rounds} rounds", flush=True)
    rng = random.Random(seed)
    scratch = Path(tempfile.mkdtemp(prefix="raftio-crash-"))
    results: list[Round] = []
    started = time.perf_counter()
    for number in range(args.rounds):
        directory = scratch / f"peer-{number // args.fresh_every}"
        round_seed = rng.randrange(2**32)
        try:
            results.append(run_round(directory, round_seed, scratch))
        except Exception as exc:
            print(f"FAILED in round {number} (round seed {round_seed}): {exc}")
            print(f"directory kept: {directory}")
            return 1
        if (number + 1) % 50 == 0:
            report(results, time.perf_counter() - started)
    report(results, time.perf_counter() - started)
    shutil.rmtree(scratch)
    return 0


def report(results: list[Round], elapsed: float) -> None:
    early = sum(r.killed_before_ready for r in results)
    issued = sum(r.issued for r in results)
    acked = sum(r.acked for r in results)
    unacked_kept = sum(r.recovered - r.acked for r in results)
    print(
        f"{len(results)} rounds ok in {elapsed:.0f}s: {early} killed before ready, "
        f"{issued} ops issued, {acked} acknowledged (all recovered), "
        f"{unacked_kept} unacknowledged ops also recovered",
        flush=True,
    )


if __name__ == "__main__":
    sys.exit(main())
