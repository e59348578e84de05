"""Durable state of a peer: the Storage protocol and its backends.

`FileStorage` is imported on first use, so that importing the protocol (or
`MemoryStorage`) does not load the file backend's threads and `fcntl`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from raftio.storage.base import DurableState, Storage, StorageCorruptError, StorageError
from raftio.storage.memory import MemoryStorage

if TYPE_CHECKING:
    from raftio.storage.file import FileStorage

__all__ = [
    "DurableState",
    "FileStorage",
    "MemoryStorage",
    "Storage",
    "StorageCorruptError",
    "StorageError",
]


def __getattr__(name: str) -> Any:
    if name == "FileStorage":
        from raftio.storage.file import FileStorage

        return FileStorage
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
