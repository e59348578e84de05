"""The messages Raft peers exchange, the log entry, and ApplyMsg.

Plain module-level dataclasses with no behaviour (CONTRACT.md section 1):
picklable, deep-copyable, never mutated after they are sent. `describe()`
renders any of them as one short log line.

A command given to `Raft.start()` travels and is stored as `Entry.data`, the
bytes `codec.encode_command` made of it once on the leader; every peer
(the leader included) applies `codec.decode_command(data)`, so all replicas
see the same value and nothing is re-encoded on the hot path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from raftio.membership import Configuration


@dataclass(slots=True)
class Entry:
    """One log entry: the term it was created in and its encoded command.

    Never mutated once made. Not frozen: a frozen dataclass costs twice as
    much to build, and followers build one per replicated entry.
    """

    term: int
    data: bytes


@dataclass(slots=True)
class RequestVoteArgs:
    term: int
    candidate_id: int
    last_log_index: int
    last_log_term: int
    pre_vote: bool = False  # thesis 9.6: "would you vote for me?", changes no state
    # Thesis 3.10: the leader asked this candidate to take over (TimeoutNow), so
    # voters grant it even while they still hear that leader.
    transfer: bool = False


@dataclass(slots=True)
class RequestVoteReply:
    term: int
    vote_granted: bool


@dataclass(slots=True)
class AppendEntriesArgs:
    term: int
    leader_id: int
    prev_log_index: int
    prev_log_term: int
    entries: list[Entry] = field(default_factory=list)
    leader_commit: int = 0


@dataclass(slots=True)
class AppendEntriesReply:
    """Reply to AppendEntries.

    On success `match_index` is the last index the follower now holds
    that matches the leader (prev_log_index + len(entries)). On a
    conflict the fast-backup hints of the handout are filled in:
    `x_term` is the term of the follower's conflicting entry (0 if its log
    is too short), `x_index` the first index of that term in its log,
    `x_len` its log length (last index + 1).
    """

    term: int
    success: bool
    match_index: int = 0
    x_term: int = 0
    x_index: int = 0
    x_len: int = 0


@dataclass(slots=True)
class InstallSnapshotArgs:
    term: int
    leader_id: int
    last_included_index: int
    last_included_term: int
    data: bytes = b""  # the chunk at `offset`
    # The configuration in effect at last_included_index (None from older peers).
    config: Configuration | None = None
    # Chunking (Raft paper Figure 13, plus a transfer id, the size and a checksum).
    # An older peer sends the whole snapshot in one message: these defaults.
    offset: int = 0
    done: bool = True  # the last chunk
    transfer: int = 0  # the leader's id for this transfer (0: a single message)
    size: int = -1  # bytes in the whole snapshot (-1: offset + len(data))
    checksum: int = -1  # crc32 of the whole snapshot (-1: not given)

    @property
    def total_size(self) -> int:
        return self.size if self.size >= 0 else self.offset + len(self.data)


@dataclass(slots=True)
class InstallSnapshotReply:
    term: int
    # Bytes of this transfer the follower holds; the leader continues from there.
    # -1: the reply of an older peer (or to one), which installed the whole snapshot.
    next_offset: int = -1
    transfer: int = 0


@dataclass(slots=True)
class TimeoutNowArgs:
    """Leadership transfer (thesis 3.10): the leader tells a caught-up voter to campaign now."""

    term: int
    leader_id: int


@dataclass(slots=True)
class TimeoutNowReply:
    term: int


@dataclass(frozen=True, slots=True)
class UndecodableCommand:
    """Delivered as `ApplyMsg.command` for a committed entry whose bytes do not decode.

    Only a forged or damaged entry can be undecodable (a leader encodes every
    command it appends). Every replica delivers the same marker for it, so
    they stay in agreement and keep applying what follows.
    """

    data: bytes


@dataclass(slots=True)
class ApplyMsg:
    """What a peer delivers on `apply_ch`: a committed command or a snapshot."""

    command_valid: bool = False
    command: Any = None
    command_index: int = 0
    command_term: int = 0
    snapshot_valid: bool = False
    snapshot: bytes = b""
    snapshot_term: int = 0
    snapshot_index: int = 0


Message = (
    RequestVoteArgs
    | RequestVoteReply
    | AppendEntriesArgs
    | AppendEntriesReply
    | InstallSnapshotArgs
    | InstallSnapshotReply
    | TimeoutNowArgs
    | TimeoutNowReply
)


# RPC method names: what a transport calls on the receiving peer.
REQUEST_VOTE = "request_vote"
APPEND_ENTRIES = "append_entries"
INSTALL_SNAPSHOT = "install_snapshot"
TIMEOUT_NOW = "timeout_now"
METHODS = frozenset({REQUEST_VOTE, APPEND_ENTRIES, INSTALL_SNAPSHOT, TIMEOUT_NOW})
Request = RequestVoteArgs | AppendEntriesArgs | InstallSnapshotArgs | TimeoutNowArgs
_METHOD_OF: dict[type, str] = {
    RequestVoteArgs: REQUEST_VOTE,
    AppendEntriesArgs: APPEND_ENTRIES,
    InstallSnapshotArgs: INSTALL_SNAPSHOT,
    TimeoutNowArgs: TIMEOUT_NOW,
}


def rpc_method(request: Request) -> str:
    """The RPC that carries `request` (its type decides)."""
    return _METHOD_OF[type(request)]


# The leader's no-op entry (thesis 6.4): msgpack's nil, which every replica
# decodes as None, the one command a service never proposes.
NOOP_COMMAND = b"\xc0"


@dataclass(slots=True)
class DurableState:
    """Everything a peer restores at start (Figure 2 persistent state + snapshot metadata)."""

    current_term: int = 0
    voted_for: int | None = None
    snapshot_index: int = 0
    snapshot_term: int = 0
    # entries[i] has index snapshot_index + 1 + i
    entries: list[Entry] = field(default_factory=list)
    # The configuration in effect at snapshot_index (None: the bootstrap one).
    snapshot_config: Configuration | None = None


# --------------------------------------------------------------------- effects
# What the core asks its shell to do. The shell takes them in one fixed
# order: storage effects (persist), then `Send`s, then what became applicable.


@dataclass(slots=True)
class SaveHardState:
    """Persist the current term and vote (Figure 2's persistent state)."""

    term: int
    voted_for: int | None


@dataclass(slots=True)
class AppendLog:
    """Replace the stored log from `first_index` on with `entries` (none: truncate)."""

    first_index: int
    entries: list[Entry]


@dataclass(frozen=True, slots=True)
class SnapshotInfo:
    """Which snapshot, and what a receiver checks it against."""

    index: int
    term: int
    size: int  # bytes of data
    checksum: int  # zlib.crc32 of the data


NO_SNAPSHOT = SnapshotInfo(0, 0, 0, 0)


@dataclass(frozen=True, slots=True)
class StagedSnapshot:
    """A complete, durable snapshot not yet in use (`SnapshotWriter.finish`)."""

    index: int
    term: int
    size: int
    checksum: int
    path: str = ""  # FileStorage: the staged file
    data: bytes = b""  # MemoryStorage: the bytes

    @property
    def info(self) -> SnapshotInfo:
        return SnapshotInfo(self.index, self.term, self.size, self.checksum)


@dataclass(slots=True)
class SaveSnapshot:
    """Persist a snapshot through `index` (whose entry had `term`); drop the log it covers."""

    index: int
    term: int
    data: bytes | StagedSnapshot  # staged: streamed into storage already
    config: Configuration | None = None  # in effect at `index`


StorageEffect = SaveHardState | AppendLog | SaveSnapshot


@dataclass(slots=True)
class Send:
    """Send `request` to peer `peer`; its reply goes back to the core's `on_*_reply`."""

    peer: int
    request: Request


@dataclass(slots=True)
class ApplyEntries:
    """Committed entries `first_index`, `first_index + 1`, ... for the service, in order."""

    first_index: int
    entries: list[Entry]


@dataclass(slots=True)
class ApplySnapshot:
    """A snapshot installed from the leader: the service must restore it before anything else.

    The data is in storage (`Storage.open_snapshot`); the shell streams it to the service.
    """

    index: int
    term: int


Applicable = ApplyEntries | ApplySnapshot


@dataclass(slots=True)
class ReadConfirmed:
    """Read `read_id` is linearizable once the service has applied through `index` (§6.4)."""

    read_id: int
    index: int


@dataclass(slots=True)
class ReadRefused:
    """Read `read_id` cannot be confirmed: this peer is not, or stopped being, the leader."""

    read_id: int


ReadResult = ReadConfirmed | ReadRefused


def describe(msg: object) -> str:
    """One short line for logs, e.g. ``AE T3 prev=4@2 n=1 commit=4``."""
    if isinstance(msg, AppendEntriesArgs):
        return (
            f"AE T{msg.term} prev={msg.prev_log_index}@{msg.prev_log_term} "
            f"n={len(msg.entries)} commit={msg.leader_commit}"
        )
    if isinstance(msg, AppendEntriesReply):
        if msg.success:
            return f"AE-ok T{msg.term} match={msg.match_index}"
        return f"AE-no T{msg.term} x={msg.x_term}/{msg.x_index}/{msg.x_len}"
    if isinstance(msg, RequestVoteArgs):
        kind = "PV" if msg.pre_vote else "RV"
        transfer = " transfer" if msg.transfer else ""
        return f"{kind} T{msg.term} last={msg.last_log_index}@{msg.last_log_term}{transfer}"
    if isinstance(msg, RequestVoteReply):
        return f"RV-{'yes' if msg.vote_granted else 'no'} T{msg.term}"
    if isinstance(msg, InstallSnapshotArgs):
        head = f"IS T{msg.term} last={msg.last_included_index}@{msg.last_included_term}"
        if msg.transfer == 0:
            return f"{head} bytes={len(msg.data)}"  # the whole snapshot in one message
        done = " done" if msg.done else ""
        return f"{head} #{msg.transfer} at={msg.offset} bytes={len(msg.data)}/{msg.size}{done}"
    if isinstance(msg, InstallSnapshotReply):
        if msg.next_offset < 0:
            return f"IS-ok T{msg.term}"
        return f"IS-ok T{msg.term} #{msg.transfer} next={msg.next_offset}"
    if isinstance(msg, TimeoutNowArgs):
        return f"TN T{msg.term}"
    if isinstance(msg, TimeoutNowReply):
        return f"TN-ok T{msg.term}"
    return repr(msg)
