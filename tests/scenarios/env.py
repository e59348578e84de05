"""A cluster of pure RaftCores wired by a step-by-step network, for scenarios.

`Env` plays the shell (raftio/raft.py) for every node, one input at a time,
with nothing random but the cores' seeded election timeouts:

- **Drain** after every input, in the shell's order: storage effects are
  queued as unsynced writes, sends go into the network, committed entries
  are taken as applied.
- **Durability.** A node's writes become durable only when it syncs
  (`sync`, or `stabilize`): they are then applied to its `DurableState`
  and reported with `on_log_durable`, as the shell does when a sync
  completes. While a node has unsynced writes, its replies (AppendEntries,
  votes, snapshots) and its vote requests wait, as `Raft._answer` and
  `Raft._drain` make them wait; a leader's AppendEntries leave at once
  (Raft thesis 10.2.1).
- **Crash** keeps only the durable state: unsynced writes and waiting
  messages are lost, the core is gone. **Restart** builds a new core from
  the durable state (a new incarnation; replies meant for the old one are
  dropped, as a reconnected RPC client never sees them).
- **Network.** Messages wait in one FIFO `flight` list until delivered or
  dropped. A request that cannot be delivered (a cut link, a crashed or
  refusing receiver) fails its RPC: the sender's core gets
  `on_*_reply(peer, request, None)` at once. Links are cut per direction
  (`cut`), checked when a message is delivered.
- **Checks.** Every applied entry is compared across nodes (state machine
  safety) and every leader is recorded per term (election safety); a
  violation is reported as a line starting with ``!!``.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from zlib import crc32

from raftio.config import RaftConfig
from raftio.core import RaftCore, Role
from raftio.membership import Configuration
from raftio.messages import (
    NO_SNAPSHOT,
    AppendEntriesArgs,
    AppendEntriesReply,
    AppendLog,
    ApplyEntries,
    DurableState,
    InstallSnapshotArgs,
    InstallSnapshotReply,
    Request,
    RequestVoteArgs,
    RequestVoteReply,
    SaveHardState,
    SaveSnapshot,
    SnapshotInfo,
    StagedSnapshot,
    StorageEffect,
    TimeoutNowArgs,
    TimeoutNowReply,
    describe,
)
from raftio.testing.snapshot_shell import MemorySnapshotShell

Reply = AppendEntriesReply | RequestVoteReply | InstallSnapshotReply | TimeoutNowReply
Output = Callable[[str], None]


@dataclass(slots=True)
class Message:
    """A request (reply None) from `src` to `dst`, or the reply to one (`is_reply`)."""

    src: int
    dst: int
    request: Request
    reply: Reply | None = None
    is_reply: bool = False
    incarnation: int = 0  # the requester's incarnation: its reply goes to that core only

    def describe(self) -> str:
        body = self.reply if self.is_reply else self.request
        return f"S{self.src}->S{self.dst} {describe(body)}"

    def kind(self) -> str:
        """The first word of `describe`: AE, PV, RV, IS, AE-ok, AE-no, RV-yes, ..."""
        return describe(self.reply if self.is_reply else self.request).split()[0]


@dataclass(slots=True)
class Node:
    """One peer: its durable state, its core (None while crashed) and what waits for a sync."""

    me: int
    durable: DurableState
    snapshot: bytes = b""  # durable
    core: RaftCore | None = None
    shell: MemorySnapshotShell = field(default_factory=MemorySnapshotShell)
    incarnation: int = 0
    unsynced: list[tuple[list[StorageEffect], tuple[int, int]]] = field(default_factory=list)
    waiting: list[Message] = field(default_factory=list)  # leave once the writes are durable

    @property
    def live(self) -> RaftCore:
        assert self.core is not None, f"S{self.me} is crashed"
        return self.core


class Env:
    """`n` peers and the messages between them; every method reports through `out`."""

    def __init__(
        self,
        n: int,
        config: RaftConfig,
        seed: int = 0,
        out: Output = print,
        voters: int | None = None,
    ) -> None:
        """`voters`: the first `voters` nodes bootstrap as voters, the rest wait to be added."""
        self.config = config
        self.bootstrap = Configuration.of_voters([""] * (n if voters is None else voters))
        self.seed = seed
        self.out = out
        self.nodes = [Node(i, DurableState()) for i in range(n)]
        self.flight: list[Message] = []
        self.held: list[Message] = []  # taken out of flight by `hold`, back with `release`
        self.cut: set[tuple[int, int]] = set()  # (src, dst) links that lose every message
        self.applied: dict[int, tuple[int, bytes, int]] = {}  # index -> (term, data, by node)
        self.leaders: dict[int, int] = {}  # term -> its leader
        self.indent = ""
        for node in self.nodes:
            self._boot(node)

    # ------------------------------------------------------------------ nodes

    def _boot(self, node: Node) -> None:
        rng = random.Random(f"{self.seed}/{node.me}/{node.incarnation}")
        state = DurableState(
            node.durable.current_term,
            node.durable.voted_for,
            node.durable.snapshot_index,
            node.durable.snapshot_term,
            list(node.durable.entries),
            node.durable.snapshot_config,
        )
        n = len(self.nodes)
        info = NO_SNAPSHOT
        if state.snapshot_index:
            data = node.snapshot
            info = SnapshotInfo(state.snapshot_index, state.snapshot_term, len(data), crc32(data))
        node.shell = MemorySnapshotShell(node.snapshot)
        node.core = RaftCore(
            node.me, n, state, self.config, rng, snapshot=info, bootstrap=self.bootstrap
        )

    def crash(self, i: int) -> None:
        node = self.nodes[i]
        node.live  # noqa: B018 - asserts it is running
        node.core, node.unsynced, node.waiting = None, [], []

    def restart(self, i: int) -> None:
        node = self.nodes[i]
        assert node.core is None, f"S{i} is running"
        node.incarnation += 1
        self._boot(node)

    def alive(self) -> list[int]:
        return [node.me for node in self.nodes if node.core is not None]

    # ------------------------------------------------------------------ inputs

    def step(self, i: int, action: Callable[[RaftCore], object]) -> object:
        """Feed one input to node `i`, report what changed, drain it like the shell."""
        core = self.nodes[i].live
        before = _summary(core)
        result = action(core)
        self._report_changes(i, before)
        self._drain(i)
        return result

    def tick(self, i: int) -> None:
        self.step(i, RaftCore.tick)

    def propose(self, i: int, commands: list[bytes]) -> list[tuple[int, int, bool]]:
        """`start()` each command, then drain once (the shell batches a burst of starts)."""
        core = self.nodes[i].live
        placed = [core.start(data) for data in commands]
        self._drain(i)
        return placed

    def sync(self, i: int) -> bool:
        """Make node `i`'s writes durable; release what waited for them. False: nothing to do."""
        node = self.nodes[i]
        if node.core is None or not node.unsynced:
            return False
        batches, node.unsynced = node.unsynced, []
        for ops, _ in batches:
            for op in ops:
                _persist(node, op)
        index, term = batches[-1][1]
        self.out(f"{self.indent}S{i} synced through {index}@T{term}")
        if any(isinstance(op, SaveHardState) for ops, _ in batches for op in ops):
            self.step(i, RaftCore.on_vote_durable)
        for _, (index, term) in batches:
            self.step(i, _durable(index, term))
        waiting, node.waiting = node.waiting, []
        self.flight.extend(waiting)
        return True

    def _drain(self, i: int) -> None:
        node = self.nodes[i]
        core = node.live
        ops = core.take_storage_ops()
        for op in ops:
            if isinstance(op, SaveSnapshot):
                node.shell.persisted(op)  # what the live storage holds now
        if ops:
            node.unsynced.append((ops, (core.log.last_index, core.log.last_term)))
        outbox = core.take_outbox()
        if core.commit_broadcast_due:
            core.broadcast_commit()
            outbox += core.take_outbox()
        for send in outbox:
            request = send.request
            if isinstance(request, InstallSnapshotArgs):
                request = node.shell.fill(core, request)
            msg = Message(i, send.peer, request, incarnation=node.incarnation)
            # Votes and vote requests wait for durability; a leader's entries do not.
            if node.unsynced and isinstance(send.request, RequestVoteArgs):
                node.waiting.append(msg)
            else:
                self.flight.append(msg)
        self._apply(i, core)

    def _apply(self, i: int, core: RaftCore) -> None:
        while (applicable := core.take_applicable(1000)) is not None:
            if not isinstance(applicable, ApplyEntries):
                continue  # a snapshot: its entries were checked where they were applied
            for k, entry in enumerate(applicable.entries):
                index = applicable.first_index + k
                first = self.applied.setdefault(index, (entry.term, entry.data, i))
                if first[:2] != (entry.term, entry.data):
                    self.out(
                        f"!! S{i} applied {index}@T{entry.term} "
                        f"but S{first[2]} applied {index}@T{first[0]}"
                    )

    def _report_changes(self, i: int, before: tuple[Role, int, int]) -> None:
        core = self.nodes[i].live
        role, term, commit = _summary(core)
        if (role, term) != before[:2]:
            if role is not before[0]:
                self.out(f"{self.indent}S{i} became {role.value} at T{term}")
            else:
                self.out(f"{self.indent}S{i} moved to T{term}")
            if role is Role.LEADER:
                other = self.leaders.setdefault(term, i)
                if other != i:
                    self.out(f"!! S{i} and S{other} both lead T{term}")
        if commit != before[2]:
            self.out(f"{self.indent}S{i} committed through {commit}")

    # ------------------------------------------------------------------ network

    def deliver(self, msg: Message) -> None:
        """Deliver one message taken from `flight` (or drop it if it cannot arrive)."""
        receiver = self.nodes[msg.dst]
        lost = (msg.src, msg.dst) in self.cut or receiver.core is None
        if msg.is_reply and receiver.incarnation != msg.incarnation:
            lost = True
        if lost:
            self.out(f"{self.indent}{msg.describe().replace(' ', ' dropped ', 1)}")
            self._fail_rpc(msg)
            return
        self.out(f"{self.indent}{msg.describe()}")
        self.indent = "  "
        try:
            if msg.is_reply:
                self.step(msg.dst, lambda core: _on_reply(core, msg.src, msg.request, msg.reply))
            else:
                self._handle(msg)
        finally:
            self.indent = ""

    def _handle(self, msg: Message) -> None:
        shell = self.nodes[msg.dst].shell
        reply = self.step(msg.dst, lambda core: _handle(core, shell, msg.request))
        if reply is None:
            self.out(f"{self.indent}S{msg.dst} refused it")
            self._fail_rpc(msg)
            return
        assert isinstance(reply, Reply)
        answer = Message(msg.dst, msg.src, msg.request, reply, True, msg.incarnation)
        node = self.nodes[msg.dst]
        if node.unsynced:
            self.out(f"{self.indent}S{msg.dst} answers once synced")
            node.waiting.append(answer)
        else:
            self.flight.append(answer)

    def _fail_rpc(self, msg: Message) -> None:
        """The RPC of `msg` failed: its caller (if still the same incarnation) gets None."""
        caller = msg.dst if msg.is_reply else msg.src
        node = self.nodes[caller]
        if node.core is None or node.incarnation != msg.incarnation:
            return
        peer = msg.src if msg.is_reply else msg.dst
        self.step(caller, lambda core: _on_reply(core, peer, msg.request, None))

    def take(self, match: Callable[[Message], bool]) -> list[Message]:
        """Remove and return the in-flight messages that `match`, in order."""
        taken = [m for m in self.flight if match(m)]
        self.flight = [m for m in self.flight if not match(m)]
        return taken

    def drop(self, msg: Message) -> None:
        self.out(f"{msg.describe().replace(' ', ' dropped ', 1)}")
        self._fail_rpc(msg)

    def stabilize(
        self,
        nodes: Iterable[int] | None = None,
        until: Callable[[], bool] | None = None,
        limit: int = 10_000,
    ) -> None:
        """Sync and deliver until nothing is unsynced or in flight (among `nodes`, if given).

        With `until`, stop as soon as it holds after a message (the rest stays in flight).
        """
        chosen = set(range(len(self.nodes)) if nodes is None else nodes)
        for _ in range(limit):
            synced = [self.sync(i) for i in sorted(chosen)]
            batch = self.take(lambda m: m.src in chosen or m.dst in chosen)
            if not batch and not any(synced):
                return
            for k, msg in enumerate(batch):
                self.deliver(msg)
                if until is not None and until():
                    self.flight = batch[k + 1 :] + self.flight
                    return
        raise AssertionError(f"not stable after {limit} rounds")


def _durable(index: int, term: int) -> Callable[[RaftCore], None]:
    return lambda core: core.on_log_durable(index, term)


def _summary(core: RaftCore) -> tuple[Role, int, int]:
    return core.role, core.current_term, core.commit_index


def _handle(core: RaftCore, shell: MemorySnapshotShell, request: Request) -> Reply | None:
    if isinstance(request, AppendEntriesArgs):
        return core.handle_append_entries(request)
    if isinstance(request, RequestVoteArgs):
        return core.handle_request_vote(request)
    if isinstance(request, TimeoutNowArgs):
        return core.handle_timeout_now(request)
    return shell.receive(core, request)


def _on_reply(core: RaftCore, peer: int, request: Request, reply: Reply | None) -> None:
    if isinstance(request, AppendEntriesArgs):
        assert reply is None or isinstance(reply, AppendEntriesReply)
        core.on_append_entries_reply(peer, request, reply)
    elif isinstance(request, RequestVoteArgs):
        assert reply is None or isinstance(reply, RequestVoteReply)
        core.on_request_vote_reply(peer, request, reply)
    elif isinstance(request, TimeoutNowArgs):
        assert reply is None or isinstance(reply, TimeoutNowReply)
        core.on_timeout_now_reply(peer, request, reply)
    else:
        assert isinstance(request, InstallSnapshotArgs)
        assert reply is None or isinstance(reply, InstallSnapshotReply)
        core.on_install_snapshot_reply(peer, request, reply)


def _persist(node: Node, op: StorageEffect) -> None:
    """Apply one storage effect to the node's durable state (what MemoryStorage does)."""
    state = node.durable
    match op:
        case SaveHardState(term, voted_for):
            state.current_term, state.voted_for = term, voted_for
        case AppendLog(first_index, entries):
            keep = max(0, first_index - state.snapshot_index - 1)
            skip = max(0, state.snapshot_index + 1 - first_index)
            state.entries = state.entries[:keep] + list(entries[skip:])
        case SaveSnapshot(index, term, data, config):
            if index > state.snapshot_index:
                state.entries = state.entries[index - state.snapshot_index :]
                state.snapshot_index, state.snapshot_term = index, term
                state.snapshot_config = config
                node.snapshot = data.data if isinstance(data, StagedSnapshot) else data
