"""Three peers made with `raftio.make` on an in-memory network, fully connected."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import raftio
from raftio.storage.base import Storage
from raftio.transport.memory import Network

Tracer = Callable[[str, str], None]


@asynccontextmanager
async def three_peers(
    seed: int,
    storages: Sequence[Storage] | None = None,
    apply_chs: Sequence[Any] | None = None,
    tracers: Sequence[Tracer | None] | None = None,
) -> AsyncIterator[tuple[Network, list[raftio.Raft]]]:
    """Peers 0..2 (MemoryStorage and a queue each unless given); all killed on exit."""
    net, rng, rafts = Network(seed), random.Random(seed), []
    for i in range(3):
        ends = []
        for j in range(3):
            ends.append(net.make_end((i, j)))
            net.connect((i, j), j)
            net.enable((i, j), True)
        raft = raftio.make(
            ends,
            i,
            storages[i] if storages else raftio.MemoryStorage(),
            apply_chs[i] if apply_chs else asyncio.Queue(),
            rng=random.Random(rng.random()),
            tracer=tracers[i] if tracers else None,
        )
        net.add_server(i, raft)
        rafts.append(raft)
    try:
        yield net, rafts
    finally:
        for raft in rafts:
            raft.kill()
        net.cleanup()


def leader_of(rafts: Sequence[raftio.Raft]) -> int:
    """The index of the peer that leads (one must)."""
    return next(i for i, raft in enumerate(rafts) if raft.get_state()[1])
