"""Leader backup after a rejected AppendEntries (§5.3, Lab 2 handout XTerm/XIndex/XLen).

The leader is S0 at term 8 with the log of the paper's Figure 7 leader,
[1, 1, 1, 4, 4, 5, 5, 6, 6, 6] (indexes 1..10). Just elected, it has
probed each follower with an empty AppendEntries at prev 10@6. The
handout's rules: the follower's log is too short (x_term 0) -> next = x_len;
the leader has no entry of x_term -> next = x_index; it has -> next = its
last index of x_term + 1. next never exceeds the rejected prev_log_index
and never falls to or below match_index.
"""

from __future__ import annotations

import pytest

from raftio.core import RaftCore, Replication, Role
from raftio.messages import AppendEntriesArgs, AppendEntriesReply, SaveHardState, Send

from .helpers import HEARTBEAT, ack, drain, encoded, entries, make_core, make_leader, requests

FIG7 = [1, 1, 1, 4, 4, 5, 5, 6, 6, 6]
PROBE = AppendEntriesArgs(8, 0, 10, 6, [], 0)  # what the new leader sent everyone


def fig7_leader() -> RaftCore:
    return make_leader(FIG7, term=8)


def probe_from(core: RaftCore, next_index: int) -> AppendEntriesArgs:
    """The AppendEntries a leader sends a PROBE follower whose next_index is `next_index`."""
    prev = next_index - 1
    prev_term = core.log.term_at(prev)
    assert prev_term is not None
    new = [core.log.entry(i) for i in range(next_index, core.log.last_index + 1)]
    return AppendEntriesArgs(core.current_term, core.me, prev, prev_term, new, core.commit_index)


def reject(x_term: int, x_index: int, x_len: int, term: int = 8) -> AppendEntriesReply:
    return AppendEntriesReply(term, False, 0, x_term, x_index, x_len)


@pytest.mark.parametrize(
    ("reply", "next_index"),
    [
        # the follower's log is too short: next = x_len (Figure 7 (a), (b), (e))
        (reject(0, 0, 10), 10),
        (reject(0, 0, 5), 5),
        (reject(0, 0, 8), 8),
        (reject(0, 0, 1), 1),
        # the leader has no entry of x_term: next = x_index (Figure 7 (f): 3s from 7)
        (reject(3, 7, 12), 7),
        (reject(2, 4, 12), 4),
        # the leader has x_term: next = its last index of that term + 1
        (reject(4, 4, 11), 6),
        (reject(5, 6, 11), 8),
        (reject(1, 1, 11), 4),
        # never past the rejected prev_log_index (hints from a confused follower)
        (reject(0, 0, 20), 10),
        (reject(6, 8, 12), 10),
    ],
)
def test_fast_backup(reply: AppendEntriesReply, next_index: int) -> None:
    """Lab 2 handout: one round trip per conflicting term, not per entry (§5.3 optimization)."""
    core = fig7_leader()

    core.on_append_entries_reply(1, PROBE, reply)

    pr = core.progress[1]
    assert (pr.next_index, pr.match_index, pr.state) == (next_index, 0, Replication.PROBE)
    assert drain(core) == ([], [Send(1, probe_from(core, next_index))])
    assert core.progress[2].next_index == 11


def test_backup_walks_figure_7_f_to_agreement() -> None:
    """§5.3 Figure 7 (f): two rejections back up past terms 3 and 2; then entries flow."""
    leader = fig7_leader()
    follower = make_core([1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3], term=3, me=1)

    args = PROBE
    for _ in range(3):
        reply = follower.handle_append_entries(args)
        leader.on_append_entries_reply(1, args, reply)
        outbox = leader.take_outbox()
        if not outbox:
            break
        (sent,) = requests(outbox)
        assert isinstance(sent, AppendEntriesArgs)
        args = sent

    assert [e.term for e in follower.log.entries] == FIG7
    assert follower.log.entries == entries(1, *FIG7)
    pr = leader.progress[1]
    assert (pr.match_index, pr.next_index, pr.state) == (10, 11, Replication.REPLICATE)


@pytest.mark.parametrize(
    ("args", "reply"),
    [
        # an AppendEntries from an earlier term of ours
        (AppendEntriesArgs(7, 0, 10, 6, [], 0), reject(0, 0, 5, term=8)),
        # PROBE: the answer to an older probe than the one outstanding
        (AppendEntriesArgs(8, 0, 9, 6, [], 0), reject(0, 0, 5)),
        (AppendEntriesArgs(8, 0, 4, 4, [], 0), reject(0, 0, 3)),
    ],
)
def test_stale_rejections_are_ignored(args: AppendEntriesArgs, reply: AppendEntriesReply) -> None:
    """§5.3: a rejection that does not answer the outstanding probe changes nothing."""
    core = fig7_leader()

    core.on_append_entries_reply(1, args, reply)

    pr = core.progress[1]
    assert (pr.next_index, pr.match_index, pr.state) == (11, 0, Replication.PROBE)
    assert drain(core) == ([], [])


def test_duplicate_rejection_is_ignored() -> None:
    """§5.3: the same rejection delivered twice backs up once."""
    core = fig7_leader()
    core.on_append_entries_reply(1, PROBE, reject(0, 0, 8))
    drain(core)

    core.on_append_entries_reply(1, PROBE, reject(0, 0, 8))

    assert core.progress[1].next_index == 8
    assert drain(core) == ([], [])


def test_rejection_at_or_below_match_is_ignored() -> None:
    """§5.3: once the follower matched through 7, a rejection below that is stale."""
    core = fig7_leader()
    ack(core, 1, 7)
    drain(core)

    core.on_append_entries_reply(1, AppendEntriesArgs(8, 0, 5, 4, [], 0), reject(0, 0, 4))
    core.on_append_entries_reply(1, AppendEntriesArgs(8, 0, 7, 5, [], 0), reject(0, 0, 4))

    pr = core.progress[1]
    assert (pr.match_index, pr.state) == (7, Replication.REPLICATE)
    assert drain(core) == ([], [])


def test_rejection_never_backs_up_to_match() -> None:
    """§5.3: next_index stays above match_index whatever the hints say."""
    core = fig7_leader()
    first = ack(core, 1, 7)
    assert first == [Send(1, AppendEntriesArgs(8, 0, 7, 5, entries(8, 6, 6, 6), 0))]
    core.start(encoded("x"))
    (second,) = requests(core.take_outbox())  # pipelined behind the first
    assert isinstance(second, AppendEntriesArgs)
    assert (second.prev_log_index, len(second.entries)) == (10, 1)

    # the first was lost, so the follower rejects the second; its hints say "length 3"
    core.on_append_entries_reply(1, second, reject(0, 0, 3))

    pr = core.progress[1]
    assert (pr.next_index, pr.match_index, pr.state) == (8, 7, Replication.PROBE)
    assert drain(core)[1] == [Send(1, probe_from(core, 8))]


def test_rejection_with_higher_term_deposes_leader() -> None:
    """§5.1: a reply carrying a higher term turns the leader into a follower."""
    core = fig7_leader()

    core.on_append_entries_reply(1, PROBE, reject(0, 0, 0, term=9))

    assert (core.role, core.current_term, core.voted_for) == (Role.FOLLOWER, 9, None)
    assert drain(core) == ([SaveHardState(9, None)], [])


def test_lost_probe_is_retried_at_the_next_heartbeat_only() -> None:
    """§5.3: a PROBE follower gets one AppendEntries per reply or heartbeat, never a loop."""
    core = fig7_leader()

    core.on_append_entries_reply(1, PROBE, None)
    assert drain(core) == ([], [])
    for _ in range(HEARTBEAT - 1):
        core.tick()
    assert drain(core) == ([], [])
    core.tick()

    assert drain(core) == ([], [Send(1, PROBE), Send(2, PROBE)])
