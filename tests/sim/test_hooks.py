"""The simulation's hook points: the virtual loop's step hook and the network's LinkFaults."""

from __future__ import annotations

import asyncio
from collections.abc import Hashable, Sequence

from raftio.messages import (
    AppendEntriesArgs,
    AppendEntriesReply,
    InstallSnapshotArgs,
    InstallSnapshotReply,
    RequestVoteArgs,
    RequestVoteReply,
)
from raftio.testing import VirtualClockEventLoop, run
from raftio.transport.memory import Network


class Voter:
    def __init__(self) -> None:
        self.calls = 0

    async def request_vote(self, args: RequestVoteArgs) -> RequestVoteReply:
        self.calls += 1
        return RequestVoteReply(args.term, True)

    async def append_entries(self, args: AppendEntriesArgs) -> AppendEntriesReply:
        return AppendEntriesReply(args.term, False)

    async def install_snapshot(self, args: InstallSnapshotArgs) -> InstallSnapshotReply:
        return InstallSnapshotReply(args.term)


class Rules:
    """Scripted LinkFaults: fixed request delays and reply delay."""

    def __init__(self, request: Sequence[float], reply: float | None) -> None:
        self._request, self._reply = request, reply
        self.seen: list[tuple[Hashable, Hashable, str]] = []

    def request(self, end_name: Hashable, server_name: Hashable, method: str) -> Sequence[float]:
        self.seen.append((end_name, server_name, method))
        return self._request

    def reply(self, end_name: Hashable, server_name: Hashable, method: str) -> float | None:
        return self._reply


def test_the_step_hook_runs_after_every_loop_iteration() -> None:
    steps: list[float] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        assert isinstance(loop, VirtualClockEventLoop)
        loop.set_step_hook(lambda: steps.append(loop.time()))
        await asyncio.sleep(1)
        await asyncio.sleep(1)
        loop.set_step_hook(None)

    run(main(), loop="virtual")
    assert 1.0 in steps
    assert 2.0 in steps


async def call_through(rules: Rules) -> tuple[RequestVoteReply | None, float, int]:
    loop = asyncio.get_running_loop()
    net, voter = Network(seed=1), Voter()
    end = net.make_end(("a", "b"))
    net.connect(("a", "b"), "b")
    net.enable(("a", "b"), True)
    net.add_server("b", voter)
    net.set_link_faults(rules)
    started = loop.time()
    reply = await end.call("request_vote", RequestVoteArgs(3, 0, 0, 0))
    elapsed = loop.time() - started
    await asyncio.sleep(1)  # let duplicates land
    net.cleanup()
    return reply, elapsed, voter.calls


def test_link_faults_delay_requests_and_replies() -> None:
    rules = Rules(request=(0.25,), reply=0.5)
    reply, elapsed, calls = run(call_through(rules), loop="virtual")
    assert reply == RequestVoteReply(3, True)
    assert elapsed == 0.75
    assert calls == 1
    assert rules.seen == [(("a", "b"), "b", "request_vote")]


def test_link_faults_lose_requests_and_replies() -> None:
    assert run(call_through(Rules(request=(), reply=0.0)), loop="virtual")[::2] == (None, 0)
    assert run(call_through(Rules(request=(0.0,), reply=None)), loop="virtual")[::2] == (None, 1)


def test_link_faults_duplicate_requests_but_deliver_one_reply() -> None:
    reply, elapsed, calls = run(call_through(Rules(request=(0.1, 0.2), reply=0.0)), loop="virtual")
    assert reply == RequestVoteReply(3, True)
    assert elapsed == 0.1
    assert calls == 2
