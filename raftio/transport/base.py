"""The client-end protocol every transport implements (CONTRACT.md section 3)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Protocol

# The method names are the messages' (re-exported here, where transports look).
from raftio.messages import APPEND_ENTRIES, INSTALL_SNAPSHOT, METHODS, REQUEST_VOTE, TIMEOUT_NOW

__all__ = [
    "APPEND_ENTRIES",
    "INSTALL_SNAPSHOT",
    "METHODS",
    "REQUEST_VOTE",
    "TIMEOUT_NOW",
    "AnsweringRpcHandler",
    "ClientEnd",
    "PendingReply",
    "RpcHandler",
    "StartingClientEnd",
]


class ClientEnd(Protocol):
    """One peer as seen from another: `call` returns the reply, or None on failure.

    A failed RPC (lost request or reply, peer down, timeout) returns None;
    it never raises. Calls may take seconds to fail and may be reordered.
    """

    async def call(self, method: str, args: Any) -> Any | None: ...


class StartingClientEnd(ClientEnd, Protocol):
    """A client end that can also start a call without a task (optional fast path).

    `start_call` sends at once and returns a future for the reply (None on
    failure, as `call`). Raft uses it when present: a task per RPC costs a
    loop iteration before the request leaves, and a task object per message.
    """

    def start_call(self, method: str, args: Any) -> asyncio.Future[Any]: ...


class RpcHandler(Protocol):
    """What a transport's server side dispatches incoming calls to (a Raft peer)."""

    async def request_vote(self, args: Any) -> Any | None: ...
    async def append_entries(self, args: Any) -> Any | None: ...
    async def install_snapshot(self, args: Any) -> Any | None: ...

    # Optional: leadership transfer (a server without it refuses the RPC's frames).
    # async def timeout_now(self, args: Any) -> Any | None: ...


class PendingReply:
    """A reply that may leave only once `durable` is done: the state it promises is on disk."""

    __slots__ = ("_alive", "_reply", "durable")

    def __init__(self, durable: asyncio.Future[None], reply: Any, alive: Callable[[], bool]):
        self.durable, self._reply, self._alive = durable, reply, alive

    def settled(self) -> Any | None:
        """The reply once `durable` is done; None if the write failed or the peer stopped."""
        durable = self.durable
        if durable.cancelled() or durable.exception() is not None or not self._alive():
            return None
        return self._reply


class AnsweringRpcHandler(RpcHandler, Protocol):
    """An `RpcHandler` that can also answer without a task (optional fast path).

    `answer_now(args)` answers a RequestVote, AppendEntries or TimeoutNow at
    once: the reply, None (no answer), or a `PendingReply` to send when its
    write is durable. The TCP server uses it when present: a task per request
    costs a task object, a loop iteration and a coroutine chain per message.
    """

    def answer_now(self, args: Any) -> Any | None: ...
