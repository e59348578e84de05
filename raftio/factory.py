"""make(): create and start a Raft peer (CONTRACT.md section 1)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Sequence

from raftio.config import RaftConfig
from raftio.membership import Configuration
from raftio.messages import ApplyMsg
from raftio.raft import Raft
from raftio.storage.base import Storage
from raftio.storage.snapshot import SnapshotReader
from raftio.transport.base import ClientEnd

__all__ = ["make"]


def make(
    peers: Sequence[ClientEnd],
    me: int,
    storage: Storage,
    apply_ch: asyncio.Queue[ApplyMsg] | Callable[[list[ApplyMsg]], None],
    config: RaftConfig | None = None,
    *,
    rng: random.Random | None = None,
    validate_snapshot: Callable[[bytes], object] | None = None,
    tracer: Callable[[str, str], None] | None = None,
    bootstrap: Configuration | None = None,
    connect: Callable[[int, str], ClientEnd] | None = None,
    restore: Callable[[SnapshotReader], Awaitable[None]] | None = None,
) -> Raft:
    """Create and start a Raft peer; call from inside a running event loop.

    Args:
        peers: one client end per peer, this one at index `me`.
        me: this peer's index in `peers`.
        storage: durable state; the peer restores from it and keeps it current.
        apply_ch: committed entries and snapshots are delivered here in order.
            Instead of a queue, a callable may take them: it is called on the
            loop with each batch, in order (the cheaper path `Node` uses).
        config: timing and batching settings (defaults satisfy the lab's limits).
        rng: randomness for election timeouts (seed it for reproducible runs).
        validate_snapshot: called with a leader's snapshot data before it is
            persisted; if it raises, the snapshot is refused (counted in
            metrics) and never installed. `Node` passes its state machine's.
        tracer: called with (topic, text) for every protocol event of this
            peer (the topics of docs/debugging.md), from the first one on;
            without it, RAFTIO_DEBUG decides (raftio.debug).
        bootstrap: the cluster configuration while storage holds none
            (default: every peer of `peers` a voter, ids their indexes).
        connect: makes a client end for a member added later, from its id
            and address (Node passes its TCP connector).
        restore: streams a snapshot installed from the leader to the service,
            in chunks (`await reader.read(offset, n)`), instead of delivering
            its bytes in an ApplyMsg; delivery waits for it to return.
    """
    if bootstrap is None and not 0 <= me < len(peers):
        raise ValueError(f"me={me} is not an index into {len(peers)} peers")
    if not isinstance(apply_ch, asyncio.Queue) and not callable(apply_ch):
        raise TypeError("apply_ch must be an asyncio.Queue or a callable")
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        raise RuntimeError("raftio.make() must be called inside a running event loop") from None
    return Raft(
        peers,
        me,
        storage,
        apply_ch,
        config or RaftConfig(),
        rng or random.Random(),
        validate_snapshot,
        tracer,
        bootstrap,
        connect,
        restore,
    )
