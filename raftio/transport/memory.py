"""An in-memory, fault-injecting network: MIT labrpc's semantics on asyncio.

`Network` connects client ends to named servers inside one event loop and
can lose, delay and reorder RPCs the way the Raft lab's tester does, so
users can run the same kind of tests against their own services::

    net = Network(seed=1)
    end = net.make_end("a->b")      # ends start disabled and unconnected
    net.connect("a->b", "b")
    net.enable("a->b", True)
    net.add_server("b", raft_b)      # anything with the three async RPC handlers
    reply = await end.call("append_entries", args)   # reply, or None on failure

Semantics (labrpc's, with its constants):

* Args and replies cross the network as bytes made by `codec.encode_message`
  and are decoded on the other side, so neither side ever shares an object
  with the other. Request bytes are counted when the call is made, reply
  bytes when the reply is delivered (`total_bytes`).
* Unreliable mode: a random delay of 0-26 ms before delivery; 10% of
  requests and 10% of replies are lost (the call returns None).
* A disabled end, or one whose server is missing, fails after
  rand(0..7 s) with long delays on, else rand(0..100 ms).
* Long reordering: about 2/3 of replies are held for
  200 + rand(1 + rand(2000)) ms.
* If the server is deleted or replaced (`add_server` again), or the end is
  disabled, while a call is being handled, the reply is lost.
* A handler that returns None, raises (logged with its traceback) or is
  asked for an unknown method makes the call return None.

Optional per-link rules (`set_link_faults`, off by default): an object with
`request(end, server, method)` returning the delays after which copies of a
request reach the server (none: the request is lost; two or more: it is
duplicated, and only the first copy's reply counts), and
`reply(end, server, method)` returning the delay before the reply arrives
(None: the reply is lost). Simulations build partitions (one-way links,
bridges), loss, delay, duplication and reordering from them.

All randomness comes from one `random.Random(seed)` and all timing from the
running loop (`asyncio.sleep`), so on a virtual clock a seed replays the same
faults. Every background task is kept in a set; `cleanup()` cancels them and
fails pending and later calls at once.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Coroutine, Hashable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from raftio import codec
from raftio.messages import Message
from raftio.transport.base import METHODS, RpcHandler

__all__ = ["LinkFaults", "MemoryClientEnd", "Network"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

# labrpc's constants, in milliseconds and per-mille.
_SHORT_DELAY_MS = 27
_DROP_PER_MILLE = 100
_LONG_DELAY_MS = 7000
_SHORT_FAIL_DELAY_MS = 100
_REORDER_OUT_OF = 900
_REORDER_BELOW = 600
_REORDER_BASE_MS = 200
_REORDER_SPREAD_MS = 2000
# How often a caller re-checks, while a handler runs, that its server still lives.
_DEAD_SERVER_POLL = 0.1


class LinkFaults(Protocol):
    """Per-link fault rules a `Network` consults for every call (see `set_link_faults`)."""

    def request(self, end_name: Hashable, server_name: Hashable, method: str) -> Sequence[float]:
        """Delays (seconds) of the copies of a request: () loses it, 2+ duplicate it."""
        ...

    def reply(self, end_name: Hashable, server_name: Hashable, method: str) -> float | None:
        """Delay (seconds) before a reply is delivered, or None to lose it."""
        ...


@dataclass(eq=False, slots=True)
class _Server:
    """One incarnation of a server; `add_server` with the same name makes a new one."""

    name: Hashable
    handler: RpcHandler
    count: int = 0  # RPCs dispatched to this incarnation


@dataclass(slots=True)
class _End:
    enabled: bool = False
    server_name: Hashable | None = None


class MemoryClientEnd:
    """A client end of a `Network` (implements `raftio.transport.base.ClientEnd`)."""

    def __init__(self, network: Network, name: Hashable) -> None:
        self._network = network
        self.name = name

    async def call(self, method: str, args: Any) -> Any | None:
        """Send one RPC; return the decoded reply, or None if the network or server failed it."""
        return await self._network._call(self.name, method, args)

    def __repr__(self) -> str:
        return f"MemoryClientEnd({self.name!r})"


class Network:
    """A simulated network of client ends and servers (labrpc's Network).

    Args:
        seed: seeds the one `random.Random` behind every fault decision;
            None draws a fresh seed.
    """

    def __init__(self, seed: int | None = None) -> None:
        self._rng = random.Random(seed)
        self._reliable = True
        self._long_delays = False
        self._long_reordering = False
        self._ends: dict[Hashable, _End] = {}
        self._servers: dict[Hashable, _Server] = {}
        self._count = 0
        self._bytes = 0
        self._closed = False
        self._link_faults: LinkFaults | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._pending: set[asyncio.Future[bytes | None]] = set()

    # --- topology ------------------------------------------------------------

    def make_end(self, name: Hashable) -> MemoryClientEnd:
        """Create a client end, initially disabled and connected to nothing."""
        if name in self._ends:
            raise ValueError(f"end {name!r} already exists")
        self._ends[name] = _End()
        return MemoryClientEnd(self, name)

    def connect(self, end_name: Hashable, server_name: Hashable) -> None:
        """Direct end `end_name` at server `server_name` (which need not exist yet)."""
        self._end(end_name).server_name = server_name

    def enable(self, end_name: Hashable, enabled: bool) -> None:
        """Enable or disable an end; calls on a disabled end fail after a delay."""
        self._end(end_name).enabled = enabled

    def add_server(self, server_name: Hashable, handler: RpcHandler) -> None:
        """Add a server, or replace it with a new incarnation (its old calls lose their replies)."""
        self._servers[server_name] = _Server(server_name, handler)

    def delete_server(self, server_name: Hashable) -> None:
        """Remove a server: calls to it fail, and calls it is handling lose their replies."""
        self._servers.pop(server_name, None)

    def _end(self, end_name: Hashable) -> _End:
        try:
            return self._ends[end_name]
        except KeyError:
            raise KeyError(f"no end named {end_name!r}") from None

    # --- faults --------------------------------------------------------------

    def set_reliable(self, reliable: bool) -> None:
        """False: delay requests a little and lose 10% of requests and 10% of replies."""
        self._reliable = reliable

    def set_long_delays(self, long_delays: bool) -> None:
        """True: a call on a disabled end takes up to 7 s to fail (else up to 100 ms)."""
        self._long_delays = long_delays

    def set_long_reordering(self, long_reordering: bool) -> None:
        """True: hold about 2/3 of replies for 200 ms to 2.2 s."""
        self._long_reordering = long_reordering

    def set_link_faults(self, faults: LinkFaults | None) -> None:
        """Consult `faults` for every request and reply that reaches a live server.

        Applies after the faults above (disabled ends, unreliable mode); None
        (the default) turns the rules off.
        """
        self._link_faults = faults

    # --- statistics ----------------------------------------------------------

    def rpc_count(self, server_name: Hashable) -> int:
        """RPCs handed to the current incarnation of a server (0 if there is none)."""
        server = self._servers.get(server_name)
        return server.count if server is not None else 0

    def total_count(self) -> int:
        """Calls made on all ends, delivered or not."""
        return self._count

    def total_bytes(self) -> int:
        """Encoded bytes of all requests sent plus all replies delivered."""
        return self._bytes

    # --- lifetime ------------------------------------------------------------

    def cleanup(self) -> None:
        """Shut the network down: fail every pending call and cancel every task.

        Calls made afterwards return None at once.
        """
        self._closed = True
        for future in list(self._pending):
            _resolve(future, None)
        for task in list(self._tasks):
            task.cancel()

    # --- delivery ------------------------------------------------------------

    async def _call(self, end_name: Hashable, method: str, args: Any) -> Any | None:
        if self._closed:
            return None
        if method not in METHODS:
            logger.error("end %r called unknown method %r; the call fails", end_name, method)
            return None
        try:
            request = codec.encode_message(args)
        except TypeError:
            logger.exception("end %r cannot send %s: not a raftio message", end_name, method)
            return None
        self._count += 1
        self._bytes += len(request)
        future: asyncio.Future[bytes | None] = asyncio.get_running_loop().create_future()
        self._pending.add(future)
        self._spawn(self._deliver(end_name, method, request, future))
        try:
            reply = await future
        finally:
            self._pending.discard(future)
        return None if reply is None else codec.decode_message(reply)

    async def _deliver(
        self,
        end_name: Hashable,
        method: str,
        request: bytes,
        future: asyncio.Future[bytes | None],
    ) -> None:
        # What the end looks like now decides the call's fate, as in labrpc.
        end = self._ends[end_name]
        server = self._servers.get(end.server_name) if end.server_name is not None else None
        reliable, long_reordering = self._reliable, self._long_reordering
        if not end.enabled or server is None:
            limit = _LONG_DELAY_MS if self._long_delays else _SHORT_FAIL_DELAY_MS
            await _sleep_ms(self._rng.randrange(limit))
            _resolve(future, None)
            return

        if not reliable:
            await _sleep_ms(self._rng.randrange(_SHORT_DELAY_MS))
            if self._rng.randrange(1000) < _DROP_PER_MILLE:
                _resolve(future, None)  # request lost
                return

        faults = self._link_faults
        if faults is not None:
            delays = faults.request(end_name, server.name, method)
            if not delays:
                _resolve(future, None)  # request lost on this link
                return
            for extra in delays[1:]:
                self._spawn(self._duplicate(server, method, request, extra))
            if delays[0] > 0:
                await asyncio.sleep(delays[0])

        reply = await self._handle(end_name, server, method, request)
        if reply is None or self._is_server_dead(end_name, server):
            _resolve(future, None)
        elif not reliable and self._rng.randrange(1000) < _DROP_PER_MILLE:
            _resolve(future, None)  # reply lost
        else:
            if faults is not None:
                delay = faults.reply(end_name, server.name, method)
                if delay is None:
                    _resolve(future, None)  # reply lost on this link
                    return
                if delay > 0:
                    await asyncio.sleep(delay)
            if long_reordering and self._rng.randrange(_REORDER_OUT_OF) < _REORDER_BELOW:
                spread = 1 + self._rng.randrange(_REORDER_SPREAD_MS)
                await _sleep_ms(_REORDER_BASE_MS + self._rng.randrange(spread))
            self._bytes += len(reply)
            _resolve(future, reply)

    async def _handle(
        self, end_name: Hashable, server: _Server, method: str, request: bytes
    ) -> bytes | None:
        """Run the handler in its own task; give up if the server dies meanwhile."""
        server.count += 1
        handling = self._spawn(self._run_handler(server, method, request))
        while True:
            done, _ = await asyncio.wait({handling}, timeout=_DEAD_SERVER_POLL)
            if done:
                return handling.result()
            if self._is_server_dead(end_name, server):
                return None  # the handler runs on; its reply is dropped

    async def _duplicate(self, server: _Server, method: str, request: bytes, delay: float) -> None:
        """A duplicate of a request: handled if its server still lives, reply discarded."""
        await asyncio.sleep(delay)
        if self._servers.get(server.name) is server:
            server.count += 1
            await self._run_handler(server, method, request)

    async def _run_handler(self, server: _Server, method: str, request: bytes) -> bytes | None:
        try:
            args = codec.decode_message(request)
            handler = getattr(server.handler, method)
            reply: Message | None = await handler(args)
            return None if reply is None else codec.encode_message(reply)
        except Exception:
            logger.exception(
                "RPC handler %s of server %r raised; the call fails", method, server.name
            )
            return None

    def _is_server_dead(self, end_name: Hashable, server: _Server) -> bool:
        end = self._ends[end_name]
        return not end.enabled or self._servers.get(server.name) is not server

    def _spawn(self, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("network task failed", exc_info=task.exception())


async def _sleep_ms(ms: int) -> None:
    await asyncio.sleep(ms / 1000)


def _resolve(future: asyncio.Future[bytes | None], value: bytes | None) -> None:
    if not future.done():
        future.set_result(value)
