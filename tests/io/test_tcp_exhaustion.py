"""Exhausting the peer port (issue 11): idle holders, slowloris, partial frames.

Each test runs a real `serve()` on 127.0.0.1 and, throughout the attack, a
legitimate peer that keeps calling (every 20 ms, and every fifth call from a
fresh client end, i.e. a new connection and handshake, as a restarted node
would). Every one of its calls must be answered. The server's own accounting
(`buffered`, `buffered_peak`, the drop counters) is asserted on; the
process's RSS growth is printed as a figure, never asserted (the attackers run
in this process too, so it is an upper bound of the server's share).

Attackers use plain non-blocking sockets driven by the loop's `sock_*` calls,
so their bytes sit in the kernel, not in this process's memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import socket
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import pytest
from test_tcp_transport import CLUSTER, RV, Handler, end_to, serving

from raftio.messages import RequestVoteReply
from raftio.testing import new_event_loop
from raftio.transport import frames
from raftio.transport.tcp import TcpServer

Runner = Callable[..., Any]
FDS_NEEDED = 4 * 2000 + 500  # both ends of 2,000 connections, twice over, and slack


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture) -> Runner:
    caplog.set_level(logging.INFO, logger="raftio.transport")

    def runner(main: Coroutine[Any, Any, Any]) -> Any:
        errors: list[dict[str, Any]] = []
        with asyncio.Runner(loop_factory=lambda: new_event_loop(request.param)) as r:
            r.get_loop().set_exception_handler(lambda _loop, ctx: errors.append(ctx))
            result = r.run(asyncio.wait_for(main, 60))
        assert [(ctx.get("message"), ctx.get("exception")) for ctx in errors] == []
        assert [rec.getMessage() for rec in caplog.records if rec.exc_info] == []
        return result

    return runner


@pytest.fixture(autouse=True)
def enough_fds() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < FDS_NEEDED:
        # Raise the soft limit as far as the hard one allows; fail loudly if short.
        want = FDS_NEEDED if hard == resource.RLIM_INFINITY else min(FDS_NEEDED, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        assert want >= FDS_NEEDED, f"need {FDS_NEEDED} file descriptors, hard limit is {hard}"


def rss_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS in /proc/self/status")


class Legit:
    """A peer calling throughout the attack; counts calls and failures."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.calls = self.failures = 0
        self._stop = asyncio.Event()
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        end = end_to(self.port)
        try:
            while not self._stop.is_set():
                if self.calls % 5 == 4:
                    end.close()
                    await end.wait_closed()
                    end = end_to(self.port)  # a restarted peer: new connection
                reply = await end.call("request_vote", RV)
                self.calls += 1
                self.failures += type(reply) is not RequestVoteReply
                await asyncio.sleep(0.02)
        finally:
            end.close()
            await end.wait_closed()

    async def stop(self) -> None:
        self._stop.set()
        await self._task
        assert self.calls >= 20
        assert self.failures == 0


class RawPeer:
    """One attacker connection: a plain socket the loop drives with sock_* calls."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    @classmethod
    async def connect(cls, port: int) -> RawPeer:
        sock = socket.socket()
        sock.setblocking(False)
        sock.bind(("127.0.0.2", 0))  # the attacker is another host than the peer
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        return cls(sock)

    async def send(self, data: bytes | memoryview) -> bool:
        """False if the server has dropped us."""
        try:
            await asyncio.get_running_loop().sock_sendall(self.sock, data)
        except OSError:
            return False
        return True

    async def authenticate(self, node_id: int) -> bool:
        nonce = frames.new_nonce()
        hello = frames.encode_frame(frames.HELLO, 0, frames.hello_payload(CLUSTER, node_id, nonce))
        if not await self.send(hello):
            return False
        try:
            length, kind, _ = frames.HEADER.unpack(await self.recv(frames.HEADER_SIZE))
            await self.recv(length - frames.BODY_MIN)
        except (OSError, EOFError):
            return False
        if kind != frames.WELCOME:
            return False
        return await self.send(frames.encode_frame(frames.AUTH, 0, frames.auth_payload(b"")))

    async def recv(self, n: int) -> bytes:
        loop = asyncio.get_running_loop()
        got = b""
        while len(got) < n:
            chunk = await loop.sock_recv(self.sock, n - len(got))
            if not chunk:
                raise EOFError
            got += chunk
        return got

    def close(self) -> None:
        self.sock.close()


async def authenticated_peers(port: int, node_ids: range) -> list[RawPeer]:
    """Connections authenticated as `node_ids` (no secret), 50 at a time: fewer
    than max_pending, so that none is evicted while still in its handshake."""
    peers: list[RawPeer] = []
    for start in range(0, len(node_ids), 50):
        ids = node_ids[start : start + 50]
        batch = await asyncio.gather(*(RawPeer.connect(port) for _ in ids))
        peers += batch
        ok = await asyncio.gather(*(p.authenticate(i) for p, i in zip(batch, ids, strict=True)))
        assert all(ok)
    return peers


@contextlib.asynccontextmanager
async def attackers() -> AsyncIterator[list[RawPeer]]:
    peers: list[RawPeer] = []
    try:
        yield peers
    finally:
        for peer in peers:
            peer.close()


def dropped(server: TcpServer, reason: str) -> float:
    return server.metrics().get(f'raftio_tcp_dropped_total{{reason="{reason}"}}', 0)


def warning_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        rec.getMessage()
        for rec in caplog.records
        if rec.levelno >= logging.WARNING and rec.name.startswith("raftio.transport")
    ]


# --- 2,000 idle connections ----------------------------------------------------------


@pytest.mark.parametrize("authenticated", [False, True])
def test_2000_idle_connections_keep_no_peer_out(
    run: Runner, caplog: pytest.LogCaptureFixture, authenticated: bool
) -> None:
    """2,000 connections that say nothing (or authenticate, no secret set, then nothing)."""

    async def main() -> dict[str, float]:
        async with serving(Handler(), log_interval=1.0) as server, attackers() as held:
            legit = Legit(server.port)
            before = rss_kib()
            for start in range(0, 2000, 100):
                batch = await asyncio.gather(*(RawPeer.connect(server.port) for _ in range(100)))
                held.extend(batch)
                if authenticated:  # each as its own node id: the per-node cap does not help
                    await asyncio.gather(
                        *(peer.authenticate(1000 + start + i) for i, peer in enumerate(batch))
                    )
                assert len(server.connections) <= server.max_pending + server.max_connections + 2
            await asyncio.sleep(0.5)
            grown = rss_kib() - before
            await legit.stop()

            assert len(server._pending) <= server.max_pending
            assert len(server._ready) <= server.max_connections
            evicted = dropped(server, "pending_full") + dropped(server, "connections_full")
            assert evicted >= 2000 - server.max_pending - server.max_connections
            return {"rss_growth_kib": grown, "evicted": evicted, "calls": legit.calls}

    figures = run(main())
    print(f"\n2000 idle (authenticated={authenticated}): {figures}")
    # Logs stay bounded: thousands of evictions, a handful of lines.
    assert len(warning_lines(caplog)) <= 20


# --- slowloris ---------------------------------------------------------------------


def test_slowloris_connections_are_cut_at_the_frame_timeout(
    run: Runner, caplog: pytest.LogCaptureFixture
) -> None:
    """200 authenticated connections, each a frame header then one byte a second.

    frame_timeout is 2 s here (30 s by default) to keep the test short.
    """

    async def main() -> dict[str, float]:
        async with (
            serving(Handler(), frame_timeout=2.0, log_interval=1.0, max_connections=256) as server,
            attackers() as held,
        ):
            legit = Legit(server.port)
            held.extend(await authenticated_peers(server.port, range(100, 300)))
            header = frames.HEADER.pack(1000, frames.REQUEST_VOTE_KIND, 1)
            loop = asyncio.get_running_loop()
            started = loop.time()
            await asyncio.gather(*(peer.send(header) for peer in held))
            alive = list(held)
            while alive and loop.time() - started < 10:
                await asyncio.sleep(1.0)
                sent = await asyncio.gather(*(peer.send(b"\0") for peer in alive))
                alive = [peer for peer, ok in zip(alive, sent, strict=True) if ok]
            took = loop.time() - started
            await legit.stop()

            assert dropped(server, "frame_timeout") == 200
            assert len(server._ready) <= 1  # the legit end's, at most
            return {"all_cut_after_s": round(took, 1), "calls": legit.calls}

    figures = run(main())
    print(f"\nslowloris x200: {figures}")
    assert figures["all_cut_after_s"] < 6
    assert len(warning_lines(caplog)) <= 10


# --- many partial frames -------------------------------------------------------------


def test_partial_frames_cannot_grow_memory_past_the_budget(run: Runner) -> None:
    """100 authenticated connections, each holding a max_frame frame less one byte.

    Without a budget the server would buffer 100 x 1 MiB; with max_frame 1 MiB
    the default budget is 2 MiB.
    """
    max_frame = 1 << 20
    almost = frames.HEADER.pack(max_frame, frames.INSTALL_SNAPSHOT_KIND, 1) + bytes(max_frame - 6)

    async def main() -> dict[str, float]:
        async with (
            serving(Handler(), max_frame=max_frame, log_interval=1.0) as server,
            attackers() as held,
        ):
            assert server.max_buffered == 2 * max_frame
            legit = Legit(server.port)
            held.extend(await authenticated_peers(server.port, range(100, 200)))
            before = rss_kib()
            view = memoryview(almost)
            await asyncio.gather(*(peer.send(view) for peer in held))
            await asyncio.sleep(0.5)
            grown = rss_kib() - before
            await legit.stop()

            assert server.buffered_peak <= server.max_buffered
            assert server.buffered == sum(conn.counted for conn in server.connections)
            assert dropped(server, "buffer_budget") >= 98  # at most 2 fit in 2 MiB
            return {
                "rss_growth_kib": grown,
                "buffered_peak": server.buffered_peak,
                "budget": server.max_buffered,
                "without_budget": 100 * len(almost),
                "calls": legit.calls,
            }

    figures = run(main())
    print(f"\npartial frames x100: {figures}")
