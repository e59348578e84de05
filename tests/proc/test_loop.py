"""uvloop by default (issue 12 item 6): `raftio node` runs on uvloop where installed, or on asyncio
with `--loop asyncio`, and names its loop in `status` and `status --metrics`."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from raftio import _loop
from raftio.kv.local import ClusterSpec, running_detached

from .conftest import run_raftio


def test_run_uses_the_named_loop() -> None:
    async def kind() -> str:
        return _loop.loop_name()

    assert _loop.run(kind(), "asyncio") == "asyncio"
    assert _loop.run(kind(), "uvloop") == "uvloop"
    assert _loop.default_loop() == "uvloop"  # a dependency of raftio on POSIX


def test_an_unknown_loop_is_refused_without_leaking_the_coroutine() -> None:
    coro = asyncio.sleep(0)

    with pytest.raises(ValueError, match="unknown event loop 'trio'"):
        _loop.run(coro, "trio")

    assert coro.cr_frame is None  # closed: no "never awaited" warning (warnings are errors)


@pytest.fixture
def cluster_dir(tmp_path: Path) -> Iterator[Path]:
    directory = tmp_path / "cluster"
    try:
        yield directory
    finally:
        if (directory / "cluster.json").exists():
            run_raftio("cluster", "down", "--dir", str(directory))
            assert running_detached(ClusterSpec.load(directory)) == {}


@pytest.mark.parametrize(
    ("option", "expected"), [([], "uvloop"), (["--loop", "asyncio"], "asyncio")]
)
def test_nodes_run_on_uvloop_unless_told_otherwise(
    cluster_dir: Path, option: list[str], expected: str
) -> None:
    d = str(cluster_dir)

    up = run_raftio("cluster", "up", "-n", "3", "--dir", d, *option)
    metrics = run_raftio("status", "--dir", d, "--metrics")
    log = (cluster_dir / "node-0.log").read_text()

    assert up.returncode == 0, up.stderr
    table = metrics.stdout.split("\n\n", 1)[1].splitlines()
    assert table[0].split()[:2] == ["node", "loop"]
    assert [row.split()[1] for row in table[1:]] == [expected] * 3
    assert f", loop {expected}" in log
