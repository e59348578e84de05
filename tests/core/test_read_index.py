"""ReadIndex in the core (Raft thesis 6.4; etcd's readOnly): one heartbeat round per batch of reads.

A read is confirmed (with the commit index the service must reach) only
when a majority answered, in our term, a heartbeat sent after the read
arrived; it is refused when that can no longer happen or we stop leading.
"""

from __future__ import annotations

from dataclasses import replace

from raftio.messages import (
    AppendEntriesArgs,
    AppendEntriesReply,
    ReadConfirmed,
    ReadRefused,
    RequestVoteReply,
)

from .helpers import CONFIG, ack, campaign, drain, reading_leader, sent_to


def leader(peers: int = 3) -> object:
    return reading_leader(peers)


def answer(core: object, peer: int, args: AppendEntriesArgs, term: int = 2) -> None:
    match = args.prev_log_index
    core.on_append_entries_reply(peer, args, AppendEntriesReply(term, True, match))  # type: ignore[attr-defined]


def test_a_read_is_confirmed_once_a_majority_answered_its_round() -> None:
    core = leader()
    commit = core.commit_index
    assert core.read_index(7)
    _, outbox = drain(core)
    (to_1,) = sent_to(outbox, 1)
    (to_2,) = sent_to(outbox, 2)
    assert isinstance(to_1, AppendEntriesArgs)
    assert core.take_reads() == []  # nothing confirmed before an answer

    answer(core, 1, to_1)

    assert core.take_reads() == [ReadConfirmed(7, commit)]
    answer(core, 2, to_2)  # the late answer changes nothing
    assert core.take_reads() == []


def test_reads_that_arrive_together_share_one_round() -> None:
    core = leader()
    for read_id in range(5):
        assert core.read_index(read_id)
    _, outbox = drain(core)

    assert len(sent_to(outbox, 1)) == 1
    answer(core, 2, sent_to(outbox, 2)[0])
    assert core.take_reads() == [ReadConfirmed(i, core.commit_index) for i in range(5)]


def test_an_answer_to_an_earlier_heartbeat_confirms_nothing() -> None:
    """It proves leadership before the read arrived, not after."""
    core = leader()
    earlier = core.heartbeat_args(1)
    assert core.read_index(1)
    drain(core)

    answer(core, 1, earlier)

    assert core.take_reads() == []


def test_a_leader_cut_off_from_the_majority_never_confirms_a_read() -> None:
    core = leader()
    assert core.read_index(1)
    _, outbox = drain(core)

    for peer in (1, 2):
        core.on_append_entries_reply(peer, sent_to(outbox, peer)[0], None)  # lost

    assert core.take_reads() == [ReadRefused(1)]


def test_an_answer_from_a_later_term_refuses_the_read() -> None:
    core = leader()
    assert core.read_index(1)
    _, outbox = drain(core)

    core.on_append_entries_reply(1, sent_to(outbox, 1)[0], AppendEntriesReply(3, False))

    assert core.take_reads() == [ReadRefused(1)]
    assert not core.is_leader


def test_a_later_rounds_quorum_confirms_the_earlier_rounds_reads() -> None:
    core = leader(peers=5)
    assert core.read_index(1)
    _, first = drain(core)
    assert core.read_index(2)
    _, second = drain(core)

    for peer in (1, 2):
        answer(core, peer, sent_to(second, peer)[0])

    assert core.take_reads() == [
        ReadConfirmed(1, core.commit_index),
        ReadConfirmed(2, core.commit_index),
    ]
    answer(core, 3, sent_to(first, 3)[0])
    assert core.take_reads() == []


def test_a_single_peer_confirms_at_once() -> None:
    core = leader(peers=1)
    assert core.read_index(1)
    assert drain(core)[1] == []
    assert core.take_reads() == [ReadConfirmed(1, core.commit_index)]


def test_a_follower_refuses_to_serve_reads() -> None:
    core = leader()
    core.step_down()
    assert not core.read_index(1)


def test_a_new_leader_confirms_reads_once_its_noop_commits() -> None:
    """§8: until an entry of its term commits, its commit index may be stale."""
    from .helpers import make_core

    core = make_core([1, 2], term=2, config=replace(CONFIG, leader_noop=True))
    request = campaign(core)[0].request
    core.take_storage_ops()
    core.on_request_vote_reply(1, request, RequestVoteReply(3, True))
    drain(core)
    assert core.read_index(1)
    assert drain(core)[1] == []  # no round yet: its commit index is not known to be current

    core.on_log_durable(3, 3)
    outbox = ack(core, 1, 3)  # the no-op commits: the round starts
    answer(core, 1, sent_to(outbox, 1)[-1], term=3)

    assert core.take_reads() == [ReadConfirmed(1, 3)]


def test_without_a_noop_a_new_leader_refuses_reads_until_it_commits() -> None:
    from .helpers import make_core

    core = make_core([1, 2], term=2)
    request = campaign(core)[0].request
    core.on_request_vote_reply(1, request, RequestVoteReply(3, True))
    assert core.is_leader
    assert not core.read_index(1)
