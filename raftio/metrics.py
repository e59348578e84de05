"""Counters, gauges and latency histograms of a peer, and a Prometheus endpoint.

Metrics are plain numbers kept by the shell (raftio/raft.py) and Node; reading
them is `Raft.metrics()` / `Node.metrics()`, a flat dict whose keys are
Prometheus sample names, labels included:

    {"raftio_term": 3, "raftio_rpc_sent_total{method=\"append_entries\"}": 812, ...}

`serve_prometheus(metrics_fn, host, port)` exposes such a function in the
Prometheus text format over HTTP from the event loop itself (no thread, no
dependency).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

logger = logging.getLogger(__name__)

# Upper bounds in seconds: from a fast loopback RPC to a stalled disk.
_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.5, 2.5, 10.0)


class Histogram:
    """A cumulative-bucket latency histogram (Prometheus semantics)."""

    __slots__ = ("buckets", "count", "max", "sum")

    def __init__(self) -> None:
        self.buckets = [0] * len(_BUCKETS)
        self.count = 0
        self.sum = 0.0
        self.max = 0.0

    def observe(self, value: float) -> None:
        self.count += 1
        self.sum += value
        if value > self.max:
            self.max = value
        for i, bound in enumerate(_BUCKETS):
            if value <= bound:
                self.buckets[i] += 1
                break

    def export(self, name: str, labels: str, out: dict[str, float]) -> None:
        sep = "," if labels else ""
        running = 0
        for bound, n in zip(_BUCKETS, self.buckets, strict=True):
            running += n
            out[f'{name}_bucket{{{labels}{sep}le="{bound}"}}'] = running
        out[f'{name}_bucket{{{labels}{sep}le="+Inf"}}'] = self.count
        suffix = f"{{{labels}}}" if labels else ""
        out[f"{name}_count{suffix}"] = self.count
        out[f"{name}_sum{suffix}"] = self.sum


class PeerMetrics:
    """What the shell counts for one peer (the core counts elections itself)."""

    def __init__(self) -> None:
        self.rpc_sent: dict[str, int] = {}
        self.rpc_failed: dict[str, int] = {}
        self.rpc_received: dict[str, int] = {}
        self.rpc_latency: dict[str, Histogram] = {}
        self.sync_latency = Histogram()
        self.entries_written = 0
        self.writes = 0

    def sent(self, method: str, seconds: float, failed: bool) -> None:
        self.rpc_sent[method] = self.rpc_sent.get(method, 0) + 1
        if failed:
            self.rpc_failed[method] = self.rpc_failed.get(method, 0) + 1
        else:
            hist = self.rpc_latency.get(method)
            if hist is None:
                hist = self.rpc_latency[method] = Histogram()
            hist.observe(seconds)

    def received(self, method: str) -> None:
        self.rpc_received[method] = self.rpc_received.get(method, 0) + 1

    def export(self, out: dict[str, float]) -> None:
        for method, n in self.rpc_sent.items():
            out[f'raftio_rpc_sent_total{{method="{method}"}}'] = n
        for method, n in self.rpc_failed.items():
            out[f'raftio_rpc_failed_total{{method="{method}"}}'] = n
        for method, n in self.rpc_received.items():
            out[f'raftio_rpc_received_total{{method="{method}"}}'] = n
        for method, hist in self.rpc_latency.items():
            hist.export("raftio_rpc_latency_seconds", f'method="{method}"', out)
        self.sync_latency.export("raftio_storage_sync_seconds", "", out)
        out["raftio_storage_writes_total"] = self.writes
        out["raftio_storage_entries_written_total"] = self.entries_written


def render_prometheus(samples: dict[str, float]) -> str:
    """The Prometheus text exposition format of a metrics dict."""
    lines = []
    for name, value in samples.items():
        lines.append(f"{name} {value:g}" if isinstance(value, float) else f"{name} {value}")
    return "\n".join(lines) + "\n"


async def serve_prometheus(
    metrics_fn: Callable[[], dict[str, float]], host: str = "127.0.0.1", port: int = 0
) -> asyncio.Server:
    """Serve `metrics_fn()` at http://host:port/metrics; returns the started server."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5.0)
            path = request.split(b" ", 2)[1] if request.count(b" ") >= 2 else b""
            if path.split(b"?")[0] == b"/metrics":
                body = render_prometheus(metrics_fn()).encode()
                head = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n"
            else:
                body = b"not found\n"
                head = b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\n"
            writer.write(head + b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body))
            writer.write(body)
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
            pass  # a broken scrape is the scraper's problem
        finally:
            writer.close()

    return await asyncio.start_server(handle, host, port)
