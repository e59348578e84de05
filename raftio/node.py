"""Node: the embedding API for asyncio services.

A Node runs one replica of a service's state machine: the TCP server, the
file storage, the Raft peer and the applier that feeds committed commands
to the state machine. Services call `propose()` to change state and
`read()` for linearizable reads, without touching Figure 2.

    async with raftio.Node(0, ["127.0.0.1:7000", "127.0.0.1:7001", "127.0.0.1:7002"],
                           "data/n0", Counter()) as node:
        result = await node.propose(("add", 1))

`None` is reserved as the no-op a new leader commits (§8); services never
see it.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import random
import ssl as ssl_module
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from raftio.catch_up import wait_caught_up
from raftio.config import RaftConfig
from raftio.core import Role
from raftio.errors import (
    LeadershipTransferError,
    NodeClosedError,
    NodeFailedError,
    NotLeaderError,
    NotVoterError,
    ProposalLostError,
    ProposalTimeoutError,
)
from raftio.factory import make
from raftio.leadership import Leadership
from raftio.membership import Configuration, Membership, check_member
from raftio.messages import ApplyMsg, UndecodableCommand
from raftio.proposals import ProposalTimers, settle
from raftio.raft import Raft
from raftio.snapshotting import Snapshotter
from raftio.state_machine import StateMachine, StreamingStateMachine
from raftio.storage.base import Storage, StorageError
from raftio.transport.base import ClientEnd

if TYPE_CHECKING:
    from raftio.transport.tcp import TcpClientEnd

logger = logging.getLogger(__name__)


# Commands raftio itself puts in the log: never handed to the state machine.
_RAFTIO_OWN = frozenset({type(None), Configuration, UndecodableCommand})


@dataclass(frozen=True, slots=True)
class NodeStatus:
    node_id: int
    address: str
    role: Role  # a str: "follower", "pre-candidate", "candidate", "leader" or "failed"
    term: int
    leader_id: int | None
    leader_address: str | None
    commit_index: int
    applied_index: int
    last_index: int
    snapshot_index: int
    log_bytes: int
    match_index: dict[int, int]
    failure: str | None = None  # why the node fail-stopped (role is then "failed")


def parse_address(address: str) -> tuple[str, int]:
    """'host:port' or '[v6]:port' -> (host, port); ValueError if malformed."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"address {address!r} is not host:port")
    return host.strip("[]"), int(port)


class Node:
    """One replica of a service: TCP server, FileStorage, Raft peer and applier.

    Args:
        node_id: this node's id: a key of `addresses` (an index, if a list).
        addresses: each node's advertised "host:port" by id (a mapping, or a
            list indexed by id). With empty storage they are the cluster's
            first configuration, all voters; once the log holds a
            configuration, it decides, and these only name this node's address.
        join: a new member of a running cluster: bootstrap nothing, never
            campaign, and wait for a leader's `add_member` (`addresses` names
            this node's own address, and may name others).
        data_dir: where FileStorage keeps this node's log and snapshots.
        state_machine: the service's replicated state (see StateMachine, and
            StreamingStateMachine for states too big to snapshot as bytes).
        cluster_id: nodes of another cluster are refused at the handshake.
        bind: "host:port" to listen on, if not the advertised address.
        secret: shared secret for HMAC authentication of peers.
        ssl_server, ssl_client: TLS contexts (mutual authentication) for peers.
        snapshot_bytes: snapshot once the log since the last snapshot passes this.
        propose_timeout: default seconds `propose()` and `read()` wait.
        storage, peers: replace FileStorage / TCP (tests run Nodes in memory):
            `peers` lists a client end per id, or makes one from (id, address).
        rng: the peer's randomness (seed it for reproducible tests).
    """

    def __init__(
        self,
        node_id: int,
        addresses: Sequence[str] | Mapping[int, str],
        data_dir: str | Path | None,
        state_machine: StateMachine | StreamingStateMachine,
        *,
        join: bool = False,
        cluster_id: str = "raftio",
        config: RaftConfig | None = None,
        bind: str | None = None,
        secret: bytes | None = None,
        ssl_server: ssl_module.SSLContext | None = None,
        ssl_client: ssl_module.SSLContext | None = None,
        snapshot_bytes: int = 8 << 20,
        propose_timeout: float = 5.0,
        storage: Storage | None = None,
        peers: Sequence[ClientEnd] | Callable[[int, str], ClientEnd] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        by_id = dict(addresses) if isinstance(addresses, Mapping) else dict(enumerate(addresses))
        for member, address in by_id.items():
            check_member(member, address)
        if node_id not in by_id:
            raise ValueError(f"node_id {node_id} has no address in {sorted(by_id)}")
        if storage is None and data_dir is None:
            raise ValueError("a data_dir is needed unless a storage is given")
        self.node_id = node_id
        self.addresses = by_id
        self.address = by_id[node_id]
        self._join = join
        self._bind = bind or self.address
        parse_address(self._bind)
        self._data_dir = Path(data_dir) if data_dir is not None else None
        self._sm = state_machine
        self._cluster_id = cluster_id
        self._config = replace(config or RaftConfig(), leader_noop=True)
        self._secret = secret
        self._ssl_server, self._ssl_client = ssl_server, ssl_client
        self._timeout = propose_timeout
        self._storage = storage
        self._peers = peers
        self._rng = rng
        self._raft: Raft | None = None
        self._server: Any = None
        self._ends: list[TcpClientEnd] = []
        self._timers: ProposalTimers | None = None
        self._waiters: dict[int, tuple[int, asyncio.Future[Any]]] = {}
        self._applied_waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()
        self.applied_index = 0
        self._closed = False
        self._snapshots = Snapshotter(state_machine, snapshot_bytes, self._restored)
        self.failure: str | None = None  # why the node fail-stopped, if it did
        self._failed = asyncio.Event()

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> Node:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def raft(self) -> Raft:
        """The underlying peer (started)."""
        if self._raft is None:
            raise NodeClosedError("the node is not started")
        return self._raft

    async def start(self) -> None:
        """Open storage, restore the state machine, start the peer and serve RPCs."""
        if self._raft is not None or self._closed:
            raise RuntimeError("a Node starts once")
        self._loop = asyncio.get_running_loop()
        storage = self._storage if self._storage is not None else self._open_storage()
        try:
            await self._snapshots.restore_stored(storage)
        except StorageError:
            storage.close()
            raise
        fixed: Sequence[ClientEnd] = []
        connect: Callable[[int, str], ClientEnd] | None = self._connect
        if callable(self._peers):
            connect = self._peers
        elif self._peers is not None:
            fixed, connect = list(self._peers), None
        self._timers = ProposalTimers(self._loop)
        self._raft = make(
            fixed,
            self.node_id,
            storage,
            self._apply_batch,
            self._config,
            rng=self._rng,
            bootstrap=Configuration() if self._join else Configuration.of_voters(self.addresses),
            connect=connect,
            **self._snapshots.peer_options(),
        )
        self._raft.on_failure(self._on_failure)
        self._raft.on_log_changed(self._drop_replaced)
        self._storage = storage
        self.applied_index = self._raft.status().snapshot_index
        self._snapshots.note_restored(self.applied_index)
        if self._peers is None:
            try:
                await self._serve()
            except BaseException:
                await self.close()  # release the peer and the storage lock
                raise

    def _open_storage(self) -> Storage:
        from raftio.storage.file import FileStorage  # only nodes on disk need it

        assert self._data_dir is not None
        return FileStorage(self._data_dir)

    def _connect(self, node_id: int, address: str) -> ClientEnd:
        """A TCP client end for member `node_id` (the peer calls this as members appear)."""
        from raftio.transport.tcp import TcpClientEnd

        host, port = parse_address(address)
        end = TcpClientEnd(
            host,
            port,
            cluster_id=self._cluster_id,
            node_id=self.node_id,
            ssl=self._ssl_client,
            secret=self._secret,
        )
        self._ends.append(end)
        return end

    async def _serve(self) -> None:
        from raftio.transport.tcp import serve

        host, port = parse_address(self._bind)
        if self._secret is None and self._ssl_server is None and self._ssl_client is None:
            logger.warning(
                "S%d: peers are not authenticated (no secret, no TLS): anyone who reaches "
                "%s can speak Raft to this node",
                self.node_id,
                self._bind,
            )
        self._server = await serve(
            self.raft,
            host,
            port,
            cluster_id=self._cluster_id,
            node_id=self.node_id,
            ssl=self._ssl_server,
            secret=self._secret,
        )

    async def close(self, *, transfer: bool = True) -> None:
        """Stop serving and replicating; pending proposals fail with NodeClosedError.

        A leader first hands leadership to the most caught-up peer (thesis
        3.10), so the service pauses for one round of votes instead of an
        election timeout; if that fails, it closes anyway. `transfer=False`
        stops at once, as a crash would.
        """
        if self._closed:
            return
        raft = self._raft
        if transfer and raft is not None and raft.get_state()[1]:  # a live leader
            try:
                await raft.transfer_leadership()
            except (LeadershipTransferError, NotLeaderError) as exc:
                logger.info("S%d: closing without a hand-over: %s", self.node_id, exc)
        if self._closed:
            return
        self._closed = True
        if self._raft is not None:
            self._raft.kill()
        await self._snapshots.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for end in self._ends:
            end.close()
        for end in self._ends:
            await end.wait_closed()
        self._fail_all(NodeClosedError("the node was closed"))

    async def transfer_leadership(self, to: int | None = None) -> int:
        """Hand leadership to node `to` (None: the most caught-up); returns the new leader's id.

        Proposals meanwhile fail fast with NotLeaderError naming the target.
        Raises NotLeaderError (with the leader's id and address) unless this
        node leads, NotVoterError (a ValueError) for an id that is not a voter's, and
        LeadershipTransferError if leadership did not move in time (retriable).
        """
        raft = self._live_raft()
        if to is not None and not (type(to) is int and raft.configuration.is_voter(to)):
            raise NotVoterError(f"node {to!r} is not a voter of this cluster")
        try:
            return await raft.transfer_leadership(to)
        except NotLeaderError:
            raise self._not_leader() from None

    # ------------------------------------------------------------------ membership

    def configuration(self) -> Membership:
        """The configuration in effect: voters, learners, its index, whether committed."""
        raft = self.raft
        index, committed = raft.configuration_index()
        config = raft.configuration
        return Membership(dict(config.voters), dict(config.learners), index, committed)

    async def add_member(
        self, node_id: int, address: str, *, voter: bool = True, timeout: float | None = None
    ) -> Membership:
        """Add node `node_id` at `address`: as a learner, then (`voter`) promote it.

        The new node must run with `join=True` (it bootstraps nothing). It is
        promoted only once it has caught up (thesis 4.2.1: a replication round
        shorter than an election timeout), so the cluster never waits on a
        voter that is far behind. Raises NotLeaderError (with the hint),
        DuplicateMemberError (id or address taken), ChangePendingError
        (another change is not committed yet: retry), CatchUpError (it stays
        a learner; retry), ProposalTimeoutError, ValueError for a bad id or address.
        """
        raft = self._live_raft()
        if not self.is_leader():
            raise self._not_leader()
        config = raft.configuration
        check_member(node_id, address)
        if not (voter and config.learners.get(node_id) == address):
            await self._change(config.with_member(node_id, address, voter=False), timeout)
        if not voter:
            return self.configuration()
        patience = self._timeout if timeout is None else timeout
        try:
            await wait_caught_up(raft, node_id, self._config, patience)
        except NotLeaderError:
            raise self._not_leader() from None
        config = raft.configuration
        await self._change(config.with_member(node_id, address, voter=True), timeout)
        return self.configuration()

    async def remove_member(self, node_id: int, *, timeout: float | None = None) -> Membership:
        """Remove voter or learner `node_id`; returns the configuration once it commits.

        A leader that removes itself leads until the removal commits, then hands
        over and steps down. Raises NotLeaderError, UnknownMemberError,
        LastVoterError, ChangePendingError (retry), ProposalTimeoutError.
        """
        raft = self._live_raft()
        if not self.is_leader():
            raise self._not_leader()
        await self._change(raft.configuration.without_member(node_id), timeout)
        return self.configuration()

    async def _change(self, config: Configuration, timeout: float | None) -> None:
        raft = self._live_raft()
        try:
            index, term = raft.change_configuration(config)
        except NotLeaderError:
            raise self._not_leader() from None
        await self._await_entry(index, term, timeout)

    def is_leader(self) -> bool:
        """This node leads now (it may learn otherwise at any moment)."""
        raft = self._raft
        return raft is not None and not self._closed and raft.get_state()[1]

    async def wait_for_leader(self, timeout: float | None = None) -> int:
        """Wait until this node knows a leader (maybe itself); returns its id.

        Raises TimeoutError after `timeout` seconds, NodeClosedError if the node stops.
        """
        watch = self._live_raft().leadership
        async with asyncio.timeout(timeout):
            while watch.leader_id is None:
                if watch.closed:
                    raise NodeClosedError("the node stopped")
                await watch.changed()
        return watch.leader_id

    def leadership_changes(self) -> AsyncIterator[Leadership]:
        """The current (term, leader_id), then each change, until the node stops.

        `leader_id` is None while no leader is known (an election is under way).
        """
        return self._live_raft().leadership.changes()

    async def wait_failed(self) -> str:
        """Wait until the node fail-stops; returns why (see `failure`)."""
        await self._failed.wait()
        assert self.failure is not None
        return self.failure

    def _on_failure(self, reason: str) -> None:
        self.failure = reason
        self._failed.set()
        self._fail_all(NodeFailedError(reason))

    # ------------------------------------------------------------------ service API

    async def propose(self, command: Any, *, timeout: float | None = None) -> Any:
        """Replicate `command`; return the state machine's result once it is applied.

        Raises NotLeaderError (naming the leader when known), ProposalTimeoutError,
        ProposalLostError (leadership changed; outcome unknown), NodeClosedError,
        TypeError for a command that cannot be encoded, or whatever the state
        machine's `apply` raised for this command.
        """
        if command is None:
            raise ValueError("None is reserved for raftio's own no-op entries")
        raft = self._live_raft()
        index, term, is_leader = raft.start(command)
        if not is_leader:
            raise self._not_leader()
        return await self._await_entry(index, term, timeout)

    async def _await_entry(self, index: int, term: int, timeout: float | None) -> Any:
        """The result of applying our entry at `index` (appended in `term`)."""
        future: asyncio.Future[Any] = self._loop.create_future()
        older = self._waiters.get(index)
        if older is not None:  # our earlier entry at this index was truncated away
            settle(older[1], exc=ProposalLostError("leadership changed before commit"))
        self._waiters[index] = (term, future)
        timers = self._timers
        assert timers is not None
        bucket = timers.add(future, index, self._timeout if timeout is None else timeout)
        try:
            return await future
        finally:
            timers.discard(bucket, future)
            if self._waiters.get(index, (0, None))[1] is future:
                del self._waiters[index]

    async def read(self, query: Any = None, *, timeout: float | None = None) -> Any:
        """A linearizable read: `state_machine.query(query)` after a ReadIndex barrier.

        Nothing is written to the log. The state machine needs a `query`
        method; with `query=None` and no such method, returns None once the
        barrier has passed (the caller then reads its state directly).
        """
        raft = self._live_raft()
        try:
            async with asyncio.timeout(self._timeout if timeout is None else timeout):
                try:
                    index = await raft.read_index()  # a new leader's waits for its no-op (§8)
                except NotLeaderError:
                    raise self._not_leader() from None
                await self._wait_applied(index)
        except TimeoutError:
            raise ProposalTimeoutError("read barrier not passed in time") from None
        query_fn = getattr(self._sm, "query", None)
        if query_fn is None:
            return None
        return query_fn(query)

    def metrics(self) -> dict[str, float]:
        """The peer's metrics plus the node's (applied index, snapshots taken)."""
        out = self.raft.metrics()
        out["raftio_node_applied_index"] = self.applied_index
        out["raftio_node_snapshots_total"] = self._snapshots.taken
        out["raftio_node_snapshot_bytes"] = self._snapshots.last_bytes
        out["raftio_node_log_bytes"] = self._storage.raft_state_size() if self._storage else 0
        self._snapshots.seconds.export("raftio_node_snapshot_seconds", "", out)
        return out

    def status(self) -> NodeStatus:
        raft = self.raft
        st = raft.status()
        leader = st.leader_id
        return NodeStatus(
            node_id=self.node_id,
            address=self.address,
            role=st.role,
            term=st.term,
            leader_id=leader,
            leader_address=self._address_of(leader) if leader is not None else None,
            commit_index=st.commit_index,
            applied_index=self.applied_index,
            last_index=st.last_index,
            snapshot_index=st.snapshot_index,
            log_bytes=self._storage.raft_state_size() if self._storage is not None else 0,
            match_index=st.match_index,
            failure=st.failure,
        )

    # ------------------------------------------------------------------ applier

    def _apply_batch(self, batch: list[ApplyMsg]) -> None:
        """The peer's applier hands over each batch of committed entries here."""
        if self._closed:
            return
        for msg in batch:
            self._apply(msg)
        self._wake_readers()
        self._maybe_snapshot()

    def _apply(self, msg: ApplyMsg) -> None:
        if msg.snapshot_valid:
            if msg.snapshot_index <= self.applied_index:
                return
            self._sm.restore(msg.snapshot)  # type: ignore[union-attr]  # only bytes ones get these
            self._restored(msg.snapshot_index)
            return
        index = msg.command_index
        self.applied_index = index
        waiter = self._waiters.pop(index, None)
        command = msg.command
        if type(command) in _RAFTIO_OWN:  # one set lookup on the hot path, not three tests
            self._skip(index, msg.command_term, command, waiter)
            return
        try:
            result = self._sm.apply(command)
        except Exception as exc:
            logger.debug("apply of index %d raised %r", index, exc)
            if waiter is not None:
                settle(waiter[1], exc=exc)
            return
        if waiter is not None:
            term, future = waiter
            if term == msg.command_term:
                settle(future, result=result)
            else:
                settle(future, exc=ProposalLostError("leadership changed before commit"))

    def _skip(
        self, index: int, term: int, command: Any, waiter: tuple[int, asyncio.Future[Any]] | None
    ) -> None:
        """An entry of raftio's own: a no-op, a configuration, or one that does not decode."""
        if isinstance(command, UndecodableCommand):
            # Forged or damaged: skipped alike on every replica, never applied.
            logger.error("S%d: skipped entry %d: its command does not decode", self.node_id, index)
            lost = "the entry was replaced by one that does not decode"
        elif command is None:  # a leader's no-op: a proposal waiting here lost its entry
            lost = "leadership changed"
        elif waiter is not None and waiter[0] == term:  # our configuration change committed
            settle(waiter[1], result=command)
            return
        else:
            lost = "leadership changed before commit"
        if waiter is not None:
            settle(waiter[1], exc=ProposalLostError(lost))

    def _drop_replaced(self) -> None:
        """Our log changed while another leads: fail the proposals whose entries are gone.

        A new leader's log replaces the entries this node appended as leader
        and never committed. Their indexes may stay empty for long in a quiet
        cluster, so their proposals fail now rather than when those indexes
        are applied again (or at their timeout). Waiters at or below the
        snapshot are left to `_restored`.
        """
        waiters = self._waiters
        if not waiters or self._raft is None:
            return
        log = self._raft.view.log
        floor = log.snapshot_index
        gone = [i for i, (term, _) in waiters.items() if i > floor and log.term_at(i) != term]
        for index in gone:
            _, future = waiters.pop(index)
            settle(
                future,
                exc=ProposalLostError("leadership changed: the new leader replaced the entry"),
            )

    def _restored(self, index: int) -> None:
        """The state machine now holds a leader's snapshot through `index`."""
        self.applied_index = index
        self._snapshots.note_restored(index)
        for waiting in [i for i in self._waiters if i <= index]:
            _, future = self._waiters.pop(waiting)
            settle(future, exc=ProposalLostError("superseded by a snapshot from the leader"))
        self._wake_readers()

    def _maybe_snapshot(self) -> None:
        storage, raft = self._storage, self._raft
        if storage is not None and raft is not None:
            self._snapshots.maybe_take(raft, storage, self.applied_index)

    async def _wait_applied(self, index: int) -> None:
        if self.applied_index >= index:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._applied_waiters, (index, next(self._seq), future))
        await future

    def _wake_readers(self) -> None:
        heap = self._applied_waiters
        while heap and heap[0][0] <= self.applied_index:
            settle(heapq.heappop(heap)[2], result=None)

    # ------------------------------------------------------------------ helpers

    def _live_raft(self) -> Raft:
        if self.failure is not None:
            raise NodeFailedError(self.failure)
        if self._closed or self._raft is None or self._raft.killed():
            raise NodeClosedError("the node is not running")
        return self._raft

    def _not_leader(self) -> NotLeaderError:
        leader = self.raft.status().leader_id
        if leader == self.node_id:
            leader = self.raft.leadership.target  # handing over: point at the successor
        if leader is None or leader == self.node_id:
            return NotLeaderError()
        return NotLeaderError(leader, self._address_of(leader))

    def _address_of(self, node_id: int) -> str | None:
        """A member's address: the configuration's, else the one we were given."""
        address = self._raft.configuration.address(node_id) if self._raft is not None else None
        return address or self.addresses.get(node_id)

    def _fail_all(self, exc: Exception) -> None:
        for _, future in self._waiters.values():
            settle(future, exc=exc)
        self._waiters.clear()
        for _, _, waiter in self._applied_waiters:
            settle(waiter, exc=exc)
        self._applied_waiters.clear()
