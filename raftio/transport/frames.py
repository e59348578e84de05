"""Wire framing and the connection handshake of the TCP transport (docs/wire.md).

Owns the byte layout: the 9-byte frame header, the frame kinds and which
message class each carries, the incremental `FrameReader` that cuts a byte
stream into frames, the handshake payloads and HMAC-SHA256 proofs (with
per-node pair keys), and the check that a TLS certificate names the node id
a client claims. Pure (no sockets, no clock, no asyncio), so it can be
fuzzed directly; the asyncio protocol both ends build on is
`frame_protocol.FrameProtocol`. Never imports msgpack (codec.py does the
msgpack).

A frame is ``length:u32 | kind:u8 | request_id:u32 | payload``, big-endian,
where ``length`` counts every byte after itself (so it is at least 5).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from raftio.codec import CodecError, pack, unpack
from raftio.messages import (
    AppendEntriesArgs,
    AppendEntriesReply,
    InstallSnapshotArgs,
    InstallSnapshotReply,
    Message,
    RequestVoteArgs,
    RequestVoteReply,
    TimeoutNowArgs,
    TimeoutNowReply,
)
from raftio.transport.base import APPEND_ENTRIES, INSTALL_SNAPSHOT, REQUEST_VOTE, TIMEOUT_NOW

__all__ = [
    "DEFAULT_MAX_FRAME",
    "HANDSHAKE_MAX_FRAME",
    "HEADER",
    "PROTOCOL_VERSION",
    "RPC_BY_KIND",
    "RPC_BY_METHOD",
    "FrameError",
    "FrameReader",
    "Hello",
    "Refused",
    "Welcome",
    "cert_names",
    "cert_node_ids",
    "check_cert_identity",
    "client_proof",
    "encode_frame",
    "new_nonce",
    "pair_key",
    "parse_auth",
    "parse_hello",
    "parse_refuse",
    "parse_welcome",
    "server_proof",
]

PROTOCOL_VERSION = 1
MAGIC = "raftio"

# Frame kinds. Handshake and refusal frames carry request id 0.
HELLO, WELCOME, AUTH, REFUSE = 0x01, 0x02, 0x03, 0x04
REQUEST_VOTE_KIND, APPEND_ENTRIES_KIND, INSTALL_SNAPSHOT_KIND = 0x10, 0x11, 0x12
TIMEOUT_NOW_KIND = 0x13
REPLY, NO_REPLY = 0x20, 0x21


@dataclass(frozen=True, slots=True)
class Rpc:
    """One RPC: its ClientEnd method name, request frame kind and message classes."""

    method: str
    kind: int
    args_cls: type[Message]
    reply_cls: type[Message]


_RPCS = (
    Rpc(REQUEST_VOTE, REQUEST_VOTE_KIND, RequestVoteArgs, RequestVoteReply),
    Rpc(APPEND_ENTRIES, APPEND_ENTRIES_KIND, AppendEntriesArgs, AppendEntriesReply),
    Rpc(INSTALL_SNAPSHOT, INSTALL_SNAPSHOT_KIND, InstallSnapshotArgs, InstallSnapshotReply),
    Rpc(TIMEOUT_NOW, TIMEOUT_NOW_KIND, TimeoutNowArgs, TimeoutNowReply),
)
RPC_BY_METHOD = {rpc.method: rpc for rpc in _RPCS}
RPC_BY_KIND = {rpc.kind: rpc for rpc in _RPCS}

HEADER = struct.Struct(">IBI")
HEADER_SIZE = HEADER.size  # 9
BODY_MIN = HEADER_SIZE - 4  # kind + request id: a frame's smallest length
_LENGTH = struct.Struct(">I")
_KIND_ID = struct.Struct(">BI")

DEFAULT_MAX_FRAME = 64 * 1024 * 1024  # largest request a server takes (snapshots)
# Until a peer has authenticated it may not make us buffer more than this.
HANDSHAKE_MAX_FRAME = 4096
NONCE_SIZE = 16
MAX_REQUEST_ID = 0xFFFFFFFF


class FrameError(ValueError):
    """The byte stream broke the framing or handshake rules; drop the connection."""


def encode_frame(kind: int, request_id: int, payload: bytes = b"") -> bytes:
    """One whole frame; the hot path packs `HEADER` itself to skip the concatenation."""
    return HEADER.pack(len(payload) + BODY_MIN, kind, request_id) + payload


class FrameReader:
    """Cuts a byte stream into ``(kind, request_id, payload)`` frames.

    Feed it chunks as they arrive, then call `next_frame()` until it returns
    None. A declared length above `max_frame` (or below the 5-byte minimum)
    raises `FrameError` as soon as the 4 length bytes are in, before any of
    the body is buffered.
    """

    __slots__ = ("_buf", "_pos", "max_frame")

    def __init__(self, max_frame: int) -> None:
        self.max_frame = max_frame
        self._buf = bytearray()
        self._pos = 0  # start of the first unconsumed byte in _buf

    def feed(self, data: bytes) -> None:
        if self._pos:
            # Compact once per chunk, not once per frame, so a chunk holding
            # many small frames costs linear time.
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += data

    def buffered(self) -> int:
        """Bytes received but not yet returned as frames."""
        return len(self._buf) - self._pos

    def discard(self) -> None:
        """Forget (and free) whatever is buffered: the connection is being dropped."""
        self._buf = bytearray()
        self._pos = 0

    def next_frame(self) -> tuple[int, int, bytes] | None:
        buf, pos = self._buf, self._pos
        available = len(buf) - pos
        if available < 4:
            return None
        (length,) = _LENGTH.unpack_from(buf, pos)
        if length < BODY_MIN or length > self.max_frame:
            raise FrameError(f"frame length {length} outside [{BODY_MIN}, {self.max_frame}]")
        end = pos + 4 + length
        if len(buf) < end:
            return None
        kind, request_id = _KIND_ID.unpack_from(buf, pos + 4)
        payload = bytes(buf[pos + HEADER_SIZE : end])
        if end == len(buf):
            buf.clear()
            self._pos = 0
        else:
            self._pos = end
        return kind, request_id, payload


# --- handshake -----------------------------------------------------------------
#
# client -> HELLO   [magic, version, cluster_id, node_id, client_nonce]
# server -> WELCOME [version, cluster_id, node_id, server_nonce, server_proof, max_frame]
# client -> AUTH    [client_proof]            (then requests, without waiting)
# either -> REFUSE  [reason]                  (then closes)


@dataclass(frozen=True, slots=True)
class Hello:
    version: int
    cluster_id: str
    node_id: int
    nonce: bytes


@dataclass(frozen=True, slots=True)
class Welcome:
    version: int
    cluster_id: str
    node_id: int
    nonce: bytes
    proof: bytes
    max_frame: int


class Refused(Exception):
    """A handshake that one side declined; `reason` is what both sides log."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def new_nonce() -> bytes:
    return secrets.token_bytes(NONCE_SIZE)


def hello_payload(cluster_id: str, node_id: int, nonce: bytes) -> bytes:
    return pack([MAGIC, PROTOCOL_VERSION, cluster_id, node_id, nonce])


def welcome_payload(
    cluster_id: str, node_id: int, nonce: bytes, proof: bytes, max_frame: int
) -> bytes:
    return pack([PROTOCOL_VERSION, cluster_id, node_id, nonce, proof, max_frame])


def auth_payload(proof: bytes) -> bytes:
    return pack([proof])


def refuse_payload(reason: str) -> bytes:
    return pack([reason[:1000]])


def _fields(payload: bytes, what: str) -> list[Any]:
    try:
        obj = unpack(payload)
    except CodecError as exc:
        raise FrameError(f"undecodable {what}: {exc}") from None
    if not isinstance(obj, list):
        raise FrameError(f"{what} must be an array")
    return obj


def _check_types(fields: list[Any], types: tuple[type, ...], what: str) -> None:
    if len(fields) != len(types) or any(
        type(v) is not t for v, t in zip(fields, types, strict=False)
    ):
        raise FrameError(f"malformed {what}")


def parse_hello(payload: bytes) -> Hello:
    """Raises FrameError if malformed, Refused on a protocol version we do not speak."""
    fields = _fields(payload, "HELLO")
    if len(fields) < 2 or fields[0] != MAGIC or type(fields[1]) is not int:
        raise FrameError("not a raftio HELLO")
    if fields[1] != PROTOCOL_VERSION:
        raise Refused(
            f"protocol version mismatch: client speaks {fields[1]}, "
            f"server speaks {PROTOCOL_VERSION}"
        )
    _check_types(fields, (str, int, str, int, bytes), "HELLO")
    if len(fields[4]) != NONCE_SIZE:
        raise FrameError("HELLO nonce has the wrong size")
    return Hello(fields[1], fields[2], fields[3], fields[4])


def parse_welcome(payload: bytes) -> Welcome:
    fields = _fields(payload, "WELCOME")
    if fields and type(fields[0]) is int and fields[0] != PROTOCOL_VERSION:
        raise Refused(
            f"protocol version mismatch: server speaks {fields[0]}, "
            f"client speaks {PROTOCOL_VERSION}"
        )
    _check_types(fields, (int, str, int, bytes, bytes, int), "WELCOME")
    if len(fields[3]) != NONCE_SIZE or fields[5] <= BODY_MIN:
        raise FrameError("malformed WELCOME")
    return Welcome(*fields)


def parse_auth(payload: bytes) -> bytes:
    fields = _fields(payload, "AUTH")
    _check_types(fields, (bytes,), "AUTH")
    return bytes(fields[0])


def parse_refuse(payload: bytes) -> str:
    try:
        fields = _fields(payload, "REFUSE")
        _check_types(fields, (str,), "REFUSE")
    except FrameError:
        return "(unreadable reason)"
    return str(fields[0])[:1000]


def _proof(
    secret: bytes, label: str, cluster_id: str, client: Hello, server_id: int, server_nonce: bytes
) -> bytes:
    # Both ids, both nonces and a direction label: a proof cannot be replayed on
    # another connection, reflected back, or moved to another cluster or peer.
    transcript = pack(
        [label, PROTOCOL_VERSION, cluster_id, client.node_id, server_id, client.nonce, server_nonce]
    )
    return hmac.new(secret, transcript, hashlib.sha256).digest()


def server_proof(
    secret: bytes, cluster_id: str, client: Hello, server_id: int, server_nonce: bytes
) -> bytes:
    return _proof(secret, "raftio-server", cluster_id, client, server_id, server_nonce)


def client_proof(
    secret: bytes, cluster_id: str, client: Hello, server_id: int, server_nonce: bytes
) -> bytes:
    return _proof(secret, "raftio-client", cluster_id, client, server_id, server_nonce)


def proof_matches(expected: bytes, got: bytes) -> bool:
    return hmac.compare_digest(expected, got)


def pair_key(secret: bytes, cluster_id: str, a: int, b: int) -> bytes:
    """The key nodes `a` and `b` (in either order) share, derived from a cluster secret.

    Give node i only its keys ``{j: pair_key(secret, cluster, i, j)}`` (serve's
    `secret=` mapping; one per `TcpClientEnd`) and keep the secret itself
    offline: node i can then prove only that it is i, never another node.
    """
    low, high = sorted((a, b))
    return hmac.new(secret, pack(["raftio-pair", cluster_id, low, high]), hashlib.sha256).digest()


# --- TLS identity: which node ids a peer's certificate may claim -------------------

_NODE_NAME = re.compile(r"node-(\d{1,18})(?:\.(.+))?", re.ASCII | re.IGNORECASE)


def cert_names(peercert: dict[str, Any]) -> list[str]:
    """The subject CNs and DNS subject alternative names of `getpeercert()`'s result."""
    names = [
        value
        for rdn in peercert.get("subject", ())
        for key, value in rdn
        if key == "commonName" and isinstance(value, str)
    ]
    names += [
        value
        for key, value in peercert.get("subjectAltName", ())
        if key == "DNS" and isinstance(value, str)
    ]
    return names


def cert_node_ids(names: list[str], cluster_id: str) -> set[int]:
    """Node ids named by ``node-<id>.<cluster_id>`` or ``node-<id>`` (case-insensitive)."""
    ids = set()
    for name in names:
        match = _NODE_NAME.fullmatch(name)
        if match is None:
            continue
        cluster = match.group(2)
        if cluster is None or cluster.casefold() == cluster_id.casefold():
            ids.add(int(match.group(1)))
    return ids


def check_cert_identity(
    peercert: dict[str, Any], cluster_id: str, node_id: int, names: Mapping[int, str] | None
) -> None:
    """Raise Refused unless the certificate may speak as `node_id` (docs/wire.md, "TLS").

    With `names`, the certificate must carry ``names[node_id]`` as its CN or a
    DNS name; without, the convention ``node-<id>.<cluster_id>`` (or the bare
    ``node-<id>``, for a CA that serves one cluster only).
    """
    have = cert_names(peercert)
    if names is not None:
        want = names.get(node_id)
        if want is None:
            raise Refused(f"certificate identity: no certificate name is configured for S{node_id}")
        if want.casefold() not in {name.casefold() for name in have}:
            raise Refused(
                f"certificate identity: client claims S{node_id}, whose certificate name is "
                f"{want!r}; its certificate names {have[:4]!r}"
            )
        return
    ids = cert_node_ids(have, cluster_id)
    if not ids:
        raise Refused(
            f"certificate identity: the certificate names no node of {cluster_id!r} "
            f"(want CN or DNS name node-{node_id}.{cluster_id}); it names {have[:4]!r}"
        )
    if node_id not in ids:
        raise Refused(
            f"certificate identity: client claims S{node_id}, its certificate is for "
            + ", ".join(f"S{i}" for i in sorted(ids)[:4])
        )
