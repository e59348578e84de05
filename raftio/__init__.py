"""raftio: Raft consensus for Python asyncio.

The public names of CONTRACT.md, re-exported; nothing else lives here.
They load on first use, so `import raftio.core` (the pure protocol core)
brings in no event loop, codec, storage or transport.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from raftio.config import RaftConfig
from raftio.messages import ApplyMsg

if TYPE_CHECKING:
    from raftio.factory import make
    from raftio.node import Node
    from raftio.raft import Raft
    from raftio.state_machine import StateMachine, StreamingStateMachine
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
    "StreamingStateMachine",
    "make",
]
__version__ = "0.1.0.dev0"

_LAZY = {
    "FileStorage": "raftio.storage.file",
    "MemoryStorage": "raftio.storage.memory",
    "Node": "raftio.node",
    "StateMachine": "raftio.state_machine",
    "StreamingStateMachine": "raftio.state_machine",
    "Raft": "raftio.raft",
    "make": "raftio.factory",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'raftio' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
