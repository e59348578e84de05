"""Builders for the core/ layer: RaftCores in a chosen role, term and log.

Everything here drives a core through its public inputs (`tick`, the
`handle_*` handlers, the `on_*_reply` callbacks); nothing reaches into
private fields. Entries carry ``codec.encode_command(f"{index}@{term}")``,
so two entries are equal exactly when their index and term are, and the
applier can decode every one of them.

`CONFIG` is the paper's algorithm (§5): RaftConfig() with pre-vote and
check-quorum (Raft thesis 9.6, 6.2) switched off, so that each rule is
tested on its own; `EXTENDED` switches them back on. Timing: a heartbeat
every 10 ticks, an election timeout drawn from [30, 60] ticks. `NARROW`
pins the timeout to [30, 31] so a test can tell "the timer was reset"
from "it was not" without reading the drawn value.
"""

from __future__ import annotations

import random
import weakref
import zlib
from collections.abc import Sequence
from dataclasses import replace

from hypothesis import settings

from raftio import codec
from raftio.applying import OwnCommands
from raftio.config import RaftConfig
from raftio.core import RaftCore, Role
from raftio.messages import (
    NO_SNAPSHOT,
    AppendEntriesArgs,
    AppendEntriesReply,
    ApplyMsg,
    ApplySnapshot,
    Entry,
    InstallSnapshotArgs,
    InstallSnapshotReply,
    RequestVoteArgs,
    RequestVoteReply,
    Send,
    SnapshotInfo,
    StorageEffect,
)
from raftio.storage.base import DurableState
from raftio.testing.snapshot_shell import MemorySnapshotShell
from raftio.transport.base import APPEND_ENTRIES, INSTALL_SNAPSHOT, REQUEST_VOTE

CONFIG = RaftConfig(pre_vote=False, check_quorum=False)
EXTENDED = RaftConfig(pre_vote=True, check_quorum=True)
HEARTBEAT = CONFIG.heartbeat_ticks  # 10
ELECTION_MIN, ELECTION_MAX = CONFIG.election_ticks  # 30, 60
NARROW = replace(CONFIG, election_timeout_max=0.31)  # timeout 30 or 31 ticks

# Property tests: enough examples to find boundary cases, few enough that the
# whole layer stays a couple of seconds; no deadline, so a loaded machine cannot flake.
PROPERTY = settings(max_examples=40, deadline=None)

__all__ = [
    "APPEND_ENTRIES",
    "CONFIG",
    "ELECTION_MAX",
    "ELECTION_MIN",
    "EXTENDED",
    "HEARTBEAT",
    "INSTALL_SNAPSHOT",
    "NARROW",
    "PROPERTY",
    "REQUEST_VOTE",
    "ack",
    "ae",
    "applied",
    "campaign",
    "drain",
    "encoded",
    "entries",
    "entry",
    "make_core",
    "make_leader",
    "pairs",
    "requests",
    "sent_to",
    "terms_of",
]


def entry(index: int, term: int) -> Entry:
    """The entry a test log holds at `index` in `term`."""
    return Entry(term, codec.encode_command(f"{index}@{term}"))


def entries(first: int, *terms: int) -> list[Entry]:
    """Entries at `first`, `first + 1`, ... with the given terms."""
    return [entry(first + i, term) for i, term in enumerate(terms)]


def terms_of(core: RaftCore) -> list[int]:
    """The terms of the entries after the snapshot, in index order."""
    return [e.term for e in core.log.entries]


def make_core(
    terms: Sequence[int] = (),
    *,
    me: int = 0,
    peers: int = 3,
    term: int | None = None,
    voted_for: int | None = None,
    snapshot: tuple[int, int] = (0, 0),
    snapshot_data: bytes = b"",
    config: RaftConfig = CONFIG,
    seed: int = 0,
) -> RaftCore:
    """A freshly restarted follower whose log after `snapshot` (index, term) has `terms`.

    `term` defaults to the last term in the log (or the snapshot's).
    """
    snapshot_index, snapshot_term = snapshot
    if term is None:
        term = terms[-1] if terms else snapshot_term
    state = DurableState(
        current_term=term,
        voted_for=voted_for,
        snapshot_index=snapshot_index,
        snapshot_term=snapshot_term,
        entries=entries(snapshot_index + 1, *terms),
    )
    core = RaftCore(
        me, peers, state, config, random.Random(seed), snapshot=info_of(snapshot, snapshot_data)
    )
    _SHELLS[core] = MemorySnapshotShell(snapshot_data)
    return core


def info_of(snapshot: tuple[int, int], data: bytes) -> SnapshotInfo:
    """The SnapshotInfo of `data`, a snapshot through `snapshot` (index, term)."""
    if snapshot[0] == 0:
        return NO_SNAPSHOT
    return SnapshotInfo(snapshot[0], snapshot[1], len(data), zlib.crc32(data))


# Each core's snapshot bytes and staged chunks, as its shell would hold them.
_SHELLS: weakref.WeakKeyDictionary[RaftCore, MemorySnapshotShell] = weakref.WeakKeyDictionary()


def shell_of(core: RaftCore) -> MemorySnapshotShell:
    return _SHELLS.setdefault(core, MemorySnapshotShell())


def install(core: RaftCore, args: InstallSnapshotArgs) -> InstallSnapshotReply | None:
    """Hand one InstallSnapshot chunk to a follower's core, writing it as the shell does."""
    return shell_of(core).receive(core, args)


def compact(core: RaftCore, index: int, data: bytes) -> bool:
    """The service snapshots through `index` as `data` (its shell keeps the bytes)."""
    done = core.compact(index, data)
    if done:
        shell_of(core).data = data
    return done


def snapshot_bytes(core: RaftCore) -> bytes:
    """The core's current snapshot, as its storage holds it."""
    return shell_of(core).data if core.snapshot_info.index else b""


def drain(core: RaftCore) -> tuple[list[StorageEffect], list[Send]]:
    """Take the storage ops, then the outbox, as the shell does."""
    return core.take_storage_ops(), core.take_outbox()


def campaign(core: RaftCore) -> list[Send]:
    """Tick a follower until its election timeout fires; return its (pre-)vote requests."""
    for _ in range(core.config.election_ticks[1]):
        core.tick()
        if core.role is not Role.FOLLOWER:
            break
    assert core.role is not Role.FOLLOWER, "the election timer never fired"
    return core.take_outbox()


def make_leader(
    terms: Sequence[int] = (),
    *,
    term: int,
    me: int = 0,
    peers: int = 3,
    snapshot: tuple[int, int] = (0, 0),
    snapshot_data: bytes = b"",
    config: RaftConfig = CONFIG,
    synced: bool = False,
) -> RaftCore:
    """A leader of `term` (elected by the lowest-numbered peers) with drained outputs.

    The core restarts at `term - 1`, campaigns, and counts granted
    (pre-)votes until it wins (§5.2). Every follower starts in PROBE with
    next_index = last_index + 1 and one AppendEntries unanswered; with
    `synced`, each follower then acknowledges it with success (so it is in
    REPLICATE, nothing in flight, match_index = last_index).
    """
    core = make_core(
        terms,
        me=me,
        peers=peers,
        term=term - 1,
        snapshot=snapshot,
        snapshot_data=snapshot_data,
        config=config,
    )
    sent = campaign(core)
    if not sent and core.role is Role.CANDIDATE:
        core.on_vote_durable()  # a sole voter wins by its own vote, once durable
    while not core.is_leader:
        assert sent, f"no vote requests while {core.role}"
        for peer, args in pairs(sent):
            assert isinstance(args, RequestVoteArgs)
            voter_term = core.current_term if args.pre_vote else args.term
            core.on_request_vote_reply(peer, args, RequestVoteReply(voter_term, True))
            if core.is_leader or (core.role is Role.CANDIDATE and args.pre_vote):
                break
        sent = core.take_outbox()
    assert core.current_term == term
    core.take_storage_ops()
    outbox = sent + core.take_outbox()
    if synced:
        for peer, args in pairs(outbox):
            assert isinstance(args, AppendEntriesArgs)
            match = args.prev_log_index + len(args.entries)
            core.on_append_entries_reply(peer, args, AppendEntriesReply(term, True, match))
        drain(core)
    return core


def ack(core: RaftCore, peer: int, match: int) -> list[Send]:
    """`peer` answers a current-term heartbeat with success at `match`; returns the outbox."""
    prev_term = core.log.term_at(match)
    assert prev_term is not None
    args = AppendEntriesArgs(core.current_term, core.me, match, prev_term, [], core.commit_index)
    core.on_append_entries_reply(peer, args, AppendEntriesReply(core.current_term, True, match))
    return core.take_outbox()


def ae(
    term: int,
    prev: int,
    prev_term: int,
    new: Sequence[Entry] = (),
    commit: int = 0,
    leader: int = 1,
) -> AppendEntriesArgs:
    """AppendEntriesArgs from `leader`, argument order as in Figure 2."""
    return AppendEntriesArgs(term, leader, prev, prev_term, list(new), commit)


def sent_to(
    outbox: Sequence[Send], peer: int
) -> list[AppendEntriesArgs | InstallSnapshotArgs | RequestVoteArgs]:
    """The request arguments addressed to `peer`, in order."""
    return [send.request for send in outbox if send.peer == peer]


def encoded(value: object) -> bytes:
    """A command as the shell hands it to the core: encoded."""
    return codec.encode_command(value)


def requests(
    outbox: Sequence[Send],
) -> list[AppendEntriesArgs | InstallSnapshotArgs | RequestVoteArgs]:
    """The request arguments of `outbox`, in order, whoever they are for."""
    return [send.request for send in outbox]


def pairs(
    outbox: Sequence[Send],
) -> list[tuple[int, AppendEntriesArgs | InstallSnapshotArgs | RequestVoteArgs]]:
    """(peer, request) for each message of `outbox`."""
    return [(send.peer, send.request) for send in outbox]


def applied(core: RaftCore, limit: int = 100) -> list[ApplyMsg]:
    """What the shell would deliver to the service next (commands decoded)."""
    applicable = core.take_applicable(limit)
    if applicable is None:
        return []
    if isinstance(applicable, ApplySnapshot):
        return [
            ApplyMsg(
                snapshot_valid=True,
                snapshot=shell_of(core).data,
                snapshot_term=applicable.term,
                snapshot_index=applicable.index,
            )
        ]
    return OwnCommands().apply_msgs(applicable)


def reading_leader(peers: int = 3, config: RaftConfig = CONFIG) -> RaftCore:
    """A leader of term 2 whose term has a committed entry (§8), so it may serve reads."""
    core = make_leader([1, 1], term=2, peers=peers, synced=True, config=config)
    core.start(encoded("x"))
    drain(core)
    core.on_log_durable(core.log.last_index, core.log.last_term)
    for peer in range(1, peers):
        ack(core, peer, core.log.last_index)
    drain(core)
    assert core.can_serve_reads()
    return core
