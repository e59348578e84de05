"""The child side of the control channel: JSON lines on stdin, replies on stdout.

Every process the harness starts (bench nodes, PySyncObj nodes, load clients)
reads one JSON object per line from stdin and answers each with one JSON
line on stdout, in order; logs go to stderr. End of stdin means the harness
is gone: the child stops. Each child also asks the kernel to SIGKILL it if
the harness dies (`die_with_parent`), so no run leaves processes behind.

    -> {"cmd": "status"}
    <- {"ok": true, "role": "leader", ...}
    -> {"cmd": "quit"}
    <- {"ok": true}
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import logging
import os
import signal
import sys
import traceback
from collections.abc import Awaitable, Callable
from typing import Any

__all__ = [
    "Handler",
    "die_with_parent",
    "reply_line",
    "run_loop",
    "serve_stdin",
    "serve_stdin_sync",
]

logger = logging.getLogger(__name__)

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]
_PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int | None = None) -> None:
    """Ask Linux to SIGKILL this process when its parent exits (no-op elsewhere)."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if parent_pid is not None and os.getppid() != parent_pid:
        os._exit(1)  # the parent died before the request took effect


def reply_line(reply: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(reply, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def _error(exc: BaseException) -> dict[str, Any]:
    return {"ok": False, "error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()}


async def serve_stdin(handler: Handler) -> None:
    """Answer control lines until `quit` or end of stdin (asyncio children)."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 20)
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), sys.stdin
    )
    try:
        while line := await reader.readline():
            request = json.loads(line)
            try:
                reply = await handler(request)
            except Exception as exc:
                logger.exception("control command %s failed", request.get("cmd"))
                reply = _error(exc)
            reply_line(reply)
            if request.get("cmd") == "quit":
                return
    finally:
        transport.close()


def serve_stdin_sync(handler: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
    """Answer control lines until `quit` or end of stdin (threaded children)."""
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        try:
            reply = handler(request)
        except Exception as exc:
            logger.exception("control command %s failed", request.get("cmd"))
            reply = _error(exc)
        reply_line(reply)
        if request.get("cmd") == "quit":
            return


def run_loop(main: Awaitable[Any], loop_kind: str) -> Any:
    """Run `main` on a fresh event loop: "uvloop" (default where installed) or "asyncio"."""
    factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    if loop_kind == "uvloop":
        import uvloop

        factory = uvloop.new_event_loop

    async def wrapper() -> Any:
        return await main

    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(wrapper())
