"""KVNode: one replica of the KV service, a Node and a KVServer started and stopped together.

Owns only their lifecycle and order: the Node starts before the client port
opens, and the client port closes before the Node stops, so no client is
ever answered by a half-started or half-stopped replica.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from raftio.kv.machine import KVStateMachine
from raftio.kv.server import KVServer
from raftio.node import Node

__all__ = ["KVNode"]


class KVNode:
    """A KV replica: `Node(node_id, peers, data_dir, KVStateMachine())` plus its KVServer.

    Args:
        node_id: this node's index in `peers` and `client_peers`.
        peers: every node's Raft "host:port".
        client_peers: every node's client "host:port".
        data_dir: the node's FileStorage directory.
        client_timeout: seconds a client request may wait inside the node.
        **node_options: passed to Node (cluster_id, secret, snapshot_bytes, ...).
    """

    def __init__(
        self,
        node_id: int,
        peers: Sequence[str],
        client_peers: Sequence[str],
        data_dir: str | Path | None,
        *,
        client_timeout: float = 2.0,
        **node_options: Any,
    ) -> None:
        self.machine = KVStateMachine()
        self.node = Node(node_id, peers, data_dir, self.machine, **node_options)
        self.server = KVServer(self.node, self.machine, client_peers, timeout=client_timeout)

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
