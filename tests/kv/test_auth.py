"""The KV port's token: nothing is served before a connection proves it holds it (real TCP)."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import pytest

from raftio.kv import KVClient, KVNode, KVRequestError
from raftio.kv.local import free_ports
from raftio.kv.protocol import auth_proof, encode_frame

from .helpers import TOKEN, client, close, closed_by_server, connect, exchange, header, kv_service


@pytest.mark.parametrize(
    "request_",
    [
        {"op": "status"},
        {"op": "get", "key": "k"},
        {"op": "register"},
        {"op": "put", "key": "k", "value": "v", "session": "1.x", "seq": 1},
        {"op": "auth", "proof": b"\0" * 32},  # auth before hello
    ],
    ids=["status", "get", "register", "put", "auth-first"],
)
async def test_a_request_before_authentication_is_unauthorized_and_closes(
    request_: dict[str, Any],
) -> None:
    async with kv_service(token=TOKEN) as server:
        stream = await connect(server)

        reply = await exchange(stream, request_)
        closed = await closed_by_server(stream)
        await close(stream)

    assert (reply["ok"], reply["error"]) == (False, "unauthorized")
    assert closed
    assert server.machine.data == {}


async def test_a_wrong_proof_is_unauthorized_and_the_token_never_travels() -> None:
    async with kv_service(token=TOKEN) as server:
        stream = await connect(server)
        nonce = secrets.token_bytes(16)

        hello = await exchange(stream, {"op": "hello", "nonce": nonce})
        wrong = auth_proof(b"not the token", "raftio-kv-client", nonce, hello["value"]["nonce"])
        verdict = await exchange(stream, {"op": "auth", "proof": wrong})
        closed = await closed_by_server(stream)
        await close(stream)

    assert TOKEN not in repr(hello).encode()
    assert hello["value"]["proof"] == auth_proof(
        TOKEN, "raftio-kv-server", nonce, hello["value"]["nonce"]
    )
    assert verdict["error"] == "unauthorized"
    assert closed


async def test_a_proof_replayed_on_another_connection_is_refused() -> None:
    # A fresh server nonce per connection: what was overheard once is useless.
    async with kv_service(token=TOKEN) as server:
        first = await connect(server)
        nonce = secrets.token_bytes(16)
        hello = await exchange(first, {"op": "hello", "nonce": nonce})
        proof = auth_proof(TOKEN, "raftio-kv-client", nonce, hello["value"]["nonce"])
        assert (await exchange(first, {"op": "auth", "proof": proof}))["ok"]

        second = await connect(server)
        await exchange(second, {"op": "hello", "nonce": nonce})  # same client nonce
        replayed = await exchange(second, {"op": "auth", "proof": proof})
        reflected = await connect(server)
        hello3 = await exchange(reflected, {"op": "hello", "nonce": nonce})
        # The server's own proof sent back as the client's: the labels differ.
        mirrored = await exchange(reflected, {"op": "auth", "proof": hello3["value"]["proof"]})
        await close(first, second, reflected)

    assert replayed["error"] == "unauthorized"
    assert mirrored["error"] == "unauthorized"


@pytest.mark.parametrize(
    "data",
    [
        encode_frame({"op": "hello", "nonce": b"short"}),
        encode_frame({"op": "hello", "nonce": "not bytes" * 4}),
        encode_frame({"op": "hello"}),
        encode_frame({"op": "auth", "proof": b"\0" * 31}),
        header(257) + b"x" * 257,  # over the 256 bytes a pending connection may send
        header(1 << 20),  # a 1 MiB frame announced before authenticating
        b"\xff\xff\xff\xff",
        header(3) + b"\xc1\xc1\xc1",
    ],
    ids=["short-nonce", "str-nonce", "no-nonce", "short-proof", "257-bytes", "1MiB", "4GiB",
         "undecodable"],
)  # fmt: skip
async def test_hostile_handshake_frames_close_the_connection_and_the_port_serves_on(
    data: bytes,
) -> None:
    async with kv_service(token=TOKEN) as server:
        stream = await connect(server)
        stream[1].write(data)

        closed = await closed_by_server(stream)
        async with client(server, token=TOKEN) as good:
            written = await good.put("after", "ok")
        await close(stream)

    assert closed
    assert written == "ok"
    assert server.buffered == 0


async def test_the_client_authenticates_and_refuses_a_server_that_cannot_prove_the_token() -> None:
    async with kv_service(token=TOKEN) as server:
        async with client(server, token=TOKEN) as good:
            written = await good.put("k", "v")
            status = await good.status()
        async with client(server, token=b"another token", deadline=2.0) as wrong:
            with pytest.raises(KVRequestError) as wrong_token:
                await wrong.get("k")
        async with client(server, deadline=2.0) as tokenless:
            with pytest.raises(KVRequestError) as no_token:
                await tokenless.status()
    async with kv_service() as open_server, client(open_server, token=TOKEN) as careful:
        with pytest.raises(KVRequestError) as unproven:
            await careful.get("k")

    assert (written, status["keys"]) == ("v", 1)
    assert wrong_token.value.error == "unauthorized"
    assert "does not hold our token" in str(wrong_token.value)
    assert no_token.value.error == "unauthorized"
    assert unproven.value.error == "unauthorized"
    assert "asked for no token" in str(unproven.value)


async def test_without_a_token_the_port_serves_as_before() -> None:
    async with kv_service() as server:
        stream = await connect(server)

        status = await exchange(stream, {"op": "status"})
        hello = await exchange(stream, {"op": "hello", "nonce": b"n" * 16})
        await close(stream)

    assert status["ok"]
    assert status["value"]["role"] == "leader"
    assert hello == {"ok": True, "value": None}  # admitted already: the handshake is moot


@pytest.mark.parametrize(
    ("kv_token", "client_token", "served"),
    [
        ("default", TOKEN, True),  # the node's secret protects the client port too
        ("default", None, False),
        (b"another-kv-token-0123456789abcdef", TOKEN, False),
        (b"another-kv-token-0123456789abcdef", b"another-kv-token-0123456789abcdef", True),
        (None, None, True),  # explicitly open
    ],
    ids=["secret", "secret-no-client-token", "own-token-wrong", "own-token", "open"],
)
async def test_kv_node_takes_its_secret_as_the_token_unless_told_otherwise(
    tmp_path: Path, kv_token: Any, client_token: bytes | None, served: bool
) -> None:
    raft_port, client_port = free_ports(2)
    options = {} if kv_token == "default" else {"kv_token": kv_token}
    node = KVNode(0, [f"127.0.0.1:{raft_port}"], [f"127.0.0.1:{client_port}"], tmp_path,
                  secret=TOKEN, **options)  # fmt: skip

    async with node, KVClient([f"127.0.0.1:{client_port}"], token=client_token) as c:
        try:
            outcome: Any = await c.put("k", "v")
        except KVRequestError as exc:
            outcome = exc.error

    assert outcome == ("v" if served else "unauthorized")


@pytest.mark.parametrize("op", [[1], {}, {"a": 1}, None, 7, b"put"], ids=repr)
async def test_a_request_whose_op_is_not_a_string_is_a_bad_request(op: Any) -> None:
    # Fuzz finding K1: a list or map op raised TypeError inside the connection task.
    async with kv_service() as server:
        stream = await connect(server)

        reply = await exchange(stream, {"op": op, "key": "k"})
        closed = await closed_by_server(stream)
        await close(stream)

    assert reply["error"] == "bad_request"
    assert closed
