"""The progress display of `raftio bench`, on stderr.

On a terminal one status line is redrawn about four times a second (which
point, how far into its window); every finished point leaves one summary
line above it. Elsewhere (CI, a pipe) only the summary lines are printed.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from typing import TextIO

__all__ = ["Progress"]

_REDRAW = 0.25


class Progress:
    def __init__(self, total: int, stream: TextIO | None = None, live: bool | None = None) -> None:
        self.total = total
        self.done = 0
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty() if live is None else live
        self._label = ""
        self._started = 0.0
        self._expected = 0.0
        self._ticker: asyncio.Task[None] | None = None
        self._run_started = time.monotonic()

    def note(self, text: str) -> None:
        """A line of its own (a phase, a skipped peer)."""
        self._clear()
        print(text, file=self.stream, flush=True)
        self._draw()

    def begin(self, label: str, expected_seconds: float) -> None:
        self._label = label
        self._started = time.monotonic()
        self._expected = expected_seconds
        if self.live and self._ticker is None:
            self._ticker = asyncio.ensure_future(self._tick())
        self._draw()

    def end(self, summary: str) -> None:
        self.done += 1
        self._label = ""
        self._clear()
        print(f"[{self.done}/{self.total}] {summary}", file=self.stream, flush=True)

    async def close(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
            self._ticker = None
        self._clear()

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(_REDRAW)
            self._draw()

    def _line(self) -> str:
        elapsed = time.monotonic() - self._started
        total = time.monotonic() - self._run_started
        bar_width = 20
        filled = min(bar_width, int(bar_width * elapsed / self._expected)) if self._expected else 0
        bar = "#" * filled + "." * (bar_width - filled)
        return (
            f"[{self.done + 1}/{self.total}] {self._label} [{bar}] "
            f"{elapsed:4.1f}/{self._expected:.0f}s  (total {total:4.0f}s)"
        )

    def _draw(self) -> None:
        if self.live and self._label:
            self.stream.write("\r\x1b[2K" + self._line())
            self.stream.flush()

    def _clear(self) -> None:
        if self.live:
            self.stream.write("\r\x1b[2K")
            self.stream.flush()
