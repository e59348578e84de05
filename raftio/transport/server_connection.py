"""`ServerConnection`: one connection a `TcpServer` accepted (tcp_server.py).

Owns the server half of the handshake (HELLO -> WELCOME, AUTH checked
before any request), dispatch (a connection speaks only as the node it
authenticated as; a handler's `answer_now` answers without a task, anything
else runs in a handler task per request), replies, per-connection flow control, and
its deadlines, which the server's sweep checks. Admission, the buffer
budget and the drop log are the server's; the byte layout is frames.py's.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from raftio.codec import decode_message, encode_message
from raftio.messages import (
    APPEND_ENTRIES,
    REQUEST_VOTE,
    TIMEOUT_NOW,
    AppendEntriesArgs,
    InstallSnapshotArgs,
    RequestVoteArgs,
    TimeoutNowArgs,
)
from raftio.transport import frames
from raftio.transport.base import PendingReply
from raftio.transport.frame_protocol import FrameProtocol
from raftio.transport.frames import HEADER, FrameError, Refused, Rpc

if TYPE_CHECKING:
    from raftio.transport.tcp_server import TcpServer

__all__ = ["ANSWERED_NOW", "AnswerNow", "Handler", "ServerConnection"]

# Its lines have always come from the server's logger; a logging config may name it.
logger = logging.getLogger("raftio.transport.tcp_server")

Handler = Callable[[Any], Awaitable[Any]]
AnswerNow = Callable[[Any], Any]  # AnsweringRpcHandler.answer_now
# The requests a handler's `answer_now` takes; InstallSnapshot's chunks always
# run in a task (they may await the snapshot file).
ANSWERED_NOW = frozenset((REQUEST_VOTE, APPEND_ENTRIES, TIMEOUT_NOW))

_AWAIT_HELLO, _AWAIT_AUTH, _READY = range(3)


class ServerConnection(FrameProtocol):
    """One accepted connection: handshake, then one handler task per request."""

    def __init__(self, server: TcpServer, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop, f"S{server.node_id}<-")
        self._server = server
        self._state = _AWAIT_HELLO
        self._hello: frames.Hello | None = None
        self._key: bytes | None = None  # what this client must prove it knows
        self._nonce = frames.new_nonce()
        self._peercert: dict[str, Any] | None = None
        self._inflight = 0
        self._reading_paused = False
        self.node_id = -1  # the id it proved, once authenticated
        self.host = ""  # the peer's address, without the port
        self.counted = 0  # bytes of partial frames charged to the server's budget
        # Kept cheap on the hot path (a counter), read by the sweep: a frame
        # count unchanged since the last sweep means nothing arrived.
        self.frames_in = 0
        self._accepted_at = self._active_at = self._partial_since = loop.time()
        self._seen_frames = 0
        self._partial_mark = -1  # frames_in when the sweep first saw a partial frame

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        peer = transport.get_extra_info("peername")
        self.host = str(peer[0]) if peer else ""
        if not self._server.admit(self):
            self.abort()  # the server is closing
            return
        self._peercert = transport.get_extra_info("peercert") or None

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        server = self._server
        server.connections.discard(self)
        server.forget(self)
        self._reader.discard()
        if self._state == _READY:
            server.drops.log(
                f"closed S{self.node_id}",
                logging.INFO,
                "%s: connection closed (%s)",
                self.label,
                exc or "by peer",
            )

    def _warn(self, reason: str, fmt: str, *args: object) -> None:
        self._server.drops.note(reason, reason, logging.WARNING, fmt, *args)

    def evict(self, reason: str, why: str) -> None:
        """Make room (the server chose this one): say why, then close."""
        self._server.forget(self)
        self._reader.discard()
        self._warn(reason, "%s: dropping connection: %s", self.label, why)
        self.refuse(why)
        if self.write_buffer_size():
            self.abort()  # it does not read: the REFUSE could hold the socket open

    # --- deadlines (called by the server's sweep) ---

    def last_active(self, now: float) -> float:
        """When this connection last received a frame or had a request in flight."""
        if self.frames_in != self._seen_frames or self._inflight:
            return now
        return self._active_at

    def check_deadlines(self, now: float) -> None:
        if not self.is_open():
            return
        server = self._server
        if self._state != _READY:
            if now - self._accepted_at >= server.handshake_timeout:
                self.drop(
                    "no handshake within %.1f s",
                    server.handshake_timeout,
                    reason="handshake_timeout",
                )
            return
        self._active_at = self.last_active(now)
        self._seen_frames = self.frames_in
        held = self._reader.buffered()
        if held and not self._reading_paused:
            if self._partial_mark != self.frames_in:
                self._partial_mark, self._partial_since = self.frames_in, now
            elif now - self._partial_since >= server.frame_timeout:
                self.drop(
                    "a frame was not complete %.1f s after its first bytes (%d bytes in)",
                    server.frame_timeout,
                    held,
                    reason="frame_timeout",
                )
            return
        self._partial_mark = -1
        if now - self._active_at >= server.idle_timeout:
            self._close_idle()

    def _close_idle(self) -> None:
        # Routine for a link nobody calls on: INFO, and a clean close (no
        # REFUSE), so the client end just redials on its next call.
        self._server.drops.note(
            "idle",
            "idle",
            logging.INFO,
            "%s: closing idle connection (nothing received for %.0f s)",
            self.label,
            self._server.idle_timeout,
        )
        if self.write_buffer_size():
            self.abort()  # a peer that does not read would hold the close open
        else:
            self.close()

    def _on_frame(self, kind: int, request_id: int, payload: bytes) -> None:
        self.frames_in += 1
        if self._state == _READY:
            entry = self._server.handlers.get(kind)
            if entry is not None:
                self._dispatch(request_id, entry, payload)
                return
        elif self._state == _AWAIT_HELLO and kind == frames.HELLO:
            self._on_hello(payload)
            return
        elif self._state == _AWAIT_AUTH and kind == frames.AUTH:
            self._on_auth(payload)
            return
        if kind == frames.REFUSE:
            reason = frames.parse_refuse(payload)
            self._warn("client_refused", "%s: client refused: %s", self.label, reason)
            self.close()
            return
        raise FrameError(f"unexpected frame kind {kind:#04x}")

    # --- handshake ---

    def _on_hello(self, payload: bytes) -> None:
        server = self._server
        try:
            hello = frames.parse_hello(payload)
        except Refused as refused:
            self._refuse_logged("version", refused.reason)
            return
        self.label = f"{self.label} S{hello.node_id}"
        try:
            if hello.cluster_id != server.cluster_id:
                raise Refused(
                    f"cluster id mismatch: client S{hello.node_id} is in {hello.cluster_id!r}, "
                    f"server S{server.node_id} is in {server.cluster_id!r}"
                )
            if self._peercert is not None and server.tls_identity:
                frames.check_cert_identity(
                    self._peercert, server.cluster_id, hello.node_id, server.tls_names
                )
            self._key = server.key_for(hello.node_id)
        except Refused as refused:
            self._refuse_logged(_refusal_kind(refused.reason), refused.reason)
            return
        self._hello = hello
        proof = b""
        if self._key is not None:
            proof = frames.server_proof(
                self._key, server.cluster_id, hello, server.node_id, self._nonce
            )
        welcome = frames.welcome_payload(
            server.cluster_id, server.node_id, self._nonce, proof, server.max_frame
        )
        self.send(frames.encode_frame(frames.WELCOME, 0, welcome))
        self._state = _AWAIT_AUTH

    def _on_auth(self, payload: bytes) -> None:
        server, hello, key = self._server, self._hello, self._key
        assert hello is not None  # _AWAIT_AUTH is entered with it
        proof = frames.parse_auth(payload)
        if key is not None:
            if not proof:
                self._refuse_logged(
                    "auth_required", "authentication required: this server has a shared secret"
                )
                return
            want = frames.client_proof(key, server.cluster_id, hello, server.node_id, self._nonce)
            if not frames.proof_matches(want, proof):
                self._refuse_logged("auth_failed", "authentication failed: wrong shared secret")
                return
        self._state = _READY
        self.node_id = hello.node_id
        self._reader.max_frame = server.max_frame
        # Active as of now; only frames after this one make it active again, so
        # a newcomer that goes quiet is evicted before a peer that keeps calling.
        self._active_at, self._seen_frames = self._loop.time(), self.frames_in
        server.authenticated(self, hello.node_id)
        server.drops.log(f"connected S{hello.node_id}", logging.INFO, "%s: connected", self.label)

    def _refuse_logged(self, kind: str, reason: str) -> None:
        self._warn(kind, "%s: refusing connection: %s", self.label, reason)
        self.refuse(reason)

    # --- requests ---

    def _dispatch(
        self, request_id: int, entry: tuple[Rpc, Handler, AnswerNow | None], payload: bytes
    ) -> None:
        rpc, handle, answer_now = entry
        args = decode_message(payload)  # CodecError drops the connection
        if type(args) is not rpc.args_cls:
            raise FrameError(f"{rpc.method} frame carries a {type(args).__name__}")
        if isinstance(args, RequestVoteArgs):
            sender = args.candidate_id
        elif isinstance(args, (AppendEntriesArgs, InstallSnapshotArgs, TimeoutNowArgs)):
            sender = args.leader_id
        else:  # args_cls is one of the request types
            raise FrameError(f"{rpc.method} frame carries a {type(args).__name__}")
        if sender != self.node_id:
            # A connection speaks for the node it authenticated as, never another.
            raise FrameError(f"S{self.node_id}'s connection sent a {rpc.method} as S{sender}")
        if answer_now is not None:
            self._answer(request_id, rpc, answer_now, args)
            return
        self._inflight += 1
        self._update_reading()
        self._server.spawn(self._serve(request_id, rpc, handle, args))

    def _answer(self, request_id: int, rpc: Rpc, answer_now: AnswerNow, args: Any) -> None:
        """The fast path: no task; a reply that waits for a write leaves from its callback."""
        try:
            answer = answer_now(args)
        except Exception:
            logger.exception("%s: %s handler raised; answering no reply", self.label, rpc.method)
            answer = None
        if type(answer) is PendingReply:
            self._inflight += 1
            self._update_reading()
            answer.durable.add_done_callback(lambda _: self._reply_settled(request_id, rpc, answer))
        else:
            self._reply(request_id, rpc, answer)

    def _reply_settled(self, request_id: int, rpc: Rpc, answer: PendingReply) -> None:
        try:
            self._reply(request_id, rpc, answer.settled())
        except Exception:
            logger.exception("%s: internal error answering %s", self.label, rpc.method)
        finally:
            self._inflight -= 1
            self._update_reading()

    async def _serve(self, request_id: int, rpc: Rpc, handle: Handler, args: Any) -> None:
        try:
            try:
                reply = await handle(args)
            except Exception:
                logger.exception(
                    "%s: %s handler raised; answering no reply", self.label, rpc.method
                )
                reply = None
            self._reply(request_id, rpc, reply)
        except Exception:
            logger.exception("%s: internal error serving %s", self.label, rpc.method)
        finally:
            self._inflight -= 1
            self._update_reading()
            self._server.done()

    def _read_frames(self) -> None:
        inflight = self._inflight
        super()._read_frames()
        if self._inflight > inflight:
            # Queued behind the new handler tasks' first steps: replies of
            # handlers that finish without waiting leave in this same write,
            # one loop iteration sooner than if each reply scheduled it.
            self.flush_soon()
        held = self._reader.buffered()
        if held != self.counted and self.is_open():
            self._server.account(self, held)

    def _reply(self, request_id: int, rpc: Rpc, reply: Any) -> None:
        if not self.is_open():
            return  # the caller is gone; so is its pending call
        payload = b""
        if reply is not None:
            if type(reply) is not rpc.reply_cls:
                logger.error(
                    "%s: %s handler returned %s", self.label, rpc.method, type(reply).__name__
                )
            else:
                try:
                    payload = encode_message(reply)
                except Exception:
                    logger.exception("%s: cannot encode %s reply", self.label, rpc.method)
        kind = frames.REPLY if payload else frames.NO_REPLY
        header = HEADER.pack(len(payload) + frames.BODY_MIN, kind, request_id)
        if self._inflight == 1:
            # The only request in flight (it waited for an fsync, say): the
            # reply leaves now rather than one loop iteration later.
            self.send_now(header, payload)
        else:
            self.send(header, payload)  # with the others' replies, in one write

    # --- flow control ---

    def _may_read(self) -> bool:
        return self._inflight < self._server.max_inflight and self.is_open()

    def pause_writing(self) -> None:
        super().pause_writing()
        self._update_reading()

    def resume_writing(self) -> None:
        super().resume_writing()
        self._update_reading()

    def _update_reading(self) -> None:
        # Stop reading a peer that floods us with requests or does not read its
        # replies; its frames wait in the kernel, not in our memory.
        want_paused = self.write_paused or self._inflight >= self._server.max_inflight
        if want_paused == self._reading_paused or not self.is_open():
            return
        self._reading_paused = want_paused
        assert self._transport is not None
        if want_paused:
            self._transport.pause_reading()
        else:
            self._transport.resume_reading()
            self._read_frames()  # frames that arrived before we paused


def _refusal_kind(reason: str) -> str:
    """The counter a handshake refusal goes to, from its (fixed) wording."""
    if reason.startswith("certificate identity"):
        return "tls_identity"
    if reason.startswith("cluster id mismatch"):
        return "cluster_mismatch"
    return "not_member"
