"""raftio.testing: the virtual-clock event loop and run()."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import pytest

from raftio.testing import LOOP_KINDS, LoopKind, VirtualClockEventLoop, run


def test_sleeping_jumps_the_clock_without_waiting() -> None:
    async def main() -> float:
        loop = asyncio.get_running_loop()
        started = loop.time()
        await asyncio.sleep(3600)
        return loop.time() - started

    wall = time.perf_counter()
    assert run(main(), loop="virtual") == 3600
    assert time.perf_counter() - wall < 1


def test_timers_fire_in_order_at_their_virtual_time() -> None:
    async def main() -> list[tuple[str, float]]:
        loop = asyncio.get_running_loop()
        fired: list[tuple[str, float]] = []
        done = loop.create_future()
        for name, delay in [("c", 3.0), ("a", 0.5), ("b", 1.25), ("d", 3.0)]:
            loop.call_later(delay, lambda n=name: fired.append((n, loop.time())))  # type: ignore[misc]
        loop.call_later(10, done.set_result, None)
        await done
        return fired

    assert run(main(), loop="virtual") == [("a", 0.5), ("b", 1.25), ("c", 3.0), ("d", 3.0)]


def test_timeouts_use_virtual_time() -> None:
    async def main() -> tuple[bool, float]:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(5):
                await asyncio.Event().wait()
        except TimeoutError:
            return True, loop.time()
        return False, loop.time()

    assert run(main(), loop="virtual") == (True, 5.0)


def test_callbacks_take_no_virtual_time() -> None:
    async def main() -> float:
        loop = asyncio.get_running_loop()
        started = loop.time()
        for _ in range(1000):
            await asyncio.sleep(0)
        time.sleep(0.01)  # noqa: ASYNC251 - real CPU time is invisible to the virtual clock
        return loop.time() - started

    assert run(main(), loop="virtual") == 0


def test_real_socket_io_still_works() -> None:
    async def main() -> bytes:
        async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(await reader.readexactly(5))
            await writer.drain()
            writer.close()
            await writer.wait_closed()

        server = await asyncio.start_server(echo, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"hello")
        data = await reader.readexactly(5)
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()
        return data

    assert run(main(), loop="virtual") == b"hello"


def test_ready_io_is_served_before_the_clock_jumps() -> None:
    async def main() -> tuple[bytes, float]:
        loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair()
        reader, writer = await asyncio.open_connection(sock=ours)
        ticker = asyncio.create_task(asyncio.sleep(100))  # a timer the clock could jump to
        theirs.sendall(b"ping")
        data = await reader.readexactly(4)
        elapsed = loop.time()
        ticker.cancel()
        writer.close()
        theirs.close()
        return data, elapsed

    assert run(main(), loop="virtual") == (b"ping", 0.0)


def test_io_from_a_plain_thread_still_wakes_the_loop() -> None:
    async def main() -> tuple[bytes, float]:
        loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair()
        reader, writer = await asyncio.open_connection(sock=ours)
        sender = threading.Timer(0.05, theirs.sendall, args=(b"ping",))
        sender.start()
        ticker = asyncio.create_task(asyncio.sleep(100))
        data = await reader.readexactly(4)
        elapsed = loop.time()
        ticker.cancel()
        writer.close()
        theirs.close()
        sender.join()
        return data, elapsed

    # A thread the loop does not know about does not hold the clock: it jumps
    # to the 100 s timer, then blocks on real I/O until the data arrives.
    assert run(main(), loop="virtual") == (b"ping", 100.0)


def test_thread_work_is_not_timed_out_by_a_virtual_jump() -> None:
    async def main() -> tuple[str, float]:
        loop = asyncio.get_running_loop()

        def work() -> str:
            time.sleep(0.05)
            return "done"

        result = await asyncio.wait_for(asyncio.to_thread(work), 1)
        return result, loop.time()

    result, elapsed = run(main(), loop="virtual")
    assert result == "done"
    assert 0.04 < elapsed < 1  # the clock followed real time while the thread worked


@pytest.mark.parametrize("kind", LOOP_KINDS)
def test_run_uses_a_fresh_loop_of_each_kind(kind: LoopKind) -> None:
    async def main() -> tuple[str, int]:
        await asyncio.sleep(0.001)
        return type(asyncio.get_running_loop()).__name__, 7

    name, value = run(main(), loop=kind)

    assert value == 7
    expected = {"virtual": "VirtualClockEventLoop", "asyncio": "_UnixSelectorEventLoop"}
    assert name == expected.get(kind, "Loop")


def test_run_rejects_an_unknown_loop_kind() -> None:
    async def main() -> None:
        raise AssertionError("never runs")

    with pytest.raises(ValueError, match="unknown loop kind"):
        run(main(), loop="trio")  # type: ignore[arg-type]


def test_loop_can_start_at_a_given_time() -> None:
    loop = VirtualClockEventLoop(start=1000.0)
    try:
        assert loop.time() == 1000.0
        loop.run_until_complete(asyncio.sleep(5))
        assert loop.time() == 1005.0
    finally:
        loop.close()
