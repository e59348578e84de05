"""TCP transport: `TcpClientEnd` (a ClientEnd); re-exports `serve()` / `TcpServer`.

This module owns the calling side: dialling, the client half of the
handshake, request ids, timeouts and reconnect backoff. The serving side
(handler tasks, connection limits) lives in `tcp_server.py`, the byte layout
and handshake payloads in `frames.py`, message encoding in `codec.py`.
Wire format: docs/wire.md.

One long-lived connection per direction of a peer pair: the client end dials
lazily on its first call and redials (jittered exponential backoff, capped at
1 s) after a failure. Every frame carries a request id, so any number of
calls share the connection and replies are matched by id, in any order.
Frames written during one loop iteration leave in one write. Both sides are
`asyncio.Protocol`s: no stream objects and no await per frame.

Failure is None, never an exception: a call that is not answered within the
end's timeout, or whose connection fails, returns None.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl as _ssl
from typing import Any

from raftio.codec import decode_message, encode_message
from raftio.transport import frames
from raftio.transport.frame_protocol import FrameProtocol
from raftio.transport.frames import (
    DEFAULT_MAX_FRAME,
    HEADER,
    RPC_BY_METHOD,
    FrameError,
    Refused,
)
from raftio.transport.tcp_server import DEFAULT_MAX_CONNECTIONS, TcpServer, serve

__all__ = [
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_MAX_FRAME",
    "DEFAULT_TIMEOUT",
    "TcpClientEnd",
    "TcpServer",
    "serve",
]

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 2.0  # seconds a call may wait for its reply
_REPLY_MAX_FRAME = 1024 * 1024  # replies are a few fixed-size fields
_MAX_WRITE_BUFFER = 64 * 1024 * 1024  # past this, a stalled peer's calls fail at once
_BACKOFF_MIN, _BACKOFF_MAX = 0.02, 1.0
_TIMER_SLACK = 0.001  # expire calls due within this much, rather than re-arm for them


# --- client side ---------------------------------------------------------------


class _ClientConnection(FrameProtocol):
    """One dialled connection: runs the client half of the handshake, then
    hands reply frames to its `TcpClientEnd`."""

    def __init__(self, end: TcpClientEnd, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop, end.label)
        self._end = end
        self._hello = frames.Hello(
            frames.PROTOCOL_VERSION, end.cluster_id, end.node_id, frames.new_nonce()
        )
        self._ready = False
        self.proven = False  # the server has answered a call: it accepted our AUTH
        self.refused = False  # either side declined the handshake (already logged)
        # Result of the handshake: None once ready, else what went wrong.
        self.outcome: asyncio.Future[BaseException | None] = loop.create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._end.live.add(self)
        payload = frames.hello_payload(
            self._hello.cluster_id, self._hello.node_id, self._hello.nonce
        )
        self.send(frames.encode_frame(frames.HELLO, 0, payload))

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._end.live.discard(self)
        self._resolve(ConnectionError(f"connection closed during handshake ({exc})"))
        self._end._on_connection_lost(self, exc)

    def _resolve(self, outcome: BaseException | None) -> None:
        if not self.outcome.done():
            self.outcome.set_result(outcome)

    def _on_frame(self, kind: int, request_id: int, payload: bytes) -> None:
        if self._ready and (kind == frames.REPLY or kind == frames.NO_REPLY):
            self._end._on_reply(self, kind, request_id, payload)
        elif kind == frames.WELCOME and not self._ready:
            self._on_welcome(payload)
        elif kind == frames.REFUSE:
            reason = frames.parse_refuse(payload)
            self._end._note_problem(f"refused by server: {reason}", logging.ERROR)
            self.refused = True
            self._resolve(Refused(reason))
            self.close()
        else:
            raise FrameError(f"unexpected frame kind {kind:#04x}")

    def _on_welcome(self, payload: bytes) -> None:
        end = self._end
        try:
            welcome = frames.parse_welcome(payload)
            end._check_server(welcome, self._hello)
        except Refused as refused:
            end._note_problem(f"refusing server: {refused.reason}", logging.ERROR)
            self.refused = True
            self._resolve(refused)
            self.refuse(refused.reason)
            return
        proof = b""
        if end.secret is not None:
            proof = frames.client_proof(
                end.secret, end.cluster_id, self._hello, welcome.node_id, welcome.nonce
            )
        self.send(frames.encode_frame(frames.AUTH, 0, frames.auth_payload(proof)))
        self._reader.max_frame = _REPLY_MAX_FRAME
        self._ready = True
        self.label = f"{self.label} S{welcome.node_id}"
        end._on_ready(self, welcome)
        self._resolve(None)


class TcpClientEnd:
    """A `ClientEnd` that reaches one peer's `serve()` over TCP.

    Args:
        host, port: the peer's listening address.
        cluster_id: must equal the server's, or the handshake is refused.
        node_id: this (calling) node's id, sent in the handshake and logs.
        peer_id: if given, the server's node id must equal it.
        timeout: seconds a call waits for its reply before returning None;
            also bounds connecting plus the handshake.
        ssl: a client `ssl.SSLContext` (load a cert chain for mutual TLS).
        server_hostname: TLS name to verify; defaults to `host`.
        secret: shared secret for the HMAC-SHA256 challenge-response.

    `call` never raises (cancellation aside). `close()` is synchronous and
    returns at once: pending calls return None and later calls return None
    at once. `await wait_closed()` (or ``async with``) waits for the socket
    to be gone. An end binds to the event loop of its first call.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        cluster_id: str,
        node_id: int,
        timeout: float = DEFAULT_TIMEOUT,
        ssl: _ssl.SSLContext | None = None,
        secret: bytes | None = None,
        peer_id: int | None = None,
        server_hostname: str | None = None,
    ) -> None:
        self.host, self.port = host, port
        self.cluster_id, self.node_id, self.peer_id = cluster_id, node_id, peer_id
        self.secret = secret
        self.label = f"S{node_id}->{host}:{port}"
        self._timeout = timeout
        self._ssl = ssl
        self._server_hostname = server_hostname
        self._loop: asyncio.AbstractEventLoop | None = None
        self._conn: _ClientConnection | None = None  # set once its handshake is done
        self.live: set[_ClientConnection] = set()  # every connection not yet lost
        self._connector: asyncio.Task[None] | None = None
        # In flight, oldest first: all share one timeout, so insertion order is
        # deadline order and one timer (for the oldest) serves them all.
        self._pending: dict[int, tuple[asyncio.Future[Any], float, type]] = {}
        self._queued: list[tuple[int, bytes, bytes]] = []  # written once connected
        self._timer: asyncio.TimerHandle | None = None
        self._last_id = 0
        self._peer_max_frame = DEFAULT_MAX_FRAME
        self._oversize_warned = (
            False  # a request over the peer's limit: one WARNING, not one a retry
        )
        self._failures = 0  # consecutive failed connection attempts
        self._retry_at = 0.0
        self._last_problem: str | None = None
        self._closed = False

    async def call(self, method: str, args: Any) -> Any | None:
        """Send one RPC and return its reply, or None on any failure."""
        started = self._start(method, args)
        if started is None:
            return None
        request_id, future = started
        try:
            return await future
        finally:
            self._pending.pop(request_id, None)

    def start_call(self, method: str, args: Any) -> asyncio.Future[Any]:
        """Send one RPC now; the future gets its reply, or None on any failure."""
        started = self._start(method, args)
        if started is None:
            future: asyncio.Future[Any] = (self._loop or self._bind_loop()).create_future()
            future.set_result(None)
            return future
        return started[1]

    def _start(self, method: str, args: Any) -> tuple[int, asyncio.Future[Any]] | None:
        rpc = RPC_BY_METHOD.get(method)
        if rpc is None or type(args) is not rpc.args_cls:
            logger.error("%s: cannot call %r with %s", self.label, method, type(args).__name__)
            return None
        if self._closed:
            return None
        try:
            payload = encode_message(args)
        except Exception:
            logger.exception("%s: cannot encode %s", self.label, method)
            return None
        if not self._may_send(len(payload)):
            return None
        return self._submit(rpc, payload)

    def _submit(self, rpc: frames.Rpc, payload: bytes) -> tuple[int, asyncio.Future[Any]]:
        """Register a call and hand its frame to the connection (or the dial queue)."""
        loop = self._loop or self._bind_loop()
        request_id = self._last_id = self._last_id % frames.MAX_REQUEST_ID + 1
        header = HEADER.pack(len(payload) + frames.BODY_MIN, rpc.kind, request_id)
        future: asyncio.Future[Any] = loop.create_future()
        deadline = loop.time() + self._timeout
        idle = not self._pending
        self._pending[request_id] = (future, deadline, rpc.reply_cls)
        if self._timer is None:
            self._timer = loop.call_at(deadline, self._expire)
        conn = self._conn
        if conn is None:
            self._queued.append((request_id, header, payload))
            self._ensure_connecting()
        elif idle:
            conn.send_now(header, payload)  # alone: a loop iteration sooner
        else:
            conn.send(header, payload)  # busy: one write with this iteration's others
        return request_id, future

    def _bind_loop(self) -> asyncio.AbstractEventLoop:
        self._loop = asyncio.get_running_loop()
        return self._loop

    def _may_send(self, size: int) -> bool:
        conn = self._conn
        if size + frames.BODY_MIN > self._peer_max_frame:
            level = logging.DEBUG if self._oversize_warned else logging.WARNING
            self._oversize_warned = True
            logger.log(
                level,
                "%s: request of %d bytes exceeds the peer's max_frame %d (not sent; "
                "further ones are logged at DEBUG)",
                self.label,
                size,
                self._peer_max_frame,
            )
            return False
        # A peer that stopped reading must not make us buffer without bound.
        return conn is None or not conn.write_paused or conn.write_buffer_size() < _MAX_WRITE_BUFFER

    def _expire(self) -> None:
        assert self._loop is not None
        self._timer = None
        now = self._loop.time() + _TIMER_SLACK
        expired = []
        for request_id, (_, deadline, _) in self._pending.items():
            if deadline > now:
                break
            expired.append(request_id)
        for request_id in expired:
            future = self._pending.pop(request_id)[0]
            if not future.done():
                future.set_result(None)
        if self._pending:
            oldest = next(iter(self._pending.values()))[1]
            self._timer = self._loop.call_at(oldest, self._expire)

    def _fail_all(self) -> None:
        pending, self._pending = self._pending, {}
        self._queued.clear()
        for future, _, _ in pending.values():
            if not future.done():
                future.set_result(None)

    # --- connecting ---

    def _ensure_connecting(self) -> None:
        if self._connector is None and not self._closed:
            assert self._loop is not None
            self._connector = self._loop.create_task(self._connect())
            self._connector.add_done_callback(self._connector_done)

    def _connector_done(self, task: asyncio.Task[None]) -> None:
        self._connector = None
        if not task.cancelled() and task.exception() is not None:
            logger.error("%s: connect task failed", self.label, exc_info=task.exception())
            self._fail_all()
        elif self._queued and self._conn is None:
            self._ensure_connecting()  # calls made while a failed attempt was ending

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        delay = self._retry_at - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        conn = _ClientConnection(self, loop)
        try:
            async with asyncio.timeout(self._timeout):
                await loop.create_connection(
                    lambda: conn,
                    self.host,
                    self.port,
                    ssl=self._ssl,
                    server_hostname=(self._server_hostname or self.host) if self._ssl else None,
                )
                problem = await conn.outcome
        except asyncio.CancelledError:
            conn.abort()
            raise
        except Exception as exc:
            problem = exc
        if problem is not None:
            conn.abort()
            self._connect_failed(problem)

    def _connect_failed(self, problem: BaseException) -> None:
        if not isinstance(problem, Refused):  # refusals were logged where they happened
            what = str(problem) or type(problem).__name__
            self._note_problem(f"cannot connect: {what}", logging.WARNING)
        self._backoff()
        self._fail_all()

    def _backoff(self) -> None:
        assert self._loop is not None
        self._failures += 1
        delay = min(_BACKOFF_MAX, _BACKOFF_MIN * 2 ** min(self._failures - 1, 16))
        # Jitter so that peers restarting together do not redial in lockstep.
        self._retry_at = self._loop.time() + delay * random.uniform(0.5, 1.0)

    def _note_problem(self, what: str, level: int) -> None:
        # The same trouble again (a peer down for minutes) is logged once.
        logger.log(
            level if what != self._last_problem else logging.DEBUG, "%s: %s", self.label, what
        )
        self._last_problem = what

    def _check_server(self, welcome: frames.Welcome, hello: frames.Hello) -> None:
        if welcome.cluster_id != self.cluster_id:
            raise Refused(
                f"cluster id mismatch: server S{welcome.node_id} is in {welcome.cluster_id!r}, "
                f"client S{self.node_id} is in {self.cluster_id!r}"
            )
        if self.peer_id is not None and welcome.node_id != self.peer_id:
            raise Refused(f"expected node S{self.peer_id}, reached S{welcome.node_id}")
        if self.secret is None:
            return
        if not welcome.proof:
            raise Refused(
                "shared-secret authentication failed: "
                f"server S{welcome.node_id} has no shared secret"
            )
        want = frames.server_proof(
            self.secret, self.cluster_id, hello, welcome.node_id, welcome.nonce
        )
        if not frames.proof_matches(want, welcome.proof):
            raise Refused(
                f"shared-secret authentication failed: server S{welcome.node_id}'s proof "
                "does not match this node's secret"
            )

    # --- connection events (called by _ClientConnection) ---

    def _on_ready(self, conn: _ClientConnection, welcome: frames.Welcome) -> None:
        self._conn = conn
        self._peer_max_frame = welcome.max_frame
        queued, self._queued = self._queued, []
        for request_id, header, payload in queued:
            if request_id in self._pending:  # not timed out while we dialled
                conn.send(header, payload)

    def _on_reply(
        self, conn: _ClientConnection, kind: int, request_id: int, payload: bytes
    ) -> None:
        entry = self._pending.get(request_id)
        if entry is None:
            return  # the call timed out or was cancelled; the reply is late
        future, _, reply_cls = entry
        reply = None
        if kind == frames.REPLY:
            reply = decode_message(payload)
            if type(reply) is not reply_cls:
                raise FrameError(f"{type(reply).__name__} does not answer {reply_cls.__name__}")
        del self._pending[request_id]
        if not future.done():
            future.set_result(reply)
        if not conn.proven:
            self._on_proven(conn)

    def _on_proven(self, conn: _ClientConnection) -> None:
        conn.proven = True
        self._failures, self._retry_at = 0, 0.0
        if self._last_problem is not None:
            logger.info("%s: connected", self.label)
            self._last_problem = None

    def _on_connection_lost(self, conn: _ClientConnection, exc: Exception | None) -> None:
        if conn is not self._conn:
            return  # lost during the handshake: _connect reports it
        self._conn = None
        if not conn.proven:
            self._backoff()  # e.g. the server rejected our AUTH: do not redial at once
        if self._closed or conn.refused:
            pass
        elif exc is None and not self._pending:
            # A server closes links nobody calls on (its idle_timeout): routine.
            logger.info(
                "%s: idle connection closed by the server; redialling when needed", self.label
            )
        else:
            self._note_problem(f"connection lost ({exc or 'closed by peer'})", logging.WARNING)
        self._fail_all()

    # --- closing ---

    def close(self) -> None:
        """Stop: pending calls return None now, later calls return None at once."""
        self._closed = True
        if self._connector is not None:
            self._connector.cancel()
        for conn in list(self.live):
            conn.abort()  # close() would wait on a peer that stopped reading
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._fail_all()

    async def wait_closed(self) -> None:
        """Wait until the connect task and every socket of this end are gone."""
        if self._connector is not None:
            await asyncio.wait([self._connector])
        for conn in list(self.live):
            await conn.closed

    async def __aenter__(self) -> TcpClientEnd:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()
        await self.wait_closed()
