"""WorkerThread (raftio.storage.worker): FileStorage's one thread for blocking writes.

Jobs run one at a time, in submission order, on one daemon thread; each
result (or exception) comes back to `done` on the event loop thread. On a
VirtualClockEventLoop the worker reports its jobs as thread work, so the
virtual clock follows real time, rather than jumping to the next timer,
while a job runs.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from typing import Any

import pytest

from raftio.storage.worker import WorkerThread
from raftio.testing import LOOP_KINDS, LoopKind, VirtualClockEventLoop, run

_names = itertools.count()


def new_worker() -> WorkerThread:
    return WorkerThread(f"test-worker-{next(_names)}")


class Outcomes:
    """`done` callbacks that record (result, exception, thread) and count down to `all_done`."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.got: list[tuple[Any, BaseException | None, int]] = []
        self.all_done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def done(self, result: Any, exc: BaseException | None) -> None:
        self.got.append((result, exc, threading.get_ident()))
        if len(self.got) == self.expected:
            self.all_done.set_result(None)


@pytest.mark.parametrize("kind", LOOP_KINDS)
def test_jobs_run_in_order_on_one_thread_and_results_arrive_on_the_loop(kind: LoopKind) -> None:
    n = 500
    ran: list[int] = []
    job_threads: set[threading.Thread] = set()

    def job(i: int) -> int:
        job_threads.add(threading.current_thread())
        ran.append(i)
        return i * i

    async def main() -> tuple[Outcomes, int]:
        worker = new_worker()
        outcomes = Outcomes(n)
        for i in range(n):
            worker.submit(lambda i=i: job(i), outcomes.done)
        await asyncio.wait_for(outcomes.all_done, 30)
        worker.stop()
        return outcomes, threading.get_ident()

    outcomes, loop_thread = run(main(), kind)

    assert ran == list(range(n))
    assert [(result, exc) for result, exc, _ in outcomes.got] == [(i * i, None) for i in range(n)]
    assert {thread for _, _, thread in outcomes.got} == {loop_thread}
    (worker_thread,) = job_threads
    assert worker_thread.ident != loop_thread
    assert worker_thread.daemon
    worker_thread.join(5)
    assert not worker_thread.is_alive()  # stop() ended it


class Fatal(BaseException):
    """Not an Exception: the worker must still hand it to the loop, not die of it."""


@pytest.mark.parametrize("kind", LOOP_KINDS)
def test_exceptions_are_delivered_to_done_on_the_loop(kind: LoopKind) -> None:
    boom, fatal = ValueError("boom"), Fatal("fatal")

    def raise_(exc: BaseException) -> Any:
        raise exc

    async def main() -> tuple[Outcomes, int]:
        worker = new_worker()
        outcomes = Outcomes(4)
        worker.submit(lambda: "before", outcomes.done)
        worker.submit(lambda: raise_(boom), outcomes.done)
        worker.submit(lambda: raise_(fatal), outcomes.done)
        worker.submit(lambda: "after", outcomes.done)
        await asyncio.wait_for(outcomes.all_done, 30)
        worker.stop()
        return outcomes, threading.get_ident()

    outcomes, loop_thread = run(main(), kind)

    assert outcomes.got == [
        ("before", None, loop_thread),
        (None, boom, loop_thread),
        (None, fatal, loop_thread),
        ("after", None, loop_thread),  # the thread survived both
    ]


def test_submit_after_stop_raises() -> None:
    async def main() -> None:
        worker = new_worker()
        outcomes = Outcomes(1)
        worker.submit(lambda: 1, outcomes.done)
        await outcomes.all_done
        worker.stop()
        with pytest.raises(RuntimeError, match="stopped"):
            worker.submit(lambda: 2, outcomes.done)

        never_started = new_worker()
        never_started.stop()
        with pytest.raises(RuntimeError, match="stopped"):
            never_started.submit(lambda: 3, outcomes.done)

    run(main(), "asyncio")


def test_jobs_submitted_before_stop_still_complete() -> None:
    gate = threading.Event()
    job_threads: list[threading.Thread] = []

    def blocked() -> str:
        job_threads.append(threading.current_thread())
        assert gate.wait(10)
        return "first"

    async def main() -> Outcomes:
        worker = new_worker()
        outcomes = Outcomes(6)
        worker.submit(blocked, outcomes.done)
        for i in range(5):
            worker.submit(lambda i=i: i, outcomes.done)
        worker.stop()  # while the first job is still blocked, five queued behind it
        with pytest.raises(RuntimeError):
            worker.submit(lambda: "too late", outcomes.done)
        gate.set()
        await asyncio.wait_for(outcomes.all_done, 30)
        return outcomes

    outcomes = run(main(), "asyncio")

    assert [(result, exc) for result, exc, _ in outcomes.got] == [
        ("first", None), (0, None), (1, None), (2, None), (3, None), (4, None),
    ]  # fmt: skip
    job_threads[0].join(5)
    assert not job_threads[0].is_alive()


def test_thread_work_counter_returns_to_zero_on_the_virtual_loop() -> None:
    n = 20

    def job(i: int) -> int:
        if i % 3 == 0:
            raise ValueError(i)
        return i

    async def main() -> tuple[int, int, list[int], int]:
        loop = asyncio.get_running_loop()
        assert isinstance(loop, VirtualClockEventLoop)
        worker = new_worker()
        in_flight_at_done: list[int] = []
        outcomes = Outcomes(n)

        def done(result: Any, exc: BaseException | None) -> None:
            in_flight_at_done.append(loop.executor_jobs)
            outcomes.done(result, exc)

        before = loop.executor_jobs
        for i in range(n):
            worker.submit(lambda i=i: job(i), done)
        submitted = loop.executor_jobs  # results are counted off on the loop: not yet
        await asyncio.wait_for(outcomes.all_done, 30)
        worker.stop()
        return before, submitted, in_flight_at_done, loop.executor_jobs

    before, submitted, in_flight_at_done, after = run(main(), "virtual")

    assert (before, submitted, after) == (0, n, 0)
    # Each result is counted off before its done() runs, errors included.
    assert in_flight_at_done == [n - 1 - i for i in range(n)]


def test_a_running_job_holds_back_the_virtual_clock() -> None:
    async def main() -> tuple[Any, float, list[float]]:
        loop = asyncio.get_running_loop()
        worker = new_worker()
        fired: list[float] = []
        loop.call_later(10.0, lambda: fired.append(loop.time()))
        started = loop.time()
        outcomes = Outcomes(1)
        worker.submit(lambda: time.sleep(0.05) or "slept", outcomes.done)

        await outcomes.all_done
        elapsed = loop.time() - started
        early = list(fired)
        worker.stop()
        await asyncio.sleep(10.0)  # the timer still fires, on time
        assert len(fired) == 1
        assert fired[0] - started == pytest.approx(10.0)
        return outcomes.got[0][:2], elapsed, early

    result, elapsed, fired_early = run(main(), "virtual")

    assert result == ("slept", None)
    assert fired_early == []
    # The clock followed the real wait (~0.05 s), not a jump to the 10 s timer.
    assert elapsed < 5.0


def test_a_job_that_outlives_its_loop_ends_the_thread_quietly() -> None:
    gate = threading.Event()
    threads: list[threading.Thread] = []

    name = f"test-worker-{next(_names)}"

    async def main() -> None:
        worker = WorkerThread(name)
        worker.submit(lambda: gate.wait(10), lambda result, exc: None)
        threads.extend(t for t in threading.enumerate() if t.name == name)

    run(main(), "asyncio")  # returns, and closes the loop, with the job still blocked

    (thread,) = threads
    assert thread.is_alive()
    gate.set()  # its result has no loop to go to: the thread ends (no stop() was called)
    thread.join(5)
    assert not thread.is_alive()
