"""Nemesis tests of a key/value service: a workload that records a History, faults, verdicts.

Reusable on their own, for raftio's KV service or any service with async
get/put/append clients:

* `Workload`: clients issue seeded get/put/append operations on a few keys,
  one at a time each, and record them in a linearizability `History`. A
  write whose outcome the client never learned (TimeoutError) is recorded
  as unknown. Written values are unique tokens (`"3.17;"`: client 3, its
  17th operation), so a lost or doubled write shows in any value read.
* `Nemesis`: a seeded schedule of faults against a `FaultTarget`: partitions
  (majority/minority, isolated leader, bridge, one-way), crashes with
  restarts, pauses, flaky or reordering links; `heal()` undoes them all.
* `LinkProxy`: a TCP proxy for one ordered pair of peers, so that real
  processes can be partitioned (cut) or slowed (delay) link by link.
* `verify()`: after healing, a final read of every key, the linearizability
  check of the whole history, every acknowledged append present exactly
  once, and the replicas' agreement, in one `NemesisReport`.
* `MemoryKvCluster` / `MemoryKvClient` / `simulate()`: raftio Nodes with
  `KVStateMachine` on the in-memory `Network`, driven on the virtual clock:
  one seed is one deterministic run.

Never reads a wall clock: every time is the running loop's.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
from collections import Counter
from collections.abc import Awaitable, Callable, Collection, Hashable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from raftio.config import RaftConfig
from raftio.kv.client import KVRequestError
from raftio.kv.machine import KVStateMachine
from raftio.kv.protocol import CLOSED, LOST, NOT_LEADER, TIMEOUT, parse_request
from raftio.kv.server import KVServer
from raftio.node import Node, parse_address
from raftio.raft import Raft
from raftio.storage.base import Storage
from raftio.storage.memory import MemoryStorage
from raftio.testing.clock import run
from raftio.testing.lincheck import (
    UNKNOWN,
    CallHandle,
    CheckResult,
    History,
    KvModel,
    Model,
    Operation,
    check,
)
from raftio.testing.lincheck.history import fmt_time, precedes
from raftio.testing.lincheck.kv import KINDS
from raftio.testing.sim.links import Links
from raftio.transport.memory import MemoryClientEnd, Network

__all__ = [
    "FAULT_KINDS",
    "FaultTarget",
    "KvClientLike",
    "KvResultModel",
    "LinkProxy",
    "MemoryKvClient",
    "MemoryKvCluster",
    "Nemesis",
    "NemesisReport",
    "OpMix",
    "SimConfig",
    "Workload",
    "acknowledged_write_problems",
    "simulate",
    "token",
    "verify",
]

logger = logging.getLogger(__name__)

Link = tuple[int, int]  # (i, j): node i's connection to node j (its requests, their replies)

# ---------------------------------------------------------------------------- workload


class KvClientLike(Protocol):
    """A client of a key/value service: `raftio.kv.KVClient`, `MemoryKvClient`, or yours.

    A call raises TimeoutError when the client gives up without learning
    the outcome (the write may still take effect); a get returns None for
    a key never written.
    """

    async def get(self, key: str) -> str | None: ...

    async def put(self, key: str, value: str) -> Any: ...

    async def append(self, key: str, value: str) -> Any: ...


@dataclass(frozen=True, slots=True)
class OpMix:
    """Relative weights of the operations a workload issues."""

    get: float = 0.35
    put: float = 0.1
    append: float = 0.55


_TOKEN = re.compile(r"[^;]*;")


def token(client_id: int, n: int) -> str:
    """The value written by client `client_id`'s `n`th operation: unique, `;`-terminated."""
    return f"{client_id}.{n};"


class Workload:
    """Clients issuing seeded operations, each one at a time, recorded in `history`.

    Args:
        clients: one per concurrent client; client i is `client_id` i in the history.
        keys: the keys operations pick from.
        rng: seeds one stream per client, so a client's choices do not
            depend on how the others' operations interleave.
        mix: operation weights.
        think: (low, high) seconds a client waits between operations.
        history: records into this History (a new one by default).
    """

    def __init__(
        self,
        clients: Sequence[KvClientLike],
        *,
        keys: Sequence[str],
        rng: random.Random,
        mix: OpMix = OpMix(),
        think: tuple[float, float] = (0.0, 0.05),
        history: History | None = None,
    ) -> None:
        self.clients = list(clients)
        self.keys = list(keys)
        self.history = history if history is not None else History()
        self._rngs = [random.Random(rng.getrandbits(64)) for _ in self.clients]
        self._kinds = ("get", "put", "append")
        self._weights = (mix.get, mix.put, mix.append)
        self._think = think
        self.acknowledged = 0
        self.unknown = 0

    async def run(self, duration: float) -> None:
        """Issue operations for `duration` seconds; returns once every client's last one ends."""
        until = asyncio.get_running_loop().time() + duration
        await asyncio.gather(*(self._client(i, until) for i in range(len(self.clients))))

    async def _client(self, client_id: int, until: float) -> None:
        loop = asyncio.get_running_loop()
        rng, client = self._rngs[client_id], self.clients[client_id]
        n = 0
        while loop.time() < until:
            n += 1
            kind = rng.choices(self._kinds, self._weights)[0]
            key = rng.choice(self.keys)
            value = None if kind == "get" else token(client_id, n)
            await self.perform(client_id, client, kind, key, value)
            await asyncio.sleep(rng.uniform(*self._think))

    async def perform(
        self, client_id: int, client: KvClientLike, kind: str, key: str, value: str | None = None
    ) -> CallHandle:
        """Run one operation through `client` and record it; returns its handle in `history`."""
        handle = self.history.record_call(client_id, kind, key, value)
        try:
            if kind == "get":
                output: str | None = await client.get(key) or ""
            else:
                assert value is not None
                result = await (
                    client.put(key, value) if kind == "put" else client.append(key, value)
                )
                output = result if isinstance(result, str) else None
        except TimeoutError:
            self.history.record_unknown(handle)
            self.unknown += 1
        else:
            self.history.record_return(handle, output)
            self.acknowledged += 1
        return handle


class KvResultModel(KvModel):
    """`KvModel` that also checks what each write returned: the key's new value.

    That is what raftio.kv's put and append answer (a retried write answers
    what it did the first time). A write recorded with output None is not
    checked, so clients that return nothing can use it too.
    """

    def step(self, state: str, op: Operation, output: Any) -> tuple[bool, str]:
        if op.kind == "get":
            return super().step(state, op, output)
        new = op.value if op.kind == "put" else state + op.value
        return output is UNKNOWN or output is None or output == new, new

    def partition(self, operations: Sequence[Operation]) -> dict[Hashable, list[Operation]]:
        """Per key, without unknown gets nor unknown writes whose value nothing returned."""
        parts: dict[Hashable, list[Operation]] = {}
        for op in operations:
            if op.kind not in KINDS or (op.kind != "get" and not isinstance(op.value, str)):
                raise ValueError(f"KvResultModel: not a get, put or append of a str: {op}")
            if not (op.kind == "get" and op.is_unknown):
                parts.setdefault(op.key, []).append(op)
        for key, part in parts.items():
            seen = "\0".join(op.output for op in part if isinstance(op.output, str))
            parts[key] = [op for op in part if not (op.is_unknown and op.value not in seen)]
        return parts

    def describe(self, op: Operation) -> str:
        text = super().describe(op)
        return f"{text} -> {op.output!r}" if op.kind != "get" and op.output is not None else text


def acknowledged_write_problems(operations: Sequence[Operation], final: Operation) -> list[str]:
    """What a final read of one key shows wrong about the writes to it.

    Every token in the value must come from a write to that key, at most
    once (exactly-once), and every acknowledged append that no put can
    have overwritten (every put to the key returned before the append was
    called) must be there.
    """
    key, value = final.key, final.output
    assert isinstance(value, str)
    writes = [op for op in operations if op.key == key and op.kind != "get"]
    counts = Counter(_TOKEN.findall(value))
    problems = [f"key {key!r}: {t!r} applied {c} times" for t, c in counts.items() if c > 1]
    written = {op.value for op in writes}
    problems += [f"key {key!r}: {t!r} was never written to it" for t in counts if t not in written]
    puts = [op for op in writes if op.kind == "put"]
    for op in writes:
        if op.kind != "append" or op.is_unknown or op.value in counts:
            continue
        if all(precedes(put, op) for put in puts) and precedes(op, final):
            problems.append(
                f"key {key!r}: acknowledged append {op.value!r} (client {op.client_id}, "
                f"t={fmt_time(op.call_time)}..{fmt_time(op.return_time)}) is missing from the "
                f"final value {value!r}"
            )
    return problems


# ---------------------------------------------------------------------------- nemesis

FAULT_KINDS = ("partition", "crash", "pause", "flaky", "reorder")
_PARTITIONS = ("halves", "isolate_leader", "bridge", "one_way")


class FaultTarget(Protocol):
    """What a `Nemesis` needs of a cluster. Nodes are 0..n-1.

    `cut(links)` replaces the set of cut links: a cut (i, j) carries none of
    node i's requests to node j nor their replies; every other link works.
    `pause` / `resume` are only called if the nemesis was given "pause".
    """

    @property
    def n(self) -> int: ...

    async def leader(self) -> int | None: ...

    def cut(self, links: Collection[Link]) -> None: ...

    def set_network(self, *, flaky: bool, reorder: bool) -> None: ...

    async def crash(self, i: int) -> None: ...

    async def restart(self, i: int) -> None: ...

    async def pause(self, i: int) -> None: ...

    async def resume(self, i: int) -> None: ...


class Nemesis:
    """A seeded schedule of overlapping faults against `target`.

    Every `interval` seconds (drawn) one new fault starts and lasts `span`
    seconds (drawn), overlapping those in force: a partition (one at a
    time), a crash or a pause of a node (the leader half of the time; at
    most `max_down` nodes down at once, a minority by default), or flaky /
    reordering links. Kinds are dealt from a shuffled deck of `kinds`, the
    first one that can start now is played, so every kind gets its turn.
    Each fault is undone when its time is up. Every action is logged in
    `events`, stamped with the loop's time.
    """

    def __init__(
        self,
        target: FaultTarget,
        rng: random.Random,
        *,
        kinds: Sequence[str] = ("partition", "crash", "flaky"),
        interval: tuple[float, float] = (0.2, 1.5),
        span: tuple[float, float] = (0.3, 3.0),
        max_down: int | None = None,
    ) -> None:
        unknown = set(kinds) - set(FAULT_KINDS)
        if unknown or not kinds:
            raise ValueError(f"unknown fault kinds {sorted(unknown)}; expected {FAULT_KINDS}")
        self.target, self._rng = target, rng
        self.kinds = list(kinds)
        self._interval, self._span = interval, span
        self._max_down = min(target.n, (target.n - 1) // 2 if max_down is None else max_down)
        self._down: dict[int, tuple[str, float]] = {}  # node -> ("crash" | "pause", until)
        self._cut_until: float | None = None
        self._network: dict[str, float] = {}  # "flaky" / "reorder" -> until
        self._deck: list[str] = []
        self.events: list[str] = []
        self.actions = 0

    async def run(self, duration: float) -> None:
        """Inject faults for `duration` seconds (call `heal()` afterwards)."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        until, next_fault = now + duration, now + self._rng.uniform(*self._interval)
        while True:
            wake = min(next_fault, until, *self._deadlines())
            await asyncio.sleep(wake - now)
            now = loop.time()
            if now >= until:
                return
            await self._expire(now)
            if now >= next_fault:
                await self._deal(now)
                next_fault = now + self._rng.uniform(*self._interval)

    def _deadlines(self) -> list[float]:
        """When the faults in force end."""
        ends = [until for _, until in self._down.values()] + list(self._network.values())
        return ends if self._cut_until is None else [*ends, self._cut_until]

    async def heal(self) -> None:
        """Undo every fault: links whole and calm, every node running."""
        await self._expire(float("inf"))

    def log(self, text: str) -> None:
        now = asyncio.get_running_loop().time()
        self.events.append(f"t={now:.3f} {text}")
        logger.info("nemesis: %s", text)

    async def _expire(self, now: float) -> None:
        for i, (what, until) in sorted(self._down.items()):
            if until <= now:
                del self._down[i]
                await (self.target.restart(i) if what == "crash" else self.target.resume(i))
                self.log(f"{'restart' if what == 'crash' else 'resume'} {i}")
        if self._cut_until is not None and self._cut_until <= now:
            self._cut_until = None
            self.target.cut(())
            self.log("heal partition")
        for kind, until in list(self._network.items()):
            if until <= now:
                del self._network[kind]
                self._set_network()
                self.log(f"network {kind} over")

    async def _deal(self, now: float) -> None:
        if not self._deck:
            self._deck = self._rng.sample(self.kinds, len(self.kinds))
        for kind in self._deck:
            if await self._start(kind, now + self._rng.uniform(*self._span)):
                self._deck.remove(kind)
                self.actions += 1
                return

    async def _start(self, kind: str, until: float) -> bool:
        """Start a fault of `kind` lasting until `until`, if one can start now."""
        if kind == "partition" and self._cut_until is None:
            self._cut_until = until
            shape, links = await self._partition()
            self.target.cut(links)
            self.log(f"partition {shape}: cut {_describe_links(links)}")
        elif kind in ("crash", "pause") and len(self._down) < self._max_down:
            victim = await self._victim()
            self._down[victim] = (kind, until)
            await (self.target.crash(victim) if kind == "crash" else self.target.pause(victim))
            self.log(f"{kind} {victim} until t={until:.3f}")
        elif kind in ("flaky", "reorder") and kind not in self._network:
            self._network[kind] = until
            self._set_network()
            self.log(f"network {kind} until t={until:.3f}")
        else:
            return False
        return True

    def _set_network(self) -> None:
        self.target.set_network(flaky="flaky" in self._network, reorder="reorder" in self._network)

    async def _victim(self) -> int:
        leader = await self.target.leader()
        up = [i for i in range(self.target.n) if i not in self._down]
        if leader in up and self._rng.random() < 0.5:
            return leader
        return self._rng.choice(up)

    async def _partition(self) -> tuple[str, set[Link]]:
        n, rng = self.target.n, self._rng
        nodes = list(range(n))
        rng.shuffle(nodes)
        shape = rng.choice(_PARTITIONS if n >= 3 else ("halves", "isolate_leader"))
        leader = await self.target.leader()
        if shape in ("isolate_leader", "one_way") and leader is not None:
            nodes.remove(leader)
            nodes.insert(0, leader)
        if shape == "halves":
            k = rng.randint(1, max(1, (n - 1) // 2))
            return f"{sorted(nodes[:k])} | {sorted(nodes[k:])}", _between(nodes[:k], nodes[k:])
        if shape == "isolate_leader":
            return f"{nodes[0]} alone", _between(nodes[:1], nodes[1:])
        if shape == "bridge":
            k = rng.randint(2, n - 1)
            left, right = nodes[1:k], nodes[k:]
            return f"{sorted(left)} | {sorted(right)} bridged by {nodes[0]}", _between(left, right)
        # one_way: the (leader) node can no longer reach the others; they still reach it.
        return f"{nodes[0]} cannot send", {(nodes[0], j) for j in nodes[1:]}


def _between(a: Collection[int], b: Collection[int]) -> set[Link]:
    return {(i, j) for i in a for j in b} | {(j, i) for i in a for j in b}


def _describe_links(links: Collection[Link]) -> str:
    return " ".join(f"{i}->{j}" for i, j in sorted(links)) or "nothing"


# ---------------------------------------------------------------------------- TCP proxy


class LinkProxy:
    """A TCP proxy for one link (node i -> node j): point i's address of j at `address`.

    It forwards both directions of every connection to `target`. `cut()`
    closes every connection it carries and refuses new ones until
    `restore()`; `delay` (seconds) holds every chunk that long, in order.
    """

    def __init__(self, target: str, host: str = "127.0.0.1") -> None:
        self.target = target
        self._host = host
        self.delay = 0.0
        self.is_cut = False
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def address(self) -> str:
        if self._server is None:
            raise RuntimeError("the proxy is not started")
        port: int = self._server.sockets[0].getsockname()[1]
        return f"{self._host}:{port}"

    async def start(self, port: int = 0) -> None:
        self._server = await asyncio.start_server(self._on_connection, self._host, port)

    def cut(self) -> None:
        """Close every connection and refuse new ones."""
        self.is_cut = True
        for writer in list(self._writers):
            writer.transport.abort()

    def restore(self) -> None:
        self.is_cut = False

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _on_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        if self.is_cut:
            writer.transport.abort()
            return
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        try:
            host, port = parse_address(self.target)
            up_reader, up_writer = await asyncio.open_connection(host, port)
        except OSError:
            writer.transport.abort()
            self._writers.discard(writer)
            self._tasks.discard(task)
            return
        self._writers.add(up_writer)
        try:
            await asyncio.gather(self._pump(reader, up_writer), self._pump(up_reader, writer))
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            for w in (writer, up_writer):
                self._writers.discard(w)
                w.transport.abort()
            self._tasks.discard(task)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(1 << 16):
            if self.delay > 0:
                await asyncio.sleep(self.delay)
            if self.is_cut:
                break
            writer.write(data)
            await writer.drain()
        writer.transport.abort()


# ---------------------------------------------------------------------------- verdict


@dataclass(slots=True)
class NemesisReport:
    """The outcome of one nemesis run.

    Attributes:
        history: every operation, the final reads included.
        result: the linearizability verdict (None if the run never got that far).
        problems: everything else that went wrong: lost or doubled writes,
            replicas that disagree, a cluster that never recovered.
        events: the nemesis's log.
        replay: how to run this again.
    """

    history: History
    result: CheckResult | None = None
    problems: list[str] = field(default_factory=list)
    events: list[str] = field(default_factory=list)
    replay: str = ""
    acknowledged: int = 0
    unknown: int = 0
    sim_time: float = 0.0

    @property
    def ok(self) -> bool:
        return self.result is not None and self.result.ok is True and not self.problems

    @property
    def operations(self) -> int:
        return len(self.history)

    def summary(self) -> str:
        verdict = "ok" if self.ok else "FAILED"
        return (
            f"{verdict}: {self.operations} operations ({self.acknowledged} acknowledged, "
            f"{self.unknown} unknown), {len(self.events)} nemesis events"
        )

    def explain(self) -> str:
        """The verdict, the problems, the checker's explanation and the nemesis's log."""
        lines = [self.summary()]
        if self.replay:
            lines.append(f"replay: {self.replay}")
        lines += [f"problem: {p}" for p in self.problems]
        if self.result is not None:
            lines.append(self.result.explain())
        if not self.ok:
            lines.append("nemesis events:")
            lines += [f"  {e}" for e in self.events]
        return "\n".join(lines)


async def verify(
    workload: Workload,
    reader: KvClientLike,
    converged: Callable[[], Awaitable[str | None]],
    report: NemesisReport,
    *,
    check_timeout: float = 120.0,
    model: Model[Any] | None = None,
) -> NemesisReport:
    """Finish a healed run: final reads, agreement of the replicas, then the checks.

    `reader` reads every key once (as client `len(workload.clients)`, in
    the same history); `converged()` returns None once the replicas agree,
    or a description of why they do not. The history is checked against
    `model` (default `KvResultModel()`). Fills in `report` and returns it.
    """
    reader_id = len(workload.clients)
    handles = [await workload.perform(reader_id, reader, "get", key) for key in workload.keys]
    operations = workload.history.operations
    for op in (operations[handle] for handle in handles):
        if op.is_unknown:
            report.problems.append(f"the final read of {op.key!r} did not complete")
        else:
            report.problems += acknowledged_write_problems(operations, op)
    disagreement = await converged()
    if disagreement is not None:
        report.problems.append(disagreement)
    report.acknowledged, report.unknown = workload.acknowledged, workload.unknown
    model = model if model is not None else KvResultModel()
    report.result = check(workload.history, model=model, timeout=check_timeout)
    if report.result.ok is None:
        report.problems.append(f"the checker timed out after {check_timeout:g} s")
    return report


# ---------------------------------------------------------------------------- memory cluster

StorageKind = Literal["memory", "file"]


class MemoryKvCluster:
    """n raftio Nodes replicating `KVStateMachine` over one in-memory `Network`; a FaultTarget.

    Each node has a `KVServer` whose `handle()` a `MemoryKvClient` calls
    directly. A crash closes the node and keeps what its storage made
    durable (`MemoryStorage.copy()`, or a `FileStorage` reopened); a restart
    builds a new Node, state machine and server from it.

    Args:
        n: nodes.
        seed: seeds the network, the nodes' election timers and the clients' links.
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

    @property
    def n(self) -> int:
        return self._n

    def node_index(self, client_address: str) -> int | None:
        """The node whose client address this is."""
        return self._index.get(client_address)

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
        _cancel_in_creation_order(node.raft)
        await node.close()
        storage = self.storages[i]
        self.storages[i] = storage.copy() if isinstance(storage, MemoryStorage) else None

    async def close(self) -> None:
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
        statuses = [node.status() for node in running]
        applied = {s.applied_index for s in statuses}
        commit = max(s.commit_index for s in statuses)
        digests = [machine.digest() for machine in self.machines]
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


def _cancel_in_creation_order(raft: Raft) -> None:
    """Cancel the peer's tasks oldest first, before `Node.close()` kills it.

    `Raft.kill()` cancels them in the order of a set of tasks, which follows
    their memory addresses, so the tasks would wake in an order that varies
    from process to process and a seed would not replay the same run. Task
    names ("Task-<n>", from asyncio's global counter) give creation order.
    TODO(nemesis): drop once Raft.kill() cancels in a fixed order.
    """
    for task in sorted(raft._tasks, key=_task_number):
        task.cancel()


def _task_number(task: asyncio.Task[Any]) -> int:
    _, _, number = task.get_name().rpartition("-")
    return int(number) if number.isdigit() else 0


class MemoryKvClient:
    """A KV client of a `MemoryKvCluster`, with `raftio.kv.KVClient`'s retry rules.

    One request at a time. A write gets the next `seq` before its first
    attempt and every retry resends the same (session, seq), so it applies
    at most once. An attempt that fails (node down, no reply within
    `attempt_timeout`, not_leader, timeout, lost, closed) is retried on the
    leader named in the reply, else on the next node, until `deadline`
    seconds have passed: then TimeoutError, outcome unknown. While the
    cluster is flaky, 5% of requests and 5% of replies are lost.

    An operation goes first to the node that answered the last one, or,
    with probability `spread`, to a random node: so requests keep reaching
    deposed leaders that still believe they lead, and followers.
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
        self.cluster, self.client_id, self._rng = cluster, client_id, rng
        self._spread = spread
        self._attempt_timeout, self._deadline, self._backoff = attempt_timeout, deadline, backoff
        self.session: str | None = None  # registered before the first write
        self.seq = 0
        self.leader: int | None = None
        self.attempts = 0

    async def get(self, key: str) -> str | None:
        value: str | None = await self._request({"op": "get", "key": key})
        return value

    async def put(self, key: str, value: str) -> Any:
        return await self._write("put", key, value)

    async def append(self, key: str, value: str) -> Any:
        return await self._write("append", key, value)

    async def _write(self, op: str, key: str, value: str) -> Any:
        if self.session is None:
            self.session, self.seq = await self._request({"op": "register"}), 0
        self.seq += 1
        request = {"op": op, "key": key, "value": value, "session": self.session, "seq": self.seq}
        try:
            return await self._request(request)
        except BaseException:
            self.session = None  # outcome unknown: numbering on would leave a gap
            raise

    async def _request(self, request: dict[str, Any]) -> Any:
        loop = asyncio.get_running_loop()
        give_up = loop.time() + self._deadline
        target = self.leader
        if target is None or self._rng.random() < self._spread:
            target = self._rng.randrange(self.cluster.n)
        failures = 0
        while True:
            reply = await self._attempt(target, request)
            if reply is not None and reply["ok"]:
                self.leader = target
                return reply["value"]
            hint = self._hint(reply, target)
            if hint is not None:
                target = hint  # a redirect is followed at once
                continue
            self.leader = None
            target = (target + 1) % self.cluster.n
            failures += 1
            delay = min(self._backoff[1], self._backoff[0] * 2.0 ** (failures - 1))
            delay *= self._rng.uniform(0.5, 1.0)
            if loop.time() + delay > give_up:
                raise TimeoutError(f"{request['op']} gave up after {failures} failed attempts")
            await asyncio.sleep(delay)

    def _hint(self, reply: dict[str, Any] | None, target: int) -> int | None:
        if reply is None:
            return None
        error = reply.get("error")
        if error not in (NOT_LEADER, TIMEOUT, LOST, CLOSED):
            raise KVRequestError(str(error), str(reply.get("message")))
        leader = reply.get("leader")
        hint = self.cluster.node_index(leader) if isinstance(leader, str) else None
        return hint if error == NOT_LEADER and hint != target else None

    async def _attempt(self, i: int, request: dict[str, Any]) -> dict[str, Any] | None:
        """One try at node i: its reply, or None if the request or the reply was lost."""
        self.attempts += 1
        rng, flaky = self._rng, self.cluster.flaky
        await asyncio.sleep(rng.uniform(0.0002, 0.027 if flaky else 0.002))
        server = self.cluster.servers[i]
        if server is None or (flaky and rng.random() < 0.05):
            return None  # refused, or the request was lost
        try:
            async with asyncio.timeout(self._attempt_timeout):
                reply = await server.handle(parse_request(request))
        except TimeoutError:
            return None
        if self.cluster.flaky and rng.random() < 0.05:
            return None  # the reply was lost: the client cannot tell whether it applied
        return reply


# ---------------------------------------------------------------------------- simulation


@dataclass(frozen=True, slots=True)
class SimConfig:
    """One simulated nemesis run; `seed` decides everything else."""

    seed: int
    nodes: int = 3
    clients: int = 4
    keys: int = 3
    duration: float = 20.0  # seconds of loop time under faults
    faults: tuple[str, ...] = ("partition", "crash", "flaky", "reorder")
    storage: StorageKind = "memory"
    data_dir: str | None = None
    snapshot_bytes: int = 4 << 10
    client_deadline: float = 2.0  # seconds a client retries an operation before giving up
    max_down: int | None = None  # nodes crashed at once (default: a minority)
    pre_vote: bool = True
    check_quorum: bool = True
    settle: float = 30.0  # seconds the healed cluster gets to recover
    check_timeout: float = 120.0  # real seconds for the linearizability check

    def replay(self) -> str:
        """The scripts/nemesis_soak.py command that runs exactly this config."""
        return (
            f"python scripts/nemesis_soak.py --seed {self.seed} --nodes {self.nodes} "
            f"--clients {self.clients} --keys {self.keys} --duration {self.duration:g} "
            f"--faults {','.join(self.faults)} --storage {self.storage} "
            f"--snapshot-bytes {self.snapshot_bytes} --client-deadline {self.client_deadline:g}"
            + ("" if self.max_down is None else f" --max-down {self.max_down}")
            + ("" if self.pre_vote else " --no-pre-vote")
            + ("" if self.check_quorum else " --no-check-quorum")
        )


def simulate(config: SimConfig) -> NemesisReport:
    """Run one nemesis simulation on a fresh virtual-clock loop; same config, same run."""
    return run(_simulate(config), loop="virtual")


async def _simulate(config: SimConfig) -> NemesisReport:
    if not set(config.faults) <= {"partition", "crash", "flaky", "reorder"}:
        raise ValueError(f"a simulation cannot inject {config.faults}")
    rng = random.Random(config.seed)
    raft = RaftConfig(pre_vote=config.pre_vote, check_quorum=config.check_quorum)
    cluster = MemoryKvCluster(
        config.nodes,
        seed=rng.getrandbits(64),
        config=raft,
        storage=config.storage,
        data_dir=config.data_dir,
        snapshot_bytes=config.snapshot_bytes,
    )
    clients = [
        MemoryKvClient(
            cluster,
            f"client-{c}",
            random.Random(rng.getrandbits(64)),
            deadline=config.client_deadline,
        )
        for c in range(config.clients)
    ]
    # The final reads may wait for the healed cluster to elect a leader.
    reader = MemoryKvClient(
        cluster, "reader", random.Random(rng.getrandbits(64)), deadline=config.settle
    )
    keys = [f"k{k}" for k in range(config.keys)]
    workload = Workload(clients, keys=keys, rng=random.Random(rng.getrandbits(64)))
    nemesis = Nemesis(
        cluster, random.Random(rng.getrandbits(64)), kinds=config.faults, max_down=config.max_down
    )
    report = NemesisReport(workload.history, events=nemesis.events, replay=config.replay())
    try:
        await cluster.start_all()
        await asyncio.gather(workload.run(config.duration), nemesis.run(config.duration))
        await nemesis.heal()
        await verify(
            workload,
            reader,
            lambda: cluster.converged(config.settle),
            report,
            check_timeout=config.check_timeout,
        )
    finally:
        report.sim_time = asyncio.get_running_loop().time()
        await cluster.close()
    return report
