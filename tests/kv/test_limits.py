"""Bounded resources on the KV port: idle sockets, slowloris, partial frames (real TCP).

Each attack runs while a fresh client keeps writing, and checks the
server's own counts (connections, bytes reserved) against its caps.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import pytest

from raftio.kv.protocol import encode_frame
from raftio.kv.server import STREAM_LIMIT, KVServer

from .helpers import (
    TOKEN,
    Stream,
    client,
    close,
    closed_by_server,
    connect,
    exchange,
    header,
    kv_service,
    rss_bytes,
)


async def open_idle(server: KVServer, count: int, batch: int = 100) -> list[Stream]:
    streams: list[Stream] = []
    for first in range(0, count, batch):
        n = min(batch, count - first)
        streams += await asyncio.gather(
            *(asyncio.open_connection("127.0.0.1", server.port) for _ in range(n))
        )
    return streams


async def writes_flow(server: KVServer, n: int, **options: object) -> list[str]:
    """n appends by a fresh client, all acknowledged."""
    async with client(server, **options) as c:  # type: ignore[arg-type]
        return [await c.append("flow", ".") for _ in range(n)]


async def test_two_thousand_idle_connections_lock_no_client_out() -> None:
    async with kv_service(token=TOKEN) as server:
        before = rss_bytes()

        idle = await open_idle(server, 2000)
        pending, admitted = server.connections()
        written = await writes_flow(server, 20, token=TOKEN)
        grown = rss_bytes() - before
        print(f"RSS grew {grown / 2**20:.1f} MiB with 2000 idle connections (both ends)")
        await close(*idle)

    assert pending <= 64
    assert admitted <= 256
    assert written[-1] == "." * 20
    assert grown < 64 << 20


async def test_admitted_idle_connections_make_room_for_a_new_client() -> None:
    # Without a token, one request admits a connection: eight such idlers
    # fill max_connections, and the longest idle one gives way.
    async with kv_service(max_connections=8) as server:
        idlers = [await connect(server) for _ in range(8)]
        for stream in idlers:
            assert (await exchange(stream, {"op": "status"}))["ok"]

        written = await writes_flow(server, 5)
        oldest_closed = await closed_by_server(idlers[0], within=2.0)
        _, admitted = server.connections()
        await close(*idlers)

    assert written[-1] == "....."
    assert oldest_closed
    assert admitted <= 8


async def test_slowloris_frames_are_cut_at_the_frame_timeout() -> None:
    async with kv_service(frame_timeout=0.5, sweep=0.1) as server:
        slow = await open_idle(server, 20)
        for _, writer in slow:
            writer.write(header(500_000) + b"x")  # a large frame, then a byte at a time

        async def trickle() -> None:
            with contextlib.suppress(ConnectionError):
                for _ in range(30):
                    for _, writer in slow:
                        if not writer.is_closing():
                            writer.write(b"x")
                    await asyncio.sleep(0.1)

        trickling = asyncio.create_task(trickle())
        written = await writes_flow(server, 20)
        closed = await asyncio.gather(*(closed_by_server(s, within=3.0) for s in slow))
        trickling.cancel()
        buffered = server.buffered
        await close(*slow)

    assert written[-1] == "." * 20
    assert all(closed)
    assert buffered == 0


async def test_a_pending_connection_has_the_handshake_timeout_to_authenticate() -> None:
    async with kv_service(token=TOKEN, handshake_timeout=0.3, sweep=0.05) as server:
        silent = await open_idle(server, 5)
        dribbling = await open_idle(server, 1)
        hello = encode_frame({"op": "hello", "nonce": b"n" * 16})
        dribbling[0][1].write(hello[:3])  # half a header, then nothing

        closed = await asyncio.gather(*(closed_by_server(s, within=3.0) for s in silent))
        dribbled = await closed_by_server(dribbling[0], within=3.0)
        await close(*silent, *dribbling)

    assert all(closed)
    assert dribbled
    assert server.connections() == (0, 0)


async def test_an_admitted_connection_idle_past_idle_timeout_is_closed() -> None:
    async with kv_service(token=TOKEN, idle_timeout=0.3, sweep=0.05) as server:
        stream = await connect(server, TOKEN)
        assert (await exchange(stream, {"op": "status"}))["ok"]

        closed = await closed_by_server(stream, within=3.0)
        await close(stream)

    assert closed


async def test_partial_frames_share_one_budget(caplog: pytest.LogCaptureFixture) -> None:
    budget = 2 << 20
    async with kv_service(max_buffered=budget, frame_timeout=30.0) as server:
        partial = await open_idle(server, 10)
        for _, writer in partial:
            writer.write(header(1 << 20) + b"y" * (200 << 10))  # 1 MiB announced, 200 KiB sent
        await asyncio.sleep(0.3)
        held = server.buffered

        written = await writes_flow(server, 10)
        small = await writes_flow(server, 1)  # frames within STREAM_LIMIT need no reservation
        closed = await asyncio.gather(*(closed_by_server(s, within=0.5) for s in partial))
        await close(*partial)

    assert held <= budget
    assert held == 2 << 20  # two frames fit, the other eight connections were closed
    assert sum(closed) == 8
    assert written[-1] == "." * 10
    assert small == ["." * 11]
    assert STREAM_LIMIT < 1 << 20


async def test_refusals_are_logged_at_most_once_per_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="raftio.kv.server")
    async with kv_service(token=TOKEN, max_pending=4) as server:
        crowd = await open_idle(server, 200)
        strangers = []
        for _ in range(20):
            strangers.append(await connect(server))
            reply = await exchange(strangers[-1], {"op": "status"})
            assert reply["error"] == "unauthorized"
        written = await writes_flow(server, 3, token=TOKEN)
        await close(*crowd, *strangers)

    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    kinds = [r.getMessage().split(":")[0] for r in warnings]
    assert written[-1] == "..."
    assert len(warnings) <= 3, kinds  # one per kind (evicted, unauthorized), not one per socket
    assert sum("more since the last" in r.getMessage() for r in warnings) == 0


@pytest.mark.parametrize("token", [TOKEN, None], ids=["token", "no-token"])
async def test_all_attacks_at_once_while_a_client_keeps_writing(token: bytes | None) -> None:
    async with kv_service(token=token, frame_timeout=1.0, handshake_timeout=1.0) as server:
        before = rss_bytes()
        writer_done = asyncio.create_task(writes_flow(server, 200, token=token))

        idle = await open_idle(server, 2000)
        slow = await open_idle(server, 50)
        partial = await open_idle(server, 50)
        for _, w in slow:
            w.write(header(200) + b"\x82")  # a frame begun, never finished
        for _, w in partial:
            w.write(header(1 << 20) + b"z" * (512 << 10))  # half of a 1 MiB frame
        await asyncio.sleep(0.2)
        peak_buffered = server.buffered
        peak_connections = server.connections()
        written = await writer_done
        grown = rss_bytes() - before
        print(f"RSS grew {grown / 2**20:.1f} MiB ({'token' if token else 'no token'}): 2000 idle, "
              f"50 slowloris, 50 half-sent 1 MiB frames, 200 writes")  # fmt: skip
        await close(*idle, *slow, *partial)

    assert written[-1] == "." * 200
    assert peak_buffered <= 64 << 20
    assert peak_connections[0] <= 64
    assert peak_connections[1] <= 256
    assert grown < 96 << 20
