"""How `Node` snapshots its state machine and restores it: as bytes or as streams.

A state machine with the bytes API (`snapshot() -> bytes`,
`restore(data)`) is snapshotted in one call, on the loop, and restored
from one `bytes`: fine for small states.

A state machine with the streaming API (`snapshot_stream()`,
`restore_stream(chunks)`, see raftio.state_machine) never needs its whole
state in memory: Node calls `snapshot_stream()` between two applies (the
consistent point) and writes the chunks it yields to storage in the
background while it keeps applying; the peer sends that file to laggards in
chunks, and a follower restores from the chunks of the file it received.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from raftio.metrics import Histogram
from raftio.raft import Raft
from raftio.state_machine import StateMachine, StreamingStateMachine, snapshot_validator
from raftio.storage.base import Storage, StorageError
from raftio.storage.snapshot import SnapshotReader

logger = logging.getLogger(__name__)

READ_CHUNK = 1 << 20  # bytes per chunk handed to restore_stream


def is_streaming(sm: object) -> bool:
    """Whether `sm` has the streaming snapshot API (it is then preferred)."""
    return callable(getattr(sm, "snapshot_stream", None)) and callable(
        getattr(sm, "restore_stream", None)
    )


async def chunks_of(reader: SnapshotReader, chunk: int = READ_CHUNK) -> AsyncIterator[bytes]:
    """The data of a snapshot, `chunk` bytes at a time."""
    offset, size = 0, reader.info.size
    while offset < size:
        data = await reader.read(offset, min(chunk, size - offset))
        if not data:
            raise StorageError(f"the snapshot ends early, at offset {offset} of {size}")
        offset += len(data)
        yield data


class Snapshotter:
    """Takes and restores one Node's snapshots, and counts them for its metrics."""

    def __init__(
        self,
        sm: StateMachine | StreamingStateMachine,
        threshold: int,
        restored: Callable[[int], None],
    ) -> None:
        self._sm = sm
        self._threshold = threshold  # snapshot once the log since the last one is this big
        self._restored = restored  # Node's bookkeeping once a leader's snapshot is in
        self.streaming = is_streaming(sm)
        self.index = 0  # the last snapshot's index (taken or restored)
        self.taken = 0
        self.last_bytes = 0
        self.seconds = Histogram()
        self._task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ restoring

    async def restore_stored(self, storage: Storage) -> None:
        """At start: restore the state machine from the stored snapshot, if any."""
        try:
            if self.streaming:
                reader = storage.open_snapshot()
                if reader is None:
                    return
                try:
                    await self._stream_sm().restore_stream(chunks_of(reader))
                finally:
                    reader.close()
            else:
                data = storage.read_snapshot()
                if data:
                    self._bytes_sm().restore(data)
        except Exception as exc:
            raise StorageError(f"the stored snapshot does not restore: {exc!r:.200}") from exc

    def peer_options(self) -> dict[str, Any]:
        """What `make()` needs: a validator for bytes, or a streaming `restore` hook."""
        if self.streaming:
            return {"validate_snapshot": None, "restore": self._restore_installed}
        return {"validate_snapshot": snapshot_validator(self._bytes_sm()), "restore": None}

    async def _restore_installed(self, reader: SnapshotReader) -> None:
        """A snapshot installed from the leader: stream it into the state machine."""
        await self._stream_sm().restore_stream(chunks_of(reader))
        self._restored(reader.info.index)

    # ------------------------------------------------------------------ taking

    def maybe_take(self, raft: Raft, storage: Storage, applied_index: int) -> None:
        """After a batch of applies: snapshot once the log has grown past the threshold."""
        if applied_index <= self.index or storage.raft_state_size() < self._threshold:
            return
        loop = asyncio.get_running_loop()
        if not self.streaming:
            started = loop.time()
            data = self._bytes_sm().snapshot()
            raft.snapshot(applied_index, data)
            self.index = applied_index
            self._done(len(data), loop.time() - started)
            return
        if self._task is not None:
            return  # one at a time; the next batch tries again once it is done
        stream = self._stream_sm().snapshot_stream()  # the consistent point: now
        self._task = loop.create_task(
            self._take(raft, applied_index, stream, loop.time()), name="snapshot"
        )

    async def _take(
        self, raft: Raft, index: int, stream: AsyncIterator[bytes], started: float
    ) -> None:
        counted = _Counted(stream)
        try:
            if await raft.snapshot_from(index, counted):
                self.index = max(self.index, index)
                self._done(counted.bytes, asyncio.get_running_loop().time() - started)
        except asyncio.CancelledError:
            raise
        except StorageError:
            pass  # the peer has fail-stopped on it (Raft.snapshot_from)
        except Exception:
            logger.exception("S%d: the state machine's snapshot_stream failed", raft.me)
        finally:
            self._task = None

    def _done(self, size: int, seconds: float) -> None:
        self.taken += 1
        self.last_bytes = size
        self.seconds.observe(seconds)

    def note_restored(self, index: int) -> None:
        self.index = max(self.index, index)

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    def _bytes_sm(self) -> StateMachine:
        return self._sm  # type: ignore[return-value]

    def _stream_sm(self) -> StreamingStateMachine:
        return self._sm  # type: ignore[return-value]


class _Counted:
    """Passes a stream's chunks through, counting their bytes."""

    def __init__(self, stream: AsyncIterator[bytes]) -> None:
        self._stream = stream
        self.bytes = 0

    def __aiter__(self) -> _Counted:
        return self

    async def __anext__(self) -> bytes:
        chunk = await self._stream.__anext__()
        self.bytes += len(chunk)
        return bytes(chunk)
