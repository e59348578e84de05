"""Round-trip time and throughput of the TCP transport on loopback.

    python benchmarks/tcp_rtt.py [--calls 5000] [--pipelined 100000] [--window 256]

For each event loop (asyncio's selector loop, uvloop) it measures, against a
trivial echo handler on 127.0.0.1:

* sequential RTT: one AppendEntries (a heartbeat with one 16-byte entry) at a
  time, p50 / p99 / mean in microseconds;
* pipelined throughput: `--window` callers sharing one TcpClientEnd, calls/s;

and the same two numbers for a bare asyncio-streams echo of length-prefixed
messages of the same size (no codec, no ids, no handshake): the floor the
transport is compared with. Client and server share one process and one loop,
as two raftio peers on one machine would not; numbers are relative.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import struct
import time
from collections.abc import Callable, Coroutine
from typing import Any

import uvloop

from raftio import codec
from raftio.messages import (
    AppendEntriesArgs,
    AppendEntriesReply,
    Entry,
    InstallSnapshotArgs,
    InstallSnapshotReply,
    RequestVoteArgs,
    RequestVoteReply,
)
from raftio.transport.tcp import TcpClientEnd, serve

HEARTBEAT = AppendEntriesArgs(7, 0, 41, 7, [Entry(7, b"x" * 16)], 40)
_LENGTH = struct.Struct(">I")


class Echo:
    async def request_vote(self, args: RequestVoteArgs) -> RequestVoteReply:
        return RequestVoteReply(args.term, True)

    async def append_entries(self, args: AppendEntriesArgs) -> AppendEntriesReply:
        return AppendEntriesReply(args.term, True, args.prev_log_index + len(args.entries))

    async def install_snapshot(self, args: InstallSnapshotArgs) -> InstallSnapshotReply:
        return InstallSnapshotReply(args.term)


def summarize(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50": ordered[len(ordered) // 2] * 1e6,
        "p99": ordered[int(len(ordered) * 0.99)] * 1e6,
        "mean": statistics.fmean(ordered) * 1e6,
    }


async def raftio_bench(calls: int, pipelined: int, window: int) -> tuple[dict[str, float], float]:
    async with (
        await serve(Echo(), "127.0.0.1", 0, cluster_id="bench", node_id=1) as server,
        TcpClientEnd("127.0.0.1", server.port, cluster_id="bench", node_id=0) as end,
    ):
        for _ in range(200):  # connect and warm up
            assert await end.call("append_entries", HEARTBEAT) is not None
        samples = []
        for _ in range(calls):
            start = time.perf_counter()
            await end.call("append_entries", HEARTBEAT)
            samples.append(time.perf_counter() - start)

        async def caller(n: int) -> None:
            for _ in range(n):
                assert await end.call("append_entries", HEARTBEAT) is not None

        start = time.perf_counter()
        await asyncio.gather(*(caller(pipelined // window) for _ in range(window)))
        rate = (pipelined // window * window) / (time.perf_counter() - start)
        return summarize(samples), rate


async def streams_bench(calls: int, pipelined: int) -> tuple[dict[str, float], float]:
    message = codec.encode_message(HEARTBEAT)
    frame = _LENGTH.pack(len(message)) + message

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                (length,) = _LENGTH.unpack(await reader.readexactly(4))
                writer.write(_LENGTH.pack(length) + await reader.readexactly(length))
        except asyncio.IncompleteReadError:
            writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    async with server:
        reader, writer = await asyncio.open_connection(*server.sockets[0].getsockname()[:2])

        async def one() -> None:
            writer.write(frame)
            (length,) = _LENGTH.unpack(await reader.readexactly(4))
            await reader.readexactly(length)

        for _ in range(200):
            await one()
        samples = []
        for _ in range(calls):
            start = time.perf_counter()
            await one()
            samples.append(time.perf_counter() - start)

        async def read_all() -> None:
            for _ in range(pipelined):
                (length,) = _LENGTH.unpack(await reader.readexactly(4))
                await reader.readexactly(length)

        start = time.perf_counter()
        reading = asyncio.ensure_future(read_all())
        for i in range(pipelined):
            writer.write(frame)
            if i % 256 == 255:
                await writer.drain()
        await reading
        rate = pipelined / (time.perf_counter() - start)
        writer.close()
        await writer.wait_closed()
        return summarize(samples), rate


def run_on(factory: Callable[[], asyncio.AbstractEventLoop], coro: Coroutine[Any, Any, Any]) -> Any:
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(coro)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=5000, help="sequential calls")
    parser.add_argument("--pipelined", type=int, default=100_000, help="pipelined calls")
    parser.add_argument("--window", type=int, default=256, help="concurrent callers")
    options = parser.parse_args()

    loops: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
        "asyncio": asyncio.SelectorEventLoop,
        "uvloop": uvloop.new_event_loop,
    }
    print(f"{'loop':8} {'what':16} {'p50 us':>8} {'p99 us':>8} {'mean us':>8} {'calls/s':>10}")
    for name, factory in loops.items():
        results = {
            "streams echo": run_on(factory, streams_bench(options.calls, options.pipelined)),
            "raftio tcp": run_on(
                factory, raftio_bench(options.calls, options.pipelined, options.window)
            ),
        }
        for what, (rtt, rate) in results.items():
            print(
                f"{name:8} {what:16} {rtt['p50']:8.1f} {rtt['p99']:8.1f} "
                f"{rtt['mean']:8.1f} {rate:10.0f}"
            )


if __name__ == "__main__":
    main()
