"""ProcessKvCluster: KV node processes on 127.0.0.1, every Raft link through a LinkProxy.

Node i reaches node j through the proxy (i, j), which forwards to node j's
real Raft port, so the nemesis can cut or delay each ordered link. Nodes
run `node_runner.py` (FileStorage in their own directory). Crash is
SIGKILL, restart a new process on the same directory, pause SIGSTOP,
resume SIGCONT. Clients talk to the nodes' KV ports directly.

`close()` SIGKILLs and reaps every process and closes every proxy; the
fixtures call it even when a test fails.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
from collections.abc import Collection
from pathlib import Path
from typing import Any

from raftio.kv import KVClient, KVUnavailableError
from raftio.kv.local import free_ports
from raftio.testing.nemesis import LinkProxy

RUNNER = Path(__file__).with_name("node_runner.py")
ROOT = Path(__file__).resolve().parents[2]
_STATUS_TIMEOUT = 0.3


class ProcessKvCluster:
    """n node processes and n * (n - 1) link proxies; a `FaultTarget`."""

    def __init__(self, directory: Path, n: int, rng: random.Random, snapshot_bytes: int) -> None:
        self.directory, self._n, self._rng = directory, n, rng
        self.snapshot_bytes = snapshot_bytes
        ports = free_ports(2 * n)
        self.binds = [f"127.0.0.1:{port}" for port in ports[:n]]
        self.client_peers = [f"127.0.0.1:{port}" for port in ports[n:]]
        self.proxies = {
            (i, j): LinkProxy(self.binds[j]) for i in range(n) for j in range(n) if i != j
        }
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.paused: set[int] = set()
        self._monitor = KVClient(self.client_peers, client_id="nemesis-monitor")

    @property
    def n(self) -> int:
        return self._n

    async def start(self) -> None:
        for proxy in self.proxies.values():
            await proxy.start()
        for i in range(self.n):
            self._spawn(i)

    def _spawn(self, i: int) -> None:
        peers = [self.binds[i] if j == i else self.proxies[i, j].address for j in range(self.n)]
        argv = [
            sys.executable, str(RUNNER),
            "--id", str(i),
            "--peers", ",".join(peers),
            "--bind", self.binds[i],
            "--client-peers", ",".join(self.client_peers),
            "--data", str(self.directory / f"node-{i}"),
            "--snapshot-bytes", str(self.snapshot_bytes),
            "--parent-pid", str(os.getpid()),
        ]  # fmt: skip
        with open(self.directory / f"node-{i}.log", "ab") as log:
            self.procs[i] = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT
            )

    # --- FaultTarget ---------------------------------------------------------

    async def crash(self, i: int) -> None:
        proc = self.procs[i]
        proc.kill()
        await asyncio.to_thread(proc.wait)
        self.paused.discard(i)

    async def restart(self, i: int) -> None:
        assert self.procs[i].poll() is not None, f"node {i} is still running"
        self._spawn(i)

    async def pause(self, i: int) -> None:
        self.procs[i].send_signal(signal.SIGSTOP)
        self.paused.add(i)

    async def resume(self, i: int) -> None:
        self.procs[i].send_signal(signal.SIGCONT)
        self.paused.discard(i)

    def cut(self, links: Collection[tuple[int, int]]) -> None:
        for link, proxy in self.proxies.items():
            if link in links:
                proxy.cut()
            else:
                proxy.restore()

    def set_network(self, *, flaky: bool, reorder: bool) -> None:
        """flaky: every link 0-30 ms slower; reorder: some links 50-300 ms slower than others."""
        for proxy in self.proxies.values():
            delay = self._rng.uniform(0, 0.03) if flaky else 0.0
            if reorder and self._rng.random() < 0.5:
                delay += self._rng.uniform(0.05, 0.3)
            proxy.delay = delay

    async def leader(self) -> int | None:
        best: tuple[int, int] | None = None
        for i, status in enumerate(await self.statuses()):
            if status is None or status["role"] != "leader":
                continue
            if best is None or status["term"] > best[0]:
                best = (status["term"], i)
        return None if best is None else best[1]

    # --- observation ---------------------------------------------------------

    async def statuses(self) -> list[dict[str, Any] | None]:
        """Every node's status map; None for one that does not answer (down or paused)."""
        found: list[dict[str, Any] | None] = []
        for i, address in enumerate(self.client_peers):
            if i in self.paused or self.procs[i].poll() is not None:
                found.append(None)
                continue
            try:
                found.append(await self._monitor.status(address, timeout=_STATUS_TIMEOUT))
            except KVUnavailableError:
                found.append(None)
        return found

    async def converged(self, timeout: float) -> str | None:
        """None once every node answers, one leads, and all applied the same state."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            found = await self.statuses()
            problem = _disagreement(found)
            if problem is None or loop.time() >= deadline:
                return None if problem is None else f"{problem} after {timeout:g} s"
            await asyncio.sleep(0.1)

    async def close(self) -> None:
        """SIGKILL and reap every node, close every proxy and the monitor's connections."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
        for proc in self.procs.values():
            proc.wait()
        for proxy in self.proxies.values():
            await proxy.close()
        await self._monitor.close()

    def tail(self, lines: int = 30) -> str:
        """The end of every node's log, for failure messages."""
        out = []
        for i in range(self.n):
            path = self.directory / f"node-{i}.log"
            text = path.read_text(errors="replace") if path.exists() else ""
            out.append(f"--- node {i}\n" + "\n".join(text.splitlines()[-lines:]))
        return "\n".join(out)


def _disagreement(found: list[dict[str, Any] | None]) -> str | None:
    live = [s for s in found if s is not None]
    leaders = [s for s in live if s["role"] == "leader"]
    if len(live) < len(found) or len(leaders) != 1:
        return f"{len(live)} of {len(found)} nodes answer, {len(leaders)} leader(s)"
    applied = [s["applied_index"] for s in live]
    digests = [s["digest"] for s in live]
    if len(set(applied)) > 1 or len(set(digests)) > 1 or applied[0] < leaders[0]["commit_index"]:
        return f"replicas disagree: applied {applied}, digests {digests}"
    return None
