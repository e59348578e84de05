"""The KV-protocol campaign: mutated client frames at real KV ports on 127.0.0.1.

`run_kv_campaign(KVParams(seed=s, frames=n))` starts three `KVNode`s (Raft
on the in-memory network, client ports on real loopback sockets, no KV
token so every frame reaches request handling) on the virtual clock, then:

1. **capture**: real `KVClient`s write and read through a recording proxy in
   front of each client port (the advertised client addresses are the
   proxies'), so every frame they send, handshake included, is kept with
   the frames its connection sent before it.
2. **inject**: mutant n opens a connection to a node, sends its origin's
   earlier frames unchanged, then the mutated frame (one in ten with a
   damaged length header), and reads the replies until the server closes
   or 0.5 s passes; meanwhile two real clients keep writing.
3. **check**: no task died, no ERROR or CRITICAL line; a leader within
   5 s; a fresh client can write; every write a real client saw
   acknowledged reads back (through a fresh client and in every node's
   state machine) unchanged, and the replicas' states agree.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import struct
import time
from dataclasses import dataclass
from typing import Any

import raftio
from raftio.kv.client import KVClient
from raftio.kv.machine import KVStateMachine
from raftio.kv.protocol import decode_body
from raftio.kv.server import KVServer
from raftio.node import Node
from raftio.testing.clock import run
from raftio.testing.mutate.cluster import LEADER_BOUND, Outcome, _LogWatch
from raftio.testing.mutate.engine import Mutant, Mutator, Seed
from raftio.transport.memory import Network

__all__ = ["KVParams", "run_kv_campaign"]

_HEADER = struct.Struct(">I")


@dataclass(frozen=True, slots=True)
class KVParams:
    """One KV campaign: `frames` mutated client frames, each on its own connection."""

    seed: int = 1
    frames: int = 2000
    nodes: int = 3
    max_problems: int = 20


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class _Proxy:
    """Forwards one client port, keeping each connection's client-to-server frames."""

    def __init__(self, target: int, upstream: int, corpus: list[Seed], prefixes: list[Any]) -> None:
        self.target, self.upstream = target, upstream
        self.corpus, self.prefixes = corpus, prefixes
        self.recording = True
        self.server: asyncio.Server | None = None

    async def start(self, port: int) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", port)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream)
        except OSError:
            writer.close()
            return
        back = asyncio.get_running_loop().create_task(_pump(up_reader, writer))
        sent: list[bytes] = []
        buffer = b""
        try:
            while data := await reader.read(65536):
                up_writer.write(data)
                buffer += data
                while len(buffer) >= 4 and len(buffer) >= 4 + _HEADER.unpack(buffer[:4])[0]:
                    size = _HEADER.unpack(buffer[:4])[0]
                    body, buffer = buffer[4 : 4 + size], buffer[4 + size :]
                    if self.recording:
                        self.corpus.append(Seed("kv", self.target, body))
                        self.prefixes.append(list(sent))
                    sent.append(body)
        except ConnectionError:
            pass
        finally:
            up_writer.close()
            back.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                await back
            writer.close()

    def close(self) -> None:
        if self.server is not None:
            self.server.close()


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        while data := await reader.read(65536):
            writer.write(data)
    writer.close()


@dataclass(slots=True)
class _Replica:
    node: Node
    machine: KVStateMachine
    server: KVServer


class _KVCampaign:
    def __init__(self, p: KVParams) -> None:
        self.p = p
        self.outcome = Outcome(p)
        self.corpus: list[Seed] = []
        self.prefixes: list[list[bytes]] = []
        self.net = Network(p.seed)
        self.rng = random.Random(p.seed)
        self.ports = [_free_port() for _ in range(p.nodes)]
        self.proxy_ports = [_free_port() for _ in range(p.nodes)]
        self.addresses = [f"127.0.0.1:{port}" for port in self.proxy_ports]
        self.nodes: list[_Replica] = []
        self.proxies: list[_Proxy] = []
        self.acked: dict[str, str] = {}
        # Keys a mutant wrote with an ok answer: a mutated frame that carries a live
        # session and its next seq is a well-formed write, so the value may change.
        self.mutant_writes: set[str] = set()
        self.last: Mutant | None = None
        self._stop = False
        self._writes = 0

    async def start(self) -> None:
        raft_addresses = [f"127.0.0.1:{9000 + i}" for i in range(self.p.nodes)]
        for i in range(self.p.nodes):
            ends = []
            for j in range(self.p.nodes):
                name = ("kv", i, j)
                ends.append(self.net.make_end(name))
                self.net.connect(name, j)
                self.net.enable(name, True)
            machine = KVStateMachine()
            node = Node(
                i,
                raft_addresses,
                None,
                machine,
                storage=raftio.MemoryStorage(),
                peers=ends,
                rng=random.Random(self.rng.random()),
                snapshot_bytes=20_000,
            )
            server = KVServer(node, machine, self.addresses, bind=f"127.0.0.1:{self.ports[i]}")
            await node.start()
            await server.start()
            self.net.add_server(i, node.raft)
            self.nodes.append(_Replica(node, machine, server))
            proxy = _Proxy(i, self.ports[i], self.corpus, self.prefixes)
            await proxy.start(self.proxy_ports[i])
            self.proxies.append(proxy)

    async def close(self) -> None:
        for proxy in self.proxies:
            proxy.close()
        for replica in self.nodes:
            await replica.server.close()
            await replica.node.close()
        self.net.cleanup()

    def leader(self) -> _Replica | None:
        for node in self.nodes:
            if not node.node.raft.killed() and node.node.raft.get_state()[1]:
                return node
        return None

    async def wait_leader(self) -> float | None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        for _ in range(int(LEADER_BOUND / 0.01) + 1):
            if self.leader() is not None:
                return round(loop.time() - started, 3)
            await asyncio.sleep(0.01)
        return None

    async def write(self, client: KVClient, tag: str) -> None:
        self._writes += 1
        key, value = f"{tag}{self._writes}", f"v{self._writes}.{self.p.seed}"
        try:
            got = await client.put(key, value)
        except raftio.errors.RaftioError:
            self.outcome.writes_failed += 1
            return
        except Exception as exc:
            self.outcome.add("client", f"put raised {exc!r:.200}")
            return
        if got != value:
            self.outcome.add("data", f"put {key}={value!r} answered {got!r:.60}")
        self.acked[key] = value
        self.outcome.writes_acked += 1

    async def capture(self) -> None:
        await self.wait_leader()
        async with (
            KVClient(self.addresses, deadline=10.0) as one,
            KVClient(self.addresses, deadline=10.0) as two,
        ):
            for k in range(40):
                await self.write(one if k % 2 else two, "c")
                await one.get(f"c{self._writes}")
            await one.status()
            await one.append("c-append", "x")
        for proxy in self.proxies:
            proxy.recording = False
        self.outcome.corpus = len(self.corpus)

    async def writer(self, w: int) -> None:
        async with KVClient(self.addresses, deadline=10.0, attempt_timeout=2.0) as client:
            while not self._stop:
                await self.write(client, f"w{w}.")
                await asyncio.sleep(0.1)

    async def inject(self) -> None:
        mutator = Mutator(self.corpus, self.p.seed, self.p.nodes, methods=("kv",))
        for n in range(self.p.frames):
            if len(self.outcome.found) >= self.p.max_problems:
                self.outcome.add("other", f"stopped injecting after frame {n}")
                break
            mutant = mutator.mutant(n)
            self.last = mutant
            await self.deliver(mutant, random.Random(f"kv-frame:{self.p.seed}:{n}"))

    async def deliver(self, mutant: Mutant, rng: random.Random) -> None:
        out = self.outcome
        out.injected += 1
        prefix = self.prefixes[mutant.origin]
        body = mutant.payload
        frame = _HEADER.pack(len(body)) + body
        if rng.random() < 0.1:  # a length header that lies
            frame = _HEADER.pack(rng.choice((0, 1, len(body) + 1, 2**20, 2**32 - 1))) + body
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", self.ports[mutant.target])
        except OSError as exc:
            out.add("connect", f"S{mutant.target}'s client port refused a connection: {exc}")
            return
        try:
            for earlier in prefix:
                writer.write(_HEADER.pack(len(earlier)) + earlier)
            writer.write(frame)
            replies, last = 0, b""
            with contextlib.suppress(TimeoutError, ConnectionError, asyncio.IncompleteReadError):
                async with asyncio.timeout(0.5):
                    while replies <= len(prefix):  # one reply per frame, or the server hangs up
                        (size,) = _HEADER.unpack(await reader.readexactly(4))
                        last = await reader.readexactly(size)
                        replies += 1
            if replies > len(prefix):
                out.answered += 1
                self._note_write(body, last)
            else:
                out.unanswered += 1
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    def _note_write(self, request: bytes, reply: bytes) -> None:
        """Remember the key of a mutated put or append the cluster acknowledged."""
        try:
            asked, answered = decode_body(request), decode_body(reply)
        except Exception:
            return
        if (
            isinstance(asked, dict)
            and asked.get("op") in ("put", "append")
            and isinstance(asked.get("key"), str)
            and isinstance(answered, dict)
            and answered.get("ok") is True
        ):
            self.mutant_writes.add(asked["key"])

    async def check(self) -> None:
        out = self.outcome
        out.leader_after = await self.wait_leader()
        async with KVClient(self.addresses, deadline=10.0) as fresh:
            try:
                await fresh.put("barrier", str(self.p.seed))
            except raftio.errors.RaftioError as exc:
                out.add("liveness", f"a fresh client cannot write: {exc}")
                return
            wrong = []
            for key, value in self.acked.items():
                got = await fresh.get(key)
                if got != value and key not in self.mutant_writes:
                    wrong.append(f"{key}={got!r:.40} (acknowledged {value!r})")
            if wrong:
                out.add("data", f"{len(wrong)} acknowledged writes read back wrong: {wrong[:3]}")
        leader = self.leader()
        if leader is None:
            return
        barrier = leader.node.applied_index
        for _ in range(200):
            if all(n.node.applied_index >= barrier for n in self.nodes):
                break
            await asyncio.sleep(0.05)
        digests = {n.machine.digest() for n in self.nodes if n.node.applied_index == barrier}
        if len(digests) > 1:
            out.add("data", f"replicas at applied index {barrier} disagree")
        out.leader_after_restart = out.leader_after  # no restart phase here

    async def run(self) -> Outcome:
        loop = asyncio.get_running_loop()
        started = loop.time()
        await self.start()
        await self.capture()
        writers = [loop.create_task(self.writer(w)) for w in range(2)]
        await self.inject()
        self._stop = True
        await asyncio.gather(*writers)
        await self.check()
        self.outcome.virtual_seconds = loop.time() - started
        return self.outcome


async def _kv_campaign(params: KVParams) -> Outcome:
    campaign = _KVCampaign(params)
    watch = _LogWatch(campaign.outcome, lambda: campaign.last)
    root = logging.getLogger("raftio")
    saved = root.propagate
    root.addHandler(watch)
    root.propagate = False
    try:
        return await campaign.run()
    finally:
        root.removeHandler(watch)
        root.propagate = saved
        await campaign.close()


def run_kv_campaign(params: KVParams) -> Outcome:
    """Run one KV campaign on a fresh virtual-clock loop; see the module docstring."""
    started = time.perf_counter()
    outcome = run(_kv_campaign(params), "virtual")
    outcome.wall_seconds = time.perf_counter() - started
    return outcome
