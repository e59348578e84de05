"""Futures of `Node.propose()` callers: settled once, and timed out cheaply."""

from __future__ import annotations

import asyncio
import math
from typing import Any

from raftio.errors import ProposalTimeoutError


class ProposalTimers:
    """Times proposals out in 20 ms buckets: one loop timer per bucket, not per call.

    A timer per proposal (call_later, then cancel) costs more than the rest
    of `propose()`'s bookkeeping at high rates. A proposal expires at the
    end of its deadline's bucket: at most GRAIN seconds late.
    """

    GRAIN = 0.02

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._buckets: dict[int, dict[asyncio.Future[Any], int]] = {}

    def add(self, future: asyncio.Future[Any], index: int, timeout: float) -> int:
        """Expire `future` once `timeout` seconds have passed; returns its bucket."""
        key = math.ceil((self._loop.time() + timeout) / self.GRAIN)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = {}
            self._loop.call_at(key * self.GRAIN, self._fire, key)
        bucket[future] = index
        return key

    def discard(self, key: int, future: asyncio.Future[Any]) -> None:
        bucket = self._buckets.get(key)
        if bucket is not None:
            bucket.pop(future, None)

    def _fire(self, key: int) -> None:
        for future, index in self._buckets.pop(key, {}).items():
            settle(
                future, exc=ProposalTimeoutError(f"command at index {index} not applied in time")
            )


def settle(
    future: asyncio.Future[Any], *, result: Any = None, exc: Exception | None = None
) -> None:
    if future.done():
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)
