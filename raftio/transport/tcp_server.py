"""The serving half of the TCP transport: `serve()` and `TcpServer`.

Owns accepted connections: the server half of the handshake, the connection
cap, per-connection flow control, and one task per request dispatched to the
`RpcHandler`. Whatever a peer sends, the worst it can do is get its own
connection closed, with the reason logged. Wire format: docs/wire.md.
"""

from __future__ import annotations

import asyncio
import logging
import ssl as _ssl
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from raftio.codec import decode_message, encode_message
from raftio.transport import frames
from raftio.transport.base import RpcHandler
from raftio.transport.frames import (
    DEFAULT_MAX_FRAME,
    HEADER,
    RPC_BY_KIND,
    FrameError,
    FrameProtocol,
    Refused,
    Rpc,
)

__all__ = ["DEFAULT_MAX_CONNECTIONS", "TcpServer", "serve"]

logger = logging.getLogger(__name__)

DEFAULT_MAX_CONNECTIONS = 128
DEFAULT_HANDSHAKE_TIMEOUT = 5.0  # seconds from accept to an authenticated peer
DEFAULT_MAX_INFLIGHT = 1024  # handler tasks per connection before we stop reading

Handler = Callable[[Any], Awaitable[Any]]

_AWAIT_HELLO, _AWAIT_AUTH, _READY = range(3)


async def serve(
    handler: RpcHandler,
    host: str,
    port: int,
    *,
    cluster_id: str,
    node_id: int,
    ssl: _ssl.SSLContext | None = None,
    secret: bytes | None = None,
    max_frame: int = DEFAULT_MAX_FRAME,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
    handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
    max_inflight: int = DEFAULT_MAX_INFLIGHT,
) -> TcpServer:
    """Listen on host:port (port 0 picks one: see `TcpServer.port`) for peers' calls.

    Args:
        handler: gets `request_vote` / `append_entries` / `install_snapshot`
            calls; a None reply (or an exception, which is logged) reaches the
            caller at once as a None result.
        cluster_id, node_id: this node; a client of another cluster is refused.
        ssl: a server `ssl.SSLContext`; set `verify_mode = CERT_REQUIRED` and
            load the peers' CA for mutual TLS.
        secret: require the HMAC-SHA256 shared-secret handshake.
        max_frame: largest request frame accepted (an InstallSnapshot carries
            the whole snapshot); a larger one closes the connection.
        max_connections: connections beyond this are refused at once.
        handshake_timeout: a connection not authenticated by then is closed.
        max_inflight: handler tasks per connection; beyond it the connection
            is not read until some finish.
    """
    server = TcpServer(
        handler,
        cluster_id=cluster_id,
        node_id=node_id,
        secret=secret,
        max_frame=max_frame,
        max_connections=max_connections,
        handshake_timeout=handshake_timeout,
        max_inflight=max_inflight,
    )
    loop = asyncio.get_running_loop()
    # With ssl, the loop runs the TLS handshake before our protocol sees the
    # connection; a failed one is the loop's to log (at debug level), and the
    # client logs why it could not connect.
    server._listener = await loop.create_server(
        server._new_connection,
        host,
        port,
        ssl=ssl,
        ssl_handshake_timeout=handshake_timeout if ssl is not None else None,
    )
    logger.info("S%d: serving cluster %r on %s:%d", node_id, cluster_id, host, server.port)
    return server


class TcpServer:
    """A listening raftio server; made by `serve()`.

    `close()` (plain) stops listening and closes every connection; handlers
    already running are not cancelled (cancelling a Raft handler midway could
    tear a durable write), their replies are just dropped. `await
    wait_closed()` waits for the sockets and those handlers. ``async with``
    does both on exit.
    """

    def __init__(
        self,
        handler: RpcHandler,
        *,
        cluster_id: str,
        node_id: int,
        secret: bytes | None,
        max_frame: int,
        max_connections: int,
        handshake_timeout: float,
        max_inflight: int,
    ) -> None:
        self.cluster_id, self.node_id, self.secret = cluster_id, node_id, secret
        self.max_frame, self.max_connections = max_frame, max_connections
        self.handshake_timeout, self.max_inflight = handshake_timeout, max_inflight
        self.handlers: dict[int, tuple[Rpc, Handler]] = {
            kind: (rpc, getattr(handler, rpc.method)) for kind, rpc in RPC_BY_KIND.items()
        }
        self._listener: asyncio.Server | None = None
        self.connections: set[_ServerConnection] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False

    @property
    def address(self) -> tuple[str, int]:
        """The (host, port) actually bound (the first socket's)."""
        assert self._listener is not None
        sockname = self._listener.sockets[0].getsockname()
        return sockname[0], sockname[1]

    @property
    def port(self) -> int:
        return self.address[1]

    def _new_connection(self) -> _ServerConnection:
        return _ServerConnection(self, asyncio.get_running_loop())

    def admit(self, conn: _ServerConnection) -> bool:
        if self._closing or len(self.connections) >= self.max_connections:
            return False
        self.connections.add(conn)
        return True

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run a request in its own task, referenced until it is done.

        The coroutine must catch and log its own exceptions and call `done()`
        last: cheaper than a done callback, which costs a loop callback each.
        """
        self._tasks.add(asyncio.get_running_loop().create_task(coro))

    def done(self) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.discard(task)

    def close(self) -> None:
        self._closing = True
        if self._listener is not None:
            self._listener.close()
        for conn in list(self.connections):
            conn.abort()  # close() would wait on a peer that stopped reading

    async def wait_closed(self) -> None:
        if self._listener is not None:
            await self._listener.wait_closed()
        while True:
            # A task cancelled before it started never ran its own cleanup.
            self._tasks = {task for task in self._tasks if not task.done()}
            closing = [conn.closed for conn in self.connections if not conn.closed.done()]
            waiting = closing + list(self._tasks)
            if not waiting:
                return
            await asyncio.wait(waiting)

    async def __aenter__(self) -> TcpServer:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()
        await self.wait_closed()


class _ServerConnection(FrameProtocol):
    """One accepted connection: handshake, then one handler task per request."""

    def __init__(self, server: TcpServer, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop, f"S{server.node_id}<-")
        self._server = server
        self._state = _AWAIT_HELLO
        self._hello: frames.Hello | None = None
        self._nonce = frames.new_nonce()
        self._deadline: asyncio.TimerHandle | None = None
        self._inflight = 0
        self._reading_paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        server = self._server
        if not server.admit(self):
            reason = f"too many connections (max_connections={server.max_connections})"
            logger.warning("%s: refusing connection: %s", self.label, reason)
            self.refuse(reason)
            return
        self._deadline = self._loop.call_later(server.handshake_timeout, self._handshake_expired)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._server.connections.discard(self)
        if self._deadline is not None:
            self._deadline.cancel()
        if self._state == _READY:
            logger.info("%s: connection closed (%s)", self.label, exc or "by peer")

    def _handshake_expired(self) -> None:
        if self._state != _READY:
            self.drop("no handshake within %.1f s", self._server.handshake_timeout)

    def _on_frame(self, kind: int, request_id: int, payload: bytes) -> None:
        if self._state == _READY:
            entry = self._server.handlers.get(kind)
            if entry is not None:
                self._dispatch(request_id, entry, payload)
                return
        elif self._state == _AWAIT_HELLO and kind == frames.HELLO:
            self._on_hello(payload)
            return
        elif self._state == _AWAIT_AUTH and kind == frames.AUTH:
            self._on_auth(payload)
            return
        if kind == frames.REFUSE:
            logger.warning("%s: client refused: %s", self.label, frames.parse_refuse(payload))
            self.close()
            return
        raise FrameError(f"unexpected frame kind {kind:#04x}")

    # --- handshake ---

    def _on_hello(self, payload: bytes) -> None:
        server = self._server
        try:
            hello = frames.parse_hello(payload)
            self.label = f"{self.label} S{hello.node_id}"
            if hello.cluster_id != server.cluster_id:
                raise Refused(
                    f"cluster id mismatch: client S{hello.node_id} is in {hello.cluster_id!r}, "
                    f"server S{server.node_id} is in {server.cluster_id!r}"
                )
        except Refused as refused:
            self._refuse_logged(refused.reason)
            return
        self._hello = hello
        proof = b""
        if server.secret is not None:
            proof = frames.server_proof(
                server.secret, server.cluster_id, hello, server.node_id, self._nonce
            )
        welcome = frames.welcome_payload(
            server.cluster_id, server.node_id, self._nonce, proof, server.max_frame
        )
        self.send(frames.encode_frame(frames.WELCOME, 0, welcome))
        self._state = _AWAIT_AUTH

    def _on_auth(self, payload: bytes) -> None:
        server, hello = self._server, self._hello
        assert hello is not None
        proof = frames.parse_auth(payload)
        if server.secret is not None:
            if not proof:
                self._refuse_logged("authentication required: this server has a shared secret")
                return
            want = frames.client_proof(
                server.secret, server.cluster_id, hello, server.node_id, self._nonce
            )
            if not frames.proof_matches(want, proof):
                self._refuse_logged("authentication failed: wrong shared secret")
                return
        self._state = _READY
        self._reader.max_frame = server.max_frame
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        logger.info("%s: connected", self.label)

    def _refuse_logged(self, reason: str) -> None:
        logger.warning("%s: refusing connection: %s", self.label, reason)
        self.refuse(reason)

    # --- requests ---

    def _dispatch(self, request_id: int, entry: tuple[Rpc, Handler], payload: bytes) -> None:
        rpc, handle = entry
        args = decode_message(payload)  # CodecError drops the connection
        if type(args) is not rpc.args_cls:
            raise FrameError(f"{rpc.method} frame carries a {type(args).__name__}")
        self._inflight += 1
        self._update_reading()
        self._server.spawn(self._serve(request_id, rpc, handle, args))

    async def _serve(self, request_id: int, rpc: Rpc, handle: Handler, args: Any) -> None:
        try:
            try:
                reply = await handle(args)
            except Exception:
                logger.exception(
                    "%s: %s handler raised; answering no reply", self.label, rpc.method
                )
                reply = None
            self._reply(request_id, rpc, reply)
        except Exception:
            logger.exception("%s: internal error serving %s", self.label, rpc.method)
        finally:
            self._inflight -= 1
            self._update_reading()
            self._server.done()

    def _read_frames(self) -> None:
        inflight = self._inflight
        super()._read_frames()
        if self._inflight > inflight:
            # Queued behind the new handler tasks' first steps: replies of
            # handlers that finish without waiting leave in this same write,
            # one loop iteration sooner than if each reply scheduled it.
            self.flush_soon()

    def _reply(self, request_id: int, rpc: Rpc, reply: Any) -> None:
        if not self.is_open():
            return  # the caller is gone; so is its pending call
        payload = b""
        if reply is not None:
            if type(reply) is not rpc.reply_cls:
                logger.error(
                    "%s: %s handler returned %s", self.label, rpc.method, type(reply).__name__
                )
            else:
                try:
                    payload = encode_message(reply)
                except Exception:
                    logger.exception("%s: cannot encode %s reply", self.label, rpc.method)
        kind = frames.REPLY if payload else frames.NO_REPLY
        header = HEADER.pack(len(payload) + frames.BODY_MIN, kind, request_id)
        if self._inflight == 1:
            # The only request in flight (it waited for an fsync, say): the
            # reply leaves now rather than one loop iteration later.
            self.send_now(header, payload)
        else:
            self.send(header, payload)  # with the others' replies, in one write

    # --- flow control ---

    def _may_read(self) -> bool:
        return self._inflight < self._server.max_inflight and self.is_open()

    def pause_writing(self) -> None:
        super().pause_writing()
        self._update_reading()

    def resume_writing(self) -> None:
        super().resume_writing()
        self._update_reading()

    def _update_reading(self) -> None:
        # Stop reading a peer that floods us with requests or does not read its
        # replies; its frames wait in the kernel, not in our memory.
        want_paused = self.write_paused or self._inflight >= self._server.max_inflight
        if want_paused == self._reading_paused or not self.is_open():
            return
        self._reading_paused = want_paused
        assert self._transport is not None
        if want_paused:
            self._transport.pause_reading()
        else:
            self._transport.resume_reading()
            self._read_frames()  # frames that arrived before we paused
