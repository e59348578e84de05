"""Raft.on_log_changed: a peer that does not lead hears of every change to its log.

Node relies on it to fail a deposed leader's proposals whose entries are gone
(tests/cluster/test_node_memory.py covers that end); here, the hook itself: it
is quiet while the peer leads, and it fires when a new leader's snapshot
drops entries the old leader had appended.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from raftio.raft import Raft
from raftio.testing import run
from raftio.transport.memory import Network

from .memory_cluster import leader_of, three_peers


def cut_off(net: Network, peer: int, cut: bool) -> None:
    for i in range(3):
        for j in range(3):
            if peer in (i, j) and i != j:
                net.enable((i, j), not cut)


async def until(check: Callable[[], bool], limit: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not check():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def snapshot_drops_stranded_entries(seed: int) -> tuple[list[tuple[bool, int, int]], int]:
    """(is_leader, snapshot_index, last_index) at each call of the old leader's watcher,
    and the index of the new leader's snapshot."""
    async with three_peers(seed) as (net, rafts):
        await until(lambda: any(r.get_state()[1] for r in rafts))
        old = rafts[leader_of(rafts)]
        index, _, _ = old.start("before")
        await until(lambda: all(r.status().commit_index >= index for r in rafts))
        calls: list[tuple[bool, int, int]] = []
        log = old.view.log
        old.on_log_changed(
            lambda: calls.append((old.get_state()[1], log.snapshot_index, log.last_index))
        )

        cut_off(net, old.me, True)
        stranded = [old.start(f"stranded {k}")[0] for k in range(3)]
        await asyncio.sleep(0.05)  # the leader persists them: no call while it leads
        assert calls == []
        others = [r for r in rafts if r is not old]
        await until(lambda: any(r.get_state()[1] for r in others))
        new: Raft = next(r for r in others if r.get_state()[1])
        last = 0
        for k in range(3):
            last, _, _ = new.start(f"new {k}")
        await until(lambda: all(r.status().commit_index >= last for r in others))
        # Compact below the old leader's last stranded entry, so that it cannot keep it.
        through = stranded[1]
        new.snapshot(through, b"state through %d" % through)
        assert new.view.log.snapshot_index == through

        cut_off(net, old.me, False)
        await until(lambda: old.view.log.snapshot_index == through)
        await until(lambda: old.status().commit_index >= last)
        return calls, through


def test_a_snapshot_that_drops_a_deposed_leaders_entries_is_reported(seed: int) -> None:
    calls, through = run(snapshot_drops_stranded_entries(seed), "virtual")

    assert calls, "the old leader's log changed without a call"
    assert all(not leading for leading, _, _ in calls)
    # One call saw the snapshot in place and nothing after it: the stranded entry is gone.
    assert (False, through, through) in calls
