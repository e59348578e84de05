"""Log compaction and InstallSnapshot (§7).

Three setups: a follower that compacts its own applied prefix; a leader
with a snapshot through 5@1 (then entries 6@1, 7@1) that must send it to a
lagging follower; and a follower receiving InstallSnapshot.
"""

from __future__ import annotations

import zlib

import pytest

from raftio.core import RaftCore, Replication, Role
from raftio.membership import Configuration
from raftio.messages import (
    AppendEntriesArgs,
    AppendEntriesReply,
    AppendLog,
    ApplyMsg,
    InstallSnapshotArgs,
    InstallSnapshotReply,
    SaveHardState,
    SaveSnapshot,
    Send,
    StagedSnapshot,
)

from .helpers import (
    ELECTION_MAX,
    HEARTBEAT,
    ack,
    ae,
    applied,
    campaign,
    compact,
    drain,
    encoded,
    entries,
    install,
    make_core,
    make_leader,
    requests,
    sent_to,
    snapshot_bytes,
    terms_of,
)

THREE = Configuration.of_voters(["", "", ""])  # the bootstrap of three peers


# --- compact: the service snapshotted a prefix it has applied ---------------------------


def applied_follower() -> RaftCore:
    """Term 3, log [1, 1, 2, 2, 3], committed and applied through 4."""
    core = make_core([1, 1, 2, 2, 3], term=3)
    core.handle_append_entries(ae(3, 5, 3, commit=4))
    assert len(applied(core, 100)) == 4
    return core


@pytest.mark.parametrize(
    ("index", "snapshot", "remaining"),
    [
        # discard the prefix through index, keep the rest
        (1, (1, 1), [1, 2, 2, 3]),
        (3, (3, 2), [2, 3]),
        # up to the last applied index
        (4, (4, 2), [3]),
    ],
)
def test_compact(index: int, snapshot: tuple[int, int], remaining: list[int]) -> None:
    """§7: a snapshot replaces the committed, applied prefix of the log."""
    core = applied_follower()

    assert compact(core, index, b"state") is True

    assert (core.log.snapshot_index, core.log.snapshot_term) == snapshot
    assert terms_of(core) == remaining
    assert snapshot_bytes(core) == b"state"
    assert core.take_storage_ops() == [SaveSnapshot(index, snapshot[1], b"state", THREE)]
    assert (core.commit_index, core.applied_index) == (4, 4)


@pytest.mark.parametrize("index", [0, 2, 3])
def test_compact_at_or_below_snapshot_is_ignored(index: int) -> None:
    """§7: an older snapshot than the one we have changes nothing."""
    core = applied_follower()
    compact(core, 3, b"new")
    core.take_storage_ops()

    assert compact(core, index, b"old") is False

    assert (core.log.snapshot_index, snapshot_bytes(core)) == (3, b"new")
    assert core.take_storage_ops() == []


@pytest.mark.parametrize("index", [5, 6, 99])
def test_compact_past_applied_raises(index: int) -> None:
    """§7: a service can snapshot only entries it has been given."""
    core = applied_follower()

    with pytest.raises(ValueError, match="past the last index handed to the service"):
        compact(core, index, b"state")

    assert (core.log.snapshot_index, terms_of(core)) == (0, [1, 1, 2, 2, 3])
    assert core.take_storage_ops() == []


def test_compact_committed_but_not_applied_raises() -> None:
    """§7: committed is not enough; the service must have applied the entries it snapshots."""
    core = make_core([1, 1, 2, 2, 3], term=3)
    core.handle_append_entries(ae(3, 5, 3, commit=4))
    assert len(applied(core, 2)) == 2

    with pytest.raises(ValueError, match="past the last index handed to the service"):
        compact(core, 3, b"state")

    assert compact(core, 2, b"state") is True


def test_compact_past_restored_snapshot_needs_applying_first() -> None:
    """§7: after a restart only the snapshot counts as applied."""
    core = make_core([2, 2], term=2, snapshot=(5, 2))

    with pytest.raises(ValueError, match="past the last index"):
        compact(core, 6, b"x")


# --- the leader sends its snapshot to a follower that needs compacted entries -----------

SNAP_DATA = b"snapshot through 5"


def offer(
    term: int, leader: int, index: int, snapshot_term: int, data: bytes, transfer: int = 1
) -> InstallSnapshotArgs:
    """The one chunk a leader's core sends for a small snapshot (its shell fills the data)."""
    size, crc = len(data), zlib.crc32(data)
    return InstallSnapshotArgs(
        term, leader, index, snapshot_term, b"", THREE, 0, True, transfer, size, crc
    )


def staged(index: int, term: int, data: bytes) -> StagedSnapshot:
    """A received snapshot as the shell hands it to the core to install."""
    return StagedSnapshot(index, term, len(data), zlib.crc32(data), data=data)


INSTALL = offer(3, 0, 5, 1, SNAP_DATA)
INSTALLED = InstallSnapshotReply(3, len(SNAP_DATA), 1)  # the follower holds it all
# Sent before every InstallSnapshot (and while one travels): an empty
# AppendEntries anchored at the snapshot that tells the follower our commit
# index, without which it refuses the snapshot (validate.check_install_snapshot).
BEAT = AppendEntriesArgs(3, 0, 5, 1, [], 5)
SEND_SNAPSHOT = [Send(1, BEAT), Send(1, INSTALL)]


def snapshot_leader() -> RaftCore:
    """S0 leading term 3 over snapshot 5@1 and entries 6@1, 7@1; both followers probed at 7."""
    return make_leader([1, 1], term=3, snapshot=(5, 1), snapshot_data=SNAP_DATA)


def snapshot_sent(core: RaftCore) -> RaftCore:
    """Follower 1 said its log ends at 2: the leader has sent it INSTALL."""
    probe = AppendEntriesArgs(3, 0, 7, 1, [], 5)
    core.on_append_entries_reply(1, probe, AppendEntriesReply(3, False, 0, 0, 0, 3))
    assert drain(core) == ([], SEND_SNAPSHOT)
    return core


def test_leader_sends_snapshot_when_next_index_is_compacted() -> None:
    """§7: the leader sends InstallSnapshot when it has discarded the next entry to send."""
    core = snapshot_sent(snapshot_leader())

    pr = core.progress[1]
    assert (pr.state, pr.next_index, pr.match_index) == (Replication.SNAPSHOT, 3, 0)
    assert core.progress[2].state is Replication.PROBE


@pytest.mark.parametrize(
    ("x_len", "sent"),
    [
        # next_index at or below the snapshot index: the entry is gone, send the snapshot
        (3, SEND_SNAPSHOT),
        (5, SEND_SNAPSHOT),
        # next_index just after it: prev is the snapshot's last entry, append from there
        (6, [Send(1, AppendEntriesArgs(3, 0, 5, 1, entries(6, 1, 1), 5))]),
        (7, [Send(1, AppendEntriesArgs(3, 0, 6, 1, entries(7, 1), 5))]),
    ],
)
def test_snapshot_boundary(x_len: int, sent: list[tuple[int, str, object]]) -> None:
    """§7: InstallSnapshot exactly when next_index <= snapshot index."""
    core = snapshot_leader()
    probe = AppendEntriesArgs(3, 0, 7, 1, [], 5)

    core.on_append_entries_reply(1, probe, AppendEntriesReply(3, False, 0, 0, 0, x_len))

    assert drain(core) == ([], sent)


def test_leader_sends_snapshot_after_compacting_past_a_lagging_follower() -> None:
    """§7: a follower whose entries were lost after compaction gets the snapshot instead."""
    core = make_leader([1, 1, 1], term=2, synced=True)
    for command in "ab":
        core.start(encoded(command))
    (lost, _) = requests(core.take_outbox())
    assert isinstance(lost, AppendEntriesArgs)
    core.on_log_durable(5, 2)
    ack(core, 2, 5)
    assert len(applied(core, 100)) == 5
    assert compact(core, 5, b"s5")
    drain(core)

    core.on_append_entries_reply(1, lost, None)
    for _ in range(HEARTBEAT):
        core.tick()

    install = offer(2, 0, 5, 2, b"s5")
    assert drain(core)[1] == [
        Send(1, AppendEntriesArgs(2, 0, 5, 2, [], 5)),
        Send(1, install),
        Send(2, AppendEntriesArgs(2, 0, 5, 2, [], 5)),
    ]


def test_snapshot_success_resumes_appending_after_it() -> None:
    """§7: once installed, the follower matches through the snapshot; entries follow."""
    core = snapshot_sent(snapshot_leader())

    core.on_install_snapshot_reply(1, INSTALL, INSTALLED)

    pr = core.progress[1]
    assert (pr.state, pr.match_index, pr.next_index) == (Replication.PROBE, 5, 6)
    after = AppendEntriesArgs(3, 0, 5, 1, entries(6, 1, 1), 5)
    assert drain(core) == ([], [Send(1, after)])


@pytest.mark.parametrize(
    ("args", "reply"),
    [
        # an InstallSnapshot of an earlier term of ours
        (InstallSnapshotArgs(2, 0, 5, 1, SNAP_DATA), InstallSnapshotReply(3)),
    ],
)
def test_stale_snapshot_reply_is_ignored(
    args: InstallSnapshotArgs, reply: InstallSnapshotReply
) -> None:
    """§7/§5.1: only the answer to this term's InstallSnapshot counts."""
    core = snapshot_sent(snapshot_leader())

    core.on_install_snapshot_reply(1, args, reply)

    assert (core.progress[1].state, core.progress[1].match_index) == (Replication.SNAPSHOT, 0)
    assert drain(core) == ([], [])


def test_duplicate_snapshot_reply_is_ignored() -> None:
    """§7: a second answer to the same InstallSnapshot sends nothing more."""
    core = snapshot_sent(snapshot_leader())
    core.on_install_snapshot_reply(1, INSTALL, INSTALLED)
    drain(core)

    core.on_install_snapshot_reply(1, INSTALL, INSTALLED)

    assert core.progress[1].next_index == 6
    assert drain(core) == ([], [])


def test_snapshot_reply_with_higher_term_deposes_leader() -> None:
    """§5.1: an InstallSnapshot reply of a higher term ends this leadership."""
    core = snapshot_sent(snapshot_leader())

    core.on_install_snapshot_reply(1, INSTALL, InstallSnapshotReply(4))

    assert (core.role, core.current_term) == (Role.FOLLOWER, 4)
    assert drain(core) == ([SaveHardState(4, None)], [])


def test_rejections_while_snapshot_in_flight_are_ignored() -> None:
    """§7: while the snapshot travels, rejected heartbeats do not restart the backup."""
    core = snapshot_sent(snapshot_leader())
    beat = AppendEntriesArgs(3, 0, 5, 1, [], 5)

    core.on_append_entries_reply(1, beat, AppendEntriesReply(3, False, 0, 0, 0, 3))

    assert core.progress[1].state is Replication.SNAPSHOT
    assert drain(core) == ([], [])


def test_lost_snapshot_is_resent_at_the_next_heartbeat() -> None:
    """§7: a failed InstallSnapshot is retried, at heartbeat pace."""
    core = snapshot_sent(snapshot_leader())

    core.on_install_snapshot_reply(1, INSTALL, None)
    assert core.progress[1].state is Replication.SNAPSHOT
    assert core.take_outbox() == []
    for _ in range(HEARTBEAT):
        core.tick()

    assert [s for s in core.take_outbox() if s.peer == 1] == SEND_SNAPSHOT


def test_heartbeats_while_snapshot_in_flight() -> None:
    """§7: heartbeats keep the follower from campaigning while a chunk is in flight."""
    core = snapshot_sent(snapshot_leader())

    sent = {}
    for tick in range(1, ELECTION_MAX + HEARTBEAT):
        core.tick()
        sent[tick] = sent_to(core.take_outbox(), 1)

    beat = BEAT
    for tick, out in sent.items():
        if tick % HEARTBEAT:
            assert out == [], tick
        elif tick < ELECTION_MAX:
            assert out == [beat], tick
        else:
            assert out == [beat], tick  # the chunk in flight is waited for, however long


# --- a follower receives InstallSnapshot --------------------------------------------------

FOLLOWER_LOG = [1, 1, 1, 2, 2]  # term 2, committed through 2


def committed_follower() -> RaftCore:
    core = make_core(FOLLOWER_LOG, term=2)
    core.handle_append_entries(ae(2, 5, 2, commit=2))
    return core


@pytest.mark.parametrize(
    ("args", "ops", "snapshot", "remaining"),
    [
        # §7: the log has the snapshot's last entry: keep the entries that follow it
        (
            InstallSnapshotArgs(2, 1, 3, 1, b"s"),
            [SaveSnapshot(3, 1, staged(3, 1, b"s"), THREE)],
            (3, 1),
            [2, 2],
        ),
        (
            InstallSnapshotArgs(2, 1, 5, 2, b"s"),
            [SaveSnapshot(5, 2, staged(5, 2, b"s"), THREE)],
            (5, 2),
            [],
        ),
        # the log conflicts with the snapshot: discard it all
        (
            InstallSnapshotArgs(3, 1, 4, 3, b"s"),
            [SaveSnapshot(4, 3, staged(4, 3, b"s"), THREE), AppendLog(5, [])],
            (4, 3),
            [],
        ),
        # the log is too short: discard it all
        (
            InstallSnapshotArgs(2, 1, 8, 2, b"s"),
            [SaveSnapshot(8, 2, staged(8, 2, b"s"), THREE), AppendLog(9, [])],
            (8, 2),
            [],
        ),
        # at or below the commit index: nothing new, ignored
        (InstallSnapshotArgs(2, 1, 2, 1, b"s"), [], (0, 0), FOLLOWER_LOG),
        (InstallSnapshotArgs(2, 1, 1, 1, b"s"), [], (0, 0), FOLLOWER_LOG),
        # §5.1: a stale leader's snapshot is refused
        (InstallSnapshotArgs(1, 1, 5, 2, b"s"), [], (0, 0), FOLLOWER_LOG),
    ],
)
def test_handle_install_snapshot(
    args: InstallSnapshotArgs,
    ops: list[tuple[object, ...]],
    snapshot: tuple[int, int],
    remaining: list[int],
) -> None:
    """§7: InstallSnapshot receiver rules 1, 6 and 7 (one chunk: offset 0, done)."""
    core = committed_follower()
    installed = snapshot != (0, 0)
    if args.term >= 2:  # the snapshot's leader has told us its commit index (8)
        core.handle_append_entries(ae(args.term, 0, 0, commit=8))
        drain(core)

    reply = install(core, args)

    assert reply == InstallSnapshotReply(max(args.term, 2))
    assert (core.log.snapshot_index, core.log.snapshot_term) == snapshot
    assert terms_of(core) == remaining
    assert drain(core) == (ops, [])
    assert core.durable_index <= core.log.last_index  # a dropped log is no longer durable
    if installed:
        assert snapshot_bytes(core) == b"s"
        assert (core.commit_index, core.applied_index) == (snapshot[0], snapshot[0])
        assert applied(core, 100) == [
            ApplyMsg(
                snapshot_valid=True,
                snapshot=b"s",
                snapshot_term=snapshot[1],
                snapshot_index=snapshot[0],
            )
        ]
    else:
        assert (core.commit_index, snapshot_bytes(core)) == (2, b"")
        assert [m.command_index for m in applied(core, 100)] == [1, 2]


def test_snapshot_is_delivered_before_later_entries() -> None:
    """§7: the service gets the snapshot once, then only entries after it, in order."""
    core = make_core([1, 1, 1], term=1)
    core.handle_append_entries(ae(1, 2, 1, commit=5))  # 1..2 committed, not yet applied

    install(core, InstallSnapshotArgs(1, 1, 5, 1, b"s5"))
    core.handle_append_entries(ae(1, 5, 1, entries(6, 1, 1), commit=7))

    assert core.has_applicable()
    assert applied(core, 100) == [
        ApplyMsg(snapshot_valid=True, snapshot=b"s5", snapshot_term=1, snapshot_index=5)
    ]
    assert [(m.command_valid, m.command_index, m.command) for m in applied(core, 100)] == [
        (True, 6, "6@1"),
        (True, 7, "7@1"),
    ]
    assert not core.has_applicable()


def test_install_keeping_suffix_applies_it_after_the_snapshot() -> None:
    """§7: entries kept after the snapshot are applied once committed, after the snapshot."""
    core = make_core(FOLLOWER_LOG, term=2)
    core.handle_append_entries(ae(2, 0, 0, commit=3))

    install(core, InstallSnapshotArgs(2, 1, 3, 1, b"s3"))
    core.handle_append_entries(ae(2, 5, 2, commit=5))

    assert [m.snapshot_index for m in applied(core, 100)] == [3]
    assert [m.command_index for m in applied(core, 100)] == [4, 5]


def test_install_snapshot_makes_candidate_follow() -> None:
    """§5.2/§7: a leader of our term announces its commit, then its snapshot installs."""
    core = make_core([1], term=1)
    campaign(core)
    drain(core)
    snapshot = InstallSnapshotArgs(2, 2, 4, 2, b"s")

    # Unannounced, it is refused (a forgery could carry any index).
    assert install(core, snapshot) is None
    assert core.role is Role.CANDIDATE
    core.handle_append_entries(ae(2, 0, 0, commit=4, leader=2))
    assert drain(core) == ([], [])
    assert install(core, snapshot) == InstallSnapshotReply(2)

    assert (core.role, core.current_term, core.leader_id, core.voted_for) == (
        Role.FOLLOWER,
        2,
        2,
        0,
    )
    assert drain(core) == ([SaveSnapshot(4, 2, staged(4, 2, b"s"), THREE), AppendLog(5, [])], [])
