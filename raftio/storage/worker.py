"""WorkerThread: one thread that runs FileStorage's blocking writes and fsyncs.

Why not `loop.run_in_executor`: a ThreadPoolExecutor hop costs ~80 us on
this kind of machine (a condition variable the two threads fight over, a
concurrent Future, then a loop callback to copy its result into an asyncio
Future, then a task wake-up). Here the worker sleeps on a plain lock used
as a binary semaphore, and the result comes back as one
`call_soon_threadsafe` straight to the caller's callback: ~10 us a hop.
That hop sits on every commit's critical path, so it matters.
"""

from __future__ import annotations

import asyncio
import collections
import threading
from collections.abc import Callable
from typing import Any

Done = Callable[[Any, BaseException | None], None]


class WorkerThread:
    """Runs submitted calls one at a time, in order, on one daemon thread.

    `submit(fn, done)` returns at once; `done(result, exception)` is later
    called on the event loop. The thread starts on the first submit and ends
    at `stop()`.
    """

    def __init__(self, name: str) -> None:
        self._name = name
        self._jobs: collections.deque[tuple[Callable[[], Any], Done, asyncio.AbstractEventLoop]]
        self._jobs = collections.deque()
        # Released when there may be jobs: the worker drains the queue after every wake,
        # so a release that finds the lock already released loses nothing.
        self._wake = threading.Lock()
        self._wake.acquire()
        self._thread: threading.Thread | None = None
        self._stopping = False

    def submit(self, fn: Callable[[], Any], done: Done) -> None:
        if self._stopping:
            raise RuntimeError("the worker thread is stopped")
        loop = asyncio.get_running_loop()
        # A virtual-clock test loop must not jump its clock while real work runs.
        started = getattr(loop, "thread_work_started", None)
        if started is not None:
            started()
        self._jobs.append((fn, done, loop))
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
            self._thread.start()
        self._release()

    def stop(self) -> None:
        """Let the thread end once the jobs already submitted have run.

        Callers make those jobs fail fast first (FileStorage closes its writer).
        """
        self._stopping = True
        self._release()

    def _release(self) -> None:
        try:
            self._wake.release()
        except RuntimeError:
            pass  # already released: the worker has not woken for the last one yet

    def _run(self) -> None:
        jobs = self._jobs
        while True:
            self._wake.acquire()
            while jobs:
                fn, done, loop = jobs.popleft()
                result: Any = None
                error: BaseException | None = None
                try:
                    result = fn()
                except BaseException as exc:  # handed to the loop, which decides
                    error = exc
                try:
                    loop.call_soon_threadsafe(_finish, loop, done, result, error)
                except RuntimeError:
                    return  # the loop is closed: nobody waits for the result
            if self._stopping:
                return


def _finish(
    loop: asyncio.AbstractEventLoop, done: Done, result: Any, error: BaseException | None
) -> None:
    finished = getattr(loop, "thread_work_done", None)
    if finished is not None:
        finished()
    done(result, error)
