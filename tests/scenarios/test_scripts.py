"""Runs every script in testdata/; `RAFTIO_REWRITE=1 pytest tests/scenarios` rewrites them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.scenarios.datadriven import run_file

TESTDATA = Path(__file__).parent / "testdata"
SCRIPTS = sorted(TESTDATA.glob("*.txt"))


@pytest.mark.parametrize("path", SCRIPTS, ids=[p.stem for p in SCRIPTS])
def test_script(path: Path) -> None:
    run_file(path, rewrite=os.environ.get("RAFTIO_REWRITE") == "1")


def test_every_script_is_collected() -> None:
    assert len(SCRIPTS) >= 5


RAFT_DEV = sorted(TESTDATA.glob("raft_dev_*.txt"))


@pytest.mark.parametrize("path", RAFT_DEV, ids=[p.stem for p in RAFT_DEV])
def test_the_raft_dev_bug_needs_the_fix_off(path: Path) -> None:
    """Each raft-dev 2015 scenario elects two leaders in one term without the fix, none with it.

    The scripts' recorded outputs hold the proof (test_script replays them);
    this states it, so a rewrite that loses it fails here.
    """
    unsafe, _, safe = path.read_text().partition("fix ON")
    assert [line for line in unsafe.splitlines() if line.startswith("!!")] != []
    assert "both lead" in unsafe
    assert [line for line in safe.splitlines() if line.startswith("!!")] == []
    assert "refused: change_pending" in safe


def test_all_three_raft_dev_scenarios_are_scripted() -> None:
    assert len(RAFT_DEV) == 3
