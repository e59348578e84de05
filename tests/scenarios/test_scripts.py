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
