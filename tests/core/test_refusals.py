"""Peer input no honest peer sends is refused by the core: no answer, no state change.

Each refusal is counted by reason (`RaftCore.refused`, exported as
`raftio_refused_total{reason=...}`); nothing reaches the log, the hard state
or the outbox, and no assert or overflow is reachable.
"""

from __future__ import annotations

import pytest

from raftio.core import Role
from raftio.messages import (
    AppendEntriesArgs,
    AppendEntriesReply,
    Entry,
    InstallSnapshotArgs,
    RequestVoteArgs,
    RequestVoteReply,
)
from raftio.validate import MAX_INDEX, MAX_TERM, MAX_TERM_JUMP

from .helpers import (
    EXTENDED,
    ae,
    campaign,
    drain,
    entries,
    entry,
    install,
    make_core,
    make_leader,
    requests,
)

LOG = [1, 1, 2, 3, 3]
BIG = [2**63 - 1, 2**63, 2**64 - 1, MAX_TERM + 1]


def unchanged(core: object, handle: object, args: object, reason: str) -> None:
    from raftio.core import RaftCore

    assert isinstance(core, RaftCore)
    before = (core.current_term, core.voted_for, core.log.last_index, core.commit_index)
    assert handle(args) is None  # type: ignore[operator]
    assert (core.current_term, core.voted_for, core.log.last_index, core.commit_index) == before
    assert drain(core) == ([], [])
    assert core.refused == {reason: 1}


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        *[(RequestVoteArgs(t, 1, 5, 3), "term_range") for t in BIG],
        (RequestVoteArgs(3 + MAX_TERM_JUMP + 1, 1, 5, 3), "term_jump"),
        (RequestVoteArgs(4, 0, 5, 3), "sender"),  # "from" ourselves
        (RequestVoteArgs(4, -1, 5, 3), "sender"),  # no such id
        (RequestVoteArgs(4, 1 << 31, 5, 3), "sender"),  # past the largest id
        (RequestVoteArgs(4, 1, 5, 5), "position"),  # a log term past its own term
        (RequestVoteArgs(4, 1, 0, 1), "position"),  # index 0 has term 0
        (RequestVoteArgs(4, 1, 5, 0), "position"),  # an entry of term 0
        (RequestVoteArgs(4, 1, MAX_INDEX + 1, 3), "index_range"),
    ],
)
def test_impossible_vote_requests(args: RequestVoteArgs, reason: str) -> None:
    core = make_core(LOG, term=3)
    unchanged(core, core.handle_request_vote, args, reason)


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        *[(ae(t, 5, 3), "term_range") for t in BIG],
        (ae(3, 5, 3, leader=0), "sender"),
        (ae(3, 5, 4), "position"),  # prev term past the leader's term
        (ae(3, MAX_INDEX + 1, 3), "index_range"),
        (ae(3, 5, 3, commit=MAX_INDEX + 1), "index_range"),
        (ae(3, 5, 3, entries(6, 2)), "entry_term"),  # below prev's term
        (ae(3, 5, 3, entries(6, 4)), "entry_term"),  # past the leader's term
        (ae(3, 4, 3, entries(5, 3, 3, 0)), "entry_term"),
        (ae(3, 2, 1, [entry(3, 3), entry(4, 2)]), "entry_term"),  # decreasing
        (ae(3, MAX_INDEX - 1, 3, entries(MAX_INDEX, 3, 3)), "index_range"),
    ],
)
def test_impossible_append_entries(args: AppendEntriesArgs, reason: str) -> None:
    core = make_core(LOG, term=3)
    unchanged(core, core.handle_append_entries, args, reason)


def test_a_conflict_at_or_below_the_commit_index_is_refused_not_asserted() -> None:
    core = make_core(LOG, term=3)
    assert core.handle_append_entries(ae(3, 5, 3, commit=4)) is not None
    drain(core)
    assert core.commit_index == 4
    # prev=4 claims term 2 where our committed entry has term 3 ...
    unchanged(core, core.handle_append_entries, ae(3, 4, 2), "committed_conflict")
    core.refused.clear()
    # ... and an entry of another term over our committed index 3.
    unchanged(core, core.handle_append_entries, ae(3, 2, 1, entries(3, 3)), "committed_conflict")


def test_a_second_entry_for_the_same_index_and_term_is_refused() -> None:
    core = make_core(LOG, term=3)
    forged = Entry(3, b"\xa6forged")
    unchanged(core, core.handle_append_entries, ae(3, 4, 3, [forged]), "entry_forked")


def test_a_second_leader_in_our_term_is_refused() -> None:
    core = make_core(LOG, term=3)
    assert core.handle_append_entries(ae(3, 5, 3, leader=1)) is not None
    drain(core)
    unchanged(core, core.handle_append_entries, ae(3, 5, 3, leader=2), "second_leader")


def test_a_leader_refuses_append_entries_of_its_own_term() -> None:
    core = make_leader(LOG, term=4)
    drain(core)
    unchanged(core, core.handle_append_entries, ae(4, 5, 3, leader=1), "second_leader")


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (InstallSnapshotArgs(2**64 - 1, 1, 9, 3, b"x"), "term_range"),
        (InstallSnapshotArgs(3, 1, 2**63, 3, b"x"), "index_range"),
        (InstallSnapshotArgs(3, 1, 9, 4, b"x"), "position"),
        (InstallSnapshotArgs(3, 1, 0, 0, b"x"), "position"),
        (InstallSnapshotArgs(3, 0, 9, 3, b"x"), "sender"),
    ],
)
def test_impossible_snapshots(args: InstallSnapshotArgs, reason: str) -> None:
    core = make_core(LOG, term=3)
    unchanged(core, core.handle_install_snapshot, args, reason)


@pytest.mark.parametrize("hears_leader", [True, False])
def test_one_request_cannot_push_a_node_far_ahead(hears_leader: bool) -> None:
    """Whether or not it hears a leader: a single frame moves a term at most MAX_TERM_JUMP."""
    far = 3 + MAX_TERM_JUMP + 1
    core = make_core(LOG, term=3)
    if hears_leader:
        assert core.handle_append_entries(ae(3, 5, 3)) is not None
        drain(core)
    unchanged(core, core.handle_append_entries, ae(far, 5, 3), "term_jump")
    assert core.handle_append_entries(ae(far - 1, 5, 3)) is not None
    assert core.current_term == far - 1


def test_a_leader_follows_a_node_pushed_far_ahead_from_its_reply() -> None:
    """Replies come from the peer we called: its term, however far ahead, is adopted."""
    far = 4 + 5 * MAX_TERM_JUMP
    core = make_leader(LOG, term=4)
    sent = core.heartbeat_args(1)
    core.on_append_entries_reply(1, sent, AppendEntriesReply(far, False))
    assert core.role is Role.FOLLOWER
    assert core.current_term == far
    assert core.refused == {}


def test_a_node_left_behind_follows_the_cluster_from_a_vote_reply() -> None:
    far = 3 + 5 * MAX_TERM_JUMP
    core = make_core(LOG, term=3, config=EXTENDED)
    request, *_ = requests(campaign(core))
    assert isinstance(request, RequestVoteArgs)
    assert request.pre_vote
    core.on_request_vote_reply(1, request, RequestVoteReply(far, False))
    assert core.role is Role.FOLLOWER
    assert core.current_term == far
    # and its leader's next heartbeat is within reach
    assert core.handle_append_entries(ae(far, 5, 3)) is not None


def test_a_snapshot_past_the_commit_index_its_leader_announced_is_refused() -> None:
    """A captured snapshot with its index raised would let its receiver win elections."""
    core = make_core(LOG, term=3)
    assert core.handle_append_entries(ae(3, 5, 3, commit=7)) is not None
    drain(core)
    unchanged(
        core, core.handle_install_snapshot, InstallSnapshotArgs(3, 1, 8, 3, b"x"), "snapshot_ahead"
    )
    assert install(core, InstallSnapshotArgs(3, 1, 7, 3, b"x")) is not None
    assert (core.log.snapshot_index, core.commit_index) == (7, 7)


def test_a_snapshot_from_a_leader_that_announced_nothing_yet_is_refused() -> None:
    """Its leader sends an AppendEntries with its commit index before any snapshot."""
    core = make_core(LOG, term=3)
    unchanged(
        core, core.handle_install_snapshot, InstallSnapshotArgs(4, 1, 6, 3, b"x"), "snapshot_ahead"
    )
    # a commit index heard from the previous term's leader does not count either
    assert core.handle_append_entries(ae(3, 5, 3, commit=9)) is not None
    core.refused.clear()
    unchanged(
        core, core.handle_install_snapshot, InstallSnapshotArgs(4, 1, 6, 3, b"x"), "snapshot_ahead"
    )


def test_a_snapshot_within_our_own_commit_index_is_answered() -> None:
    """A restarted follower has heard nothing from its leader, but knows its own commits."""
    restarted = make_core([3, 3], term=3, snapshot=(5, 3))
    assert install(restarted, InstallSnapshotArgs(3, 1, 5, 3, b"x")) is not None
    assert restarted.refused == {}


def test_a_success_reply_claiming_more_than_was_sent_is_ignored() -> None:
    """A follower's answer about a snapshot the leader never had trips nothing."""
    core = make_leader(LOG, term=4)
    drain(core)
    sent = AppendEntriesArgs(4, 0, 5, 3, [], core.commit_index)
    for match in (6, 2**63, 4):
        core.on_append_entries_reply(1, sent, AppendEntriesReply(4, True, match))
    assert core.progress[1].match_index == 0
    assert core.refused == {"match_index": 3}
    core.heartbeat_args(1)  # still anchored inside the log
    core.tick()


def test_replies_with_absurd_terms_do_not_depose_the_leader() -> None:
    core = make_leader(LOG, term=4)
    drain(core)
    rv = RequestVoteArgs(4, 0, 5, 3)
    core.on_request_vote_reply(1, rv, RequestVoteReply(2**64 - 1, False))
    sent = AppendEntriesArgs(4, 0, 5, 3, [], 0)
    core.on_append_entries_reply(1, sent, AppendEntriesReply(2**63, False))
    assert core.is_leader
    assert core.current_term == 4
