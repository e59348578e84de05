"""Mutated KV-protocol frames at the real client ports of a 3-node cluster.

Each mutant goes on its own connection after its origin's earlier frames
(handshake, registration); real clients keep writing meanwhile. Afterwards
nothing raised, a fresh client can write and every acknowledged write
reads back unchanged; the replicas agree.
"""

from __future__ import annotations

from raftio.testing.mutate.kv import KVParams, run_kv_campaign


def test_two_thousand_mutated_kv_frames(seed: int) -> None:
    print(f"seed={seed} (rerun with --seed {seed})")

    outcome = run_kv_campaign(KVParams(seed=seed, frames=2000))

    print("\n".join(outcome.lines()))
    assert outcome.injected == 2000
    assert outcome.corpus > 50
    assert outcome.answered > 500  # most mutants were served, not just dropped
    assert outcome.writes_acked > 100
    assert outcome.problems() == []
