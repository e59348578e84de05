"""Durable state of a peer: the Storage protocol and its backends."""

from raftio.storage.base import DurableState, Storage, StorageCorruptError, StorageError
from raftio.storage.file import FileStorage
from raftio.storage.memory import MemoryStorage

__all__ = [
    "DurableState",
    "FileStorage",
    "MemoryStorage",
    "Storage",
    "StorageCorruptError",
    "StorageError",
]
