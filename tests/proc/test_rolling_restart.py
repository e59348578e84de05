"""A rolling restart of three `raftio node` processes under a continuous write load.

Each node in turn, then the leader once more, gets SIGTERM (its
`Node.close()` hands leadership over when it leads), restarts on its
directory and catches up; then the leader is SIGKILLed once, as a crash.
Every acknowledged write is there exactly once and no answer contradicts
the history. The longest pause in acknowledgements around each stop is
printed (hand-over versus crash, in the same run): a figure for the closing
note, not asserted, since timing belongs in benchmarks.
"""

from __future__ import annotations

import asyncio
import signal

from raftio.kv.local import LocalCluster

from .conftest import caught_up, kv_client, wait_leader
from .test_failover import Writer


async def longest_pause(writer: Writer, stop: asyncio.Event) -> float:
    """Write until `stop`; the longest time between two acknowledgements meanwhile."""
    loop = asyncio.get_running_loop()
    last, longest = loop.time(), 0.0
    while not stop.is_set():
        await writer.append()
        now = loop.time()
        longest, last = max(longest, now - last), now
    return longest


async def restart(cluster: LocalCluster, writer: Writer, i: int, sig: int) -> float:
    stop = asyncio.Event()
    pauses = asyncio.create_task(longest_pause(writer, stop))
    await asyncio.sleep(0.2)  # writes in flight when the signal lands
    await cluster.kill(i, sig)
    await wait_leader(cluster)
    await asyncio.sleep(0.2)
    stop.set()
    pause = await pauses
    cluster.start(i)
    await caught_up(cluster, timeout=15.0)
    return pause


async def test_a_rolling_restart_loses_no_write(cluster: LocalCluster) -> None:
    async with kv_client(cluster, deadline=10.0) as client:
        writer = Writer(client)
        await writer.run(30)
        pauses = []  # (node, led when stopped, longest pause)
        for i in range(cluster.spec.n):
            led = await wait_leader(cluster) == i
            pauses.append((i, led, await restart(cluster, writer, i, signal.SIGTERM)))
        leader = await wait_leader(cluster)
        pauses.append((leader, True, await restart(cluster, writer, leader, signal.SIGTERM)))
        crash = await restart(cluster, writer, await wait_leader(cluster), signal.SIGKILL)
        final = await caught_up(cluster, timeout=15.0)
        values = {key: await client.get(key) for key in writer.expected}

    print(
        "longest write pause per SIGTERM: "
        + ", ".join(f"S{i}{' (leader)' if led else ''} {p * 1000:.0f} ms" for i, led, p in pauses)
        + f"; SIGKILL of the leader: {crash * 1000:.0f} ms"
    )
    assert writer.wrong == []
    assert values == writer.expected
    assert sum((v or "").count(",") for v in values.values()) == len(writer.acks)
    assert len({(s["applied_index"], s["digest"]) for s in final}) == 1
