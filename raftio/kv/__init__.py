"""raftio.kv: a replicated key/value service built on raftio.Node.

`KVStateMachine` (writes checked against server-issued sessions), `KVServer` (the client port),
`KVClient` (redirects and retries), `KVAdmin` (membership changes and leadership
transfer through a KVClient) and `KVNode` (a replica: Node + server).
The wire format is in `raftio.kv.protocol`; `raftio.kv.local` runs clusters
of node processes on one machine.
"""

from raftio.kv.admin_client import KVAdmin
from raftio.kv.client import KVClient, KVRequestError, KVSessionError, KVUnavailableError
from raftio.kv.machine import KVStateMachine
from raftio.kv.server import KVServer
from raftio.kv.service import KVNode

__all__ = [
    "KVAdmin",
    "KVClient",
    "KVNode",
    "KVRequestError",
    "KVServer",
    "KVSessionError",
    "KVStateMachine",
    "KVUnavailableError",
]
