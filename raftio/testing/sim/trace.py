"""The event trace of a simulation: RAFTIO_DEBUG-style lines, a digest and a tail.

Every peer's tracer (the `trace` callable raftio's core and shell call, see
raftio/debug.py) and the nemesis write here. Lines have RAFTIO_DEBUG's
tab-separated layout::

    <loop time>  S<peer>  T<term>  <role>  <topic>  <text>

The nemesis and checker write ``-`` for peer, term and role. The trace keeps
the last `keep` lines for failure reports, a running blake2b digest of every
line (same seed => same digest), and, if asked, every line.
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Callable

Tracer = Callable[[str, str], None]


class Trace:
    """Collects trace lines from every peer of one simulation."""

    def __init__(self, now: Callable[[], float], keep: int = 200, full: bool = False) -> None:
        self._now = now
        self._tail: deque[str] = deque(maxlen=keep)
        self._digest = hashlib.blake2b(digest_size=16)
        self.lines: list[str] | None = [] if full else None
        self.count = 0

    def add(self, who: str, term: str, role: str, topic: str, text: str) -> None:
        line = f"{self._now():.4f}\t{who}\t{term}\t{role}\t{topic}\t{text}"
        self._tail.append(line)
        self._digest.update(line.encode())
        self._digest.update(b"\n")
        self.count += 1
        if self.lines is not None:
            self.lines.append(line)

    def event(self, topic: str, text: str) -> None:
        """A line from the simulation itself (nemesis, checker, client)."""
        self.add("-", "-", "-", topic, text)

    def tracer(self, me: int, status: Callable[[], tuple[int, str]]) -> Tracer:
        """A `trace(topic, text)` callable for peer `me`; `status` gives (term, role)."""
        who = f"S{me}"

        def trace(topic: str, text: str) -> None:
            term, role = status()
            self.add(who, f"T{term}", role, topic, text)

        return trace

    def tail(self, n: int | None = None) -> list[str]:
        lines = list(self._tail)
        return lines if n is None else lines[-n:]

    def digest(self) -> str:
        return self._digest.hexdigest()
