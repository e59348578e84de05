"""Fuzzing the TCP transport: the frame decoder directly, then live sockets.

Hypothesis runs derandomized (seeded from each test's source) and without an
example database, so every run tries the same inputs. The live tests keep one
server and one well-behaved client per event loop for all examples, and check
after each example that the hostile bytes cost nothing but their own
connection: no loop exception, no logged traceback, the good client still
served, the handler never given a malformed message.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from raftio import codec
from raftio.codec import CodecError
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
from raftio.transport.frames import FrameError, FrameReader, Refused
from raftio.transport.tcp import TcpClientEnd, TcpServer, serve

CLUSTER = "fuzz"
RV = RequestVoteArgs(term=5, candidate_id=0, last_log_index=1, last_log_term=1)

FUZZ = settings(
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

# --- strategies ------------------------------------------------------------------

u32 = st.integers(0, 2**32 - 1)
small = st.integers(0, 2**63 - 1)
msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=8)
    | st.binary(max_size=8),
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=16,
)
entries = st.lists(st.builds(Entry, small, st.binary(max_size=16)), max_size=3)
requests = st.one_of(
    st.builds(RequestVoteArgs, small, small, small, small),
    st.builds(AppendEntriesArgs, small, small, small, small, entries, small),
    st.builds(InstallSnapshotArgs, small, small, small, small, st.binary(max_size=64)),
)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A valid encoded request with a few bytes overwritten or cut."""
    data = bytearray(codec.encode_message(draw(requests)))
    for _ in range(draw(st.integers(0, 3))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data[: draw(st.integers(1, len(data)))])


payloads = st.one_of(
    requests.map(codec.encode_message),
    mutated(),
    msgpack_values.map(codec.pack),
    st.binary(max_size=64),
)
kinds = st.one_of(
    st.sampled_from(
        [frames.REQUEST_VOTE_KIND, frames.APPEND_ENTRIES_KIND, frames.INSTALL_SNAPSHOT_KIND]
    ),
    st.integers(0, 255),
)
frame_lists = st.lists(st.tuples(kinds, u32, payloads), max_size=8)


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


# --- the frame decoder -------------------------------------------------------------


@FUZZ
@given(st.lists(st.tuples(st.integers(0, 255), u32, st.binary(max_size=300))), st.lists(u32))
def test_frames_survive_any_chunking(sent: list[tuple[int, int, bytes]], cuts: list[int]) -> None:
    stream = b"".join(frames.encode_frame(*frame) for frame in sent)
    reader = FrameReader(max_frame=305)

    got = []
    for chunk in chunked(stream, cuts):
        reader.feed(chunk)
        while (frame := reader.next_frame()) is not None:
            got.append(frame)

    assert got == sent
    assert reader.buffered() == 0


@FUZZ
@given(st.lists(st.binary(max_size=40), max_size=20), st.integers(5, 64))
def test_random_bytes_give_frames_or_frame_error(chunks: list[bytes], max_frame: int) -> None:
    reader = FrameReader(max_frame)
    with contextlib.suppress(FrameError):
        for chunk in chunks:
            reader.feed(chunk)
            while (frame := reader.next_frame()) is not None:
                kind, request_id, payload = frame
                assert 0 <= kind <= 255
                assert 0 <= request_id < 2**32
                assert len(payload) <= max_frame - frames.BODY_MIN
            # Never holds more than one frame that is not yet whole.
            assert reader.buffered() < 4 + max_frame


@FUZZ
@given(st.one_of(st.binary(max_size=80), msgpack_values.map(codec.pack)))
def test_handshake_parsers_reject_cleanly(payload: bytes) -> None:
    for parse in (frames.parse_hello, frames.parse_welcome, frames.parse_auth):
        with contextlib.suppress(FrameError, Refused):
            parse(payload)
    assert isinstance(frames.parse_refuse(payload), str)


@FUZZ
@given(payloads)
def test_decode_message_raises_only_codec_error(payload: bytes) -> None:
    with contextlib.suppress(CodecError):
        codec.decode_message(payload)


# --- a live server -----------------------------------------------------------------


class StrictHandler:
    """Echoes, and records any argument that is not a well-formed message."""

    def __init__(self) -> None:
        self.malformed: list[Any] = []
        self.calls = 0

    def _check(self, args: Any, cls: type) -> None:
        self.calls += 1
        if type(args) is not cls:
            self.malformed.append(args)
            return
        values = [getattr(args, field.name) for field in dataclasses.fields(cls)]
        if any(type(value) not in (int, bool, bytes, list) for value in values):
            self.malformed.append(args)

    async def request_vote(self, args: RequestVoteArgs) -> RequestVoteReply:
        self._check(args, RequestVoteArgs)
        return RequestVoteReply(args.term, True)

    async def append_entries(self, args: AppendEntriesArgs) -> AppendEntriesReply:
        self._check(args, AppendEntriesArgs)
        if not all(type(e) is Entry for e in args.entries):
            self.malformed.append(args)
        return AppendEntriesReply(args.term, True, args.prev_log_index + len(args.entries))

    async def install_snapshot(self, args: InstallSnapshotArgs) -> InstallSnapshotReply:
        self._check(args, InstallSnapshotArgs)
        return InstallSnapshotReply(args.term)


@contextlib.contextmanager
def strict_runner(kind: str, caplog: pytest.LogCaptureFixture) -> Iterator[asyncio.Runner]:
    """A runner whose loop fails the test on any exception reaching it."""
    caplog.set_level(logging.INFO, logger="raftio.transport")
    errors: list[dict[str, Any]] = []
    with asyncio.Runner(loop_factory=lambda: new_event_loop(kind)) as runner:  # type: ignore[arg-type]
        runner.get_loop().set_exception_handler(lambda _loop, ctx: errors.append(ctx))
        yield runner
    assert [(ctx.get("message"), ctx.get("exception")) for ctx in errors] == []
    assert [rec.getMessage() for rec in caplog.records if rec.exc_info] == []


@contextlib.contextmanager
def live_server(kind: str, caplog: pytest.LogCaptureFixture) -> Iterator[LiveServer]:
    with strict_runner(kind, caplog) as runner:
        live = LiveServer(runner)
        try:
            yield live
        finally:
            live.close()


async def read_until_closed(reader: asyncio.StreamReader) -> None:
    try:
        while await asyncio.wait_for(reader.read(65536), 5):
            pass
    except ConnectionResetError:
        pass


async def client_handshake(reader: asyncio.StreamReader, writer: Any) -> None:
    nonce = frames.new_nonce()
    writer.write(frames.encode_frame(frames.HELLO, 0, frames.hello_payload(CLUSTER, 7, nonce)))
    length, kind, _ = frames.HEADER.unpack(await reader.readexactly(frames.HEADER_SIZE))
    assert kind == frames.WELCOME
    await reader.readexactly(length - frames.BODY_MIN)
    writer.write(frames.encode_frame(frames.AUTH, 0, frames.auth_payload(b"")))


class LiveServer:
    """One server and one good client on a runner's loop, shared by all examples."""

    def __init__(self, runner: asyncio.Runner) -> None:
        self.runner = runner
        self.handler = StrictHandler()
        self.server: TcpServer = runner.run(
            serve(self.handler, "127.0.0.1", 0, cluster_id=CLUSTER, node_id=1, max_frame=4096)
        )
        self.good = TcpClientEnd("127.0.0.1", self.server.port, cluster_id=CLUSTER, node_id=0)

    def attack(self, chunks: list[bytes], *, handshake: bool) -> None:
        self.runner.run(asyncio.wait_for(self._attack(chunks, handshake), 10))

    async def _attack(self, chunks: list[bytes], handshake: bool) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.server.port)
        try:
            if handshake:
                await client_handshake(reader, writer)
            # The server may hang up at any byte (uvloop raises RuntimeError then).
            with contextlib.suppress(OSError, RuntimeError):
                for chunk in chunks:
                    writer.write(chunk)
                    await asyncio.sleep(0)  # let the server see partial input
                writer.write_eof()
            await read_until_closed(reader)
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

        assert await self.good.call("request_vote", RV) == RequestVoteReply(5, True)
        assert len(self.server.connections) <= 2  # the good one, and ours closing
        assert self.handler.malformed == []

    def close(self) -> None:
        self.good.close()
        self.server.close()
        self.runner.run(self.good.wait_closed())
        self.runner.run(self.server.wait_closed())
        assert self.server.connections == set()


LOOPS = ["asyncio", "uvloop"]


@pytest.mark.parametrize("kind", LOOPS)
def test_live_server_survives_random_bytes(kind: str, caplog: pytest.LogCaptureFixture) -> None:
    with live_server(kind, caplog) as live:

        @settings(FUZZ, max_examples=150)
        @given(st.lists(st.binary(min_size=1, max_size=300), min_size=1, max_size=6))
        def before_handshake(chunks: list[bytes]) -> None:
            live.attack(chunks, handshake=False)

        @settings(FUZZ, max_examples=150)
        @given(st.lists(st.binary(min_size=1, max_size=300), min_size=1, max_size=6))
        def after_handshake(chunks: list[bytes]) -> None:
            live.attack(chunks, handshake=True)

        before_handshake()
        after_handshake()


@pytest.mark.parametrize("kind", LOOPS)
def test_live_server_survives_random_frames(kind: str, caplog: pytest.LogCaptureFixture) -> None:
    with live_server(kind, caplog) as live:

        @settings(FUZZ, max_examples=250)
        @given(frame_lists, st.lists(u32, max_size=4))
        def well_framed(sent: list[tuple[int, int, bytes]], cuts: list[int]) -> None:
            stream = b"".join(frames.encode_frame(*frame) for frame in sent)
            live.attack(chunked(stream, cuts), handshake=True)

        well_framed()

    # Valid requests among the noise did reach the handler.
    assert live.handler.calls > 0


# --- a hostile server --------------------------------------------------------------


@pytest.mark.parametrize("kind", LOOPS)
def test_client_survives_a_server_sending_random_frames(
    kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    reply_frames = st.lists(
        st.tuples(
            st.sampled_from([frames.REPLY, frames.NO_REPLY, frames.WELCOME, frames.REFUSE])
            | st.integers(0, 255),
            st.integers(0, 4),
            st.one_of(
                st.just(codec.encode_message(RequestVoteReply(5, True))),
                st.just(codec.encode_message(AppendEntriesReply(5, True, 1))),
                msgpack_values.map(codec.pack),
                st.binary(max_size=32),
            ),
        ),
        max_size=6,
    )

    with strict_runner(kind, caplog) as runner:
        script: list[bytes] = []
        serving: set[asyncio.Task[Any]] = set()

        async def hostile(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            serving.add(task)
            length, _, _ = frames.HEADER.unpack(await reader.readexactly(frames.HEADER_SIZE))
            hello = frames.parse_hello(await reader.readexactly(length - frames.BODY_MIN))
            welcome = frames.welcome_payload(CLUSTER, 1, frames.new_nonce(), b"", 4096)
            writer.write(frames.encode_frame(frames.WELCOME, 0, welcome) + b"".join(script))
            assert hello.cluster_id == CLUSTER
            with contextlib.suppress(OSError, RuntimeError):
                writer.write_eof()  # nothing more: calls left unanswered fail now
            await read_until_closed(reader)  # until the client end hangs up
            writer.close()

        listener = runner.run(_start(hostile))
        port = listener.sockets[0].getsockname()[1]

        @settings(FUZZ, max_examples=120)
        @given(reply_frames)
        def answer(sent: list[tuple[int, int, bytes]]) -> None:
            script[:] = [frames.encode_frame(*frame) for frame in sent]
            runner.run(asyncio.wait_for(_calls(port), 10))

        try:
            answer()
        finally:
            listener.close()
            runner.run(listener.wait_closed())
            runner.run(asyncio.wait(serving, timeout=5))
            assert all(task.done() for task in serving)


async def _start(
    callback: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Any],
) -> asyncio.Server:
    return await asyncio.start_server(callback, "127.0.0.1", 0)


async def _calls(port: int) -> None:
    async with TcpClientEnd("127.0.0.1", port, cluster_id=CLUSTER, node_id=0, timeout=1) as end:
        calls = [
            end.call("request_vote", RV),
            end.call("append_entries", AppendEntriesArgs(5, 0, 0, 0, [], 0)),
        ]
        for reply in await asyncio.gather(*calls):
            assert reply is None or type(reply) in (RequestVoteReply, AppendEntriesReply)
