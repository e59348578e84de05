"""Terms, elections and votes (§5.1 terms, §5.2 leader election, §5.4.1 election restriction).

The voter in the RequestVote tables is S0 of 3, at term 2, voted for nobody
(unless a row says otherwise), whose log is [1, 2]: last index 2, last term 2.
"""

from __future__ import annotations

import pytest

from raftio.core import RaftCore, Role
from raftio.membership import Configuration, encode_configuration
from raftio.messages import (
    AppendEntriesArgs,
    AppendEntriesReply,
    Entry,
    RequestVoteArgs,
    RequestVoteReply,
    SaveHardState,
    Send,
    rpc_method,
)

from .helpers import (
    ELECTION_MAX,
    ELECTION_MIN,
    EXTENDED,
    NARROW,
    REQUEST_VOTE,
    ae,
    campaign,
    drain,
    make_core,
    make_leader,
    pairs,
)


def rv(term: int, candidate: int, last_index: int, last_term: int) -> RequestVoteArgs:
    return RequestVoteArgs(term, candidate, last_index, last_term)


@pytest.mark.parametrize(
    ("voted_for", "args", "granted", "term", "vote", "ops"),
    [
        # §5.1: a stale term is refused and changes nothing
        (None, rv(1, 1, 9, 9), False, 2, None, []),
        # same term, free vote, log as up-to-date: granted and persisted
        (None, rv(2, 1, 2, 2), True, 2, 1, [SaveHardState(2, 1)]),
        # §5.2: one vote per term
        (2, rv(2, 1, 2, 2), False, 2, 2, []),
        # the same candidate asking again (a lost reply) gets the same answer, no new write
        (1, rv(2, 1, 2, 2), True, 2, 1, []),
        # §5.1: a higher term is adopted and the vote is free again; one write holds both
        (2, rv(3, 1, 2, 2), True, 3, 1, [SaveHardState(3, 1)]),
        # a higher term is adopted and persisted even when the vote is refused
        (None, rv(3, 1, 1, 1), False, 3, None, [SaveHardState(3, None)]),
        # §5.4.1 by term: a later last term wins even with a shorter log
        (None, rv(3, 1, 1, 3), True, 3, 1, [SaveHardState(3, 1)]),
        # §5.4.1 by term: an earlier last term loses even with a longer log
        (None, rv(2, 1, 9, 1), False, 2, None, []),
        # §5.4.1 by index: same last term, the longer log is at least as up-to-date
        (None, rv(2, 1, 3, 2), True, 2, 1, [SaveHardState(2, 1)]),
        # §5.4.1 by index: same last term, a shorter log is not
        (None, rv(2, 1, 1, 2), False, 2, None, []),
    ],
)
def test_handle_request_vote(
    voted_for: int | None,
    args: RequestVoteArgs,
    granted: bool,
    term: int,
    vote: int | None,
    ops: list[tuple[object, ...]],
) -> None:
    """§5.1, §5.2, §5.4.1: Figure 2 RequestVote receiver rules 1 and 2."""
    core = make_core([1, 2], term=2, voted_for=voted_for)

    reply = core.handle_request_vote(args)

    assert reply == RequestVoteReply(term, granted)
    assert (core.current_term, core.voted_for, core.role) == (term, vote, Role.FOLLOWER)
    assert drain(core) == (ops, [])


def test_one_vote_per_term_first_come_first_served() -> None:
    """§5.2: each server votes for at most one candidate in a given term."""
    core = make_core([1], term=1)

    first = core.handle_request_vote(rv(2, 1, 1, 1))
    second = core.handle_request_vote(rv(2, 2, 5, 2))

    assert (first, second) == (RequestVoteReply(2, True), RequestVoteReply(2, False))
    assert core.voted_for == 1
    assert core.take_storage_ops() == [SaveHardState(2, 1)]


@pytest.mark.parametrize("role", [Role.CANDIDATE, Role.LEADER])
def test_candidate_and_leader_refuse_same_term(role: Role) -> None:
    """§5.2: a candidate (or the leader it became) has voted for itself this term."""
    core = make_core([1], term=1)
    campaign(core)
    if role is Role.LEADER:
        core.on_request_vote_reply(1, rv(2, 0, 1, 1), RequestVoteReply(2, True))
    drain(core)

    reply = core.handle_request_vote(rv(2, 1, 5, 2))

    assert reply == RequestVoteReply(2, False)
    assert (core.role, core.voted_for) == (role, 0)
    assert drain(core)[0] == []


def test_higher_term_vote_request_deposes_leader() -> None:
    """§5.1: a leader that sees a higher term reverts to follower, even if it refuses the vote."""
    core = make_leader([1, 1], term=3)

    reply = core.handle_request_vote(rv(4, 2, 1, 1))

    assert reply == RequestVoteReply(4, False)
    assert (core.role, core.current_term, core.voted_for, core.leader_id) == (
        Role.FOLLOWER,
        4,
        None,
        None,
    )
    assert core.progress == {}
    assert drain(core) == ([SaveHardState(4, None)], [])


@pytest.mark.parametrize(
    ("args", "resets"),
    [
        # granting a vote restarts the election timer (Figure 2, Followers)
        (rv(2, 1, 1, 1), True),
        # refusing one does not
        (rv(2, 1, 0, 0), False),
    ],
)
def test_granting_resets_election_timer(args: RequestVoteArgs, resets: bool) -> None:
    """§5.2: a follower times out only without granting votes or hearing from a leader."""
    core = make_core([1], term=2, config=NARROW)  # timeout 30 or 31 ticks
    for _ in range(29):
        core.tick()

    core.handle_request_vote(args)
    for _ in range(29):
        core.tick()

    assert core.role is (Role.FOLLOWER if resets else Role.CANDIDATE)


def test_election_timeout_is_randomized_within_bounds() -> None:
    """§5.2: timeouts are drawn from [min, max] so split votes are rare."""
    fired = set()
    for seed in range(40):
        core = make_core(seed=seed)
        ticks = 0
        while core.role is Role.FOLLOWER:
            core.tick()
            ticks += 1
        fired.add(ticks)

    assert min(fired) >= ELECTION_MIN
    assert max(fired) <= ELECTION_MAX
    assert len(fired) > 5


def test_campaign() -> None:
    """§5.2: on timeout a follower increments its term, votes for itself, asks everyone."""
    core = make_core([1, 1, 2], term=2, peers=3, me=1)

    outbox = campaign(core)

    assert (core.role, core.current_term, core.voted_for, core.leader_id) == (
        Role.CANDIDATE,
        3,
        1,
        None,
    )
    assert core.take_storage_ops() == [SaveHardState(3, 1)]
    args = rv(3, 1, 3, 2)
    assert outbox == [Send(0, args), Send(2, args)]


def test_candidate_times_out_and_campaigns_again() -> None:
    """§5.2: a split vote ends in a timeout and a new election in the next term."""
    core = make_core(term=1, config=NARROW)
    campaign(core)
    drain(core)

    for _ in range(31):
        core.tick()

    assert (core.role, core.current_term, core.voted_for) == (Role.CANDIDATE, 3, 0)
    ops, outbox = drain(core)
    assert ops == [SaveHardState(3, 0)]
    assert [(send.peer, rpc_method(send.request)) for send in outbox] == [
        (1, REQUEST_VOTE),
        (2, REQUEST_VOTE),
    ]


def test_single_peer_elects_itself_once_its_vote_is_durable() -> None:
    """§5.2: a candidate with votes from a majority (itself, of one) becomes leader.

    Its own vote counts once durable: led before, a crash could make it
    lead the same term twice (a learner may have seen the first reign).
    """
    core = make_core([1], term=1, peers=1)

    outbox = campaign(core)

    assert (core.role, core.current_term) == (Role.CANDIDATE, 2)
    assert outbox == []
    assert core.take_storage_ops() == [SaveHardState(2, 0)]
    core.on_vote_durable()
    assert (core.role, core.current_term, core.leader_id) == (Role.LEADER, 2, 0)


@pytest.mark.parametrize(
    ("peers", "grants", "leader"),
    [
        # 3 peers: itself plus one
        (3, [1], True),
        # 5 peers: itself plus two; duplicates count once
        (5, [1], False),
        (5, [1, 1], False),
        (5, [1, 1, 2], True),
        # 4 peers: a majority is 3
        (4, [3], False),
        (4, [3, 1], True),
    ],
)
def test_wins_with_majority(peers: int, grants: list[int], leader: bool) -> None:
    """§5.2: a candidate wins once it has votes from a majority of the full cluster."""
    core = make_core([1], term=1, peers=peers)
    outbox = campaign(core)
    args = outbox[0].request
    assert isinstance(args, RequestVoteArgs)

    for peer in grants:
        core.on_request_vote_reply(peer, args, RequestVoteReply(2, True))

    assert core.role is (Role.LEADER if leader else Role.CANDIDATE)


def test_new_leader_announces_itself() -> None:
    """§5.2: a new leader sends empty AppendEntries (heartbeats) to every other peer at once."""
    core = make_core([1, 1], term=1, peers=3)
    outbox = campaign(core)
    args = outbox[0].request
    assert isinstance(args, RequestVoteArgs)
    assert core.take_storage_ops() == [SaveHardState(2, 0)]

    core.on_request_vote_reply(2, args, RequestVoteReply(2, True))

    assert (core.role, core.leader_id) == (Role.LEADER, 0)
    heartbeat = AppendEntriesArgs(2, 0, 2, 1, [], 0)
    assert drain(core) == ([], [Send(1, heartbeat), Send(2, heartbeat)])
    assert {p: (pr.next_index, pr.match_index) for p, pr in core.progress.items()} == {
        1: (3, 0),
        2: (3, 0),
    }


@pytest.mark.parametrize(
    ("reply", "role", "term", "ops"),
    [
        # a lost reply changes nothing
        (None, Role.CANDIDATE, 2, []),
        # a refusal is not a vote
        (RequestVoteReply(2, False), Role.CANDIDATE, 2, []),
        # §5.1: a higher term turns the candidate into a follower of that term
        (RequestVoteReply(5, False), Role.FOLLOWER, 5, [SaveHardState(5, None)]),
    ],
)
def test_vote_reply_without_a_vote(
    reply: RequestVoteReply | None, role: Role, term: int, ops: list[tuple[object, ...]]
) -> None:
    """§5.2: only granted votes of the current term count."""
    core = make_core([1], term=1)
    args = campaign(core)[0].request
    assert isinstance(args, RequestVoteArgs)
    drain(core)

    core.on_request_vote_reply(1, args, reply)

    assert (core.role, core.current_term) == (role, term)
    assert drain(core) == (ops, [])


def test_stale_vote_from_an_earlier_election_is_ignored() -> None:
    """§5.1: a vote granted for an earlier term says nothing about this one."""
    core = make_core([1], term=1, config=NARROW)
    old = campaign(core)[0].request
    assert isinstance(old, RequestVoteArgs)
    for _ in range(31):
        core.tick()  # election for term 2 times out; now campaigning in term 3
    drain(core)
    assert core.current_term == 3

    core.on_request_vote_reply(1, old, RequestVoteReply(3, True))

    assert core.role is Role.CANDIDATE


def test_candidate_steps_down_on_append_entries_of_its_term() -> None:
    """§5.2: a candidate that hears from a leader of its own term becomes its follower."""
    core = make_core([1], term=1)
    campaign(core)
    drain(core)

    reply = core.handle_append_entries(ae(2, 1, 1, leader=2))

    assert reply == AppendEntriesReply(2, True, 1)
    assert (core.role, core.current_term, core.voted_for, core.leader_id) == (
        Role.FOLLOWER,
        2,
        0,
        2,
    )
    assert drain(core) == ([], [])


def test_restart_restores_persistent_state() -> None:
    """§5.1/Figure 2: current_term, voted_for and log survive; volatile state starts over."""
    core = make_core([1, 2, 2], term=4, voted_for=2, snapshot=(3, 1))

    assert (core.role, core.current_term, core.voted_for) == (Role.FOLLOWER, 4, 2)
    assert (core.log.snapshot_index, core.log.last_index, core.log.last_term) == (3, 6, 2)
    assert (core.commit_index, core.applied_index, core.leader_id) == (3, 3, None)
    assert drain(core) == ([], [])


@pytest.mark.parametrize("me", [-1, 3])
def test_me_must_index_peers(me: int) -> None:
    """§5.1: a peer is one of the cluster's servers."""
    with pytest.raises(ValueError, match="not an index"):
        make_core(me=me, peers=3)


def test_is_leader_property() -> None:
    """§5.2: is_leader reflects the role."""
    assert make_leader(term=1).is_leader
    assert not make_core().is_leader


# --- pre-vote (Raft thesis 9.6) and check-quorum (thesis 6.2), on top of §5.2 ---------


def pv(term: int, candidate: int, last_index: int, last_term: int) -> RequestVoteArgs:
    return RequestVoteArgs(term, candidate, last_index, last_term, pre_vote=True)


@pytest.mark.parametrize(
    ("args", "hears_leader", "granted"),
    [
        # a pre-vote for the next term with an up-to-date log is granted
        (pv(3, 1, 2, 2), False, True),
        (pv(7, 1, 1, 3), False, True),
        # §5.4.1 applies to pre-votes too
        (pv(3, 1, 1, 2), False, False),
        (pv(3, 1, 9, 1), False, False),
        # the term it would campaign in must be above ours
        (pv(2, 1, 2, 2), False, False),
        # while a leader is heard from, nobody is let to disrupt it
        (pv(3, 1, 2, 2), True, False),
    ],
)
def test_handle_pre_vote(args: RequestVoteArgs, hears_leader: bool, granted: bool) -> None:
    """Thesis 9.6 (on §5.2): a pre-vote is answered as a vote would be, but changes nothing."""
    core = make_core([1, 2], term=2, config=EXTENDED)
    if hears_leader:
        core.handle_append_entries(ae(2, 2, 2, leader=2))
    drain(core)

    reply = core.handle_request_vote(args)

    assert reply == RequestVoteReply(2, granted)
    assert (core.current_term, core.voted_for, core.role) == (2, None, Role.FOLLOWER)
    assert drain(core) == ([], [])


def test_leader_refuses_pre_vote_and_keeps_its_term() -> None:
    """Thesis 9.6: a peer rejoining with a higher term cannot depose a healthy leader."""
    core = make_leader([1], term=2, config=EXTENDED)

    reply = core.handle_request_vote(pv(9, 1, 5, 5))

    assert reply == RequestVoteReply(2, False)
    assert (core.role, core.current_term) == (Role.LEADER, 2)
    assert drain(core)[0] == []


def test_pre_campaign_changes_no_durable_state() -> None:
    """Thesis 9.6: on timeout a follower asks for pre-votes for term + 1 without adopting it."""
    core = make_core([1, 2], term=2, peers=3, config=EXTENDED)

    outbox = campaign(core)

    assert (core.role, core.current_term, core.voted_for, core.leader_id) == (
        Role.PRE_CANDIDATE,
        2,
        None,
        None,
    )
    assert core.take_storage_ops() == []
    args = pv(3, 0, 2, 2)
    assert outbox == [Send(1, args), Send(2, args)]


def test_pre_vote_majority_starts_the_real_election() -> None:
    """Thesis 9.6 then §5.2: with a majority of pre-votes the peer campaigns for real."""
    core = make_core([1, 2], term=2, peers=3, config=EXTENDED)
    args = campaign(core)[0].request
    assert isinstance(args, RequestVoteArgs)

    core.on_request_vote_reply(1, args, RequestVoteReply(2, True))

    assert (core.role, core.current_term, core.voted_for) == (Role.CANDIDATE, 3, 0)
    real = rv(3, 0, 2, 2)
    assert drain(core) == (
        [SaveHardState(3, 0)],
        [Send(1, real), Send(2, real)],
    )


@pytest.mark.parametrize(
    ("reply", "role", "term", "ops"),
    [
        # refused at our term: keep waiting, nothing changes
        (RequestVoteReply(2, False), Role.PRE_CANDIDATE, 2, []),
        # §5.1: refused by a peer of a higher term: adopt it
        (RequestVoteReply(4, False), Role.FOLLOWER, 4, [SaveHardState(4, None)]),
        # lost
        (None, Role.PRE_CANDIDATE, 2, []),
    ],
)
def test_pre_vote_refusals(
    reply: RequestVoteReply | None, role: Role, term: int, ops: list[tuple[object, ...]]
) -> None:
    """Thesis 9.6: only granted pre-votes from a majority lead to an election."""
    core = make_core([1, 2], term=2, peers=5, config=EXTENDED)
    args = campaign(core)[0].request
    assert isinstance(args, RequestVoteArgs)

    for peer in (1, 2, 3):
        core.on_request_vote_reply(peer, args, reply)

    assert (core.role, core.current_term) == (role, term)
    assert drain(core) == (ops, [])


def test_stale_pre_vote_reply_ignored_once_candidate() -> None:
    """Thesis 9.6: a pre-vote arriving after the real election began is not a vote."""
    core = make_core([1], term=1, peers=5, config=EXTENDED)
    pre = campaign(core)[0].request
    assert isinstance(pre, RequestVoteArgs)
    for peer in (1, 2):
        core.on_request_vote_reply(peer, pre, RequestVoteReply(1, True))
    assert core.role is Role.CANDIDATE
    drain(core)

    core.on_request_vote_reply(3, pre, RequestVoteReply(1, True))
    core.on_request_vote_reply(4, pre, RequestVoteReply(1, True))

    assert core.role is Role.CANDIDATE
    assert drain(core) == ([], [])


def heard_from(core: RaftCore, peers: list[int], ticks: int) -> None:
    """Tick a leader; `peers` answer every heartbeat it sends them."""
    for _ in range(ticks):
        core.tick()
        for peer, args in pairs(core.take_outbox()):
            if peer in peers and isinstance(args, AppendEntriesArgs):
                match = args.prev_log_index + len(args.entries)
                reply = AppendEntriesReply(args.term, True, match)
                core.on_append_entries_reply(peer, args, reply)


@pytest.mark.parametrize(
    ("peers", "answering", "leader"),
    [
        # with itself, a majority answers: stays leader
        (3, [1, 2], True),
        (3, [2], True),
        (5, [1, 4], True),
        (4, [1, 3], True),
        # no majority answers within an election timeout: steps down
        (3, [], False),
        (5, [3], False),
        # half is not a majority
        (4, [2], False),
    ],
)
def test_check_quorum(peers: int, answering: list[int], leader: bool) -> None:
    """Thesis 6.2: a leader that has not heard from a majority for a timeout steps down."""
    core = make_leader([1], term=2, peers=peers, config=EXTENDED)
    heard_from(core, answering, ELECTION_MIN - 1)
    assert core.role is Role.LEADER

    heard_from(core, answering, 1)

    assert (core.role, core.current_term) == (Role.LEADER if leader else Role.FOLLOWER, 2)
    assert core.take_storage_ops() == []
    if leader:
        heard_from(core, answering, 3 * ELECTION_MIN)
        assert core.role is Role.LEADER


def test_step_down() -> None:
    """Thesis 6.2: a leader asked to step down becomes a follower of the same term."""
    core = make_leader([1], term=2)

    core.step_down()

    assert (core.role, core.current_term, core.voted_for, core.leader_id) == (
        Role.FOLLOWER,
        2,
        0,
        None,
    )
    assert core.progress == {}
    assert drain(core) == ([], [])


def test_a_sole_voters_pending_win_dies_with_its_campaign() -> None:
    """A win waiting for its vote to be durable is void once that campaign is over,
    even if the node campaigns again, now among three voters."""
    core = make_core([1], term=1, peers=1)
    campaign(core)
    three = Configuration.of_voters(["", "", ""])
    conf = Entry(3, encode_configuration(three))
    core.handle_append_entries(AppendEntriesArgs(3, 1, 1, 1, [conf], 0))  # a leader of T3
    assert core.role is Role.FOLLOWER
    campaign(core)  # again, now needing a second vote
    assert core.role is Role.CANDIDATE

    core.on_vote_durable()

    assert core.role is Role.CANDIDATE
