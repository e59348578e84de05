"""A 3-member etcd cluster on loopback ports in a temporary directory, and its numbers.

Members are plain child processes (`etcd --name m<i> ...`, Debian's
etcd-server package), on free ports, with fresh data directories. The load
goes to the leader through etcd's HTTP/JSON gateway (`POST /v3/kv/put`,
`benchmarks.kv_client --protocol etcd`); this module only starts members,
finds the leader, and reads the leader's costs at a window's edges: CPU
from /proc, WAL fsyncs and peer bytes from its Prometheus `/metrics`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from benchmarks.counters import cpu_seconds_of
from benchmarks.procs import Child, ProcessGroup
from raftio.kv.local import free_ports

__all__ = ["EtcdMembers", "etcd_binary", "http_request"]

_METRICS = {
    "etcd_disk_wal_fsync_duration_seconds_count": "fsyncs",
    "etcd_network_peer_sent_bytes_total": "wire_sent",
    "etcd_network_peer_received_bytes_total": "wire_received",
    "etcd_server_proposals_committed_total": "commit_index",
}


def etcd_binary() -> str | None:
    return shutil.which("etcd")


async def http_request(
    host: str, port: int, method: str, path: str, body: bytes = b"", timeout: float = 5.0
) -> tuple[int, bytes]:
    """One HTTP/1.1 request on its own connection: (status, body)."""
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection(host, port)
        try:
            head = (
                f"{method} {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
            )
            writer.write(head.encode() + body)
            raw = await reader.read()
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
    head_bytes, _, payload = raw.partition(b"\r\n\r\n")
    status = int(head_bytes.split(b" ", 2)[1])
    if b"transfer-encoding: chunked" in head_bytes.lower():
        payload = _dechunk(payload)
    return status, payload


def _dechunk(data: bytes) -> bytes:
    out = bytearray()
    while data:
        size_line, _, rest = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += rest[:size]
        data = rest[size + 2 :]
    return bytes(out)


class EtcdMembers:
    """Three etcd members started in `directory`; `client_addresses[i]` serves clients."""

    def __init__(self, group: ProcessGroup, directory: Path, logs: Path, n: int = 3) -> None:
        self.group = group
        self.directory = directory
        self.logs = logs
        ports = free_ports(2 * n)
        self.client_ports, self.peer_ports = ports[:n], ports[n:]
        self.client_addresses = [f"127.0.0.1:{p}" for p in self.client_ports]
        self.members: list[Child] = []
        self.n = n

    def _argv(self, i: int, binary: str) -> list[str]:
        cluster = ",".join(f"m{j}=http://127.0.0.1:{p}" for j, p in enumerate(self.peer_ports))
        client = f"http://127.0.0.1:{self.client_ports[i]}"
        peer = f"http://127.0.0.1:{self.peer_ports[i]}"
        return [
            binary,
            "--name",
            f"m{i}",
            "--data-dir",
            str(self.directory / f"m{i}"),
            "--listen-client-urls",
            client,
            "--advertise-client-urls",
            client,
            "--listen-peer-urls",
            peer,
            "--initial-advertise-peer-urls",
            peer,
            "--initial-cluster",
            cluster,
            "--initial-cluster-state",
            "new",
            "--initial-cluster-token",
            f"raftio-bench-{os.getpid()}",
            "--logger",
            "zap",
            "--log-level",
            "warn",
        ]

    async def start(self, timeout: float = 30.0) -> None:
        binary = etcd_binary()
        if binary is None:
            raise FileNotFoundError("etcd is not installed")
        self.directory.mkdir(parents=True, exist_ok=True)
        for i in range(self.n):
            log = self.logs / f"etcd-m{i}.log"
            child = Child(f"etcd-m{i}", self._argv(i, binary), log, control=False)
            self.members.append(await self.group.start(child))
        await self.leader(timeout)

    async def status(self, i: int) -> dict[str, Any]:
        host, port = "127.0.0.1", self.client_ports[i]
        code, body = await http_request(host, port, "POST", "/v3/maintenance/status", b"{}")
        if code != 200:
            raise RuntimeError(f"etcd m{i} status: HTTP {code}")
        status: dict[str, Any] = json.loads(body)
        return status

    async def leader(self, timeout: float = 30.0) -> int:
        """The index of the member that leads, once every member agrees on it."""
        deadline = time.monotonic() + timeout
        problem = "no answer"
        while time.monotonic() < deadline:
            try:
                statuses = [await self.status(i) for i in range(self.n)]
                leaders = {s.get("leader") for s in statuses}
                if len(leaders) == 1 and None not in leaders:
                    for i, s in enumerate(statuses):
                        if s["header"]["member_id"] == s["leader"]:
                            return i
                problem = f"leaders reported: {leaders}"
            except (OSError, TimeoutError, RuntimeError, ValueError) as exc:
                problem = repr(exc)
            await asyncio.sleep(0.2)
        tails = "".join(m._tail() for m in self.members)
        raise RuntimeError(f"etcd has no leader after {timeout:.0f} s ({problem}){tails}")

    async def counters(self, i: int) -> dict[str, Any]:
        """Member i's cumulative CPU, WAL fsyncs, peer bytes and committed proposals."""
        t = time.perf_counter()
        cpu = cpu_seconds_of(self.members[i].pid)
        code, body = await http_request("127.0.0.1", self.client_ports[i], "GET", "/metrics")
        if code != 200:
            raise RuntimeError(f"etcd m{i} metrics: HTTP {code}")
        found: dict[str, Any] = {"t": t, "cpu": cpu, "wire_sent": 0.0, "wire_received": 0.0}
        for line in body.decode().splitlines():
            name, _, value = line.partition(" ")
            name = name.partition("{")[0]
            key = _METRICS.get(name)
            if key is None or line.startswith("#"):
                continue
            number = float(value.split()[0])
            if key.startswith("wire_"):
                found[key] += number
            else:
                found[key] = number
        return found

    async def stop(self) -> None:
        await self.group.stop(self.members)
        self.members.clear()
