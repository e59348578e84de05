"""raftio.kv: a replicated key/value service built on raftio.Node.

`KVStateMachine` (writes checked against server-issued sessions), `KVServer` (the client port),
`KVClient` (redirects and retries) and `KVNode` (a replica: Node + server).
The wire format is in `raftio.kv.protocol`; `raftio.kv.local` runs clusters
of node processes on one machine.
"""

from raftio.kv.client import KVClient, KVRequestError, KVSessionError, KVUnavailableError
from raftio.kv.machine import KVStateMachine
from raftio.kv.server import KVServer
from raftio.kv.service import KVNode

__all__ = [
    "KVClient",
    "KVNode",
    "KVRequestError",
    "KVServer",
    "KVSessionError",
    "KVStateMachine",
    "KVUnavailableError",
]
