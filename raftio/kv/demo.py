"""`raftio demo`: a KV cluster of node processes loses its leader to SIGKILL, checked end to end.

Owns the demo's script and its checks; processes come from raftio.kv.local,
output from raftio.kv.display. The phases:

1. start n `raftio node` processes on 127.0.0.1 and wait for a leader;
2. write through a KVClient (appends, so a lost or doubled write shows);
3. keep writing while the leader is SIGKILLed; measure the time from the
   kill to the first write acknowledged by another node;
4. read back every key: each acknowledged write must be there, once;
5. restart the killed node; its applied index must reach the leader's and
   its state digest must equal every other node's.

Every node is stopped on the way out, on failure and on Ctrl-C too; the
status table is last drawn before they stop, so it shows the final state.
A node that exits unasked fails the run at once, with the cause from its log.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import dataclass, field
from typing import Any

from raftio.kv.client import KVClient, KVUnavailableError
from raftio.kv.display import LiveView, status_table
from raftio.kv.local import ClusterSpec, LocalCluster

__all__ = ["Demo", "DemoFailure", "DemoResult"]

logger = logging.getLogger(__name__)

_KEYS = 16
_WAIT = 15.0  # seconds any one phase may wait for the cluster
_POLL = 0.2


class DemoFailure(Exception):
    """A phase cannot go on; the message says why, in one line."""


@dataclass(slots=True)
class DemoResult:
    checks: list[tuple[bool, str]] = field(default_factory=list)
    failover: float | None = None  # seconds from SIGKILL to the first acknowledged write

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(ok for ok, _ in self.checks)


class Demo:
    """One run of the demo over the cluster described by `spec` (a fresh directory)."""

    def __init__(
        self, spec: ClusterSpec, view: LiveView, *, writes: int = 100, loop: str | None = None
    ) -> None:
        self.spec, self.view, self.writes = spec, view, writes
        self.cluster = LocalCluster(spec, loop=loop)
        self.result = DemoResult()
        self.expected: dict[str, str] = {}  # key -> value, from acknowledged writes only
        self.acked = 0
        self.statuses: list[dict[str, Any] | None] = [None] * spec.n
        self.states: dict[int, str] = {}  # node id -> "killed", for nodes stopped on purpose
        self._answered: set[int] = set()  # nodes that answered since they last started
        self._token = spec.secret()
        self._monitor = self._client(attempt_timeout=0.5)
        self._loop = asyncio.get_running_loop()

    async def run(self) -> DemoResult:
        """Run every phase; a phase that fails ends the run as a failed check."""
        self.spec.save()
        try:
            async with self.cluster:
                poller = asyncio.create_task(self._poll_forever(), name="demo-status-poller")
                try:
                    await self._scenario()
                finally:
                    # Before the nodes stop: the last table drawn shows them as they ran.
                    poller.cancel()
                    await asyncio.gather(poller, return_exceptions=True)
        except DemoFailure as exc:
            self.check(False, str(exc))
        except KVUnavailableError as exc:
            self.check(False, f"no node answered in time: {exc}")
        finally:
            await self._monitor.close()
        return self.result

    def check(self, ok: bool, what: str) -> None:
        self.result.checks.append((ok, what))
        self.view.event(f"{'PASS' if ok else 'FAIL'}  {what}")

    # ------------------------------------------------------------------ phases

    async def _scenario(self) -> None:
        started = self._loop.time()
        self.cluster.start_all()
        self.view.event(f"started {self.spec.n} nodes: {self._pids()}")
        leader, term = await self._wait_leader(exclude=None)
        self.check(True, f"node {leader} elected leader of term {term} "
                         f"in {self._loop.time() - started:.2f} s")  # fmt: skip
        async with self._client(deadline=_WAIT) as client:
            await self._write_phase(client)
            await self._failover_phase(client, leader)
            await self._read_back(client)
        await self._restart_phase(leader)

    async def _write_phase(self, client: KVClient) -> None:
        started, ok = self._loop.time(), True
        for _ in range(self.writes):
            ok &= await self._append(client)
        elapsed = self._loop.time() - started
        self.check(ok, f"{self.writes} writes acknowledged in {elapsed:.2f} s, "
                       "each answered with the expected value")  # fmt: skip
        # Without this, a follower one entry behind looks like a diverged replica.
        self.view.event(
            "      digest: a hash of a node's applied state; a follower applies an entry"
        )
        self.view.event(
            "      once it learns it is committed, so digests match once applied indexes do"
        )
        await self._show_table()

    async def _failover_phase(self, client: KVClient, victim: int) -> None:
        writer = _Writer(self, client, victim)
        task = asyncio.create_task(writer.run(), name="demo-writer")
        try:
            await asyncio.sleep(0.2)  # the leader dies with writes in flight
            proc = self.cluster.procs[victim]
            proc.send_signal(signal.SIGKILL)
            writer.killed_at = self._loop.time()
            self.states[victim] = "killed"
            self.view.event(f"SIGKILL node {victim} (pid {proc.pid}), the leader")
            await self.cluster.kill(victim)
            try:
                async with asyncio.timeout(_WAIT):
                    await writer.resumed.wait()
                    await writer.more_done.wait()
            except TimeoutError:
                raise DemoFailure(
                    f"writes did not resume on another node within {_WAIT:.0f} s of the kill"
                ) from None
        finally:
            writer.stop = True
            await task
        await self._report_failover(writer, victim)

    async def _report_failover(self, writer: _Writer, victim: int) -> None:
        assert writer.resumed_after is not None
        failover = writer.resumed_after
        self.result.failover = failover
        leader, term = await self._wait_leader(exclude=victim)
        self.view.event(f"node {leader} is the new leader, term {term}")
        self.check(writer.ok, f"{writer.count} writes during the failover, each answered "
                              "with the expected value")  # fmt: skip
        self.check(True, f"failover: SIGKILL of node {victim} -> first write acknowledged "
                         f"by node {writer.new_leader} in {failover:.3f} s")  # fmt: skip
        await self._show_table()

    async def _read_back(self, client: KVClient) -> None:
        missing = []
        for key, value in sorted(self.expected.items()):
            got = await client.get(key)
            if got != value:
                missing.append(f"{key}: expected {len(value)} chars, got {_size(got)}")
        self.check(not missing, f"every acknowledged write survived ({self.acked} writes, "
                                f"{len(self.expected)} keys read back linearizably)"
                                + ("; " + "; ".join(missing[:3]) if missing else ""))  # fmt: skip

    async def _restart_phase(self, victim: int) -> None:
        started = self._loop.time()
        proc = self.cluster.start(victim)
        self.states.pop(victim, None)
        self._answered.discard(victim)
        self.view.event(f"restarted node {victim} (pid {proc.pid})")
        statuses = await self._wait_caught_up()
        leader = next(s for s in statuses if s["role"] == "leader")
        self.check(True, f"node {victim} caught up in {self._loop.time() - started:.2f} s: "
                         f"applied index {leader['applied_index']} = leader's, "
                         f"digest {leader['digest']} on every node")  # fmt: skip
        await self._show_table()

    # ------------------------------------------------------------------ waiting

    async def _wait_leader(self, exclude: int | None) -> tuple[int, int]:
        try:
            async with asyncio.timeout(_WAIT):
                while True:
                    self._check_alive()
                    for i, status in enumerate(await self._collect()):
                        if status is not None and status["role"] == "leader" and i != exclude:
                            return i, int(status["term"])
                    await asyncio.sleep(_POLL / 2)
        except TimeoutError:
            raise DemoFailure(f"no node became leader within {_WAIT:.0f} s") from None

    async def _wait_caught_up(self) -> list[dict[str, Any]]:
        try:
            async with asyncio.timeout(_WAIT):
                while True:
                    self._check_alive()
                    statuses = await self._collect()
                    if _caught_up(statuses):
                        return [s for s in statuses if s is not None]
                    await asyncio.sleep(_POLL / 2)
        except TimeoutError:
            raise DemoFailure(
                f"the nodes did not reach one applied index and digest within {_WAIT:.0f} s"
            ) from None

    def _check_alive(self) -> None:
        """DemoFailure naming the cause if a node exited that the demo did not kill."""
        for i, code in sorted(self.cluster.exited().items()):
            if self.states.get(i) != "killed":
                raise DemoFailure(
                    f"node {i} exited (exit code {code}): {self.cluster.exit_cause(i)}; "
                    f"log: {self.spec.log_path(i)}"
                )

    async def _show_table(self) -> None:
        self._check_alive()
        if not self.view.live:
            await self._collect()
            self.view.show_table()

    async def _poll_forever(self) -> None:
        try:
            while True:
                await self._collect()
                await asyncio.sleep(_POLL)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("status poller failed")
            raise

    async def _collect(self) -> list[dict[str, Any] | None]:
        statuses: list[dict[str, Any] | None] = []
        for address in self.spec.client_peers:
            try:
                statuses.append(await self._monitor.status(address, timeout=0.5))
            except KVUnavailableError:
                statuses.append(None)
        self.statuses = statuses
        self.view.update(status_table(statuses, pids=self._pids(), states=self._states(statuses)))
        return statuses

    def _states(self, statuses: list[dict[str, Any] | None]) -> dict[int, str]:
        """The state column: killed, starting (not yet answering), silent, exited; else up."""
        states = dict(self.states)
        for i, status in enumerate(statuses):
            if status is not None:
                self._answered.add(i)
            elif i not in states:
                if not self.cluster.running(i):
                    states[i] = "exited"
                else:
                    states[i] = "silent" if i in self._answered else "starting"
        return states

    def _client(self, **options: Any) -> KVClient:
        return KVClient(self.spec.client_peers, token=self._token, **options)

    # ------------------------------------------------------------------ writes

    async def _append(self, client: KVClient) -> bool:
        """One write; True if its answer is the value every acknowledged write implies."""
        n = self.acked
        key, piece = f"key{n % _KEYS:02d}", f"{n};"
        value = await client.append(key, piece)
        self.expected[key] = self.expected.get(key, "") + piece
        self.acked += 1
        return value == self.expected[key]

    def _pids(self) -> dict[int, int | None]:
        return {i: self.cluster.pid(i) for i in range(self.spec.n)}


class _Writer:
    """Keeps writing through the failover; notes when writes resume on another node."""

    def __init__(self, demo: Demo, client: KVClient, victim: int) -> None:
        self.demo, self.client = demo, client
        self.victim_address = demo.spec.client_peers[victim]
        self.killed_at: float | None = None
        self.resumed_after: float | None = None
        self.new_leader: int | None = None
        self.resumed, self.more_done = asyncio.Event(), asyncio.Event()
        self.stop, self.ok, self.count = False, True, 0
        self._after = 0  # writes acknowledged by the new leader

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while not self.stop:
            self.ok &= await self.demo._append(self.client)
            self.count += 1
            if self.killed_at is None or self.client.leader == self.victim_address:
                continue
            if self.resumed_after is None:
                self.resumed_after = loop.time() - self.killed_at
                assert self.client.leader is not None
                self.new_leader = self.demo.spec.client_peers.index(self.client.leader)
                self.resumed.set()
            self._after += 1
            if self._after >= self.demo.writes // 2:
                self.more_done.set()


def _caught_up(statuses: list[dict[str, Any] | None]) -> bool:
    """Every node up, one leader, every applied index equal to its, one digest."""
    live = [s for s in statuses if s is not None]
    leaders = [s for s in live if s["role"] == "leader"]
    if len(live) != len(statuses) or len(leaders) != 1:
        return False
    applied = leaders[0]["applied_index"]
    same_index = all(s["applied_index"] == applied for s in live)
    return same_index and len({s["digest"] for s in live}) == 1


def _size(value: str | None) -> str:
    return "nothing" if value is None else f"{len(value)} chars"
