"""Mutated peer-protocol frames against a live 3-node cluster: nothing committed is lost.

The default run injects 10,000 mutants of captured frames (no secret: the
Raft layer is reached) on the virtual clock; the slow run a million. After
either: no task died, no node is a zombie or fail-stopped, every
acknowledged write reads back unchanged on every node, the replicas agree,
a leader exists within 5 s, and all of it again after a full restart.
"""

from __future__ import annotations

import pytest

from raftio.testing.mutate.peer import PeerParams, run_peer_campaign


def campaign(seed: int, frames: int) -> None:
    replay = f"python -m raftio.testing.mutate peer --seed {seed} --frames {frames} --bisect"
    print(f"seed={seed} (rerun with --seed {seed}, or: {replay})")
    outcome = run_peer_campaign(PeerParams(seed=seed, frames=frames))
    print("\n".join(outcome.lines()))

    assert outcome.injected == frames
    assert outcome.answered > frames // 20  # many frames got past the codec to the Raft layer
    assert outcome.writes_acked > 1000
    assert outcome.problems() == []


def test_ten_thousand_mutated_peer_frames(seed: int) -> None:
    campaign(seed, 10_000)


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_a_million_mutated_peer_frames(seed: int) -> None:
    campaign(seed, 1_000_000)
