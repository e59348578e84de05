"""raftio: Raft consensus for Python asyncio.

The public names of CONTRACT.md, re-exported; nothing else lives here.
"""

from raftio.config import RaftConfig
from raftio.messages import ApplyMsg
from raftio.raft import Raft, make
from raftio.storage.memory import MemoryStorage

__all__ = ["ApplyMsg", "MemoryStorage", "Raft", "RaftConfig", "make"]
__version__ = "0.1.0.dev0"
