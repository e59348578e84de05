"""Public inspection: a tracer given to make(), a read-only view of the core, live task names.

The simulator, the invariant checker and the fuzzers use these instead of
reaching into `raft._core`, `raft._trace` or `raft._tasks`.
"""

from __future__ import annotations

import asyncio

import pytest

from raftio.core import Role
from raftio.testing import run

from .memory_cluster import Tracer, leader_of, three_peers


def recorders(events: list[list[tuple[str, str]]]) -> list[Tracer | None]:
    return [lambda topic, text, peer=peer: peer.append((topic, text)) for peer in events]


def test_a_tracer_given_to_make_sees_every_protocol_event(seed: int) -> None:
    print(f"seed={seed} (rerun with --seed {seed})")
    events: list[list[tuple[str, str]]] = [[], [], []]

    async def main() -> None:
        async with three_peers(seed, tracers=recorders(events)) as (_, rafts):
            await asyncio.sleep(2.0)
            rafts[leader_of(rafts)].start("x")
            await asyncio.sleep(0.5)

    run(main(), "virtual")
    topics = {topic for peer in events for topic, _ in peer}
    # ("storage" is traced only when a sync is deferred; MemoryStorage's are not.)
    assert {"role", "vote", "send", "recv", "apply"} <= topics
    assert any(text.startswith("became leader") for peer in events for _, text in peer)


def test_the_view_follows_the_core_and_cannot_change_it(seed: int) -> None:
    events: list[list[tuple[str, str]]] = [[], [], []]

    async def main() -> None:
        async with three_peers(seed, tracers=recorders(events)) as (_, rafts):
            await asyncio.sleep(2.0)
            leader = rafts[leader_of(rafts)]
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

    run(main(), "virtual")
