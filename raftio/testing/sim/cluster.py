"""SimCluster: n raftio peers on one in-memory Network, each with a SimStorage and a Service.

Peers are real `raftio.make` peers. The cluster crashes and restarts them
(a restart builds a new peer from what the crashed storage kept), routes
their trace lines to the `Trace` and the `InvariantChecker`, and reports
every reply their handlers give to the checker (durability promises).

Each peer gets its tracer through `make(tracer=...)`, so the trace and the
checker see every event from the first; the checker reads the peer through
`Raft.view` (read-only).
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import raftio
from raftio.config import RaftConfig
from raftio.membership import Configuration
from raftio.messages import ApplyMsg, InstallSnapshotArgs
from raftio.testing.invariants import InvariantChecker
from raftio.testing.sim.service import Service
from raftio.testing.sim.storage import SimStorage
from raftio.testing.sim.trace import Trace, Tracer
from raftio.transport.memory import Network
from raftio.view import CoreView


class _SimServer:
    """Peer i as the network sees it: its handlers, with every reply shown to the checker."""

    def __init__(
        self,
        me: int,
        rf: raftio.Raft,
        checker: InvariantChecker,
        corrupt: Callable[[bytes], bytes] | None = None,
    ) -> None:
        self._me, self._rf, self._checker = me, rf, checker
        self._corrupt = corrupt  # damages a snapshot chunk now and then (its crc32 must tell)

    async def request_vote(self, args: Any) -> Any:
        return self._seen(args, await self._rf.request_vote(args))

    async def append_entries(self, args: Any) -> Any:
        return self._seen(args, await self._rf.append_entries(args))

    async def install_snapshot(self, args: Any) -> Any:
        if self._corrupt is not None and isinstance(args, InstallSnapshotArgs) and args.data:
            args = dataclasses.replace(args, data=self._corrupt(args.data))
        return self._seen(args, await self._rf.install_snapshot(args))

    async def timeout_now(self, args: Any) -> Any:
        return self._seen(args, await self._rf.timeout_now(args))

    def _seen(self, args: Any, reply: Any) -> Any:
        if reply is not None:
            self._checker.on_reply(self._me, args, reply)
        return reply


@dataclass(slots=True)
class SimPeer:
    """One peer slot: its storage always, its Raft and service while it runs."""

    storage: SimStorage
    rf: raftio.Raft | None = None
    service: Service | None = None
    consumer: asyncio.Task[None] | None = None
    incarnation: int = 0


class SimCluster:
    """n peers, their network and storages; crash() and start() drive their lives."""

    def __init__(
        self,
        n: int,
        rng: random.Random,
        config: RaftConfig,
        latency: tuple[float, float],
        snapshot_every: int,
        net: Network,
        trace: Trace,
        checker: InvariantChecker,
        bootstrap: Configuration | None = None,
    ) -> None:
        """`bootstrap`: the first configuration (default: all n peers vote)."""
        self.n = n
        self.bootstrap = bootstrap
        self._rng = rng
        self.config = config
        self._snapshot_every = snapshot_every
        self.snapshot_pad = 0  # bytes added to each service snapshot (several chunks' worth)
        self.corrupt_chunk: Callable[[bytes], bytes] | None = None
        self.net = net
        self._trace = trace
        self._checker = checker
        storage_rng = random.Random(rng.getrandbits(63))
        self.peers = [SimPeer(SimStorage(storage_rng, latency)) for _ in range(n)]
        self.crashes = 0

    def alive(self, i: int) -> bool:
        rf = self.peers[i].rf
        return rf is not None and not rf.killed()

    def members(self) -> set[int]:
        """The members of the configuration in effect: the newest leader's, else the most
        up-to-date log's (a removed node campaigning in high terms knows nothing newer)."""
        live = [i for i in range(self.n) if self.alive(i)]
        if not live:
            return set(range(self.n))
        leaders = self.leaders()
        if leaders:
            newest = max(leaders, key=lambda i: self._raft(i).get_state()[0])
        else:
            newest = max(live, key=lambda i: _log_position(self._raft(i).view))
        return set(self._raft(newest).configuration.members())

    def leaders(self) -> list[int]:
        """Live peers that believe they lead, in peer order."""
        return [i for i in range(self.n) if self.alive(i) and self._raft(i).get_state()[1]]

    def raft(self, i: int) -> raftio.Raft | None:
        return self.peers[i].rf

    def _raft(self, i: int) -> raftio.Raft:
        rf = self.peers[i].rf
        assert rf is not None
        return rf

    def start(self, i: int) -> None:
        """Start peer i from what its storage holds (a fresh peer, or a restart)."""
        peer = self.peers[i]
        assert peer.rf is None, f"S{i} is running"
        peer.incarnation += 1
        ends = []
        for j in range(self.n):
            name = (i, j, peer.incarnation)
            ends.append(self.net.make_end(name))
            self.net.connect(name, j)
            self.net.enable(name, True)
        apply_ch: asyncio.Queue[ApplyMsg] = asyncio.Queue()
        restored = peer.storage.load()
        rng = random.Random(self._rng.getrandbits(63))
        views: list[CoreView] = []  # the peer's, once make() has built it
        tracer = self._tracer(i, views)
        rf = raftio.make(
            ends,
            i,
            peer.storage,
            apply_ch,
            self.config,
            rng=rng,
            tracer=tracer,
            bootstrap=self.bootstrap,
        )
        views.append(rf.view)
        self._checker.peer_started(i, peer.incarnation, rf.view, restored)
        self._trace.add(f"S{i}", f"T{restored.current_term}", "-", "sim", self._restored(restored))
        peer.rf = rf
        peer.service = Service(
            i,
            rf,
            apply_ch,
            self._checker,
            self._snapshot_every,
            peer.storage.read_snapshot(),
            self.snapshot_pad,
        )
        peer.consumer = asyncio.get_running_loop().create_task(peer.service.run())
        self.net.add_server(i, _SimServer(i, rf, self._checker, self.corrupt_chunk))

    def crash(self, i: int, lose_unsynced: bool) -> None:
        """Kill peer i; its storage keeps what a crash keeps (unsynced writes too, if asked)."""
        peer = self.peers[i]
        if peer.rf is None:
            return
        self.crashes += 1
        self.net.delete_server(i)
        peer.rf.kill()
        peer.rf = None
        if peer.consumer is not None:
            peer.consumer.cancel()
            peer.consumer = None
        if peer.service is not None:
            peer.service.drain()
            peer.service = None
        self._checker.peer_stopped(i)
        peer.storage = peer.storage.crash(lose_unsynced)
        self._trace.add(f"S{i}", "-", "-", "sim", f"crashed lose_unsynced={lose_unsynced}")

    def stop(self) -> None:
        """Kill every peer (end of the run)."""
        for peer in self.peers:
            if peer.rf is not None:
                peer.rf.kill()
            if peer.consumer is not None:
                peer.consumer.cancel()
        self.net.cleanup()

    def _tracer(self, i: int, views: list[CoreView]) -> Tracer:
        def status() -> tuple[int, str]:
            if not views:
                return 0, "init"  # the core is being built
            view = views[0]
            return view.current_term, view.role.value

        line = self._trace.tracer(i, status)
        checker = self._checker

        def trace(topic: str, text: str) -> None:
            line(topic, text)
            checker.on_trace(i, topic, text)
            if topic == "error":
                self._on_error(i, text)

        return trace

    def _on_error(self, i: int, text: str) -> None:
        """A peer fail-stopped: expected only after an injected storage failure."""
        if not self.peers[i].storage.failed:
            self._checker.fail("fail-stop", f"S{i} stopped itself: {text}")

    @staticmethod
    def _restored(state: Any) -> str:
        last = state.snapshot_index + len(state.entries)
        return (
            f"started vote={state.voted_for} snapshot={state.snapshot_index}@T"
            f"{state.snapshot_term} last={last}"
        )


def _log_position(view: CoreView) -> tuple[int, int]:
    return view.log.last_term, view.log.last_index
