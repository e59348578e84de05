"""A virtual-clock asyncio event loop, and `run()` to run a coroutine on a chosen loop.

`VirtualClockEventLoop` is a `SelectorEventLoop` whose `time()` is virtual.
Whenever the loop would block waiting for its next timer, it polls real I/O
once (select with timeout 0) and, if nothing is ready, jumps its clock to
that timer instead of sleeping. A test that sleeps for minutes of loop time
finishes as fast as the CPU allows, and every timer fires in the same order,
at the same loop time, as it would in real time.

Real I/O still works: sockets, pipes and the loop's self-pipe are polled on
every pass. While work submitted with `run_in_executor` (or
`asyncio.to_thread`) is in flight, the loop does not jump: it really waits,
and the clock advances by the real time that waiting took, so a timeout
guarding thread work is not fired early.

Only this module may read a real clock (`time.monotonic`), and only to
measure those real waits.

`set_step_hook(callback)` (optional, off by default) calls `callback()` after
every iteration of the loop, once the ready callbacks of that iteration have
run: simulations use it to check invariants after every step.
"""

from __future__ import annotations

import asyncio
import selectors
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import Executor
from typing import Any, Literal, TypeVar, TypeVarTuple, Unpack

__all__ = ["LOOP_KINDS", "LoopKind", "VirtualClockEventLoop", "new_event_loop", "run"]

T = TypeVar("T")
Ts = TypeVarTuple("Ts")

LoopKind = Literal["virtual", "asyncio", "uvloop"]
LOOP_KINDS: tuple[LoopKind, ...] = ("virtual", "asyncio", "uvloop")


class _VirtualSelector(selectors.BaseSelector):
    """Wraps a real selector; `select()` advances the loop's virtual clock instead of sleeping."""

    def __init__(self, real: selectors.BaseSelector) -> None:
        self._real = real
        self.loop: VirtualClockEventLoop | None = None

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.register(fileobj, events, data)

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._real.unregister(fileobj)

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.modify(fileobj, events, data)

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready = self._real.select(0)
        if ready or (timeout is not None and timeout <= 0):
            return ready
        if timeout is None:
            # No timer at all: only I/O or another thread can wake the loop.
            return self._real.select(None)
        assert self.loop is not None
        if self.loop.executor_jobs:
            started = time.monotonic()
            ready = self._real.select(timeout)
            self.loop.advance(time.monotonic() - started)
            return ready
        self.loop.advance(timeout)
        return []

    def close(self) -> None:
        self._real.close()

    def get_key(self, fileobj: Any) -> selectors.SelectorKey:
        return self._real.get_key(fileobj)

    def get_map(self) -> Any:
        return self._real.get_map()


class VirtualClockEventLoop(asyncio.SelectorEventLoop):
    """A selector event loop whose clock jumps to the next timer instead of sleeping.

    `time()` starts at `start` (0.0 by default) and moves only when the loop
    would otherwise sleep. Callbacks take no virtual time.
    """

    def __init__(self, start: float = 0.0) -> None:
        self._virtual_now = float(start)
        self._executor_jobs = 0
        self._step_hook: Callable[[], None] | None = None
        selector = _VirtualSelector(selectors.DefaultSelector())
        super().__init__(selector)
        selector.loop = self

    def time(self) -> float:
        return self._virtual_now

    def advance(self, seconds: float) -> None:
        """Move the virtual clock forward (the selector calls this when it would sleep)."""
        if seconds > 0:
            self._virtual_now += seconds

    def set_step_hook(self, hook: Callable[[], None] | None) -> None:
        """Call `hook()` after every loop iteration (None removes it).

        The hook runs outside any task; an exception it raises propagates out
        of `run_forever`, so a hook should record failures rather than raise.
        """
        self._step_hook = hook

    def _run_once(self) -> None:
        super()._run_once()  # type: ignore[misc]
        hook = self._step_hook
        if hook is not None:
            hook()

    @property
    def executor_jobs(self) -> int:
        """Thread work in flight; while there is any, the clock follows real time."""
        return self._executor_jobs

    def thread_work_started(self) -> None:
        """Another thread is working for this loop (FileStorage's writer calls this)."""
        self._executor_jobs += 1

    def thread_work_done(self) -> None:
        """Called on the loop when that work's result has arrived."""
        self._executor_jobs -= 1

    def run_in_executor(
        self,
        executor: Executor | None,
        func: Callable[[Unpack[Ts]], T],
        *args: *Ts,
    ) -> asyncio.Future[T]:
        future = super().run_in_executor(executor, func, *args)
        self.thread_work_started()
        future.add_done_callback(lambda _: self.thread_work_done())
        return future


def new_event_loop(kind: LoopKind) -> asyncio.AbstractEventLoop:
    """A fresh event loop of the given kind: "virtual", "asyncio" or "uvloop"."""
    if kind == "virtual":
        return VirtualClockEventLoop()
    if kind == "asyncio":
        return asyncio.SelectorEventLoop()
    if kind == "uvloop":
        import uvloop

        loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
        return loop
    raise ValueError(f"unknown loop kind {kind!r}; expected one of {LOOP_KINDS}")


def run(
    coro: Coroutine[Any, Any, T], loop: LoopKind = "asyncio", *, debug: bool | None = None
) -> T:
    """Run `coro` to completion on a fresh event loop of kind `loop`, then close the loop.

    Args:
        coro: the coroutine to run.
        loop: "virtual" (VirtualClockEventLoop), "asyncio" (the stdlib selector
            loop) or "uvloop".
        debug: asyncio debug mode; None keeps the default (PYTHONASYNCIODEBUG).

    Returns:
        What the coroutine returned.
    """
    if loop not in LOOP_KINDS:
        coro.close()
        raise ValueError(f"unknown loop kind {loop!r}; expected one of {LOOP_KINDS}")
    with asyncio.Runner(debug=debug, loop_factory=lambda: new_event_loop(loop)) as runner:
        return runner.run(coro)
