"""What a server counts and logs when it refuses or drops a connection.

Owns `DropLog`: one counter per reason (for a metrics export) and log lines
rate-limited per key, so that a peer hammering a port costs a bounded number
of log lines however fast it hammers (docs/wire.md, "Limits"). Pure: time
comes from the clock it is given (the event loop's), and it never imports
sockets or asyncio.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

__all__ = ["DEFAULT_LOG_INTERVAL", "DropLog"]

DEFAULT_LOG_INTERVAL = 10.0  # seconds: at most one line per key per interval
_MAX_KEYS = 64  # distinct keys tracked; beyond, new keys share one "(other)" slot
_OTHER = "(other)"


class DropLog:
    """Counts refusals by reason and logs at most one line per key per interval.

    `note(reason, key, level, fmt, *args)` counts one `reason` and logs the
    line unless a line of the same `key` was logged less than `interval`
    seconds ago; a line logged after a quiet spell says how many of its key
    were suppressed meanwhile. The keys a caller chooses (a reason, or a
    reason and a node id) are capped at 64 distinct ones, so a peer making up
    keys (node ids, say) cannot grow the table or the log.
    """

    __slots__ = ("_clock", "_logger", "_seen", "counts", "interval")

    def __init__(self, logger: logging.Logger, clock: Callable[[], float], interval: float) -> None:
        self._logger = logger
        self._clock = clock
        self.interval = interval
        self.counts: dict[str, int] = {}  # reason -> events, logged or not
        self._seen: dict[str, list[float]] = {}  # key -> [last logged at, suppressed since]

    def note(self, reason: str, key: str, level: int, fmt: str, *args: object) -> None:
        self.counts[reason] = self.counts.get(reason, 0) + 1
        self._write(key, level, fmt, args)

    def log(self, key: str, level: int, fmt: str, *args: object) -> None:
        """Log one line under `key` if its interval allows, without counting."""
        self._write(key, level, fmt, args)

    def _write(self, key: str, level: int, fmt: str, args: tuple[object, ...]) -> None:
        if not self._logger.isEnabledFor(level):
            return
        now = self._clock()
        if key not in self._seen and len(self._seen) >= _MAX_KEYS:
            self._forget_quiet(now)
            if len(self._seen) >= _MAX_KEYS:
                key = _OTHER
        seen = self._seen.get(key)
        if seen is not None and now - seen[0] < self.interval:
            seen[1] += 1
            return
        if seen is not None and seen[1]:
            fmt += " (%d similar suppressed in the last %.0f s)"
            args = (*args, int(seen[1]), now - seen[0])
        self._seen[key] = [now, 0]
        self._logger.log(level, fmt, *args, stacklevel=3)  # the caller's line, not ours

    def _forget_quiet(self, now: float) -> None:
        # Keys past their interval with nothing suppressed carry no state worth keeping.
        quiet = [
            key
            for key, (at, suppressed) in self._seen.items()
            if now - at >= self.interval and not suppressed
        ]
        for key in quiet:
            del self._seen[key]

    def export(self, name: str, out: dict[str, float]) -> None:
        """Add ``name{reason="..."}`` samples (Prometheus counters) to `out`."""
        for reason, count in sorted(self.counts.items()):
            out[f'{name}{{reason="{reason}"}}'] = count
