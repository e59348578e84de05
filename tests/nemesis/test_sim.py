"""raftio Nodes with KVStateMachine on the memory network, under a nemesis, on the virtual clock.

Each run is `raftio.testing.nemesis.simulate(SimConfig(seed=...))`: concurrent
clients on a few keys while partitions, crashes (restart from what the
storage kept) and flaky or reordering links come and go; then heal, read
every key, check the whole history for linearizability, every acknowledged
append present exactly once, and every replica on the same state.

A fixed set of seeds runs every time; `test_a_fresh_seed` draws a new one
(printed; `--seed` replays it). Many more: `python -m raftio.testing.nemesis`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from raftio.testing.nemesis import NemesisReport, SimConfig, simulate
from raftio.testing.nemesis.soak import main as soak_main


def run(config: SimConfig) -> NemesisReport:
    report = simulate(config)
    print(f"seed={config.seed}: {report.summary()}\nreplay: {report.replay}")
    assert report.ok, report.explain()
    return report


def assert_eventful(report: NemesisReport) -> None:
    """The run did what it is for: many operations, under every kind of fault."""
    kinds = {event.split()[1] for event in report.events}
    assert {"partition", "crash", "restart", "network"} <= kinds, report.events
    assert report.acknowledged > 100
    assert report.result is not None
    assert report.result.operations == report.operations


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_three_nodes(seed: int) -> None:
    assert_eventful(run(SimConfig(seed=seed, nodes=3)))


@pytest.mark.parametrize("seed", [1, 2])
def test_five_nodes(seed: int) -> None:
    assert_eventful(run(SimConfig(seed=seed, nodes=5)))


@pytest.mark.parametrize("seed", [7, 8])
def test_without_pre_vote_or_check_quorum(seed: int) -> None:
    # More elections, and deposed leaders that believe they lead for longer.
    config = SimConfig(seed=seed, nodes=3 + 2 * (seed % 2), pre_vote=False, check_quorum=False)

    assert_eventful(run(config))


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_membership_changes_among_the_faults(seed: int) -> None:
    """The leader adds, removes and hands over while partitions and crashes go on."""
    faults = ("partition", "crash", "flaky", "membership")
    report = run(SimConfig(seed=seed, nodes=5, faults=faults))

    assert_eventful(report)
    changes = [event for event in report.events if " membership by " in event]
    assert len(changes) >= 3, report.events


def test_file_storage(tmp_path: Path) -> None:
    # A crash closes the node (unsynced writes are lost) and reopens its directory.
    assert_eventful(run(SimConfig(seed=9, storage="file", data_dir=str(tmp_path))))


def test_a_fresh_seed(seed: int) -> None:
    assert_eventful(run(SimConfig(seed=seed, nodes=3 + 2 * (seed % 2))))


def test_a_seed_replays_the_same_run() -> None:
    # Crashes, 5 nodes and 8 clients on one key: a run where cancelling a killed
    # peer's tasks in set order (memory addresses) made the second run differ.
    config = SimConfig(seed=20131, nodes=5, clients=8, keys=1, duration=5.0)

    first = simulate(config)
    second = simulate(config)

    assert first.history.operations == second.history.operations
    assert first.events == second.events
    assert [op.return_seq for op in first.history.operations] == [
        op.return_seq for op in second.history.operations
    ]


@pytest.mark.slow
@pytest.mark.timeout(7200)
def test_two_thousand_seeds_with_membership_changes() -> None:
    """`pytest -m slow`: the KV nemesis, membership changes among the faults, 2,000 seeds."""
    faults = "partition,crash,flaky,reorder,membership"
    args = ["--seeds", "2000", "--nodes", "3,5", "--faults", faults, "--jobs", "2"]
    assert soak_main(args) == 0
