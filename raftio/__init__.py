"""raftio: Raft consensus for Python asyncio.

The public names of CONTRACT.md, re-exported; nothing else lives here.
"""

from raftio.config import RaftConfig
from raftio.messages import ApplyMsg
from raftio.node import Node, StateMachine
from raftio.raft import Raft, make
from raftio.storage.file import FileStorage
from raftio.storage.memory import MemoryStorage

__all__ = [
    "ApplyMsg",
    "FileStorage",
    "MemoryStorage",
    "Node",
    "Raft",
    "RaftConfig",
    "StateMachine",
    "make",
]
__version__ = "0.1.0.dev0"
