"""Command-line options shared by the test suites: which event loop, which seed.

    pytest tests/lab --loop asyncio --seed 1234

`--loop` picks the loop that loop-driven tests run on (default: virtual, a
virtual clock); `--seed` replays a randomized test (default: a fresh seed per
test, printed by the tests that use it).
"""

from __future__ import annotations

import secrets

import pytest

from raftio.testing import LOOP_KINDS, LoopKind


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("raftio")
    group.addoption(
        "--loop",
        choices=LOOP_KINDS,
        default="virtual",
        help="event loop for loop-driven tests: virtual (default), asyncio or uvloop",
    )
    group.addoption(
        "--storage",
        choices=("memory", "file"),
        default="memory",
        help="storage of the lab suite's peers: memory (default) or file (FileStorage)",
    )
    group.addoption(
        "--seed",
        type=int,
        default=None,
        help="seed for randomized tests (default: a fresh seed per test)",
    )


@pytest.fixture
def loop_kind(request: pytest.FixtureRequest) -> LoopKind:
    """The event loop kind chosen with --loop."""
    kind: LoopKind = request.config.getoption("--loop")
    return kind


@pytest.fixture
def seed(request: pytest.FixtureRequest) -> int:
    """The seed chosen with --seed, else a fresh one for this test."""
    chosen: int | None = request.config.getoption("--seed")
    return chosen if chosen is not None else secrets.randbits(32)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """`slow` tests (soaks, million-frame fuzz runs) run only when chosen with -m."""
    if config.getoption("markexpr"):
        return  # the user chose with -m
    slow = [item for item in items if item.get_closest_marker("slow") is not None]
    if slow:
        config.hook.pytest_deselected(items=slow)
        items[:] = [item for item in items if item.get_closest_marker("slow") is None]
