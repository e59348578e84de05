"""kill -9 during snapshot write and during install, on the sender and the receiver.

Three Nodes run as separate processes (tests/io/snapshot_node_proc.py) on
127.0.0.1 with FileStorage and a BulkState of tens of MiB (its bytes are
generated on demand), so writing a snapshot or sending one takes long
enough to be interrupted. The parent SIGKILLs a node at a seeded point of a
snapshot write or transfer, found by polling the node's directory (the
temporary file's size, or the final file appearing), restarts it from the
same directory, and checks:

* the node opens (Node.start() raises on a damaged directory, and on a
  stored snapshot that does not restore: BulkState.restore_stream checks
  every byte and the length), recovery removed every temporary file and
  every snapshot file but the one in use, and said so in its log;
* the snapshot in use was a whole file in place at the kill (the one the
  node started from, or the complete new one), holds exactly the state
  at its index (the size the grows through that index make), and is
  never older than the one any earlier run of the node started from;
* nothing acknowledged is lost: a writer puts an increasing counter into
  the register, one put at a time, through whoever leads; once the
  cluster settles, a linearizable read returns at least the last
  acknowledged value (and no more than the last issued one), and every
  node holds the same size, register and applied count;
* no node fail-stopped (its process would exit 3) or exited by itself;
* afterwards, every data directory reopens offline and its snapshot
  streams back whole, holding the state at its index.

A laggard catches up by snapshot only if the log it lacks is gone from
the leader when it comes back: see `stale_calls_expired` for the calls a
TcpClientEnd holds for a peer that is down. Laggards never snapshot on
their own (NO_OWN_SNAPSHOTS), so every snapshot file they write is a
transfer's.

Every randomised choice comes from the test's seed, printed first;
rerun with ``--seed N``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import random
import re
import signal
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from raftio.kv.spec import free_ports
from raftio.snapshotting import chunks_of
from raftio.storage import wal
from raftio.storage.file import FileStorage
from raftio.testing.bulk_state import BulkState
from raftio.transport.tcp import DEFAULT_TIMEOUT

CHILD = Path(__file__).with_name("snapshot_node_proc.py")
MiB = 1 << 20
STATE = 64 * MiB  # the state the cluster grows to before snapshotting
SNAPSHOT_BYTES = 256 << 10  # the nodes' snapshot threshold (log bytes since the last one)
PAD = 4000  # padding of the puts that push the log past SNAPSHOT_BYTES
FILL = SNAPSHOT_BYTES // PAD + 8  # padded puts that certainly do
FILE_HEADER = wal.SNAPSHOT_HEADER_SIZE  # a snapshot file's header, before the data
STATE_HEADER = 36  # BulkState's header (magic, seed, size, applied, length) before its register
NO_OWN_SNAPSHOTS = 1 << 40  # a laggard's threshold: every snapshot it holds is a transfer's
PACE = 0.005  # seconds between the writer's puts: the log grows slowly, no extra snapshots
TEST_TIMEOUT = 120.0  # a hard bound per test (they take 5-30 s)
TMP_PID = re.compile(r"\.(\d+)-\d+\.tmp$")
RECOVERY_REMOVED_TMP = "temporary file left by a crash"


# --- one node process ----------------------------------------------------------------


class NodeError(Exception):
    """The node answered a request with an error; `name` is its type's name."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"{name}: {message}")
        self.name = name


class Died(Exception):
    """The node's process is gone (killed, or it exited)."""


class NodeProc:
    """One snapshot_node_proc.py child: started, driven over its stdin/stdout, SIGKILLed."""

    def __init__(self, node_id: int, addresses: list[str], root: Path) -> None:
        self.id = node_id
        self.addresses = addresses
        self.dir = root / f"n{node_id}"
        self.log = root / f"n{node_id}.log"
        self.snapshot_bytes = SNAPSHOT_BYTES
        self.proc: asyncio.subprocess.Process | None = None
        self.pid = 0
        self.runs = 0
        self.killed = False  # the parent killed the current process
        self.events: list[dict[str, Any]] = []  # this run's
        self.all_restores: list[dict[str, Any]] = []  # every run's restored states
        self.ready: dict[str, Any] = {}  # this run's status when Node.start() returned
        self.durable: list[int] = []  # the snapshot index each run started from
        self._ready: asyncio.Future[None] | None = None
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._ids = itertools.count(1)
        self._reader: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None and not self.killed

    @property
    def boot_restores(self) -> list[dict[str, Any]]:
        """The states restored in this run before it was ready: the stored snapshot."""
        out = []
        for event in self.events:
            if event["event"] == "ready":
                return out
            if event["event"] == "restored":
                out.append(event["state"])
        return out

    async def start(self, timeout: float = 30.0) -> dict[str, Any]:
        """Start the process on the node's directory; its status once Node.start() returned."""
        loop = asyncio.get_running_loop()
        with self.log.open("ab") as log:
            log.write(f"--- run {self.runs + 1}\n".encode())
            log.flush()
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                str(CHILD),
                str(self.id),
                ",".join(self.addresses),
                str(self.dir),
                str(self.snapshot_bytes),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
            )
        # The new run replaces the old one at once (no await between): a check
        # meanwhile must never see the killed process as this run's.
        self.proc, self.pid, self.runs, self.killed = proc, proc.pid, self.runs + 1, False
        self.events, self.ready = [], {}
        self._ready = loop.create_future()
        self._reader = asyncio.create_task(self._read(proc, self._ready))
        try:
            async with asyncio.timeout(timeout):
                await asyncio.shield(self._ready)
        except Died:
            raise AssertionError(f"node {self.id} did not start:\n{self.log_tail()}") from None
        # What a run starts from was durable: a later run never starts from less.
        index = self.ready["snapshot_index"]
        assert not self.durable or index >= self.durable[-1], (
            f"node {self.id} starts from snapshot {index}, an earlier run from {self.durable}"
        )
        self.durable.append(index)
        return self.ready

    async def _read(self, proc: asyncio.subprocess.Process, ready: asyncio.Future[None]) -> None:
        assert proc.stdout is not None
        while line := await proc.stdout.readline():
            try:
                message = json.loads(line)
            except ValueError:
                continue  # a line cut short by the kill
            if "id" in message:
                future = self._pending.pop(message["id"], None)
                if future is None or future.done():
                    continue
                if message["ok"]:
                    future.set_result(message["value"])
                else:
                    future.set_exception(NodeError(message["error"], message["message"]))
                continue
            self.events.append(message)
            if message["event"] == "restored":
                self.all_restores.append(message["state"])
            elif message["event"] == "ready":
                self.ready = message["status"]
                if not ready.done():
                    ready.set_result(None)
        await proc.wait()
        died = Died(f"node {self.id} (pid {proc.pid}) exited {proc.returncode}")
        pending, self._pending = self._pending, {}
        for future in [*pending.values(), ready]:
            if not future.done():
                future.set_exception(died)
                future.exception()  # retrieved: whoever waits gets it, nobody else cares

    async def call(self, op: str, deadline: float = 5.0, **fields: Any) -> Any:
        """One request; raises NodeError, Died, or TimeoutError after `deadline` seconds."""
        proc = self.proc
        if proc is None or not self.running:
            raise Died(f"node {self.id} is not running")
        assert proc.stdin is not None
        rid = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[rid] = future
        try:
            proc.stdin.write(json.dumps({"id": rid, "op": op, **fields}).encode() + b"\n")
            await proc.stdin.drain()
            async with asyncio.timeout(deadline):
                return await future
        except (ConnectionError, BrokenPipeError) as exc:
            raise Died(f"node {self.id}: {exc}") from None
        finally:
            self._pending.pop(rid, None)

    async def status(self) -> dict[str, Any]:
        return dict(await self.call("status", deadline=3.0))

    def kill_now(self) -> None:
        """SIGKILL, at once (reap with `reaped()`)."""
        assert self.proc is not None
        if self.proc.returncode is None:
            self.check_alive()  # it may have exited just now, unseen
            self.killed = True
            self.proc.send_signal(signal.SIGKILL)

    async def reaped(self) -> None:
        assert self.proc is not None
        assert self._reader is not None
        await self.proc.wait()
        await self._reader
        if self.proc.returncode != -signal.SIGKILL:
            raise AssertionError(
                f"node {self.id} had exited {self.proc.returncode} before the kill:\n"
                + self.log_tail()
            )

    async def kill(self) -> None:
        self.kill_now()
        await self.reaped()

    def check_alive(self) -> None:
        """Raise unless the process runs or the parent killed it."""
        proc = self.proc
        if proc is None or self.killed or proc.returncode is None:
            return
        failed = [e["reason"] for e in self.events if e["event"] == "failed"]
        raise AssertionError(
            f"node {self.id} (pid {proc.pid}) exited {proc.returncode} by itself"
            + (f", fail-stopped: {failed[0]}" if failed else "")
            + f"\n{self.log_tail()}"
        )

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def this_run_log(self) -> str:
        text = self.log.read_text(errors="replace")
        return text[text.rfind(f"--- run {self.runs}\n") :]


# --- the cluster -----------------------------------------------------------------------


class Cluster:
    def __init__(self, root: Path, n: int = 3) -> None:
        addresses = [f"127.0.0.1:{port}" for port in free_ports(n)]
        self.nodes = [NodeProc(i, addresses, root) for i in range(n)]
        self.grows: list[tuple[int, int, int]] = []  # (index before, index after, size)

    def sizes_at(self, index: int) -> set[int]:
        """The state's size through log index `index` (two, where a grow's place is unsure)."""
        size = 0
        for before, after, grown in self.grows:
            if index >= after:
                size = grown
            elif index > before:
                return {size, grown}
            else:
                break
        return {size}

    def check_boot(self, node: NodeProc) -> None:
        """The snapshot `node` started from holds exactly the state at its index."""
        index, boot = node.ready["snapshot_index"], node.boot_restores
        assert len(boot) == (1 if index else 0), f"node {node.id}: snapshot {index}, {boot}"
        if index:
            assert boot[0]["size"] in self.sizes_at(index), (
                f"node {node.id} started from snapshot {index} holding {brief(boot[0])}; "
                f"the state there is {self.sizes_at(index)} bytes"
            )

    def running(self) -> list[NodeProc]:
        return [node for node in self.nodes if node.running]

    def check(self) -> None:
        for node in self.nodes:
            node.check_alive()

    async def statuses(self) -> dict[int, dict[str, Any] | None]:
        """Every running node's status; None for one that does not answer in time."""
        nodes = self.running()

        async def one(node: NodeProc) -> dict[str, Any] | None:
            try:
                return await node.status()
            except (Died, TimeoutError):
                return None

        found = await asyncio.gather(*(one(node) for node in nodes))
        self.check()
        for node, st in zip(nodes, found, strict=True):
            if st is not None:
                assert st["failure"] is None, f"node {node.id} fail-stopped: {st['failure']}"
        return {node.id: st for node, st in zip(nodes, found, strict=True)}

    async def leader(self, timeout: float = 30.0) -> NodeProc:
        """A running node that says it leads (the newest term's, if two do)."""
        async with asyncio.timeout(timeout):
            while True:
                found = await self.statuses()
                leaders = [
                    (st["term"], i) for i, st in found.items() if st and st["role"] == "leader"
                ]
                if leaders:
                    return self.nodes[max(leaders)[1]]
                await asyncio.sleep(0.05)

    async def until(
        self, what: str, predicate: Callable[[dict[int, dict[str, Any]]], bool], timeout: float
    ) -> dict[int, dict[str, Any]]:
        """Poll the running nodes' statuses until every one answers and `predicate` holds."""
        last: dict[int, dict[str, Any] | None] = {}
        try:
            async with asyncio.timeout(timeout):
                while True:
                    last = await self.statuses()
                    answered = {i: st for i, st in last.items() if st is not None}
                    if len(answered) == len(last) and predicate(answered):
                        return answered
                    await asyncio.sleep(0.05)
        except TimeoutError:
            raise AssertionError(f"not {what} in {timeout:.0f} s; statuses: {last}") from None

    async def settle(self, timeout: float = 40.0) -> dict[int, dict[str, Any]]:
        """Once every running node has applied the leader's commit index and holds its state."""

        def settled(found: dict[int, dict[str, Any]]) -> bool:
            leaders = [st for st in found.values() if st["role"] == "leader"]
            if len(leaders) != 1:
                return False
            lead = leaders[0]
            return all(
                st["applied_index"] == lead["commit"]
                and (st["size"], st["register"], st["sm_applied"])
                == (lead["size"], lead["register"], lead["sm_applied"])
                for st in found.values()
            )

        return await self.until("settled", settled, timeout)

    async def shutdown(self) -> None:
        for node in self.nodes:
            if node.proc is not None and node.proc.returncode is None:
                node.killed = True
                node.proc.send_signal(signal.SIGKILL)  # no check: this runs after failures too
        for node in self.nodes:
            if node.proc is not None and node._reader is not None:
                await node.proc.wait()
                await node._reader

    def evidence(self) -> str:
        parts = []
        for node in self.nodes:
            parts.append(f"node {node.id} (pid {node.pid}, runs {node.runs}): {listing(node.dir)}")
            parts.append(node.log_tail(25))
        return "\n".join(parts)


# --- the writer: acknowledged puts ---------------------------------------------------------


class Writer:
    """Puts an increasing counter, one put at a time, through whoever leads."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.issued = 0  # the last counter value sent
        self.acked = 0  # the last counter value acknowledged
        self.failures: dict[str, int] = {}
        self._leader: NodeProc | None = None
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()

    async def put(self, pad: int = 0) -> bool:
        self.issued += 1
        k = self.issued
        leader = self._leader if self._leader and self._leader.running else None
        if leader is None:
            leader = self._leader = await self.cluster.leader()
        try:
            await leader.call(
                "propose", deadline=8.0, command=["put", f"{k:08d}" + "x" * pad], timeout=4.0
            )
        except (NodeError, Died, TimeoutError) as exc:
            name = exc.name if isinstance(exc, NodeError) else type(exc).__name__
            self.failures[name] = self.failures.get(name, 0) + 1
            self._leader = None
            await asyncio.sleep(0.02)  # back off; the next put looks for the leader again
            return False
        self.acked = k
        return True

    async def fill(self) -> None:
        """Padded puts: the log passes the snapshot threshold, and every node snapshots."""
        for _ in range(FILL):
            await self.put(PAD)

    def start(self) -> None:
        self._stop.clear()
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while not self._stop.is_set():
            await self.put()
            await asyncio.sleep(PACE)  # pacing, not synchronisation

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task
            self._task = None

    async def acked_more(self, n: int, timeout: float = 30.0) -> None:
        """Wait until `n` more puts are acknowledged (the cluster makes progress)."""
        target = self.acked + n
        try:
            async with asyncio.timeout(timeout):
                while self.acked < target:
                    self.cluster.check()
                    if self._task is not None and self._task.done():
                        self._task.result()  # the writer's own failure
                    await asyncio.sleep(0.02)
        except TimeoutError:
            raise AssertionError(
                f"no progress: {self.acked} acknowledged, waiting for {target}; {self.failures}"
            ) from None


async def grow(cluster: Cluster, total: int, parts: int = 4) -> None:
    """Grow the state by `total` bytes: every grow acknowledged (nothing is killed meanwhile).

    Records where each grow can sit in the log (after the leader's last index
    before it, at or before its last index after), so that the size a
    snapshot at any index must hold is known (`Cluster.sizes_at`).
    """
    for _ in range(parts):
        leader = await cluster.leader()
        before = (await leader.status())["last_index"]
        size = await leader.call(
            "propose", deadline=20.0, command=["grow", total // parts], timeout=15.0
        )
        after = (await leader.status())["last_index"]
        cluster.grows.append((before, after, int(size)))


# --- the directory ---------------------------------------------------------------------------


def listing(directory: Path) -> dict[str, int]:
    """Every file in `directory` and its size (for the evidence)."""
    out: dict[str, int] = {}
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return out
    for entry in entries:
        with contextlib.suppress(FileNotFoundError):
            out[entry.name] = entry.stat().st_size
    return out


def temporaries(directory: Path) -> dict[str, int]:
    return {name: size for name, size in listing(directory).items() if name.endswith(".tmp")}


def snapshots(directory: Path) -> set[str]:
    return {name for name in listing(directory) if name.endswith(".snap")}


def check_restarted(node: NodeProc, left: dict[str, int]) -> None:
    """After a restart on what a kill `left`: recovery removed every temporary file and
    every snapshot file but the one in use (and said so), and that one was there."""
    stale = {
        name: size
        for name, size in temporaries(node.dir).items()
        if (m := TMP_PID.search(name)) is None or int(m.group(1)) != node.pid
    }
    assert not stale, f"node {node.id}: temporary files of earlier runs survive: {stale}"
    log = node.this_run_log()
    in_use = node.ready["snapshot_index"]
    current = f"snap-{in_use:016x}-"
    for name in left:
        if name.endswith(".tmp"):
            why = RECOVERY_REMOVED_TMP
        elif name.endswith(".snap") and not name.startswith(current):
            why = "snapshot the log does not name"
        else:
            continue
        assert f"removing {name} ({why})" in log, (
            f"node {node.id}: recovery did not report removing {name} ({why}):\n{log[-3000:]}"
        )
    if in_use:
        assert any(n.startswith(current) and n.endswith(".snap") for n in left), (
            f"node {node.id} uses snapshot {in_use}, not among the files at the kill: {left}"
        )


async def kill_when(
    cluster: Cluster,
    node: NodeProc,
    what: str,
    trigger: Callable[[], bool],
    timeout: float = 30.0,
) -> dict[str, int]:
    """SIGKILL `node` the moment `trigger()` holds (polled every millisecond); its files then."""
    try:
        async with asyncio.timeout(timeout):
            while not trigger():
                cluster.check()
                await asyncio.sleep(0.001)
    except TimeoutError:
        raise AssertionError(f"never saw {what} on node {node.id}") from None
    node.kill_now()
    await node.reaped()
    left = listing(node.dir)
    print(f"killed node {node.id} (pid {node.pid}) at {what}; its files: {left}")
    return left


class TmpWatch:
    """Follows the temporary snapshot file in a node's directory, to kill at a size of it.

    The trigger holds once the file reaches `threshold` bytes, or once it is
    gone: renamed into place, or aborted (`vanished`). With `follow`, a
    transfer that starts over (a new leader, a newer snapshot) is followed to
    its new file, and only a snapshot file appearing counts as gone.
    """

    def __init__(self, node: NodeProc, threshold: int, *, follow: bool = False) -> None:
        self.node = node
        self.threshold = threshold
        self.follow = follow
        self.before = snapshots(node.dir)
        self.name: str | None = None
        self.size = 0
        self.vanished = False
        self.restarts = 0

    def __call__(self) -> bool:
        found = temporaries(self.node.dir)
        if self.name is not None and self.name not in found:
            if not self.follow:
                self.vanished = True
                return True
            self.name = None
            self.restarts += 1
        if self.name is None:
            if not found:
                self.vanished = self.follow and bool(snapshots(self.node.dir) - self.before)
                return self.vanished
            self.name = min(found, key=lambda n: found[n])
        self.size = found[self.name]
        return self.size >= self.threshold


class RenameWatch:
    """Holds `delay` seconds after a new snapshot file appears in the node's directory."""

    def __init__(self, node: NodeProc, delay: float) -> None:
        self.node = node
        self.delay = delay
        self.before = snapshots(node.dir)
        self.seen: float | None = None

    def __call__(self) -> bool:
        if self.seen is None and snapshots(self.node.dir) - self.before:
            self.seen = time.monotonic()
        return self.seen is not None and time.monotonic() >= self.seen + self.delay


def brief(state: dict[str, Any]) -> str:
    reg = state.get("register", "")
    return f"size {state.get('size')}, register {reg[:8] or '-'} (+{len(reg)} chars)"


def register_counter(register: str) -> int:
    return int(register[:8]) if register else 0


async def check_final(
    cluster: Cluster, writer: Writer, size: int, *, settle_timeout: float = 40.0
) -> None:
    """Settled, nothing acknowledged lost, the expected state everywhere, no fail-stop."""
    await writer.stop()
    found = await cluster.settle(settle_timeout)
    leader = await cluster.leader()
    read = await leader.call("read", deadline=10.0, timeout=8.0)
    k = register_counter(read["register"])
    assert writer.acked <= k <= writer.issued, (
        f"the register holds put {k}; acknowledged through {writer.acked}, "
        f"issued through {writer.issued}"
    )
    assert read["size"] == size, f"size {read['size']} != {size}"
    for i, st in found.items():
        assert st["size"] == size, f"node {i}: size {st['size']} != {size}"
    for node in cluster.nodes:
        for state in node.all_restores:
            assert state["size"] in legal_sizes(size), f"node {node.id} restored {state}"
    print(
        f"settled: register {k}, {writer.acked} acknowledged of {writer.issued}; "
        f"failures {writer.failures}; commit {found[leader.id]['commit']}"
    )


def legal_sizes(size: int) -> set[int]:
    """The sizes a whole snapshot of these tests can hold (grown in MiB steps to `size`)."""
    return {s for s in range(0, size + 1, MiB)}


async def verify_offline(cluster: Cluster) -> None:
    """Every directory reopens (recovery) and its snapshot streams back whole, holding the
    state at its index."""
    for node in cluster.nodes:
        if node.proc is None:
            continue
        with FileStorage(node.dir) as storage:
            reader = storage.open_snapshot()
            if reader is None:
                continue
            try:
                machine = BulkState()
                await machine.restore_stream(chunks_of(reader))
            finally:
                reader.close()
        index = reader.info.index
        assert machine.size in cluster.sizes_at(index), (
            f"node {node.id}: snapshot {index} holds {machine.size} bytes, "
            f"not {cluster.sizes_at(index)}"
        )
        assert not temporaries(node.dir), f"node {node.id}: {temporaries(node.dir)}"


def run(
    tmp_path: Path,
    seed: int,
    scenario: Callable[[Cluster, random.Random], Coroutine[Any, Any, None]],
) -> None:
    print(f"seed={seed} (replay with --seed {seed})")
    started = time.monotonic()

    async def main() -> None:
        cluster = Cluster(tmp_path)
        try:
            async with asyncio.timeout(TEST_TIMEOUT):
                await scenario(cluster, random.Random(seed))
        except BaseException:
            print(f"seed={seed}: failed; the evidence:\n{cluster.evidence()}")
            raise
        finally:
            await cluster.shutdown()
        await verify_offline(cluster)

    asyncio.run(main())
    print(f"seed={seed}: passed in {time.monotonic() - started:.1f} s")


async def snapshotted(cluster: Cluster, writer: Writer, nodes: list[NodeProc]) -> None:
    """Fill the log until `nodes` have all snapshotted past the state's growth."""
    grown = (await (await cluster.leader()).status())["commit"]
    await writer.fill()
    await cluster.until(
        "snapshotted",
        lambda found: all(found[n.id]["snapshot_index"] >= grown for n in nodes),
        timeout=40.0,
    )


async def stale_calls_expired() -> None:
    """Wait until the leader's calls to a stopped node, built before it compacted, are gone.

    A TcpClientEnd queues the calls made while its peer is down and sends
    them when it comes back, each until its timeout (DEFAULT_TIMEOUT). Those
    built before the leader compacted carry log entries, and a laggard that
    receives them catches up by log instead of by snapshot (as Raft allows).
    Once they have expired the leader has only its snapshot to send. Called
    right after the compaction was seen; this waits for a timeout of the
    transport, which no status shows, so it is a bounded wait, not a poll.
    """
    await asyncio.sleep(DEFAULT_TIMEOUT + 0.3)


# --- the tests -----------------------------------------------------------------------------


def test_sender_killed_while_writing_its_snapshot(tmp_path: Path, seed: int) -> None:
    """The leader is SIGKILLed while it writes a snapshot file, at a seeded fraction of it.

    Twice: each round pushes every node's log past the threshold (all three
    write a snapshot of the whole state at once) and kills whoever leads.
    """

    async def scenario(cluster: Cluster, rng: random.Random) -> None:
        for node in cluster.nodes:
            await node.start()
        writer = Writer(cluster)
        await grow(cluster, STATE)
        for round_ in range(2):
            await writer.stop()  # one put at a time: the padded ones now
            leader = await cluster.leader()
            fraction = rng.uniform(0.0, 1.02)  # past 1: as it is sealed and renamed
            print(f"round {round_}: kill node {leader.id} at {fraction:.3f} of its snapshot")
            watch = TmpWatch(leader, FILE_HEADER + int(fraction * STATE))
            killing = asyncio.create_task(
                kill_when(cluster, leader, f"{fraction:.3f} of its snapshot file", watch)
            )
            await writer.fill()  # the log passes the threshold: every node snapshots
            writer.start()
            left = await killing
            acked_at_kill = writer.acked
            print(f"its file {watch.name} at {watch.size} bytes (gone: {watch.vanished})")

            await writer.acked_more(5)  # the other two elect a leader and go on
            ready = await leader.start()
            check_restarted(leader, left)
            cluster.check_boot(leader)
            print(f"restarted: snapshot {ready['snapshot_index']}, {brief(ready)}")
            await writer.acked_more(5)
            assert writer.acked > acked_at_kill
        await check_final(cluster, writer, STATE)

    run(tmp_path, seed, scenario)


def test_receiver_killed_while_installing(tmp_path: Path, seed: int) -> None:
    """A new node is SIGKILLed mid-transfer, twice; it restarts clean and catches up."""

    async def scenario(cluster: Cluster, rng: random.Random) -> None:
        a, b, late = cluster.nodes
        late.snapshot_bytes = NO_OWN_SNAPSHOTS
        await a.start()
        await b.start()
        writer = Writer(cluster)
        await grow(cluster, STATE)
        await snapshotted(cluster, writer, [a, b])
        await stale_calls_expired()
        writer.start()
        await late.start()
        for attempt in range(2):
            fraction = rng.uniform(0.05, 0.9)
            watch = TmpWatch(late, FILE_HEADER + int(fraction * STATE), follow=True)
            left = await kill_when(cluster, late, f"{fraction:.3f} of the transfer", watch)
            assert not watch.vanished, f"the transfer ended before {fraction:.3f}: {left}"
            assert any(n.endswith(".tmp") for n in left), f"no staged file at the kill: {left}"
            assert not snapshots(late.dir), f"attempt {attempt}: a snapshot file already: {left}"
            ready = await late.start()  # and the transfer starts over
            check_restarted(late, left)
            cluster.check_boot(late)
            assert ready["snapshot_index"] == 0, f"a snapshot never installed in use: {ready}"
            assert ready["size"] == 0, ready
        await cluster.until(
            "caught up", lambda found: found[late.id]["size"] == STATE, timeout=40.0
        )
        await writer.acked_more(3)
        await check_final(cluster, writer, STATE)
        assert late.all_restores, f"node {late.id} never restored the state"

    run(tmp_path, seed, scenario)


def test_sender_killed_while_streaming(tmp_path: Path, seed: int) -> None:
    """The leader is SIGKILLed mid-transfer; the new leader brings the laggard up to date."""

    async def scenario(cluster: Cluster, rng: random.Random) -> None:
        a, b, late = cluster.nodes
        late.snapshot_bytes = NO_OWN_SNAPSHOTS
        await a.start()
        await b.start()
        writer = Writer(cluster)
        await grow(cluster, STATE)
        await snapshotted(cluster, writer, [a, b])
        await stale_calls_expired()
        writer.start()
        leader = await cluster.leader()
        other = b if leader is a else a
        await late.start()
        fraction = rng.uniform(0.05, 0.9)
        watch = TmpWatch(late, FILE_HEADER + int(fraction * STATE), follow=True)
        await kill_when(cluster, leader, f"{fraction:.3f} of its transfer to node 2", watch)
        assert not watch.vanished, f"the transfer ended before {fraction:.3f}"
        acked_at_kill = writer.acked
        print(f"node {late.id}'s staged file at {watch.size} bytes")

        await cluster.until(
            "a new leader", lambda found: found[other.id]["role"] == "leader", timeout=30.0
        )
        await leader.start()
        cluster.check_boot(leader)
        await cluster.until(
            "caught up", lambda found: found[late.id]["size"] == STATE, timeout=40.0
        )
        await writer.acked_more(3)
        assert writer.acked > acked_at_kill
        await check_final(cluster, writer, STATE)
        assert late.all_restores, f"node {late.id} never restored the state"
        # The dead leader's transfer was dropped when the new one began.
        assert not temporaries(late.dir), listing(late.dir)

    run(tmp_path, seed, scenario)


def test_receiver_killed_around_the_last_chunk(tmp_path: Path, seed: int) -> None:
    """A laggard is SIGKILLed as a snapshot lands: it restarts on a whole one, old or new.

    Four rounds; before each after the first, the laggard is stopped, the
    state grows by 1 MiB and the others snapshot past it, so it is far
    behind a bigger state again. Each round kills it at a seeded point:
    with the last chunk's data written (finishing: fdatasync, install),
    near the end of the data, the moment a new snapshot file appears
    (renamed into place; its WAL marker may not be written yet), or a
    seeded delay after that (while the state machine restores from it).

    After the restart the snapshot in use must be a file that was whole and
    in place at the kill (the one it started from, or the new one), hold
    exactly the state at its index, and never be older than the one any
    earlier run started from.
    """

    async def scenario(cluster: Cluster, rng: random.Random) -> None:
        a, b, late = cluster.nodes
        late.snapshot_bytes = NO_OWN_SNAPSHOTS
        await a.start()
        await b.start()
        writer = Writer(cluster)
        size = STATE - 4 * MiB
        await grow(cluster, size)
        await snapshotted(cluster, writer, [a, b])
        await stale_calls_expired()
        writer.start()
        for round_ in range(4):
            if round_:
                behind = (await late.status())["last_index"]
                await late.kill()
                await writer.stop()
                await grow(cluster, MiB, parts=1)
                size += MiB
                await writer.fill()
                past = await cluster.until(
                    "snapshotted past the laggard",
                    lambda found, behind=behind: all(
                        found[n.id]["snapshot_index"] > behind for n in (a, b)
                    ),
                    timeout=40.0,
                )
                print(
                    f"node {late.id} stopped at index {behind}; snapshots now "
                    f"{[past[n.id]['snapshot_index'] for n in (a, b)]}"
                )
                await stale_calls_expired()
                writer.start()
            mode = rng.choice(["near the end", "data written", "renamed", "after the rename"])
            trigger: Callable[[], bool]
            if mode == "near the end":
                near = rng.uniform(0.9, 1.0)
                trigger = TmpWatch(late, FILE_HEADER + int(near * size))
                what = f"{mode} ({near:.3f})"
            elif mode == "data written":
                trigger = TmpWatch(late, FILE_HEADER + STATE_HEADER + size)  # the register's left
                what = mode
            else:
                delay = rng.uniform(0.0, 0.3) if mode == "after the rename" else 0.0
                trigger = RenameWatch(late, delay)
                what = f"{mode} (+{delay * 1000:.0f} ms)"
            print(f"round {round_}: kill node {late.id} {what}")
            started = await late.start()
            left = await kill_when(cluster, late, what, trigger)
            ready = await late.start()
            check_restarted(late, left)  # the snapshot in use was whole and in place
            cluster.check_boot(late)  # and holds the state at its index
            print(
                f"restarted: snapshot {ready['snapshot_index']} (the killed run started from "
                f"{started['snapshot_index']}), {[brief(s) for s in late.boot_restores]}"
            )
            await cluster.until(
                "caught up", lambda found, size=size: found[late.id]["size"] == size, timeout=40.0
            )
        await writer.acked_more(3)
        await check_final(cluster, writer, size)

    run(tmp_path, seed, scenario)
