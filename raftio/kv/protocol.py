"""The KV client protocol: frames, requests and replies. No sockets are opened here.

A frame is a 4-byte big-endian unsigned length, then that many bytes of
msgpack (`raftio.codec.pack`), at most `MAX_FRAME` bytes. A connection
carries one request at a time: the client writes a request frame and reads
one reply frame.

Requests are maps:

    {"op": "get",      "key": k}
    {"op": "register"}                                   -> a session id (str)
    {"op": "put",      "key": k, "value": v, "session": s, "seq": n}
    {"op": "append",   "key": k, "value": v, "session": s, "seq": n}
    {"op": "status"}
    {"op": "hello",    "nonce": <16-64 bytes>}           (authentication, below)
    {"op": "auth",     "proof": <32 bytes>}

Keys, values and session ids are str. A writer registers once, then numbers
its writes 1, 2, 3... in that session, one at a time, resending the same
seq when it retries (`raftio.kv.machine` says how each seq is judged). A
write that would leave a value longer than `raftio.kv.machine.MAX_VALUE`
characters is refused (`failed`). Writes that name a `client` instead of a
`session` (the protocol before sessions) are refused with `bad_request`.
Replies are maps:

    {"ok": true,  "value": <the key's value, a session id, or a status map>}
    {"ok": false, "error": <one of ERRORS>, "leader": "host:port" | null, "message": str}

`leader` names the client address of the node believed to lead. A frame
that is not a well-formed request is answered with `bad_request` and the
connection is closed; a frame too large or cut short just closes it.

Authentication. A server given a token serves nothing before the
connection proves it knows the token; anything else is answered
`unauthorized` and the connection closed. The client sends `hello` with a
fresh random nonce; the server answers `{"nonce": server_nonce, "proof":
server_proof}` (without a token: `{"nonce": null, "proof": null}`); the
client checks the server's proof, then sends `auth` with its own:

    transcript(label) = msgpack([label, 1, client_nonce, server_nonce])
    server_proof = HMAC-SHA256(token, transcript("raftio-kv-server"))
    client_proof = HMAC-SHA256(token, transcript("raftio-kv-client"))

Proofs are compared in constant time. The token never travels; fresh nonces
stop replays and the labels stop a proof from being reflected back. Frames
after the handshake are neither encrypted nor integrity-protected.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import struct
from dataclasses import dataclass
from typing import Any

from raftio.codec import CodecError, pack, unpack
from raftio.kv.machine import (
    SEQ_CONFLICT,
    SEQ_GAP,
    SESSION_EXPIRED,
    STALE_SEQ,
    UNKNOWN_SESSION,
)

__all__ = [
    "AUTH_OPS",
    "BAD_REQUEST",
    "CLOSED",
    "ERRORS",
    "FAILED",
    "LOST",
    "MAX_FRAME",
    "NOT_LEADER",
    "OPS",
    "SEQ_CONFLICT",
    "SEQ_GAP",
    "SESSION_EXPIRED",
    "STALE_SEQ",
    "TIMEOUT",
    "UNAUTHORIZED",
    "UNKNOWN_SESSION",
    "ProtocolError",
    "Request",
    "auth_proof",
    "encode_frame",
    "error_reply",
    "ok_reply",
    "parse_request",
    "read_frame",
]

HEADER = struct.Struct(">I")
MAX_FRAME = 1 << 20
MAX_SESSION_ID = 128
NONCE_BYTES = (16, 64)
PROOF_BYTES = 32

OPS = frozenset({"get", "register", "put", "append", "status", "hello", "auth"})
AUTH_OPS = frozenset({"hello", "auth"})

NOT_LEADER = "not_leader"  # ask `leader`, or another node if it is null
TIMEOUT = "timeout"  # not applied in time; a retry with the same seq is safe
LOST = "lost"  # leadership changed mid-write; a retry with the same seq is safe
CLOSED = "closed"  # the node is shutting down
BAD_REQUEST = "bad_request"  # the request is malformed; the connection is closed
FAILED = "failed"  # the state machine refused the command
UNAUTHORIZED = "unauthorized"  # authenticate first (or a wrong proof); the connection is closed
# Session errors (raftio.kv.machine): the write was not applied by this request.
ERRORS = frozenset(
    {NOT_LEADER, TIMEOUT, LOST, CLOSED, BAD_REQUEST, FAILED, UNAUTHORIZED}
    | {UNKNOWN_SESSION, SESSION_EXPIRED, STALE_SEQ, SEQ_GAP, SEQ_CONFLICT}
)


class ProtocolError(ValueError):
    """Bytes or a request that break the protocol."""


@dataclass(frozen=True, slots=True)
class Request:
    op: str
    key: str = ""
    value: str = ""
    session: str = ""
    seq: int = 0
    nonce: bytes = b""
    proof: bytes = b""


def encode_frame(obj: Any) -> bytes:
    body = pack(obj)
    if len(body) > MAX_FRAME:
        raise ProtocolError(f"frame of {len(body)} bytes exceeds {MAX_FRAME}")
    return HEADER.pack(len(body)) + body


async def read_frame(reader: asyncio.StreamReader) -> Any | None:
    """The next frame's decoded value; None at a clean end of stream.

    Raises ProtocolError for an oversized, truncated or undecodable frame.
    """
    try:
        header = await reader.readexactly(HEADER.size)
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            raise ProtocolError("stream ended inside a frame header") from None
        return None
    (size,) = HEADER.unpack(header)
    if size > MAX_FRAME:
        raise ProtocolError(f"frame of {size} bytes exceeds {MAX_FRAME}")
    try:
        body = await reader.readexactly(size)
    except asyncio.IncompleteReadError:
        raise ProtocolError("stream ended inside a frame") from None
    return decode_body(body)


def decode_body(body: bytes) -> Any:
    """A frame body's value; ProtocolError if it is not msgpack."""
    try:
        return unpack(body)
    except CodecError as exc:
        raise ProtocolError(str(exc)) from None


def parse_request(obj: Any) -> Request:
    """Validate a decoded request frame; raises ProtocolError naming the problem."""
    if not isinstance(obj, dict):
        raise ProtocolError("a request must be a map")
    op = obj.get("op")
    if not isinstance(op, str) or op not in OPS:  # a list or map is unhashable: check first
        raise ProtocolError(f"unknown op {op!r:.40}")
    if op in ("status", "register"):
        return Request(op)
    if op == "hello":
        return Request(op, nonce=_bytes(obj, "nonce", *NONCE_BYTES))
    if op == "auth":
        return Request(op, proof=_bytes(obj, "proof", PROOF_BYTES, PROOF_BYTES))
    key = _field(obj, "key", str)
    if op == "get":
        return Request(op, key)
    value, session, seq = _field(obj, "value", str), obj.get("session"), obj.get("seq")
    if session is None and "client" in obj:
        raise ProtocolError("writes carry a session from {op: register}, not a client id")
    if not isinstance(session, str) or not 0 < len(session) <= MAX_SESSION_ID:
        raise ProtocolError(f"session must be a str of 1..{MAX_SESSION_ID} characters")
    if type(seq) is not int or not 0 < seq < 1 << 63:
        raise ProtocolError("seq must be a positive integer below 2**63")
    return Request(op, key, value, session, seq)


def _field(obj: dict[Any, Any], name: str, kind: type[str]) -> str:
    value = obj.get(name)
    if not isinstance(value, kind):
        raise ProtocolError(f"{name} must be a {kind.__name__}")
    return value


def _bytes(obj: dict[Any, Any], name: str, least: int, most: int) -> bytes:
    value = obj.get(name)
    if not isinstance(value, bytes) or not least <= len(value) <= most:
        raise ProtocolError(f"{name} must be {least}..{most} bytes")
    return value


def auth_proof(token: bytes, label: str, client_nonce: bytes, server_nonce: bytes) -> bytes:
    """HMAC-SHA256 of the handshake transcript under `label` (see the module docstring)."""
    transcript = pack([label, 1, client_nonce, server_nonce])
    return hmac.new(token, transcript, hashlib.sha256).digest()


def ok_reply(value: Any) -> dict[str, Any]:
    return {"ok": True, "value": value}


def error_reply(error: str, message: str = "", leader: str | None = None) -> dict[str, Any]:
    return {"ok": False, "error": error, "leader": leader, "message": message}
