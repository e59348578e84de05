"""The peer-protocol campaign over real TCP: Nodes on 127.0.0.1 with FileStorage, no secret.

`run_tcp_campaign(PeerParams(seed=s, frames=n))` is the in-memory campaign
(`raftio.testing.mutate.peer`) with real parts: three `Node`s serve the
peer protocol on loopback ports and keep their state in FileStorage under
a temporary directory, on the stdlib event loop (real time). The cluster
goes through the same capture script (elections, writes, a crash, a
snapshot sent to a laggard); the mutants are made from the frames the
in-memory cluster of the same seed exchanged (the same codec, terms and
indexes of the same order). Each mutant travels in a frame of its method
on a connection that did the handshake claiming the frame's own sender
id (nine in ten) or any member's or a non-member's (no secret: the
handshake asks for no proof), one frame at a time, and the
replies are read and dropped. The checks are the in-memory campaign's,
including the restart of every node from its files.

Timing is real here, so a seed replays the same frames but not the same
interleaving.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import tempfile
import time
from pathlib import Path

from raftio import codec
from raftio.node import Node
from raftio.testing.clock import run
from raftio.testing.mutate.cluster import FuzzCluster, Outcome, PeerParams
from raftio.testing.mutate.engine import PEER_METHODS, Mutant, Seed
from raftio.testing.mutate.peer import _Campaign, _watched, capture_corpus
from raftio.transport import frames

__all__ = ["run_tcp_campaign"]

_NON_MEMBER = 7


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


class TcpFuzzCluster(FuzzCluster):
    """The same cluster with real parts: TCP on 127.0.0.1 and FileStorage in `root`."""

    def __init__(self, params: PeerParams, root: Path, corpus: list[Seed]) -> None:
        super().__init__(params.seed, params.peers, params.snapshot_bytes, corpus, params.machine)
        self.root = root
        self.ports = _free_ports(params.peers)
        self.addresses = [f"127.0.0.1:{port}" for port in self.ports]
        self.recording = False

    async def start(self, i: int) -> Node:
        self.machines[i] = self.machine()
        node = Node(
            i,
            self.addresses,
            self.root / f"n{i}",
            self.machines[i],
            snapshot_bytes=self.snapshot_bytes,
            propose_timeout=1.0,
            rng=random.Random(self.rng.random()),
        )
        await node.start()  # closes itself if it cannot start
        self.nodes[i] = node
        return node

    async def crash(self, i: int) -> None:
        node = self.nodes[i]
        if node is not None:
            await node.close(transfer=False)  # a crash: FileStorage keeps what was synced
        self.nodes[i] = None

    async def close(self) -> None:
        for node in self.nodes:
            if node is not None:
                await node.close()


class _Link:
    """One handshaken connection to a node's peer port, claiming some node id."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.replies = self.no_replies = 0
        self.heard = asyncio.Event()  # a reply came, or the connection ended
        self.task = asyncio.get_running_loop().create_task(self._read())

    @classmethod
    async def open(cls, port: int, claimed: int) -> _Link | None:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            return None
        hello = frames.hello_payload("raftio", claimed, frames.new_nonce())
        writer.write(frames.encode_frame(frames.HELLO, 0, hello))
        try:
            async with asyncio.timeout(2.0):
                length, kind, _ = frames.HEADER.unpack(await reader.readexactly(frames.HEADER_SIZE))
                await reader.readexactly(length - frames.BODY_MIN)
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            writer.close()
            return None
        if kind != frames.WELCOME:
            writer.close()
            return None
        writer.write(frames.encode_frame(frames.AUTH, 0, frames.auth_payload(b"")))
        return cls(reader, writer)

    async def _read(self) -> None:
        try:
            while True:
                header = await self.reader.readexactly(frames.HEADER_SIZE)
                length, kind, _ = frames.HEADER.unpack(header)
                await self.reader.readexactly(length - frames.BODY_MIN)
                if kind == frames.REPLY:
                    self.replies += 1
                else:
                    self.no_replies += 1
                self.heard.set()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.heard.set()

    def alive(self) -> bool:
        return not self.task.done() and not self.writer.is_closing()

    async def close(self) -> None:
        self.writer.close()
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError):
            await self.task


class _TcpCampaign(_Campaign):
    def __init__(self, params: PeerParams, root: Path, corpus: list[Seed]) -> None:
        super().__init__(params)
        self.tcp = TcpFuzzCluster(params, root, self.corpus)
        self.cluster = self.tcp
        self._captured = corpus
        self._links: dict[tuple[int, int], _Link] = {}
        self._rng = random.Random(f"tcp:{params.seed}")
        self._request_id = 0
        self._one_at_a_time = asyncio.Lock()  # links are opened and used by one sender

    async def capture(self) -> None:
        await super().capture()  # the same life as the in-memory cluster's
        self.corpus[:] = self._captured
        self.outcome.corpus = len(self.corpus)

    async def deliver(self, mutant: Mutant) -> None:
        async with self._one_at_a_time:
            await self._deliver(mutant)

    async def _deliver(self, mutant: Mutant) -> None:
        out = self.outcome
        out.injected += 1
        self.last = mutant
        if mutant.method not in PEER_METHODS or self.cluster.nodes[mutant.target] is None:
            return
        claimed = self._claim(mutant)
        key = (mutant.target, claimed)
        link = self._links.get(key)
        if link is None or not link.alive():
            if link is not None:
                self._count(link)
                await link.close()
            link = await _Link.open(self.tcp.ports[mutant.target], claimed)
            if link is None:
                self._links.pop(key, None)
                out.unanswered += 1
                return
            self._links[key] = link
        self._request_id = (self._request_id + 1) % frames.MAX_REQUEST_ID
        kind = frames.RPC_BY_METHOD[mutant.method].kind
        link.heard.clear()
        link.writer.write(frames.encode_frame(kind, self._request_id, mutant.payload))
        # One frame at a time: its answer (or the server hanging up) before the next.
        with contextlib.suppress(ConnectionError, TimeoutError):
            async with asyncio.timeout(1.0):
                await link.writer.drain()
                await link.heard.wait()

    def _claim(self, mutant: Mutant) -> int:
        """The node id the connection claims: mostly the frame's own sender (a forged member)."""
        try:
            args = codec.decode_message(mutant.payload)
        except codec.CodecError:
            args = None
        sender = getattr(args, "candidate_id", getattr(args, "leader_id", None))
        if isinstance(sender, int) and 0 <= sender < 2**31 and self._rng.random() < 0.9:
            return int(sender)
        claimed: int = self._rng.choice([*range(self.p.peers), _NON_MEMBER])
        return claimed

    def _count(self, link: _Link) -> None:
        self.outcome.answered += link.replies
        self.outcome.unanswered += link.no_replies
        link.replies = link.no_replies = 0

    async def inject(self) -> None:
        try:
            await super().inject()
            await asyncio.sleep(0.5)  # the last replies
        finally:
            for link in self._links.values():
                self._count(link)
                await link.close()
            self._links.clear()


def run_tcp_campaign(params: PeerParams) -> Outcome:
    """Run one campaign over real TCP and FileStorage on the stdlib loop."""
    corpus = capture_corpus(params.seed, params.peers)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="raftio-fuzz-") as root:
        campaign = _TcpCampaign(params, Path(root), corpus)
        outcome = run(_watched(campaign), "asyncio")
    outcome.wall_seconds = time.perf_counter() - started
    return outcome
