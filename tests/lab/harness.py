"""The Lab 2 tester's harness: MIT 6.5840 (2023) `src/raft/config.go` on asyncio.

`Config` is config.go's `config`: it builds n peers with `raftio.make` over
an in-memory `Network`, crashes and restarts them (`crash1`/`start1`, with
`MemoryStorage.copy()` as the Persister's Copy), partitions them
(`connect`/`disconnect`), and checks what they apply on `apply_ch`
(`applier`, `applier_snap`, `check_logs`). Its checks (`check_one_leader`,
`check_terms`, `check_no_leader`, `n_committed`, `wait`, `one`) and constants
are config.go's, in seconds of loop time.

`Lab` is one test run: its seed, its event loop, and how a failure is
reported. A failure anywhere (the test body, an applier, a client task)
fails the test at once with the message config.go would print, plus a line
telling how to replay the run.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, NoReturn, TypeVar

import raftio
from raftio import codec
from raftio.messages import ApplyMsg
from raftio.storage.base import Storage
from raftio.testing import LoopKind, run
from raftio.transport.memory import MemoryClientEnd, Network

T = TypeVar("T")

# The tester generously allows solutions to complete elections in one second
# (much more than the paper's range of timeouts).
RAFT_ELECTION_TIMEOUT = 1.0
SNAPSHOT_INTERVAL = 10
MAX_LOG_SIZE = 2000
TEST_TIME_LIMIT = 120.0  # config.go's checkTimeout: two minutes per test

# Checks one message a peer put on apply_ch: config.go's applier / applierSnap loop bodies.
Applier = Callable[[int, "raftio.Raft", ApplyMsg], None]


class LabFailure(AssertionError):
    """A check of the tester failed (config.go's t.Fatalf / log.Fatalf)."""


class Lab:
    """One run of one lab test: seed, loop kind, failure reporting.

    Every random choice of the run comes from `seed`: the network's faults,
    the test's own choices (`rng`) and each Raft peer's (`raft_rng()`).
    """

    def __init__(
        self, nodeid: str, seed: int, loop_kind: LoopKind, storage_kind: str = "memory"
    ) -> None:
        self.nodeid = nodeid
        self.seed = seed
        self.loop_kind = loop_kind
        self.storage_kind = storage_kind  # "memory" or "file" (FileStorage in a temp dir)
        streams = random.Random(seed)
        self.net_seed = streams.getrandbits(63)
        self.rng = random.Random(streams.getrandbits(63))
        self._raft_seeds = random.Random(streams.getrandbits(63))
        self._configs: list[Config] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._main: asyncio.Task[Any] | None = None
        self._failure: str | None = None
        self._tearing_down = False
        self.max_lag = 0.0  # worst lateness of a 10 ms timer: CPU starvation on real loops

    def raft_rng(self) -> random.Random:
        """A seeded rng for one Raft peer incarnation."""
        return random.Random(self._raft_seeds.getrandbits(63))

    @property
    def rerun(self) -> str:
        rerun = f"pytest {self.nodeid} --seed {self.seed} --loop {self.loop_kind}"
        return rerun if self.storage_kind == "memory" else f"{rerun} --storage {self.storage_kind}"

    def run(self, body: Callable[[Lab], Awaitable[None]]) -> None:
        """Run a test body on a fresh loop of the chosen kind; on failure, say how to replay."""
        try:
            run(self._main_body(body), loop=self.loop_kind)
        except BaseException as exc:
            print(f"rerun: {self.rerun}")
            exc.add_note(f"max event-loop lag: {self.max_lag * 1000:.0f} ms")
            exc.add_note(f"rerun: {self.rerun}")
            raise

    async def _main_body(self, body: Callable[[Lab], Awaitable[None]]) -> None:
        main = self._main = asyncio.current_task()
        assert main is not None
        self.spawn(self._watch_lag())
        try:
            async with asyncio.timeout(TEST_TIME_LIMIT):
                await body(self)
        except asyncio.CancelledError:
            if self._failure is None:
                raise
        except TimeoutError:
            self._failure = self._failure or f"test took longer than {TEST_TIME_LIMIT:.0f} seconds"
        finally:
            self._tearing_down = True
            for cfg in self._configs:
                cfg.cleanup()
            await self._stop_tasks()
        if self._failure is not None:
            if main.cancelling():
                main.uncancel()
            raise LabFailure(self._failure)

    async def _watch_lag(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(0.010)
            self.max_lag = max(self.max_lag, loop.time() - before - 0.010)

    def make_config(self, n: int, unreliable: bool, snapshot: bool) -> Config:
        """config.go's make_config: n connected peers, cleaned up when the test ends."""
        cfg = Config(self, n, unreliable, snapshot)
        self._configs.append(cfg)
        return cfg

    def fatal(self, msg: str) -> NoReturn:
        """Fail the test now, from the test body or from any task of it."""
        __tracebackhide__ = True
        if self._failure is None:
            self._failure = msg
        self._stop_main()
        raise LabFailure(msg)

    def _stop_main(self) -> None:
        """Cancel the test body (when failing from another task); it reports the failure."""
        main = self._main
        if main is not None and not self._tearing_down and asyncio.current_task() is not main:
            main.cancel()

    def spawn(self, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        """A task of the test (a goroutine in the Go test); stopped when the test ends."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None and not isinstance(exc, LabFailure) and self._failure is None:
            self._failure = f"task {task.get_name()} failed: {exc!r}"
            self._stop_main()

    async def _stop_tasks(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class _GuardedPeer:
    """Server i as the network sees it: the peer's handlers, and a live peer must not raise.

    (labrpc crashes the whole test when a handler panics.)
    """

    def __init__(self, lab: Lab, i: int, rf: raftio.Raft) -> None:
        self._lab, self._i, self._rf = lab, i, rf

    async def request_vote(self, args: Any) -> Any:
        return await self._call("request_vote", args)

    async def append_entries(self, args: Any) -> Any:
        return await self._call("append_entries", args)

    async def install_snapshot(self, args: Any) -> Any:
        return await self._call("install_snapshot", args)

    async def _call(self, method: str, args: Any) -> Any:
        try:
            return await getattr(self._rf, method)(args)
        except Exception as exc:
            if not self._rf.killed():
                self._lab.fatal(f"server {self._i}: live peer's {method} raised {exc!r}")
            raise


class Config:
    """config.go's config: n Raft peers on one simulated network, and the tester's checks."""

    def __init__(self, lab: Lab, n: int, unreliable: bool, snapshot: bool) -> None:
        self.lab = lab
        self.rng = lab.rng
        self._loop = asyncio.get_running_loop()
        self.net = Network(seed=lab.net_seed)
        self.n = n
        self.finished = False
        self.apply_err = [""] * n  # from apply channel readers
        self.rafts: list[raftio.Raft | None] = [None] * n
        self.connected = [False] * n  # whether each server is on the net
        self.saved: list[Storage | None] = [None] * n
        # With --storage file each peer keeps its state in a directory of its own,
        # and a crash is kill() (unsynced writes are lost) + reopening it.
        self._file_root = (
            tempfile.mkdtemp(prefix="raftio-lab-") if lab.storage_kind == "file" else None
        )
        self.endnames: list[list[str] | None] = [None] * n  # the ends each sends to
        self.logs: list[dict[int, Any]] = [{} for _ in range(n)]  # committed entries
        self.last_applied = [0] * n
        self.start = self._loop.time()
        self._incarnations = [0] * n
        self._appliers: list[tuple[asyncio.Task[None], Callable[[], None]] | None] = [None] * n
        # begin()/end() statistics
        self.t0 = self.start
        self.wall0 = time.perf_counter()
        self.rpcs0 = 0
        self.bytes0 = 0
        self.max_index = 0
        self.max_index0 = 0

        self.set_unreliable(unreliable)
        self.net.set_long_delays(True)
        applier = self.applier_snap if snapshot else self.applier
        for i in range(n):
            self.start1(i, applier)
        for i in range(n):
            self.connect(i)

    # --- randomness (Go's math/rand, from the run's seed) ---------------------------

    def rand_int(self) -> int:
        """rand.Int(): a non-negative 63-bit int."""
        return self.rng.getrandbits(63)

    def rand_int31(self) -> int:
        """rand.Int31()."""
        return self.rng.getrandbits(31)

    def randstring(self, n: int) -> str:
        """n random URL-safe base64 characters, like config.go's randstring."""
        alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
        return "".join(self.rng.choices(alphabet, k=n))

    def make_raft(
        self,
        ends: list[MemoryClientEnd],
        i: int,
        storage: Storage,
        apply_ch: asyncio.Queue[ApplyMsg],
    ) -> raftio.Raft:
        """The one place peers are made: each incarnation gets its own seeded rng."""
        return raftio.make(ends, i, storage, apply_ch, rng=self.lab.raft_rng())

    # --- crash and restart ----------------------------------------------------------

    def crash1(self, i: int) -> None:
        """Shut down server i but save its persistent state."""
        self.disconnect(i)
        self.net.delete_server(i)  # disable client connections to the server

        # A fresh storage, in case the old instance continues to update the old
        # one, holding exactly what was durable at the crash.
        saved = self.saved[i]
        if isinstance(saved, raftio.MemoryStorage):
            self.saved[i] = saved.copy()

        rf = self.rafts[i]
        if rf is not None:
            rf.kill()  # releases a FileStorage: what it had not synced is lost
            self.rafts[i] = None
        self._stop_applier(i)

    def start1(self, i: int, applier: Applier) -> None:
        """Start or restart server i (killing the old instance first)."""
        self.crash1(i)

        # A fresh set of outgoing end names, so the crashed instance's ends can't send.
        self._incarnations[i] += 1
        names = [f"{i}->{j}#{self._incarnations[i]}" for j in range(self.n)]
        self.endnames[i] = names
        ends = []
        for j, name in enumerate(names):
            ends.append(self.net.make_end(name))
            self.net.connect(name, j)

        self.last_applied[i] = 0

        # A fresh storage, so the old instance doesn't overwrite the new one's
        # state, holding the last persisted state.
        saved = self.saved[i]
        if self._file_root is not None:
            saved = self.saved[i] = raftio.FileStorage(os.path.join(self._file_root, f"peer{i}"))
        elif isinstance(saved, raftio.MemoryStorage):
            saved = self.saved[i] = saved.copy()
        else:
            saved = self.saved[i] = raftio.MemoryStorage()
        snapshot = saved.read_snapshot()
        if snapshot:
            # mimic the k/v server and process the snapshot now.
            err = self.ingest_snap(i, snapshot, -1)
            if err:
                self.lab.fatal(err)

        apply_ch: asyncio.Queue[ApplyMsg] = asyncio.Queue()
        rf = self.make_raft(ends, i, saved, apply_ch)
        self.rafts[i] = rf
        self._start_applier(i, rf, apply_ch, applier)
        self.net.add_server(i, _GuardedPeer(self.lab, i, rf))

    def _start_applier(
        self, i: int, rf: raftio.Raft, apply_ch: asyncio.Queue[ApplyMsg], applier: Applier
    ) -> None:
        async def read() -> None:
            while True:
                applier(i, rf, await apply_ch.get())

        def drain() -> None:
            # What the peer put on apply_ch before it died was delivered: check it.
            while not apply_ch.empty():
                applier(i, rf, apply_ch.get_nowait())

        task = self.lab.spawn(read())
        self._appliers[i] = (task, drain)

    def _stop_applier(self, i: int) -> None:
        entry = self._appliers[i]
        if entry is not None:
            self._appliers[i] = None
            task, drain = entry
            task.cancel()
            drain()

    # --- appliers ---------------------------------------------------------------

    def check_logs(self, i: int, m: ApplyMsg) -> tuple[str, bool]:
        err_msg = ""
        v = m.command
        for j, log in enumerate(self.logs):
            if m.command_index in log and log[m.command_index] != v:
                # some server has already committed a different value for this entry!
                err_msg = (
                    f"commit index={m.command_index} server={i} {m.command!r} "
                    f"!= server={j} {log[m.command_index]!r}"
                )
        prevok = (m.command_index - 1) in self.logs[i]
        self.logs[i][m.command_index] = v
        self.max_index = max(self.max_index, m.command_index)
        return err_msg, prevok

    def applier(self, i: int, rf: raftio.Raft, m: ApplyMsg) -> None:
        """Check a message from apply_ch against the logs of the other servers."""
        if not m.command_valid:
            return  # ignore other types of ApplyMsg
        err_msg, prevok = self.check_logs(i, m)
        if m.command_index > 1 and not prevok:
            err_msg = f"server {i} apply out of order {m.command_index}"
        if err_msg:
            self.apply_err[i] = err_msg
            self.lab.fatal(f"apply error: {err_msg}")

    def ingest_snap(self, i: int, snapshot: bytes, index: int) -> str:
        """Install a snapshot made by applier_snap; returns "" or an error."""
        if snapshot is None:
            self.lab.fatal("nil snapshot")
        try:
            last_included_index, xlog = codec.decode_command(snapshot)
        except Exception:
            self.lab.fatal("snapshot decode error")
        if not isinstance(last_included_index, int) or not isinstance(xlog, list):
            self.lab.fatal("snapshot decode error")
        if index != -1 and index != last_included_index:
            return f"server {i} snapshot doesn't match m.SnapshotIndex"
        self.logs[i] = dict(enumerate(xlog))
        self.last_applied[i] = last_included_index
        return ""

    def applier_snap(self, i: int, rf: raftio.Raft, m: ApplyMsg) -> None:
        """Check a message like applier, install snapshots, snapshot every 10 entries."""
        err_msg = ""
        if m.snapshot_valid:
            err_msg = self.ingest_snap(i, m.snapshot, m.snapshot_index)
        elif m.command_valid:
            if m.command_index != self.last_applied[i] + 1:
                err_msg = (
                    f"server {i} apply out of order, expected index "
                    f"{self.last_applied[i] + 1}, got {m.command_index}"
                )
            if not err_msg:
                err_msg, prevok = self.check_logs(i, m)
                if m.command_index > 1 and not prevok:
                    err_msg = f"server {i} apply out of order {m.command_index}"
            self.last_applied[i] = m.command_index
            if (m.command_index + 1) % SNAPSHOT_INTERVAL == 0:
                xlog = [self.logs[i].get(j) for j in range(m.command_index + 1)]
                rf.snapshot(m.command_index, codec.encode_command([m.command_index, xlog]))
        # else: ignore other types of ApplyMsg.
        if err_msg:
            self.apply_err[i] = err_msg
            self.lab.fatal(f"apply error: {err_msg}")

    # --- network ------------------------------------------------------------------

    def connect(self, i: int) -> None:
        """Attach server i to the net."""
        self.connected[i] = True
        for j in range(self.n):  # outgoing ends
            names = self.endnames[i]
            if self.connected[j] and names is not None:
                self.net.enable(names[j], True)
        for j in range(self.n):  # incoming ends
            names = self.endnames[j]
            if self.connected[j] and names is not None:
                self.net.enable(names[i], True)

    def disconnect(self, i: int) -> None:
        """Detach server i from the net."""
        self.connected[i] = False
        names = self.endnames[i]
        if names is not None:  # outgoing ends
            for name in names:
                self.net.enable(name, False)
        for j in range(self.n):  # incoming ends
            names = self.endnames[j]
            if names is not None:
                self.net.enable(names[i], False)

    def rpc_count(self, server: int) -> int:
        return self.net.rpc_count(server)

    def rpc_total(self) -> int:
        return self.net.total_count()

    def set_unreliable(self, unrel: bool) -> None:
        self.net.set_reliable(not unrel)

    def bytes_total(self) -> int:
        return self.net.total_bytes()

    def set_long_reordering(self, longrel: bool) -> None:
        self.net.set_long_reordering(longrel)

    # --- checks --------------------------------------------------------------------

    async def check_one_leader(self) -> int:
        """Check that one connected server thinks it is the leader, and no other does.

        Tries a few times in case re-elections are needed.
        """
        for _ in range(10):
            await asyncio.sleep((450 + self.rng.randrange(100)) / 1000)

            leaders: dict[int, list[int]] = {}
            for i in range(self.n):
                rf = self.rafts[i]
                if self.connected[i] and rf is not None:
                    term, leader = rf.get_state()
                    if leader:
                        leaders.setdefault(term, []).append(i)

            last_term_with_leader = -1
            for term, ids in leaders.items():
                if len(ids) > 1:
                    self.lab.fatal(f"term {term} has {len(ids)} (>1) leaders")
                last_term_with_leader = max(last_term_with_leader, term)

            if leaders:
                return leaders[last_term_with_leader][0]
        self.lab.fatal("expected one leader, got none")

    def check_terms(self) -> int:
        """Check that everyone agrees on the term."""
        term = -1
        for i in range(self.n):
            rf = self.rafts[i]
            if self.connected[i] and rf is not None:
                xterm, _ = rf.get_state()
                if term == -1:
                    term = xterm
                elif term != xterm:
                    self.lab.fatal("servers disagree on term")
        return term

    def check_no_leader(self) -> None:
        """Check that none of the connected servers thinks it is the leader."""
        for i in range(self.n):
            rf = self.rafts[i]
            if self.connected[i] and rf is not None:
                _, is_leader = rf.get_state()
                if is_leader:
                    self.lab.fatal(
                        f"expected no leader among connected servers, but {i} claims to be leader"
                    )

    def n_committed(self, index: int) -> tuple[int, Any]:
        """How many servers think a log entry is committed, and its command."""
        count = 0
        cmd: Any = None
        for i in range(len(self.rafts)):
            if self.apply_err[i]:
                self.lab.fatal(self.apply_err[i])
            rf = self.rafts[i]
            if rf is not None and rf.killed():
                self.lab.fatal(f"server {i} stopped by itself (not crashed by the tester)")
            if index in self.logs[i]:
                cmd1 = self.logs[i][index]
                if count > 0 and cmd != cmd1:
                    self.lab.fatal(
                        f"committed values do not match: index {index}, {cmd!r}, {cmd1!r}"
                    )
                count += 1
                cmd = cmd1
        return count, cmd

    async def wait(self, index: int, n: int, start_term: int) -> Any:
        """Wait for at least n servers to commit, but don't wait forever.

        Returns the command, or -1 if a peer moved past `start_term` (> -1).
        """
        to = 0.010
        for _ in range(30):
            nd, _ = self.n_committed(index)
            if nd >= n:
                break
            await asyncio.sleep(to)
            if to < 1:
                to *= 2
            if start_term > -1:
                for rf in self.rafts:
                    if rf is not None and rf.get_state()[0] > start_term:
                        # someone has moved on; can no longer guarantee that we'll "win"
                        return -1
        nd, cmd = self.n_committed(index)
        if nd < n:
            self.lab.fatal(f"only {nd} decided for index {index}; wanted {n}")
        return cmd

    async def one(self, cmd: Any, expected_servers: int, retry: bool) -> int:
        """Do a complete agreement on cmd; return its index.

        It might choose the wrong leader initially, and have to re-submit after
        giving up; it entirely gives up after about 10 seconds. Indirectly
        checks that the servers agree on the same value, since n_committed()
        checks this, as do the appliers. If retry is true, may submit the
        command several times, in case a leader fails just after start(); if
        false, calls start() only once (to simplify the early 2B tests).
        """
        t0 = self._loop.time()
        starts = 0
        while self._loop.time() - t0 < 10 and not self.finished:
            # try all the servers, maybe one is the leader.
            index = -1
            for _ in range(self.n):
                starts = (starts + 1) % self.n
                rf = self.rafts[starts] if self.connected[starts] else None
                if rf is not None:
                    index1, _, ok = rf.start(cmd)
                    if ok:
                        index = index1
                        break

            if index != -1:
                # somebody claimed to be the leader and to have submitted our
                # command; wait a while for agreement.
                t1 = self._loop.time()
                while self._loop.time() - t1 < 2:
                    nd, cmd1 = self.n_committed(index)
                    if nd > 0 and nd >= expected_servers and cmd1 == cmd:
                        return index  # committed, and it was the command we submitted
                    await asyncio.sleep(0.020)
                if not retry:
                    self.lab.fatal(f"one({cmd!r:.40}) failed to reach agreement")
            else:
                await asyncio.sleep(0.050)
        if not self.finished:
            self.lab.fatal(f"one({cmd!r:.40}) failed to reach agreement")
        return -1

    def log_size(self) -> int:
        """Maximum persisted Raft state size (without the snapshot) across all servers."""
        return max(saved.raft_state_size() for saved in self.saved if saved is not None)

    # --- lifetime ------------------------------------------------------------------

    def begin(self, description: str) -> None:
        """Start a test: print its description and reset the statistics."""
        print(f"{description} ...")
        self.t0 = self._loop.time()
        self.wall0 = time.perf_counter()
        self.rpcs0 = self.rpc_total()
        self.bytes0 = self.bytes_total()
        self.max_index0 = self.max_index

    def end(self) -> None:
        """End a test that got here without failing: print the Passed line."""
        self.check_timeout()
        for i, rf in enumerate(self.rafts):
            if rf is not None and rf.killed():
                self.lab.fatal(f"server {i} stopped by itself (not crashed by the tester)")
        t = self._loop.time() - self.t0  # loop time: virtual on the virtual clock
        wall = time.perf_counter() - self.wall0
        nrpc = self.rpc_total() - self.rpcs0
        nbytes = self.bytes_total() - self.bytes0
        ncmds = self.max_index - self.max_index0  # agreements reported
        print(
            f"  ... Passed --  {t:4.1f}  {self.n} {nrpc:4d} {nbytes:7d} {ncmds:4d}"
            f"  seed={self.lab.seed} loop={self.lab.loop_kind} wall={wall:.1f}s"
            f" lag={self.lab.max_lag * 1000:.0f}ms"
        )

    def check_timeout(self) -> None:
        """Enforce the two-minute limit on each test (loop time)."""
        if self._loop.time() - self.start > TEST_TIME_LIMIT:
            self.lab.fatal(f"test took longer than {TEST_TIME_LIMIT:.0f} seconds")

    def cleanup(self) -> None:
        """Kill every peer and shut the network down."""
        if self.finished:
            return
        self.finished = True
        for i, rf in enumerate(self.rafts):
            if rf is not None:
                rf.kill()
            entry = self._appliers[i]
            if entry is not None:
                entry[0].cancel()
        self.net.cleanup()
        if self._file_root is not None:
            shutil.rmtree(self._file_root, ignore_errors=True)
