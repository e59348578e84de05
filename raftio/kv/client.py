"""KVClient: an asyncio client of the KV service that finds the leader and retries.

Owns the client side of raftio.kv.protocol: one cached connection per node
(authenticated with the token, if any), leader redirects, retries with
jittered exponential backoff, and the session: registered with the cluster
before the first write, then (session, seq) on every write, so a retried
write applies at most once and is acknowledged only by its own application.

A client sends one request at a time (an internal lock serializes callers):
that is what lets a session keep only its last write. Use several clients
for concurrency.

When the cluster no longer knows the session (`session_expired`: evicted as
least recently used; `unknown_session`), the write was not applied by the
attempt that got that answer. If no earlier attempt of the same write can
have reached the log, the client registers again and resends the write in
the new session; otherwise the write may or may not have applied, and the
client raises `KVSessionError` (`maybe_applied=True`) instead of resending
it blindly. Either way the next write uses a new session.

The transport is a seam: by default one attempt is a frame over the
node's TCP connection; an `Exchange` given to the client carries it
instead (`raftio.testing.nemesis.MemoryKvClient`: in memory, on the
virtual clock), under the same retries, redirects and sessions.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import random
import secrets
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from raftio.errors import RaftioError
from raftio.kv.machine import SESSION_ERRORS, SESSION_EXPIRED, UNKNOWN_SESSION
from raftio.kv.protocol import (
    CLOSED,
    LOST,
    NOT_LEADER,
    TIMEOUT,
    UNAUTHORIZED,
    ProtocolError,
    auth_proof,
    encode_frame,
    read_frame,
)
from raftio.node import parse_address

__all__ = ["Exchange", "KVClient", "KVRequestError", "KVSessionError", "KVUnavailableError"]

logger = logging.getLogger(__name__)

_RETRYABLE = frozenset({NOT_LEADER, TIMEOUT, LOST, CLOSED})
_UNSURE = frozenset({TIMEOUT, LOST, CLOSED})  # the write may be in the log
_Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]

# One attempt: send `request` to the node at `address` and return its reply (a
# protocol reply map), or raise OSError, TimeoutError or ProtocolError.
Exchange = Callable[[str, dict[str, Any]], Awaitable[Any]]


class KVUnavailableError(RaftioError, TimeoutError):
    """No node completed the request before the client's deadline.

    A write may still have been applied (once); the same client will not
    resend it.
    """


class KVRequestError(RaftioError):
    """A node refused the request itself (malformed, or rejected by the state machine).

    `maybe_applied` is True when an earlier attempt of the same request got
    no definite answer (a timeout, a lost connection or leadership), so it
    may have taken effect although this attempt was refused.
    """

    def __init__(self, error: str, message: str, *, maybe_applied: bool = False) -> None:
        self.error = error
        self.message = message
        self.maybe_applied = maybe_applied
        super().__init__(f"{error}: {message}")


class KVSessionError(KVRequestError):
    """The cluster refused a write's session or seq; the write was not applied by this request.

    `maybe_applied` is True when an earlier attempt of the same write may
    have been applied before the session was lost: its outcome is unknown.
    The client's next write registers a new session.
    """

    def __init__(self, error: str, message: str, *, maybe_applied: bool) -> None:
        unsure = "; an earlier attempt may have applied it" if maybe_applied else ""
        super().__init__(error, message + unsure, maybe_applied=maybe_applied)


class KVClient:
    """Talks to a KV cluster given every node's client "host:port".

    Args:
        addresses: the nodes' client addresses (any order; redirects may name others).
        client_id: a label for this client in its log lines (random by
            default). The servers identify it by the session they issue.
        token: the cluster's KV token, if its servers require one.
        attempt_timeout: seconds one attempt (connect, send, reply) may take.
        deadline: seconds a request keeps retrying before KVUnavailableError.
        backoff: (first, max) seconds slept between failed attempts.
        exchange: carries each attempt instead of TCP (no connections, no
            token handshake): for in-memory clusters.
        rng: draws the backoff jitter; seed it for a replayable client.
    """

    def __init__(
        self,
        addresses: Sequence[str],
        *,
        client_id: str | None = None,
        token: bytes | None = None,
        attempt_timeout: float = 3.0,
        deadline: float = 30.0,
        backoff: tuple[float, float] = (0.01, 0.1),
        exchange: Exchange | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if not addresses:
            raise ValueError("a KVClient needs at least one address")
        for address in addresses:
            parse_address(address)
        self.addresses = list(addresses)
        self.client_id = client_id or secrets.token_hex(8)
        self.session: str | None = None  # issued by the cluster at the first write
        self.seq = 0  # the number of the last write issued in `session`
        self._token = token
        self._wrote = False  # the current attempt sent its request
        self._unsure = False  # an attempt of the current write may be in the log
        self.leader: str | None = None  # where the last request succeeded
        self._attempt_timeout, self._deadline = attempt_timeout, deadline
        self._backoff = backoff
        self._next = 0  # index into addresses of the next node to try without a hint
        self._streams: dict[str, _Stream] = {}
        self._down: set[str] = set()  # unreachable since the last success
        # Nodes that said "not the leader" to the request under way: a hint naming
        # one of them is stale (a removed node may point at a node that no longer
        # leads), so it is not followed until every node has been tried again.
        self._declined: set[str] = set()
        self._lock = asyncio.Lock()
        self._custom_exchange = exchange
        self._rng = rng if rng is not None else random.Random()

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
            try:
                return await self._write_in_session(op, key, value)
            except KVSessionError as exc:
                if exc.maybe_applied or exc.error not in (SESSION_EXPIRED, UNKNOWN_SESSION):
                    raise
                # No attempt of this write can have applied: resend it in a new session.
                logger.info("%s: %s before the write; registering again", self.client_id, exc)
            return await self._write_in_session(op, key, value)

    async def _write_in_session(self, op: str, key: str, value: str) -> str:
        try:
            return await self._numbered_write(op, key, value)
        except BaseException:
            # Without a definite answer the write may still apply, or never:
            # numbering on would leave a gap, so the next write starts a new session.
            self.session = None
            raise

    async def _numbered_write(self, op: str, key: str, value: str) -> str:
        if self.session is None:
            await self._register()
        # The seq is fixed before the first attempt: every retry resends it.
        self.seq += 1
        request = {"op": op, "key": key, "value": value, "session": self.session, "seq": self.seq}
        self._unsure = False
        result: str = await self._retry(request)
        return result

    async def _register(self) -> None:
        session = await self._retry({"op": "register"})
        if not isinstance(session, str):
            raise ProtocolError(f"register answered {session!r:.80}, not a session id")
        self.session, self.seq = session, 0

    async def request(self, request: dict[str, Any]) -> Any:
        """Send one request, following redirects and retrying until the deadline.

        Raises KVUnavailableError, or KVRequestError for a refusal (its
        `maybe_applied` says whether an earlier attempt may have taken effect).
        """
        async with self._lock:
            self._unsure = False
            return await self._retry(request)

    async def _retry(self, request: dict[str, Any]) -> Any:
        loop = asyncio.get_running_loop()
        give_up = loop.time() + self._deadline
        target = self.leader or self._rotate()
        failures = redirects = 0
        self._declined.clear()
        while True:
            try:
                reply = await self._exchange(target, request, self._attempt_timeout)
            except (OSError, TimeoutError, ProtocolError) as exc:
                problem, redirected = f"{target}: {_describe(exc)}", False
                self._unsure |= self._wrote
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
            logger.debug(
                "%s seq=%s: %s; retrying in %.3fs",
                request["op"],
                request.get("seq"),
                problem,
                delay,
            )
            if loop.time() + delay > give_up:
                raise KVUnavailableError(f"gave up after {failures} attempts; last: {problem}")
            await asyncio.sleep(delay)

    def _after_error(self, target: str, reply: dict[str, Any]) -> tuple[str, str, bool]:
        """(what went wrong, where to try next, whether that is a redirect) for an error reply."""
        error, message = str(reply.get("error")), str(reply.get("message", ""))
        if error in SESSION_ERRORS:
            raise KVSessionError(error, message, maybe_applied=self._unsure)
        if error not in _RETRYABLE:
            raise KVRequestError(error, message, maybe_applied=self._unsure)
        self._unsure |= error in _UNSURE
        hint = reply.get("leader")
        if error == NOT_LEADER:
            self._declined.add(target)
            if self._declined >= set(self.addresses):
                self._declined = {target}  # a new round: leadership may have moved
        # A follower may still name a leader that just died (one we could not
        # reach since our last success), or one that declined already: not
        # worth a redirect.
        stale = (target, *self._down, *self._declined)
        if error == NOT_LEADER and isinstance(hint, str) and hint not in stale:
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
        self._wrote = False
        try:
            async with asyncio.timeout(timeout or self._attempt_timeout):
                reply = await self._send(address, request)
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

    async def _send(self, address: str, request: dict[str, Any]) -> Any:
        if self._custom_exchange is not None:
            self._wrote = True  # whatever happens next, the node may have it
            return await self._custom_exchange(address, request)
        reader, writer = await self._stream(address)
        writer.write(encode_frame(request))
        self._wrote = True
        await writer.drain()
        return await read_frame(reader)

    async def _stream(self, address: str) -> _Stream:
        stream = self._streams.get(address)
        if stream is None or stream[1].is_closing():
            host, port = parse_address(address)
            stream = await asyncio.open_connection(host, port)
            self._streams[address] = stream  # from here on, a failure drops it
            if self._token is not None:
                await self._authenticate(address, self._token, *stream)
        return stream

    async def _authenticate(
        self, address: str, token: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """The handshake of raftio.kv.protocol: the server proves itself first, then we do."""
        nonce = secrets.token_bytes(16)
        writer.write(encode_frame({"op": "hello", "nonce": nonce}))
        hello = await _reply(reader)
        value = hello.get("value") if hello["ok"] else None
        server_nonce, proof = (
            (value.get("nonce"), value.get("proof")) if isinstance(value, dict) else (None, None)
        )
        if not (isinstance(server_nonce, bytes) and isinstance(proof, bytes)):
            raise KVRequestError(
                UNAUTHORIZED,
                f"{address} asked for no token: not this cluster's node, or its token is not set",
            )
        expected = auth_proof(token, "raftio-kv-server", nonce, server_nonce)
        if not hmac.compare_digest(expected, proof):
            raise KVRequestError(
                UNAUTHORIZED,
                f"{address} does not hold our token: a wrong token, or not this cluster's node",
            )
        client_proof = auth_proof(token, "raftio-kv-client", nonce, server_nonce)
        writer.write(encode_frame({"op": "auth", "proof": client_proof}))
        verdict = await _reply(reader)
        if not verdict["ok"]:
            raise KVRequestError(str(verdict.get("error")), str(verdict.get("message")))

    def _drop(self, address: str) -> None:
        stream = self._streams.pop(address, None)
        if stream is not None:
            with contextlib.suppress(Exception):
                stream[1].close()


async def _reply(reader: asyncio.StreamReader) -> dict[str, Any]:
    reply = await read_frame(reader)
    if reply is None:
        raise ConnectionResetError("connection closed by the server")
    if not isinstance(reply, dict) or not isinstance(reply.get("ok"), bool):
        raise ProtocolError(f"malformed reply {reply!r:.80}")
    return reply


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
