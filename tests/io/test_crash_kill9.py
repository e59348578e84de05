"""kill -9 a process writing to a FileStorage at random moments, then reopen it:
every acknowledged write is there, and the state is exactly some prefix of what
was issued (nothing unacknowledged out of order). scripts/crash_stress.py runs
the same rounds a thousand times."""

from __future__ import annotations

import random
from pathlib import Path

from crash_writer import Round, run_round

ROUNDS = 24


def test_acknowledged_writes_survive_kill_9(tmp_path: Path, seed: int) -> None:
    print(f"seed={seed} (replay with --seed {seed})")
    rng = random.Random(seed)
    directory = tmp_path / "peer"  # one peer, killed and restarted ROUNDS times
    results: list[Round] = []

    for _ in range(ROUNDS):
        round_seed = rng.randrange(2**32)
        print(f"round seed {round_seed}")
        results.append(run_round(directory, round_seed, tmp_path))

    # The rounds exercised something: kills after acknowledgements, and writes
    # that were issued but never acknowledged.
    assert sum(r.acked for r in results) > 0
    assert any(r.issued > r.acked for r in results)
    assert all(r.recovered >= r.acked for r in results)
