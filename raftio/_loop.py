"""The event loop the `raftio` command runs on: uvloop where it is installed, else asyncio.

Owns the choice only (`--loop`); the library itself never picks a loop:
`Node` runs on whichever loop its caller started. Never imports the rest
of raftio.
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

__all__ = ["LOOPS", "default_loop", "loop_name", "run"]

T = TypeVar("T")

LOOPS = ("uvloop", "asyncio")


def default_loop() -> str:
    """ "uvloop" if it can be imported here, else "asyncio"."""
    return "uvloop" if importlib.util.find_spec("uvloop") is not None else "asyncio"


def run(main: Coroutine[Any, Any, T], loop: str) -> T:
    """Run `main` to completion on a fresh event loop of kind `loop` (one of LOOPS).

    Raises:
        ValueError: `loop` is not one of LOOPS.
        ImportError: `loop` is "uvloop" and uvloop is not installed.
    """
    factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    if loop == "uvloop":
        try:
            import uvloop
        except ImportError:
            main.close()  # never awaited: no "coroutine was never awaited" warning
            raise
        factory = uvloop.new_event_loop
    elif loop != "asyncio":
        main.close()
        raise ValueError(f"unknown event loop {loop!r}; one of {', '.join(LOOPS)}")
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)


def loop_name(loop: asyncio.AbstractEventLoop | None = None) -> str:
    """ "uvloop" or "asyncio": the kind of `loop` (default: the running loop)."""
    loop = loop or asyncio.get_running_loop()
    return type(loop).__module__.partition(".")[0]
