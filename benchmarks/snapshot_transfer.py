"""A new node catching up from a big snapshot over TCP: `python -m benchmarks --snapshot`.

What it proves (docs/benchmarks.md#snapshot-transfer):

- memory: the peak RSS growth of the sender (the leader) and of the
  receiver (the new node) while a SIZE-byte snapshot streams, each under
  64 MiB (the run exits 1 otherwise);
- speed: SIZE over the time from the new node's start to its state machine
  holding SIZE bytes, as a fraction of a raw loopback TCP copy of SIZE bytes
  between two processes of the same run (and, since the receiver must make
  the snapshot durable, the same disk's rate for SIZE bytes written and
  fdatasync'd, also measured in the run);
- service: the leader's write latency (p50, p99) while the snapshot streams,
  against the same load without a transfer.

Every node is its own process (`benchmarks.snapshot_node`: a Node with a
`BulkState` over TCP and FileStorage), so each RSS is one node's. The phases:

1. nodes 0 and 1 start (a 3-node cluster with node 2 down); the leader grows
   the state to SIZE and writes puts until its log passes `snapshot_bytes`;
   both nodes snapshot SIZE bytes to disk in the background; wait for both;
2. baseline: closed-loop puts at the leader for `duration` seconds;
3. raw copy: SIZE bytes over a loopback socket, 1 MiB sends, three times;
   then SIZE bytes written to the data directory's disk and fdatasync'd;
4. transfer: node 2 (a warmed-up process, its node not started) starts empty
   while the same load runs at the leader; the parent samples both
   processes' VmRSS every 20 ms (and resets, then reads, VmHWM where the
   kernel lets it), until node 2's BulkState holds SIZE bytes;
5. node 2 catches up on the log written meanwhile.

The RSS baselines are read just before node 2 starts: the leader's after
the baseline load (so the load's own memory is in it), node 2's after its
imports (so its growth includes starting a Node). Growth is peak minus
baseline. The results go to OUT/snapshot.json and a table on stdout;
progress to stderr; the nodes' logs to OUT/logs/. The data directories are
temporary (SIZE bytes three times over: both snapshots and the received one).
`Settings.trace_memory` (not on the command line) has both ends run
tracemalloc during the transfer and report the allocation sites at its peak.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import signal
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.control import run_loop
from benchmarks.procs import Child, ChildError, ProcessGroup, child_env
from benchmarks.snapshot_node import SECRET_ENV, memory
from benchmarks.stats import decode_samples, summarize
from raftio.config import RaftConfig
from raftio.kv.spec import free_ports

__all__ = ["BOUND", "Settings", "parse_size", "run"]

PACKAGE_ROOT = Path(__file__).resolve().parent.parent
BOUND = 64 << 20  # peak RSS growth allowed at each end
MiB = 1 << 20
_SAMPLE = 0.02  # seconds between RSS samples
_FILL_BYTES = 4000  # put size that pushes the log past snapshot_bytes (BulkState keeps <= 4096)
_RAW_ROUNDS = 3
_RAFT = RaftConfig()  # its snapshot chunk size and window are the defaults here


@dataclasses.dataclass(slots=True)
class Settings:
    size: int = 1 << 30
    duration: float = 5.0  # seconds of baseline load
    writers: int = 1  # closed-loop writers at the leader
    payload: int = 16  # bytes per put
    snapshot_bytes: int = 16 << 20  # Node's snapshot_bytes (the load must stay below it)
    chunk_bytes: int = _RAFT.snapshot_chunk_bytes
    inflight: int = _RAFT.snapshot_chunks_inflight
    loop: str = "uvloop"
    out: Path | None = None
    timeout: float = 900.0  # seconds any one phase may take
    trace_memory: bool = False  # tracemalloc at both ends during the transfer (a diagnosis)


def parse_size(text: str) -> int:
    """Bytes from '1073741824', '1G', '32M', '512K' (binary units; 'MiB', 'GB' too)."""
    units = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    t = text.strip().upper().removesuffix("B").removesuffix("I")
    number, unit = (t[:-1], t[-1]) if t and t[-1] in units else (t, "")
    try:
        value = int(float(number) * units[unit])
    except ValueError:
        raise ValueError(f"expected a size like 1G, 32M or 4096, not {text!r}") from None
    if value < 1:
        raise ValueError(f"a size must be positive, not {text!r}")
    return value


def default_out() -> Path:
    return Path("results") / time.strftime("%Y%m%d-%H%M%S-snapshot")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (/proc/<pid>/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def reset_peak(pid: int) -> bool:
    """Reset the process's VmHWM to its current RSS (Linux clear_refs 5); False if refused."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


class RssSampler:
    """VmRSS of some processes every 20 ms, from the parent: the peak of each."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.peak = {name: 0 for name in pids}
        self.samples = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(_SAMPLE)

    def sample(self) -> None:
        for name, pid in self.pids.items():
            with contextlib.suppress(OSError, KeyError):
                self.peak[name] = max(self.peak[name], memory(pid)["VmRSS"])
        self.samples += 1

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self.sample()


def _disk_write(directory: Path, total: int) -> float:
    """Seconds to write `total` bytes to a new file in 1 MiB writes and fdatasync it."""
    path = directory / "disk-probe"
    block = bytes(range(256)) * (MiB // 256)
    started = time.perf_counter()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    try:
        left = total
        while left > 0:
            left -= os.write(fd, block[: min(left, MiB)])
        os.fdatasync(fd)
        return time.perf_counter() - started
    finally:
        os.close(fd)
        path.unlink()


def _copy_out(listener: socket.socket, total: int) -> float:
    """Accept the sink, send it `total` bytes in 1 MiB sends; seconds until it answers."""
    listener.settimeout(60)
    conn, _ = listener.accept()
    with conn:
        conn.settimeout(None)
        block = memoryview(bytes(range(256)) * (MiB // 256))
        started = time.perf_counter()
        left = total
        while left > 0:
            n = min(left, MiB)
            conn.sendall(block[:n])
            left -= n
        if conn.recv(1) != b"k":
            raise RuntimeError("the raw copy's reader did not confirm")
        return time.perf_counter() - started


class Bench:
    """One run: its processes, its measurements."""

    def __init__(self, settings: Settings, data: Path, logs: Path) -> None:
        self.s = settings
        self.data = data
        self.logs = logs
        self.group = ProcessGroup()
        self.env = child_env(PACKAGE_ROOT)
        self.env[SECRET_ENV] = os.urandom(16).hex()
        self.ports = free_ports(3)
        self.peers = ",".join(f"127.0.0.1:{p}" for p in self.ports)
        self.results: dict[str, Any] = {}

    def _argv(self, i: int) -> list[str]:
        s = self.s
        return [
            sys.executable, "-m", "benchmarks.snapshot_node", "--id", str(i),
            "--peers", self.peers, "--data", str(self.data / f"n{i}"),
            "--snapshot-bytes", str(s.snapshot_bytes), "--chunk-bytes", str(s.chunk_bytes),
            "--inflight", str(s.inflight), "--loop", s.loop, "--parent-pid", str(os.getpid()),
        ]  # fmt: skip

    async def _node(self, i: int) -> Child:
        child = Child(f"node{i}", self._argv(i), self.logs / f"node{i}.log", env=self.env)
        await self.group.start(child)
        await child.read_reply(timeout=120)  # "ready": imported, its node not started
        return child

    async def execute(self) -> None:
        s = self.s
        async with self.group:
            n0, n1, n2 = await asyncio.gather(*(self._node(i) for i in range(3)))
            await asyncio.gather(n0.request({"cmd": "start"}), n1.request({"cmd": "start"}))
            leader, follower = await self._leader([n0, n1])
            log(f"leader {leader.name}; growing the state to {s.size / MiB:.0f} MiB")
            grown = await leader.request({"cmd": "propose", "command": ["grow", s.size]})
            await self._snapshot(leader, follower, grown["index"])

            taken = (await leader.request({"cmd": "status"}))["snapshots_taken"]
            log(f"baseline: {s.writers} writer(s), {s.payload} B puts, {s.duration:g} s")
            await leader.request({"cmd": "load_start", "concurrency": s.writers,
                                  "payload": s.payload})  # fmt: skip
            await asyncio.sleep(s.duration)
            baseline = await leader.request({"cmd": "load_stop"}, timeout=120)

            log(f"raw loopback copy of {s.size / MiB:.0f} MiB, {_RAW_ROUNDS} times")
            raw = [await self._raw_copy() for _ in range(_RAW_ROUNDS)]
            log(f"disk: {s.size / MiB:.0f} MiB written and fdatasync'd")
            disk = await asyncio.to_thread(_disk_write, self.data, s.size)

            log("node 2 starts empty: the snapshot streams while the load runs")
            during, transfer, rss = await self._transfer(leader, n2)

            status = await leader.request({"cmd": "status"})
            caught = await self._caught_up(leader, n2)
            for child in (n0, n1, n2):
                with contextlib.suppress(ChildError):
                    await child.request({"cmd": "quit"})
        self.results.update(
            leader=leader.name,
            raw_seconds=raw,
            disk_seconds=disk,
            transfer=transfer,
            rss=rss,
            writes={"baseline": baseline, "during": during},
            resnapshots=status["snapshots_taken"] - taken,
            caught_up=caught,
        )

    async def _leader(self, nodes: list[Child]) -> tuple[Child, Child]:
        async with asyncio.timeout(60):
            while True:
                for i, node in enumerate(nodes):
                    if (await node.request({"cmd": "status"}))["role"] == "leader":
                        return node, nodes[1 - i]
                await asyncio.sleep(0.05)

    async def _snapshot(self, leader: Child, follower: Child, index: int) -> None:
        """Push the log past snapshot_bytes; wait until both nodes have snapshotted `index`."""
        count = int(self.s.snapshot_bytes * 1.25) // _FILL_BYTES + 1
        log(f"{count} puts of {_FILL_BYTES} B: both nodes snapshot the state to disk")
        started = time.perf_counter()
        await leader.request(
            {"cmd": "fill", "count": count, "bytes": _FILL_BYTES, "concurrency": 32},
            timeout=self.s.timeout,
        )
        for node in (leader, follower):
            await _wait_status(node, "snapshot_index", index, self.s.timeout)
        self.results["snapshot_seconds"] = time.perf_counter() - started
        log(f"snapshots on disk after {self.results['snapshot_seconds']:.1f} s")

    async def _raw_copy(self) -> float:
        with socket.create_server(("127.0.0.1", 0)) as listener:
            port = listener.getsockname()[1]
            sink = Child(
                "raw-sink",
                [sys.executable, "-m", "benchmarks.snapshot_node", "--raw-sink", str(port),
                 "--bytes", str(self.s.size), "--parent-pid", str(os.getpid())],
                self.logs / "raw-sink.log", env=self.env, control=False,
            )  # fmt: skip
            await self.group.start(sink)
            try:
                return await asyncio.to_thread(_copy_out, listener, self.s.size)
            finally:
                await self.group.stop([sink])  # it has answered: it is exiting

    async def _transfer(
        self, leader: Child, receiver: Child
    ) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        s = self.s
        pids = {"sender": leader.pid, "receiver": receiver.pid}
        before = await leader.request({"cmd": "status"})
        base = {name: memory(pid)["VmRSS"] for name, pid in pids.items()}
        cpu = {name: cpu_seconds(pid) for name, pid in pids.items()}
        hwm_reset = all(reset_peak(pid) for pid in pids.values())
        sampler = RssSampler(pids)
        sampler.start()
        if s.trace_memory:
            await asyncio.gather(*(c.request({"cmd": "trace_start"}) for c in (leader, receiver)))
        await leader.request({"cmd": "load_start", "concurrency": s.writers,
                              "payload": s.payload})  # fmt: skip
        try:
            started = await receiver.request({"cmd": "start", "expect_bytes": s.size})
            done = await receiver.request(
                {"cmd": "wait_size", "size": s.size, "timeout": s.timeout}, timeout=s.timeout + 10
            )
            cpu = {name: cpu_seconds(pid) - cpu[name] for name, pid in pids.items()}
        finally:
            during = await leader.request({"cmd": "load_stop"}, timeout=120)
            await sampler.stop()
        after = await leader.request({"cmd": "status"})
        if s.trace_memory:
            traced = [await c.request({"cmd": "trace_stop"}) for c in (leader, receiver)]
            self.results["traced"] = {"sender": traced[0], "receiver": traced[1]}
        peak = dict(sampler.peak)
        if hwm_reset:
            for name, pid in pids.items():
                peak[name] = max(peak[name], memory(pid)["VmHWM"])
        began, events = started["began"], done["events"]
        transfer = {
            "seconds": events["restored"] - began,
            "cpu_seconds": cpu,
            "chunks_needed": -(-s.size // s.chunk_bytes),  # and one more for BulkState's header
            "chunks_sent": after["chunks_sent"] - before["chunks_sent"],  # answered or failed
            "chunks_failed": after["chunks_failed"] - before["chunks_failed"],
        }
        for event in ("first_chunk", "last_chunk", "installed"):
            if event in events:
                transfer[f"{event}_after"] = events[event] - began
        rss: dict[str, Any] = {
            name: {"baseline": base[name], "peak": peak[name], "growth": peak[name] - base[name]}
            for name in pids
        }
        rss["receiver"]["after_start"] = started["rss_started"]  # its node started, no chunk yet
        rss["samples"] = sampler.samples
        rss["hwm_reset"] = hwm_reset
        return during, transfer, rss

    async def _caught_up(self, leader: Child, receiver: Child) -> bool:
        """Node 2 applies what was written during the transfer too (a sanity check)."""
        target = (await leader.request({"cmd": "status"}))["commit_index"]
        try:
            await _wait_status(receiver, "applied_index", target, 60)
        except TimeoutError:
            return False
        return True


async def _wait_status(child: Child, key: str, at_least: int, timeout: float) -> None:
    """Poll the child's status until `key` reaches `at_least`; TimeoutError after `timeout`."""
    async with asyncio.timeout(timeout):
        while (await child.request({"cmd": "status"}))[key] < at_least:  # noqa: ASYNC110
            await asyncio.sleep(0.05)


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _latency(reply: dict[str, Any]) -> dict[str, Any]:
    summary = summarize(decode_samples(reply["samples"]))
    summary.pop("cdf", None)
    return {**summary, "errors": reply["errors"], "first_error": reply["first_error"]}


def figures(settings: Settings, raw: dict[str, Any]) -> dict[str, Any]:
    """The report: plain numbers from the run's raw measurements."""
    size = settings.size
    transfer = raw["transfer"]
    rate = size / MiB / transfer["seconds"]
    raw_median = statistics.median(raw["raw_seconds"])
    raw_rate = size / MiB / raw_median
    streaming = transfer["seconds"] - transfer.get("first_chunk_after", 0.0)
    installing = transfer.get("installed_after", transfer["seconds"]) - transfer.get(
        "first_chunk_after", 0.0
    )
    install_rate = size / MiB / max(installing, 1e-6)
    base, during = _latency(raw["writes"]["baseline"]), _latency(raw["writes"]["during"])

    def ratio(key: str) -> float | None:
        if base.get(key) and during.get(key):
            return float(during[key] / base[key])
        return None

    rss = {
        name: {k: v / MiB for k, v in raw["rss"][name].items()} for name in ("sender", "receiver")
    }
    within = all(r["growth"] < BOUND / MiB for r in rss.values())
    return {
        "size_bytes": size,
        "size_mib": size / MiB,
        "transfer": {
            **transfer,
            "rate_mib_s": rate,
            "raw_seconds": raw["raw_seconds"],
            "raw_rate_mib_s": raw_rate,
            "ratio": rate / raw_rate,
            # the same from the first chunk: without the leader's redial backoff (up to 1 s)
            "rate_from_first_chunk_mib_s": size / MiB / streaming,
            "ratio_from_first_chunk": size / MiB / streaming / raw_rate,
            "disk_seconds": raw["disk_seconds"],
            "disk_rate_mib_s": size / MiB / raw["disk_seconds"],
            # first chunk to installed (received, written, fdatasync'd): against the disk's rate
            "install_rate_mib_s": install_rate,
            "install_to_disk_ratio": install_rate * raw["disk_seconds"] / (size / MiB),
        },
        "rss_mib": {
            **rss,
            "bound": BOUND / MiB,
            "within_bound": within,
            "samples": raw["rss"]["samples"],
            "hwm_reset": raw["rss"]["hwm_reset"],
        },
        "writes": {
            "baseline": base,
            "during": during,
            "p50_ratio": ratio("p50_us"),
            "p99_ratio": ratio("p99_us"),
        },
        "snapshot_seconds": raw.get("snapshot_seconds"),
        "resnapshots_during": raw["resnapshots"],
        "caught_up": raw["caught_up"],
        "leader": raw["leader"],
        "settings": {
            k: (str(v) if isinstance(v, Path) else v)
            for k, v in dataclasses.asdict(settings).items()
        },
        "machine": {"nproc": os.cpu_count(), "loadavg": os.getloadavg()},
        "ok": within,
        **({"traced": raw["traced"]} if "traced" in raw else {}),
    }


def phases(t: dict[str, Any]) -> str:
    """Where the transfer's time went, from node 2's start: one "name s" per phase."""
    marks = [("redial", "first_chunk_after"), ("chunks", "last_chunk_after"),
             ("seal+install", "installed_after"), ("restore", "seconds")]  # fmt: skip
    parts, last = [], 0.0
    for name, key in marks:
        if key in t:
            parts.append(f"{name} {t[key] - last:.2f} s")
            last = t[key]
    return ", ".join(parts)


def table(r: dict[str, Any]) -> str:
    t, m, w = r["transfer"], r["rss_mib"], r["writes"]
    b, d = w["baseline"], w["during"]

    def ms(summary: dict[str, Any], key: str) -> str:
        return f"{summary[key] / 1e3:.2f}" if key in summary else "-"

    def x(value: float | None) -> str:
        return f"{value:.2f}x" if value is not None else "-"

    lines = [
        f"snapshot transfer: {r['size_mib']:.0f} MiB to a new node over TCP "
        f"({r['machine']['nproc']} cores, load {r['machine']['loadavg'][0]:.1f})",
        f"  transfer      {t['seconds']:8.2f} s  {t['rate_mib_s']:8.1f} MiB/s   "
        f"(node 2's start to its state restored)",
        f"    phases      {phases(t)}",
        f"    CPU         sender {t['cpu_seconds']['sender']:.2f} s, "
        f"receiver {t['cpu_seconds']['receiver']:.2f} s (the sender's includes the load); "
        f"chunk RPCs {t['chunks_sent'] - t['chunks_failed']} answered for "
        f"{t['chunks_needed']}+1, {t['chunks_failed']} failed",
        f"  raw loopback  {statistics.median(t['raw_seconds']):8.2f} s  "
        f"{t['raw_rate_mib_s']:8.1f} MiB/s   (TCP copy, median of {len(t['raw_seconds'])})",
        f"  disk          {t['disk_seconds']:8.2f} s  {t['disk_rate_mib_s']:8.1f} MiB/s   "
        f"(1 MiB writes + fdatasync)",
        f"  ratio         {t['ratio']:8.1%}              (transfer / raw loopback; goal >= 50%)",
        f"                {t['ratio_from_first_chunk']:8.1%}              (the same from the "
        f"first chunk: {t['rate_from_first_chunk_mib_s']:.1f} MiB/s)",
        f"                {t['install_to_disk_ratio']:8.1%}              (first chunk to "
        f"installed, {t['install_rate_mib_s']:.1f} MiB/s, / disk)",
    ]
    for name in ("sender", "receiver"):
        one = m[name]
        verdict = "ok" if one["growth"] < m["bound"] else "OVER"
        started = f", {one['after_start']:.1f} once started" if "after_start" in one else ""
        lines.append(
            f"  {name + ' RSS':13} {one['growth']:8.1f} MiB growth at peak "
            f"(baseline {one['baseline']:.1f}{started}, peak {one['peak']:.1f} MiB)  "
            f"< {m['bound']:.0f} MiB: {verdict}"
        )
    lines += [
        f"  writes        p50 {ms(b, 'p50_us')} ms / p99 {ms(b, 'p99_us')} ms without "
        f"({b.get('count', 0)} ops), p50 {ms(d, 'p50_us')} / p99 {ms(d, 'p99_us')} ms during "
        f"({d.get('count', 0)} ops)",
        f"  write ratio   p50 {x(w['p50_ratio'])}, p99 {x(w['p99_ratio'])} (during / without)",
    ]
    notes = []
    if r["resnapshots_during"]:
        notes.append(f"the leader took {r['resnapshots_during']} more snapshot(s) meanwhile")
    if not r["caught_up"]:
        notes.append("node 2 did not catch up on the log after the snapshot")
    for phase in ("baseline", "during"):
        if w[phase]["errors"]:
            notes.append(f"write errors {phase}: {w[phase]['first_error'][:80]}")
    if "traced" in r:
        notes.append("tracemalloc was on: the RSS figures include its own cost")
    lines += [f"  note: {n}" for n in notes]
    for name, traced in r.get("traced", {}).items():
        lines.append(
            f"  {name} traced: {(traced['peak'] - traced['base']) / MiB:.1f} MiB growth at peak"
        )
        for site in traced["sites"][:6]:
            where = " < ".join(f.rpartition("/")[2] for f in reversed(site["frames"][-3:]))
            lines.append(f"    {site['growth'] / MiB:7.2f} MiB {site['count']:+6d}  {where[:150]}")
    return "\n".join(lines)


async def _run_async(bench: Bench) -> None:
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        await bench.execute()
    finally:
        loop.remove_signal_handler(signal.SIGTERM)


def run(settings: Settings) -> int:
    """Run it; 0 if both RSS growths stay under 64 MiB, 1 if not or if the run failed."""
    out = settings.out or default_out()
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="raftio-snapshot-bench-") as data:
        bench = Bench(settings, Path(data), logs)
        try:
            run_loop(_run_async(bench), settings.loop)
        except (KeyboardInterrupt, asyncio.CancelledError):
            log("interrupted")
            return 130
        except (ChildError, TimeoutError, OSError, RuntimeError) as exc:
            log(f"the snapshot benchmark failed: {exc!r}"[:4000])
            log(f"logs in {logs}/")
            return 1
    results = figures(settings, bench.results)
    (out / "snapshot.json").write_text(json.dumps(results, indent=1) + "\n")
    print(table(results))
    log(f"results in {out}/snapshot.json")
    return 0 if results["ok"] else 1
