"""raftio.kv: a replicated key/value service built on raftio.Node.

`KVStateMachine` (exactly-once writes), `KVServer` (the client port),
`KVClient` (redirects and retries) and `KVNode` (a replica: Node + server).
The wire format is in `raftio.kv.protocol`; `raftio.kv.local` runs clusters
of node processes on one machine.
"""

from raftio.kv.client import KVClient, KVRequestError, KVUnavailableError
from raftio.kv.machine import KVStateMachine
from raftio.kv.server import KVServer
from raftio.kv.service import KVNode

__all__ = [
    "KVClient",
    "KVNode",
    "KVRequestError",
    "KVServer",
    "KVStateMachine",
    "KVUnavailableError",
]
