"""A one-node KV service on 127.0.0.1 (real TCP) and raw protocol helpers.

The node keeps its log in a MemoryStorage: these tests are about the client
port, and a storage in memory keeps fsync latency out of their timing.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import struct
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from raftio.kv import KVClient, KVStateMachine
from raftio.kv.local import free_ports
from raftio.kv.protocol import auth_proof, encode_frame, read_frame
from raftio.kv.server import KVServer
from raftio.node import Node
from raftio.storage.memory import MemoryStorage

TOKEN = b"kv-token-for-tests-0123456789abc"


@contextlib.asynccontextmanager
async def kv_service(**server_options: Any) -> AsyncIterator[KVServer]:
    """A started single-node Node (its own leader) and its KVServer on a free port."""
    raft_port, client_port = free_ports(2)
    machine = KVStateMachine()
    node = Node(0, [f"127.0.0.1:{raft_port}"], None, machine, storage=MemoryStorage())
    server = KVServer(node, machine, [f"127.0.0.1:{client_port}"], **server_options)
    async with node, server:
        async with asyncio.timeout(10):
            while True:  # a lone node elects itself after one election timeout
                if node.status().role == "leader":
                    break
                await asyncio.sleep(0.01)
        yield server


def address(server: KVServer) -> str:
    return f"127.0.0.1:{server.port}"


def client(server: KVServer, **options: Any) -> KVClient:
    return KVClient([address(server)], **options)


Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def connect(server: KVServer, token: bytes | None = None) -> Stream:
    """A raw connection, past the handshake if `token` is given."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    if token is not None:
        nonce = secrets.token_bytes(16)
        hello = await exchange((reader, writer), {"op": "hello", "nonce": nonce})
        server_nonce = hello["value"]["nonce"]
        proof = auth_proof(token, "raftio-kv-client", nonce, server_nonce)
        verdict = await exchange((reader, writer), {"op": "auth", "proof": proof})
        assert verdict == {"ok": True, "value": None}
    return reader, writer


async def exchange(stream: Stream, request: Any) -> Any:
    reader, writer = stream
    writer.write(encode_frame(request))
    await writer.drain()
    async with asyncio.timeout(10):
        return await read_frame(reader)


async def closed_by_server(stream: Stream, within: float = 10.0) -> bool:
    """Whether the server closes the connection (EOF or reset) within `within` seconds."""
    reader, _ = stream
    try:
        async with asyncio.timeout(within):
            while await reader.read(65536):
                pass
    except TimeoutError:
        return False
    except ConnectionError:
        return True
    return True


async def close(*streams: Stream) -> None:
    for _, writer in streams:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


def header(size: int) -> bytes:
    return struct.pack(">I", size)


def rss_bytes() -> int:
    """This process's resident set size now (Linux /proc)."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE")
