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

and the admin requests (membership and leadership, served by the leader):

    {"op": "members"}                                    -> a members map (`Members`)
    {"op": "member_add", "id": n, "raft_address": "host:port",
     "client_address": "host:port", "voter": true}       -> a members map
    {"op": "member_remove", "id": n}                     -> a members map
    {"op": "transfer", "to": n | null}                   -> the new leader's id

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
Admin requests add two codes: `pending` (retry shortly: another change is
not committed yet, a new member is still catching up, a transfer did not
complete) and `membership` (permanent: the id or address is taken, no such
member, the last voter, not a voter to hand leadership to).

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
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from raftio.codec import CodecError, pack, unpack
from raftio.kv.machine import (
    SEQ_CONFLICT,
    SEQ_GAP,
    SESSION_EXPIRED,
    STALE_SEQ,
    UNKNOWN_SESSION,
)
from raftio.membership import MAX_ADDRESS, MAX_NODE_ID

__all__ = [
    "ADMIN_OPS",
    "AUTH_OPS",
    "BAD_REQUEST",
    "CLOSED",
    "ERRORS",
    "FAILED",
    "LOST",
    "MAX_FRAME",
    "MEMBERSHIP",
    "NOT_LEADER",
    "OPS",
    "PENDING",
    "SEQ_CONFLICT",
    "SEQ_GAP",
    "SESSION_EXPIRED",
    "STALE_SEQ",
    "TIMEOUT",
    "UNAUTHORIZED",
    "UNKNOWN_SESSION",
    "Member",
    "Members",
    "ProtocolError",
    "Request",
    "auth_proof",
    "check_address",
    "check_node_id",
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

ADMIN_OPS = frozenset({"members", "member_add", "member_remove", "transfer"})
OPS = frozenset({"get", "register", "put", "append", "status", "hello", "auth"}) | ADMIN_OPS
AUTH_OPS = frozenset({"hello", "auth"})

NOT_LEADER = "not_leader"  # ask `leader`, or another node if it is null
TIMEOUT = "timeout"  # not applied in time; a retry with the same seq is safe
LOST = "lost"  # leadership changed mid-write; a retry with the same seq is safe
CLOSED = "closed"  # the node is shutting down
BAD_REQUEST = "bad_request"  # the request is malformed; the connection is closed
FAILED = "failed"  # the state machine refused the command
UNAUTHORIZED = "unauthorized"  # authenticate first (or a wrong proof); the connection is closed
PENDING = "pending"  # an admin request that may succeed if retried shortly
MEMBERSHIP = "membership"  # an admin request refused for good (taken, unknown, last voter)
# Session errors (raftio.kv.machine): the write was not applied by this request.
ERRORS = frozenset(
    {NOT_LEADER, TIMEOUT, LOST, CLOSED, BAD_REQUEST, FAILED, UNAUTHORIZED, PENDING, MEMBERSHIP}
    | {UNKNOWN_SESSION, SESSION_EXPIRED, STALE_SEQ, SEQ_GAP, SEQ_CONFLICT}
)
# A host name or IPv4 address (letters, digits, dots, dashes), or a bracketed IPv6 address.
_HOST = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\]")


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
    node_id: int | None = None  # member_add, member_remove: the member; transfer: the target
    raft_address: str = ""  # member_add
    client_address: str = ""  # member_add
    voter: bool = True  # member_add: promote once caught up (else it stays a learner)


@dataclass(frozen=True, slots=True)
class Member:
    node_id: int
    raft_address: str
    client_address: str | None  # None: no node knows it (a member added by other means)


@dataclass(frozen=True, slots=True)
class Members:
    """The configuration a leader reports: the answer to `members`, `member_add`, `member_remove`.

    On the wire: {"voters": [m, ...], "learners": [m, ...], "index": n,
    "committed": bool, "leader": id | null}, each m {"id": n, "raft_address":
    "host:port", "client_address": "host:port" | null}, sorted by id.
    """

    voters: list[Member] = field(default_factory=list)
    learners: list[Member] = field(default_factory=list)
    index: int = 0  # of the configuration's entry (0: the first configuration)
    committed: bool = False
    leader: int | None = None

    def to_wire(self) -> dict[str, Any]:
        return {
            "voters": [_member_to_wire(m) for m in self.voters],
            "learners": [_member_to_wire(m) for m in self.learners],
            "index": self.index,
            "committed": self.committed,
            "leader": self.leader,
        }

    @classmethod
    def from_wire(cls, obj: Any) -> Members:
        """Parse a members map; ProtocolError if it is not one."""
        if not isinstance(obj, Mapping):
            raise ProtocolError(f"a members reply must be a map, not {obj!r:.60}")
        index, committed, leader = obj.get("index"), obj.get("committed"), obj.get("leader")
        if type(index) is not int or index < 0 or type(committed) is not bool:
            raise ProtocolError("a members reply needs an index and committed")
        if leader is not None:
            check_node_id(leader, "leader")
        voters, learners = obj.get("voters"), obj.get("learners")
        if not isinstance(voters, list) or not isinstance(learners, list):
            raise ProtocolError("a members reply needs voters and learners lists")
        return cls(
            [_member_from_wire(m) for m in voters],
            [_member_from_wire(m) for m in learners],
            index,
            committed,
            leader,
        )

    def role(self, node_id: int) -> str | None:
        """The role of `node_id`: "voter", "learner", or None if it is not a member."""
        if any(m.node_id == node_id for m in self.voters):
            return "voter"
        if any(m.node_id == node_id for m in self.learners):
            return "learner"
        return None

    def member(self, node_id: int) -> Member | None:
        return next((m for m in [*self.voters, *self.learners] if m.node_id == node_id), None)


def _member_to_wire(m: Member) -> dict[str, Any]:
    return {"id": m.node_id, "raft_address": m.raft_address, "client_address": m.client_address}


def _member_from_wire(obj: Any) -> Member:
    if not isinstance(obj, Mapping):
        raise ProtocolError(f"a member must be a map, not {obj!r:.60}")
    client = obj.get("client_address")
    return Member(
        check_node_id(obj.get("id"), "id"),
        check_address(obj.get("raft_address"), "raft_address"),
        None if client is None else check_address(client, "client_address"),
    )


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
    if op in ("status", "register", "members"):
        return Request(op)
    if op in ADMIN_OPS:
        return _admin_request(op, obj)
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


def _admin_request(op: str, obj: dict[Any, Any]) -> Request:
    if op == "transfer":
        to = obj.get("to")
        return Request(op, node_id=None if to is None else check_node_id(to, "to"))
    node_id = check_node_id(obj.get("id"), "id")
    if op == "member_remove":
        return Request(op, node_id=node_id)
    voter = obj.get("voter", True)
    if type(voter) is not bool:
        raise ProtocolError("voter must be true or false")
    raft_address = check_address(obj.get("raft_address"), "raft_address")
    client_address = check_address(obj.get("client_address"), "client_address")
    if raft_address == client_address:
        raise ProtocolError("raft_address and client_address must differ")
    return Request(
        op, node_id=node_id, raft_address=raft_address, client_address=client_address, voter=voter
    )


def check_node_id(value: Any, name: str = "id") -> int:
    """A node id: an int in 0..MAX_NODE_ID (not a bool); ProtocolError otherwise."""
    if type(value) is not int or not 0 <= value <= MAX_NODE_ID:
        raise ProtocolError(f"{name} must be an integer in 0..{MAX_NODE_ID}")
    return value


def check_address(value: Any, name: str = "address") -> str:
    """A "host:port": a host name, IPv4 or [IPv6] address and a port in 1..65535."""
    if not isinstance(value, str) or not 0 < len(value.encode()) <= MAX_ADDRESS:
        raise ProtocolError(f"{name} must be a host:port string of at most {MAX_ADDRESS} bytes")
    host, sep, port = value.rpartition(":")
    if not (sep and _HOST.fullmatch(host) and port.isascii() and port.isdigit() and len(port) <= 5):
        raise ProtocolError(f"{name} {value!r:.80} is not host:port (e.g. 127.0.0.1:7100)")
    if not 0 < int(port) < 65536:
        raise ProtocolError(f"{name} {value!r:.80}: port {port} is out of range (1-65535)")
    return value


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
