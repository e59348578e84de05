"""A write retried with the same (session, seq) is applied once, over the wire and in snapshots."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from raftio.kv import KVStateMachine
from raftio.kv.local import LocalCluster
from raftio.kv.machine import register_command, write_command
from raftio.kv.protocol import encode_frame, read_frame
from raftio.node import parse_address

from .conftest import kv_client, open_authenticated, wait_leader

# The token handshake's requests and the session's registration: relayed, never dropped.
HANDSHAKE = ("hello", "auth", "register")


async def leader_address(cluster: LocalCluster) -> str:
    return cluster.spec.client_peers[await wait_leader(cluster)]


async def send_frames(
    address: str, requests: list[dict[str, Any]], token: bytes | None
) -> list[Any]:
    """One authenticated connection; each request then its reply, in turn."""
    reader, writer = await open_authenticated(address, token)
    try:
        replies = []
        for request in requests:
            writer.write(encode_frame(request))
            replies.append(await read_frame(reader))
        return replies
    finally:
        writer.close()
        await writer.wait_closed()


class ReplyDropper:
    """A proxy to one node that forwards requests but loses the first `drops` replies.

    Losing a reply closes the client's connection, as a crash or network cut
    would after the node applied the write.
    """

    def __init__(self, target: str, drops: int) -> None:
        self.target, self.drops = target, drops
        self.requests: list[Any] = []
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> str:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        return f"127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _relay(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        node_r, node_w = await asyncio.open_connection(*parse_address(self.target))
        try:
            while (request := await read_frame(client_r)) is not None:
                node_w.write(encode_frame(request))
                reply = await read_frame(node_r)
                if request.get("op") in HANDSHAKE:
                    client_w.write(encode_frame(reply))
                    continue
                self.requests.append(request)
                if self.drops > 0:
                    self.drops -= 1
                    return
                client_w.write(encode_frame(reply))
                await client_w.drain()
        finally:
            for writer in (client_w, node_w):
                writer.close()
                with contextlib.suppress(ConnectionError):
                    await writer.wait_closed()


async def test_a_duplicated_request_applies_once(shared_cluster: LocalCluster) -> None:
    address, token = await leader_address(shared_cluster), shared_cluster.spec.secret()
    [registered] = await send_frames(address, [{"op": "register"}], token)
    write = {"op": "append", "key": "dup", "value": "x", "session": registered["value"], "seq": 1}
    second = {**write, "value": "y", "seq": 2}

    requests = [write, write, second, write, {"op": "get", "key": "dup"}]
    replies = await send_frames(address, requests, token)

    assert [reply.get("value") for reply in replies] == ["x", "x", "xy", None, "xy"]
    # The stale copy of seq 1 after seq 2 changes nothing and is refused (before
    # sessions it was answered ok None).
    assert (replies[3]["ok"], replies[3]["error"]) == (False, "stale_seq")


async def test_client_retries_a_lost_reply_and_the_write_applies_once(
    shared_cluster: LocalCluster,
) -> None:
    leader = await leader_address(shared_cluster)
    dropper = ReplyDropper(leader, drops=2)

    async with dropper as proxy, kv_client(shared_cluster, [proxy]) as client:
        first = await client.append("lost-replies", "a")
        second = await client.append("lost-replies", "b")
    async with kv_client(shared_cluster) as reader:
        value = await reader.get("lost-replies")

    seqs = [r["seq"] for r in dropper.requests]
    assert seqs == [1, 1, 1, 2]  # three sends of the first write, one of the second
    assert (first, second, value) == ("a", "ab", "ab")


def test_the_session_table_survives_a_snapshot() -> None:
    machine = KVStateMachine()
    session = machine.apply(register_command("n0nce"))
    machine.apply(write_command("append", "k", "a", session, 1))
    machine.apply(write_command("append", "k", "b", session, 2))

    restored = KVStateMachine()
    restored.restore(machine.snapshot())
    retry = restored.apply(write_command("append", "k", "b", session, 2))
    fresh = restored.apply(write_command("append", "k", "c", session, 3))

    assert retry == "ab"
    assert fresh == "abc"
    assert restored.data == {"k": "abc"}
    assert restored.sessions[session].seq == 3
