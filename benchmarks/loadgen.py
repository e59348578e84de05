"""Closed-loop load: C workers, each issuing its next operation when the last one returns.

Time is `time.perf_counter()` (CLOCK_MONOTONIC on Linux, so the harness can
hand one measurement window to several processes). Workers start at once;
operations that complete inside [window.start, window.end] are counted and
their latencies kept; the seconds before the window are warm-up. A worker
issues nothing after the window ends; the ones still waiting get a grace
period, then are cancelled.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import os
import time
from array import array
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from benchmarks.stats import encode_samples

__all__ = ["LoadResult", "Window", "closed_loop", "random_values", "wait_until"]

VALUE_POOL = 4096  # distinct values cycled through: none repeats within a zlib window
_DRAIN_GRACE = 10.0  # seconds outstanding operations may take after the window
_ERROR_PAUSE = 0.005  # a worker whose operation failed waits this long before the next


def random_values(payload: int, count: int = VALUE_POOL) -> Iterator[str]:
    """An endless cycle of `count` distinct random ASCII strings of `payload` characters.

    Values must not compress: PySyncObj zlib-compresses every message, and
    a repeated or constant value would shrink to nothing on its wire only.
    """
    pool = [base64.b64encode(os.urandom(payload)).decode("ascii")[:payload] for _ in range(count)]
    return itertools.cycle(pool)


@dataclass(frozen=True, slots=True)
class Window:
    """The measurement window, in perf_counter seconds."""

    start: float
    end: float

    @classmethod
    def after(cls, warmup: float, duration: float) -> Window:
        start = time.perf_counter() + warmup
        return cls(start, start + duration)

    @property
    def seconds(self) -> float:
        return self.end - self.start


@dataclass(slots=True)
class LoadResult:
    samples: array[float] = field(default_factory=lambda: array("d"))
    errors: Counter[str] = field(default_factory=Counter)
    first_error: str = ""
    cancelled: int = 0

    def to_json(self, window: Window) -> dict[str, Any]:
        return {
            "ops": len(self.samples),
            "seconds": window.seconds,
            "samples": encode_samples(self.samples),
            "errors": dict(self.errors),
            "first_error": self.first_error,
            "cancelled": self.cancelled,
        }


async def wait_until(when: float) -> None:
    """Sleep until perf_counter() reaches `when` (loop timers are coarser than that)."""
    delay = when - time.perf_counter()
    if delay > 0:
        await asyncio.sleep(delay)


async def closed_loop(
    make_op: Callable[[int], Callable[[], Awaitable[Any]]],
    concurrency: int,
    window: Window,
) -> LoadResult:
    """Run `concurrency` workers; worker i repeats `make_op(i)()` until the window ends."""
    result = LoadResult()
    samples, errors = result.samples, result.errors
    clock = time.perf_counter
    begin, end = window.start, window.end

    async def worker(i: int) -> None:
        op = make_op(i)
        while True:
            start = clock()
            if start >= end:
                return
            try:
                await op()
            except (asyncio.CancelledError, KeyboardInterrupt):
                raise
            except Exception as exc:
                errors[type(exc).__name__] += 1
                if not result.first_error:
                    result.first_error = f"{type(exc).__name__}: {exc}"
                await asyncio.sleep(_ERROR_PAUSE)
                continue
            done = clock()
            if begin <= done <= end:
                samples.append(done - start)

    tasks = [asyncio.ensure_future(worker(i)) for i in range(concurrency)]
    try:
        await wait_until(end)
        _, pending = await asyncio.wait(tasks, timeout=_DRAIN_GRACE)
        result.cancelled = len(pending)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
    return result
