"""Membership changes in the core (Raft thesis 4.1): tables, in the spirit of etcd's confchange.

A configuration entry takes effect when appended, on the leader and on each
follower; at most one is uncommitted; a leader changes the configuration
only once an entry of its term has committed (raft-dev 2015); truncating a
configuration entry reverts to the one before; learners never vote nor
count; a removed leader steps down once its removal commits.
"""

from __future__ import annotations

import random

import pytest

from raftio.core import RaftCore, Role
from raftio.membership import Configuration, encode_configuration
from raftio.messages import (
    AppendEntriesArgs,
    AppendEntriesReply,
    DurableState,
    Entry,
    InstallSnapshotArgs,
    RequestVoteArgs,
    RequestVoteReply,
    SaveSnapshot,
    TimeoutNowArgs,
)

from .helpers import (
    CONFIG,
    ELECTION_MAX,
    ack,
    ae,
    compact,
    drain,
    entries,
    info_of,
    install,
    make_core,
    make_leader,
    sent_to,
)


def voters(*ids: int, learners: tuple[int, ...] = ()) -> Configuration:
    return Configuration(dict.fromkeys(ids, ""), dict.fromkeys(learners, ""))


def conf_entry(term: int, config: Configuration) -> Entry:
    return Entry(term, encode_configuration(config))


def leader_of(peers: int = 3) -> RaftCore:
    """A leader of T2 over `peers` voters, with an entry of T2 committed (§8)."""
    core = make_leader([1], term=2, peers=peers, synced=True)
    core.start(b"\xc0")
    drain(core)
    core.on_log_durable(core.log.last_index, 2)
    for peer in range(1, peers):
        ack(core, peer, core.log.last_index)
    assert core.commit_index == core.log.last_index
    return core


# --- what a change does on the leader ---------------------------------------------


@pytest.mark.parametrize(
    ("new", "voters_after", "quorum_after"),
    [
        (voters(0, 1, 2, 3), {0, 1, 2, 3}, 3),  # add a voter
        (voters(0, 1), {0, 1}, 2),  # remove a follower
        (voters(0, 1, 2, learners=(3,)), {0, 1, 2}, 2),  # add a learner
        (voters(1, 2), {1, 2}, 2),  # the leader removes itself
    ],
    ids=["add", "remove", "learner", "remove-self"],
)
def test_a_change_takes_effect_when_appended(
    new: Configuration, voters_after: set[int], quorum_after: int
) -> None:
    core = leader_of()
    index = core.log.last_index + 1

    assert core.propose_configuration(new) is None

    assert core.configs.latest_index == index
    assert core.voters == voters_after
    assert core.configuration == new
    assert set(core.progress) >= set(new.members()) - {0}  # new members are replicated to
    assert core.quorum_size() == quorum_after


def test_a_new_voter_counts_toward_the_commit_at_once() -> None:
    core = leader_of()
    core.propose_configuration(voters(0, 1, 2, 3))
    index = core.log.last_index
    drain(core)
    core.on_log_durable(index, 2)

    ack(core, 1, index)
    assert core.commit_index < index  # 2 of 4 is no majority any more

    ack(core, 3, index)
    assert core.commit_index == index


def test_a_learner_never_counts_toward_a_commit() -> None:
    core = leader_of()
    core.propose_configuration(voters(0, 1, 2, learners=(3,)))
    index = core.log.last_index
    drain(core)
    ack(core, 3, index)  # the learner (not yet durable here: 1 of 3 voters plus a learner)

    assert core.commit_index < index
    core.on_log_durable(index, 2)
    assert core.commit_index < index  # leader + learner: still one voter short
    ack(core, 1, index)
    assert core.commit_index == index


def test_promoting_a_learner_makes_it_count() -> None:
    core = leader_of()
    core.propose_configuration(voters(0, 1, 2, learners=(3,)))
    first = core.log.last_index
    drain(core)
    core.on_log_durable(first, 2)
    ack(core, 1, first)
    assert core.commit_index == first

    assert core.propose_configuration(voters(0, 1, 2, 3)) is None

    second = core.log.last_index
    drain(core)
    core.on_log_durable(second, 2)
    ack(core, 1, second)
    assert core.commit_index < second  # 2 of 4
    ack(core, 3, second)
    assert core.commit_index == second


def test_a_removed_leader_leads_until_the_removal_commits_then_hands_over() -> None:
    core = leader_of()
    core.propose_configuration(voters(1, 2))
    index = core.log.last_index
    drain(core)
    core.on_log_durable(index, 2)
    ack(core, 1, index)
    assert core.is_leader
    assert core.commit_index < index

    outbox = ack(core, 2, index)

    assert core.commit_index == index
    assert core.role is Role.FOLLOWER
    handover = [s for s in outbox if isinstance(s.request, TimeoutNowArgs)]
    assert len(handover) == 1
    assert handover[0].peer in (1, 2)
    for _ in range(3 * ELECTION_MAX):
        core.tick()
    assert core.take_outbox() == []  # not a voter: never campaigns


def test_a_follower_removed_is_forgotten_once_the_removal_commits() -> None:
    core = leader_of()
    core.propose_configuration(voters(0, 1))
    index = core.log.last_index
    drain(core)
    assert 2 in core.progress  # it still gets the entry that removes it
    core.on_log_durable(index, 2)
    ack(core, 1, index)

    assert core.commit_index == index
    assert 2 not in core.progress


# --- refusals -----------------------------------------------------------------------


def test_refusals() -> None:
    follower = make_core([1], term=1)
    assert follower.propose_configuration(voters(0, 1)) == "not_leader"

    core = leader_of()
    assert core.propose_configuration(voters(0, 1, 2, 3, 4)) == "not_single_change"
    assert core.propose_configuration(voters(0, 3)) == "not_single_change"  # swap = 2 changes
    assert core.propose_configuration(Configuration({}, {0: ""})) == "not_single_change"
    assert core.propose_configuration(voters(0, 1, 2, 3)) is None
    assert core.propose_configuration(voters(0, 1, 2)) == "change_pending"  # one at a time


def test_a_change_waits_for_an_entry_of_the_leaders_term() -> None:
    """The raft-dev 2015 fix; the scenario scripts show the bug it prevents."""
    core = make_leader([1], term=2, synced=False)
    assert core.propose_configuration(voters(0, 1, 2, 3)) == "change_pending"

    core.change_needs_term_commit = False
    assert core.propose_configuration(voters(0, 1, 2, 3)) is None


def test_leaving_no_voter_is_refused() -> None:
    core = leader_of(peers=1)
    assert core.propose_configuration(Configuration({}, {})) == "last_voter"


# --- followers ---------------------------------------------------------------------


def test_a_follower_adopts_a_configuration_when_it_appends_it() -> None:
    core = make_core([1], term=1, me=1)
    new = voters(0, 1, 2, 3)

    reply = core.handle_append_entries(ae(1, 1, 1, [conf_entry(1, new)], leader=0))

    assert reply is not None
    assert reply.success
    assert core.configuration == new
    assert core.commit_index == 0


def test_truncating_a_configuration_entry_reverts_to_the_one_before() -> None:
    core = make_core([1], term=1, me=1)
    core.handle_append_entries(ae(1, 1, 1, [conf_entry(1, voters(0, 1, 2, 3))], leader=0))
    assert core.voters == {0, 1, 2, 3}

    # A new leader of T2 never had it: its entry at index 2 replaces ours.
    reply = core.handle_append_entries(ae(2, 1, 1, entries(2, 2), leader=2))

    assert reply is not None
    assert reply.success
    assert core.voters == {0, 1, 2}
    assert core.configs.latest_index == 0


def test_a_learner_never_campaigns_and_a_joining_node_neither() -> None:
    learner = make_core([1], term=1, me=3, peers=4)
    learner.handle_append_entries(
        ae(1, 1, 1, [conf_entry(1, voters(0, 1, 2, learners=(3,)))], 2, leader=0)
    )
    joining = RaftCore(9, 0, DurableState(), CONFIG, random.Random(1), bootstrap=Configuration())

    for core in (learner, joining):
        drain(core)
        for _ in range(4 * ELECTION_MAX):
            core.tick()
        assert core.role is Role.FOLLOWER
        assert core.take_outbox() == []


def test_a_learners_vote_is_not_counted() -> None:
    core = make_core([1], term=1, me=0)
    core.handle_append_entries(
        ae(1, 1, 1, [conf_entry(1, voters(0, 1, 2, learners=(3,)))], leader=1)
    )
    drain(core)
    for _ in range(ELECTION_MAX + 1):
        core.tick()
    (args,) = sent_to(core.take_outbox(), 1)
    assert isinstance(args, RequestVoteArgs)
    assert sent_to(core.take_outbox(), 3) == []  # learners are not asked

    core.on_request_vote_reply(3, args, RequestVoteReply(args.term, True))
    assert not core.is_leader  # 1 voter of 3 plus a learner
    core.on_request_vote_reply(1, args, RequestVoteReply(args.term, True))
    assert core.is_leader


def test_a_node_that_thinks_it_is_a_learner_still_votes() -> None:
    """Its configuration may lag the candidate's, in which it is a voter (etcd does the same)."""
    core = make_core([1], term=1, me=3, peers=4)
    core.handle_append_entries(
        ae(1, 1, 1, [conf_entry(1, voters(0, 1, 2, learners=(3,)))], leader=0)
    )
    drain(core)

    reply = core.handle_request_vote(RequestVoteArgs(2, 1, 3, 2))

    assert reply == RequestVoteReply(2, True)


def test_a_joining_node_accepts_a_leader_it_has_never_heard_of() -> None:
    core = RaftCore(7, 0, DurableState(), CONFIG, random.Random(1), bootstrap=Configuration())
    config = voters(0, 1, 2, learners=(7,))

    reply = core.handle_append_entries(
        AppendEntriesArgs(3, 1, 0, 0, [Entry(1, b"\xc0"), conf_entry(3, config)], 2)
    )

    assert reply == AppendEntriesReply(3, True, 2)
    assert core.configuration == config
    assert core.leader_id == 1


# --- snapshots -----------------------------------------------------------------------


def test_a_snapshot_carries_the_configuration_and_a_restart_restores_it() -> None:
    core = make_core([1], term=1, me=1)
    new = voters(0, 1, 2, 3)
    core.handle_append_entries(ae(1, 1, 1, [conf_entry(1, new), *entries(3, 1)], 3, leader=0))
    core.take_applicable(10)
    drain(core)

    compact(core, 3, b"state")

    (op,) = core.take_storage_ops()
    assert op == SaveSnapshot(3, 1, b"state", new)
    restarted = RaftCore(
        1,
        3,
        DurableState(1, None, 3, 1, [], new),
        CONFIG,
        random.Random(0),
        info_of((3, 1), b"state"),
    )
    assert restarted.configuration == new
    assert restarted.voters == {0, 1, 2, 3}


def test_an_installed_snapshot_brings_its_configuration() -> None:
    core = RaftCore(4, 0, DurableState(), CONFIG, random.Random(1), bootstrap=Configuration())
    config = voters(0, 1, 2, 4)
    core.handle_append_entries(AppendEntriesArgs(2, 0, 0, 0, [], 9))  # the leader's commit first

    reply = install(core, InstallSnapshotArgs(2, 0, 9, 2, b"s", config))

    assert reply is not None
    assert core.configuration == config
    assert core.voters == {0, 1, 2, 4}
    saved = [op for op in core.take_storage_ops() if isinstance(op, SaveSnapshot)]
    assert [(op.index, op.term, op.config) for op in saved] == [(9, 2, config)]


def test_a_malformed_configuration_entry_is_ignored_alike_everywhere() -> None:
    core = make_core([1], term=1, me=1)
    forged = Entry(1, b"\xc1\xc1{not json")

    reply = core.handle_append_entries(ae(1, 1, 1, [forged], leader=0))

    assert reply is not None
    assert reply.success
    assert core.voters == {0, 1, 2}


def test_a_node_whose_removal_is_uncommitted_may_still_campaign() -> None:
    """Else a leader that removed itself and crashed before the removal committed,
    holding the most up-to-date log, could never be replaced: deadlock."""
    core = make_core([1], term=1, me=0)
    core.handle_append_entries(ae(1, 1, 1, [conf_entry(1, voters(1, 2))], 1, leader=1))
    drain(core)
    for _ in range(ELECTION_MAX + 1):
        core.tick()
    sent = core.take_outbox()
    assert sorted(s.peer for s in sent) == [1, 2]  # it asks the voters of the latest
    (args,) = sent_to(sent, 1)
    assert isinstance(args, RequestVoteArgs)

    core.on_request_vote_reply(1, args, RequestVoteReply(args.term, True))
    assert not core.is_leader  # its own vote does not count: 1 of {1, 2}
    core.on_request_vote_reply(2, args, RequestVoteReply(args.term, True))
    assert core.is_leader


def test_once_its_removal_commits_a_node_never_campaigns() -> None:
    core = make_core([1], term=1, me=0)
    core.handle_append_entries(ae(1, 1, 1, [conf_entry(1, voters(1, 2))], 2, leader=1))
    drain(core)
    for _ in range(4 * ELECTION_MAX):
        core.tick()
    assert core.take_outbox() == []
