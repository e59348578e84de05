"""One PySyncObj peer: `python -m benchmarks.peers.pysyncobj_node --self H:P --partners ...`.

A replicated dict (`set(key, value)` through `@replicated`), in memory or
with PySyncObj's file journal (`--journal PATH`). The load runs in this
process, as PySyncObj's own benchmark (`benchmarks/testobj.py` upstream)
drives it: commands are issued with a `callback=`, which PySyncObj calls on
its own thread once the command is applied; C commands are kept
outstanding (each callback issues the next), a closed loop like raftio's
embedded workload.

Control lines on stdin/stdout (`benchmarks.control`, threaded flavour):
`status`, `counters`, `load {concurrency, payload, start, end}` (perf_counter seconds), `quit`.

PySyncObj's file journal appends to an mmap and never calls fsync or msync
per entry (0.3.x), so "journal" is not "fsync on": the OS writes it back
when it likes.
"""

from __future__ import annotations

import argparse
import logging
import os
import threading
import time
from array import array
from collections import Counter
from typing import Any

from pysyncobj import FAIL_REASON, SyncObj, SyncObjConf, replicated  # type: ignore[import-untyped]

from benchmarks.control import die_with_parent, reply_line, serve_stdin_sync
from benchmarks.counters import wire_bytes
from benchmarks.loadgen import Window, random_values
from benchmarks.stats import encode_samples

__all__ = ["Store", "main"]

_LEADER = 2  # pysyncobj's _RAFT_STATE.LEADER
_ROLES = {0: "follower", 1: "candidate", 2: "leader"}
_DRAIN_GRACE = 10.0
_ERROR_PAUSE = 0.005


class Store(SyncObj):  # type: ignore[misc]
    """A replicated dict."""

    def __init__(self, self_address: str, partners: list[str], conf: SyncObjConf) -> None:
        super().__init__(self_address, partners, conf)
        self._data: dict[str, str] = {}

    @replicated  # type: ignore[untyped-decorator]
    def set(self, key: str, value: str) -> None:
        self._data[key] = value


class CallbackLoop:
    """C commands kept outstanding through PySyncObj's callbacks."""

    def __init__(self, store: Store, concurrency: int, payload: int, window: Window) -> None:
        self.store = store
        self.window = window
        self.values = random_values(payload)
        self.keys = [f"k{i}" for i in range(concurrency)]
        self.samples: array[float] = array("d")
        self.errors: Counter[str] = Counter()
        self.first_error = ""
        self._outstanding = concurrency
        self._lock = threading.Lock()
        self.finished = threading.Event()

    def start(self) -> None:
        for i in range(len(self.keys)):
            self.issue(i)

    def issue(self, i: int) -> None:
        start = time.perf_counter()
        if start >= self.window.end:
            self._retire()
            return

        def done(result: Any, error: int) -> None:
            self.on_done(i, start, error)

        self.store.set(self.keys[i], next(self.values), callback=done)

    def on_done(self, i: int, start: float, error: int) -> None:
        end = time.perf_counter()
        if error == FAIL_REASON.SUCCESS:
            if self.window.start <= end <= self.window.end:
                self.samples.append(end - start)
            self.issue(i)
            return
        self.errors[f"FAIL_REASON {error}"] += 1
        self.first_error = self.first_error or f"FAIL_REASON {error}"
        # An error may be reported on the calling thread: retry from a timer, not recursively.
        threading.Timer(_ERROR_PAUSE, self.issue, (i,)).start()

    def _retire(self) -> None:
        with self._lock:
            self._outstanding -= 1
            if self._outstanding == 0:
                self.finished.set()


class PeerProcess:
    def __init__(self, options: argparse.Namespace) -> None:
        self.self_address: str = options.self_address
        partners = [a for a in options.partners.split(",") if a]
        conf = SyncObjConf(
            journalFile=options.journal or None,
            appendEntriesUseBatch=options.batch == "on",
            appendEntriesPeriod=options.append_period,
            autoTickPeriod=options.tick,
            raftMinTimeout=options.election_min,
            raftMaxTimeout=options.election_min * 3,
            connectionTimeout=max(3.5, options.election_min * 3),
            commandsQueueSize=1 << 20,
            logCompactionMinEntries=1 << 30,  # no snapshots mid-run (raftio's happen rarely)
            logCompactionMinTime=1 << 30,
        )
        self.store = Store(self.self_address, partners, conf)
        self.port = int(self.self_address.rpartition(":")[2])
        self.partner_ports = {int(a.rpartition(":")[2]) for a in partners}

    def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        cmd = request["cmd"]
        if cmd == "status":
            st = self.store.getStatus()
            return {
                "ok": True,
                "pid": os.getpid(),
                "role": _ROLES.get(st["state"], "?"),
                "leader": str(st["leader"]) if st["leader"] else None,
                "term": st["raft_term"],
                "commit_index": st["commit_idx"],
            }
        if cmd == "counters":
            return {"ok": True, **self.counters()}
        if cmd == "load":
            return self.load(request)
        if cmd == "quit":
            self.store.destroy()
            return {"ok": True}
        raise ValueError(f"unknown command {cmd!r}")

    def counters(self) -> dict[str, Any]:
        st = self.store.getStatus()
        wire = wire_bytes({self.port}, self.partner_ports)
        return {
            "t": time.perf_counter(),
            "cpu": time.process_time(),
            "wire_sent": wire.sent,
            "wire_received": wire.received,
            "commit_index": st["commit_idx"],
            "term": st["raft_term"],
            "role": _ROLES.get(st["state"], "?"),
        }

    def load(self, request: dict[str, Any]) -> dict[str, Any]:
        window = Window(float(request["start"]), float(request["end"]))
        loop = CallbackLoop(
            self.store, int(request["concurrency"]), int(request["payload"]), window
        )
        edges: dict[str, dict[str, Any]] = {}
        timers = [
            threading.Timer(window.start - time.perf_counter(), self._edge, (edges, "before")),
            threading.Timer(window.end - time.perf_counter(), self._edge, (edges, "after")),
        ]
        for timer in timers:
            timer.start()
        loop.start()
        for timer in timers:
            timer.join()
        loop.finished.wait(_DRAIN_GRACE)
        return {
            "ok": True,
            "ops": len(loop.samples),
            "seconds": window.seconds,
            "samples": encode_samples(loop.samples),
            "errors": dict(loop.errors),
            "first_error": loop.first_error,
            "cancelled": 0 if loop.finished.is_set() else 1,
            "before": edges.get("before", {}),
            "after": edges.get("after", {}),
        }

    def _edge(self, edges: dict[str, dict[str, Any]], name: str) -> None:
        edges[name] = self.counters()


def main() -> None:
    parser = argparse.ArgumentParser(description="one PySyncObj peer for `raftio bench`")
    parser.add_argument("--self", dest="self_address", required=True, help="host:port")
    parser.add_argument("--partners", required=True, help="the other peers' host:port list")
    parser.add_argument("--journal", default="", help="file journal path (default: memory)")
    parser.add_argument(
        "--batch", choices=["on", "off"], default="on", help="appendEntriesUseBatch"
    )
    parser.add_argument("--append-period", type=float, default=0.1, help="appendEntriesPeriod")
    parser.add_argument("--tick", type=float, default=0.05, help="autoTickPeriod")
    parser.add_argument("--election-min", type=float, default=0.4, help="raftMinTimeout")
    parser.add_argument("--parent-pid", type=int)
    options = parser.parse_args()
    die_with_parent(options.parent_pid)
    logging.basicConfig(level=logging.WARNING)
    peer = PeerProcess(options)
    reply_line({"ok": True, "ready": True, "pid": os.getpid()})
    try:
        serve_stdin_sync(peer.handle)
    finally:
        peer.store.destroy()


if __name__ == "__main__":
    main()
