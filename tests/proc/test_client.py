"""KVClient against real node processes: redirects, status, giving up."""

from __future__ import annotations

import asyncio

import pytest

from raftio.kv import KVClient, KVRequestError, KVUnavailableError
from raftio.kv.local import LocalCluster, free_ports
from raftio.kv.machine import MAX_VALUE

from .conftest import kv_client, wait_leader


async def test_a_follower_redirects_the_client_to_the_leader(shared_cluster: LocalCluster) -> None:
    addresses = shared_cluster.spec.client_peers
    leader = await wait_leader(shared_cluster)
    follower = addresses[(leader + 1) % len(addresses)]

    async with kv_client(shared_cluster, [follower]) as client:
        value = await client.put("redirected", "yes")
        answered_by = client.leader

    assert value == "yes"
    assert answered_by == addresses[leader]


async def test_status_reports_every_node(shared_cluster: LocalCluster) -> None:
    addresses = shared_cluster.spec.client_peers
    await wait_leader(shared_cluster)

    async with kv_client(shared_cluster) as client:
        found = [await client.status(address) for address in addresses]

    assert [s["node_id"] for s in found] == [0, 1, 2]
    assert [s["client_address"] for s in found] == addresses
    assert [s["address"] for s in found] == shared_cluster.spec.peers
    assert sum(s["role"] == "leader" for s in found) <= 1
    assert all(s["applied_index"] <= s["commit_index"] <= s["last_index"] for s in found)


async def test_a_value_past_the_limit_is_refused_and_changes_nothing(
    shared_cluster: LocalCluster,
) -> None:
    async with kv_client(shared_cluster) as client:
        await client.put("big", "x" * (MAX_VALUE - 1))

        with pytest.raises(KVRequestError, match="failed"):
            await client.append("big", "yy")
        after = await client.append("big", "y")

    assert after == "x" * (MAX_VALUE - 1) + "y"


async def test_with_no_node_listening_the_client_gives_up_at_its_deadline() -> None:
    nowhere = [f"127.0.0.1:{port}" for port in free_ports(2)]
    loop = asyncio.get_running_loop()

    started = loop.time()
    async with KVClient(nowhere, deadline=0.5) as client:
        with pytest.raises(KVUnavailableError, match="ConnectionRefusedError"):
            await client.put("k", "v")
    elapsed = loop.time() - started

    assert 0.4 <= elapsed < 1.0  # it stops once the next backoff (<= 0.1 s) would pass 0.5 s
    assert (client.session, client.seq) == (None, 0)  # no session was issued: nothing numbered
