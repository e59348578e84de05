"""KVNode: one replica of the KV service, a Node and a KVServer started and stopped together.

Owns only their lifecycle and order: the Node starts before the client port
opens, and the client port closes before the Node stops, so no client is
ever answered by a half-started or half-stopped replica. The client port
takes the Node's `secret` as its token unless told otherwise, so a cluster
whose peers authenticate also authenticates its clients.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

from raftio.kv.machine import KVStateMachine
from raftio.kv.server import KVServer
from raftio.node import Node

__all__ = ["KVNode"]

FROM_SECRET: Final = "from-secret"  # KVNode's default kv_token: the Node's secret


class KVNode:
    """A KV replica: `Node(node_id, peers, data_dir, KVStateMachine())` plus its KVServer.

    Args:
        node_id: this node's id: a key (an index, if lists) of `peers` and `client_peers`.
        peers: Raft "host:port" by node id (a mapping, or a list indexed by id):
            the first configuration of a new cluster; with `join=True` (a
            node_option), at least this node's own.
        client_peers: client "host:port" by node id, naming the same nodes.
        data_dir: the node's FileStorage directory.
        client_timeout: seconds a client request may wait inside the node.
        kv_token: the token clients must prove they hold; by default the
            Node's `secret` (none if the node has none); None serves the
            client port without a token.
        kv_options: more KVServer keywords (limits: max_connections,
            max_pending, idle_timeout, frame_timeout, max_sessions, ...).
        **node_options: passed to Node (cluster_id, secret, snapshot_bytes, ...).
    """

    def __init__(
        self,
        node_id: int,
        peers: Sequence[str] | Mapping[int, str],
        client_peers: Sequence[str] | Mapping[int, str],
        data_dir: str | Path | None,
        *,
        client_timeout: float = 2.0,
        kv_token: bytes | str | None = FROM_SECRET,
        kv_options: Mapping[str, Any] | None = None,
        **node_options: Any,
    ) -> None:
        if kv_token == FROM_SECRET:
            kv_token = node_options.get("secret")
        if isinstance(kv_token, str):
            raise TypeError("kv_token must be bytes or None")
        self.machine = KVStateMachine()
        self.node = Node(node_id, peers, data_dir, self.machine, **node_options)
        self.server = KVServer(
            self.node,
            self.machine,
            client_peers,
            timeout=client_timeout,
            token=kv_token,
            **(kv_options or {}),
        )

    async def start(self) -> None:
        try:
            await self.node.start()
            await self.server.start()
        except BaseException:
            # Node.start may fail after starting its peer (a Raft port in use).
            await self.node.close()
            raise

    async def close(self) -> None:
        await self.server.close()
        await self.node.close()

    async def __aenter__(self) -> KVNode:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
