"""Leadership transfer (Raft thesis 3.10) and the vote lease it bypasses (thesis 4.2.3).

The leader stops taking proposals, catches the target up, and sends it
TimeoutNow; the target campaigns at once, without pre-vote, and its vote
requests carry `transfer` so voters grant them inside their lease. A
transfer ends on any role change and is abandoned after an election timeout.
"""

from __future__ import annotations

from raftio.core import Role
from raftio.messages import (
    AppendEntriesArgs,
    AppendEntriesReply,
    RequestVoteArgs,
    RequestVoteReply,
    TimeoutNowArgs,
    TimeoutNowReply,
)

from .helpers import (
    ELECTION_MAX,
    EXTENDED,
    ae,
    drain,
    encoded,
    make_core,
    make_leader,
    sent_to,
)


def test_a_caught_up_target_is_told_to_campaign_at_once() -> None:
    core = make_leader([1], term=2, synced=True)

    assert core.transfer_leadership(2) is None

    _, outbox = drain(core)
    assert sent_to(outbox, 2) == [TimeoutNowArgs(2, 0)]
    assert sent_to(outbox, 1) == []
    assert core.transfer_target == 2


def test_a_lagging_target_is_caught_up_first() -> None:
    core = make_leader([1], term=2, synced=True)
    core.start(encoded("x"))
    drain(core)
    core.on_log_durable(core.log.last_index, core.log.last_term)

    core.transfer_leadership(1)
    assert core.take_outbox() == []  # its entry is already in flight: no TimeoutNow yet
    args = AppendEntriesArgs(2, 0, 1, 1, [core.log.entry(2)], 1)
    core.on_append_entries_reply(1, args, AppendEntriesReply(2, True, 2))

    assert TimeoutNowArgs(2, 0) in sent_to(core.take_outbox(), 1)


def test_proposals_are_refused_during_a_transfer_and_taken_again_once_abandoned() -> None:
    core = make_leader([1], term=2, synced=True)
    core.transfer_leadership(2)
    last = core.log.last_index

    assert core.start(encoded("x")) == (last + 1, 2, False)

    for _ in range(ELECTION_MAX):
        core.tick()
    assert core.is_leader
    assert core.transfer_target is None
    assert core.start(encoded("x")) == (last + 1, 2, True)


def test_a_timeout_now_without_an_answer_abandons_the_transfer() -> None:
    core = make_leader([1], term=2, synced=True)
    core.transfer_leadership(2)
    (timeout_now,) = sent_to(core.take_outbox(), 2)
    assert isinstance(timeout_now, TimeoutNowArgs)

    core.on_timeout_now_reply(2, timeout_now, None)

    assert core.is_leader
    assert core.transfer_target is None
    assert core.start(encoded("x"))[2]


def test_a_late_answer_to_an_earlier_transfer_does_not_end_the_current_one() -> None:
    core = make_leader([1], term=2, synced=True)
    core.transfer_leadership(1)
    core.transfer_leadership(2)

    core.on_timeout_now_reply(1, TimeoutNowArgs(2, 0), None)

    assert core.transfer_target == 2


def test_a_higher_term_ends_the_transfer() -> None:
    core = make_leader([1], term=2, synced=True)
    core.transfer_leadership(2)

    core.on_timeout_now_reply(2, TimeoutNowArgs(2, 0), TimeoutNowReply(3))

    assert core.role is Role.FOLLOWER
    assert core.current_term == 3
    assert core.transfer_target is None


def test_only_a_leader_transfers_and_only_to_a_peer() -> None:
    follower = make_core([1], term=1)
    assert follower.transfer_leadership(1) == "not_leader"
    leader = make_leader([1], term=2, synced=True)
    assert leader.transfer_leadership(0) == "unknown_peer"
    assert leader.transfer_leadership(7) == "unknown_peer"
    assert leader.transfer_target is None


def test_the_default_target_is_the_most_caught_up_peer() -> None:
    core = make_leader([1], term=2, peers=5, synced=True)
    core.start(encoded("x"))
    drain(core)
    for peer in (3, 4):
        args = AppendEntriesArgs(2, 0, 1, 1, [core.log.entry(2)], 1)
        core.on_append_entries_reply(peer, args, AppendEntriesReply(2, True, 2))

    assert core.most_caught_up_peer() == 3  # the lowest id of the most caught up


def test_no_default_target_when_no_peer_answers() -> None:
    core = make_leader([1], term=2)  # every follower still in PROBE: none has answered

    assert core.most_caught_up_peer() is None


def test_timeout_now_makes_a_follower_campaign_without_pre_vote() -> None:
    core = make_core([1], me=2, term=2, config=EXTENDED)
    core.handle_append_entries(ae(2, 1, 1, leader=0))

    reply = core.handle_timeout_now(TimeoutNowArgs(2, 0))

    assert reply == TimeoutNowReply(3)
    assert core.role is Role.CANDIDATE
    assert core.current_term == 3
    (request,) = sent_to(core.take_outbox(), 1)
    assert request == RequestVoteArgs(3, 2, 1, 1, pre_vote=False, transfer=True)


def test_timeout_now_from_an_old_term_or_a_second_leader_changes_nothing() -> None:
    core = make_core([1], me=2, term=3, config=EXTENDED)
    assert core.handle_timeout_now(TimeoutNowArgs(2, 0)) == TimeoutNowReply(3)
    core.handle_append_entries(ae(3, 1, 1, leader=1))
    assert core.handle_timeout_now(TimeoutNowArgs(3, 0)) is None  # S1 leads term 3
    assert core.role is Role.FOLLOWER
    assert core.current_term == 3
    assert core.refused == {"second_leader": 1}


def test_a_voter_that_hears_its_leader_refuses_a_vote_unless_it_is_a_transfer() -> None:
    core = make_core([1], me=1, term=2, config=EXTENDED)
    core.handle_append_entries(ae(2, 1, 1, leader=0))

    plain = core.handle_request_vote(RequestVoteArgs(3, 2, 1, 1))
    assert plain == RequestVoteReply(2, False)
    assert core.current_term == 2  # a disruptive candidate does not move our term

    transfer = core.handle_request_vote(RequestVoteArgs(3, 2, 1, 1, transfer=True))
    assert transfer == RequestVoteReply(3, True)
    assert core.voted_for == 2


def test_without_check_quorum_a_vote_request_is_answered_as_figure_2_says() -> None:
    core = make_core([1], me=1, term=2)  # CONFIG: check_quorum off
    core.handle_append_entries(ae(2, 1, 1, leader=0))

    assert core.handle_request_vote(RequestVoteArgs(3, 2, 1, 1)) == RequestVoteReply(3, True)


def test_a_transfer_hands_leadership_over_in_one_election() -> None:
    old = make_leader([1], term=2, synced=True, config=EXTENDED)
    target = make_core([1], me=2, term=2, config=EXTENDED)
    other = make_core([1], me=1, term=2, config=EXTENDED)
    for follower in (target, other):
        follower.handle_append_entries(ae(2, 1, 1, leader=0))

    old.transfer_leadership(2)
    (timeout_now,) = sent_to(old.take_outbox(), 2)
    assert isinstance(timeout_now, TimeoutNowArgs)
    target.handle_timeout_now(timeout_now)
    votes = target.take_outbox()
    for send in votes:
        voter = old if send.peer == 0 else other
        assert isinstance(send.request, RequestVoteArgs)
        target.on_request_vote_reply(
            send.peer, send.request, voter.handle_request_vote(send.request)
        )

    assert target.is_leader
    assert target.current_term == 3
    assert old.role is Role.FOLLOWER
    assert old.transfer_target is None
