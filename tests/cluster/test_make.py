"""raftio.make() with a callable apply sink, and Raft's start_call fast path.

A 3-peer cluster on the in-memory network, on the loop chosen by --loop.
"""

from __future__ import annotations

import asyncio
import random
import threading
from typing import Any

import pytest

import raftio
from raftio.testing import LoopKind, run
from raftio.transport.memory import MemoryClientEnd, Network


class Sink:
    """A callable apply_ch: records every batch, and where it was called."""

    def __init__(self) -> None:
        self.batches: list[list[raftio.ApplyMsg]] = []
        self.threads: set[int] = set()
        self.outside_loop = 0
        self.more = asyncio.Event()

    def __call__(self, batch: list[raftio.ApplyMsg]) -> None:
        self.threads.add(threading.get_ident())
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            self.outside_loop += 1
        self.batches.append(batch)
        self.more.set()

    def messages(self) -> list[raftio.ApplyMsg]:
        return [msg for batch in self.batches for msg in batch]


class StartingEnd:
    """A memory end that also offers start_call; counts which of the two Raft used."""

    def __init__(self, end: MemoryClientEnd, cancel: bool = False) -> None:
        self.end, self.cancel = end, cancel
        self.calls = self.started = 0

    async def call(self, method: str, args: Any) -> Any:
        self.calls += 1
        return await self.end.call(method, args)

    def start_call(self, method: str, args: Any) -> asyncio.Future[Any]:
        self.started += 1
        if self.cancel:  # as if the transport gave up on the call
            future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            future.cancel()
            return future
        return asyncio.ensure_future(self.end.call(method, args))


def start_cluster(
    seed: int, sinks: list[Sink], wrap: Any = None, config: raftio.RaftConfig | None = None
) -> tuple[Network, list[raftio.Raft], list[list[Any]]]:
    net = Network(seed)
    rng = random.Random(seed)
    rafts, all_ends = [], []
    for i, sink in enumerate(sinks):
        ends: list[Any] = []
        for j in range(len(sinks)):
            name = (i, j)
            end = net.make_end(name)
            net.connect(name, j)
            net.enable(name, True)
            ends.append(end if wrap is None else wrap(i, j, end))
        storage = raftio.MemoryStorage()
        raft = raftio.make(ends, i, storage, sink, config, rng=random.Random(rng.random()))
        net.add_server(i, raft)
        rafts.append(raft)
        all_ends.append(ends)
    return net, rafts, all_ends


async def leader_of(rafts: list[raftio.Raft], among: range | None = None) -> raftio.Raft:
    for _ in range(100):
        for i, raft in enumerate(rafts):
            if (among is None or i in among) and raft.get_state()[1]:
                return raft
        await asyncio.sleep(0.1)
    raise AssertionError("no leader within 10 s")


async def propose_and_wait(sinks: list[Sink], leader: raftio.Raft, n: int) -> dict[int, Any]:
    """Propose n commands (one alone, then bursts); wait until every sink has them."""
    proposed: dict[int, Any] = {}
    for burst in (1, n // 2 - 1, n - n // 2):
        for _ in range(burst):
            command = ("add", len(proposed))
            index, _, is_leader = leader.start(command)
            assert is_leader
            proposed[index] = command
        await asyncio.sleep(0)
    last = max(proposed)
    async with asyncio.timeout(30):
        for sink in sinks:
            while not sink.messages() or sink.messages()[-1].command_index < last:
                sink.more.clear()
                await sink.more.wait()
    return proposed


def test_callable_sinks_get_every_committed_command_in_order(
    loop_kind: LoopKind, seed: int
) -> None:
    async def main() -> tuple[list[Sink], dict[int, Any], int]:
        sinks = [Sink(), Sink(), Sink()]
        net, rafts, _ = start_cluster(seed, sinks, config=raftio.RaftConfig(max_apply_batch=7))
        try:
            leader = await leader_of(rafts)
            proposed = await propose_and_wait(sinks, leader, 60)
        finally:
            for raft in rafts:
                raft.kill()
            net.cleanup()
        return sinks, proposed, threading.get_ident()

    print(f"seed={seed} (rerun with --seed {seed} --loop {loop_kind})")
    sinks, proposed, loop_thread = run(main(), loop_kind)

    for sink in sinks:
        assert sink.threads == {loop_thread}
        assert sink.outside_loop == 0
        assert all(isinstance(batch, list) and batch for batch in sink.batches)
        messages = sink.messages()
        assert all(msg.command_valid for msg in messages)
        indices = [msg.command_index for msg in messages]
        assert indices == list(range(1, len(indices) + 1))  # in order, no gaps, no repeats
        assert {msg.command_index: msg.command for msg in messages} == proposed
    # The bursts committed together and came in several batches of at most max_apply_batch.
    assert any(len(batch) > 1 for sink in sinks for batch in sink.batches)
    assert all(len(batch) <= 7 for sink in sinks for batch in sink.batches)


def test_make_refuses_an_apply_ch_that_is_neither_queue_nor_callable() -> None:
    async def main() -> None:
        net = Network(1)
        ends = [net.make_end((0, j)) for j in range(3)]
        for bad in (42, None, [], "apply"):
            with pytest.raises(
                TypeError, match=r"apply_ch must be an asyncio\.Queue or a callable"
            ):
                raftio.make(ends, 0, raftio.MemoryStorage(), bad)  # type: ignore[arg-type]
        net.cleanup()

    run(main(), "virtual")


def test_raft_sends_through_start_call_when_the_end_has_it(loop_kind: LoopKind, seed: int) -> None:
    async def main() -> tuple[list[list[Any]], list[Sink], dict[int, Any], list[Any]]:
        loop_errors: list[Any] = []
        asyncio.get_running_loop().set_exception_handler(lambda _, ctx: loop_errors.append(ctx))
        sinks = [Sink(), Sink(), Sink()]
        # Peer 2 is unreachable in a way only start_call can report: its future is cancelled.
        net, rafts, ends = start_cluster(
            seed, sinks, wrap=lambda i, j, end: StartingEnd(end, cancel=2 in (i, j) and i != j)
        )
        try:
            leader = await leader_of(rafts, among=range(2))
            proposed = await propose_and_wait(sinks[:2], leader, 30)
        finally:
            for raft in rafts:
                raft.kill()
            net.cleanup()
        return ends, sinks, proposed, loop_errors

    print(f"seed={seed} (rerun with --seed {seed} --loop {loop_kind})")
    ends, sinks, proposed, loop_errors = run(main(), loop_kind)

    assert loop_errors == []  # a cancelled future is a failed call, not an error
    assert sum(end.calls for peer in ends for end in peer) == 0
    assert sum(end.started for peer in ends for end in peer) > 0
    assert sum(end.started for end in ends[0] + ends[1] if end.cancel) > 0
    for sink in sinks[:2]:
        assert {m.command_index: m.command for m in sink.messages()} == proposed
    assert sinks[2].messages() == []
