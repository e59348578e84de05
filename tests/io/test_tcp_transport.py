"""The TCP transport (raftio.transport.tcp) over real loopback sockets.

Every test runs on both asyncio's selector loop and uvloop, on ephemeral
ports of 127.0.0.1, with a loop exception handler that fails the test if
anything ever reaches it, and fails on any traceback logged by the transport
that the test did not ask for.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from raftio import codec
from raftio.messages import (
    AppendEntriesArgs,
    AppendEntriesReply,
    Entry,
    InstallSnapshotArgs,
    InstallSnapshotReply,
    RequestVoteArgs,
    RequestVoteReply,
)
from raftio.testing import new_event_loop
from raftio.transport import frames
from raftio.transport.tcp import TcpClientEnd, TcpServer, serve

CLUSTER = "test-cluster"
RV = RequestVoteArgs(term=3, candidate_id=0, last_log_index=7, last_log_term=2)

Runner = Callable[..., Any]


# --- harness -------------------------------------------------------------------


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture) -> Runner:
    """run(coro): run it on a fresh loop of the parametrized kind, within a bound.

    Fails if the loop's exception handler is called, or if the transport logged
    a traceback (unless `tracebacks=True`).
    """
    caplog.set_level(logging.INFO, logger="raftio.transport")

    def runner(
        main: Coroutine[Any, Any, Any], *, tracebacks: bool = False, tls_rejects: bool = False
    ) -> Any:
        loop_errors: list[dict[str, Any]] = []
        with asyncio.Runner(loop_factory=lambda: new_event_loop(request.param)) as r:
            r.get_loop().set_exception_handler(lambda _loop, ctx: loop_errors.append(ctx))
            result = r.run(asyncio.wait_for(main, 30))
        if tls_rejects:
            # asyncio in debug mode reports each TLS handshake it failed on accept.
            loop_errors = [ctx for ctx in loop_errors if not _is_tls_accept_report(ctx)]
        assert [(ctx.get("message"), ctx.get("exception")) for ctx in loop_errors] == []
        if not tracebacks:
            assert [rec.getMessage() for rec in caplog.records if rec.exc_info] == []
        return result

    return runner


def _is_tls_accept_report(context: dict[str, Any]) -> bool:
    return context.get("message") == "Error on transport creation for incoming connection" and (
        isinstance(context.get("exception"), OSError)
    )


def logged(caplog: pytest.LogCaptureFixture, fragment: str, logger: str = "") -> list[str]:
    """Transport log lines (optionally of one module) containing `fragment`."""
    return [
        rec.getMessage()
        for rec in caplog.records
        if fragment in rec.getMessage() and rec.name.startswith(f"raftio.transport{logger}")
    ]


class Handler:
    """An RpcHandler that echoes; records calls; can be gated, told to answer None or raise."""

    def __init__(self) -> None:
        self.calls: list[Any] = []
        self.gate: asyncio.Event | None = None  # request_vote waits on it when set
        self.mode = "answer"  # or "none" / "raise"
        self._called = asyncio.Condition()

    async def wait_calls(self, n: int) -> None:
        async with self._called:
            await self._called.wait_for(lambda: len(self.calls) >= n)

    async def request_vote(self, args: RequestVoteArgs) -> RequestVoteReply | None:
        self.calls.append(args)
        async with self._called:
            self._called.notify_all()
        if self.gate is not None:
            await self.gate.wait()
        if self.mode == "raise":
            raise RuntimeError("handler bug")
        if self.mode == "none":
            return None
        return RequestVoteReply(term=args.term, vote_granted=args.candidate_id % 2 == 0)

    async def append_entries(self, args: AppendEntriesArgs) -> AppendEntriesReply:
        self.calls.append(args)
        await asyncio.sleep(args.leader_commit / 1000)  # lets tests reorder replies
        match = args.prev_log_index + len(args.entries)
        return AppendEntriesReply(term=args.term, success=True, match_index=match)

    async def install_snapshot(self, args: InstallSnapshotArgs) -> InstallSnapshotReply:
        self.calls.append(args)
        return InstallSnapshotReply(term=args.term + len(args.data))


@contextlib.asynccontextmanager
async def serving(handler: Handler, **options: Any) -> AsyncIterator[TcpServer]:
    options.setdefault("cluster_id", CLUSTER)
    async with await serve(handler, "127.0.0.1", 0, node_id=1, **options) as server:
        yield server


def end_to(port: int, **options: Any) -> TcpClientEnd:
    options.setdefault("cluster_id", CLUSTER)
    options.setdefault("node_id", 0)
    return TcpClientEnd("127.0.0.1", port, **options)


async def elapsed(awaitable: Any) -> tuple[Any, float]:
    loop = asyncio.get_running_loop()
    start = loop.time()
    result = await awaitable
    return result, loop.time() - start


async def elapsed_call(start: Callable[[], asyncio.Future[Any]]) -> tuple[Any, float]:
    """Like elapsed(), for an eager call: the clock starts before the call is made.

    `elapsed(end.start_call(...))` would start it after the call set its
    deadline, and a pause in between (GC, a descheduled process) would shorten
    the measured time.
    """
    loop = asyncio.get_running_loop()
    began = loop.time()
    result = await start()
    return result, loop.time() - began


# --- calls ---------------------------------------------------------------------


def test_each_rpc_round_trips(run: Runner) -> None:
    async def main() -> None:
        handler = Handler()
        async with serving(handler) as server, end_to(server.port) as end:
            ae = AppendEntriesArgs(3, 0, 5, 2, [Entry(2, b"x"), Entry(3, b"y" * 1000)], 4)
            snap = InstallSnapshotArgs(3, 0, 9, 2, b"s" * 100_000)

            assert await end.call("request_vote", RV) == RequestVoteReply(3, True)
            assert await end.call("append_entries", ae) == AppendEntriesReply(3, True, 7)
            assert await end.call("install_snapshot", snap) == InstallSnapshotReply(100_003)

            assert handler.calls == [RV, ae, snap]

    run(main())


def test_ipv6_loopback(run: Runner) -> None:
    async def main() -> None:
        async with (
            await serve(Handler(), "::1", 0, cluster_id=CLUSTER, node_id=1) as server,
            TcpClientEnd("::1", server.port, cluster_id=CLUSTER, node_id=0) as end,
        ):
            assert server.address[0] == "::1"
            assert await end.call("request_vote", RV) == RequestVoteReply(3, True)

    run(main())


def test_many_calls_in_flight_are_matched_by_id(run: Runner) -> None:
    async def main() -> None:
        async with serving(Handler()) as server, end_to(server.port) as end:
            # leader_commit is the handler's delay in ms: replies come back reversed.
            calls = [
                end.call("append_entries", AppendEntriesArgs(i, 0, i, 0, [], 50 - i))
                for i in range(50)
            ]
            replies = await asyncio.gather(*calls)

            assert replies == [AppendEntriesReply(i, True, i) for i in range(50)]
            assert len(server.connections) == 1

    run(main())


def test_slow_handler_does_not_block_the_connection(run: Runner) -> None:
    async def main() -> None:
        handler = Handler()
        handler.gate = asyncio.Event()
        async with serving(handler) as server, end_to(server.port) as end:
            stuck = asyncio.ensure_future(end.call("request_vote", RV))

            ae = AppendEntriesArgs(3, 0, 1, 1, [], 0)
            for _ in range(20):
                assert await end.call("append_entries", ae) == AppendEntriesReply(3, True, 1)
            assert not stuck.done()

            handler.gate.set()
            assert await stuck == RequestVoteReply(3, True)

    run(main())


def test_handler_none_reaches_the_caller_at_once(run: Runner) -> None:
    async def main() -> None:
        handler = Handler()
        handler.mode = "none"
        async with serving(handler) as server, end_to(server.port, timeout=10) as end:
            reply, took = await elapsed(end.call("request_vote", RV))

            assert reply is None
            assert took < 1

    run(main())


def test_handler_exception_is_logged_and_answers_none(
    run: Runner, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> None:
        handler = Handler()
        handler.mode = "raise"
        async with serving(handler) as server, end_to(server.port, timeout=10) as end:
            reply, took = await elapsed(end.call("request_vote", RV))
            assert reply is None
            assert took < 1

            handler.mode = "answer"
            assert await end.call("request_vote", RV) == RequestVoteReply(3, True)

    run(main(), tracebacks=True)
    assert logged(caplog, "request_vote handler raised")


def test_unanswered_call_times_out_with_none(run: Runner) -> None:
    async def main() -> None:
        handler = Handler()
        handler.gate = asyncio.Event()
        async with serving(handler) as server, end_to(server.port, timeout=0.2) as end:
            reply, took = await elapsed(end.call("request_vote", RV))
            assert reply is None
            assert 0.19 <= took < 1

            # The late reply is dropped quietly; the connection keeps working.
            handler.gate.set()
            handler.gate = None
            assert await end.call("request_vote", RV) == RequestVoteReply(3, True)
            assert len(end.live) == 1

    run(main())


def test_cancelled_call_propagates_and_leaves_nothing_pending(run: Runner) -> None:
    async def main() -> None:
        handler = Handler()
        handler.gate = asyncio.Event()
        async with serving(handler) as server, end_to(server.port) as end:
            call = asyncio.ensure_future(end.call("request_vote", RV))
            await handler.wait_calls(1)

            call.cancel()
            with pytest.raises(asyncio.CancelledError):
                await call
            assert end._pending == {}

            handler.gate.set()
            handler.gate = None
            assert await end.call("request_vote", RV) == RequestVoteReply(3, True)

    run(main())


def test_bad_calls_return_none_without_touching_the_wire(run: Runner) -> None:
    async def main() -> None:
        handler = Handler()
        async with serving(handler, max_frame=1000) as server, end_to(server.port) as end:
            assert await end.call("request_vote", RV) is not None

            assert await end.call("no_such_method", RV) is None
            assert await end.call("append_entries", RV) is None
            big = InstallSnapshotArgs(3, 0, 9, 2, b"s" * 1000)  # over the server's max_frame
            assert await end.call("install_snapshot", big) is None

            assert await end.call("request_vote", RV) is not None
            assert handler.calls == [RV, RV]
            assert len(end.live) == 1

    run(main())


def test_writes_are_coalesced_and_nodelay_is_set(run: Runner) -> None:
    async def main() -> None:
        async with serving(Handler()) as server, end_to(server.port) as end:
            await end.call("request_vote", RV)
            (conn,) = end.live
            transport = conn._transport
            assert transport is not None
            sock = transport.get_extra_info("socket")
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0

            writes: list[list[bytes]] = []
            conn._transport = _Spy(transport, lambda parts: writes.append(list(parts)))  # type: ignore[assignment]
            replies = await asyncio.gather(*(end.call("request_vote", RV) for _ in range(100)))

            assert replies == [RequestVoteReply(3, True)] * 100
            # The first call found the connection idle and went at once; the
            # other 99, made in the same loop iteration, left in one write.
            assert [len(parts) // 2 for parts in writes] == [1, 99]

    run(main())


def test_replies_leave_at_once_when_alone_and_in_one_write_when_many(run: Runner) -> None:
    async def main() -> None:
        handler = Handler()
        handler.gate = asyncio.Event()
        async with serving(handler) as server, end_to(server.port) as end:
            lone = end.start_call("request_vote", RV)
            await handler.wait_calls(1)
            (conn,) = server.connections
            writes: list[tuple[int, bool]] = []

            def record(parts: Any) -> None:
                # (replies in this write, written from a handler's task rather than a callback)
                writes.append((len(parts) // 2, asyncio.current_task() is not None))

            conn._transport = _Spy(conn._transport, record)  # type: ignore[assignment]
            handler.gate.set()
            assert await lone == RequestVoteReply(3, True)

            handler.gate = asyncio.Event()
            n = 40
            calls = [end.start_call("request_vote", RequestVoteArgs(i, 0, i, 0)) for i in range(n)]
            await handler.wait_calls(1 + n)
            handler.gate.set()  # all n handlers finish in the same loop iteration
            replies = await asyncio.gather(*calls)

            assert replies == [RequestVoteReply(i, True) for i in range(n)]
            # The only request in flight: its reply left from its own task, at once.
            # Then n in flight: their replies left together, in one later write.
            assert writes == [(1, True), (n, False)]

    run(main())


# --- start_call: the call without a task that Raft uses --------------------------


def test_start_call_sends_at_once_and_resolves_to_the_reply(run: Runner) -> None:
    async def main() -> None:
        handler = Handler()
        async with serving(handler) as server, end_to(server.port) as end:
            first = end.start_call("request_vote", RV)
            assert isinstance(first, asyncio.Future)
            await handler.wait_calls(1)  # sent although nobody awaits the future yet
            assert await first == RequestVoteReply(3, True)

            # Replies come back reversed (leader_commit is the handler's delay in ms).
            futures = [
                end.start_call("append_entries", AppendEntriesArgs(i, 0, i, 0, [], 30 - i))
                for i in range(30)
            ]
            replies = await asyncio.gather(*futures)

            assert replies == [AppendEntriesReply(i, True, i) for i in range(30)]
            assert len(handler.calls) == 31
            assert end._pending == {}  # answered calls leave nothing behind
            assert len(server.connections) == 1

    run(main())


def test_start_call_with_bad_method_or_args_resolves_to_none_at_once(run: Runner) -> None:
    async def main() -> None:
        handler = Handler()
        async with serving(handler) as server, end_to(server.port) as end:
            # Before the end ever dialled or bound its loop, and after.
            for _ in range(2):
                for method, args in [
                    ("no_such_method", RV),
                    ("append_entries", RV),
                    ("request_vote", AppendEntriesArgs(3, 0, 1, 1, [], 0)),
                ]:
                    future = end.start_call(method, args)
                    assert future.done()
                    assert future.result() is None
                assert await end.start_call("request_vote", RV) == RequestVoteReply(3, True)

            assert handler.calls == [RV, RV]
            assert end._pending == {}

    run(main())


def test_start_call_after_close_resolves_to_none(run: Runner) -> None:
    async def main() -> None:
        handler = Handler()
        handler.gate = asyncio.Event()
        async with serving(handler) as server:
            end = end_to(server.port, timeout=10)
            pending = end.start_call("request_vote", RV)
            await handler.wait_calls(1)

            end.close()
            assert pending.done()
            assert pending.result() is None
            later = end.start_call("request_vote", RV)
            assert later.done()
            assert later.result() is None
            await end.wait_closed()
            assert handler.calls == [RV]
            handler.gate.set()

    run(main())


def test_start_call_to_nothing_listening_resolves_to_none_within_the_timeout(
    run: Runner,
) -> None:
    async def main() -> None:
        async with end_to(free_port(), timeout=1.0) as end:
            reply, took = await elapsed_call(lambda: end.start_call("request_vote", RV))
            assert reply is None
            assert took < 0.5  # refused at once: no need to wait out the timeout
            assert end._pending == {}

    run(main())


def test_start_call_to_a_silent_peer_resolves_to_none_at_the_timeout(run: Runner) -> None:
    async def main() -> None:
        # A black hole: the kernel completes the TCP handshake, nobody answers.
        with socket.socket() as hole:
            hole.bind(("127.0.0.1", 0))
            hole.listen(8)
            async with end_to(hole.getsockname()[1], timeout=0.3) as end:
                reply, took = await elapsed_call(lambda: end.start_call("request_vote", RV))
                assert reply is None
                assert 0.25 <= took < 1.0
                assert end._pending == {}

    run(main())


class _Spy:
    """Wraps a transport, recording each writelines call before passing it on."""

    def __init__(self, transport: Any, record: Callable[[Any], None]) -> None:
        self._transport = transport
        self._record = record

    def writelines(self, data: Any) -> None:
        self._record(data)
        self._transport.writelines(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


# --- failures and reconnection --------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_unreachable_peer_returns_none_then_recovers(run: Runner) -> None:
    async def main() -> None:
        port = free_port()
        async with end_to(port, timeout=5) as end:
            reply, took = await elapsed(end.call("request_vote", RV))
            assert reply is None
            assert took < 1

            handler = Handler()
            async with await serve(handler, "127.0.0.1", port, cluster_id=CLUSTER, node_id=1):
                reply = None
                for _ in range(100):  # at most one backoff (<= 1 s) to get through
                    reply = await end.call("request_vote", RV)
                    if reply is not None:
                        break
                    await asyncio.sleep(0.02)
                assert reply == RequestVoteReply(3, True)

    run(main())


def test_server_restart_fails_pending_calls_and_reconnects(run: Runner) -> None:
    async def main() -> None:
        handler = Handler()
        server = await serve(handler, "127.0.0.1", 0, cluster_id=CLUSTER, node_id=1)
        port = server.port
        async with end_to(port, timeout=10) as end:
            assert await end.call("request_vote", RV) is not None
            handler.gate = asyncio.Event()
            pending = asyncio.ensure_future(end.call("request_vote", RV))
            await handler.wait_calls(2)

            server.close()
            reply, took = await elapsed(pending)
            assert reply is None
            assert took < 1
            handler.gate.set()
            await server.wait_closed()

            handler.gate = None
            async with await serve(handler, "127.0.0.1", port, cluster_id=CLUSTER, node_id=1):
                replies = [await end.call("request_vote", RV) for _ in range(3)]
                assert replies[-1] == RequestVoteReply(3, True)

    run(main())


def test_reconnect_attempts_back_off(run: Runner) -> None:
    async def main() -> None:
        accepted = 0

        def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal accepted
            accepted += 1
            writer.close()

        listener = await asyncio.start_server(hang_up, "127.0.0.1", 0)
        port = listener.sockets[0].getsockname()[1]
        async with listener, end_to(port) as end:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 1.0
            calls = 0
            while loop.time() < deadline:
                assert await end.call("request_vote", RV) is None
                calls += 1

            # 20 ms doubling to a 1 s cap, jittered down by at most half:
            # 6 to 8 dials fit in a second, however hard we call.
            assert 3 <= accepted <= 9
            assert calls <= accepted + 1

    run(main())


def test_dead_peer_does_not_stall_calls_to_others(run: Runner) -> None:
    async def main() -> None:
        # A black hole: the kernel completes the TCP handshake, nobody answers.
        with socket.socket() as hole:
            hole.bind(("127.0.0.1", 0))
            hole.listen(8)
            async with (
                serving(Handler()) as server,
                end_to(server.port) as good,
                end_to(hole.getsockname()[1], timeout=1.0) as dead,
            ):
                stuck = asyncio.ensure_future(dead.call("request_vote", RV))

                _, took = await elapsed(
                    asyncio.gather(*(good.call("request_vote", RV) for _ in range(100)))
                )
                for _ in range(50):
                    assert await good.call("request_vote", RV) is not None
                assert not stuck.done()
                assert took < 0.3

                reply, took = await elapsed(stuck)
                assert reply is None

    run(main())


def test_close_fails_pending_calls_and_later_calls(run: Runner) -> None:
    async def main() -> None:
        handler = Handler()
        handler.gate = asyncio.Event()
        async with serving(handler) as server:
            end = end_to(server.port, timeout=10)
            pending = asyncio.ensure_future(end.call("request_vote", RV))
            await handler.wait_calls(1)

            end.close()
            assert await pending is None
            assert await end.call("request_vote", RV) is None
            await end.wait_closed()
            assert end.live == set()
            handler.gate.set()

    run(main())


def test_server_close_waits_for_running_handlers(run: Runner) -> None:
    async def main() -> None:
        handler = Handler()
        handler.gate = asyncio.Event()
        server = await serve(handler, "127.0.0.1", 0, cluster_id=CLUSTER, node_id=1)
        async with end_to(server.port) as end:
            pending = asyncio.ensure_future(end.call("request_vote", RV))
            await handler.wait_calls(1)

            server.close()
            assert await pending is None
            closing = asyncio.ensure_future(server.wait_closed())
            await asyncio.sleep(0.05)
            assert not closing.done()  # the handler is still running

            handler.gate.set()
            await closing

    run(main())


# --- handshake -------------------------------------------------------------------


def test_cluster_mismatch_is_refused_and_logged_on_both_sides(
    run: Runner, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> None:
        handler = Handler()
        async with serving(handler) as server, end_to(server.port, cluster_id="other") as end:
            assert await end.call("request_vote", RV) is None
            assert handler.calls == []

    run(main())
    assert logged(caplog, "cluster id mismatch", ".tcp_server")
    assert logged(caplog, "refused by server: cluster id mismatch", ".tcp")


def test_wrong_peer_id_is_refused(run: Runner, caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        async with serving(Handler()) as server:
            async with end_to(server.port, peer_id=2) as end:
                assert await end.call("request_vote", RV) is None
            async with end_to(server.port, peer_id=1) as end:
                assert await end.call("request_vote", RV) is not None

    run(main())
    assert logged(caplog, "expected node S2, reached S1", ".tcp")
    assert logged(caplog, "client refused: expected node S2", ".tcp_server")


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, int, bytes]:
    length, kind, request_id = frames.HEADER.unpack(await reader.readexactly(frames.HEADER_SIZE))
    return kind, request_id, await reader.readexactly(length - frames.BODY_MIN)


async def wait_dropped(reader: asyncio.StreamReader) -> bytes:
    """Read until the server closes the connection (EOF or reset); what it sent."""
    chunks = []
    try:
        while chunk := await asyncio.wait_for(reader.read(65536), 5):
            chunks.append(chunk)
    except ConnectionResetError:
        pass
    return b"".join(chunks)


@contextlib.asynccontextmanager
async def raw_connection(port: int) -> AsyncIterator[tuple[asyncio.StreamReader, Any]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def handshake(
    reader: asyncio.StreamReader, writer: Any, *, secret: bytes | None = None
) -> None:
    """The client half of the handshake, by hand, as S0 (RV's candidate)."""
    hello = frames.Hello(frames.PROTOCOL_VERSION, CLUSTER, 0, frames.new_nonce())
    writer.write(
        frames.encode_frame(frames.HELLO, 0, frames.hello_payload(CLUSTER, 0, hello.nonce))
    )
    kind, _, payload = await read_frame(reader)
    assert kind == frames.WELCOME
    welcome = frames.parse_welcome(payload)
    proof = b""
    if secret is not None:
        proof = frames.client_proof(secret, CLUSTER, hello, welcome.node_id, welcome.nonce)
    writer.write(frames.encode_frame(frames.AUTH, 0, frames.auth_payload(proof)))


def test_version_mismatch_is_refused_by_the_server(
    run: Runner, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> None:
        handler = Handler()
        async with serving(handler) as server, raw_connection(server.port) as (reader, writer):
            hello = codec.pack(["raftio", 99, CLUSTER, 9, frames.new_nonce()])
            writer.write(frames.encode_frame(frames.HELLO, 0, hello))

            kind, _, payload = await read_frame(reader)
            assert kind == frames.REFUSE
            assert "protocol version mismatch" in frames.parse_refuse(payload)
            assert await wait_dropped(reader) == b""

    run(main())
    assert logged(caplog, "protocol version mismatch: client speaks 99", ".tcp_server")


def test_version_mismatch_is_refused_by_the_client(
    run: Runner, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> None:
        refusals: list[str] = []

        async def future_server(reader: asyncio.StreamReader, writer: Any) -> None:
            await read_frame(reader)  # HELLO
            welcome = codec.pack([99, CLUSTER, 1, frames.new_nonce(), b"", 1 << 20])
            writer.write(frames.encode_frame(frames.WELCOME, 0, welcome))
            kind, _, payload = await read_frame(reader)
            assert kind == frames.REFUSE
            refusals.append(frames.parse_refuse(payload))
            writer.close()

        listener = await asyncio.start_server(future_server, "127.0.0.1", 0)
        async with listener, end_to(listener.sockets[0].getsockname()[1]) as end:
            assert await end.call("request_vote", RV) is None

        assert refusals == ["protocol version mismatch: server speaks 99, client speaks 1"]

    run(main())
    assert logged(caplog, "refusing server: protocol version mismatch", ".tcp")


@pytest.mark.parametrize(
    ("client_secret", "server_secret", "client_log", "server_log"),
    [
        (b"wrong", b"right", "proof does not match", "client refused: shared-secret"),
        (None, b"right", "refused by server: authentication required", "authentication required"),
        (b"right", None, "server S1 has no shared secret", "client refused: shared-secret"),
    ],
)
def test_without_the_secret_no_call_gets_through(
    run: Runner,
    caplog: pytest.LogCaptureFixture,
    client_secret: bytes | None,
    server_secret: bytes | None,
    client_log: str,
    server_log: str,
) -> None:
    async def main() -> None:
        handler = Handler()
        async with (
            serving(handler, secret=server_secret) as server,
            end_to(server.port, secret=client_secret) as end,
        ):
            replies = await asyncio.gather(*(end.call("request_vote", RV) for _ in range(10)))
            assert replies == [None] * 10
            assert handler.calls == []

    run(main())
    assert logged(caplog, client_log, ".tcp")
    assert logged(caplog, server_log, ".tcp_server")


def test_matching_secret_gets_through(run: Runner) -> None:
    async def main() -> None:
        async with (
            serving(Handler(), secret=b"s3cret") as server,
            end_to(server.port, secret=b"s3cret") as end,
        ):
            assert await end.call("request_vote", RV) == RequestVoteReply(3, True)

    run(main())


@pytest.mark.parametrize(
    ("name", "after_hello", "reason"),
    [
        ("request before AUTH", "request", "unexpected frame kind 0x10"),
        ("forged proof", "forged", "authentication failed"),
        ("empty proof", "empty", "authentication required"),
    ],
)
def test_a_hand_made_client_cannot_skip_authentication(
    run: Runner, caplog: pytest.LogCaptureFixture, name: str, after_hello: str, reason: str
) -> None:
    async def main() -> None:
        handler = Handler()
        async with (
            serving(handler, secret=b"s3cret") as server,
            raw_connection(server.port) as (reader, writer),
        ):
            hello = frames.hello_payload(CLUSTER, 9, frames.new_nonce())
            writer.write(frames.encode_frame(frames.HELLO, 0, hello))
            kind, _, _ = await read_frame(reader)
            assert kind == frames.WELCOME
            request = frames.encode_frame(frames.REQUEST_VOTE_KIND, 1, codec.encode_message(RV))
            if after_hello == "forged":
                proof = frames.auth_payload(bytes(32))
                writer.write(frames.encode_frame(frames.AUTH, 0, proof) + request)
            elif after_hello == "empty":
                writer.write(frames.encode_frame(frames.AUTH, 0, frames.auth_payload(b"")))
                writer.write(request)
            else:
                writer.write(request)

            await wait_dropped(reader)
            await asyncio.sleep(0.05)
            assert handler.calls == []

    run(main())
    assert logged(caplog, reason)


def test_handshake_must_finish_in_time(run: Runner, caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        async with serving(Handler(), handshake_timeout=0.2) as server:
            # The clock starts before we connect: the server's timer starts at its accept.
            started = loop.time()
            async with raw_connection(server.port) as (reader, _):
                await wait_dropped(reader)
                took = loop.time() - started
                assert 0.15 < took < 2
                assert server.connections == set()

    run(main())
    assert logged(caplog, "no handshake within 0.2 s")


# --- TLS -------------------------------------------------------------------------


def _openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True)


def _make_ca(directory: Path, name: str) -> None:
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", directory / f"{name}.key", "-out", directory / f"{name}.pem", "-days", "2",
        "-subj", f"/CN={name}", "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip


def _make_leaf(directory: Path, name: str, ca: str, cn: str = "", dns: str = "") -> None:
    """A certificate `name`.pem for `cn` (default: name), with an optional DNS name."""
    ext = directory / f"{name}.ext"
    san = "IP:127.0.0.1" + (f",DNS:{dns}" if dns else "")
    ext.write_text(
        f"basicConstraints=CA:FALSE\nsubjectAltName={san}\n"
        "extendedKeyUsage=serverAuth,clientAuth\nsubjectKeyIdentifier=hash\n"
        "authorityKeyIdentifier=keyid\n"
    )
    _openssl(
        "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", directory / f"{name}.key", "-out", directory / f"{name}.csr",
        "-subj", f"/CN={cn or name}",
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", directory / f"{name}.csr", "-CA", directory / f"{ca}.pem",
        "-CAkey", directory / f"{ca}.key", "-CAcreateserial", "-days", "2",
        "-out", directory / f"{name}.pem", "-extfile", ext,
    )  # fmt: skip


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA with a server and a client cert, and a rogue CA with its own client cert."""
    directory = tmp_path_factory.mktemp("pki")
    _make_ca(directory, "ca")
    _make_leaf(directory, "server", "ca")
    # A client speaks as S0 (end_to's node id): its certificate must say so.
    _make_leaf(directory, "client", "ca", cn=f"node-0.{CLUSTER}")
    _make_ca(directory, "rogue-ca")
    _make_leaf(directory, "rogue", "rogue-ca")
    return directory


def server_context(pki: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki / "server.pem", pki / "server.key")
    context.load_verify_locations(pki / "ca.pem")
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def client_context(pki: Path, cert: str | None) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(pki / "ca.pem")
    if cert is not None:
        context.load_cert_chain(pki / f"{cert}.pem", pki / f"{cert}.key")
    return context


def test_mutual_tls_round_trip(run: Runner, pki: Path) -> None:
    async def main() -> None:
        handler = Handler()
        async with (
            serving(handler, ssl=server_context(pki), secret=b"both") as server,
            end_to(server.port, ssl=client_context(pki, "client"), secret=b"both") as end,
        ):
            ae = AppendEntriesArgs(3, 0, 5, 2, [Entry(2, b"x" * 70_000)], 0)
            assert await end.call("request_vote", RV) == RequestVoteReply(3, True)
            assert await end.call("append_entries", ae) == AppendEntriesReply(3, True, 6)

    run(main())


@pytest.mark.parametrize("cert", [None, "rogue"])
def test_tls_without_a_trusted_client_cert_gets_nothing_through(
    run: Runner, pki: Path, cert: str | None
) -> None:
    async def main() -> None:
        handler = Handler()
        async with (
            serving(handler, ssl=server_context(pki)) as server,
            end_to(server.port, ssl=client_context(pki, cert), timeout=2) as end,
        ):
            assert await end.call("request_vote", RV) is None
            assert await end.call("request_vote", RV) is None
            assert handler.calls == []

            async with end_to(server.port, ssl=client_context(pki, "client")) as good:
                assert await good.call("request_vote", RV) is not None

    run(main(), tls_rejects=True)


# --- hostile input ---------------------------------------------------------------


def _frame(kind: int, payload: bytes, request_id: int = 1) -> bytes:
    return frames.encode_frame(kind, request_id, payload)


def _rv_with_str_term() -> bytes:
    """RV's encoding with the term (the first field after the tag) made a str."""
    fields = codec.unpack(codec.encode_message(RV))
    fields[1] = str(fields[1])
    return codec.pack(fields)


# Each case: whether to handshake first, the bytes to send, and the logged reason.
HOSTILE = {
    "http request": (False, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "frame length 1195725856"),
    "garbage in a frame": (False, b"\x00\x00\x00\x08" + bytes(range(8)), "unexpected frame kind"),
    "undecodable hello": (False, _frame(frames.HELLO, b"\xc1\xc1"), "undecodable HELLO"),
    "oversized frame": (True, b"\x00\x10\x00\x01" + b"x" * 10, "frame length 1048577"),
    "too short frame": (True, b"\x00\x00\x00\x02xx", "frame length 2"),
    "unknown method": (True, _frame(0x13, codec.encode_message(RV)), "unexpected frame kind 0x13"),
    "reply from a client": (True, _frame(frames.REPLY, b""), "unexpected frame kind 0x20"),
    "wrong field type": (
        True,
        _frame(frames.REQUEST_VOTE_KIND, _rv_with_str_term()),
        "RequestVoteArgs: expected int, got str",
    ),
    "args of another rpc": (
        True,
        _frame(frames.APPEND_ENTRIES_KIND, codec.encode_message(RV)),
        "append_entries frame carries a RequestVoteArgs",
    ),
    "undecodable args": (True, _frame(frames.REQUEST_VOTE_KIND, b"\x94\x00"), "undecodable"),
    "truncated frame": (True, _frame(frames.REQUEST_VOTE_KIND, b"x" * 50)[:30], "mid-frame"),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_bytes_close_only_that_connection(
    run: Runner, caplog: pytest.LogCaptureFixture, case: str
) -> None:
    handshake_first, data, reason = HOSTILE[case]

    async def main() -> None:
        handler = Handler()
        async with serving(handler, max_frame=1 << 20) as server, end_to(server.port) as end:
            assert await end.call("request_vote", RV) is not None
            (good,) = end.live

            async with raw_connection(server.port) as (reader, writer):
                if handshake_first:
                    await handshake(reader, writer)
                writer.write(data)
                if case == "truncated frame":
                    writer.write_eof()
                await wait_dropped(reader)

            assert await end.call("request_vote", RV) is not None
            assert end.live == {good}
            assert handler.calls == [RV, RV]

    run(main())
    assert logged(caplog, reason)


def test_connection_flood_is_capped(run: Runner, caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        async with (
            serving(Handler(), max_pending=4, handshake_timeout=0.3) as server,
            end_to(server.port) as end,
        ):
            assert await end.call("request_vote", RV) is not None

            flood = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(30)]
            refused = 0
            for reader, writer in flood:
                data = await wait_dropped(reader)
                refused += data[4:5] == bytes([frames.REFUSE])
                writer.close()
                await writer.wait_closed()
            # Each newcomer past 4 evicts the oldest unauthenticated one, telling it
            # why; the last 4 run out of handshake time.
            assert refused == 26

            assert await end.call("request_vote", RV) is not None
            assert len(server.connections) == 1
            assert server.metrics()['raftio_tcp_dropped_total{reason="pending_full"}'] == 26

    run(main())
    assert logged(caplog, "too many unauthenticated connections (max_pending=4)", ".tcp_server")


def test_a_flooding_client_is_not_read_past_max_inflight(run: Runner) -> None:
    async def main() -> None:
        handler = Handler()
        handler.gate = asyncio.Event()
        async with (
            serving(handler, max_inflight=8) as server,
            raw_connection(server.port) as (reader, writer),
        ):
            await handshake(reader, writer)
            request = _frame(frames.REQUEST_VOTE_KIND, codec.encode_message(RV))
            writer.write(request * 1000)

            await handler.wait_calls(8)
            await asyncio.sleep(0.1)  # room for a ninth, were the cap not kept
            assert len(handler.calls) == 8  # the rest wait, unread
            (conn,) = server.connections
            assert conn._reading_paused

            handler.gate.set()
            for _ in range(1000):
                kind, _, _ = await read_frame(reader)
                assert kind == frames.REPLY
            assert len(handler.calls) == 1000

    run(main())
