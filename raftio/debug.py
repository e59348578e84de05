"""Per-peer structured debug trace, off unless RAFTIO_DEBUG is set.

``RAFTIO_DEBUG=1`` writes trace lines to stderr; ``RAFTIO_DEBUG=/some/file``
appends them to that file. Each line is tab-separated so tools can split it:

    <loop time>  S<peer>  T<term>  <role>  <topic>  <text>

e.g. ``12.3400	S1	T3	leader	send	->S2 AE T3 prev=4@2 n=1 commit=4``.
Topics: role, vote, append, snap, send, recv, apply, storage, error.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable

TRACE_LOGGER = "raftio.trace"
_configured = False


def trace_enabled() -> bool:
    return bool(os.environ.get("RAFTIO_DEBUG"))


def _configure() -> logging.Logger:
    global _configured
    logger = logging.getLogger(TRACE_LOGGER)
    if not _configured:
        _configured = True
        target = os.environ.get("RAFTIO_DEBUG", "")
        handler: logging.Handler
        if target in ("1", "true", "yes", "stderr"):
            handler = logging.StreamHandler(sys.stderr)
        else:
            handler = logging.FileHandler(target)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
        logger.propagate = False
    return logger


def make_tracer(
    me: int, now: Callable[[], float], status: Callable[[], tuple[int, str]]
) -> Callable[[str, str], None] | None:
    """A trace function for peer `me`, or None when tracing is off.

    `now` is the event loop clock; `status` returns (term, role) at call time.
    """
    if not trace_enabled():
        return None
    logger = _configure()

    def trace(topic: str, text: str) -> None:
        term, role = status()
        logger.debug("%.4f\tS%d\tT%d\t%s\t%s\t%s", now(), me, term, role, topic, text)

    return trace
