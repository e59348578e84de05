"""Time the linearizability checker on generated histories of 1k, 10k and 50k operations.

    python benchmarks/lincheck_bench.py [--seed N] [--repeat N] [--sizes 1000,10000,50000]

Histories come from `raftio.testing.lincheck.generate.linearizable_history`: a
simulated linearizable store where every operation takes effect at a random
instant inside its interval. Workloads:

* spread:  16 clients over 50 keys, get/put/append, 2% unknown outcomes.
* one key: 8 clients on a single key, get/put/append, 2% unknown outcomes
  (no help from partitioning: the search itself).
* bad read: "spread" with one get's output corrupted; the search must exhaust
  that key, then explain.

Prints one row per workload and size: the best wall time of `--repeat` runs,
and operations per second.
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable
from dataclasses import replace

from raftio.testing.lincheck.generate import linearizable_history
from raftio.testing.linearizability import Operation, check

Workload = Callable[[random.Random, int], list[Operation]]


def spread(rng: random.Random, n: int) -> list[Operation]:
    return linearizable_history(rng, operations=n, keys=50, clients=16, unknown=0.02)


def one_key(rng: random.Random, n: int) -> list[Operation]:
    return linearizable_history(rng, operations=n, keys=1, clients=8, unknown=0.02)


def bad_read(rng: random.Random, n: int) -> list[Operation]:
    ops = spread(rng, n)
    reads = [i for i, op in enumerate(ops) if op.kind == "get" and not op.is_unknown]
    i = rng.choice(reads)
    ops[i] = replace(ops[i], output=f"{ops[i].output}X")
    return ops


WORKLOADS: dict[str, tuple[Workload, bool]] = {
    "spread": (spread, True),
    "one key": (one_key, True),
    "bad read": (bad_read, False),
}


def bench(workload: Workload, expect: bool, n: int, seed: int, repeat: int) -> float:
    ops = workload(random.Random(seed), n)
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        result = check(ops, timeout=300)
        best = min(best, time.perf_counter() - started)
        if result.ok is not expect:
            raise SystemExit(f"seed={seed} n={n}: expected ok={expect}\n{result.explain()}")
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--sizes", default="1000,10000,50000")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]

    print(f"seed={args.seed} repeat={args.repeat} (best of)")
    print(f"{'workload':<10} {'operations':>10} {'seconds':>9} {'ops/s':>9}")
    for name, (workload, expect) in WORKLOADS.items():
        for n in sizes:
            seconds = bench(workload, expect, n, args.seed, args.repeat)
            print(f"{name:<10} {n:>10} {seconds:>9.3f} {n / seconds:>9.0f}", flush=True)


if __name__ == "__main__":
    main()
