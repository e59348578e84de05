"""Public inspection: a tracer given to make(), a read-only view of the core, live task names.

The simulator, the invariant checker and the fuzzers use these instead of
reaching into `raft._core`, `raft._trace` or `raft._tasks`.
"""

from __future__ import annotations

import asyncio
import random

import pytest

import raftio
from raftio.core import Role
from raftio.testing import run
from raftio.transport.memory import Network


async def three_peers(
    seed: int, tracers: list[list[tuple[str, str]]]
) -> tuple[Network, list[raftio.Raft]]:
    net, rng, rafts = Network(seed), random.Random(seed), []
    for i in range(3):
        ends = []
        for j in range(3):
            ends.append(net.make_end((i, j)))
            net.connect((i, j), j)
            net.enable((i, j), True)
        events = tracers[i]
        raft = raftio.make(
            ends,
            i,
            raftio.MemoryStorage(),
            asyncio.Queue(),
            rng=random.Random(rng.random()),
            tracer=lambda topic, text, events=events: events.append((topic, text)),
        )
        net.add_server(i, raft)
        rafts.append(raft)
    return net, rafts


def test_a_tracer_given_to_make_sees_every_protocol_event(seed: int) -> None:
    print(f"seed={seed} (rerun with --seed {seed})")
    events: list[list[tuple[str, str]]] = [[], [], []]

    async def main() -> None:
        net, rafts = await three_peers(seed, events)
        await asyncio.sleep(2.0)
        leader = next(r for r in rafts if r.get_state()[1])
        leader.start("x")
        await asyncio.sleep(0.5)
        for raft in rafts:
            raft.kill()
        net.cleanup()

    run(main(), "virtual")
    topics = {topic for peer in events for topic, _ in peer}
    # ("storage" is traced only when a sync is deferred; MemoryStorage's are not.)
    assert {"role", "vote", "send", "recv", "apply"} <= topics
    assert any(text.startswith("became leader") for peer in events for _, text in peer)


def test_the_view_follows_the_core_and_cannot_change_it(seed: int) -> None:
    events: list[list[tuple[str, str]]] = [[], [], []]

    async def main() -> None:
        net, rafts = await three_peers(seed, events)
        await asyncio.sleep(2.0)
        leader = next(r for r in rafts if r.get_state()[1])
        index, term, _ = leader.start("x")
        await asyncio.sleep(0.5)
        view = leader.view
        assert (view.role, view.current_term, view.leader_id) == (Role.LEADER, term, leader.me)
        assert view.commit_index == view.log.last_index == index
        assert view.log.term_at(index) == term
        assert dict(view.match_index) == {p: index for p in range(3) if p != leader.me}
        with pytest.raises(AttributeError):
            view.current_term = 99  # type: ignore[misc]
        with pytest.raises(AttributeError):
            view.log.last_index = 0  # type: ignore[misc]
        assert leader.get_state()[0] == term
        names = leader.running_tasks()
        assert {f"S{leader.me}-ticker", f"S{leader.me}-applier"} <= set(names)
        for raft in rafts:
            raft.kill()
        await asyncio.sleep(0)  # the cancelled tasks finish
        assert leader.running_tasks() == []
        net.cleanup()

    run(main(), "virtual")
