"""A leader whose event loop is too busy to run its ticker on time keeps its heartbeats' pace.

With lease reads, thousands of readers keep a leader's loop busy without
sending a single AppendEntries: if its heartbeats were counted in ticker
runs, a loop iteration of 30 ms would space them 300 ms apart and its idle
followers would elect another leader (seen in the benchmark's lease-read
series at C=4096 end to end). On the virtual clock, each iteration of a
"busy" task moves the loop's time on by `BUSY` seconds.
"""

from __future__ import annotations

import asyncio

from raftio.config import RaftConfig
from raftio.testing import VirtualClockEventLoop, run

from .memory_cluster import Tracer, leader_of, three_peers

BUSY = 0.03  # seconds of loop time each iteration of the busy task takes
WINDOW = 3.0


def sends_of(log: list[str]) -> Tracer:
    return lambda topic, text: log.append(text) if topic == "send" else None


async def heartbeats_while_busy(seed: int, busy: float) -> tuple[int, bool]:
    logs: list[list[str]] = [[] for _ in range(3)]
    async with three_peers(seed, tracers=[sends_of(log) for log in logs]) as (_, rafts):
        await asyncio.sleep(3.0)
        me = leader_of(rafts)
        term = rafts[me].get_state()[0]
        before = len(logs[me])
        loop = asyncio.get_running_loop()
        assert isinstance(loop, VirtualClockEventLoop)
        end = loop.time() + WINDOW
        while loop.time() < end:
            loop.advance(busy)
            await asyncio.sleep(0)
        sent = len(logs[me]) - before
        return sent, rafts[me].get_state() == (term, True)


def test_a_busy_leader_sends_heartbeats_at_the_pace_of_its_clock(seed: int) -> None:
    print(f"seed {seed}")
    expected = 2 * WINDOW / RaftConfig().heartbeat_interval  # two followers

    idle, _ = run(heartbeats_while_busy(seed, 0.0005), "virtual")
    busy, still_leader = run(heartbeats_while_busy(seed, BUSY), "virtual")

    assert idle >= 0.8 * expected
    # Ticker runs every 30 ms: counted as runs, ten of them per heartbeat
    # would send a third of these.
    assert busy >= 0.8 * expected
    assert still_leader
