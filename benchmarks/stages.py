"""Where one process's CPU goes, by stage of a write: the node side of `--profile`.

`STAGE_MAP` is the one table that names the stage of raftio's functions (and
the benchmark's own). A cProfile of the event-loop thread (timed with
`time.thread_time`) is folded into stages by `stage_seconds`:

* a function named in the table: its own time goes to its stage;
* any other function (builtins such as msgpack's `Packer.pack` or a
  transport's `writelines`, asyncio's Python helpers, dataclass `__init__`s):
  its own time goes to its callers' stages, split the way cProfile split the
  time between its call edges, up through unnamed callers to the nearest
  named one; a function no named function called is "other".

`WindowProbe` runs in a node process: at the edges of a measurement window it
reads the process's CPU (/proc/self/stat utime+stime), each thread's CPU
(its POSIX CPU clock: the kernel's exact runtime, not tick samples) and
context switches (/proc/self/task/TID/status), and the node's commit index
and fsync count; optionally it cProfiles the loop thread in between. The
loop thread's CPU that no Python function holds (uvloop's C code: epoll,
socket reads, callback dispatch, and part of cProfile's own overhead) is the
"event loop" stage; the WAL writer thread's CPU is all "WAL write"
(its Python, the write(2)s and the fdatasync's kernel time).

Only the standard library is imported here: node processes import it.
"""

from __future__ import annotations

import asyncio
import cProfile
import os
import pstats
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = [
    "EVENT_LOOP",
    "OTHER",
    "STAGES",
    "STAGE_MAP",
    "WAL",
    "WindowProbe",
    "calibrate",
    "new_profiler",
    "stage_of",
    "stage_seconds",
    "thread_counters",
]

# The stages, in the order of a write's path; the last three are not per-write work.
STAGES = (
    "propose",  # Node.propose / Raft.start / core.start: futures, timers, append to the log
    "encode",  # commands, AppendEntries and replies, WAL records: msgpack, crc framing
    "send",  # building AppendEntries, RPC bookkeeping, frames handed to the socket
    "receive",  # frames read and cut, handler tasks started, replies matched
    "decode",  # RPC messages and commands back to objects
    "WAL write",  # records buffered (loop) + the WAL thread: write(2), fdatasync
    "fsync hand-off",  # batches handed to the WAL thread and their completion back
    "commit",  # the Raft core: drain, replies, match/commit index; a follower's log merge
    "apply",  # committed entries to the state machine, proposers' futures settled
    "load generator",  # the benchmark's embedded closed loop (not raftio)
    "KV service",  # raftio.kv's client connections (end-to-end series)
    "other",  # timers, heartbeats, the harness's control channel, unattributed Python
    "event loop",  # loop-thread CPU inside no Python function (uvloop's C code)
)
OTHER, EVENT_LOOP, WAL = "other", "event loop", "WAL write"

# (path suffix, function name or "*" for the module's other functions, stage).
# A function matches its own line before its module's "*" line; names are
# code names (cProfile's), so a method is its bare name within its file.
STAGE_MAP: tuple[tuple[str, str, str], ...] = (
    # --- propose
    ("raftio/node.py", "propose", "propose"),
    ("raftio/node.py", "_await_entry", "propose"),
    ("raftio/node.py", "_live_raft", "propose"),
    ("raftio/raft.py", "start", "propose"),
    ("raftio/raft.py", "_schedule_drain", "propose"),
    ("raftio/core.py", "start", "propose"),
    ("raftio/core.py", "_append_new", "propose"),
    ("raftio/core.py", "_record_append", "propose"),
    ("raftio/applying.py", "remember", "propose"),
    ("raftio/codec.py", "is_immutable", "propose"),
    ("raftio/proposals.py", "add", "propose"),
    ("raftio/proposals.py", "discard", "propose"),
    # --- encode (the codec's functions count as encode/decode wherever they are called)
    ("raftio/codec.py", "encode_command", "encode"),
    ("raftio/codec.py", "_packb_command", "encode"),
    ("raftio/codec.py", "_command_default", "encode"),
    ("raftio/codec.py", "encode_message", "encode"),
    ("raftio/codec.py", "_message_to_list", "encode"),
    ("raftio/codec.py", "pack", "encode"),
    ("raftio/membership.py", "encode_configuration", "encode"),
    ("raftio/storage/wal.py", "*", "encode"),  # record bodies, crc32 framing
    ("raftio/transport/frames.py", "encode_frame", "encode"),
    # --- send
    ("raftio/raft.py", "_send", "send"),
    ("raftio/raft.py", "_send_now", "send"),
    ("raftio/raft.py", "_send_after_sync", "send"),
    ("raftio/raft.py", "_call", "send"),
    ("raftio/core.py", "take_outbox", "send"),
    ("raftio/core.py", "_send_append", "send"),
    ("raftio/core.py", "_post_append", "send"),
    ("raftio/core.py", "heartbeat_args", "send"),
    ("raftio/core.py", "_heartbeat", "send"),
    ("raftio/transport/tcp.py", "call", "send"),
    ("raftio/transport/tcp.py", "start_call", "send"),
    ("raftio/transport/tcp.py", "_start", "send"),
    ("raftio/transport/tcp.py", "_submit", "send"),
    ("raftio/transport/tcp.py", "_may_send", "send"),
    ("raftio/transport/frame_protocol.py", "send", "send"),
    ("raftio/transport/frame_protocol.py", "send_now", "send"),
    ("raftio/transport/frame_protocol.py", "flush_soon", "send"),
    ("raftio/transport/frame_protocol.py", "_flush", "send"),
    ("raftio/transport/frame_protocol.py", "write_buffer_size", "send"),
    ("raftio/transport/server_connection.py", "_reply", "send"),
    ("benchmarks/raftio_node.py", "call", "send"),  # CountingEnd: one counter bump
    ("benchmarks/raftio_node.py", "start_call", "send"),
    # --- receive
    ("raftio/transport/frame_protocol.py", "data_received", "receive"),
    ("raftio/transport/frame_protocol.py", "_read_frames", "receive"),
    ("raftio/transport/frame_protocol.py", "_may_read", "receive"),
    ("raftio/transport/frame_protocol.py", "is_open", "receive"),
    ("raftio/transport/frames.py", "*", "receive"),  # FrameReader: feed, next_frame
    ("raftio/transport/server_connection.py", "*", "receive"),  # frames, dispatch, tasks
    ("raftio/transport/tcp_server.py", "spawn", "receive"),
    ("raftio/transport/tcp_server.py", "done", "receive"),
    ("raftio/transport/tcp_server.py", "account", "receive"),
    ("raftio/transport/tcp.py", "_on_frame", "receive"),
    ("raftio/transport/tcp.py", "_on_reply", "receive"),
    ("raftio/transport/tcp.py", "_on_proven", "receive"),
    # --- decode
    ("raftio/codec.py", "decode_command", "decode"),
    ("raftio/codec.py", "_unpackb_command", "decode"),
    ("raftio/codec.py", "_command_ext_hook", "decode"),
    ("raftio/codec.py", "decode_message", "decode"),
    ("raftio/codec.py", "message_from_list", "decode"),
    ("raftio/codec.py", "_entries_from_list", "decode"),
    ("raftio/codec.py", "unpack", "decode"),
    ("raftio/membership.py", "decode_configuration", "decode"),
    # --- WAL write (the loop's side; the WAL thread's CPU is added whole)
    ("raftio/persist.py", "write", WAL),
    ("raftio/storage/file.py", "append_entries", WAL),
    ("raftio/storage/file.py", "save_hard_state", WAL),
    ("raftio/storage/file.py", "_append", WAL),
    ("raftio/storage/file.py", "_check_usable", WAL),
    ("raftio/storage/recovery.py", "*", WAL),  # LogState: the entries FileStorage holds
    ("raftio/storage/memory.py", "*", WAL),
    # --- fsync hand-off
    ("raftio/storage/file.py", "*", "fsync hand-off"),  # sync, _kick, _launch, _batch_written
    ("raftio/storage/worker.py", "*", "fsync hand-off"),  # submit, _release, _finish
    ("raftio/persist.py", "synced", "fsync hand-off"),
    ("raftio/raft.py", "_on_synced", "fsync hand-off"),
    ("raftio/raft.py", "_settle", "fsync hand-off"),
    # --- commit (the Raft core; its unnamed helpers inherit from these)
    ("raftio/raft.py", "_drain", "commit"),
    ("raftio/raft.py", "_members_changed", "commit"),
    ("raftio/raft.py", "_broadcast_commit", "commit"),
    ("raftio/raft.py", "_on_reply", "commit"),
    ("raftio/raft.py", "_handle_reply", "commit"),
    ("raftio/raft.py", "append_entries", "commit"),
    ("raftio/raft.py", "_answer", "commit"),
    ("raftio/core.py", "*", "commit"),
    ("raftio/validate.py", "*", "commit"),
    ("raftio/progress.py", "*", "commit"),
    # --- apply
    ("raftio/raft.py", "_applier", "apply"),
    ("raftio/core.py", "take_applicable", "apply"),
    ("raftio/core.py", "has_applicable", "apply"),
    ("raftio/applying.py", "apply_msgs", "apply"),
    ("raftio/applying.py", "deliver", "apply"),
    ("raftio/node.py", "_apply_batch", "apply"),
    ("raftio/node.py", "_apply", "apply"),
    ("raftio/node.py", "_skip", "apply"),
    ("raftio/node.py", "_wake_readers", "apply"),
    ("raftio/node.py", "_maybe_snapshot", "apply"),
    ("raftio/snapshotting.py", "maybe_take", "apply"),
    ("raftio/kv/machine.py", "*", "apply"),
    ("benchmarks/raftio_node.py", "apply", "apply"),  # BenchMachine.apply
    # --- load generator (benchmark code in the embedded leader)
    ("benchmarks/loadgen.py", "*", "load generator"),
    ("benchmarks/raftio_node.py", "<lambda>", "load generator"),  # make_op's propose call
    # --- KV service
    ("raftio/kv/server.py", "*", "KV service"),
    ("raftio/kv/protocol.py", "*", "KV service"),
    ("raftio/kv/requests.py", "*", "KV service"),
    ("raftio/kv/client_table.py", "*", "KV service"),
    # --- other: not per-write work
    ("raftio/raft.py", "_ticker", OTHER),
    ("raftio/core.py", "tick", OTHER),
    ("raftio/core.py", "_tick_leader", OTHER),
    ("raftio/proposals.py", "_fire", OTHER),
    ("raftio/transport/tcp.py", "_expire", OTHER),
    ("raftio/transport/tcp_server.py", "_sweep", OTHER),
    ("raftio/node.py", "status", OTHER),
    ("raftio/node.py", "metrics", OTHER),
    ("benchmarks/control.py", "*", OTHER),
    ("benchmarks/stages.py", "*", OTHER),
    ("benchmarks/counters.py", "*", OTHER),
)

_BY_FUNCTION = {(path, name): stage for path, name, stage in STAGE_MAP if name != "*"}
_BY_MODULE = {path: stage for path, name, stage in STAGE_MAP if name == "*"}
_SUFFIXES = tuple(sorted({path for path, _, _ in STAGE_MAP}, key=len, reverse=True))

Func = tuple[str, int, str]  # pstats' key: (file, line, name)


def _module(filename: str) -> str | None:
    """The STAGE_MAP path `filename` ends with, if any ('/x/raftio/core.py' -> 'raftio/core.py')."""
    name = filename.replace(os.sep, "/")
    for suffix in _SUFFIXES:
        if name.endswith("/" + suffix) or name == suffix:
            return suffix
    return None


def stage_of(func: Func) -> str | None:
    """The stage STAGE_MAP names for a pstats function key; None: it inherits its callers'."""
    module = _module(func[0])
    if module is None:
        return None
    return _BY_FUNCTION.get((module, func[2])) or _BY_MODULE.get(module)


def stage_seconds(
    stats: dict[Func, Any], overhead: tuple[float, float] = (0.0, 0.0)
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Own time of every profiled function folded into stages, less cProfile's own cost
    (`overhead`: seconds it adds per call to the caller's and to the callee's own
    time, see `calibrate`); and the functions by corrected own time (top 40), each
    with the stage most of its time went to."""
    resolver = _Resolver(stats)
    subcalls = _subcalls(stats)
    per_caller, per_callee = overhead
    totals: dict[str, float] = dict.fromkeys(STAGES, 0.0)
    rows = []
    for func, (_, calls, own, _, callers) in stats.items():
        own = max(0.0, own - per_callee * calls - per_caller * subcalls.get(func, 0))
        split = resolver.own_split(func, own, callers)
        for stage, seconds in split.items():
            totals[stage] += seconds
        main = max(split, key=split.__getitem__) if split else OTHER
        rows.append({"function": _label(func), "calls": calls, "own_s": own, "stage": main})
    rows.sort(key=lambda row: -row["own_s"])
    return totals, rows[:40]


def _subcalls(stats: dict[Func, Any]) -> dict[Func, int]:
    """Calls each function made (to profiled functions, builtins included)."""
    made: dict[Func, int] = {}
    for entry in stats.values():
        for caller, edge in entry[4].items():
            made[caller] = made.get(caller, 0) + edge[0]
    return made


def _synthetic_calls(width: int = 200) -> tuple[Callable[[], int], int]:
    """A call tree of `width` callers with 3 callees each, every function its own code
    object: a profile with hundreds of entries, as a node's is. (run, calls per run)"""
    lines = [f"def f{i}(x):\n    return x + {i}" for i in range(width)]
    lines += [
        f"def c{i}():\n    return f{i}(1) + f{(i * 7) % width}(2) + f{(i * 13) % width}(3)"
        for i in range(width)
    ]
    lines.append("def run():\n    return " + " + ".join(f"c{i}()" for i in range(width)))
    namespace: dict[str, Any] = {}
    exec("\n".join(lines), namespace)  # fixed source, built above
    return namespace["run"], 4 * width + 1


def calibrate(rounds: int = 60) -> tuple[float, float]:
    """CPU seconds our cProfile (timed by `time.thread_time`, builtins not profiled) adds
    per call: to the caller's own time, to the callee's. Each timer read is a system
    call (~0.5 us here), more than most of the functions it times."""
    run, calls = _synthetic_calls()
    started = time.thread_time()
    for _ in range(rounds):
        run()
    bare = time.thread_time() - started
    profiler = new_profiler()
    profiler.enable()
    for _ in range(rounds):
        run()
    profiler.disable()
    stats = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    leaves = [entry for func, entry in stats.items() if func[2].startswith("f")]
    callee = sum(e[2] for e in leaves) / sum(e[1] for e in leaves)  # a leaf's own time is all ours
    # The rest of the overhead lands in the callers' own time, one share per call they make.
    added = sum(entry[2] for entry in stats.values()) - bare - callee * calls * rounds
    return max(0.0, added / (calls * rounds)), callee


def new_profiler() -> cProfile.Profile:
    """cProfile on the thread's CPU clock; builtins are not profiled: their time is their
    Python caller's own time (the attribution they would get anyway), at half the cost."""
    return cProfile.Profile(time.thread_time, builtins=False)


def _label(func: Func) -> str:
    file, line, name = func
    if file == "~":
        return name
    return f"{name} ({_module(file) or _short(file)}:{line})"


def _short(file: str) -> str:
    """A path from its package on ('/x/raftio/metrics.py' -> 'raftio/metrics.py')."""
    name = file.replace(os.sep, "/")
    for package in ("raftio/", "benchmarks/"):
        at = name.rfind("/" + package)
        if at >= 0:
            return name[at + 1 :]
    return os.path.basename(file)


class _Resolver:
    """Stage shares of functions the table does not name, from cProfile's call edges."""

    def __init__(self, stats: dict[Func, Any]) -> None:
        self.stats = stats
        self.memo: dict[Func, dict[str, float]] = {}

    def own_split(self, func: Func, own: float, callers: dict[Func, Any]) -> dict[str, float]:
        """Where `func`'s own time goes: its stage, or its callers' by each edge's own time."""
        named = stage_of(func)
        if named is not None:
            return {named: own}
        weights = {caller: edge[2] for caller, edge in callers.items()}
        return _scaled(self._mix(weights), own)

    def share(self, func: Func, seen: frozenset[Func] = frozenset()) -> dict[str, float]:
        """Fractions per stage for time spent under `func` (1.0 in total)."""
        named = stage_of(func)
        if named is not None:
            return {named: 1.0}
        if func in self.memo:
            return self.memo[func]
        entry = self.stats.get(func)
        if entry is None or not entry[4] or func in seen:
            return {OTHER: 1.0}  # a root (called from C, e.g. by the loop) or a cycle
        # Weighted by the inclusive time each caller spent calling it.
        weights = {caller: edge[3] for caller, edge in entry[4].items()}
        mix = self._mix(weights, seen | {func})
        self.memo[func] = mix
        return mix

    def _mix(
        self, weights: dict[Func, float], seen: frozenset[Func] = frozenset()
    ) -> dict[str, float]:
        total = sum(weights.values())
        if total <= 0:  # too quick to time: split by edge evenly
            weights = dict.fromkeys(weights, 1.0)
            total = float(len(weights))
        if not weights:
            return {OTHER: 1.0}
        mix: dict[str, float] = {}
        for caller, weight in weights.items():
            for stage, fraction in self.share(caller, seen).items():
                mix[stage] = mix.get(stage, 0.0) + fraction * weight / total
        return mix


def _scaled(mix: dict[str, float], seconds: float) -> dict[str, float]:
    return {stage: fraction * seconds for stage, fraction in mix.items()}


# --------------------------------------------------------------------- the probe

_TICKS = os.sysconf("SC_CLK_TCK")


def _process_cpu() -> float:
    """utime + stime of this process, all threads (/proc/self/stat, clock ticks)."""
    with open("/proc/self/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def _switches(tid: int) -> tuple[int, int]:
    """(voluntary, involuntary) context switches of thread `tid` of this process."""
    voluntary = involuntary = 0
    try:
        with open(f"/proc/self/task/{tid}/status") as f:
            for line in f:
                if line.startswith("voluntary_ctxt_switches:"):
                    voluntary = int(line.split()[1])
                elif line.startswith("nonvoluntary_ctxt_switches:"):
                    involuntary = int(line.split()[1])
    except OSError:
        pass  # the thread ended
    return voluntary, involuntary


def _thread_role(thread: threading.Thread) -> str:
    if thread is threading.main_thread():
        return "loop"
    return "wal" if thread.name == "raftio-wal" else thread.name


@dataclass(frozen=True, slots=True)
class ThreadReading:
    role: str
    tid: int
    cpu: float  # seconds, from the thread's CPU clock
    voluntary: int
    involuntary: int


def thread_counters() -> dict[int, ThreadReading]:
    """Every Python thread of this process: CPU seconds and context switches, by tid."""
    out = {}
    for thread in threading.enumerate():
        tid, ident = thread.native_id, thread.ident
        if tid is None or ident is None:
            continue
        try:
            cpu = time.clock_gettime(time.pthread_getcpuclockid(ident))
        except (OSError, ProcessLookupError):
            continue  # ended meanwhile
        out[tid] = ThreadReading(_thread_role(thread), tid, cpu, *_switches(tid))
    return out


class WindowProbe:
    """One measurement window of this node process (see the module docstring).

    `counters()` returns the node's cumulative counters; this reads its
    "commit_index" and "fsyncs".
    """

    def __init__(self, counters: Callable[[], dict[str, Any]]) -> None:
        self.counters = counters
        self.task: asyncio.Task[dict[str, Any]] | None = None

    def arm(self, start: float, end: float, profile_path: str | None) -> None:
        """Measure [start, end] (perf_counter seconds) in the background."""
        self.task = asyncio.ensure_future(self._measure(start, end, profile_path))

    async def collect(self) -> dict[str, Any]:
        if self.task is None:
            raise RuntimeError("no window armed")
        task, self.task = self.task, None
        return await task

    async def _measure(self, start: float, end: float, profile_path: str | None) -> dict[str, Any]:
        # Before the window: calibrating costs the loop ~50 ms.
        overhead = calibrate() if profile_path else (0.0, 0.0)
        await _sleep_until(start)
        profiler = new_profiler() if profile_path else None
        before = self._reading()
        if profiler is not None:
            profiler.enable()
        await _sleep_until(end)
        if profiler is not None:
            profiler.disable()
        after = self._reading()
        result = _difference(before, after)
        if profiler is not None and profile_path:
            profiler.dump_stats(profile_path)
            stats = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
            stages, top = stage_seconds(stats, overhead)
            result["profiled_s"] = profiled = sum(entry[2] for entry in stats.values())
            result["profiler_overhead_s"] = profiled - sum(stages.values())
            result["overhead_per_call_s"] = list(overhead)
            result["loop_stages_s"] = loop = _loop_stages(stages, result, profiled)
            result["stages_s"] = _with_threads(loop, result)
            result["top"] = top
        return result

    def _reading(self) -> dict[str, Any]:
        counters = self.counters()
        return {
            "t": time.perf_counter(),
            "cpu_proc": _process_cpu(),
            "cpu_clock": time.process_time(),
            "threads": thread_counters(),
            "commit_index": counters.get("commit_index", 0),
            "fsyncs": counters.get("fsyncs", 0),
        }


async def _sleep_until(when: float) -> None:
    delay = when - time.perf_counter()
    if delay > 0:
        await asyncio.sleep(delay)


def _difference(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """The window's costs: every counter's advance; threads alive at both edges."""
    threads = []
    for tid, late in after["threads"].items():
        early = before["threads"].get(tid)
        if early is None:
            continue  # started inside the window: its CPU is in the process total
        threads.append(
            {
                "role": late.role,
                "tid": tid,
                "cpu_s": late.cpu - early.cpu,
                "voluntary": late.voluntary - early.voluntary,
                "involuntary": late.involuntary - early.involuntary,
            }
        )
    return {
        "seconds": after["t"] - before["t"],
        "cpu_proc_s": after["cpu_proc"] - before["cpu_proc"],
        "cpu_clock_s": after["cpu_clock"] - before["cpu_clock"],
        "committed": int(after["commit_index"] - before["commit_index"]),
        "fsyncs": int(after["fsyncs"] - before["fsyncs"]),
        "threads": threads,
    }


def _loop_stages(
    stages: dict[str, float], result: dict[str, Any], profiled: float
) -> dict[str, float]:
    """The loop thread's stages: cProfile's, plus its CPU outside Python functions
    (`profiled`: the loop's CPU cProfile did see) as the event loop stage."""
    out = dict(stages)
    for thread in result["threads"]:
        if thread["role"] == "loop":
            out[EVENT_LOOP] += max(0.0, thread["cpu_s"] - profiled)
    return out


def _with_threads(loop: dict[str, float], result: dict[str, Any]) -> dict[str, float]:
    """The process's stages: the loop thread's, the WAL thread's CPU as WAL write and
    any other thread's as other."""
    out = dict(loop)
    for thread in result["threads"]:
        if thread["role"] == "wal":
            out[WAL] += thread["cpu_s"]
        elif thread["role"] != "loop":
            out[OTHER] += thread["cpu_s"]
    return out
