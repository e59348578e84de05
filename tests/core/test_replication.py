"""A leader's replication stream: batching, pipelining and heartbeats (§5.2, §5.3).

Unless a test says otherwise the leader is S0 of 3 at term 1 with an empty
log, and both followers have answered its first AppendEntries, so they are
in REPLICATE with match_index 0 and nothing in flight. Commands are one
character, two bytes encoded.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import pytest

from raftio.core import RaftCore, Replication
from raftio.messages import AppendEntriesArgs, AppendEntriesReply, AppendLog, Send

from .helpers import (
    CONFIG,
    HEARTBEAT,
    ack,
    drain,
    encoded,
    make_core,
    make_leader,
    pairs,
    requests,
)


def synced_leader(max_inflight: int = 4, max_batch_bytes: int = 1 << 20) -> RaftCore:
    config = replace(CONFIG, max_inflight=max_inflight, max_batch_bytes=max_batch_bytes)
    return make_leader(term=1, config=config, synced=True)


def append_args(core: RaftCore, first: int, last: int) -> AppendEntriesArgs:
    """The AppendEntries carrying entries first..last of `core`'s log."""
    prev_term = core.log.term_at(first - 1)
    assert prev_term is not None
    new = [core.log.entry(i) for i in range(first, last + 1)]
    return AppendEntriesArgs(
        core.current_term, core.me, first - 1, prev_term, new, core.commit_index
    )


def succeed(core: RaftCore, peer: int, args: AppendEntriesArgs) -> None:
    match = args.prev_log_index + len(args.entries)
    core.on_append_entries_reply(peer, args, AppendEntriesReply(args.term, True, match))


def test_start_only_appends_then_outbox_sends_one_batch() -> None:
    """§5.3: entries started together go to each follower in one AppendEntries."""
    core = synced_leader()

    for command in "abc":
        core.start(encoded(command))
    ops = core.take_storage_ops()
    outbox = core.take_outbox()

    assert ops == [AppendLog(1, core.log.entries)]
    batch = append_args(core, 1, 3)
    assert outbox == [Send(1, batch), Send(2, batch)]
    assert [(pr.next_index, pr.inflight) for pr in core.progress.values()] == [(4, 1), (4, 1)]
    assert core.take_outbox() == []


def test_pipelining_sends_new_entries_without_waiting() -> None:
    """§5.3: a REPLICATE follower gets later entries while earlier ones are in flight."""
    core = synced_leader()
    core.start(encoded("a"))
    drain(core)

    core.start(encoded("b"))
    outbox = core.take_outbox()

    batch = append_args(core, 2, 2)
    assert outbox == [Send(1, batch), Send(2, batch)]
    assert [pr.inflight for pr in core.progress.values()] == [2, 2]


@pytest.mark.parametrize(
    ("max_inflight", "max_batch_bytes", "batches"),
    [
        # one entry per AppendEntries (2 bytes each), at most 2 in flight
        (2, 1, [(1, 1), (2, 2)]),
        (2, 2, [(1, 1), (2, 2)]),
        # two entries per AppendEntries, room for all
        (4, 4, [(1, 2), (3, 4), (5, 5)]),
        # one big batch
        (1, 100, [(1, 5)]),
        (4, 100, [(1, 5)]),
        # budget between entry sizes
        (3, 5, [(1, 2), (3, 4), (5, 5)]),
    ],
)
def test_batches_respect_byte_budget_and_max_inflight(
    max_inflight: int, max_batch_bytes: int, batches: list[tuple[int, int]]
) -> None:
    """§5.3: entries are sent in byte-bounded batches, at most max_inflight unanswered."""
    core = synced_leader(max_inflight, max_batch_bytes)
    for command in "abcde":
        core.start(encoded(command))

    outbox = core.take_outbox()

    want = [append_args(core, first, last) for first, last in batches]
    assert [args for peer, args in pairs(outbox) if peer == 1] == want
    assert [args for peer, args in pairs(outbox) if peer == 2] == want
    assert core.progress[1].inflight == len(batches)
    assert core.progress[1].next_index == batches[-1][1] + 1


def test_answer_frees_a_slot_for_the_next_batch() -> None:
    """§5.3: each success lets one more AppendEntries go, up to the end of the log."""
    core = synced_leader(max_inflight=2, max_batch_bytes=1)
    for command in "abcd":
        core.start(encoded(command))
    sent = [args for peer, args in pairs(core.take_outbox()) if peer == 1]
    assert isinstance(sent[0], AppendEntriesArgs)
    assert isinstance(sent[1], AppendEntriesArgs)

    succeed(core, 1, sent[0])
    third = core.take_outbox()
    succeed(core, 1, sent[1])
    fourth = core.take_outbox()

    assert third == [Send(1, append_args(core, 3, 3))]
    assert fourth == [Send(1, append_args(core, 4, 4))]
    pr = core.progress[1]
    assert (pr.match_index, pr.next_index, pr.inflight) == (2, 5, 2)


def test_full_pipeline_holds_new_entries_until_an_answer() -> None:
    """§5.3: with max_inflight unanswered, new entries wait for a free slot."""
    core = synced_leader(max_inflight=2, max_batch_bytes=1)
    core.start(encoded("a"))
    core.start(encoded("b"))
    sent = [args for peer, args in pairs(core.take_outbox()) if peer == 1]
    assert len(sent) == 2

    core.start(encoded("c"))
    held = core.take_outbox()
    assert isinstance(sent[0], AppendEntriesArgs)
    succeed(core, 1, sent[0])
    freed = core.take_outbox()

    assert held == []
    assert freed == [Send(1, append_args(core, 3, 3))]
    assert [core.progress[p].inflight for p in (1, 2)] == [2, 2]


def test_probe_success_switches_to_replicate_and_streams() -> None:
    """§5.3: once a probe finds the match point, the follower gets all pending entries."""
    core = make_leader([1, 1], term=2)
    core.start(encoded("a"))
    core.start(encoded("b"))
    assert core.take_outbox() == []  # both followers are waiting for their probe's answer

    outbox = ack(core, 1, 2)

    pr = core.progress[1]
    assert (pr.state, pr.match_index, pr.next_index) == (Replication.REPLICATE, 2, 5)
    assert outbox == [Send(1, append_args(core, 3, 4))]


def test_lost_reply_drops_to_probe_until_next_heartbeat() -> None:
    """§5.3: a failed AppendEntries is retried from match_index + 1, at heartbeat pace."""
    core = synced_leader()
    for command in "ab":
        core.start(encoded(command))
    (first, _) = requests(core.take_outbox())
    assert isinstance(first, AppendEntriesArgs)
    core.start(encoded("c"))
    core.take_outbox()  # 3 pipelined behind 1..2

    core.on_append_entries_reply(1, first, None)

    pr = core.progress[1]
    assert (pr.state, pr.next_index, pr.inflight) == (Replication.PROBE, 1, 0)
    assert core.take_outbox() == []
    for _ in range(HEARTBEAT - 1):
        core.tick()
    assert [peer for peer, _ in pairs(core.take_outbox())] == []
    core.tick()
    beats = core.take_outbox()
    assert [(p, a) for p, a in pairs(beats) if p == 1] == [(1, append_args(core, 1, 3))]
    assert core.progress[1].paused


def test_unanswered_entries_presumed_lost_after_two_heartbeats() -> None:
    """§5.3: entries in flight for more than two heartbeat intervals are resent."""
    core = synced_leader()
    core.start(encoded("a"))
    core.take_outbox()
    heartbeat = append_args(core, 1, 0)

    sent = []
    for _ in range(3 * HEARTBEAT):
        core.tick()
        sent.append([args for peer, args in pairs(core.take_outbox()) if peer == 1])

    assert sent[HEARTBEAT - 1] == [heartbeat]
    assert sent[2 * HEARTBEAT - 1] == [heartbeat]
    assert core.progress[1].state is Replication.PROBE
    assert sent[3 * HEARTBEAT - 1] == [append_args(core, 1, 1)]
    assert sum(map(len, sent)) == 3


@pytest.mark.parametrize(
    ("synced", "answer"),
    [
        # followers in REPLICATE, answering every heartbeat
        (True, True),
        # followers in REPLICATE, silent
        (True, False),
        # followers that never answered the first probe (PROBE, paused)
        (False, False),
    ],
)
def test_idle_heartbeat_cadence(synced: bool, answer: bool) -> None:
    """§5.2: an idle leader sends exactly one AppendEntries per follower per heartbeat interval."""
    core = make_leader([1], term=2, synced=synced)

    at: list[tuple[int, int]] = []
    for tick in range(1, 10 * HEARTBEAT + 1):
        core.tick()
        for peer, args in pairs(core.take_outbox()):
            assert isinstance(args, AppendEntriesArgs)
            assert (args.prev_log_index, args.prev_log_term, args.entries) == (1, 1, [])
            at.append((tick, peer))
            if answer:
                succeed(core, peer, args)

    assert Counter(peer for _, peer in at) == {1: 10, 2: 10}
    assert sorted({tick for tick, _ in at}) == [HEARTBEAT * k for k in range(1, 11)]
    assert core.take_storage_ops() == []


def test_entries_lost_to_reordering_are_resent_without_new_writes() -> None:
    """§5.3: a reject made stale by a later success must not strand the entries it carried.

    The leader sends A (prev=k) then B (prev=k+1); B arrives first and is rejected,
    then A is accepted. B's entry must be resent, not wait for the next write.
    """
    leader = make_leader([1], term=2, synced=True)
    follower = make_core([1], me=1, term=2)
    leader.start("a")
    _, a = drain(leader)
    leader.start("b")
    _, b = drain(leader)
    ae_a = next(x for p, x in pairs(a) if p == 1)
    ae_b = next(x for p, x in pairs(b) if p == 1)

    reply_b = follower.handle_append_entries(ae_b)
    reply_a = follower.handle_append_entries(ae_a)
    leader.on_append_entries_reply(1, ae_a, reply_a)
    leader.on_append_entries_reply(1, ae_b, reply_b)
    _, resent = drain(leader)

    to_follower = [x for p, x in pairs(resent) if p == 1]
    assert not reply_b.success
    assert to_follower
    for args in to_follower:
        follower.handle_append_entries(args)
    assert follower.log.last_index == leader.log.last_index


def test_a_late_tick_catches_up_only_the_heartbeat_timer() -> None:
    """A shell that ticks late (its loop was busy) keeps heartbeats at the clock's pace,
    but neither check-quorum nor the in-flight timer runs faster for it."""
    config = replace(CONFIG, check_quorum=True)
    core = make_leader([1], term=2, config=config, synced=True)
    core.start(encoded("a"))
    core.take_outbox()

    core.tick(late=HEARTBEAT - 1)  # one tick, HEARTBEAT - 1 late: a heartbeat is due
    heartbeats = [args for _, args in pairs(core.take_outbox())]
    for _ in range(2 * HEARTBEAT - 1):
        core.tick(late=HEARTBEAT - 1)
        core.take_outbox()

    assert len(heartbeats) == 2  # one per follower, after a single tick
    # 2 x HEARTBEAT ticks, each a heartbeat's worth late, without an answer:
    # check-quorum (a window of election_ticks[0]) has not yet run out, so the
    # leader leads on, and the entry in flight is not yet presumed lost.
    assert config.election_ticks[0] > 2 * HEARTBEAT
    assert core.is_leader
    assert core.progress[1].state is Replication.REPLICATE
