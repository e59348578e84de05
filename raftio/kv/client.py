"""KVClient: an asyncio client of the KV service that finds the leader and retries.

Owns the client side of raftio.kv.protocol: one cached connection per node,
leader redirects, retries with jittered exponential backoff, and the
(client id, seq) numbering that makes a retried write apply exactly once.

A client sends one request at a time (an internal lock serializes callers):
that is what lets the servers' duplicate table keep only each client's
last write. Use several clients for concurrency.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
from collections.abc import Sequence
from typing import Any

from raftio.errors import RaftioError
from raftio.kv.protocol import (
    CLOSED,
    LOST,
    NOT_LEADER,
    TIMEOUT,
    ProtocolError,
    encode_frame,
    read_frame,
)
from raftio.node import parse_address

__all__ = ["KVClient", "KVRequestError", "KVUnavailableError"]

logger = logging.getLogger(__name__)

_RETRYABLE = frozenset({NOT_LEADER, TIMEOUT, LOST, CLOSED})
_Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class KVUnavailableError(RaftioError, TimeoutError):
    """No node completed the request before the client's deadline.

    A write may still have been applied (once); the same client will not
    resend it.
    """


class KVRequestError(RaftioError):
    """A node refused the request itself (malformed, or rejected by the state machine)."""

    def __init__(self, error: str, message: str) -> None:
        self.error = error
        super().__init__(f"{error}: {message}")


class KVClient:
    """Talks to a KV cluster given every node's client "host:port".

    Args:
        addresses: the nodes' client addresses (any order; redirects may name others).
        client_id: this client's identity in the servers' duplicate table;
            random by default. Two live clients must never share one.
        attempt_timeout: seconds one attempt (connect, send, reply) may take.
        deadline: seconds a request keeps retrying before KVUnavailableError.
        backoff: (first, max) seconds slept between failed attempts.
    """

    def __init__(
        self,
        addresses: Sequence[str],
        *,
        client_id: str | None = None,
        attempt_timeout: float = 3.0,
        deadline: float = 30.0,
        backoff: tuple[float, float] = (0.01, 0.1),
    ) -> None:
        if not addresses:
            raise ValueError("a KVClient needs at least one address")
        for address in addresses:
            parse_address(address)
        self.addresses = list(addresses)
        self.client_id = client_id or secrets.token_hex(8)
        self.seq = 0  # the number of the last write issued
        self.leader: str | None = None  # where the last request succeeded
        self._attempt_timeout, self._deadline = attempt_timeout, deadline
        self._backoff = backoff
        self._next = 0  # index into addresses of the next node to try without a hint
        self._streams: dict[str, _Stream] = {}
        self._down: set[str] = set()  # unreachable since the last success
        self._lock = asyncio.Lock()
        self._rng = random.Random()

    # ------------------------------------------------------------------ API

    async def get(self, key: str) -> str | None:
        """A linearizable read of `key`; None if it has no value."""
        value: str | None = await self.request({"op": "get", "key": key})
        return value

    async def put(self, key: str, value: str) -> str:
        """Set `key` to `value` exactly once; returns the new value."""
        return await self._write("put", key, value)

    async def append(self, key: str, value: str) -> str:
        """Append `value` to `key` exactly once; returns the new value."""
        return await self._write("append", key, value)

    async def status(self, address: str | None = None, *, timeout: float | None = None) -> Any:
        """One node's status map: `address`'s (one attempt), else any node's."""
        if address is None:
            return await self.request({"op": "status"})
        async with self._lock:
            try:
                reply = await self._exchange(address, {"op": "status"}, timeout)
            except (OSError, TimeoutError, ProtocolError) as exc:
                raise KVUnavailableError(f"{address}: {_describe(exc)}") from None
        if not reply["ok"]:
            raise KVRequestError(str(reply.get("error")), str(reply.get("message")))
        return reply["value"]

    async def close(self) -> None:
        """Close every connection and wait for the sockets to be gone."""
        writers = [writer for _, writer in self._streams.values()]
        for address in list(self._streams):
            self._drop(address)
        for writer in writers:
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def __aenter__(self) -> KVClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------------ retries

    async def _write(self, op: str, key: str, value: str) -> str:
        async with self._lock:
            # The seq is fixed before the first attempt: every retry resends it.
            self.seq += 1
            request = {"op": op, "key": key, "value": value, "client": self.client_id,
                       "seq": self.seq}  # fmt: skip
            result: str = await self._retry(request)
            return result

    async def request(self, request: dict[str, Any]) -> Any:
        """Send one request, following redirects and retrying until the deadline."""
        async with self._lock:
            return await self._retry(request)

    async def _retry(self, request: dict[str, Any]) -> Any:
        loop = asyncio.get_running_loop()
        give_up = loop.time() + self._deadline
        target = self.leader or self._rotate()
        failures = redirects = 0
        while True:
            try:
                reply = await self._exchange(target, request, self._attempt_timeout)
            except (OSError, TimeoutError, ProtocolError) as exc:
                problem, redirected = f"{target}: {_describe(exc)}", False
                self._down.add(target)
                target = self._rotate(target)
            else:
                if reply["ok"]:
                    self.leader = target
                    self._down.clear()
                    return reply["value"]
                problem, target, redirected = self._after_error(target, reply)
            # A redirect is followed at once, unless redirects go round in circles.
            redirects = redirects + 1 if redirected else 0
            delay = 0.0
            if not redirected or redirects > len(self.addresses):
                failures += 1
                delay = self._delay(failures)
            logger.debug("%s seq=%s: %s; retrying in %.3fs", request["op"], request.get("seq"),
                         problem, delay)  # fmt: skip
            if loop.time() + delay > give_up:
                raise KVUnavailableError(f"gave up after {failures} attempts; last: {problem}")
            await asyncio.sleep(delay)

    def _after_error(self, target: str, reply: dict[str, Any]) -> tuple[str, str, bool]:
        """(what went wrong, where to try next, whether that is a redirect) for an error reply."""
        error, message = str(reply.get("error")), str(reply.get("message", ""))
        if error not in _RETRYABLE:
            raise KVRequestError(error, message)
        hint = reply.get("leader")
        # A follower may still name a leader that just died: one we could not
        # reach since our last success is not worth a redirect.
        if error == NOT_LEADER and isinstance(hint, str) and hint not in (target, *self._down):
            return f"{target}: redirected to {hint}", hint, True
        return f"{target}: {error} {message}", self._rotate(target), False

    def _rotate(self, failed: str | None = None) -> str:
        """The next node to try: the one after `failed` in `addresses`, else the next in turn."""
        if failed is not None and self.leader == failed:
            self.leader = None
        if failed in self.addresses:
            self._next = self.addresses.index(failed) + 1
        address = self.addresses[self._next % len(self.addresses)]
        self._next += 1
        return address

    def _delay(self, failures: int) -> float:
        first, cap = self._backoff
        return min(cap, first * 2.0 ** (failures - 1)) * self._rng.uniform(0.5, 1.0)

    # ------------------------------------------------------------------ one attempt

    async def _exchange(
        self, address: str, request: dict[str, Any], timeout: float | None
    ) -> dict[str, Any]:
        try:
            async with asyncio.timeout(timeout or self._attempt_timeout):
                reader, writer = await self._stream(address)
                writer.write(encode_frame(request))
                await writer.drain()
                reply = await read_frame(reader)
        except BaseException:
            # A connection that failed, timed out or was interrupted may still
            # deliver a late reply: never reuse it.
            self._drop(address)
            raise
        if reply is None:
            self._drop(address)
            raise ConnectionResetError("connection closed by the server")
        if not isinstance(reply, dict) or not isinstance(reply.get("ok"), bool):
            self._drop(address)
            raise ProtocolError(f"malformed reply {reply!r:.80}")
        return reply

    async def _stream(self, address: str) -> _Stream:
        stream = self._streams.get(address)
        if stream is None or stream[1].is_closing():
            host, port = parse_address(address)
            stream = await asyncio.open_connection(host, port)
            self._streams[address] = stream
        return stream

    def _drop(self, address: str) -> None:
        stream = self._streams.pop(address, None)
        if stream is not None:
            with contextlib.suppress(Exception):
                stream[1].close()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
