"""Sessions over the wire: the attacks of issue 11 on exactly-once, and expiry (real TCP)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from raftio.errors import ProposalTimeoutError
from raftio.kv import KVClient, KVSessionError
from raftio.kv.protocol import encode_frame, read_frame
from raftio.kv.server import KVServer

from .helpers import TOKEN, address, client, close, connect, exchange, kv_service


async def test_a_client_restarted_with_the_same_id_has_every_write_applied() -> None:
    # Before sessions, the restarted client's seq 1 and 2 were answered from
    # the first incarnation's table and never applied.
    async with kv_service(token=TOKEN) as server:
        async with client(server, client_id="worker-1", token=TOKEN) as first:
            await first.append("log", "a")
            await first.append("log", "b")
        async with client(server, client_id="worker-1", token=TOKEN) as again:
            third = await again.append("log", "c")
            fourth = await again.append("log", "d")

    assert (third, fourth) == ("abc", "abcd")
    assert server.machine.data["log"] == "abcd"


async def test_two_clients_sharing_an_id_both_have_their_writes_applied() -> None:
    async with kv_service(token=TOKEN) as server:
        one = client(server, client_id="shared", token=TOKEN)
        two = client(server, client_id="shared", token=TOKEN)
        async with one, two:
            results = [
                await one.append("log", "1"),
                await two.append("log", "2"),
                await one.append("log", "3"),
                await two.append("log", "4"),
            ]

    assert results == ["1", "12", "123", "1234"]  # each its own result, never the other's


async def test_a_forged_large_seq_for_another_session_changes_nothing() -> None:
    async with kv_service(token=TOKEN) as server:
        async with client(server, token=TOKEN) as victim:
            await victim.put("k", "1")
            attacker = await connect(server, TOKEN)
            forged = await exchange(
                attacker,
                {"op": "put", "key": "k", "value": "evil", "session": victim.session,
                 "seq": 2**62},
            )  # fmt: skip
            later = [await victim.put("k", "2"), await victim.append("k", "3")]
            await close(attacker)
        async with client(server, token=TOKEN) as reader:
            value = await reader.get("k")

    assert (forged["ok"], forged["error"]) == (False, "seq_gap")
    assert later == ["2", "23"]
    assert value == "23"


async def test_old_style_client_requests_are_refused_plainly() -> None:
    async with kv_service(token=TOKEN) as server:
        stream = await connect(server, TOKEN)

        reply = await exchange(
            stream, {"op": "put", "key": "k", "value": "v", "client": "old", "seq": 1}
        )
        await close(stream)

    assert reply["error"] == "bad_request"
    assert "session" in reply["message"]
    assert server.machine.data == {}


class ReplyDropper:
    """A proxy that loses the reply to the first write, then runs `meanwhile` before relaying on.

    The write has applied when its reply is lost; `meanwhile` can then change
    the cluster (evict the session) before the client's retry arrives.
    """

    def __init__(self, target: str, meanwhile: Callable[[], Awaitable[None]]) -> None:
        self.target, self.meanwhile = target, meanwhile
        self.dropped = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> str:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        return f"127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()

    async def _relay(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        host, port = self.target.split(":")
        node_r, node_w = await asyncio.open_connection(host, int(port))
        try:
            while (request := await read_frame(client_r)) is not None:
                node_w.write(encode_frame(request))
                reply = await read_frame(node_r)
                if request.get("op") == "put" and not self.dropped:
                    self.dropped += 1
                    await self.meanwhile()
                    return  # the reply is lost with the connection
                client_w.write(encode_frame(reply))
                await client_w.drain()
        finally:
            for writer in (client_w, node_w):
                writer.close()
                with contextlib.suppress(ConnectionError):
                    await writer.wait_closed()


async def evict_everyone(server: KVServer, count: int) -> None:
    stream = await connect(server, TOKEN)
    for _ in range(count):
        assert (await exchange(stream, {"op": "register"}))["ok"]
    await close(stream)


async def test_a_session_expired_while_its_write_was_in_flight_is_an_error_not_a_retry() -> None:
    async with kv_service(token=TOKEN, max_sessions=2) as server:
        dropper = ReplyDropper(address(server), lambda: evict_everyone(server, 2))
        async with dropper as proxy, KVClient([proxy], token=TOKEN) as c:
            with pytest.raises(KVSessionError) as lost:
                await c.put("k", "applied-once")
            await c.put("j", "next")  # in a new session

    assert lost.value.error == "session_expired"
    assert lost.value.maybe_applied  # it did apply: the client says it cannot know
    assert server.machine.data == {"k": "applied-once", "j": "next"}


async def test_a_session_expired_between_writes_is_renewed_transparently() -> None:
    async with kv_service(token=TOKEN, max_sessions=2) as server, client(server, token=TOKEN) as c:
        await c.put("k", "1")
        old = c.session
        await evict_everyone(server, 2)

        written = await c.put("k", "2")  # refused as expired, so surely not applied

    assert written == "2"
    assert c.session != old
    assert server.machine.data == {"k": "2"}


async def test_a_write_that_gave_up_does_not_leave_a_gap_for_the_next() -> None:
    # The first write times out inside the node (no leader can commit it in
    # time); the client abandons that session instead of numbering on past it.
    async with (
        kv_service(token=TOKEN, timeout=0.05) as server,
        client(server, token=TOKEN, deadline=0.3, attempt_timeout=0.2) as c,
    ):
        await c.put("k", "1")
        first_session = c.session
        real_propose = server.node.propose

        async def never(command: Any, *, timeout: float | None = None) -> Any:
            await asyncio.sleep(timeout or 0)
            raise ProposalTimeoutError("test: nothing commits")

        server.node.propose = never  # type: ignore[method-assign]
        with pytest.raises(TimeoutError):
            await c.put("k", "lost")
        server.node.propose = real_propose  # type: ignore[method-assign]
        written = await c.put("k", "2")

    assert written == "2"
    assert c.session != first_session
    assert server.machine.data == {"k": "2"}
