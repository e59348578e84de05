"""A node stopped with SIGTERM shuts down cleanly and restarts from its own files."""

from __future__ import annotations

import asyncio
import signal

from raftio.kv.local import LocalCluster

from .conftest import caught_up, kv_client, wait_leader


async def test_sigterm_is_a_clean_shutdown_and_restart_recovers(cluster: LocalCluster) -> None:
    leader = await wait_leader(cluster)
    async with kv_client(cluster) as client:
        for i in range(20):
            await client.append("k", f"{i};")

        cluster.procs[leader].send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(asyncio.to_thread(cluster.procs[leader].wait), 5.0)
        during = await client.append("k", "down;")
        cluster.start(leader)
        final = await caught_up(cluster, timeout=15.0)
        value = await client.get("k")

    log_path = cluster.spec.log_path(leader)
    log = log_path.with_name(log_path.name + ".1").read_text()  # the run before the restart
    assert code == 0
    assert f"node {leader} stopped" in log
    assert "Traceback" not in log
    assert during.endswith("19;down;")
    assert value == "".join(f"{i};" for i in range(20)) + "down;"
    assert len({(s["applied_index"], s["digest"]) for s in final}) == 1
    assert len(final) == 3
