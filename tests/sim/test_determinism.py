"""A simulation is a pure function of its seed: same seed, byte-identical trace."""

from __future__ import annotations

import os
import subprocess
import sys

from raftio.testing.sim import SimParams, run_simulation

PARAMS = SimParams(seed=7, duration=8.0)

_DIGEST = (
    "from raftio.testing.sim import SimParams, run_simulation; "
    "print(run_simulation(SimParams(seed=7, duration=8.0)).digest)"
)


def test_the_same_seed_gives_the_same_trace() -> None:
    first, second = run_simulation(PARAMS), run_simulation(PARAMS)

    assert first.ok, first.report()
    assert first.stats["trace_lines"] > 1000
    assert first.digest == second.digest
    assert first.trace_tail == second.trace_tail
    assert first.stats == second.stats


def test_a_different_seed_gives_a_different_trace() -> None:
    other = SimParams(seed=8, duration=8.0)
    assert run_simulation(PARAMS).digest != run_simulation(other).digest


def test_the_trace_does_not_depend_on_hash_randomization() -> None:
    digests = set()
    for hash_seed in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=hash_seed)
        out = subprocess.run(
            [sys.executable, "-c", _DIGEST], env=env, capture_output=True, text=True, check=True
        )
        digests.add(out.stdout.strip())
    assert digests == {run_simulation(PARAMS).digest}
