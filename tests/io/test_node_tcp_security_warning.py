"""A Node over TCP warns, once, when its peers are not authenticated (issue 11, item 3)."""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Any

import pytest

import raftio
from raftio.node import Node

WARNING = "peers are not authenticated (no secret, no TLS)"


class Register:
    def __init__(self) -> None:
        self.value: Any = None

    def apply(self, command: Any) -> Any:
        self.value = command
        return command

    def snapshot(self) -> bytes:
        return b""

    def restore(self, data: bytes) -> None:
        self.value = None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def start_and_propose(**options: Any) -> None:
    address = f"127.0.0.1:{free_port()}"
    node = Node(0, [address], None, Register(), storage=raftio.MemoryStorage(), **options)
    async with node:
        async with asyncio.timeout(10):  # a working one-node cluster over TCP
            while not node.raft.get_state()[1]:  # noqa: ASYNC110 - polls the peer
                await asyncio.sleep(0.01)
        assert await node.propose("x") == "x"


@pytest.mark.parametrize(
    ("options", "warnings"),
    [
        ({}, 1),
        ({"secret": b"s3cret"}, 0),
    ],
)
def test_node_warns_once_without_secret_or_tls(
    caplog: pytest.LogCaptureFixture, options: dict[str, Any], warnings: int
) -> None:
    caplog.set_level(logging.WARNING, logger="raftio")

    asyncio.run(start_and_propose(**options))

    lines = [rec for rec in caplog.records if WARNING in rec.getMessage()]
    assert len(lines) == warnings
    assert all(rec.levelno == logging.WARNING and rec.name == "raftio.node" for rec in lines)
