"""Followers learn of a commit at once, not at the next heartbeat.

A leader tells idle followers each advance of its commit index a moment
later (raft.COMMIT_BROADCAST_DELAY, 1 ms: one empty AppendEntries per
follower, coalesced), so a service that waits for every replica to apply
pays about one round trip, not one heartbeat interval (about 100 ms) per
command. When the next command comes sooner, its AppendEntries carries the
commit index instead, and the empty one is never sent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import raftio
from raftio.testing import run

from .memory_cluster import Tracer, leader_of, three_peers

N_COMMANDS = 50


class Applied:
    """A callable apply sink that remembers the last index applied."""

    def __init__(self) -> None:
        self.last = 0
        self.changed = asyncio.Event()

    def __call__(self, batch: list[raftio.ApplyMsg]) -> None:
        self.last = batch[-1].command_index
        self.changed.set()

    async def reach(self, index: int) -> None:
        while self.last < index:
            self.changed.clear()
            await self.changed.wait()


async def sequential_commands(seed: int, *, wait_for_all: bool) -> tuple[float, int]:
    """Virtual seconds and RPCs for N_COMMANDS commands, each applied before the next
    on all 3 (`wait_for_all`) or on the leader only; then every peer applies the last."""
    sinks = [Applied() for _ in range(3)]
    async with three_peers(seed, apply_chs=sinks) as (net, rafts):
        await asyncio.sleep(3.0)  # elect a leader, and get past the election's own traffic
        me = leader_of(rafts)
        loop = asyncio.get_running_loop()
        rpcs_before, started = net.total_count(), loop.time()
        for n in range(N_COMMANDS):
            index, _, is_leader = rafts[me].start(n)
            assert is_leader
            waiting = sinks if wait_for_all else [sinks[me]]
            async with asyncio.timeout(10):
                await asyncio.gather(*(sink.reach(index) for sink in waiting))
        async with asyncio.timeout(0.05):  # the last commit reaches followers without a heartbeat
            await asyncio.gather(*(sink.reach(index) for sink in sinks))
        return loop.time() - started, net.total_count() - rpcs_before


def test_sequential_commands_reach_every_follower_without_waiting_for_heartbeats(
    seed: int,
) -> None:
    print(f"seed={seed} (rerun with --seed {seed})")
    elapsed, rpcs = run(sequential_commands(seed, wait_for_all=True), "virtual")

    # One heartbeat interval per command would be 5 s; a round trip or two is ~0.
    assert elapsed < 0.5, f"{N_COMMANDS} commands took {elapsed:.2f} virtual seconds"
    # Per command and follower: the entries, then the commit (no more than that),
    # plus the heartbeats of the elapsed time.
    assert rpcs <= N_COMMANDS * 2 * 2 + 2 * 10, rpcs


def test_a_stream_of_single_commands_sends_one_append_per_follower_per_command(
    seed: int,
) -> None:
    print(f"seed={seed} (rerun with --seed {seed})")
    elapsed, rpcs = run(sequential_commands(seed, wait_for_all=False), "virtual")

    assert elapsed < 0.5, f"{N_COMMANDS} commands took {elapsed:.2f} virtual seconds"
    # The next command's AppendEntries carries each commit: one per command and
    # follower, plus the last commit's own and the heartbeats of the elapsed time.
    assert rpcs <= N_COMMANDS * 2 + 2 + 2 * 10, rpcs


class OrderedStorage(raftio.MemoryStorage):
    """MemoryStorage that notes each append in a log shared with the tracer."""

    def __init__(self, events: list[str]) -> None:
        super().__init__()
        self.events = events

    def append_entries(self, first_index: int, entries: Sequence[raftio.Entry]) -> None:
        self.events.append(f"write {first_index}+{len(entries)}")
        super().append_entries(first_index, entries)


async def leader_events_for_one_command(seed: int) -> tuple[int, list[str]]:
    """The leader's sends and storage writes around one command: (its index, events)."""
    logs: list[list[str]] = [[] for _ in range(3)]

    def tracer(log: list[str]) -> Tracer:
        return lambda topic, text: log.append(text) if topic == "send" else None

    async with three_peers(
        seed,
        storages=[OrderedStorage(log) for log in logs],
        apply_chs=[Applied() for _ in range(3)],
        tracers=[tracer(log) for log in logs],
    ) as (_, rafts):
        await asyncio.sleep(3.0)
        me = leader_of(rafts)
        logs[me].clear()
        index, _, _ = rafts[me].start("x")
        await asyncio.sleep(0.01)
        return index, logs[me]


def test_a_leader_sends_new_entries_before_writing_them(seed: int) -> None:
    # Its own write runs alongside its followers' anyway; sending first starts
    # theirs one local write sooner (the leader counts itself only once synced).
    print(f"seed={seed} (rerun with --seed {seed})")
    index, events = run(leader_events_for_one_command(seed), "virtual")

    write = events.index(f"write {index}+1")
    sends = [n for n, e in enumerate(events) if " AE " in e and f"prev={index - 1}@" in e]
    assert len(sends) == 2, events
    assert all(n < write for n in sends), events
