"""MemoryKvCluster: raftio Nodes with `KVStateMachine` on the in-memory `Network`; a FaultTarget.

Its clients are `raftio.kv.KVClient`s (`MemoryKvClient`) whose attempts
travel through a `MemoryExchange` straight to a node's `KVServer.handle()`:
the same retries, redirects and sessions as over TCP, on the virtual clock,
so one seed is one deterministic run.

Never reads a wall clock: every time is the running loop's.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Collection
from pathlib import Path
from typing import Any, Literal

from raftio.config import RaftConfig
from raftio.kv.client import KVClient
from raftio.kv.machine import KVStateMachine
from raftio.kv.protocol import parse_request
from raftio.kv.server import KVServer
from raftio.node import Node
from raftio.storage.base import Storage
from raftio.storage.memory import MemoryStorage
from raftio.testing.nemesis import membership
from raftio.testing.partitions import Link
from raftio.testing.sim.links import Links
from raftio.transport.memory import MemoryClientEnd, Network

__all__ = ["MemoryExchange", "MemoryKvClient", "MemoryKvCluster", "StorageKind"]

StorageKind = Literal["memory", "file"]


class MemoryKvCluster:
    """n raftio Nodes replicating `KVStateMachine` over one in-memory `Network`; a FaultTarget.

    Each node has a `KVServer` whose `handle()` a `MemoryKvClient` reaches
    through a `MemoryExchange`. A crash closes the node and keeps what its storage made
    durable (`MemoryStorage.copy()`, or a `FileStorage` reopened); a restart
    builds a new Node, state machine and server from it.

    Args:
        n: nodes.
        seed: seeds the network, its per-link rules and the nodes' election timers.
        storage: "memory", or "file" (FileStorage under `data_dir`; its fsyncs
            take real time, so such runs are not exactly replayable).
        snapshot_bytes: nodes snapshot once their log passes this size.
        server_timeout: seconds a KV request may wait inside a node.
    """

    def __init__(
        self,
        n: int = 3,
        *,
        seed: int,
        storage: StorageKind = "memory",
        data_dir: str | Path | None = None,
        config: RaftConfig | None = None,
        snapshot_bytes: int = 4 << 10,
        server_timeout: float = 1.0,
    ) -> None:
        if storage == "file" and data_dir is None:
            raise ValueError("FileStorage needs a data_dir")
        self._n = n
        self._rng = random.Random(seed)
        self.net = Network(self._rng.getrandbits(64))
        self.addresses = [f"10.0.0.{i + 1}:7000" for i in range(n)]
        self.client_addresses = [f"10.0.0.{i + 1}:8000" for i in range(n)]
        self._index = {address: i for i, address in enumerate(self.client_addresses)}
        self._storage_kind = storage
        self._data_dir = Path(data_dir) if data_dir is not None else None
        self._config = config
        self._snapshot_bytes = snapshot_bytes
        self._server_timeout = server_timeout
        self.storages: list[Storage | None] = [MemoryStorage() for _ in range(n)]
        self.nodes: list[Node | None] = [None] * n
        self.machines = [KVStateMachine() for _ in range(n)]
        self.servers: list[KVServer | None] = [None] * n
        self._ends: list[list[tuple[int, int, int]]] = [[] for _ in range(n)]
        self._incarnation = [0] * n
        self._cut: set[Link] = set()
        self.flaky = False
        # Per-link rules on top of the network's own faults: duplicated requests while flaky.
        self.links = Links(random.Random(self._rng.getrandbits(64)))
        self.net.set_link_faults(self.links)
        self._changes: set[asyncio.Task[object]] = set()  # membership changes under way

    @property
    def n(self) -> int:
        return self._n

    def server_at(self, client_address: str) -> KVServer | None:
        """The running node's server at this client address (None: down, or no such node)."""
        i = self._index.get(client_address)
        return None if i is None else self.servers[i]

    # --- lifecycle -----------------------------------------------------------

    async def start_all(self) -> None:
        for i in range(self.n):
            await self.start(i)

    async def start(self, i: int) -> None:
        """Start node i from what its storage holds."""
        assert self.nodes[i] is None, f"node {i} is running"
        self._incarnation[i] += 1
        names = [(i, j, self._incarnation[i]) for j in range(self.n)]
        ends: list[MemoryClientEnd] = []
        for name in names:
            ends.append(self.net.make_end(name))
            self.net.connect(name, name[1])
        self._ends[i] = names
        machine = self.machines[i] = KVStateMachine()
        node = Node(
            i,
            self.addresses,
            None,
            machine,
            config=self._config,
            storage=self._open_storage(i),
            peers=ends,
            snapshot_bytes=self._snapshot_bytes,
            rng=random.Random(self._rng.getrandbits(64)),
        )
        await node.start()
        self.nodes[i] = node
        self.servers[i] = KVServer(
            node, machine, self.client_addresses, timeout=self._server_timeout
        )
        self.net.add_server(i, node.raft)
        self._apply_cuts()

    restart = start

    async def crash(self, i: int) -> None:
        """Kill node i now; its storage keeps what was durable."""
        node = self.nodes[i]
        if node is None:
            return
        self.nodes[i] = self.servers[i] = None
        self.net.delete_server(i)
        for name in self._ends[i]:
            self.net.enable(name, False)
        await node.close(transfer=False)  # a crash: no hand-over
        storage = self.storages[i]
        self.storages[i] = storage.copy() if isinstance(storage, MemoryStorage) else None

    async def close(self) -> None:
        for task in list(self._changes):
            task.cancel()
        await asyncio.gather(*self._changes, return_exceptions=True)
        for i in range(self.n):
            await self.crash(i)
        self.net.cleanup()

    def _open_storage(self, i: int) -> Storage:
        storage = self.storages[i]
        if self._storage_kind == "memory":
            assert storage is not None
            return storage
        from raftio.storage.file import FileStorage

        assert self._data_dir is not None
        opened = FileStorage(self._data_dir / f"node-{i}")
        self.storages[i] = opened
        return opened

    # --- faults --------------------------------------------------------------

    def cut(self, links: Collection[Link]) -> None:
        self._cut = set(links)
        self._apply_cuts()

    def _apply_cuts(self) -> None:
        for i, names in enumerate(self._ends):
            if self.nodes[i] is None:
                continue
            for name in names:
                self.net.enable(name, (i, name[1]) not in self._cut)

    def set_network(self, *, flaky: bool, reorder: bool) -> None:
        """flaky: lose 10% of RPCs and 5% of client messages, delay and duplicate some;
        reorder: hold about 2/3 of replies for 0.2-2.2 s."""
        self.flaky = flaky
        self.net.set_reliable(not flaky)
        self.net.set_long_reordering(reorder)
        self.links.duplicate = 0.05 if flaky else 0.0

    async def pause(self, i: int) -> None:
        raise NotImplementedError("the memory cluster cannot pause a node; use crash")

    resume = pause

    async def change_membership(self, rng: random.Random) -> str:
        """Ask the leader to add, remove or hand over (testing/nemesis/membership.py)."""
        leader = await self.leader()
        node = None if leader is None else self.nodes[leader]
        if node is None:
            return "no leader"
        return f"by {leader}: {membership.change(node, rng, self.addresses, self._changes)}"

    def members(self) -> set[int]:
        """The members of the newest leader's configuration (all nodes if none leads)."""
        best: tuple[int, Node] | None = None
        for node in self.nodes:
            if node is not None and node.raft.get_state()[1]:
                term = node.raft.get_state()[0]
                if best is None or term > best[0]:
                    best = (term, node)
        if best is None:
            return set(range(self.n))
        config = best[1].configuration()
        return set(config.voters) | set(config.learners)

    # --- observation ---------------------------------------------------------

    async def leader(self) -> int | None:
        """The running node that believes it leads in the highest term."""
        best: tuple[int, int] | None = None
        for i, node in enumerate(self.nodes):
            if node is not None:
                term, is_leader = node.raft.get_state()
                if is_leader and (best is None or term > best[0]):
                    best = (term, i)
        return None if best is None else best[1]

    def disagreement(self) -> str | None:
        """None if every node runs and applied the same index to the same state."""
        running = [node for node in self.nodes if node is not None]
        if len(running) < self.n:
            return f"{self.n - len(running)} node(s) down"
        members = self.members()  # a removed node is left behind, as it should be
        running = [node for node in running if node.node_id in members]
        statuses = [node.status() for node in running]
        applied = {s.applied_index for s in statuses}
        commit = max(s.commit_index for s in statuses)
        digests = [self.machines[node.node_id].digest() for node in running]
        if len(applied) == 1 and applied == {commit} and len(set(digests)) == 1:
            return None
        leaders = [s for s in statuses if s.role == "leader"]
        seen = "".join(f"; leader {s.node_id}'s match_index {s.match_index}" for s in leaders)
        return (
            f"replicas disagree: applied {[s.applied_index for s in statuses]}, commit "
            f"{[s.commit_index for s in statuses]}, last {[s.last_index for s in statuses]}, "
            f"digests {digests}{seen}"
        )

    async def converged(self, timeout: float = 30.0) -> str | None:
        """Wait (loop time) until the replicas agree; else say how they differ."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            problem = self.disagreement()
            if problem is None or loop.time() >= deadline:
                return None if problem is None else f"{problem} after {timeout:g} s"
            await asyncio.sleep(0.05)


class MemoryExchange:
    """A `raftio.kv.client.Exchange` to a MemoryKvCluster's nodes: one attempt, in memory.

    The request waits a drawn latency (0.2-2 ms; up to 27 ms while the
    cluster is flaky), then goes to the node's `KVServer.handle()`. A node
    that is down refuses it; while the cluster is flaky, 5% of requests and
    5% of replies are lost (the client cannot tell whether a lost reply's
    write applied).
    """

    def __init__(self, cluster: MemoryKvCluster, rng: random.Random) -> None:
        self._cluster, self._rng = cluster, rng

    async def __call__(self, address: str, request: dict[str, Any]) -> dict[str, Any]:
        rng, cluster = self._rng, self._cluster
        await asyncio.sleep(rng.uniform(0.0002, 0.027 if cluster.flaky else 0.002))
        server = cluster.server_at(address)
        if server is None:
            raise ConnectionRefusedError(f"{address} is down")
        if cluster.flaky and rng.random() < 0.05:
            raise ConnectionResetError(f"the request to {address} was lost")
        reply = await server.handle(parse_request(request))
        if cluster.flaky and rng.random() < 0.05:
            raise ConnectionResetError(f"the reply from {address} was lost")
        return reply


class MemoryKvClient(KVClient):
    """`raftio.kv.KVClient` on a `MemoryKvCluster`: its retries, over a `MemoryExchange`.

    An operation goes first to the node that answered the last one, or,
    with probability `spread`, to a random node: so requests keep reaching
    deposed leaders that still believe they lead, and followers. Every
    choice comes from `rng`: that one, the order in which the client tries
    the nodes, the backoff jitter, the latencies and losses of its attempts.

    Args:
        cluster: the nodes it talks to.
        client_id: its label in log lines.
        rng: the client's own random stream.
        attempt_timeout: seconds one attempt may take (shorter than the
            nodes' own, so retries race the first try).
        deadline: seconds an operation retries before TimeoutError
            (`KVUnavailableError`): outcome unknown.
        backoff: (first, max) seconds slept between failed attempts.
        spread: how often an operation starts at a random node.
    """

    def __init__(
        self,
        cluster: MemoryKvCluster,
        client_id: str,
        rng: random.Random,
        *,
        attempt_timeout: float = 0.5,
        deadline: float = 6.0,
        backoff: tuple[float, float] = (0.01, 0.1),
        spread: float = 0.3,
    ) -> None:
        self._spread = spread
        super().__init__(
            rng.sample(cluster.client_addresses, cluster.n),
            client_id=client_id,
            attempt_timeout=attempt_timeout,
            deadline=deadline,
            backoff=backoff,
            exchange=MemoryExchange(cluster, rng),
            rng=rng,
        )

    async def _retry(self, request: dict[str, Any]) -> Any:
        # KVClient starts every request at `leader`: naming a random node there is
        # all `spread` takes; the retries, redirects and sessions stay KVClient's.
        if self._rng.random() < self._spread:
            self.leader = self._rng.choice(self.addresses)
        return await super()._retry(request)
