"""Hostile bytes on a node's client port close that connection; the node keeps serving."""

from __future__ import annotations

import asyncio
import contextlib
import struct
from typing import Any

import pytest

from raftio.kv.local import LocalCluster
from raftio.kv.protocol import MAX_FRAME, encode_frame, read_frame
from raftio.node import parse_address

from .conftest import kv_client, open_authenticated, wait_leader


def frame(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


# (bytes sent, whether the client then half-closes, the reply expected before EOF)
FRAMING = [
    # frames that cannot be read: closed without a reply
    pytest.param(struct.pack(">I", MAX_FRAME + 1) + b"x" * 64, False, None, id="oversized"),
    pytest.param(b"\xff\xff\xff\xff", False, None, id="4GiB-length"),
    pytest.param(frame(b"\xc1"), False, None, id="undecodable-msgpack"),
    pytest.param(frame(b"\x91" * 100_000 + b"\x00"), False, None, id="deep-nesting"),
    pytest.param(frame(b"\x81\x91\x00\x00"), False, None, id="unhashable-key"),
    pytest.param(b"\x00\x00", True, None, id="cut-in-header"),
    pytest.param(struct.pack(">I", 100) + b"0123456789", True, None, id="cut-in-body"),
    # frames that are not requests: answered bad_request, then closed
    pytest.param(encode_frame([1, 2, 3]), False, "bad_request", id="not-a-map"),
    pytest.param(encode_frame({"op": "drop"}), False, "bad_request", id="unknown-op"),
    pytest.param(encode_frame({"op": "get", "key": 7}), False, "bad_request", id="key-not-str"),
    pytest.param(
        encode_frame({"op": "put", "key": "k", "value": "v", "client": "c", "seq": 0}),
        False,
        "bad_request",
        id="seq-zero",
    ),
    pytest.param(
        encode_frame({"op": "append", "key": "k", "value": "v", "seq": 1}),
        False,
        "bad_request",
        id="no-client",
    ),
    pytest.param(
        encode_frame({"op": "put", "key": "k", "value": b"v", "client": "c", "seq": 1}),
        False,
        "bad_request",
        id="bytes-value",
    ),
]


async def send_raw(
    address: str, data: bytes, half_close: bool, token: bytes | None
) -> tuple[Any, bytes]:
    """Authenticate, send `data`; return the first reply frame (None if none) and what follows."""
    reader, writer = await open_authenticated(address, token)
    try:
        writer.write(data)
        if half_close:
            writer.write_eof()
        async with asyncio.timeout(5.0):  # the server must close on its own
            reply = await read_frame(reader)
            rest = await reader.read()
        return reply, rest
    finally:
        writer.close()
        await writer.wait_closed()


@pytest.mark.parametrize(("data", "half_close", "error"), FRAMING)
async def test_bad_input_closes_the_connection_and_the_node_serves_on(
    shared_cluster: LocalCluster, data: bytes, half_close: bool, error: str | None
) -> None:
    node = await wait_leader(shared_cluster)
    address = shared_cluster.spec.client_peers[node]

    reply, rest = await send_raw(address, data, half_close, shared_cluster.spec.secret())
    async with kv_client(shared_cluster) as client:
        written = await client.put("after-bad-input", "ok")

    assert (reply or {}).get("error") == error
    assert rest == b""
    assert written == "ok"
    assert shared_cluster.running(node)


async def test_abandoned_connections_do_not_hurt(shared_cluster: LocalCluster) -> None:
    address = shared_cluster.spec.client_peers[await wait_leader(shared_cluster)]
    streams: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    try:
        for _ in range(100):
            streams.append(await asyncio.open_connection(*parse_address(address)))
        for _, writer in streams[:50]:
            writer.write(b"\x00\x00\x00")  # half a header, then silence

        async with kv_client(shared_cluster) as client:
            written = await client.append("busy", "x")
    finally:  # even on failure: sockets left to the GC would fail a later test
        for _, writer in streams:
            writer.close()
            # The server may have closed it first (evicted past max_pending, 64, or at its
            # handshake_timeout): a close with our half header still unread is a reset.
            with contextlib.suppress(ConnectionResetError):
                await writer.wait_closed()
    async with kv_client(shared_cluster) as client:
        value = await client.get("busy")

    assert written == "x"
    assert value == "x"
