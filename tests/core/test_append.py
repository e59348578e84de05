"""The AppendEntries receiver (§5.3 log replication, Figure 2 receiver rules 1-5).

Unless a row says otherwise the follower is S0 of 3 at term 3 with log
[1, 1, 2, 3, 3] (indexes 1..5), and the leader is S1. Rejections carry the
Lab 2 handout's fast-backup hints: x_term / x_index for a conflicting
prev_log_term, x_len (last index + 1) for a prev_log_index past the log.
"""

from __future__ import annotations

import pytest

from raftio.core import Role
from raftio.messages import AppendEntriesArgs, AppendEntriesReply, AppendLog, SaveHardState

from .helpers import NARROW, ae, drain, entries, entry, make_core, make_leader, terms_of

LOG = [1, 1, 2, 3, 3]


def ok(term: int, match: int) -> AppendEntriesReply:
    return AppendEntriesReply(term, True, match)


def no(term: int, x_term: int, x_index: int, x_len: int) -> AppendEntriesReply:
    return AppendEntriesReply(term, False, 0, x_term, x_index, x_len)


@pytest.mark.parametrize(
    ("args", "reply", "log", "ops"),
    [
        # §5.1 rule 1: a stale term is refused without hints
        (ae(2, 5, 3, commit=5), AppendEntriesReply(3, False), LOG, []),
        (ae(2, 9, 9, entries(10, 2)), AppendEntriesReply(3, False), LOG, []),
        # rule 2, prev_log_index past the log: x_term = 0, x_len = last index + 1
        (ae(3, 6, 3), no(3, 0, 0, 6), LOG, []),
        (ae(3, 9, 3, entries(10, 3)), no(3, 0, 0, 6), LOG, []),
        # rule 2, prev_log_term differs: the follower's term there and its first index
        (ae(3, 5, 2), no(3, 3, 4, 6), LOG, []),
        (ae(3, 4, 2), no(3, 3, 4, 6), LOG, []),
        (ae(3, 3, 1, entries(4, 3)), no(3, 2, 3, 6), LOG, []),
        (ae(3, 2, 3), no(3, 1, 1, 6), LOG, []),
        # rule 4: new entries after a matching prev are appended, and only they are written
        (ae(3, 5, 3, entries(6, 3, 3)), ok(3, 7), [*LOG, 3, 3], [AppendLog(6, entries(6, 3, 3))]),
        (ae(3, 0, 0, entries(1, *LOG, 3)), ok(3, 6), [*LOG, 3], [AppendLog(6, [entry(6, 3)])]),
        # rule 3: re-delivered or reordered entries that match are no-ops, never truncate
        (ae(3, 1, 1, entries(2, 1, 2)), ok(3, 3), LOG, []),
        (ae(3, 0, 0, entries(1, *LOG)), ok(3, 5), LOG, []),
        (ae(3, 2, 1), ok(3, 2), LOG, []),
        (ae(3, 5, 3), ok(3, 5), LOG, []),
        # rule 3: truncate at the first conflicting entry only, then append the rest
        (
            ae(5, 3, 2, entries(4, 5)),
            ok(5, 4),
            [1, 1, 2, 5],
            [SaveHardState(5, None), AppendLog(4, [entry(4, 5)])],
        ),
        (
            ae(5, 1, 1, entries(2, 1, 4, 4)),
            ok(5, 4),
            [1, 1, 4, 4],
            [SaveHardState(5, None), AppendLog(3, entries(3, 4, 4))],
        ),
        (
            ae(5, 0, 0, entries(1, 1, 1, 2, 3, 5, 5, 5)),
            ok(5, 7),
            [1, 1, 2, 3, 5, 5, 5],
            [SaveHardState(5, None), AppendLog(5, entries(5, 5, 5, 5))],
        ),
        # §5.1: a higher term is adopted (and persisted) before the log check
        (ae(4, 5, 3), ok(4, 5), LOG, [SaveHardState(4, None)]),
        (ae(4, 7, 4), no(4, 0, 0, 6), LOG, [SaveHardState(4, None)]),
    ],
)
def test_handle_append_entries(
    args: AppendEntriesArgs,
    reply: AppendEntriesReply,
    log: list[int],
    ops: list[tuple[object, ...]],
) -> None:
    """§5.3: Figure 2 AppendEntries receiver, with the handout's XTerm/XIndex/XLen hints."""
    core = make_core(LOG, term=3)

    got = core.handle_append_entries(args)

    assert got == reply
    assert terms_of(core) == log
    assert core.log.entries == entries(1, *log)
    assert drain(core) == (ops, [])
    assert core.role is Role.FOLLOWER
    assert core.current_term == reply.term
    assert core.leader_id == (1 if args.term >= 3 else None)


@pytest.mark.parametrize(
    ("args", "commit"),
    [
        # rule 5: commit_index = min(leader_commit, index of last new entry)
        (ae(3, 5, 3, commit=3), 3),
        (ae(3, 5, 3, commit=9), 5),
        (ae(3, 3, 2, entries(4, 3), commit=5), 4),
        (ae(3, 5, 3, entries(6, 3), commit=9), 6),
        # a heartbeat anchored at 2 vouches for nothing after 2, whatever the log holds
        (ae(3, 2, 1, commit=5), 2),
        (ae(3, 0, 0, commit=5), 0),
        # a rejected or stale AppendEntries commits nothing
        (ae(3, 5, 9, commit=5), 0),
        (ae(3, 7, 3, commit=5), 0),
        (ae(2, 5, 3, commit=5), 0),
    ],
)
def test_follower_commit_index(args: AppendEntriesArgs, commit: int) -> None:
    """§5.3 rule 5: a follower commits only what the leader committed and it has matched."""
    core = make_core(LOG, term=3)

    core.handle_append_entries(args)

    assert core.commit_index == commit


@pytest.mark.parametrize(
    "later",
    [
        # a reordered heartbeat from earlier
        ae(3, 2, 1, commit=2),
        # a lower leader_commit
        ae(3, 5, 3, commit=1),
        # a re-delivered AppendEntries carrying fewer entries
        ae(3, 1, 1, entries(2, 1), commit=4),
    ],
)
def test_follower_commit_never_decreases(later: AppendEntriesArgs) -> None:
    """§5.3: committed entries stay committed; commit_index only grows."""
    core = make_core(LOG, term=3)
    core.handle_append_entries(ae(3, 5, 3, commit=4))
    assert core.commit_index == 4

    reply = core.handle_append_entries(later)

    assert reply.success
    assert core.commit_index == 4
    assert terms_of(core) == LOG


# A follower with a snapshot through 5@2 and entries 6@2, 7@3; commit_index = 5.
SNAP = (5, 2)
SNAP_LOG = [2, 3]


@pytest.mark.parametrize(
    ("args", "reply", "log", "ops"),
    [
        # entries through the snapshot are committed, hence equal: skip them, merge the rest
        (
            ae(3, 3, 1, entries(4, 2, 2, 2, 3, 3)),
            ok(3, 8),
            [2, 3, 3],
            [AppendLog(8, [entry(8, 3)])],
        ),
        (ae(3, 4, 2, entries(5, 2, 2)), ok(3, 6), SNAP_LOG, []),
        # entirely inside the snapshot: success at the snapshot index
        (ae(3, 2, 1, entries(3, 1, 2, 2)), ok(3, 5), SNAP_LOG, []),
        # wholly inside the snapshot: confirms what was sent, no more
        (ae(3, 4, 2), ok(3, 4), SNAP_LOG, []),
        # the part after the snapshot conflicts: truncated there
        (
            ae(4, 4, 2, entries(5, 2, 4)),
            ok(4, 6),
            [4],
            [SaveHardState(4, None), AppendLog(6, [entry(6, 4)])],
        ),
        # prev at the snapshot index matches by the snapshot's term
        (ae(3, 5, 2, entries(6, 2, 3, 3)), ok(3, 8), [2, 3, 3], [AppendLog(8, [entry(8, 3)])]),
        # hints still count from the log after the snapshot
        (ae(3, 7, 2), no(3, 3, 7, 8), SNAP_LOG, []),
        (ae(3, 9, 3), no(3, 0, 0, 8), SNAP_LOG, []),
    ],
)
def test_append_entries_overlapping_snapshot(
    args: AppendEntriesArgs,
    reply: AppendEntriesReply,
    log: list[int],
    ops: list[tuple[object, ...]],
) -> None:
    """§7: a follower ignores the part of an AppendEntries its snapshot already covers."""
    core = make_core(SNAP_LOG, term=3, snapshot=SNAP)

    got = core.handle_append_entries(args)

    assert got == reply
    assert (core.log.snapshot_index, core.log.snapshot_term) == SNAP
    assert core.log.entries == entries(6, *log)
    assert drain(core) == (ops, [])
    assert core.commit_index == 5


def test_truncation_forgets_durability_of_dropped_entries() -> None:
    """§5.3: entries replaced by a truncation are no longer durable; late reports are ignored."""
    core = make_core(LOG, term=3)  # restored, so durable through 5
    assert core.durable_index == 5

    core.handle_append_entries(ae(5, 3, 2, entries(4, 5)))
    assert core.durable_index == 3

    core.on_log_durable(4, 3)  # the write of the old entry 4@3 finishing late
    assert core.durable_index == 3
    core.on_log_durable(4, 5)
    assert core.durable_index == 4


@pytest.mark.parametrize(
    ("args", "resets"),
    [
        # any AppendEntries of the current term resets the timer, even a rejected one
        (ae(3, 5, 3), True),
        (ae(3, 9, 3), True),
        (ae(4, 5, 3), True),
        # a stale leader's does not (§5.1)
        (ae(2, 5, 3), False),
    ],
)
def test_append_entries_resets_election_timer(args: AppendEntriesArgs, resets: bool) -> None:
    """§5.2: a follower stays follower while it hears from a current leader."""
    core = make_core(LOG, term=3, config=NARROW)  # timeout 30 or 31 ticks
    for _ in range(29):
        core.tick()

    core.handle_append_entries(args)
    for _ in range(29):
        core.tick()

    assert core.role is (Role.FOLLOWER if resets else Role.CANDIDATE)


def test_leader_refuses_stale_append_entries() -> None:
    """§5.1: a leader rejects a request from an older term and stays leader."""
    core = make_leader([1, 1], term=3)

    reply = core.handle_append_entries(ae(2, 2, 1, entries(3, 2), commit=3, leader=2))

    assert reply == AppendEntriesReply(3, False)
    assert core.role is Role.LEADER
    assert terms_of(core) == [1, 1]
    assert drain(core) == ([], [])


def test_leader_steps_down_on_higher_term_append_entries() -> None:
    """§5.1: a leader that learns of a higher term becomes a follower of the new leader."""
    core = make_leader([1, 1], term=3)

    reply = core.handle_append_entries(ae(4, 2, 1, entries(3, 4), leader=2))

    assert reply == ok(4, 3)
    assert (core.role, core.current_term, core.leader_id, core.progress) == (
        Role.FOLLOWER,
        4,
        2,
        {},
    )
    assert drain(core) == ([SaveHardState(4, None), AppendLog(3, [entry(3, 4)])], [])
