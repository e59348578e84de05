"""A fixed set of fuzzer seeds, run in CI; many more run with `-m slow` or the fuzzer CLI.

Each seed is one simulated run (raftio.testing.sim) under the nemesis; a
failure prints the violation, the command that replays it, and the trace tail.

    pytest -m slow tests/sim                  # 200 seeds of 60 s each; 2,000 of membership
    python -m raftio.testing.fuzz --seeds 1000 --jobs 2
"""

from __future__ import annotations

import pytest

from raftio.testing.fuzz import main
from raftio.testing.sim import SimParams, run_simulation

MIXED_SEEDS = range(1, 25)
FIGURE8_SEEDS = range(1, 7)
MEMBERSHIP_SEEDS = range(1, 13)
CI_DURATION = 15.0


@pytest.mark.parametrize("seed", MIXED_SEEDS)
def test_mixed_faults(seed: int) -> None:
    result = run_simulation(SimParams(seed=seed, duration=CI_DURATION))
    assert result.ok, result.report()


@pytest.mark.parametrize("seed", FIGURE8_SEEDS)
def test_figure8_faults(seed: int) -> None:
    result = run_simulation(SimParams(seed=seed, duration=CI_DURATION, profile="figure8"))
    assert result.ok, result.report()


@pytest.mark.parametrize("seed", MEMBERSHIP_SEEDS)
def test_membership_changes_among_faults(seed: int) -> None:
    result = run_simulation(SimParams(seed=seed, duration=CI_DURATION, profile="membership"))
    assert result.ok, result.report()


def test_the_cli_reports_what_it_explored(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--seeds", "2", "--start", "5", "--peers", "3-4", "--duration", "5"]) == 0

    out = capsys.readouterr().out.splitlines()
    assert out[0] == "seeds explored: 2"
    assert out[1].startswith("simulated hours: 0.00")
    assert out[2].startswith("wall time: ")
    assert out[3] == "violations: 0"


@pytest.mark.slow
@pytest.mark.timeout(3600)
@pytest.mark.parametrize("profile", ["mixed", "figure8"])
def test_many_seeds(profile: str) -> None:
    args = ["--seeds", "200", "--start", "1000", "--profile", profile, "--jobs", "2"]
    assert main(args) == 0


@pytest.mark.slow
@pytest.mark.timeout(7200)
def test_two_thousand_membership_seeds() -> None:
    args = ["--seeds", "2000", "--start", "1000", "--profile", "membership", "--jobs", "2"]
    assert main([*args, "--duration", "30"]) == 0
