"""LinkProxy: a TCP proxy for one ordered pair of peers, so real processes can be partitioned.

Point node i's address of node j at the proxy (i, j): cutting it cuts
node i's requests to node j and their replies, link by link, as
`raftio.testing.partitions` describes a cut link; a delay slows it.
"""

from __future__ import annotations

import asyncio

from raftio.node import parse_address

__all__ = ["LinkProxy"]


class LinkProxy:
    """A TCP proxy for one link (node i -> node j): point i's address of j at `address`.

    It forwards both directions of every connection to `target`. `cut()`
    closes every connection it carries and refuses new ones until
    `restore()`; `delay` (seconds) holds every chunk that long, in order.
    """

    def __init__(self, target: str, host: str = "127.0.0.1") -> None:
        self.target = target
        self._host = host
        self.delay = 0.0
        self.is_cut = False
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def address(self) -> str:
        if self._server is None:
            raise RuntimeError("the proxy is not started")
        port: int = self._server.sockets[0].getsockname()[1]
        return f"{self._host}:{port}"

    async def start(self, port: int = 0) -> None:
        self._server = await asyncio.start_server(self._on_connection, self._host, port)

    def cut(self) -> None:
        """Close every connection and refuse new ones."""
        self.is_cut = True
        for writer in list(self._writers):
            writer.transport.abort()

    def restore(self) -> None:
        self.is_cut = False

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _on_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        if self.is_cut:
            writer.transport.abort()
            return
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        try:
            host, port = parse_address(self.target)
            up_reader, up_writer = await asyncio.open_connection(host, port)
        except OSError:
            writer.transport.abort()
            self._writers.discard(writer)
            self._tasks.discard(task)
            return
        self._writers.add(up_writer)
        try:
            await asyncio.gather(self._pump(reader, up_writer), self._pump(up_reader, writer))
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            for w in (writer, up_writer):
                self._writers.discard(w)
                w.transport.abort()
            self._tasks.discard(task)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(1 << 16):
            if self.delay > 0:
                await asyncio.sleep(self.delay)
            if self.is_cut:
                break
            writer.write(data)
            await writer.drain()
        writer.transport.abort()
