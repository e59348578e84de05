"""Raft: the asyncio shell around RaftCore (`raftio.make` creates one).

The shell owns every task of a peer (one ticker, one applier, one task per
outgoing RPC so a slow peer delays nobody) and all I/O. After each input to
the core it drains the core in one fixed order: persist, then send, then
wake the applier. A follower's reply and any vote leave only once the state
they promise is durable; a leader's AppendEntries go out while its own
write is in flight, and it counts itself toward a majority once the write
is durable (Raft thesis 10.2.1).

No locks: the event loop is the lock. Nothing awaits between reading the
core's state and acting on it.
"""

from __future__ import annotations

import asyncio
import logging
import random
import sys
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, TypeVar, cast

from raftio import codec
from raftio.applying import OwnCommands, deliver, describe_applicable
from raftio.config import RaftConfig
from raftio.core import RaftCore
from raftio.debug import make_tracer
from raftio.errors import (
    ChangePendingError,
    LastVoterError,
    LeadershipTransferError,
    MembershipError,
    NotLeaderError,
    NotSingleChangeError,
    NotVoterError,
)
from raftio.leadership import LeadershipWatch
from raftio.membership import Configuration
from raftio.messages import (
    AppendEntriesArgs,
    AppendEntriesReply,
    AppendLog,
    ApplyMsg,
    ApplySnapshot,
    InstallSnapshotArgs,
    InstallSnapshotReply,
    Request,
    RequestVoteArgs,
    RequestVoteReply,
    Send,
    TimeoutNowArgs,
    TimeoutNowReply,
    describe,
    rpc_method,
)
from raftio.metrics import PeerMetrics
from raftio.persist import Persister
from raftio.raft_snapshots import SnapshotRpcs
from raftio.read_waiters import ReadWaiters
from raftio.snapshot_stream import ChunkPump, Staging
from raftio.storage.base import Storage, StorageError
from raftio.storage.snapshot import SnapshotReader
from raftio.transport.base import ClientEnd, PendingReply
from raftio.transport.limits import DropLog
from raftio.view import CoreView, RaftStatus, core_metrics, status_of

logger = logging.getLogger(__name__)

# How long a leader waits before telling idle followers a new commit index on
# its own. The next proposal's AppendEntries carries it anyway, and a client
# that got its answer usually sends that proposal sooner: so the commit's
# applying and answering go first, and a steady stream of single writes costs
# one AppendEntries per follower per entry, not two.
COMMIT_BROADCAST_DELAY = 0.001
R = TypeVar("R")

_REPLY_TYPES: dict[type, type] = {
    RequestVoteArgs: RequestVoteReply,
    AppendEntriesArgs: AppendEntriesReply,
    InstallSnapshotArgs: InstallSnapshotReply,
    TimeoutNowArgs: TimeoutNowReply,
}

# Why the core refused a configuration change -> the error the caller gets.
_CHANGE_REFUSALS: dict[str, type[MembershipError]] = {
    "change_pending": ChangePendingError,
    "not_single_change": NotSingleChangeError,
    "last_voter": LastVoterError,
}


class Raft(SnapshotRpcs):
    """One Raft peer. Create it with `raftio.make`."""

    def __init__(
        self,
        peers: Sequence[ClientEnd],
        me: int,
        storage: Storage,
        apply_ch: asyncio.Queue[ApplyMsg] | Callable[[list[ApplyMsg]], None],
        config: RaftConfig,
        rng: random.Random,
        validate_snapshot: Callable[[bytes], object] | None = None,
        tracer: Callable[[str, str], None] | None = None,
        bootstrap: Configuration | None = None,
        connect: Callable[[int, str], ClientEnd] | None = None,
        restore: Callable[[SnapshotReader], Awaitable[None]] | None = None,
    ) -> None:
        """`bootstrap`: the configuration with empty storage (default: `peers`, all voters).
        `connect(node_id, address)`: a client end for a member added later.
        `restore(reader)`: streams an installed snapshot to the service (instead
        of an ApplyMsg holding its bytes)."""
        self._loop = asyncio.get_running_loop()
        self._peers: dict[int, ClientEnd] = dict(enumerate(peers))
        # Ends that can start a call without a task (see StartingClientEnd).
        self._starters: dict[int, Callable[[str, Any], asyncio.Future[Any]] | None] = {
            peer: getattr(end, "start_call", None) for peer, end in self._peers.items()
        }
        self._connect = connect
        self.me = me
        self._storage = storage
        self._apply_ch = apply_ch
        self._config = config
        self._killed = False
        self._validate_snapshot = validate_snapshot
        self._restore = restore
        self._staging = Staging(storage)
        self.failure: str | None = None  # why the peer fail-stopped (None: it did not)
        self._failure_callbacks: list[Callable[[str], None]] = []
        self._log_watchers: list[Callable[[], None]] = []  # on_log_changed
        # Insertion-ordered, so kill() cancels in creation order and a seed replays exactly.
        self._tasks: dict[asyncio.Task[Any], None] = {}
        self._reads = ReadWaiters(self._loop)
        self._metrics = PeerMetrics()
        self._persister = Persister(storage, self._metrics, self._loop.time)
        self._drain_scheduled = False
        self._commit_broadcast: asyncio.TimerHandle | None = None
        self._refusal_log = DropLog(logger, self._loop.time, 1.0)  # a hostile peer cannot flood it
        self._apply_wakeup = asyncio.Event()
        self._apply_after: asyncio.Future[None] | None = None  # the write it waits for
        self._own = OwnCommands()
        self._trace = tracer or make_tracer(me, self._loop.time, self._status)
        self._core = RaftCore(
            me,
            len(self._peers),
            storage.load(),
            config,
            rng,
            snapshot=storage.snapshot_info(),
            trace=self._trace,
            bootstrap=bootstrap,
        )
        core = self._core
        self._handlers: dict[type, Callable[[Any], Any]] = {
            RequestVoteArgs: core.handle_request_vote,
            AppendEntriesArgs: core.handle_append_entries,
            TimeoutNowArgs: core.handle_timeout_now,
        }
        self._config_version = -1
        self._members_changed()
        self._view = CoreView(self._core)
        self._pump = ChunkPump(
            storage, self._core.chunk_length, self._send_now, self._chunk_lost, self._spawn
        )
        self.leadership = LeadershipWatch(self._loop)  # wait on it instead of polling status()
        self.leadership.observe(self._core.current_term, None, None)
        self._spawn(self._ticker(), "ticker")
        self._spawn(self._applier(), "applier")

    # ------------------------------------------------------------------ service API

    def start(self, command: Any) -> tuple[int, int, bool]:
        """Start agreement on `command`: (index, term, is_leader). Returns at once.

        Raises TypeError if the command cannot be encoded (see raftio.codec).
        """
        if self._killed:
            return -1, -1, False
        core = self._core
        if not core.is_leader:
            return core.log.last_index + 1, core.current_term, False
        data = codec.encode_command(command)  # raises TypeError for unsupported commands
        index, term, is_leader = core.start(data)
        if is_leader:
            self._own.remember(index, term, command)
            self._schedule_drain()  # one drain per loop iteration batches a burst of starts
        return index, term, is_leader

    def get_state(self) -> tuple[int, bool]:
        """(current_term, is_leader); a killed peer is never the leader."""
        return self._core.current_term, self._core.is_leader and not self._killed

    def snapshot(self, index: int, snapshot: bytes) -> None:
        """The service's state through `index` is `snapshot`: compact the log up to it."""
        if self._killed:
            return
        if self._core.compact(index, bytes(snapshot)):
            self._drain()

    def kill(self) -> None:
        """Stop every task now; a killed peer sends, applies and answers nothing."""
        if self._killed:
            return
        self._killed = True
        for task in list(self._tasks):
            task.cancel()
        if self._commit_broadcast is not None:
            self._commit_broadcast.cancel()
        self._reads.refuse_all()
        self.leadership.close()
        self._pump.close()
        self._staging.abort()
        self._storage.close()

    def killed(self) -> bool:
        return self._killed

    def on_failure(self, callback: Callable[[str], None]) -> None:
        """Call `callback(reason)` once if this peer fail-stops (see `failure`)."""
        if self.failure is not None:
            callback(self.failure)
        else:
            self._failure_callbacks.append(callback)

    def on_log_changed(self, callback: Callable[[], None]) -> None:
        """Call `callback()` after each change to this peer's log while it does not lead.

        A deposed leader learns here that a new leader's log replaced entries
        it had appended (Figure 2: a follower deletes conflicting entries), or
        that an installed snapshot dropped them: `Node` fails the proposals
        waiting on those entries at once, not when the log grows back to
        their indexes. Runs inside the peer's drain: keep it short, and do
        not call back into the peer from it.
        """
        self._log_watchers.append(callback)

    def status(self) -> RaftStatus:
        """A snapshot of this peer's volatile state, for monitoring."""
        return status_of(self.me, self._core, self.failure)

    @property
    def view(self) -> CoreView:
        """The core's state, read-only: for test harnesses and invariant checkers."""
        return self._view

    def running_tasks(self) -> list[str]:
        """Names of this peer's live tasks ("S0-ticker", "S0-applier", ...); none once killed."""
        return [task.get_name() for task in self._tasks if not task.done()]

    def metrics(self) -> dict[str, float]:
        """Counters and gauges, keyed by Prometheus sample name (see raftio.metrics)."""
        core = self._core
        out = core_metrics(
            core, leading=core.is_leader and not self._killed, failed=self.failure is not None
        )
        self._metrics.export(out)
        return out

    async def read_index(self) -> int:
        """Linearizable read barrier (ReadIndex, Raft thesis 6.4).

        Returns an index such that a read of the state machine once it has
        applied that index reflects every write committed before this call.
        The core confirms leadership with one heartbeat round, shared by every
        read waiting for it. Raises NotLeaderError if this peer is not (or
        stops being) the leader; a new leader answers once an entry of its
        term has committed (at once refused without `leader_noop`). With
        `RaftConfig.lease_reads`, a leader inside its lease answers at once.
        """
        core = self._core
        if self._killed:
            raise NotLeaderError(core.leader_id)
        if core.lease_holds(self._loop.time()):
            index = core.commit_index  # lease_reads: no other leader can exist yet
            # Yield once all the same: a caller reading in a loop would otherwise
            # hold the loop, and with it the heartbeats that renew the lease.
            await asyncio.sleep(0)
            return index
        read_id = self._reads.next_id()
        if not core.read_index(read_id):
            raise NotLeaderError(core.leader_id)
        done = self._reads.wait(read_id)
        self._schedule_drain()
        return await done

    @property
    def configuration(self) -> Configuration:
        """The configuration in effect (the latest in the log, committed or not)."""
        return self._core.configuration

    def configuration_index(self) -> tuple[int, bool]:
        """(index of the latest configuration's entry, whether it is committed)."""
        core = self._core
        index = core.configs.latest_index
        return index, index <= core.commit_index

    def change_configuration(self, config: Configuration) -> tuple[int, int]:
        """Append `config` (thesis 4.1 single-server change); returns (index, term) at once.

        Raises NotLeaderError, ChangePendingError (retriable), NotSingleChangeError
        or LastVoterError. The change is in effect once appended; it is safe
        once the entry commits (watch for its index on the apply channel).
        """
        core = self._core
        if self._killed:
            raise NotLeaderError(None)
        reason = core.propose_configuration(config)
        if reason is not None:
            if reason == "not_leader":
                raise NotLeaderError(core.leader_id)
            error = _CHANGE_REFUSALS[reason]
            raise error(f"configuration change refused: {reason.replace('_', ' ')}")
        self._drain()
        return core.configs.latest_index, core.current_term

    async def transfer_leadership(self, to: int | None = None) -> int:
        """Hand leadership to peer `to` (None: the most caught-up); returns the new leader.

        Thesis 3.10: proposals are refused meanwhile (`start` says not leader),
        the target is brought up to date and told to campaign at once. Raises
        NotLeaderError if this peer does not lead, ValueError for a `to` that
        is not another peer, LeadershipTransferError if no other leader emerged
        (the transfer is abandoned after an election timeout; this peer may
        still lead, or the cluster may still be electing).
        """
        core = self._core
        if self._killed or not core.is_leader:
            raise NotLeaderError(core.leader_id)
        target = core.most_caught_up_peer() if to is None else to
        if target == self.me or not core.progress:
            return self.me  # already there, or a single peer
        if target is None:
            raise LeadershipTransferError("no peer answers: none can take over")
        refused = core.transfer_leadership(target)
        if refused in ("unknown_peer", "not_voter"):
            raise NotVoterError(f"peer {target!r} is not a voter to hand leadership to")
        self._drain()
        config = self._config
        timeout = 3 * config.election_ticks[1] * config.tick_interval
        leader = await self.leadership.wait_for_handover(self.me, timeout)
        if leader is not None:
            return leader
        raise LeadershipTransferError(f"leadership did not move to S{target}")

    # ------------------------------------------------------------------ RPC handlers

    async def request_vote(self, args: RequestVoteArgs) -> RequestVoteReply | None:
        return await self._answer(RequestVoteArgs, args)

    async def append_entries(self, args: AppendEntriesArgs) -> AppendEntriesReply | None:
        return await self._answer(AppendEntriesArgs, args)

    async def timeout_now(self, args: TimeoutNowArgs) -> TimeoutNowReply | None:
        return await self._answer(TimeoutNowArgs, args)

    async def _answer(self, expected: type, args: Any) -> Any | None:
        if type(args) is not expected:
            return None  # a method called with another RPC's arguments
        return await _when_durable(self.answer_now(args))

    async def _settle(self, reply: R | None) -> R | None:
        """Return `reply` once the state it promises is durable (None: no answer)."""
        return cast("R | None", await _when_durable(self._settle_now(reply)))

    def answer_now(self, args: Any) -> Any | None:
        """Answer a RequestVote, AppendEntries or TimeoutNow without a task.

        Returns the reply, None (no answer), or a `PendingReply` when the
        state the reply promises is still being written: it may leave only
        once that write is durable.
        """
        handle = self._handlers.get(type(args))
        if handle is None or self._killed:
            return None
        if self._trace:
            self._trace("recv", describe(args))
        self._metrics.received(handle.__name__.removeprefix("handle_"))
        try:
            reply = handle(args)
        except Exception:
            self._fail("handling " + describe(args))
            return None
        return self._settle_now(reply)

    def _settle_now(self, reply: Any | None) -> Any | None:
        if reply is None:
            return None  # refused by the core (counted there); nothing changed
        self._drain()
        pending = self._storage.sync()
        if pending is not None:
            return PendingReply(pending, reply, self._alive)
        return None if self._killed else reply

    def _alive(self) -> bool:
        return not self._killed

    # ------------------------------------------------------------------ drain

    def _schedule_drain(self) -> None:
        if not self._drain_scheduled:
            self._drain_scheduled = True
            self._loop.call_soon(self._drain)

    def _drain(self) -> None:
        """Persist, then send, then wake the applier (a leader's new entries may go first)."""
        self._drain_scheduled = False
        if self._killed:
            return
        core = self._core
        ops = core.take_storage_ops()
        outbox = core.take_outbox()
        if core.config_version != self._config_version:
            self._members_changed()
        if ops and outbox and all(type(op) is AppendLog for op in ops):
            # Only vote requests would wait for these writes (below): a leader's
            # new entries go out first, so its followers start one local write
            # sooner; the leader's own write runs alongside theirs anyway.
            outbox = self._send_unheld(outbox, hold_all=False)
        pending = None
        if ops:
            try:
                pending = self._persister.write(ops)
            except StorageError as exc:
                self._fail(f"storage write failed: {exc}")
                return
            except Exception as exc:
                # Memory and disk may disagree now: stop before acting on either.
                self._fail(f"storage write failed unexpectedly: {exc!r}")
                return
            mark = (core.log.last_index, core.log.last_term)
            vote = self._persister.wrote_hard_state
            if self._log_watchers and not core.is_leader:
                for watcher in self._log_watchers:
                    watcher()
            if pending is None:
                if vote:
                    core.on_vote_durable()
                core.on_log_durable(*mark)
            else:
                pending.add_done_callback(lambda fut: self._on_synced(fut, mark, vote))
        if pending is None:
            for item in outbox:
                self._send(item)
        else:
            # A leader's entries may travel while its own write is in flight;
            # votes and vote requests wait for durability, and so does anything
            # sent in a new term (a sole voter leads at once: its entries must
            # not reach a learner before its vote is durable, or a crash could
            # let it lead the same term twice).
            deferred = self._send_unheld(outbox, hold_all=self._persister.wrote_hard_state)
            if deferred:
                pending.add_done_callback(lambda fut: self._send_after_sync(fut, deferred))
        if self._reads.waiting:
            self._reads.settle(core.take_reads(), core.leader_id)
        if core.commit_broadcast_due and self._commit_broadcast is None:
            self._commit_broadcast = self._loop.call_later(
                COMMIT_BROADCAST_DELAY, self._broadcast_commit
            )
        if core.has_applicable():
            self._wake_applier_after_write()
        watch = self.leadership
        if (
            core.current_term != watch.term
            or core.leader_id != watch.leader_id
            or core.transfer_target != watch.target
        ):
            watch.observe(core.current_term, core.leader_id, core.transfer_target)

    def _wake_applier_after_write(self) -> None:
        """Wake the applier: a follower's once its newest write in flight is done.

        Nobody waits for a follower's applying, but the leader waits for its
        reply, which waits for the write just started. Applying now would hold
        the GIL the write's thread needs to begin.
        """
        writing = None if self._core.is_leader else self._persister.newest_sync()
        if writing is None:
            self._apply_wakeup.set()
        elif writing is not self._apply_after:
            self._apply_after = writing
            writing.add_done_callback(self._wake_applier)

    def _wake_applier(self, _written: asyncio.Future[None]) -> None:
        self._apply_wakeup.set()

    def _send_unheld(self, outbox: list[Send], *, hold_all: bool) -> list[Send]:
        """Send what need not wait for the write in flight; return what must."""
        held = []
        for item in outbox:
            if hold_all or isinstance(item.request, RequestVoteArgs):
                held.append(item)
            else:
                self._send(item)
        return held

    def _members_changed(self) -> None:
        """Connect to members the configuration names that we have no client end for."""
        core = self._core
        self._config_version = core.config_version
        if self._connect is None:
            return
        for peer, address in sorted(core.configuration.members().items()):
            if peer != self.me and peer not in self._peers and address:
                end = self._connect(peer, address)
                self._peers[peer] = end
                self._starters[peer] = getattr(end, "start_call", None)

    def _broadcast_commit(self) -> None:
        self._commit_broadcast = None
        if not self._killed:
            self._core.broadcast_commit()
            self._drain()

    def _on_synced(self, fut: asyncio.Future[None], mark: tuple[int, int], vote: bool) -> None:
        self._persister.synced(fut)
        if self._killed or fut.cancelled():
            return
        exc = fut.exception()
        if exc is not None:
            self._fail(f"storage sync failed: {exc}")
            return
        if self._trace:
            self._trace("storage", f"durable through {mark[0]}@T{mark[1]}")
        if vote:
            self._core.on_vote_durable()
        self._core.on_log_durable(*mark)
        self._drain()

    def _send_after_sync(self, fut: asyncio.Future[None], items: list[Send]) -> None:
        if self._killed or fut.cancelled() or fut.exception() is not None:
            return
        for item in items:
            self._send(item)

    def _fail(self, what: str) -> None:
        """Fail-stop: a peer that cannot trust its own state must not act on it.

        Logs one CRITICAL line with the cause, stops every task (never a
        zombie that answers RPCs but neither campaigns nor applies), reports
        `failed` in `status()` and tells `on_failure` subscribers.
        """
        if self.failure is not None or self._killed:
            return
        self.failure = what
        logger.critical("S%d stopping: %s", self.me, what, exc_info=sys.exc_info()[0] is not None)
        if self._trace:
            self._trace("error", what)
        self.kill()
        callbacks, self._failure_callbacks = self._failure_callbacks, []
        for callback in callbacks:
            try:
                callback(what)
            except Exception:
                logger.exception("S%d: a failure callback raised", self.me)

    # ------------------------------------------------------------------ tasks

    def _send(self, item: Send) -> None:
        request = item.request
        if type(request) is InstallSnapshotArgs and request.total_size:
            self._pump.push(item.peer, request)  # reads its data from storage first
            return
        self._send_now(item.peer, request)

    def _send_now(self, peer: int, request: Request) -> None:
        if self._trace:
            self._trace("send", f"->S{peer} {describe(request)}")
        start_call = self._starters.get(peer)
        if start_call is None:
            if peer not in self._peers:  # a member we cannot reach (no address): as if lost
                method, now = rpc_method(request), self._loop.time()
                self._loop.call_soon(self._handle_reply, peer, method, request, now, None)
                return
            self._spawn(self._call(peer, request), "rpc")
            return
        # Fast path: the request leaves now, and the reply comes back as a callback.
        started = self._loop.time()
        method = rpc_method(request)  # once a send: the reply's handling reuses it
        start_call(method, request).add_done_callback(
            lambda fut: self._on_reply(peer, method, request, started, fut)
        )

    async def _call(self, peer: int, request: Request) -> Any:
        """Make one RPC and feed its outcome to the core; returns the (validated) reply."""
        started = self._loop.time()
        method = rpc_method(request)
        reply: Any = await self._peers[peer].call(method, request)
        return self._handle_reply(peer, method, request, started, reply)

    def _on_reply(
        self, peer: int, method: str, request: Request, started: float, fut: asyncio.Future[Any]
    ) -> None:
        try:
            reply = None if fut.cancelled() else fut.result()
            self._handle_reply(peer, method, request, started, reply)
        except Exception as exc:  # as a task's failure: the peer fail-stops
            self._fail(f"handling a {method} reply failed: {exc!r}")

    def _handle_reply(
        self, peer: int, method: str, request: Request, started: float, reply: Any
    ) -> Any:
        if self._killed:
            return None
        self._metrics.sent(method, self._loop.time() - started, reply is None)
        if reply is not None and not isinstance(reply, _REPLY_TYPES[type(request)]):
            logger.warning("S%d: ignoring a %s reply to %s", self.me, type(reply).__name__, method)
            reply = None
        core = self._core
        match request:
            case AppendEntriesArgs():
                core.on_append_entries_reply(peer, request, reply)
            case InstallSnapshotArgs():
                core.on_install_snapshot_reply(peer, request, reply)
                pr = core.progress.get(peer)
                if pr is None or pr.outgoing is None:
                    self._pump.done_with(peer)
            case RequestVoteArgs():
                core.on_request_vote_reply(peer, request, reply)
            case TimeoutNowArgs():
                core.on_timeout_now_reply(peer, request, reply)
        self._drain()
        return reply

    async def _ticker(self) -> None:
        interval = self._config.tick_interval
        core, clock = self._core, self._loop.time
        catch_up = self._config.heartbeat_ticks - 1
        last = clock()
        while not self._killed:
            await asyncio.sleep(interval)
            now = clock()
            # A loop too busy to run the ticker on time (thousands of clients,
            # say) must not space out a leader's heartbeats, or its idle
            # followers elect another leader: tell the core how late it is.
            late = min(max(0, round((now - last) / interval) - 1), catch_up)
            last = now
            core.tick(now, late)
            if core.is_leader and self._persister.stalled(self._config.storage_stall_timeout):
                logger.error("S%d: storage sync stalled; stepping down as leader", self.me)
                core.step_down()
            self._drain()

    async def _applier(self) -> None:
        """The only writer to apply_ch: delivers in index order, waits for room."""
        core, queue, limit = self._core, self._apply_ch, self._config.max_apply_batch
        while True:
            await self._apply_wakeup.wait()
            self._apply_wakeup.clear()
            while not self._killed and core.has_applicable():
                applicable = core.take_applicable(limit)
                if applicable is None:
                    break
                if self._trace:
                    self._trace("apply", describe_applicable(applicable))
                if isinstance(applicable, ApplySnapshot):
                    msgs = await self._snapshot_msgs(applicable)
                else:
                    msgs = self._own.apply_msgs(applicable)
                if isinstance(queue, asyncio.Queue):
                    await deliver(msgs, queue, self.killed)
                else:
                    queue(msgs)  # Node's callable: no queue hop, no coroutine per batch
                if core.has_applicable():
                    await asyncio.sleep(0)  # let RPCs and clients run between batches

    def _spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> None:
        task = self._loop.create_task(coro, name=f"S{self.me}-{name}")
        self._tasks[task] = None
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.pop(task, None)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            # A dead ticker or applier would leave a zombie: stop the whole peer.
            logger.error("S%d: task %s failed", self.me, task.get_name(), exc_info=exc)
            self._fail(f"task {task.get_name()} failed: {exc!r}")

    def _status(self) -> tuple[int, str]:
        core = getattr(self, "_core", None)
        if core is None:
            return 0, "init"
        return core.current_term, core.role.value


async def _when_durable(answer: Any | None) -> Any | None:
    """An `answer_now` result as a coroutine's: a pending reply once its write is done."""
    if type(answer) is PendingReply:
        await asyncio.wait((answer.durable,))  # never cancels the write others share
        return answer.settled()
    return answer
