"""KVStateMachine: the replicated key/value state and its duplicate-detection table.

Owns the meaning of KV commands and nothing else: no I/O, no clock, no
asyncio. Commands are tuples, as `propose()` replicates them:

    ("put", key, value, client, seq)      -> the key's new value
    ("append", key, value, client, seq)   -> the key's new value

Every write names its client and that client's sequence number. A client
has at most one write outstanding and numbers them 1, 2, 3...; the table
`sessions[client] = (last seq, last result)` lets a retried write (same
client, same seq) apply once and answer its original result, however many
times it reaches the log. The table is part of the snapshot, so a replica
restored from one still recognises retries.
"""

from __future__ import annotations

import hashlib
from typing import Any

from raftio.codec import pack, unpack

__all__ = ["MAX_VALUE", "WRITE_OPS", "KVStateMachine", "write_command"]

WRITE_OPS = frozenset({"put", "append"})
MAX_VALUE = 128 * 1024  # characters (<= 512 KiB of UTF-8): any reply fits in one frame


def write_command(op: str, key: str, value: str, client: str, seq: int) -> tuple[Any, ...]:
    """The command a client's write is replicated as."""
    return (op, key, value, client, seq)


class KVStateMachine:
    """A dict of str -> str with exactly-once writes. Deterministic: every replica agrees."""

    def __init__(self) -> None:
        self.data: dict[str, str] = {}
        # client -> (seq of its last applied write, that write's result)
        self.sessions: dict[str, tuple[int, str | None]] = {}

    def apply(self, command: Any) -> str | None:
        """Apply one committed write; a duplicate returns the first application's result."""
        op, key, value, client, seq = _check_command(command)
        last_seq, last_result = self.sessions.get(client, (0, None))
        if seq <= last_seq:
            # A retry of the last write answers as it did; an older one is a
            # stray the client no longer waits for, and changes nothing.
            return last_result if seq == last_seq else None
        result = value if op == "put" else self.data.get(key, "") + value
        if len(result) > MAX_VALUE:
            # Refused the same way on every replica; not recorded, so a retry
            # is judged afresh (its sender only ever sees one outcome).
            raise ValueError(f"{key!r:.40} would hold {len(result)} characters, over {MAX_VALUE}")
        self.data[key] = result
        self.sessions[client] = (seq, result)
        return result

    def query(self, key: str) -> str | None:
        """The value of `key` (None if absent); Node.read calls it after its barrier."""
        return self.data.get(key)

    def snapshot(self) -> bytes:
        sessions = {client: [seq, result] for client, (seq, result) in self.sessions.items()}
        return pack({"data": self.data, "sessions": sessions})

    def restore(self, data: bytes) -> None:
        state = unpack(data)
        self.data = dict(state["data"])
        sessions = state["sessions"].items()
        self.sessions = {client: (seq, result) for client, (seq, result) in sessions}

    def digest(self) -> str:
        """A short fingerprint of the whole state: replicas agree iff their digests do."""
        h = hashlib.sha256()
        for key in sorted(self.data):
            h.update(pack(["d", key, self.data[key]]))
        for client in sorted(self.sessions):
            h.update(pack(["s", client, *self.sessions[client]]))
        return h.hexdigest()[:16]


def _check_command(command: Any) -> tuple[str, str, str, str, int]:
    # Only the KV server proposes, and it validates requests first; a command
    # that still fails here is rejected identically on every replica.
    if not (isinstance(command, tuple) and len(command) == 5):
        raise ValueError(f"not a KV command: {command!r:.80}")
    op, key, value, client, seq = command
    if (
        op not in WRITE_OPS
        or not isinstance(key, str)
        or not isinstance(value, str)
        or not isinstance(client, str)
        or type(seq) is not int
    ):
        raise ValueError(f"malformed KV command: {command!r:.80}")
    return op, key, value, client, seq
