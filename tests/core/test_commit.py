"""The leader's commit rule and what is handed to the applier (§5.3, §5.4.2, Figure 8).

Unless a row says otherwise the leader is S0 at term 3 whose restored log
[1, 2] (durable through 2) holds no entry of its own term. The leader
counts itself toward a majority only through `durable_index`, the last
index its storage reported durable (Raft thesis 10.2.1).
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from raftio import codec
from raftio.core import RaftCore, Role
from raftio.messages import (
    AppendEntriesArgs,
    AppendLog,
    ApplyMsg,
    Entry,
    RequestVoteArgs,
    RequestVoteReply,
    Send,
)

from .helpers import (
    CONFIG,
    HEARTBEAT,
    ack,
    ae,
    applied,
    campaign,
    drain,
    encoded,
    make_core,
    make_leader,
)


def leader(peers: int, starts: int) -> RaftCore:
    """S0 leading term 3 over log [1, 2], after `starts` commands (indexes 3, 4, ...)."""
    core = make_leader([1, 2], term=3, peers=peers)
    for i in range(starts):
        assert core.start(encoded(f"cmd{i}")) == (3 + i, 3, True)
    drain(core)
    return core


@pytest.mark.parametrize(
    ("peers", "starts", "durable", "matches", "commit"),
    [
        # a current-term entry on a majority: the leader counts only once durable
        (3, 1, None, {1: 3}, 0),
        (3, 1, None, {1: 3, 2: 3}, 3),
        (3, 1, 3, {1: 3}, 3),
        (3, 1, 3, {}, 0),
        (4, 1, 3, {1: 3}, 0),
        (4, 1, 3, {1: 3, 2: 3}, 3),
        (5, 1, 3, {1: 3}, 0),
        (5, 1, 3, {1: 3, 4: 3}, 3),
        (5, 1, None, {1: 3, 2: 3}, 0),
        (5, 1, None, {1: 3, 2: 3, 3: 3}, 3),
        (1, 1, None, {}, 0),
        (1, 1, 3, {}, 3),
        # Figure 8: entries of earlier terms are never committed by counting replicas
        (3, 0, None, {1: 2, 2: 2}, 0),
        (5, 0, None, {1: 2, 2: 2, 3: 2, 4: 2}, 0),
        (3, 2, None, {1: 2, 2: 2}, 0),
        # ... only by committing a later entry of the current term (Log Matching)
        (3, 2, 4, {1: 3}, 3),
        (3, 2, 4, {1: 4}, 4),
        (3, 2, 4, {1: 4, 2: 3}, 4),
        (3, 2, 3, {1: 4}, 3),
        (5, 2, 4, {1: 3, 2: 4}, 3),
        (5, 2, None, {1: 3, 2: 4, 3: 4}, 3),
        (5, 2, None, {1: 4, 2: 4, 3: 4}, 4),
    ],
)
def test_leader_commit_rule(
    peers: int, starts: int, durable: int | None, matches: dict[int, int], commit: int
) -> None:
    """§5.3, §5.4.2: commit the highest current-term index stored on a majority."""
    core = leader(peers, starts)

    if durable is not None:
        core.on_log_durable(durable, 3)
    for peer, match in matches.items():
        ack(core, peer, match)

    assert core.commit_index == commit
    assert core.take_storage_ops() == []


def test_figure_8_old_entry_commits_with_current_term_entry() -> None:
    """§5.4.2 Figure 8 (d)/(e): entry 2@2 on a majority is not committed until 3@4 is."""
    core = make_leader([1, 2], term=4, peers=5)
    for peer in (1, 2):
        ack(core, peer, 2)
    assert core.commit_index == 0

    core.start(encoded("x"))
    core.on_log_durable(3, 4)
    ack(core, 1, 3)
    assert core.commit_index == 0
    ack(core, 2, 3)

    assert core.commit_index == 3


def test_leader_commit_never_decreases() -> None:
    """§5.3: a reordered success reporting a lower match does not uncommit anything."""
    core = leader(3, 2)
    core.on_log_durable(4, 3)
    ack(core, 1, 4)
    assert core.commit_index == 4

    ack(core, 1, 3)
    ack(core, 2, 3)

    assert core.commit_index == 4
    assert core.progress[1].match_index == 4


@pytest.mark.parametrize(
    ("index", "term", "durable"),
    [
        # the report for an entry at or below what is already durable
        (2, 1, 2),
        (1, 1, 2),
        # an entry whose term there has changed (the write was of a discarded suffix)
        (3, 2, 2),
        # past the end of the log
        (5, 3, 2),
        # a real one
        (3, 3, 3),
        (4, 3, 4),
    ],
)
def test_on_log_durable(index: int, term: int, durable: int) -> None:
    """Raft thesis 10.2.1: the leader counts itself only for entries its storage made durable."""
    core = leader(3, 2)

    core.on_log_durable(index, term)

    assert core.durable_index == durable


def test_commit_index_reaches_followers() -> None:
    """§5.3: the leader includes commit_index in AppendEntries so followers apply too."""
    core = leader(3, 1)
    ack(core, 2, 3)
    core.on_log_durable(3, 3)
    assert core.commit_index == 3

    for _ in range(HEARTBEAT):
        core.tick()

    assert drain(core) == (
        [],
        [
            Send(1, AppendEntriesArgs(3, 0, 2, 2, [core.log.entry(3)], 3)),
            Send(2, AppendEntriesArgs(3, 0, 3, 3, [], 3)),
        ],
    )


def test_take_applicable_delivers_committed_commands_in_order() -> None:
    """§5.3: once committed, entries are applied in log order, each exactly once."""
    core = make_leader(term=1, peers=1)
    for command in ["a", ("b", 2), {3: {4}}]:
        core.start(encoded(command))
    core.on_log_durable(2, 1)
    assert (core.commit_index, core.has_applicable()) == (2, True)

    first = applied(core, 1)
    second = applied(core, 10)
    assert (core.has_applicable(), applied(core, 10)) == (False, [])
    core.on_log_durable(3, 1)
    third = applied(core, 10)

    assert first == [ApplyMsg(command_valid=True, command="a", command_index=1, command_term=1)]
    assert second == [
        ApplyMsg(command_valid=True, command=("b", 2), command_index=2, command_term=1)
    ]
    assert third == [
        ApplyMsg(command_valid=True, command={3: {4}}, command_index=3, command_term=1)
    ]
    assert core.applied_index == 3


def test_follower_applies_what_the_leader_committed() -> None:
    """§5.3: a follower applies entries up to its commit_index, learned from AppendEntries."""
    core = make_core(term=2)
    new = [Entry(1, codec.encode_command("x")), Entry(2, codec.encode_command("y"))]
    core.handle_append_entries(ae(2, 0, 0, new, commit=1))

    msgs = applied(core, 10)

    assert msgs == [ApplyMsg(command_valid=True, command="x", command_index=1, command_term=1)]
    assert applied(core, 10) == []


def test_start_on_non_leader_appends_nothing() -> None:
    """§5.3 / Lab 2 Start(): only the leader appends; others return is_leader False."""
    core = make_core([1, 1], term=2)

    assert core.start(encoded("x")) == (3, 2, False)
    assert core.log.last_index == 2
    assert drain(core) == ([], [])


def test_start_rejects_unencodable_command() -> None:
    """§5.3: a command every replica cannot decode identically is refused up front."""
    core = make_leader(term=1)

    with pytest.raises(TypeError, match="cannot be replicated"):
        core.start(encoded(object()))

    assert core.log.last_index == 0
    assert drain(core) == ([], [])


def test_start_appends_and_persists_burst_in_one_write() -> None:
    """§5.3: the leader appends to its own log; a burst of starts is one storage write."""
    core = make_leader([1], term=2)

    results = [core.start(encoded(c)) for c in ("a", "b", "c")]

    assert results == [(2, 2, True), (3, 2, True), (4, 2, True)]
    written = [Entry(2, codec.encode_command(c)) for c in ("a", "b", "c")]
    assert core.take_storage_ops() == [AppendLog(2, written)]
    assert core.log.entries[1:] == written


def test_leader_noop_commits_earlier_terms() -> None:
    """§8: a new leader's no-op of its own term lets it commit older entries at once."""
    config = replace(CONFIG, leader_noop=True)
    core = make_core([1, 2], term=2, config=config)
    request = campaign(core)[0].request
    assert isinstance(request, RequestVoteArgs)
    core.take_storage_ops()

    core.on_request_vote_reply(1, request, RequestVoteReply(3, True))

    noop = Entry(3, codec.encode_command(None))
    assert core.role is Role.LEADER
    assert core.log.entries[-1] == noop
    probe = AppendEntriesArgs(3, 0, 2, 2, [noop], 0)
    assert drain(core) == (
        [AppendLog(3, [noop])],
        [Send(1, probe), Send(2, probe)],
    )
    assert not core.can_serve_reads()

    core.on_log_durable(3, 3)
    ack(core, 1, 3)

    assert core.commit_index == 3
    assert core.can_serve_reads()
