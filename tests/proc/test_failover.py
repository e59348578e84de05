"""Three `raftio node` processes lose their leader to SIGKILL with writes in flight.

Writes resume within 5 s (CONTRACT.md section 5), every acknowledged write
is there exactly once, and the restarted node catches up to the same state.
"""

from __future__ import annotations

import asyncio
import random
import signal

from raftio.kv import KVClient
from raftio.kv.local import LocalCluster

from .conftest import caught_up, kv_client, wait_leader


class Writer:
    """Appends with one client, checking every answer against the acknowledged history."""

    def __init__(self, client: KVClient) -> None:
        self.client = client
        self.expected: dict[str, str] = {}
        self.wrong: list[str] = []  # answers that contradict the acknowledged history
        self.acks: list[tuple[float, str | None]] = []  # (loop time, node that answered)
        self.milestone, self.reached = 0, asyncio.Event()  # set once milestone writes are acked

    async def append(self) -> None:
        n = len(self.acks)
        key, piece = f"k{n % 7}", f"{n},"
        value = await self.client.append(key, piece)
        self.expected[key] = self.expected.get(key, "") + piece
        if value != self.expected[key]:
            self.wrong.append(f"write {n}: {key} answered {value!r}")
        self.acks.append((asyncio.get_running_loop().time(), self.client.leader))
        if len(self.acks) == self.milestone:
            self.reached.set()

    async def run(self, count: int) -> None:
        for _ in range(count):
            await self.append()


async def test_sigkill_leader_writes_resume_and_none_is_lost(
    cluster: LocalCluster, seed: int
) -> None:
    rng = random.Random(seed)
    print(f"seed={seed} (rerun with --seed {seed})")
    addresses = cluster.spec.client_peers
    victim = await wait_leader(cluster)
    loop = asyncio.get_running_loop()
    async with kv_client(cluster, deadline=10.0) as client:
        writer = Writer(client)
        await writer.run(60)

        # SIGKILL the leader while the writer keeps writing.
        early = rng.randint(1, 50)
        writer.milestone = len(writer.acks) + early
        background = asyncio.create_task(writer.run(early + 150))
        await writer.reached.wait()
        cluster.procs[victim].send_signal(signal.SIGKILL)
        killed_at = loop.time()
        await cluster.kill(victim)
        await background
        resumed_at = next(
            t for t, node in writer.acks if t > killed_at and node != addresses[victim]
        )

        cluster.start(victim)
        final = await caught_up(cluster, timeout=15.0)
        values = {key: await client.get(key) for key in writer.expected}

    print(f"writes resumed {resumed_at - killed_at:.3f} s after the SIGKILL")
    assert resumed_at - killed_at < 5.0
    assert writer.wrong == []
    assert values == writer.expected
    assert sum((v or "").count(",") for v in values.values()) == len(writer.acks)
    assert len({(s["applied_index"], s["digest"]) for s in final}) == 1
    assert {s["node_id"] for s in final} == {0, 1, 2}
    assert all(s["snapshot_index"] > 0 for s in final)  # the logs were compacted on the way
