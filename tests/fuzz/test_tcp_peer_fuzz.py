"""Mutated peer frames over real TCP into Nodes on 127.0.0.1 with FileStorage (no secret).

A bounded run in the default suite (about 15 s), a million frames as a slow
run. The checks are the in-memory campaign's (tests/fuzz/test_peer_fuzz.py).
"""

from __future__ import annotations

import pytest

from raftio.testing.mutate.peer import PeerParams
from raftio.testing.mutate.tcp import run_tcp_campaign


def campaign(seed: int, frames: int) -> None:
    replay = f"python -m raftio.testing.mutate tcp --seed {seed} --frames {frames}"
    print(f"seed={seed} (rerun with --seed {seed}, or: {replay})")
    outcome = run_tcp_campaign(PeerParams(seed=seed, frames=frames))
    print("\n".join(outcome.lines()))

    assert outcome.injected == frames
    assert outcome.answered > frames // 20  # frames got past the transport to the Raft layer
    assert outcome.writes_acked > 500
    assert outcome.problems() == []


def test_three_thousand_mutated_peer_frames_over_tcp(seed: int) -> None:
    campaign(seed, 3000)


@pytest.mark.slow
@pytest.mark.timeout(4 * 3600)
def test_a_million_mutated_peer_frames_over_tcp(seed: int) -> None:
    campaign(seed, 1_000_000)
