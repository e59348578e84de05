"""The peer campaign's harness itself: it replays, and its checks can fail."""

from __future__ import annotations

from raftio.testing.mutate.peer import PeerParams, Register, run_peer_campaign


class BrokenSnapshots(Register):
    """Takes snapshots it cannot restore: an installed snapshot kills the node's applier."""

    def snapshot(self) -> bytes:
        return b"\xc1 not a snapshot"


def test_a_campaign_replays_exactly(seed: int) -> None:
    print(f"seed={seed} (rerun with --seed {seed})")
    params = PeerParams(seed=seed, frames=300)

    first, again = run_peer_campaign(params), run_peer_campaign(params)

    assert first.injected == again.injected == 300
    figures = ("corpus", "codec_refused", "answered", "unanswered", "writes_acked", "found")
    assert [getattr(first, f) for f in figures] == [getattr(again, f) for f in figures]
    assert first.virtual_seconds == again.virtual_seconds


def test_one_mutant_can_be_replayed_alone(seed: int) -> None:
    print(f"seed={seed} (rerun with --seed {seed})")

    outcome = run_peer_campaign(PeerParams(seed=seed, frames=10_000, only=4242))

    assert outcome.injected == 1
    assert outcome.corpus > 100


def test_the_checks_catch_a_node_that_cannot_install_a_snapshot(seed: int) -> None:
    print(f"seed={seed} (rerun with --seed {seed})")

    # The capture phase already sends the restarted laggard a snapshot.
    outcome = run_peer_campaign(PeerParams(seed=seed, frames=50, machine=BrokenSnapshots))

    print("\n".join(outcome.lines()))
    assert outcome.problems() != []
