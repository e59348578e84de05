"""The peer port's limits (raftio.transport.tcp_server) over real loopback sockets.

Admission (unauthenticated and authenticated caps, per-node slots, one host
flooding), the idle / per-frame / handshake deadlines, the buffer budget,
rate-limited drop logs and their counters, TLS certificates bound to node ids
and per-node keys. Each runs on the selector loop and on uvloop, failing on
anything that reaches the loop's exception handler or a logged traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import socket
import ssl
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
from test_tcp_transport import (
    CLUSTER,
    RV,
    Handler,
    _make_ca,
    _make_leaf,
    end_to,
    read_frame,
    serving,
    wait_dropped,
)

from raftio import codec
from raftio.messages import RequestVoteArgs, RequestVoteReply
from raftio.testing import new_event_loop
from raftio.transport import frames
from raftio.transport.limits import DropLog
from raftio.transport.tcp import TcpServer

Runner = Callable[..., Any]
RV_FRAME = frames.encode_frame(frames.REQUEST_VOTE_KIND, 1, codec.encode_message(RV))


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture) -> Runner:
    """run(coro): on a fresh loop of the parametrized kind; no loop errors, no tracebacks."""
    caplog.set_level(logging.INFO, logger="raftio.transport")

    def runner(main: Coroutine[Any, Any, Any]) -> Any:
        errors: list[dict[str, Any]] = []
        with asyncio.Runner(loop_factory=lambda: new_event_loop(request.param)) as r:
            r.get_loop().set_exception_handler(lambda _loop, ctx: errors.append(ctx))
            result = r.run(asyncio.wait_for(main, 30))
        assert [(ctx.get("message"), ctx.get("exception")) for ctx in errors] == []
        assert [rec.getMessage() for rec in caplog.records if rec.exc_info] == []
        return result

    return runner


def warnings_logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        rec.getMessage()
        for rec in caplog.records
        if rec.levelno >= logging.WARNING and rec.name.startswith("raftio.transport")
    ]


@contextlib.asynccontextmanager
async def raw(
    port: int, host: str = "127.0.0.1"
) -> AsyncIterator[tuple[asyncio.StreamReader, Any]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(host, 0))
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def authenticate(
    reader: asyncio.StreamReader, writer: Any, node_id: int, secret: bytes | None = None
) -> None:
    """The client half of the handshake by hand, as `node_id`; waits for WELCOME."""
    hello = frames.Hello(frames.PROTOCOL_VERSION, CLUSTER, node_id, frames.new_nonce())
    payload = frames.hello_payload(CLUSTER, node_id, hello.nonce)
    writer.write(frames.encode_frame(frames.HELLO, 0, payload))
    kind, _, payload = await read_frame(reader)
    assert kind == frames.WELCOME
    welcome = frames.parse_welcome(payload)
    proof = b""
    if secret is not None:
        proof = frames.client_proof(secret, CLUSTER, hello, welcome.node_id, welcome.nonce)
    writer.write(frames.encode_frame(frames.AUTH, 0, frames.auth_payload(proof)))


def rv_as(node_id: int) -> RequestVoteArgs:
    """RV sent by `node_id` (a connection may speak only for the node it proved)."""
    return dataclasses.replace(RV, candidate_id=node_id)


async def call_ok(port: int, node_id: int = 0, **options: Any) -> bool:
    """One call from a fresh client end (a fresh connection and handshake)."""
    async with end_to(port, node_id=node_id, **options) as end:
        return type(await end.call("request_vote", rv_as(node_id))) is RequestVoteReply


async def refused(reader: asyncio.StreamReader) -> bool:
    """Whether the server sent REFUSE (within 0.3 s; a held connection gets nothing)."""
    try:
        kind, _, _ = await asyncio.wait_for(read_frame(reader), 0.3)
    except TimeoutError:
        return False
    return kind == frames.REFUSE


async def until(predicate: Callable[[], bool], within: float = 5.0) -> None:
    async with asyncio.timeout(within):
        while not predicate():  # noqa: ASYNC110 - polls the server's own state
            await asyncio.sleep(0.01)


# --- DropLog: counted always, logged at most once per key per interval --------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_drop_log_counts_every_event_and_logs_one_line_per_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    log = DropLog(logging.getLogger("raftio.transport.test"), clock, interval=10.0)
    caplog.set_level(logging.INFO, logger="raftio.transport.test")

    for i in range(1000):
        log.note("idle", "idle", logging.WARNING, "dropped %d", i)
        clock.now += 0.001
    log.note("auth_failed", "auth_failed", logging.WARNING, "wrong secret")
    clock.now += 10.0
    log.note("idle", "idle", logging.WARNING, "dropped %d", 1000)

    assert [rec.getMessage() for rec in caplog.records] == [
        "dropped 0",
        "wrong secret",
        "dropped 1000 (999 similar suppressed in the last 11 s)",
    ]
    assert log.counts == {"idle": 1001, "auth_failed": 1}
    out: dict[str, float] = {}
    log.export("drops", out)
    assert out == {'drops{reason="auth_failed"}': 1, 'drops{reason="idle"}': 1001}


def test_drop_log_keys_made_up_by_a_peer_share_one_slot(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    log = DropLog(logging.getLogger("raftio.transport.test"), clock, interval=10.0)
    caplog.set_level(logging.INFO, logger="raftio.transport.test")

    for node in range(10_000):  # a peer cycling through node ids
        log.log(f"connected S{node}", logging.INFO, "S%d connected", node)

    assert len(caplog.records) == 65  # 64 keys, then one line for all the others
    assert len(log._seen) == 65
    clock.now += 10.0  # quiet keys are forgotten once their interval is over
    log.log("connected S99999", logging.INFO, "S%d connected", 99999)
    assert len(caplog.records) == 66
    assert len(log._seen) <= 2


# --- admission -----------------------------------------------------------------------


def test_a_flooding_host_evicts_its_own_handshakes_not_a_peers(
    run: Runner, caplog: pytest.LogCaptureFixture
) -> None:
    """Unauthenticated holders (here from 127.0.0.2) never keep a real peer out."""

    async def main() -> None:
        async with serving(
            Handler(), secret=b"s", max_pending=8, handshake_timeout=0.5, log_interval=1.0
        ) as server:
            stop = asyncio.Event()
            held: list[Any] = []

            async def flood() -> None:
                while not stop.is_set():
                    # 200 connects a second, each held until evicted or timed
                    # out (0.5 s): the pool of 8 stays full. (Faster than the
                    # loop accepts, a flood fills the kernel's listen backlog
                    # instead, below anything the server can choose.)
                    held.extend(connect_from_elsewhere(server.port, 4))
                    while len(held) > 200:
                        held.pop(0).close()
                    await asyncio.sleep(0.02)

            flooding = asyncio.create_task(flood())
            loop = asyncio.get_running_loop()
            started = loop.time()
            calls = full = 0
            while loop.time() - started < 3.0:
                # Full, or one short: the previous call's connection left it.
                full += len(server._pending) >= server.max_pending - 1
                assert await call_ok(server.port, secret=b"s")  # a restarted peer, each time
                calls += 1
                await asyncio.sleep(0.01)
            elapsed = loop.time() - started
            stop.set()
            await flooding
            for sock in held:
                sock.close()

            dropped = server.metrics()['raftio_tcp_dropped_total{reason="pending_full"}']
            assert calls >= 10
            assert full >= 0.8 * calls  # each call had to get in past a full pool...
            assert dropped >= calls  # ...and a fresh flood of handshakes
            return elapsed

    elapsed = run(main())
    # At most one WARNING per reason per log_interval (1 s), plus the first.
    lines = warnings_logged(caplog)
    reasons = {line.split(": ")[2] for line in lines}
    assert len(lines) <= len(reasons) * (elapsed / 1.0 + 2)
    assert any("similar suppressed" in line for line in lines)


def connect_from_elsewhere(port: int, n: int) -> list[socket.socket]:
    """`n` connections from 127.0.0.2 that will never say a word."""
    socks = []
    for _ in range(n):
        sock = socket.socket()
        sock.setblocking(False)
        sock.bind(("127.0.0.2", 0))
        sock.connect_ex(("127.0.0.1", port))
        socks.append(sock)
    return socks


def test_a_handshake_survives_a_burst_from_another_host(run: Runner) -> None:
    async def main() -> None:
        async with (
            serving(Handler(), secret=b"s", max_pending=8) as server,
            raw(server.port) as (reader, writer),
        ):
            dropped = 'raftio_tcp_dropped_total{reason="pending_full"}'
            held = connect_from_elsewhere(server.port, 8)
            await until(lambda: len(server._pending) == 8)
            hello = frames.Hello(frames.PROTOCOL_VERSION, CLUSTER, 0, frames.new_nonce())
            writer.write(
                frames.encode_frame(frames.HELLO, 0, frames.hello_payload(CLUSTER, 0, hello.nonce))
            )
            kind, _, payload = await read_frame(reader)  # mid-handshake now
            assert kind == frames.WELCOME

            held += connect_from_elsewhere(server.port, 50)  # oldest-first would evict us
            await until(lambda: server.metrics().get(dropped) == 51)
            welcome = frames.parse_welcome(payload)
            proof = frames.client_proof(b"s", CLUSTER, hello, welcome.node_id, welcome.nonce)
            writer.write(frames.encode_frame(frames.AUTH, 0, frames.auth_payload(proof)))
            writer.write(RV_FRAME)
            kind, request_id, _ = await read_frame(reader)
            assert (kind, request_id) == (frames.REPLY, 1)
            for sock in held:
                sock.close()

    run(main())


def test_authenticated_cap_evicts_the_least_recently_active(
    run: Runner, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> None:
        async with (
            serving(Handler(), max_connections=2) as server,
            end_to(server.port, node_id=0) as busy,
            raw(server.port) as (idle_reader, idle_writer),
        ):
            assert await busy.call("request_vote", RV) is not None
            await authenticate(idle_reader, idle_writer, node_id=5)
            await until(lambda: len(server._ready) == 2)
            await asyncio.sleep(server._sweep_every * 2)  # the sweep sees who is active
            for _ in range(3):
                assert await busy.call("request_vote", RV) is not None

            assert await call_ok(server.port, node_id=7)  # a third authenticated one

            kind, _, payload = await read_frame(idle_reader)
            assert kind == frames.REFUSE
            assert "too many connections (max_connections=2)" in frames.parse_refuse(payload)
            assert await busy.call("request_vote", RV) is not None
            assert len(busy.live) == 1

    run(main())


def test_a_node_id_gets_max_per_node_connections_the_newest_replacing_the_oldest(
    run: Runner,
) -> None:
    async def main() -> None:
        async with (
            serving(Handler(), max_per_node=1) as server,
            raw(server.port) as (old_reader, old_writer),
            raw(server.port) as (new_reader, new_writer),
        ):
            await authenticate(old_reader, old_writer, node_id=0)
            await until(lambda: len(server._ready) == 1)
            await authenticate(new_reader, new_writer, node_id=0)

            kind, _, payload = await read_frame(old_reader)
            assert kind == frames.REFUSE
            assert "replaced by a newer connection from S0" in frames.parse_refuse(payload)
            new_writer.write(RV_FRAME)
            kind, request_id, _ = await read_frame(new_reader)
            assert (kind, request_id) == (frames.REPLY, 1)
            assert server.metrics()['raftio_tcp_dropped_total{reason="replaced"}'] == 1

    run(main())


# --- deadlines -----------------------------------------------------------------------


def test_an_idle_connection_is_closed_quietly_and_redialled(
    run: Runner, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> None:
        async with (
            serving(Handler(), idle_timeout=0.3) as server,
            end_to(server.port) as idle,
            end_to(server.port, node_id=2) as busy,
        ):
            assert await idle.call("request_vote", RV) is not None
            assert await busy.call("request_vote", rv_as(2)) is not None
            (busy_conn,) = busy.live
            loop = asyncio.get_running_loop()
            started = loop.time()
            while loop.time() - started < 1.0:  # a heartbeat every 50 ms
                assert await busy.call("request_vote", rv_as(2)) is not None
                await asyncio.sleep(0.05)

            assert idle.live == set()  # closed by the server...
            assert busy.live == {busy_conn}  # ...which never cut the busy link
            assert await idle.call("request_vote", RV) is not None  # redials
            assert server.metrics()['raftio_tcp_dropped_total{reason="idle"}'] == 1

    run(main())
    assert warnings_logged(caplog) == []  # routine, not trouble: INFO on both sides


def test_an_idle_raw_connection_gets_a_clean_close(run: Runner) -> None:
    async def main() -> None:
        async with (
            serving(Handler(), idle_timeout=0.2) as server,
            raw(server.port) as (reader, writer),
        ):
            await authenticate(reader, writer, node_id=4)
            assert await wait_dropped(reader) == b""  # EOF, no REFUSE
            await until(lambda: not server.connections)

    run(main())


def test_slowloris_is_dropped_at_the_frame_timeout(
    run: Runner, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> tuple[float, int]:
        async with (
            serving(Handler(), frame_timeout=0.5) as server,
            end_to(server.port) as good,
            raw(server.port) as (reader, writer),
        ):
            await authenticate(reader, writer, node_id=6)
            dropped = asyncio.create_task(wait_dropped(reader))
            loop = asyncio.get_running_loop()
            started = loop.time()
            sent = 0
            while not dropped.done() and sent < len(RV_FRAME) - 1:
                writer.write(RV_FRAME[sent : sent + 1])  # a byte at a time
                sent += 1
                assert await good.call("request_vote", RV) is not None  # served meanwhile
                await asyncio.wait([dropped], timeout=0.05)
            await dropped
            took = loop.time() - started
            assert server.metrics()['raftio_tcp_dropped_total{reason="frame_timeout"}'] == 1
            assert await good.call("request_vote", RV) is not None
            return took, sent

    took, sent = run(main())
    assert 0.5 <= took < 2.0
    assert sent < len(RV_FRAME) - 1  # cut before the frame could complete
    assert any("was not complete 0.5 s after its first bytes" in w for w in caplog.messages)


def test_a_frame_that_keeps_arriving_is_never_cut(run: Runner) -> None:
    """The frame deadline is per frame: many slow-ish frames in a row are fine."""

    async def main() -> None:
        async with (
            serving(Handler(), frame_timeout=0.3) as server,
            raw(server.port) as (reader, writer),
        ):
            await authenticate(reader, writer, node_id=0)
            half = len(RV_FRAME) // 2
            for request_id in range(1, 9):  # 8 frames, each taking 0.2 s: 1.6 s
                frame = frames.encode_frame(frames.REQUEST_VOTE_KIND, request_id, RV_FRAME[9:])
                writer.write(frame[:half])
                await asyncio.sleep(0.2)
                writer.write(frame[half:])
                kind, got, _ = await read_frame(reader)
                assert (kind, got) == (frames.REPLY, request_id)
            assert server.metrics().get('raftio_tcp_dropped_total{reason="frame_timeout"}') is None

    run(main())


# --- the buffer budget -------------------------------------------------------------


def test_partial_frames_stay_within_the_servers_budget(run: Runner) -> None:
    async def main() -> None:
        max_frame, budget = 64 * 1024, 256 * 1024
        async with contextlib.AsyncExitStack() as stack:
            server: TcpServer = await stack.enter_async_context(
                serving(Handler(), max_frame=max_frame, max_buffered=budget)
            )
            good = await stack.enter_async_context(end_to(server.port))
            almost = frames.HEADER.pack(max_frame, frames.INSTALL_SNAPSHOT_KIND, 1)
            almost += bytes(max_frame - 100)
            holders = []
            for node_id in range(10, 22):  # 12 x ~64 KiB: three times the budget
                reader, writer = await stack.enter_async_context(raw(server.port))
                await authenticate(reader, writer, node_id)
                writer.write(almost)
                await writer.drain()
                holders.append(reader)
                assert await good.call("request_vote", RV) is not None

            # 4 fit in the budget; each of the other 8 pushed it over, and the
            # connection holding the most was dropped.
            dropped = 'raftio_tcp_dropped_total{reason="buffer_budget"}'
            await until(lambda: server.metrics().get(dropped) == 8)
            assert server.buffered_peak <= budget
            assert server.buffered == sum(conn.counted for conn in server.connections)
            assert sum(conn._reader.buffered() for conn in server.connections) <= budget
            assert len(server._ready) == 5  # the good end and 4 holders
            told = await asyncio.gather(*(refused(reader) for reader in holders))
            assert sum(told) == 8
            assert await good.call("request_vote", RV) is not None


def test_limits_are_checked(run: Runner) -> None:
    async def main() -> None:
        with pytest.raises(ValueError, match="max_buffered"):
            await serving(Handler(), max_frame=1000, max_buffered=999).__aenter__()
        with pytest.raises(ValueError, match="positive"):
            await serving(Handler(), idle_timeout=0).__aenter__()
        with pytest.raises(ValueError, match="positive"):
            await serving(Handler(), max_pending=0).__aenter__()

    run(main())


# --- TLS: the certificate names the node id the client claims ----------------------


@pytest.fixture(scope="module")
def ids_pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Client certificates naming nodes in each accepted form, and some that do not."""
    directory = tmp_path_factory.mktemp("ids-pki")
    _make_ca(directory, "ca")
    _make_leaf(directory, "server", "ca")
    _make_leaf(directory, "cn", "ca", cn=f"node-0.{CLUSTER}")
    _make_leaf(directory, "dns", "ca", cn="anything", dns=f"node-0.{CLUSTER.upper()}")
    _make_leaf(directory, "bare", "ca", cn="node-0")
    _make_leaf(directory, "other-cluster", "ca", cn="node-0.another-cluster")
    _make_leaf(directory, "unnamed", "ca", cn="client")
    return directory


def tls_server(pki: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki / "server.pem", pki / "server.key")
    context.load_verify_locations(pki / "ca.pem")
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def tls_client(pki: Path, cert: str) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(pki / "ca.pem")
    context.load_cert_chain(pki / f"{cert}.pem", pki / f"{cert}.key")
    return context


# cert, claimed node id, server options, refusal logged (None: the call gets through)
TLS_CASES = {
    "CN names the node": ("cn", 0, {}, None),
    "DNS name names the node": ("dns", 0, {}, None),
    "bare node name": ("bare", 0, {}, None),
    "claims another node": ("cn", 2, {}, "client claims S2, its certificate is for S0"),
    "bare name claims another": ("bare", 1, {}, "client claims S1, its certificate is for S0"),
    "another cluster's node": ("other-cluster", 0, {}, "names no node of 'test-cluster'"),
    "names no node": ("unnamed", 0, {}, "names no node of 'test-cluster'"),
    "check turned off": ("unnamed", 5, {"tls_identity": False}, None),
    "explicit name": ("unnamed", 0, {"tls_names": {0: "client"}}, None),
    "explicit name, other node": (
        "unnamed",
        1,
        {"tls_names": {0: "client", 1: "node-1"}},
        "client claims S1, whose certificate name is 'node-1'",
    ),
    "explicit names, unlisted node": (
        "cn",
        3,
        {"tls_names": {0: "client"}},
        "no certificate name is configured for S3",
    ),
}


@pytest.mark.parametrize("case", list(TLS_CASES))
def test_tls_certificate_is_bound_to_the_claimed_node_id(
    run: Runner, caplog: pytest.LogCaptureFixture, ids_pki: Path, case: str
) -> None:
    cert, node_id, options, refusal = TLS_CASES[case]

    async def main() -> None:
        handler = Handler()
        async with (
            serving(handler, ssl=tls_server(ids_pki), **options) as server,
            end_to(server.port, node_id=node_id, ssl=tls_client(ids_pki, cert)) as end,
        ):
            reply = await end.call("request_vote", rv_as(node_id))
            if refusal is None:
                assert type(reply) is RequestVoteReply
            else:
                assert reply is None
                assert handler.calls == []
                counted = server.metrics()['raftio_tcp_dropped_total{reason="tls_identity"}']
                assert counted == 1

    run(main())
    if refusal is not None:
        assert any(refusal in line for line in warnings_logged(caplog))


# --- per-node keys: one node cannot speak as another ---------------------------------


def test_per_node_keys_let_a_node_prove_only_its_own_id(
    run: Runner, caplog: pytest.LogCaptureFixture
) -> None:
    master = b"cluster secret, kept offline"

    def key(a: int, b: int) -> bytes:
        return frames.pair_key(master, CLUSTER, a, b)

    async def main() -> None:
        handler = Handler()
        # The server is S1: it holds the keys it shares with S0 and S2 only.
        async with serving(handler, secret={0: key(0, 1), 2: key(2, 1)}) as server:
            assert await call_ok(server.port, node_id=0, secret=key(0, 1))
            assert await call_ok(server.port, node_id=2, secret=key(1, 2))  # either order
            # S0, holding only its own keys, claims to be S2: refused.
            assert not await call_ok(server.port, node_id=2, secret=key(0, 1))
            assert not await call_ok(server.port, node_id=2, secret=key(0, 2))
            # A node id without a key is not a member.
            assert not await call_ok(server.port, node_id=5, secret=key(5, 1))
            assert not await call_ok(server.port, node_id=0, secret=master)
            assert len(handler.calls) == 2
            drops = server.metrics()
            # Authentication is mutual: the client sees the server's proof fail first.
            assert drops['raftio_tcp_dropped_total{reason="client_refused"}'] == 3
            assert drops['raftio_tcp_dropped_total{reason="not_member"}'] == 1

    run(main())
    assert any("S5 has no key on this server" in line for line in warnings_logged(caplog))


def test_pair_keys_differ_per_pair_and_cluster() -> None:
    keys = {
        frames.pair_key(b"m", cluster, a, b)
        for cluster in ("x", "y")
        for a, b in ((0, 1), (0, 2), (1, 2))
    }
    assert len(keys) == 6
    assert frames.pair_key(b"m", "x", 2, 0) == frames.pair_key(b"m", "x", 0, 2)
    assert frames.pair_key(b"n", "x", 0, 1) != frames.pair_key(b"m", "x", 0, 1)


# --- a request over the peer's limit -------------------------------------------------


def test_a_request_over_the_peers_max_frame_is_not_sent_and_logged_once(
    run: Runner, caplog: pytest.LogCaptureFixture
) -> None:
    """A leader retries a snapshot every heartbeat: one WARNING, not twenty a second."""
    from raftio.messages import InstallSnapshotArgs

    async def main() -> None:
        async with serving(Handler(), max_frame=4096) as server, end_to(server.port) as end:
            assert await end.call("request_vote", RV) is not None  # learns the peer's limit
            big = InstallSnapshotArgs(1, 1, 5, 1, bytes(10_000))
            for _ in range(5):
                assert await end.call("install_snapshot", big) is None
            assert await end.call("request_vote", RV) is not None  # the connection is fine

    run(main())
    lines = [line for line in warnings_logged(caplog) if "exceeds the peer's max_frame" in line]
    assert len(lines) == 1, lines
