"""Metrics of peers and Nodes, and the Prometheus endpoint."""

from __future__ import annotations

import asyncio

from raftio.metrics import Histogram, serve_prometheus
from raftio.testing import LoopKind

from .test_node_memory import MemoryCluster, cluster_test


def test_histogram_buckets_are_cumulative() -> None:
    hist = Histogram()
    for value in (0.00005, 0.0003, 0.0003, 0.02, 50.0):
        hist.observe(value)
    out: dict[str, float] = {}

    hist.export("lat", 'm="x"', out)

    assert out['lat_bucket{m="x",le="0.0001"}'] == 1
    assert out['lat_bucket{m="x",le="0.0005"}'] == 3
    assert out['lat_bucket{m="x",le="0.025"}'] == 4
    assert out['lat_bucket{m="x",le="10.0"}'] == 4
    assert out['lat_bucket{m="x",le="+Inf"}'] == 5
    assert out['lat_count{m="x"}'] == 5
    assert abs(out['lat_sum{m="x"}'] - 50.02065) < 1e-9


def test_metrics_follow_the_cluster(loop_kind: LoopKind, seed: int) -> None:
    async def body(c: MemoryCluster) -> None:
        leader = await c.leader()
        for _ in range(30):
            await leader.propose(("add", "x", 1))
        await asyncio.sleep(0.5)

        m = leader.metrics()
        followers = [n.metrics() for n in c.nodes if n is not None and n is not leader]
        sent = m['raftio_rpc_sent_total{method="append_entries"}']
        latency_count = m['raftio_rpc_latency_seconds_count{method="append_entries"}']

        assert m["raftio_is_leader"] == 1
        assert m["raftio_terms_led_total"] >= 1
        assert m["raftio_elections_total"] >= 1
        assert m["raftio_commit_index"] == m["raftio_node_applied_index"] >= 31
        assert sent >= 2
        assert latency_count <= sent
        assert m["raftio_storage_entries_written_total"] >= 31
        for f in followers:
            assert f["raftio_is_leader"] == 0
            assert f['raftio_rpc_received_total{method="append_entries"}'] > 0
            assert f["raftio_commit_index"] == m["raftio_commit_index"]

    cluster_test(body, loop_kind, seed)


def test_snapshot_metrics(loop_kind: LoopKind, seed: int) -> None:
    async def body(c: MemoryCluster) -> None:
        leader = await c.leader()
        for k in range(200):
            await leader.propose(("add", f"k{k % 5}", 1))

        m = leader.metrics()

        assert m["raftio_node_snapshots_total"] >= 1
        assert m["raftio_node_snapshot_bytes"] > 0
        assert m["raftio_node_snapshot_seconds_count"] == m["raftio_node_snapshots_total"]
        assert m["raftio_node_log_bytes"] < 4000

    cluster_test(body, loop_kind, seed, snapshot_bytes=2000)


def test_prometheus_endpoint_serves_the_text_format(loop_kind: LoopKind, seed: int) -> None:
    async def body(c: MemoryCluster) -> None:
        leader = await c.leader()
        await leader.propose(("add", "x", 1))
        server = await serve_prometheus(leader.metrics, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            response = (await reader.read()).decode()
            writer.close()
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /other HTTP/1.1\r\n\r\n")
            missing = (await reader.read()).decode()
            writer.close()
        finally:
            server.close()
            await server.wait_closed()

        head, body_text = response.split("\r\n\r\n", 1)
        assert head.startswith("HTTP/1.1 200 OK")
        assert "raftio_is_leader 1\n" in body_text
        samples = dict(line.rsplit(" ", 1) for line in body_text.strip().split("\n"))
        assert set(samples) == set(leader.metrics())
        assert float(samples["raftio_term"]) == leader.raft.get_state()[0]
        assert missing.startswith("HTTP/1.1 404")

    cluster_test(body, loop_kind, seed)
