"""Lease reads in the core (Raft thesis 6.4.1): opt-in, on the shell's clock.

A leader whose heartbeat round, started at time t, was answered by a
majority in its term may confirm reads without a round until
t + lease_duration: each voter that answered refuses to elect anyone else
until its own clock says an election timeout passed. No lease before the
term's first commit, during a leadership transfer, or after one in the term.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from raftio.config import RaftConfig
from raftio.core import RaftCore, Role
from raftio.messages import (
    AppendEntriesArgs,
    AppendEntriesReply,
    ReadConfirmed,
    RequestVoteArgs,
)

from .helpers import CONFIG, ack, drain, make_core, make_leader, reading_leader, sent_to

LEASE = replace(CONFIG, check_quorum=True, lease_reads=True)
T0 = 1000.0  # the shell's clock when the test's heartbeat round starts


def leader(peers: int = 3, config: RaftConfig = LEASE) -> RaftCore:
    """A leader of term 2 whose term has a committed entry; no lease yet."""
    return reading_leader(peers, config)


def heartbeat_round(core: RaftCore, now: float = T0) -> dict[int, AppendEntriesArgs]:
    """Tick (clock `now`) until the heartbeat goes out; the heartbeat sent to each peer."""
    for _ in range(core.config.heartbeat_ticks):
        core.tick(now)
    _, outbox = drain(core)
    sent = {}
    for peer in core.progress:
        (args,) = sent_to(outbox, peer)
        assert isinstance(args, AppendEntriesArgs)
        assert not args.entries
        sent[peer] = args
    return sent


def answer(core: RaftCore, peer: int, args: AppendEntriesArgs, term: int = 2) -> None:
    core.on_append_entries_reply(peer, args, AppendEntriesReply(term, True, args.prev_log_index))


def test_a_majoritys_answers_grant_a_lease_from_the_rounds_start() -> None:
    core = leader()
    sent = heartbeat_round(core)
    assert not core.lease_holds(T0)  # no answer yet

    answer(core, 1, sent[1])

    lease = LEASE.lease_duration
    assert core.lease_holds(T0 + lease - 1e-6)
    assert not core.lease_holds(T0 + lease)  # counted from the start, not the answer


def test_inside_the_lease_a_read_is_confirmed_without_a_round() -> None:
    core = leader()
    answer(core, 1, heartbeat_round(core)[1])

    assert core.read_index(7, T0 + 0.01)

    assert core.take_reads() == [ReadConfirmed(7, core.commit_index)]
    assert drain(core)[1] == []  # no heartbeat sent for it


def test_past_the_lease_a_read_waits_for_its_round() -> None:
    core = leader()
    answer(core, 1, heartbeat_round(core)[1])

    assert core.read_index(7, T0 + LEASE.lease_duration)

    assert core.take_reads() == []
    _, outbox = drain(core)
    assert len(sent_to(outbox, 1)) == 1  # a round, as without leases
    later = T0 + LEASE.lease_duration
    core.on_append_entries_reply(
        1, sent_to(outbox, 1)[0], AppendEntriesReply(2, True, core.commit_index)
    )
    assert core.take_reads() == [ReadConfirmed(7, core.commit_index)]
    assert core.lease_holds(later + LEASE.lease_duration - 1e-6)  # the round renewed it


def test_a_minoritys_answers_or_a_later_terms_grant_nothing() -> None:
    core = leader(peers=5)
    sent = heartbeat_round(core)
    answer(core, 1, sent[1])
    assert not core.lease_holds(T0)  # 2 of 5

    answer(core, 2, sent[2], term=3)  # a later term: we are deposed

    assert core.role is Role.FOLLOWER
    assert not core.lease_holds(T0)


def test_no_lease_without_lease_reads() -> None:
    core = leader(config=CONFIG)
    sent = heartbeat_round(core)
    answer(core, 1, sent[1])
    answer(core, 2, sent[2])

    assert not core.lease_holds(T0)
    assert core.read_index(7, T0)
    assert core.take_reads() == []


def test_no_lease_once_a_transfer_started_in_the_term() -> None:
    core = leader()
    answer(core, 1, heartbeat_round(core)[1])
    assert core.lease_holds(T0)

    assert core.transfer_leadership(1) is None
    assert not core.lease_holds(T0)
    for _ in range(CONFIG.election_ticks[1]):  # abandoned: proposals are taken again
        core.tick(T0)
        ack(core, 1, core.log.last_index)  # S1 still follows (check-quorum)
    assert core.transfer_target is None
    later = T0 + 1.0
    answer(core, 1, heartbeat_round(core, later)[1])

    # Its TimeoutNow may still start an election that skips the voters' refusal.
    assert not core.lease_holds(later)


def test_a_new_leader_has_no_lease_before_its_term_commits() -> None:
    core = make_leader([1, 1], term=2, synced=True, config=LEASE)
    assert core.commit_index < core.term_start_index
    for _ in range(CONFIG.heartbeat_ticks):
        core.tick(T0)
    _, outbox = drain(core)
    for args in sent_to(outbox, 1) + sent_to(outbox, 2):
        if isinstance(args, AppendEntriesArgs):
            answer(core, 1, args)

    assert not core.lease_holds(T0)


# --- the voters' side ------------------------------------------------------------


def vote_request(term: int, pre_vote: bool = False) -> RequestVoteArgs:
    return RequestVoteArgs(term, 2, 10, term - 1, pre_vote, False)


@pytest.mark.parametrize("pre_vote", [False, True])
def test_a_restarted_voter_refuses_elections_for_an_election_timeout(pre_vote: bool) -> None:
    # It may have answered the leader's round just before its crash: the
    # lease counts on its refusal, which it no longer remembers.
    core = make_core([1, 1], term=1, config=LEASE)
    low = CONFIG.election_ticks[0]
    for _ in range(low - 1):
        reply = core.handle_request_vote(vote_request(5, pre_vote))
        assert reply is not None
        assert not reply.vote_granted
        core.tick()
    assert core.current_term == 1  # refused without adopting the term

    core.tick()
    reply = core.handle_request_vote(vote_request(5, pre_vote))
    assert reply is not None
    assert reply.vote_granted


def test_without_leases_a_restarted_voter_votes_at_once() -> None:
    core = make_core([1, 1], term=1, config=CONFIG)

    reply = core.handle_request_vote(vote_request(5))

    assert reply is not None
    assert reply.vote_granted


def test_the_lease_ends_before_a_voter_that_answered_may_vote() -> None:
    # The voter's refusal lasts low - 1 of its ticks after the heartbeat
    # arrived (its first tick may come at once); the lease, counted from
    # before the heartbeat left, is that much shortened by the drift.
    for config in (LEASE, replace(LEASE, tick_interval=0.001, max_clock_drift=0.25)):
        low = config.election_ticks[0]
        ticks = (low - 1) * config.tick_interval
        assert config.lease_duration == pytest.approx(ticks * (1 - config.max_clock_drift))
        assert 0 < config.lease_duration < ticks


def test_config_refuses_a_lease_without_check_quorum_or_with_impossible_drift() -> None:
    with pytest.raises(ValueError, match="lease_reads needs check_quorum"):
        RaftConfig(lease_reads=True, check_quorum=False)
    for drift in (-0.1, 1.0):
        with pytest.raises(ValueError, match="max_clock_drift"):
            RaftConfig(lease_reads=True, max_clock_drift=drift)
