"""The in-memory network (raftio.transport.memory) against a trivial fake server.

Runs on the virtual clock, so multi-second delays cost nothing and a seed
replays the same faults exactly.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from raftio import codec
from raftio.messages import (
    AppendEntriesArgs,
    AppendEntriesReply,
    Entry,
    InstallSnapshotArgs,
    InstallSnapshotReply,
    RequestVoteArgs,
    RequestVoteReply,
)
from raftio.testing import run
from raftio.transport.memory import MemoryClientEnd, Network


class FakeServer:
    """Answers every RPC; can be told to block, fail, or answer None."""

    def __init__(self) -> None:
        self.seen: list[Any] = []
        self.replies: list[Any] = []
        self.gate: asyncio.Event | None = None  # handlers wait on it when set
        self.entered = 0
        self.finished = 0
        self.mode = "answer"  # or "none" / "raise"

    async def _answer(self, args: Any, reply: Any) -> Any:
        self.seen.append(args)
        self.entered += 1
        if self.gate is not None:
            await self.gate.wait()
        self.finished += 1
        if self.mode == "raise":
            raise RuntimeError("handler bug")
        if self.mode == "none":
            return None
        self.replies.append(reply)
        return reply

    async def request_vote(self, args: RequestVoteArgs) -> Any:
        return await self._answer(args, RequestVoteReply(args.term, vote_granted=True))

    async def append_entries(self, args: AppendEntriesArgs) -> Any:
        match = args.prev_log_index + len(args.entries)
        return await self._answer(args, AppendEntriesReply(args.term, True, match_index=match))

    async def install_snapshot(self, args: InstallSnapshotArgs) -> Any:
        return await self._answer(args, InstallSnapshotReply(args.term))


def wired(net: Network, end_name: str = "c->s", server_name: str = "s") -> MemoryClientEnd:
    end = net.make_end(end_name)
    net.connect(end_name, server_name)
    net.enable(end_name, True)
    return end


def rv(term: int = 1) -> RequestVoteArgs:
    return RequestVoteArgs(term=term, candidate_id=0, last_log_index=0, last_log_term=0)


def on_virtual_clock(body: Callable[[], Awaitable[None]]) -> None:
    async def main() -> None:
        await body()

    run(main(), loop="virtual")


async def timed_call(end: MemoryClientEnd, method: str, args: Any) -> tuple[Any, float]:
    loop = asyncio.get_running_loop()
    started = loop.time()
    reply = await end.call(method, args)
    return reply, loop.time() - started


# --- delivery and copying ------------------------------------------------------


def test_delivers_each_method_and_its_reply() -> None:
    async def body() -> None:
        net, server = Network(seed=1), FakeServer()
        net.add_server("s", server)
        end = wired(net)

        vote = await end.call("request_vote", rv(3))
        append = await end.call(
            "append_entries", AppendEntriesArgs(3, 0, 4, 2, [Entry(3, b"x")], leader_commit=4)
        )
        snap = await end.call("install_snapshot", InstallSnapshotArgs(3, 0, 9, 2, b"snap"))

        assert vote == RequestVoteReply(3, True)
        assert append == AppendEntriesReply(3, True, match_index=5)
        assert snap == InstallSnapshotReply(3)
        assert server.seen[0] == rv(3)
        assert server.seen[1].entries == [Entry(3, b"x")]
        assert server.seen[2].data == b"snap"
        net.cleanup()

    on_virtual_clock(body)


def test_args_and_replies_are_copies() -> None:
    async def body() -> None:
        net, server = Network(seed=1), FakeServer()
        net.add_server("s", server)
        end = wired(net)
        args = AppendEntriesArgs(1, 0, 0, 0, [Entry(1, b"a")])

        call = asyncio.create_task(end.call("append_entries", args))
        await asyncio.sleep(0)  # the call has been sent...
        args.term = 99  # ...so mutating the caller's args afterwards changes nothing
        args.entries.append(Entry(99, b"late"))
        reply = await call

        assert server.seen[0] == AppendEntriesArgs(1, 0, 0, 0, [Entry(1, b"a")])
        assert server.seen[0] is not args
        assert reply == server.replies[0]
        assert reply is not server.replies[0]
        net.cleanup()

    on_virtual_clock(body)


def test_ends_start_disabled_and_unknown_names_are_errors() -> None:
    async def body() -> None:
        net = Network(seed=1)
        net.add_server("s", FakeServer())
        end = net.make_end("e")
        net.connect("e", "s")

        assert await end.call("request_vote", rv()) is None
        with pytest.raises(ValueError, match="already exists"):
            net.make_end("e")
        with pytest.raises(KeyError):
            net.connect("nope", "s")
        with pytest.raises(KeyError):
            net.enable("nope", True)
        net.cleanup()

    on_virtual_clock(body)


# --- failures that are not the network's -----------------------------------------


def test_unknown_method_fails_without_reaching_the_server() -> None:
    async def body() -> None:
        net, server = Network(seed=1), FakeServer()
        net.add_server("s", server)
        end = wired(net)

        assert await end.call("vote_for_me", rv()) is None
        assert server.seen == []
        assert net.rpc_count("s") == 0
        net.cleanup()

    on_virtual_clock(body)


def test_handler_returning_none_fails_the_call() -> None:
    async def body() -> None:
        net, server = Network(seed=1), FakeServer()
        net.add_server("s", server)
        end = wired(net)
        server.mode = "none"

        assert await end.call("request_vote", rv()) is None
        assert server.finished == 1
        net.cleanup()

    on_virtual_clock(body)


def test_handler_exception_is_logged_and_fails_the_call(caplog: pytest.LogCaptureFixture) -> None:
    async def body() -> None:
        net, server = Network(seed=1), FakeServer()
        net.add_server("s", server)
        end = wired(net)
        server.mode = "raise"

        with caplog.at_level(logging.ERROR, logger="raftio.transport.memory"):
            assert await end.call("request_vote", rv()) is None

        assert "RPC handler request_vote of server 's' raised" in caplog.text
        assert "RuntimeError: handler bug" in caplog.text
        net.cleanup()

    on_virtual_clock(body)


# --- disabled ends, missing servers -----------------------------------------------


@pytest.mark.parametrize(("long_delays", "limit"), [(True, 7.0), (False, 0.1)])
def test_disabled_end_or_missing_server_fails_after_a_delay(
    long_delays: bool, limit: float
) -> None:
    async def body() -> None:
        net, server = Network(seed=3), FakeServer()
        net.set_long_delays(long_delays)
        net.add_server("s", server)
        disabled = net.make_end("disabled")
        net.connect("disabled", "s")
        nowhere = wired(net, "nowhere", "missing")

        results = [await timed_call(disabled, "request_vote", rv()) for _ in range(20)]
        results += [await timed_call(nowhere, "request_vote", rv()) for _ in range(20)]

        assert all(reply is None for reply, _ in results)
        delays = [elapsed for _, elapsed in results]
        assert all(0 <= d < limit for d in delays)
        assert max(delays) > limit / 4  # really delayed, not failed at once
        assert server.seen == []
        assert net.total_count() == 40
        net.cleanup()

    on_virtual_clock(body)


def test_delete_server_drops_reply_of_call_in_flight() -> None:
    async def body() -> None:
        net, server = Network(seed=1), FakeServer()
        net.add_server("s", server)
        end = wired(net)
        server.gate = asyncio.Event()

        call = asyncio.create_task(timed_call(end, "request_vote", rv()))
        await asyncio.sleep(0.01)
        assert server.entered == 1
        net.delete_server("s")
        reply, elapsed = await call

        assert reply is None
        assert elapsed <= 0.1 + 1e-9  # the caller noticed within one poll
        server.gate.set()
        await asyncio.sleep(0)
        assert server.finished == 1  # the handler ran on; only its reply was lost
        assert await end.call("request_vote", rv()) is None
        net.cleanup()

    on_virtual_clock(body)


@pytest.mark.parametrize("change", ["replace_server", "disable_end"])
def test_reply_lost_when_server_replaced_or_end_disabled_mid_call(change: str) -> None:
    async def body() -> None:
        net, old = Network(seed=1), FakeServer()
        net.add_server("s", old)
        end = wired(net)
        old.gate = asyncio.Event()

        call = asyncio.create_task(end.call("request_vote", rv()))
        await asyncio.sleep(0.01)
        if change == "replace_server":
            net.add_server("s", FakeServer())
        else:
            net.enable("c->s", False)
        old.gate.set()

        assert await call is None
        assert old.finished == 1
        net.cleanup()

    on_virtual_clock(body)


# --- unreliable mode and reordering ------------------------------------------------


def unreliable_pattern(seed: int, calls: int = 300) -> tuple[list[bool], list[float], int]:
    """Which of `calls` sequential calls succeed on an unreliable network, and their latencies."""

    async def main() -> tuple[list[bool], list[float], int]:
        net, server = Network(seed=seed), FakeServer()
        net.set_reliable(False)
        net.add_server("s", server)
        end = wired(net)
        results = [await timed_call(end, "request_vote", rv(i)) for i in range(calls)]
        net.cleanup()
        return (
            [reply is not None for reply, _ in results],
            [t for _, t in results],
            len(server.seen),
        )

    return run(main(), loop="virtual")


def test_unreliable_drops_are_seeded_and_reproducible() -> None:
    delivered, latencies, reached_server = unreliable_pattern(seed=42)
    again, latencies_again, _ = unreliable_pattern(seed=42)
    other, _, _ = unreliable_pattern(seed=43)

    assert delivered == again
    assert latencies == latencies_again
    assert other != delivered
    # 10% of requests lost, then 10% of replies: about 19% of calls fail.
    failed = delivered.count(False)
    assert 0.10 * 300 < failed < 0.30 * 300
    assert 0.03 * 300 < 300 - reached_server < 0.18 * 300  # requests that never arrived
    assert all(t < 0.027 for t in latencies)
    assert len({round(t, 3) for t in latencies}) > 10  # delays really vary


def test_long_reordering_holds_most_replies() -> None:
    async def body() -> None:
        net, server = Network(seed=5), FakeServer()
        net.set_long_reordering(True)
        net.add_server("s", server)
        end = wired(net)
        order: list[int] = []

        async def one(term: int) -> float:
            reply, elapsed = await timed_call(end, "request_vote", rv(term))
            order.append(reply.term)
            return elapsed

        elapsed = await asyncio.gather(*(one(term) for term in range(150)))

        held = [t for t in elapsed if t >= 0.2]
        assert all(t == 0 or 0.2 <= t < 2.2 for t in elapsed)
        assert 0.5 * 150 < len(held) < 0.85 * 150  # about 2/3
        assert order != sorted(order)  # replies overtook each other
        net.cleanup()

    on_virtual_clock(body)


# --- statistics and lifetime -------------------------------------------------------


def test_counts_and_bytes() -> None:
    async def body() -> None:
        net, s1, s2 = Network(seed=1), FakeServer(), FakeServer()
        net.add_server("s1", s1)
        net.add_server("s2", s2)
        to_s1, to_s2 = wired(net, "a", "s1"), wired(net, "b", "s2")
        off = net.make_end("off")
        net.connect("off", "s1")
        args = AppendEntriesArgs(2, 0, 0, 0, [Entry(2, b"y" * 100)])

        for _ in range(3):
            await to_s1.call("append_entries", args)
        await to_s2.call("request_vote", rv(2))
        await off.call("request_vote", rv(2))

        request_bytes = 3 * len(codec.encode_message(args)) + 2 * len(codec.encode_message(rv(2)))
        reply_bytes = 3 * len(codec.encode_message(AppendEntriesReply(2, True, match_index=1)))
        reply_bytes += len(codec.encode_message(RequestVoteReply(2, True)))
        assert net.rpc_count("s1") == 3
        assert net.rpc_count("s2") == 1
        assert net.rpc_count("nobody") == 0
        assert net.total_count() == 5
        assert net.total_bytes() == request_bytes + reply_bytes

        net.add_server("s1", FakeServer())  # a new incarnation counts afresh
        assert net.rpc_count("s1") == 0
        assert net.total_count() == 5
        net.cleanup()

    on_virtual_clock(body)


def test_cleanup_fails_pending_calls_and_later_ones_at_once() -> None:
    async def body() -> None:
        loop = asyncio.get_running_loop()
        net, server = Network(seed=1), FakeServer()
        net.set_long_delays(True)
        net.add_server("s", server)
        end = wired(net)
        off = net.make_end("off")
        server.gate = asyncio.Event()
        blocked = asyncio.create_task(end.call("request_vote", rv()))
        slow = asyncio.create_task(off.call("request_vote", rv()))
        await asyncio.sleep(0.01)

        started = loop.time()
        net.cleanup()

        assert await blocked is None
        assert await slow is None
        assert await end.call("request_vote", rv()) is None
        assert loop.time() == started
        await asyncio.sleep(0)
        assert asyncio.all_tasks() == {asyncio.current_task()}  # nothing left behind

    on_virtual_clock(body)


def test_cancelled_caller_does_not_recall_its_request() -> None:
    async def body() -> None:
        net, server = Network(seed=1), FakeServer()
        net.set_reliable(False)
        net.add_server("s", server)
        end = wired(net)

        calls = [asyncio.create_task(end.call("request_vote", rv(t))) for t in range(20)]
        await asyncio.sleep(0)
        for call in calls:
            call.cancel()
        await asyncio.sleep(0.1)

        assert len(server.seen) > 10  # already on the wire: delivered anyway
        assert all(call.cancelled() for call in calls)
        net.cleanup()

    on_virtual_clock(body)
