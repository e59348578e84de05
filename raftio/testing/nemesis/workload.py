"""The workload: clients issuing seeded get/put/append operations, recorded in a `History`.

Each client runs one operation at a time. A write whose outcome the
client never learned (TimeoutError) is recorded as unknown. Written
values are unique tokens (`"3.17;"`: client 3, its 17th operation), so a
lost or doubled write shows in any value read.

Never reads a wall clock: every time is the running loop's.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from raftio.testing.lincheck import CallHandle, History

__all__ = ["KvClientLike", "OpMix", "Workload", "token"]


class KvClientLike(Protocol):
    """A client of a key/value service: `raftio.kv.KVClient` (`MemoryKvClient` is one), or yours.

    A call raises TimeoutError when the client gives up without learning
    the outcome (the write may still take effect); a get returns None for
    a key never written.
    """

    async def get(self, key: str) -> str | None: ...

    async def put(self, key: str, value: str) -> Any: ...

    async def append(self, key: str, value: str) -> Any: ...


@dataclass(frozen=True, slots=True)
class OpMix:
    """Relative weights of the operations a workload issues."""

    get: float = 0.35
    put: float = 0.1
    append: float = 0.55


def token(client_id: int, n: int) -> str:
    """The value written by client `client_id`'s `n`th operation: unique, `;`-terminated."""
    return f"{client_id}.{n};"


class Workload:
    """Clients issuing seeded operations, each one at a time, recorded in `history`.

    Args:
        clients: one per concurrent client; client i is `client_id` i in the history.
        keys: the keys operations pick from.
        rng: seeds one stream per client, so a client's choices do not
            depend on how the others' operations interleave.
        mix: operation weights.
        think: (low, high) seconds a client waits between operations.
        history: records into this History (a new one by default).
    """

    def __init__(
        self,
        clients: Sequence[KvClientLike],
        *,
        keys: Sequence[str],
        rng: random.Random,
        mix: OpMix = OpMix(),
        think: tuple[float, float] = (0.0, 0.05),
        history: History | None = None,
    ) -> None:
        self.clients = list(clients)
        self.keys = list(keys)
        self.history = history if history is not None else History()
        self._rngs = [random.Random(rng.getrandbits(64)) for _ in self.clients]
        self._kinds = ("get", "put", "append")
        self._weights = (mix.get, mix.put, mix.append)
        self._think = think
        self._issued = [0] * len(self.clients)  # per client, across runs: tokens stay unique
        self.acknowledged = 0
        self.unknown = 0

    async def run(self, duration: float) -> None:
        """Issue operations for `duration` seconds; returns once every client's last one ends.

        May be called again: values written stay unique across runs.
        """
        until = asyncio.get_running_loop().time() + duration
        await asyncio.gather(*(self._client(i, until) for i in range(len(self.clients))))

    async def _client(self, client_id: int, until: float) -> None:
        loop = asyncio.get_running_loop()
        rng, client = self._rngs[client_id], self.clients[client_id]
        while loop.time() < until:
            self._issued[client_id] += 1
            kind = rng.choices(self._kinds, self._weights)[0]
            key = rng.choice(self.keys)
            value = None if kind == "get" else token(client_id, self._issued[client_id])
            await self.perform(client_id, client, kind, key, value)
            await asyncio.sleep(rng.uniform(*self._think))

    async def perform(
        self, client_id: int, client: KvClientLike, kind: str, key: str, value: str | None = None
    ) -> CallHandle:
        """Run one operation through `client` and record it; returns its handle in `history`."""
        handle = self.history.record_call(client_id, kind, key, value)
        try:
            if kind == "get":
                output: str | None = await client.get(key) or ""
            else:
                assert value is not None
                result = await (
                    client.put(key, value) if kind == "put" else client.append(key, value)
                )
                output = result if isinstance(result, str) else None
        except TimeoutError:
            self.history.record_unknown(handle)
            self.unknown += 1
        else:
            self.history.record_return(handle, output)
            self.acknowledged += 1
        return handle
