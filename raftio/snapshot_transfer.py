"""Chunked InstallSnapshot (Raft paper Figure 13): the bookkeeping of both ends.

Pure state, no I/O: the core keeps one `Outgoing` per follower it streams
a snapshot to and at most one `Incoming`; the shell moves the bytes.

The protocol is go-back-N over chunks of `snapshot_chunk_bytes`:
- The leader keeps up to `snapshot_chunks_inflight` chunks in flight. Each
  names its transfer (an id the leader never reuses in its term), the
  snapshot (index, term), its offset, the total size and crc32.
- The follower accepts only the chunk at the offset it expects next and
  always answers with that offset (`next_offset`). A chunk it has already
  is a duplicate; one further on means an earlier chunk was lost.
- The leader continues from the follower's offset: after a loss, a
  reordering, a dropped connection or the follower's restart (which
  forgets the transfer and answers 0), it goes back to it.
- The last chunk (`done`) makes the follower verify the size and checksum
  and install; its answer `next_offset == size` ends the transfer.

Peers from before chunking send a whole snapshot in one message (transfer
0, no checksum); a follower still takes those, and answers in their form.
They cannot read chunks: upgrade followers before the leader.
"""

from __future__ import annotations

from dataclasses import dataclass

from raftio.membership import Configuration
from raftio.messages import SnapshotInfo

__all__ = ["Incoming", "Outgoing", "StoreChunk", "TransferKey"]


@dataclass(slots=True)
class Outgoing:
    """A leader's transfer of one snapshot to one follower."""

    transfer: int
    info: SnapshotInfo
    config: Configuration
    sent: int = 0  # the next offset to send
    acked: int = 0  # the follower holds [0, acked), as far as we know
    inflight: int = 0  # chunks sent and not answered yet


@dataclass(frozen=True, slots=True)
class TransferKey:
    """Which transfer a chunk belongs to, as its receiver sees it."""

    term: int
    leader_id: int
    transfer: int
    index: int
    snapshot_term: int
    size: int
    checksum: int


@dataclass(slots=True)
class Incoming:
    """The one transfer a follower is receiving."""

    key: TransferKey
    config: Configuration | None
    next_offset: int = 0  # bytes accepted (handed to the shell to write), in order


@dataclass(frozen=True, slots=True)
class StoreChunk:
    """The core's answer to an accepted chunk: the shell writes it, then reports back.

    The first chunk of a transfer (offset 0) starts a new staged snapshot
    and discards any other; `done` means: then verify, then install.
    """

    key: TransferKey
    offset: int
    data: bytes
    done: bool
