"""Fixtures for real-process tests: `raftio node` processes on 127.0.0.1.

Every process a fixture starts is SIGKILLed and reaped in its finalizer,
whatever the test did. Helpers poll the nodes' client ports, never sleep
for a fixed time to let something happen. Nodes hold their cluster's
secret, as every LocalCluster's do: clients come from `kv_client()`, raw
connections from `open_authenticated()`.
"""

from __future__ import annotations

import asyncio
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from raftio.cli.client import statuses as client_statuses
from raftio.kv import KVClient
from raftio.kv.local import ClusterSpec, LocalCluster, running_detached
from raftio.kv.protocol import auth_proof, encode_frame, read_frame
from raftio.node import parse_address

ROOT = Path(__file__).resolve().parents[2]


def run_raftio(
    *args: str, timeout: float = 60.0, cwd: Path = ROOT, **options: Any
) -> subprocess.CompletedProcess[str]:
    """`python -m raftio ARGS`, output captured."""
    return subprocess.run(
        [sys.executable, "-m", "raftio", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        check=False,
        **options,
    )


def kv_client(
    cluster: LocalCluster, addresses: list[str] | None = None, **options: Any
) -> KVClient:
    """A KVClient of `cluster` (all its nodes, or `addresses`) holding the cluster's secret."""
    addresses = addresses if addresses is not None else cluster.spec.client_peers
    return KVClient(addresses, token=cluster.spec.secret(), **options)


async def open_authenticated(
    address: str, token: bytes | None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A raw connection to a node's client port, past the token handshake (raftio.kv.protocol)."""
    reader, writer = await asyncio.open_connection(*parse_address(address))
    if token is None:
        return reader, writer
    nonce = secrets.token_bytes(16)
    writer.write(encode_frame({"op": "hello", "nonce": nonce}))
    hello = await read_frame(reader)
    server_nonce = hello["value"]["nonce"]
    assert hello["value"]["proof"] == auth_proof(token, "raftio-kv-server", nonce, server_nonce)
    proof = auth_proof(token, "raftio-kv-client", nonce, server_nonce)
    writer.write(encode_frame({"op": "auth", "proof": proof}))
    verdict = await read_frame(reader)
    assert verdict["ok"], verdict
    return reader, writer


def start_cluster(directory: Path, n: int = 3, **options: Any) -> LocalCluster:
    spec = ClusterSpec.create(directory, n, **options)
    spec.save()
    cluster = LocalCluster(spec)
    cluster.start_all()
    return cluster


@pytest.fixture
def cluster_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory for `raftio cluster up`; its nodes are stopped afterwards, whatever happened."""
    try:
        yield tmp_path
    finally:
        if (tmp_path / "cluster.json").exists():
            run_raftio("cluster", "down", "--dir", str(tmp_path))
            assert running_detached(ClusterSpec.load(tmp_path)) == {}


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


async def statuses(cluster: LocalCluster) -> list[dict[str, Any] | None]:
    """Every node's status map, None for a node that does not answer."""
    async with kv_client(cluster) as client:
        return await client_statuses(client, cluster.spec.client_peers, timeout=0.5)


async def wait_leader(cluster: LocalCluster, timeout: float = 10.0) -> int:
    """The id of a node that reports itself leader (polling its client port)."""
    async with asyncio.timeout(timeout):
        while True:
            for i, status in enumerate(await statuses(cluster)):
                if status is not None and status["role"] == "leader":
                    return i
            await asyncio.sleep(0.05)


async def caught_up(cluster: LocalCluster, timeout: float) -> list[dict[str, Any]]:
    """Statuses once every node is up and has applied the leader's index, one digest."""
    async with asyncio.timeout(timeout):
        while True:
            found = await statuses(cluster)
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
