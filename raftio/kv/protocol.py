"""The KV client protocol: frames, requests and replies. No sockets are opened here.

A frame is a 4-byte big-endian unsigned length, then that many bytes of
msgpack (`raftio.codec.pack`), at most `MAX_FRAME` bytes. A connection
carries one request at a time: the client writes a request frame and reads
one reply frame.

Requests are maps:

    {"op": "get",    "key": k}
    {"op": "put",    "key": k, "value": v, "client": c, "seq": n}
    {"op": "append", "key": k, "value": v, "client": c, "seq": n}
    {"op": "status"}

Keys, values and client ids are str; `seq` is the client's write number,
counting from 1. A write that would leave a value longer than
`raftio.kv.machine.MAX_VALUE` characters is refused (`failed`). Replies are maps:

    {"ok": true,  "value": <the key's value, or a status map>}
    {"ok": false, "error": <one of ERRORS>, "leader": "host:port" | null, "message": str}

`leader` names the client address of the node believed to lead. A frame
that is not a well-formed request is answered with `bad_request` and the
connection is closed; a frame too large or cut short just closes it.
"""

from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass
from typing import Any

from raftio.codec import CodecError, pack, unpack

__all__ = [
    "BAD_REQUEST",
    "CLOSED",
    "ERRORS",
    "FAILED",
    "LOST",
    "MAX_FRAME",
    "NOT_LEADER",
    "OPS",
    "TIMEOUT",
    "ProtocolError",
    "Request",
    "encode_frame",
    "error_reply",
    "ok_reply",
    "parse_request",
    "read_frame",
]

HEADER = struct.Struct(">I")
MAX_FRAME = 1 << 20
MAX_CLIENT_ID = 128

OPS = frozenset({"get", "put", "append", "status"})

NOT_LEADER = "not_leader"  # ask `leader`, or another node if it is null
TIMEOUT = "timeout"  # not applied in time; a retry with the same seq is safe
LOST = "lost"  # leadership changed mid-write; a retry with the same seq is safe
CLOSED = "closed"  # the node is shutting down
BAD_REQUEST = "bad_request"  # the request is malformed; the connection is closed
FAILED = "failed"  # the state machine refused the command
ERRORS = frozenset({NOT_LEADER, TIMEOUT, LOST, CLOSED, BAD_REQUEST, FAILED})


class ProtocolError(ValueError):
    """Bytes or a request that break the protocol."""


@dataclass(frozen=True, slots=True)
class Request:
    op: str
    key: str = ""
    value: str = ""
    client: str = ""
    seq: int = 0


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
    try:
        return unpack(body)
    except CodecError as exc:
        raise ProtocolError(str(exc)) from None


def parse_request(obj: Any) -> Request:
    """Validate a decoded request frame; raises ProtocolError naming the problem."""
    if not isinstance(obj, dict):
        raise ProtocolError("a request must be a map")
    op = obj.get("op")
    if op not in OPS:
        raise ProtocolError(f"unknown op {op!r:.40}")
    if op == "status":
        return Request(op)
    key = _field(obj, "key", str)
    if op == "get":
        return Request(op, key)
    value, client, seq = _field(obj, "value", str), _field(obj, "client", str), obj.get("seq")
    if not 0 < len(client) <= MAX_CLIENT_ID:
        raise ProtocolError(f"client id must be 1..{MAX_CLIENT_ID} characters")
    if type(seq) is not int or seq < 1:
        raise ProtocolError("seq must be a positive integer")
    return Request(op, key, value, client, seq)


def _field(obj: dict[Any, Any], name: str, kind: type[str]) -> str:
    value = obj.get(name)
    if not isinstance(value, kind):
        raise ProtocolError(f"{name} must be a {kind.__name__}")
    return value


def ok_reply(value: Any) -> dict[str, Any]:
    return {"ok": True, "value": value}


def error_reply(error: str, message: str = "", leader: str | None = None) -> dict[str, Any]:
    return {"ok": False, "error": error, "leader": leader, "message": message}
