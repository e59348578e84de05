"""run_simulation(): one seeded simulated run, start to verdict.

A run is a pure function of its `SimParams`: one `random.Random(seed)`
draws the cluster size and settings and seeds every stream (network,
storages, peers, nemesis, client), and everything runs on the virtual
clock. Phases:

1. chaos: for `duration` seconds of loop time, a client starts commands on
   every peer that believes it leads while the nemesis injects faults;
2. heal: every fault is undone and every peer is up;
3. liveness: within `liveness_bound` seconds a leader must emerge and a new
   command must be applied by every peer.

Invariants are checked after every loop iteration (the virtual loop's step
hook) and on the peers' trace, replies and applies (raftio.testing.invariants).
Any error raftio logs, other than the expected ones (a fail-stop after an
injected fsync failure, a leader stepping down from a stalled disk), is a
violation too. The first violation ends the run.
"""

from __future__ import annotations

import asyncio
import logging
import random
import traceback
from dataclasses import dataclass, field
from typing import Any

from raftio.config import RaftConfig
from raftio.membership import Configuration
from raftio.testing.clock import VirtualClockEventLoop, run
from raftio.testing.invariants import InvariantChecker, Violation
from raftio.testing.sim.cluster import SimCluster
from raftio.testing.sim.faults import SimNemesis
from raftio.testing.sim.links import Links
from raftio.testing.sim.trace import Trace
from raftio.transport.memory import Network

# raftio's log messages (format strings) that faults we inject are expected to cause.
_EXPECTED_LOGS = ("S%d stopping: %s", "S%d: storage sync stalled; stepping down as leader")


@dataclass(frozen=True, slots=True)
class SimParams:
    """Everything a run depends on."""

    seed: int
    peers: tuple[int, int] = (3, 7)  # cluster size drawn from this range, inclusive
    duration: float = 60.0  # seconds of loop time under faults
    profile: str = "mixed"  # nemesis profile: "mixed", "figure8" or "membership"
    liveness_bound: float = 10.0  # seconds after healing for a command to commit everywhere
    trace_keep: int = 200  # trace lines kept for the failure report
    full_trace: bool = False  # keep every trace line (SimResult.trace)

    def replay_command(self) -> str:
        return (
            f"python -m raftio.testing.fuzz --start {self.seed} --seeds 1 "
            f"--peers {self.peers[0]}-{self.peers[1]} --duration {self.duration:g} "
            f"--profile {self.profile} --liveness-bound {self.liveness_bound:g} --trace-lines 400"
        )


@dataclass(slots=True)
class SimResult:
    """What one run did and whether it broke anything."""

    params: SimParams
    peer_count: int = 0
    sim_time: float = 0.0  # loop seconds simulated
    violation: Violation | None = None
    digest: str = ""  # blake2b of the whole trace
    trace_tail: list[str] = field(default_factory=list)
    trace: list[str] | None = None
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.violation is None

    def report(self, lines: int = 60) -> str:
        """A failure report: seed, replay command, violation, last trace lines."""
        head = [
            f"VIOLATION seed={self.params.seed} peers={self.peer_count}: {self.violation}",
            f"replay: {self.params.replay_command()}",
            f"settings: {self.stats.get('settings', '')}",
            f"last {min(lines, len(self.trace_tail))} trace lines:",
        ]
        return "\n".join(head + ["  " + line for line in self.trace_tail[-lines:]])


def run_simulation(params: SimParams) -> SimResult:
    """Run one simulation on a fresh virtual-clock loop and return its result."""
    return run(_Simulation(params).main(), loop="virtual")


class _ErrorLogs(logging.Handler):
    """Turns unexpected raftio errors into violations during a run."""

    def __init__(self, checker: InvariantChecker) -> None:
        super().__init__(logging.ERROR)
        self._checker = checker

    def emit(self, record: logging.LogRecord) -> None:
        if record.msg in _EXPECTED_LOGS:
            return
        detail = f": {record.exc_info[1]!r}" if record.exc_info else ""
        self._checker.fail("error logged", f"{record.name}: {record.getMessage()}{detail}")


class _Simulation:
    def __init__(self, params: SimParams) -> None:
        self.params = params
        self.result = SimResult(params)
        self._main: asyncio.Task[Any] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._commands = 0

    async def main(self) -> SimResult:
        loop = asyncio.get_running_loop()
        assert isinstance(loop, VirtualClockEventLoop), "simulations run on the virtual clock"
        main = self._main = asyncio.current_task()
        assert main is not None
        self._build(loop)
        logger = logging.getLogger("raftio")
        handler, propagate = _ErrorLogs(self.checker), logger.propagate
        logger.addHandler(handler)
        logger.propagate = False
        loop.set_step_hook(self._step)
        try:
            await self._phases(loop)
        except asyncio.CancelledError:
            if self.checker.violation is None:
                raise
            main.uncancel()
        finally:
            loop.set_step_hook(None)
            await self._teardown()
            logger.removeHandler(handler)
            logger.propagate = propagate
        return self._finish(loop)

    def _build(self, loop: VirtualClockEventLoop) -> None:
        params = self.params
        master = random.Random(params.seed)
        chunking = random.Random(f"{params.seed}/snapshot-chunks")
        n = master.randint(*params.peers)
        pre_vote, check_quorum = master.random() < 0.7, master.random() < 0.7
        config = RaftConfig(
            pre_vote=pre_vote,
            check_quorum=check_quorum,
            # Drawn apart, so a seed's other settings stay as they were.
            lease_reads=check_quorum and random.Random(f"{params.seed}/lease").random() < 0.5,
            # A no-op per new leader hides Figure 8's scenario: the figure8 profile never uses it.
            leader_noop=master.random() < 0.5 and params.profile != "figure8",
            max_inflight=master.choice([1, 2, 4, 8]),
            # Drawn apart, so the other settings of a seed stay as they were.
            snapshot_chunk_bytes=chunking.choice([8, 32, 256, 1 << 20]),
            snapshot_chunks_inflight=chunking.choice([1, 2, 4]),
        )
        slow = master.random() < 0.3
        latency = (0.001, 0.03) if slow else (0.0002, 0.003)
        snapshot_every = master.choice([3, 5, 10, 25, 100])
        self._client_gap = master.choice([0.005, 0.02, 0.1])
        self.trace = Trace(loop.time, params.trace_keep, params.full_trace)
        self.checker = InvariantChecker(n, loop.time, self._on_violation)
        net = Network(seed=master.getrandbits(63))
        self.links = Links(random.Random(master.getrandbits(63)))
        net.set_link_faults(self.links)
        self.cluster = SimCluster(
            n,
            random.Random(master.getrandbits(63)),
            config,
            latency,
            snapshot_every,
            net,
            self.trace,
            self.checker,
        )
        self.cluster.snapshot_pad = chunking.choice([0, 64, 600])
        corrupt_rng = random.Random(chunking.getrandbits(63))

        def corrupt(data: bytes) -> bytes:
            """Now and then a chunk arrives damaged: only its snapshot's crc32 can tell."""
            if corrupt_rng.random() >= self.links.corrupt:
                return data
            at = corrupt_rng.randrange(len(data))
            return data[:at] + bytes([data[at] ^ 0x5A]) + data[at + 1 :]

        self.cluster.corrupt_chunk = corrupt
        self.nemesis = SimNemesis(
            self.cluster,
            self.links,
            random.Random(master.getrandbits(63)),
            self.trace,
            params.profile,
        )
        self._client_rng = random.Random(master.getrandbits(63))
        self.result.peer_count = n
        voters = n
        if params.profile == "membership":  # some peers start outside, waiting to be added
            voters = master.randint(1, n)
            self.cluster.bootstrap = Configuration.of_voters([""] * voters)
        self.result.stats["settings"] = (
            f"n={n} pre_vote={config.pre_vote} check_quorum={config.check_quorum} "
            f"lease_reads={config.lease_reads} "
            f"leader_noop={config.leader_noop} max_inflight={config.max_inflight} "
            f"fsync={latency[0] * 1000:g}-{latency[1] * 1000:g}ms "
            f"snapshot_every={snapshot_every} client_gap={self._client_gap * 1000:g}ms "
            f"chunk={config.snapshot_chunk_bytes}x{config.snapshot_chunks_inflight} "
            f"pad={self.cluster.snapshot_pad}" + (f" voters={voters}" if voters != n else "")
        )
        self.trace.event("sim", f"seed={params.seed} {self.result.stats['settings']}")

    async def _phases(self, loop: VirtualClockEventLoop) -> None:
        for i in range(self.cluster.n):
            self.cluster.start(i)
        if self.params.profile != "figure8":  # there the nemesis is the only client
            self._tasks.append(loop.create_task(self._client()))
        chaos = loop.create_task(self.nemesis.run())
        self._tasks.append(chaos)
        await asyncio.sleep(self.params.duration)
        chaos.cancel()
        self.nemesis.heal_all()
        await self._liveness(loop)

    async def _client(self) -> None:
        """Starts a new command on every peer that thinks it leads, every so often."""
        rng, cluster = self._client_rng, self.cluster
        while True:
            await asyncio.sleep(rng.uniform(0, 2 * self._client_gap))
            for i in cluster.leaders():
                rf = cluster.raft(i)
                assert rf is not None
                self._commands += 1
                rf.start(self._commands)

    async def _liveness(self, loop: VirtualClockEventLoop) -> None:
        """After healing, a leader must commit a new command on every peer in time."""
        token = f"liveness-{self.params.seed}"
        healed = loop.time()
        deadline = healed + self.params.liveness_bound
        started: dict[int, int] = {}  # term -> index of the token
        while loop.time() < deadline:
            for i in self.cluster.leaders():
                rf = self.cluster.raft(i)
                assert rf is not None
                term = rf.get_state()[0]
                if term not in started:
                    index, term, ok = rf.start(token)
                    if ok:
                        started[term] = index
                        self.trace.event("liveness", f"started token at {index} on S{i} T{term}")
            if any(self._applied_everywhere(index, token) for index in started.values()):
                self.result.stats["liveness_time"] = loop.time() - healed
                return
            await asyncio.sleep(0.01)
        self.checker.fail(
            "liveness",
            f"no new command was applied by every peer within {self.params.liveness_bound:g}s "
            f"of healing (token started at {started}; {self._cluster_state()})",
        )

    def _applied_everywhere(self, index: int, token: str) -> bool:
        if self.checker.applied_command(index) != token:
            return False
        members = self.cluster.members()  # a removed peer gets nothing new
        for i, peer in enumerate(self.cluster.peers):
            if i not in members:
                continue
            if peer.service is None or peer.service.last_index < index:
                return False
        return True

    def _cluster_state(self) -> str:
        parts = []
        for i, peer in enumerate(self.cluster.peers):
            if peer.rf is None or peer.service is None:
                parts.append(f"S{i} down")
                continue
            core = peer.rf.view
            parts.append(
                f"S{i} T{core.current_term} {core.role.value} commit={core.commit_index} "
                f"last={core.log.last_index} applied={peer.service.last_index}"
            )
        return ", ".join(parts)

    def _step(self) -> None:
        try:
            self.checker.step()
        except Exception as exc:  # a checker bug must not abort a whole fuzzing session
            self.checker.fail("checker error", "".join(traceback.format_exception(exc)))

    def _on_violation(self, violation: Violation) -> None:
        self.trace.event("violation", str(violation))
        main = self._main
        if main is not None and not main.done() and asyncio.current_task() is not main:
            main.cancel()

    async def _teardown(self) -> None:
        self.cluster.stop()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _finish(self, loop: VirtualClockEventLoop) -> SimResult:
        result = self.result
        result.sim_time = loop.time()
        result.violation = self.checker.violation
        result.digest = self.trace.digest()
        result.trace_tail = self.trace.tail()
        result.trace = self.trace.lines
        result.stats.update(
            commands=self._commands,
            committed=self.checker.max_committed,
            leaders=len(self.checker.leaders),
            crashes=self.cluster.crashes,
            nemesis_steps=self.nemesis.steps,
            rpcs=self.cluster.net.total_count(),
            trace_lines=self.trace.count,
            checks=self.checker.steps,
        )
        return result
