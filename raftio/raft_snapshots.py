"""The shell's snapshot half: a mixin of `Raft` (raftio/raft.py).

Taking a streamed snapshot (`snapshot_from`), receiving one chunk by chunk
(`install_snapshot`: the core judges each chunk, `Staging` writes it, the
last one is verified and installed), and handing an installed snapshot to
the service (`_snapshot_msgs`). The leader's side, filling the chunks the
core sends, is `ChunkPump` (raftio/snapshot_stream.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterable, Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

from raftio.core import RaftCore
from raftio.messages import (
    ApplyMsg,
    ApplySnapshot,
    InstallSnapshotArgs,
    InstallSnapshotReply,
    StagedSnapshot,
    describe,
    rpc_method,
)
from raftio.metrics import PeerMetrics
from raftio.snapshot_stream import Staging
from raftio.snapshot_transfer import StoreChunk, TransferKey
from raftio.storage.base import Storage, StorageError
from raftio.storage.snapshot import SnapshotReader, discard_staged, read_all, staged_bytes
from raftio.transport.limits import DropLog

R = TypeVar("R")


class SnapshotRpcs:
    """Streamed snapshots, as methods of `Raft`."""

    # The shell's state these methods use (Raft.__init__ sets it).
    me: int
    _core: RaftCore
    _storage: Storage
    _staging: Staging
    _killed: bool
    _metrics: PeerMetrics
    _refusal_log: DropLog
    _loop: asyncio.AbstractEventLoop
    _trace: Callable[[str, str], None] | None
    _validate_snapshot: Callable[[bytes], object] | None
    _restore: Callable[[SnapshotReader], Awaitable[None]] | None

    if TYPE_CHECKING:  # the shell's own methods these call

        def _drain(self) -> None: ...
        def _fail(self, what: str) -> None: ...
        async def _settle(self, reply: R | None) -> R | None: ...
        def _handle_reply(
            self,
            peer: int,
            method: str,
            request: InstallSnapshotArgs,
            started: float,
            reply: object,
        ) -> object: ...

    async def snapshot_from(self, index: int, chunks: AsyncIterable[bytes]) -> bool:
        """Like `snapshot`, for a state of any size: its bytes arrive as `chunks`.

        They are streamed into storage (never whole in memory) while the peer
        keeps running; the log is compacted once they are durable. Returns
        False if a newer snapshot made this one useless meanwhile.
        """
        core = self._core
        term = core.log.term_at(index)
        if self._killed or index <= core.log.snapshot_index or term is None:
            return False
        if index > core.applied_index:
            raise ValueError(f"snapshot index {index} is past the applied index")
        try:
            writer = self._storage.create_snapshot(index, term)
        except StorageError as exc:
            self._fail(f"storage failed creating a snapshot: {exc}")
            raise
        try:
            async for chunk in chunks:
                await writer.write(chunk)
            staged = await writer.finish()
        except StorageError as exc:
            writer.abort()
            self._fail(f"storage failed writing a snapshot: {exc}")
            raise
        except BaseException:
            writer.abort()
            raise
        if self._killed or index <= core.log.snapshot_index or core.log.term_at(index) != term:
            discard_staged(staged)
            return False
        core.compact(index, staged)
        self._drain()
        return True

    async def install_snapshot(self, args: InstallSnapshotArgs) -> InstallSnapshotReply | None:
        """One chunk: the core judges it, we write it, the last one installs (§7)."""
        if self._killed or not isinstance(args, InstallSnapshotArgs):
            return None
        if self._trace:
            self._trace("recv", describe(args))
        self._metrics.received("install_snapshot")
        core = self._core
        try:
            verdict = core.handle_install_snapshot(args)
        except Exception:
            self._fail("handling " + describe(args))
            return None
        if not isinstance(verdict, StoreChunk):
            return await self._settle(verdict)
        self._drain()  # a new term or leader: persisted while the chunk is written
        key = verdict.key
        writer = self._staging.writer_for(key, verdict.offset)
        if writer is None:
            return None
        try:
            await writer.write(verdict.data)
            if not verdict.done:
                return await self._settle(
                    core.chunk_stored(key, verdict.offset + len(verdict.data))
                )
            staged = await writer.finish()
        except StorageError as exc:
            if self._staging.key == key and not self._killed:
                self._fail(f"storage failed writing a snapshot: {exc}")
            return None  # else: superseded meanwhile, and its writer aborted
        self._staging.release(key)
        return await self._settle(self._install(key, staged))

    def _install(self, key: TransferKey, staged: StagedSnapshot) -> InstallSnapshotReply | None:
        """Verify a received snapshot, then have the core install it."""
        core = self._core
        reply: InstallSnapshotReply | None = None
        if staged.size != key.size or (key.checksum >= 0 and staged.checksum != key.checksum):
            core.drop_incoming(key, "snapshot_checksum")
            self._refusal_log.log(
                "snapshot",
                logging.WARNING,
                "S%d: a snapshot from S%d fails its checksum (%d bytes); asking again",
                self.me,
                key.leader_id,
                staged.size,
            )
        elif self._validate_snapshot is not None and not self._valid(key, staged):
            core.drop_incoming(key, "snapshot_invalid")
        else:
            reply = core.install_staged(key, staged)
            if reply is not None:
                return reply
        discard_staged(staged)
        return reply

    def _valid(self, key: TransferKey, staged: StagedSnapshot) -> bool:
        """The service checks the state would restore before anything is persisted."""
        assert self._validate_snapshot is not None
        try:
            self._validate_snapshot(staged_bytes(staged))
        except Exception as exc:
            self._refusal_log.log(
                "snapshot",
                logging.WARNING,
                "S%d: refused a snapshot from S%d: %.200r",
                self.me,
                key.leader_id,
                exc,
            )
            return False
        return True

    def _chunk_lost(self, peer: int, request: InstallSnapshotArgs) -> None:
        self._handle_reply(peer, rpc_method(request), request, self._loop.time(), None)

    async def _snapshot_msgs(self, installed: ApplySnapshot) -> list[ApplyMsg]:
        """Hand an installed snapshot to the service: streamed to `restore`, or as bytes."""
        reader = self._storage.open_snapshot()
        if reader is None or (reader.info.index, reader.info.term) != (
            installed.index,
            installed.term,
        ):
            if reader is not None:
                reader.close()
            return []  # replaced by a newer one, which the core hands over next
        try:
            if self._restore is not None:
                await self._restore(reader)
                return []
            data = await read_all(reader)
        finally:
            reader.close()
        return [
            ApplyMsg(
                snapshot_valid=True,
                snapshot=data,
                snapshot_term=installed.term,
                snapshot_index=installed.index,
            )
        ]
