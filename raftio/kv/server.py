"""KVServer: the client-facing port of one KV node (asyncio streams, raftio.kv.protocol).

Owns client connections and the mapping from requests to `Node.propose` /
`Node.read` and from raftio's errors to protocol error codes. One task per
connection, each kept in `_connections` and cancelled by `close()`. A
connection that breaks the protocol is logged and closed; the node and
every other connection carry on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from raftio.errors import NodeClosedError, NotLeaderError, ProposalLostError, ProposalTimeoutError
from raftio.kv.machine import KVStateMachine, write_command
from raftio.kv.protocol import (
    BAD_REQUEST,
    CLOSED,
    FAILED,
    LOST,
    NOT_LEADER,
    TIMEOUT,
    ProtocolError,
    Request,
    encode_frame,
    error_reply,
    ok_reply,
    parse_request,
    read_frame,
)
from raftio.node import Node, parse_address

__all__ = ["KVServer"]

logger = logging.getLogger(__name__)


class KVServer:
    """Serves the KV protocol for one node.

    Args:
        node: the started Node replicating `machine`.
        machine: the node's KVStateMachine (read for `status`).
        client_addresses: every node's client "host:port", indexed by node id,
            so that redirects name the leader's client port.
        bind: "host:port" to listen on, if not this node's client address
            (port 0 picks a free port: see `port`).
        timeout: seconds a write or read may wait before answering `timeout`.
        max_connections: connections beyond this are closed at once.
    """

    def __init__(
        self,
        node: Node,
        machine: KVStateMachine,
        client_addresses: Sequence[str],
        *,
        bind: str | None = None,
        timeout: float = 2.0,
        max_connections: int = 256,
    ) -> None:
        if len(client_addresses) != len(node.addresses):
            raise ValueError("need one client address per node")
        for address in client_addresses:
            parse_address(address)
        self.node, self.machine = node, machine
        self.client_addresses = list(client_addresses)
        self._bind = parse_address(bind or self.client_addresses[node.node_id])
        self._timeout = timeout
        self._max_connections = max_connections
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        """The port actually listened on."""
        if self._server is None:
            raise RuntimeError("the KV server is not started")
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def start(self) -> None:
        host, port = self._bind
        self._server = await asyncio.start_server(self._on_connection, host, port)
        logger.info("S%d: KV clients served on %s:%d", self.node.node_id, host, self.port)

    async def close(self) -> None:
        """Stop listening and close every client connection."""
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
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
        peer = writer.get_extra_info("peername")
        if len(self._connections) >= self._max_connections:
            logger.warning("KV client %s refused: %d open", peer, len(self._connections))
            writer.close()
            return
        self._connections.add(task)
        try:
            await self._serve(reader, writer, peer)
        except (ConnectionError, TimeoutError) as exc:
            logger.debug("KV client %s: connection lost (%r)", peer, exc)
        except asyncio.CancelledError:
            pass  # close() ends every connection; nothing to report
        except Exception:
            logger.exception("KV client %s: unexpected error; closing its connection", peer)
        finally:
            self._connections.discard(task)
            writer.close()

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: Any
    ) -> None:
        while True:
            try:
                frame = await read_frame(reader)
            except ProtocolError as exc:
                logger.warning("KV client %s: bad frame (%s); closing", peer, exc)
                return
            if frame is None:
                return
            try:
                request = parse_request(frame)
            except ProtocolError as exc:
                logger.warning("KV client %s: bad request (%s); closing", peer, exc)
                writer.write(encode_frame(error_reply(BAD_REQUEST, str(exc))))
                with contextlib.suppress(ConnectionError):
                    await writer.drain()
                return
            writer.write(encode_frame(await self.handle(request)))
            await writer.drain()

    # ------------------------------------------------------------------ requests

    async def handle(self, request: Request) -> dict[str, Any]:
        """Answer one request with a reply map (never raises for raftio's errors)."""
        try:
            return ok_reply(await self._execute(request))
        except NotLeaderError as exc:
            leader = self._client_address(exc.leader_id)
            hint = f"; try node {exc.leader_id} at {leader}" if leader else ""
            return error_reply(
                NOT_LEADER, f"node {self.node.node_id} is not the leader{hint}", leader
            )
        except ProposalTimeoutError as exc:
            return error_reply(TIMEOUT, str(exc))
        except ProposalLostError as exc:
            return error_reply(LOST, str(exc))
        except NodeClosedError as exc:
            return error_reply(CLOSED, str(exc))
        except ValueError as exc:  # the state machine refused the command
            return error_reply(FAILED, str(exc))

    async def _execute(self, request: Request) -> Any:
        if request.op == "status":
            return self.status()
        if request.op == "get":
            return await self.node.read(request.key, timeout=self._timeout)
        command = write_command(request.op, request.key, request.value, request.client, request.seq)
        return await self.node.propose(command, timeout=self._timeout)

    def status(self) -> dict[str, Any]:
        """The node's status plus this service's view: client address, key count, digest."""
        status = asdict(self.node.status())
        status["client_address"] = self.client_addresses[self.node.node_id]
        status["leader_client_address"] = self._client_address(status["leader_id"])
        status["keys"] = len(self.machine.data)
        status["digest"] = self.machine.digest()
        status["metrics"] = self.node.metrics()
        return status

    def _client_address(self, node_id: int | None) -> str | None:
        if node_id is None or not 0 <= node_id < len(self.client_addresses):
            return None
        return self.client_addresses[node_id]
