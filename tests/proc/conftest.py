"""Fixtures for real-process tests: `raftio node` processes on 127.0.0.1.

Every process a fixture starts is SIGKILLed and reaped in its finalizer,
whatever the test did. Helpers poll the nodes' client ports, never sleep
for a fixed time to let something happen.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from raftio.kv import KVClient, KVUnavailableError
from raftio.kv.local import ClusterSpec, LocalCluster

ROOT = Path(__file__).resolve().parents[2]


def run_raftio(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """`python -m raftio ARGS`, output captured."""
    return subprocess.run(
        [sys.executable, "-m", "raftio", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        check=False,
    )


def start_cluster(directory: Path, n: int = 3, **options: Any) -> LocalCluster:
    spec = ClusterSpec.create(directory, n, **options)
    spec.save()
    cluster = LocalCluster(spec)
    cluster.start_all()
    return cluster


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    """Three fresh node processes that snapshot often (so catching up may need InstallSnapshot)."""
    cluster = start_cluster(tmp_path, snapshot_bytes=4096)
    try:
        yield cluster
    finally:
        cluster.kill_all_now()


@pytest.fixture(scope="session")
def shared_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """Three node processes shared by tests that never stop a node."""
    cluster = start_cluster(tmp_path_factory.mktemp("shared"))
    try:
        yield cluster
    finally:
        cluster.kill_all_now()


async def statuses(addresses: list[str]) -> list[dict[str, Any] | None]:
    """Every node's status map, None for a node that does not answer."""
    result: list[dict[str, Any] | None] = []
    async with KVClient(addresses) as client:
        for address in addresses:
            try:
                result.append(await client.status(address, timeout=0.5))
            except KVUnavailableError:
                result.append(None)
    return result


async def wait_leader(cluster: LocalCluster, timeout: float = 10.0) -> int:
    """The id of a node that reports itself leader (polling its client port)."""
    async with asyncio.timeout(timeout):
        while True:
            for i, status in enumerate(await statuses(cluster.spec.client_peers)):
                if status is not None and status["role"] == "leader":
                    return i
            await asyncio.sleep(0.05)


async def caught_up(addresses: list[str], timeout: float) -> list[dict[str, Any]]:
    """Statuses once every node is up and has applied the leader's index, one digest."""
    async with asyncio.timeout(timeout):
        while True:
            found = await statuses(addresses)
            live = [s for s in found if s is not None]
            leader = [s for s in live if s["role"] == "leader"]
            if len(live) == len(found) and len(leader) == 1:
                applied = {s["applied_index"] for s in live}
                if (
                    applied == {leader[0]["applied_index"]}
                    and len({s["digest"] for s in live}) == 1
                ):
                    return live
            await asyncio.sleep(0.05)
