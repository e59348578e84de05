"""The serving half of the TCP transport: `serve()` and `TcpServer`.

Owns the listener and the pool of accepted connections: admission (separate
caps for unauthenticated and authenticated connections), the deadlines
(handshake, idle, per frame) enforced by one periodic sweep per server, the
budget for bytes buffered in partial frames across all connections, and the
tasks of requests dispatched to the `RpcHandler`. Each connection (the
server half of the handshake, its requests, flow control) is a
`server_connection.ServerConnection`. Whatever a peer sends, the worst it
can do is get its own connection closed, with the reason counted and logged
(at most one line per reason per `log_interval`). Wire format and limits:
docs/wire.md.
"""

from __future__ import annotations

import asyncio
import logging
import ssl as _ssl
from collections.abc import Coroutine, Mapping
from typing import Any

from raftio.transport.base import RpcHandler
from raftio.transport.frames import DEFAULT_MAX_FRAME, RPC_BY_KIND, Refused, Rpc
from raftio.transport.limits import DEFAULT_LOG_INTERVAL, DropLog
from raftio.transport.server_connection import (
    ANSWERED_NOW,
    AnswerNow,
    Handler,
    ServerConnection,
)

__all__ = [
    "DEFAULT_FRAME_TIMEOUT",
    "DEFAULT_HANDSHAKE_TIMEOUT",
    "DEFAULT_IDLE_TIMEOUT",
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_MAX_INFLIGHT",
    "DEFAULT_MAX_PENDING",
    "DEFAULT_MAX_PER_NODE",
    "TcpServer",
    "serve",
]

logger = logging.getLogger(__name__)

DEFAULT_MAX_CONNECTIONS = 128  # authenticated connections
DEFAULT_MAX_PENDING = 64  # connections still in the handshake
DEFAULT_MAX_PER_NODE = 4  # authenticated connections claiming one node id
DEFAULT_HANDSHAKE_TIMEOUT = 5.0  # seconds from accept to an authenticated peer
# A leader sends every follower a heartbeat each heartbeat_interval (0.1 s by
# default, and RaftConfig keeps it under the election timeout), so a link in
# use is never idle for long; only links nobody calls on (a follower's own
# connection to its leader, between elections) reach this, and their end
# redials on its next call.
DEFAULT_IDLE_TIMEOUT = 60.0
# From the first byte of a frame to its last: a 64 MiB snapshot at ~2 MB/s.
DEFAULT_FRAME_TIMEOUT = 30.0
DEFAULT_MAX_INFLIGHT = 1024  # handler tasks per connection before we stop reading
_SWEEP_MIN, _SWEEP_MAX = 0.01, 1.0  # seconds between two deadline sweeps

Secret = bytes | Mapping[int, bytes]


async def serve(
    handler: RpcHandler,
    host: str,
    port: int,
    *,
    cluster_id: str,
    node_id: int,
    ssl: _ssl.SSLContext | None = None,
    secret: Secret | None = None,
    max_frame: int = DEFAULT_MAX_FRAME,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
    handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
    max_inflight: int = DEFAULT_MAX_INFLIGHT,
    max_pending: int = DEFAULT_MAX_PENDING,
    max_per_node: int = DEFAULT_MAX_PER_NODE,
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
    frame_timeout: float = DEFAULT_FRAME_TIMEOUT,
    max_buffered: int | None = None,
    log_interval: float = DEFAULT_LOG_INTERVAL,
    tls_identity: bool = True,
    tls_names: Mapping[int, str] | None = None,
) -> TcpServer:
    """Listen on host:port (port 0 picks one: see `TcpServer.port`) for peers' calls.

    Args:
        handler: gets `request_vote` / `append_entries` / `install_snapshot`
            calls; a None reply (or an exception, which is logged) reaches the
            caller at once as a None result.
        cluster_id, node_id: this node; a client of another cluster is refused.
        ssl: a server `ssl.SSLContext`; set `verify_mode = CERT_REQUIRED` and
            load the peers' CA for mutual TLS.
        secret: require the HMAC-SHA256 shared-secret handshake: the cluster's
            secret, or per-node keys ``{node_id: key}`` (see `frames.pair_key`),
            in which case a node id without a key is refused.
        max_frame: largest request frame accepted (an InstallSnapshot carries
            the whole snapshot); a larger one closes the connection.
        max_connections: authenticated connections (128). One more evicts the
            least recently active one, so an authenticated peer always gets in.
        handshake_timeout: a connection not authenticated by then (5 s) is closed.
        max_inflight: requests being answered per connection (handler tasks
            and replies waiting for a durable write); beyond it the
            connection is not read until some are answered.
        max_pending: connections still in the handshake (64); one more evicts
            the oldest of them, so holders cannot keep a real peer out.
        max_per_node: authenticated connections claiming one node id (4); one
            more replaces the oldest of them (a peer that redialled).
        idle_timeout: an authenticated connection that sent nothing and has
            no request in flight for this long (60 s) is closed.
        frame_timeout: a frame must arrive whole within this (30 s) of its
            first byte, or the connection is closed (slowloris).
        max_buffered: bytes of partial frames buffered across all connections
            (default 2 x max_frame); past it the connection holding the most
            is dropped. Must be at least max_frame + 4.
        log_interval: at most one refusal or drop line per reason per this
            many seconds (10); the next says how many were suppressed.
        tls_identity: with mutual TLS, refuse a client whose certificate does
            not name the node id it claims (docs/wire.md, "TLS").
        tls_names: node id -> the certificate name (CN or DNS) it must carry,
            instead of the ``node-<id>.<cluster_id>`` convention.

    Every timeout is enforced by one sweep per server, run every quarter of
    the shortest timeout (at most every 1 s): a deadline may be overrun by
    that much.
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
        max_pending=max_pending,
        max_per_node=max_per_node,
        idle_timeout=idle_timeout,
        frame_timeout=frame_timeout,
        max_buffered=max_buffered,
        log_interval=log_interval,
        tls_identity=tls_identity,
        tls_names=tls_names,
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
    """A listening raftio server; made by `serve()` (whose arguments it keeps).

    `close()` (plain) stops listening and closes every connection; handlers
    already running are not cancelled (cancelling a Raft handler midway could
    tear a durable write), their replies are just dropped. `await
    wait_closed()` waits for the sockets and those handlers. ``async with``
    does both on exit. `metrics()` reports connections, buffered bytes and
    drops by reason.
    """

    def __init__(
        self,
        handler: RpcHandler,
        *,
        cluster_id: str,
        node_id: int,
        secret: Secret | None,
        max_frame: int,
        max_connections: int,
        handshake_timeout: float,
        max_inflight: int,
        max_pending: int = DEFAULT_MAX_PENDING,
        max_per_node: int = DEFAULT_MAX_PER_NODE,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
        frame_timeout: float = DEFAULT_FRAME_TIMEOUT,
        max_buffered: int | None = None,
        log_interval: float = DEFAULT_LOG_INTERVAL,
        tls_identity: bool = True,
        tls_names: Mapping[int, str] | None = None,
    ) -> None:
        if max_buffered is None:
            max_buffered = 2 * max_frame
        _check_limits(
            max_frame, max_connections, max_pending, max_per_node, max_inflight, max_buffered
        )
        _check_durations(handshake_timeout, idle_timeout, frame_timeout, log_interval)
        self.cluster_id, self.node_id, self.secret = cluster_id, node_id, secret
        self.max_frame, self.max_connections = max_frame, max_connections
        self.handshake_timeout, self.max_inflight = handshake_timeout, max_inflight
        self.max_pending, self.max_per_node = max_pending, max_per_node
        self.idle_timeout, self.frame_timeout = idle_timeout, frame_timeout
        self.max_buffered = max_buffered
        self.tls_identity, self.tls_names = tls_identity, tls_names
        answer_now = getattr(handler, "answer_now", None)
        self.handlers: dict[int, tuple[Rpc, Handler, AnswerNow | None]] = {
            kind: (
                rpc,
                getattr(handler, rpc.method),
                answer_now if rpc.method in ANSWERED_NOW else None,
            )
            for kind, rpc in RPC_BY_KIND.items()
            if hasattr(handler, rpc.method)  # timeout_now is optional
        }
        self._listener: asyncio.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.connections: set[ServerConnection] = set()  # every one not yet lost
        # Oldest first (dicts keep insertion order): eviction takes the head.
        self._pending: dict[ServerConnection, None] = {}
        self._pending_hosts: dict[str, int] = {}  # host -> its connections in _pending
        self._ready: dict[ServerConnection, None] = {}
        self._by_node: dict[int, list[ServerConnection]] = {}
        self.buffered = 0  # bytes of partial frames held, all connections
        self.buffered_peak = 0  # the most `buffered` was after any read
        self._tasks: set[asyncio.Task[None]] = set()
        self._sweep_every = min(
            _SWEEP_MAX, max(_SWEEP_MIN, min(handshake_timeout, idle_timeout, frame_timeout) / 4)
        )
        self._sweeper: asyncio.TimerHandle | None = None
        self.drops = DropLog(logger, self._now, log_interval)
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

    def metrics(self) -> dict[str, float]:
        """Connections by state, buffered bytes, and drops/refusals by reason."""
        out: dict[str, float] = {
            'raftio_tcp_connections{state="unauthenticated"}': len(self._pending),
            'raftio_tcp_connections{state="authenticated"}': len(self._ready),
            "raftio_tcp_buffered_bytes": self.buffered,
            "raftio_tcp_buffered_bytes_peak": self.buffered_peak,
        }
        self.drops.export("raftio_tcp_dropped_total", out)
        return out

    def _now(self) -> float:
        return (self._loop or asyncio.get_running_loop()).time()

    def _new_connection(self) -> ServerConnection:
        self._loop = loop = asyncio.get_running_loop()
        return ServerConnection(self, loop)

    # --- admission ---

    def admit(self, conn: ServerConnection) -> bool:
        """A new connection joins the unauthenticated ones, evicting the oldest if full."""
        if self._closing:
            return False
        if len(self._pending) >= self.max_pending:
            self._oldest_of_busiest_host().evict(
                "pending_full",
                f"too many unauthenticated connections (max_pending={self.max_pending}); "
                "dropping the oldest of the busiest host",
            )
        self._pending[conn] = None
        self._pending_hosts[conn.host] = self._pending_hosts.get(conn.host, 0) + 1
        self.connections.add(conn)
        self._arm_sweeper()
        return True

    def _oldest_of_busiest_host(self) -> ServerConnection:
        # A host flooding the port evicts its own connections, not a peer's
        # handshake from elsewhere (max_pending is small: the scan is cheap).
        busiest = max(self._pending_hosts, key=self._pending_hosts.__getitem__)
        return next(conn for conn in self._pending if conn.host == busiest)

    def _unpend(self, conn: ServerConnection) -> None:
        if self._pending.pop(conn, 0) is None:
            left = self._pending_hosts[conn.host] - 1
            if left:
                self._pending_hosts[conn.host] = left
            else:
                del self._pending_hosts[conn.host]

    def authenticated(self, conn: ServerConnection, node_id: int) -> None:
        """`conn` proved itself as `node_id`: make room among the authenticated."""
        self._unpend(conn)
        same = self._by_node.get(node_id, [])
        if len(same) >= self.max_per_node:
            same[0].evict(
                "replaced",
                f"replaced by a newer connection from S{node_id} "
                f"(max_per_node={self.max_per_node})",
            )
        elif len(self._ready) >= self.max_connections:
            now = self._now()
            victim = min(self._ready, key=lambda c: c.last_active(now))
            victim.evict(
                "connections_full",
                f"too many connections (max_connections={self.max_connections}); "
                "dropping the least recently active",
            )
        self._ready[conn] = None
        self._by_node.setdefault(node_id, []).append(conn)

    def forget(self, conn: ServerConnection) -> None:
        """Take `conn` out of every pool (idempotent); its bytes leave the budget."""
        self._unpend(conn)
        if self._ready.pop(conn, 0) is None:
            same = self._by_node[conn.node_id]
            same.remove(conn)
            if not same:
                del self._by_node[conn.node_id]
        self.buffered -= conn.counted
        conn.counted = 0

    # --- the buffer budget ---

    def account(self, conn: ServerConnection, held: int) -> None:
        """`conn` now holds `held` bytes of partial frames; shed load past the budget."""
        self.buffered += held - conn.counted
        conn.counted = held
        if self.buffered > self.max_buffered:
            self._shed()
        if self.buffered > self.buffered_peak:
            self.buffered_peak = self.buffered

    def _shed(self) -> None:
        while self.buffered > self.max_buffered:
            victim = max(self.connections, key=lambda c: c.counted)
            if not victim.counted:
                return  # unreachable: the counts sum to `buffered`
            victim.evict(
                "buffer_budget",
                f"partial frames over the server's budget (max_buffered={self.max_buffered}); "
                f"dropping the connection holding the most ({victim.counted} bytes)",
            )

    # --- deadlines: one sweep for all connections ---

    def _arm_sweeper(self) -> None:
        if self._sweeper is None and self.connections and not self._closing:
            assert self._loop is not None
            self._sweeper = self._loop.call_later(self._sweep_every, self._sweep)

    def _sweep(self) -> None:
        self._sweeper = None
        now = self._now()
        for conn in list(self.connections):
            conn.check_deadlines(now)
        self._arm_sweeper()

    # --- handler tasks ---

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

    def key_for(self, node_id: int) -> bytes | None:
        """The secret `node_id` must prove it knows (None: no authentication)."""
        secret = self.secret
        if secret is None or isinstance(secret, bytes):
            return secret
        key = secret.get(node_id)
        if key is None:
            raise Refused(f"S{node_id} has no key on this server: not a member of the cluster")
        return key

    # --- closing ---

    def close(self) -> None:
        self._closing = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
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


def _check_limits(*limits: int) -> None:
    max_frame, *_, max_buffered = limits
    if any(limit < 1 for limit in limits):
        raise ValueError("connection, frame and buffer limits must be positive")
    if max_buffered < max_frame + 4:
        raise ValueError("max_buffered must hold at least one max_frame frame")


def _check_durations(*durations: float) -> None:
    if not all(duration > 0 for duration in durations):
        raise ValueError("timeouts and log_interval must be positive")
