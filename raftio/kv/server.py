"""KVServer: the client-facing port of one KV node (asyncio streams, raftio.kv.protocol).

Owns client connections: reading frames, admitting connections, and
handing each admitted request to raftio.kv.requests (what it does, which
error code each failure becomes). Admin requests are served on the same
terms as every other request: only on an admitted (with a token:
authenticated) connection. One task per
connection, each kept in `_conns` and cancelled by `close()`. A connection
that breaks the protocol is logged and closed; the node and every other
connection carry on.

Every connection starts *pending*: with a token it must authenticate
(`hello`, `auth`) before anything else is served; without one, its first
well-formed request admits it. Pending and admitted connections have caps
of their own, so idle or hostile sockets cannot keep clients out:

* a new connection over `max_pending` evicts the oldest pending one;
* an admitted one over `max_connections` evicts the longest-idle admitted
  one (one waiting for a request, not one being served), else is refused;
* a pending connection has `handshake_timeout` to be admitted, an admitted
  one `idle_timeout` between requests, and once a frame's header is in,
  its body (and the reply's write) has `frame_timeout` (slowloris);
* frame bodies larger than the streams' read-ahead are reserved, while
  they arrive, from `max_buffered` bytes shared by all connections; a frame
  that does not fit closes its connection. Pending connections of a
  tokened server may send frames of at most `PENDING_FRAME` bytes.

One sweeper task checks every deadline each `sweep` seconds. Refusals are
logged at WARNING at most once per `LOG_EVERY` seconds per kind, with a
count of those left unsaid.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import math
import secrets
from collections.abc import Mapping, Sequence
from typing import Any

from raftio.kv.machine import DEFAULT_MAX_RESULT_CHARS, DEFAULT_MAX_SESSIONS, KVStateMachine
from raftio.kv.protocol import (
    AUTH_OPS,
    BAD_REQUEST,
    HEADER,
    MAX_FRAME,
    UNAUTHORIZED,
    ProtocolError,
    Request,
    auth_proof,
    decode_body,
    encode_frame,
    error_reply,
    ok_reply,
    parse_request,
)
from raftio.kv.requests import Requests
from raftio.node import Node, parse_address

__all__ = ["KVServer"]

logger = logging.getLogger(__name__)

STREAM_LIMIT = 64 << 10  # StreamReader read-ahead; frames up to this are not reserved
PENDING_FRAME = 256  # bytes: hello and auth are far smaller
LOG_EVERY = 10.0  # seconds between two refusal lines of one kind
_NEVER = math.inf


class _Conn:
    """One client connection's state, as the sweeper and the caps see it."""

    __slots__ = ("admitted", "busy", "deadline", "nonce", "peer", "reason", "task", "writer")

    def __init__(self, task: asyncio.Task[None], writer: asyncio.StreamWriter, peer: Any) -> None:
        self.task, self.writer, self.peer = task, writer, peer
        self.admitted = False  # authenticated (or, without a token, sent one good request)
        self.busy = False  # a request is being served: never evicted for idleness
        self.deadline = _NEVER  # loop time by which the connection must make progress
        self.nonce: tuple[bytes, bytes] | None = None  # (client's, server's) after hello
        self.reason = ""  # why the server is closing it, if it is


class _Refusals:
    """WARNING lines rate-limited per kind: one per LOG_EVERY seconds, then a count."""

    def __init__(self) -> None:
        self._last: dict[str, float] = {}
        self._unsaid: dict[str, int] = {}

    def warn(self, kind: str, message: str, *args: Any) -> None:
        now = asyncio.get_running_loop().time()
        if now - self._last.get(kind, -_NEVER) < LOG_EVERY:
            self._unsaid[kind] = self._unsaid.get(kind, 0) + 1
            logger.debug(message, *args)
            return
        self._last[kind] = now
        unsaid = self._unsaid.pop(kind, 0)
        suffix = f" ({unsaid} more since the last such line)" if unsaid else ""
        logger.warning(message + suffix, *args)


class KVServer:
    """Serves the KV protocol for one node.

    Args:
        node: the started Node replicating `machine`.
        machine: the node's KVStateMachine (read for `status`).
        client_addresses: client "host:port" by node id (a mapping, or a list
            indexed by id), naming the same nodes as the Node's addresses, so
            that redirects name the leader's client port. Members added
            later get theirs through the log (raftio.kv.client_table).
        bind: "host:port" to listen on, if not this node's client address
            (port 0 picks a free port: see `port`).
        timeout: seconds a write or read may wait before answering `timeout`.
        token: if set, every connection must prove it knows it (HMAC
            challenge-response, see raftio.kv.protocol) before any request.
        max_connections: admitted connections at once (default 256).
        max_pending: connections not yet admitted at once (default 64).
        handshake_timeout: seconds a connection has to be admitted (default 5).
        idle_timeout: seconds an admitted connection may wait between requests (300).
        frame_timeout: seconds a frame's body, or a reply's write, may take (10).
        max_buffered: bytes of large partial frames held across connections (64 MiB).
        max_sessions: client sessions the cluster keeps (least recently used
            evicted; the value in the latest register command wins, default 4096).
        max_result_chars: characters of stored write results across sessions (64 Mi).
        sweep: seconds between two deadline checks (default 0.5).
        admin_timeout: seconds a membership change may take before `timeout`
            or `pending` (default 10; clients must wait longer than this).
    """

    def __init__(
        self,
        node: Node,
        machine: KVStateMachine,
        client_addresses: Sequence[str] | Mapping[int, str],
        *,
        bind: str | None = None,
        timeout: float = 2.0,
        token: bytes | None = None,
        max_connections: int = 256,
        max_pending: int = 64,
        handshake_timeout: float = 5.0,
        idle_timeout: float = 300.0,
        frame_timeout: float = 10.0,
        max_buffered: int = 64 << 20,
        max_sessions: int = DEFAULT_MAX_SESSIONS,
        max_result_chars: int = DEFAULT_MAX_RESULT_CHARS,
        sweep: float = 0.5,
        admin_timeout: float = 10.0,
    ) -> None:
        by_id = (
            dict(client_addresses)
            if isinstance(client_addresses, Mapping)
            else dict(enumerate(client_addresses))
        )
        if by_id.keys() != node.addresses.keys():
            raise ValueError("need one client address per node, for the same node ids")
        for address in by_id.values():
            parse_address(address)
        if token is not None and not token:
            raise ValueError("an empty token authenticates nothing; pass None for no token")
        if min(max_connections, max_pending, max_sessions) < 1:
            raise ValueError("max_connections, max_pending and max_sessions must be positive")
        self.node, self.machine = node, machine
        self.client_addresses = by_id
        self._requests = Requests(
            node,
            machine,
            by_id,
            timeout=timeout,
            max_sessions=max_sessions,
            max_result_chars=max_result_chars,
            admin_timeout=admin_timeout,
        )
        self._bind = parse_address(bind or self.client_addresses[node.node_id])
        self._token = token
        self._max_connections, self._max_pending = max_connections, max_pending
        self._handshake_timeout, self._idle_timeout = handshake_timeout, idle_timeout
        self._frame_timeout, self._max_buffered = frame_timeout, max_buffered
        self._sweep = sweep
        self._server: asyncio.Server | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._conns: dict[_Conn, None] = {}  # every connection, oldest first
        self._pending: dict[_Conn, None] = {}  # not yet admitted, oldest first
        self._admitted: dict[_Conn, None] = {}
        self._buffered = 0  # bytes reserved by large frames being read
        self._refusals = _Refusals()

    @property
    def port(self) -> int:
        """The port actually listened on."""
        if self._server is None:
            raise RuntimeError("the KV server is not started")
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def buffered(self) -> int:
        """Bytes reserved right now by large frames still arriving."""
        return self._buffered

    def connections(self) -> tuple[int, int]:
        """(pending, admitted) connections right now."""
        return len(self._pending), len(self._admitted)

    async def start(self) -> None:
        host, port = self._bind
        self._server = await asyncio.start_server(
            self._on_connection, host, port, limit=STREAM_LIMIT
        )
        self._sweeper = asyncio.create_task(self._sweep_forever())
        auth = "token required" if self._token else "no token"
        logger.info(
            "S%d: KV clients served on %s:%d (%s)", self.node.node_id, host, self.port, auth
        )

    async def close(self) -> None:
        """Stop listening and close every client connection."""
        if self._server is not None:
            self._server.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
        tasks = [conn.task for conn in self._conns]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._sweeper is not None:
            await asyncio.gather(self._sweeper, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def __aenter__(self) -> KVServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------------ connections

    async def _on_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        conn = _Conn(task, writer, writer.get_extra_info("peername"))
        if len(self._pending) >= self._max_pending:
            oldest = next(iter(self._pending))
            self._refusals.warn(
                "pending",
                "KV client %s evicted: %d connections not yet admitted",
                oldest.peer,
                len(self._pending),
            )
            self._end(oldest, "evicted: too many connections not yet admitted")
        self._conns[conn] = self._pending[conn] = None
        conn.deadline = self._now() + self._handshake_timeout
        try:
            await self._serve(conn, reader)
        except (ConnectionError, TimeoutError) as exc:
            logger.debug("KV client %s: connection lost (%r)", conn.peer, exc)
        except asyncio.CancelledError:
            if conn.reason:
                logger.debug("KV client %s: closed (%s)", conn.peer, conn.reason)
        except Exception:
            logger.exception("KV client %s: unexpected error; closing its connection", conn.peer)
        finally:
            for table in (self._conns, self._pending, self._admitted):
                table.pop(conn, None)
            writer.close()

    def _end(self, conn: _Conn, reason: str) -> None:
        """Close `conn` from outside its task (eviction, a deadline passed)."""
        if not conn.reason:
            conn.reason = reason
            conn.task.cancel()
        self._pending.pop(conn, None)
        self._admitted.pop(conn, None)

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self._sweep)
            now = self._now()
            expired = [conn for conn in self._conns if conn.deadline < now and not conn.reason]
            for conn in expired:
                what = "admission" if not conn.admitted else "a frame or a request"
                self._refusals.warn(
                    "timeout", "KV client %s: timed out waiting for %s", conn.peer, what
                )
                self._end(conn, f"timed out waiting for {what}")

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    async def _serve(self, conn: _Conn, reader: asyncio.StreamReader) -> None:
        while True:
            frame = await self._read_frame(conn, reader)
            if frame is None:
                return
            try:
                request = parse_request(frame)
            except ProtocolError as exc:
                self._refusals.warn(
                    "bad", "KV client %s: bad request (%s); closing", conn.peer, exc
                )
                await self._reply(conn, error_reply(BAD_REQUEST, str(exc)))
                return
            if not conn.admitted:
                if not await self._admit(conn, request):
                    return
                if request.op in AUTH_OPS:
                    continue  # _admit answered it
            conn.busy, conn.deadline = True, _NEVER
            reply = await self.handle(request)
            conn.busy, conn.deadline = False, self._now() + self._idle_timeout
            await self._reply(conn, reply)

    async def _read_frame(self, conn: _Conn, reader: asyncio.StreamReader) -> Any | None:
        """The next request frame's value (None at a clean end); the deadline is the caller's."""
        try:
            header = await reader.readexactly(HEADER.size)
        except asyncio.IncompleteReadError as exc:
            if exc.partial:
                logger.debug("KV client %s: stream ended inside a frame header", conn.peer)
            return None
        (size,) = HEADER.unpack(header)
        limit = MAX_FRAME if conn.admitted or self._token is None else PENDING_FRAME
        if size > limit:
            self._refusals.warn(
                "large", "KV client %s: frame of %d bytes over %d; closing", conn.peer, size, limit
            )
            return None
        reserve = size if size > STREAM_LIMIT else 0
        if self._buffered + reserve > self._max_buffered:
            self._refusals.warn(
                "budget",
                "KV client %s: %d bytes of partial frames held, no room for %d more; closing",
                conn.peer,
                self._buffered,
                size,
            )
            return None
        self._buffered += reserve
        deadline, conn.deadline = conn.deadline, self._now() + self._frame_timeout
        try:
            body = await reader.readexactly(size)
        except asyncio.IncompleteReadError:
            logger.debug("KV client %s: stream ended inside a frame", conn.peer)
            return None
        finally:
            self._buffered -= reserve
        conn.deadline = deadline
        try:
            return decode_body(body)
        except ProtocolError as exc:
            self._refusals.warn("bad", "KV client %s: bad frame (%s); closing", conn.peer, exc)
            return None

    async def _reply(self, conn: _Conn, reply: dict[str, Any]) -> None:
        deadline, conn.deadline = conn.deadline, self._now() + self._frame_timeout
        conn.writer.write(encode_frame(reply))
        with contextlib.suppress(ConnectionError):
            await conn.writer.drain()  # bounded by frame_timeout: a client that does not read
        conn.deadline = deadline

    # ------------------------------------------------------------------ admission

    async def _admit(self, conn: _Conn, request: Request) -> bool:
        """Handle a pending connection's request; whether the connection may go on."""
        if self._token is None:
            if not self._promote(conn):
                return False
            if request.op == "hello":
                await self._reply(conn, ok_reply({"nonce": None, "proof": None}))
            elif request.op == "auth":
                await self._reply(conn, ok_reply(None))
            return True
        if request.op == "hello" and conn.nonce is None:
            server_nonce = secrets.token_bytes(16)
            conn.nonce = (request.nonce, server_nonce)
            proof = auth_proof(self._token, "raftio-kv-server", request.nonce, server_nonce)
            await self._reply(conn, ok_reply({"nonce": server_nonce, "proof": proof}))
            return True
        if request.op == "auth" and conn.nonce is not None:
            expected = auth_proof(self._token, "raftio-kv-client", *conn.nonce)
            if hmac.compare_digest(expected, request.proof) and self._promote(conn):
                conn.deadline = self._now() + self._idle_timeout
                await self._reply(conn, ok_reply(None))
                return True
            if conn.admitted or conn.reason:
                return False  # refused by the cap: already logged
            message = "wrong proof: this client does not hold the KV token"
        else:
            message = "authenticate first: send hello, then auth"
        self._refusals.warn("auth", "KV client %s: unauthorized (%s); closing", conn.peer, message)
        await self._reply(conn, error_reply(UNAUTHORIZED, message))
        return False

    def _promote(self, conn: _Conn) -> bool:
        """Move `conn` from pending to admitted, making room if needed; False if refused."""
        self._pending.pop(conn, None)
        if len(self._admitted) >= self._max_connections:
            idle = [c for c in self._admitted if not c.busy]
            if not idle:
                self._refusals.warn(
                    "admitted",
                    "KV client %s refused: %d connections busy",
                    conn.peer,
                    len(self._admitted),
                )
                conn.reason = "refused: every admitted connection is busy"
                return False
            oldest = min(idle, key=lambda c: c.deadline)  # deadlines: last use + idle_timeout
            self._refusals.warn(
                "admitted",
                "KV client %s evicted: %d connections admitted",
                oldest.peer,
                len(self._admitted),
            )
            self._end(oldest, "evicted: the longest idle of too many connections")
        conn.admitted = True
        self._admitted[conn] = None
        return True

    # ------------------------------------------------------------------ requests

    async def handle(self, request: Request) -> dict[str, Any]:
        """Answer one request with a reply map (never raises for raftio's errors)."""
        return await self._requests.handle(request)

    def status(self) -> dict[str, Any]:
        """The node's status plus this service's view (see `Requests.status`)."""
        return self._requests.status()
