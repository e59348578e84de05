"""The `lab` fixture: one Lab per test, with the --seed and --loop options."""

from __future__ import annotations

import pytest

from raftio.testing import LoopKind

from .harness import Lab


@pytest.fixture
def lab(request: pytest.FixtureRequest, seed: int, loop_kind: LoopKind) -> Lab:
    storage_kind: str = request.config.getoption("--storage")
    return Lab(request.node.nodeid, seed, loop_kind, storage_kind)
