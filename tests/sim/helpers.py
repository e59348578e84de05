"""A scripted simulated cluster for scenario tests: SimCluster without the nemesis.

The test drives faults itself (`links`, `cluster.crash`, storage stalls)
while the InvariantChecker watches every step, as in a fuzzer run.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

from raftio.config import RaftConfig
from raftio.testing import VirtualClockEventLoop
from raftio.testing.invariants import InvariantChecker, Violation
from raftio.testing.sim.cluster import SimCluster
from raftio.testing.sim.links import Links
from raftio.testing.sim.trace import Trace
from raftio.transport.memory import Network


class Scripted:
    """n peers on the virtual clock; call from inside `run(..., loop="virtual")`."""

    def __init__(self, seed: int, n: int, config: RaftConfig | None = None) -> None:
        loop = asyncio.get_running_loop()
        assert isinstance(loop, VirtualClockEventLoop)
        self._loop = loop
        self.seed = seed
        master = random.Random(seed)
        self.violations: list[Violation] = []
        self.trace = Trace(loop.time, keep=80)
        self.checker = InvariantChecker(n, loop.time, self.violations.append)
        net = Network(seed=master.getrandbits(63))
        self.links = Links(random.Random(master.getrandbits(63)))
        net.set_link_faults(self.links)
        self.cluster = SimCluster(
            n,
            random.Random(master.getrandbits(63)),
            config or RaftConfig(),
            (0.0005, 0.002),
            1000,
            net,
            self.trace,
            self.checker,
        )
        loop.set_step_hook(self.checker.step)
        for i in range(n):
            self.cluster.start(i)
        self._commands = 0

    def term(self, i: int) -> int:
        rf = self.cluster.raft(i)
        assert rf is not None
        return rf.get_state()[0]

    def leader(self) -> int | None:
        """The leader of the highest term among live peers, if any."""
        leaders = self.cluster.leaders()
        return max(leaders, key=self.term) if leaders else None

    async def wait_leader(self, within: float, not_: int | None = None) -> int:
        deadline = self._loop.time() + within
        while self._loop.time() < deadline:
            leader = self.leader()
            if leader is not None and leader != not_:
                return leader
            await asyncio.sleep(0.01)
        raise AssertionError(self.explain(f"no leader (other than {not_}) within {within}s"))

    async def commit(self, command: Any, within: float, on: list[int] | None = None) -> int:
        """Start `command` on the leader; wait until the peers `on` (default all) applied it."""
        peers = on if on is not None else list(range(self.cluster.n))
        deadline = self._loop.time() + within
        while self._loop.time() < deadline:
            leader = self.leader()
            if leader is not None:
                rf = self.cluster.raft(leader)
                assert rf is not None
                index, _, ok = rf.start(command)
                if ok and await self._applied(index, command, peers, deadline):
                    return index
            await asyncio.sleep(0.01)
        raise AssertionError(self.explain(f"{command!r} not applied by {peers} within {within}s"))

    async def _applied(self, index: int, command: Any, peers: list[int], deadline: float) -> bool:
        while self._loop.time() < deadline:
            if self.checker.applied_command(index) not in (None, command):
                return False  # another command took that index: start again
            services = [self.cluster.peers[i].service for i in peers]
            if all(s is not None and s.last_index >= index for s in services):
                return bool(self.checker.applied_command(index) == command)
            await asyncio.sleep(0.01)
        return False

    async def client(self, gap: float) -> None:
        """Start a command on every peer that believes it leads, every `gap` seconds."""
        while True:
            await asyncio.sleep(gap)
            for i in self.cluster.leaders():
                rf = self.cluster.raft(i)
                assert rf is not None
                self._commands += 1
                rf.start(self._commands)

    def explain(self, what: str) -> str:
        lines = "\n".join(self.trace.tail(80))
        return f"{what} (seed={self.seed}; rerun with --seed {self.seed})\n{lines}"

    def close(self) -> None:
        self._loop.set_step_hook(None)
        self.cluster.stop()
        assert not self.violations, self.explain(f"violation: {self.violations[0]}")
