"""The shell's snapshot I/O for a bare `RaftCore`: synchronous, in memory.

Tests and the scenario interpreter drive a core without `Raft`; this plays
the part of raftio/snapshot_stream.py for them: it fills the chunks a
leader's core sends, stages the chunks a follower's core accepts, and
verifies and installs the last one as the shell does.
"""

from __future__ import annotations

import dataclasses
import zlib

from raftio.core import RaftCore
from raftio.messages import (
    InstallSnapshotArgs,
    InstallSnapshotReply,
    SaveSnapshot,
    StagedSnapshot,
)
from raftio.snapshot_transfer import StoreChunk, TransferKey

__all__ = ["MemorySnapshotShell"]


class MemorySnapshotShell:
    """One peer's snapshot bytes and the snapshot it is receiving."""

    def __init__(self, data: bytes = b"") -> None:
        self.data = data  # the current snapshot (what storage holds)
        self._staging: tuple[TransferKey, bytearray] | None = None

    def persisted(self, op: SaveSnapshot) -> None:
        """Storage wrote `op` (call it for every SaveSnapshot the core emits)."""
        self.data = op.data.data if isinstance(op.data, StagedSnapshot) else bytes(op.data)

    def fill(self, core: RaftCore, args: InstallSnapshotArgs) -> InstallSnapshotArgs:
        """The chunk the leader's core asked for, with its data."""
        if args.data or not args.total_size:
            return args
        end = args.offset + core.chunk_length(args)
        return dataclasses.replace(args, data=self.data[args.offset : end])

    def receive(self, core: RaftCore, args: InstallSnapshotArgs) -> InstallSnapshotReply | None:
        """A follower's core takes one chunk; returns its answer, as the shell would."""
        verdict = core.handle_install_snapshot(args)
        if not isinstance(verdict, StoreChunk):
            return verdict
        key = verdict.key
        staging = self._staging
        if staging is None or staging[0] != key:
            if verdict.offset != 0:
                return None
            staging = self._staging = (key, bytearray())
        staging[1].extend(verdict.data)
        if not verdict.done:
            return core.chunk_stored(key, verdict.offset + len(verdict.data))
        self._staging = None
        data = bytes(staging[1])
        crc = zlib.crc32(data)
        if len(data) != key.size or (key.checksum >= 0 and crc != key.checksum):
            core.drop_incoming(key, "snapshot_checksum")
            return None
        staged = StagedSnapshot(key.index, key.snapshot_term, len(data), crc, data=data)
        reply = core.install_staged(key, staged)
        if reply is not None and core.snapshot_info == staged.info:
            self.data = data  # installed (storage writes it with the core's SaveSnapshot)
        return reply
