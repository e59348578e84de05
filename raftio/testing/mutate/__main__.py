"""python -m raftio.testing.mutate: run mutation campaigns, print their figures and problems.

    python -m raftio.testing.mutate peer --seed 7 --frames 1000000
    python -m raftio.testing.mutate peer --seed 7 --replay 4242      # mutant 4242 alone
    python -m raftio.testing.mutate peer --seed 7 --frames 10000 --bisect
    python -m raftio.testing.mutate peer --seeds 1-20 --frames 10000
    python -m raftio.testing.mutate show --seed 7 --frame 4242       # what mutant 4242 is
    python -m raftio.testing.mutate tcp --seed 7 --frames 1000000    # Nodes on 127.0.0.1
    python -m raftio.testing.mutate kv --seed 7 --frames 20000       # KV client ports

A peer campaign (in memory, virtual clock) is deterministic: the same seed
and frame count replay the same frames at the same virtual times, and the
first N frames of a longer run are those of a run of N frames. `--bisect` finds the smallest frame
count that shows a problem. Exits 1 if any campaign found a problem.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from raftio.testing.mutate.engine import Mutator
from raftio.testing.mutate.kv import KVParams, run_kv_campaign
from raftio.testing.mutate.peer import Outcome, PeerParams, capture_corpus, run_peer_campaign
from raftio.testing.mutate.tcp import run_tcp_campaign


def _seeds(text: str) -> list[int]:
    low, _, high = text.partition("-")
    return list(range(int(low), int(high or low) + 1))


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m raftio.testing.mutate", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("protocol", choices=("peer", "tcp", "kv", "show"))
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--seeds", type=_seeds, help="a range of seeds, e.g. 1-20")
    parser.add_argument("--frames", type=int, default=10_000)
    parser.add_argument("--replay", type=int, help="inject only this mutant")
    parser.add_argument("--frame", type=int, default=0, help="show: which mutant")
    parser.add_argument("--bisect", action="store_true", help="smallest failing frame count")
    parser.add_argument("--mean-gap", type=float, default=0.002, help="virtual s between frames")
    return parser.parse_args(argv)


def _run(args: argparse.Namespace, seed: int, frames: int) -> Outcome:
    if args.protocol == "kv":
        return run_kv_campaign(KVParams(seed=seed, frames=frames))
    params = PeerParams(seed=seed, frames=frames, only=args.replay, mean_gap=args.mean_gap)
    if args.protocol == "tcp":
        return run_tcp_campaign(params)
    return run_peer_campaign(params)


def _bisect(args: argparse.Namespace, seed: int, frames: int) -> int:
    low, high = 0, frames  # a run of `high` frames fails; find the smallest such count
    while low + 1 < high:
        middle = (low + high) // 2
        if _run(args, seed, middle).problems():
            high = middle
        else:
            low = middle
    return high


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.protocol == "show":
        corpus = capture_corpus(args.seed)
        print(Mutator(corpus, args.seed, 3).mutant(args.frame).describe())
        return 0
    failed = 0
    for seed in args.seeds or [args.seed]:
        outcome = _run(args, seed, args.frames)
        print("\n".join(outcome.lines()), flush=True)
        if outcome.problems():
            failed += 1
            print(f"replay: python -m raftio.testing.mutate {args.protocol} --seed {seed} "
                  f"--frames {args.frames} --mean-gap {args.mean_gap}")  # fmt: skip
            if args.bisect and args.replay is None and args.protocol == "peer":
                first = _bisect(args, seed, args.frames)
                print(f"seed {seed}: the first {first} frames suffice (the last is #{first - 1})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
