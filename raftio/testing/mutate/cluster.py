"""The in-memory cluster a peer campaign fuzzes, its parameters and its report.

`FuzzCluster`: three real `Node`s over `transport.memory`, each behind a
`_Recorder` that keeps every request and reply (the corpus). `Outcome`
collects the problems a campaign finds; `_LogWatch` turns ERROR and
CRITICAL log lines into problems.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import raftio
from raftio import codec
from raftio.errors import NodeClosedError, NotLeaderError, ProposalLostError, ProposalTimeoutError
from raftio.messages import Message
from raftio.node import Node
from raftio.testing.mutate.engine import Mutant, Seed
from raftio.transport.memory import Network

LEADER_BOUND = 5.0  # seconds (virtual) after the last frame by which a leader must exist
_WRITE_ERRORS = (NotLeaderError, ProposalTimeoutError, ProposalLostError, NodeClosedError)


class Register:
    """The campaign's state machine: a dict of str -> str set by ("set", key, value).

    Strict as a real service would be: a malformed command is refused
    (ValueError), a snapshot that does not decode to its shape raises.
    """

    def __init__(self) -> None:
        self.data: dict[str, str] = {}

    def apply(self, command: Any) -> str:
        if not (isinstance(command, tuple) and len(command) == 3 and command[0] == "set"):
            raise ValueError(f"not a register command: {command!r:.60}")
        _, key, value = command
        if not isinstance(key, str) or not isinstance(value, str):
            raise ValueError(f"malformed register command: {command!r:.60}")
        self.data[key] = value
        return value

    def snapshot(self) -> bytes:
        return codec.pack({"data": self.data})

    def restore(self, data: bytes) -> None:
        state = codec.unpack(data)
        if not (isinstance(state, dict) and isinstance(state.get("data"), dict)):
            raise ValueError("not a register snapshot")
        items = state["data"].items()
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in items):
            raise ValueError("not a register snapshot")
        self.data = dict(state["data"])

    def query(self, key: str) -> str | None:
        return self.data.get(key)


@dataclass(frozen=True, slots=True)
class PeerParams:
    """One campaign. `frames` mutants of the frames a `peers`-node cluster exchanged."""

    seed: int = 1
    frames: int = 10_000
    peers: int = 3
    mean_gap: float = 0.002  # virtual seconds between frames, on average
    writers: int = 2
    snapshot_bytes: int = 3000
    only: int | None = None  # inject only this mutant (replay one case)
    machine: Callable[[], Register] = Register  # each node's state machine
    max_problems: int = 20  # stop injecting once this many kinds of problem are recorded


@dataclass(slots=True)
class Outcome:
    """What a campaign injected, measured and found.

    Problems are kept once per kind (their text with every number as N),
    with the first occurrence's text, which names the frame it followed,
    and a count.
    """

    params: Any
    corpus: int = 0
    injected: int = 0
    codec_refused: int = 0  # did not decode: the transport drops these
    answered: int = 0  # the handler replied
    unanswered: int = 0  # the handler returned None (refused or dropped)
    writes_acked: int = 0
    writes_failed: int = 0
    found: dict[str, tuple[str, int]] = field(default_factory=dict)
    leader_after: float | None = None  # virtual seconds to a leader after the last frame
    leader_after_restart: float | None = None
    warnings: int = 0
    virtual_seconds: float = 0.0
    wall_seconds: float = 0.0

    def add(self, kind: str, text: str, detail: str = "") -> None:
        """Record one problem of `kind` ("fail-stop", "task died", "zombie", "data", ...).

        `detail` (the frame that preceded it) is kept with the first occurrence
        but does not tell problems apart.
        """
        key = re.sub(r"\d+", "N", f"{kind}: {text}")[:160]
        first, count = self.found.get(key, (f"{kind}: {text}{detail}", 0))
        self.found[key] = (first, count + 1)

    def problems(self) -> list[str]:
        out = [
            first if count == 1 else f"{first} [x{count}]" for first, count in self.found.values()
        ]
        for name, value in (("", self.leader_after), (" after restart", self.leader_after_restart)):
            if value is None or value > LEADER_BOUND:
                out.append(f"no leader within {LEADER_BOUND} s{name} (got {value})")
        return out

    def lines(self) -> list[str]:
        p = self.params
        out = [
            f"seed {p.seed}: {self.injected} frames from {self.corpus} captured "
            f"({self.codec_refused} refused by the codec, {self.answered} answered, "
            f"{self.unanswered} unanswered); writes {self.writes_acked} acknowledged, "
            f"{self.writes_failed} failed; leader {self.leader_after} s after the last frame, "
            f"{self.leader_after_restart} s after a full restart; {self.warnings} warning lines; "
            f"{self.virtual_seconds:.1f} s virtual, {self.wall_seconds:.1f} s wall",
        ]
        problems = self.problems()
        out.append(f"problems: {len(problems)}")
        out += [f"  {line}" for line in problems]
        return out


class _LogWatch(logging.Handler):
    """Raftio's log lines during a campaign: problems are kept with the frame number."""

    def __init__(self, outcome: Outcome, last: Callable[[], Mutant | None]) -> None:
        super().__init__(logging.WARNING)
        self._outcome, self._last = outcome, last

    def emit(self, record: logging.LogRecord) -> None:
        text = f"{record.name}: {record.getMessage():.300}"
        if record.exc_info and record.exc_info[1] is not None:
            text += f" ({type(record.exc_info[1]).__name__}: {record.exc_info[1]!s:.200})"
        last = self._last()
        detail = f"; last frame {last.describe()}" if last is not None else ""
        if record.levelno >= logging.CRITICAL:
            self._outcome.add("fail-stop", text, detail)
        elif record.levelno >= logging.ERROR and record.exc_info:
            self._outcome.add("task died or raised", text, detail)
        elif record.levelno >= logging.ERROR:
            self._outcome.add("error line", text, detail)
        else:
            self._outcome.warnings += 1


class _Recorder:
    """A node's RPC handlers as the network sees them, keeping what arrives (capture)."""

    def __init__(self, me: int, raft: raftio.Raft, cluster: FuzzCluster) -> None:
        self._me, self._raft, self._cluster = me, raft, cluster

    async def request_vote(self, args: Any) -> Any:
        return self._keep("request_vote", args, await self._raft.request_vote(args))

    async def append_entries(self, args: Any) -> Any:
        return self._keep("append_entries", args, await self._raft.append_entries(args))

    async def install_snapshot(self, args: Any) -> Any:
        return self._keep("install_snapshot", args, await self._raft.install_snapshot(args))

    async def timeout_now(self, args: Any) -> Any:
        return self._keep("timeout_now", args, await self._raft.timeout_now(args))

    def _keep(self, method: str, args: Message, reply: Message | None) -> Message | None:
        if self._cluster.recording:
            corpus = self._cluster.corpus
            corpus.append(Seed(method, self._me, codec.encode_message(args)))
            if reply is not None:
                corpus.append(Seed(method + "_reply", self._me, codec.encode_message(reply)))
        return reply


class FuzzCluster:
    """n real Nodes (Register machines, MemoryStorage) on one seeded in-memory Network."""

    def __init__(
        self,
        seed: int,
        n: int,
        snapshot_bytes: int,
        corpus: list[Seed],
        machine: Callable[[], Register] = Register,
    ) -> None:
        self.net = Network(seed)
        self.n = n
        self.rng = random.Random(seed)
        self.snapshot_bytes = snapshot_bytes
        self.corpus = corpus
        self.storages = [raftio.MemoryStorage() for _ in range(n)]
        self.machine = machine
        self.machines = [machine() for _ in range(n)]
        self.nodes: list[Node | None] = [None] * n
        self.recording = True  # keep what the nodes receive (the capture phase)
        self.addresses = [f"127.0.0.1:{7000 + i}" for i in range(n)]
        self._ends = 0

    async def start(self, i: int) -> Node:
        ends = []
        for j in range(self.n):
            self._ends += 1
            name = ("peer", i, j, self._ends)
            ends.append(self.net.make_end(name))
            self.net.connect(name, j)
            self.net.enable(name, True)
        self.machines[i] = self.machine()
        node = Node(
            i,
            self.addresses,
            None,
            self.machines[i],
            storage=self.storages[i],
            peers=ends,
            snapshot_bytes=self.snapshot_bytes,
            propose_timeout=1.0,
            rng=random.Random(self.rng.random()),
        )
        try:
            await node.start()
        except BaseException:
            await node.close(transfer=False)
            raise
        self.nodes[i] = node
        self.net.add_server(i, _Recorder(i, node.raft, self))
        return node

    async def crash(self, i: int) -> None:
        node = self.nodes[i]
        self.net.delete_server(i)
        if node is not None:
            await node.close(transfer=False)  # a crash: no hand-over
        self.storages[i] = self.storages[i].copy()
        self.nodes[i] = None

    def leader(self) -> Node | None:
        for node in self.nodes:
            if node is not None and not node.raft.killed() and node.raft.get_state()[1]:
                return node
        return None

    async def wait_leader(self, bound: float) -> float | None:
        """Virtual seconds until some running node leads, or None after `bound`."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        while loop.time() - started <= bound:
            if self.leader() is not None:
                return round(loop.time() - started, 3)
            await asyncio.sleep(0.01)
        return None

    async def close(self) -> None:
        for node in self.nodes:
            if node is not None:
                await node.close()
        self.net.cleanup()
