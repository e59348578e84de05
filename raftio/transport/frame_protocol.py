"""`FrameProtocol`: the asyncio protocol both ends of the TCP transport build on.

Owns what the client connection (tcp.py) and the server connection
(server_connection.py) share: frames read from the byte stream as they
arrive, writes coalesced to one per loop iteration, refusing, dropping and
closing. The byte layout is frames.py's; this module adds only the socket.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import cast

from raftio.codec import CodecError
from raftio.transport.frames import (
    HANDSHAKE_MAX_FRAME,
    REFUSE,
    FrameError,
    FrameReader,
    encode_frame,
    refuse_payload,
)

__all__ = ["FrameProtocol"]

# Its lines have always come from the frames logger; a logging config may name it.
logger = logging.getLogger("raftio.transport.frames")


def _set_nodelay(transport: asyncio.BaseTransport) -> None:
    # Small request/reply frames: Nagle would add up to 40 ms per round trip.
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except (OSError, AttributeError):
            pass


class FrameProtocol(asyncio.Protocol):
    """What both ends share: frame reading, coalesced writes and closing.

    `send` only buffers; one `loop.call_soon` flush per iteration hands all
    frames queued in that iteration to the transport in a single write.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, label: str) -> None:
        self._loop = loop
        self.label = label  # for log lines: who we are and who the peer is
        self._transport: asyncio.Transport | None = None
        self._reader = FrameReader(HANDSHAKE_MAX_FRAME)
        self._out: list[bytes] = []
        self._flush_scheduled = False
        self.write_paused = False
        self.closed: asyncio.Future[None] = loop.create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport: no isinstance.
        self._transport = cast(asyncio.Transport, transport)
        _set_nodelay(transport)
        peer = transport.get_extra_info("peername")
        if peer:
            self.label = f"{self.label} {peer[0]}:{peer[1]}"

    def connection_lost(self, exc: Exception | None) -> None:
        self._out.clear()
        if not self.closed.done():
            self.closed.set_result(None)

    def is_open(self) -> bool:
        return self._transport is not None and not self._transport.is_closing()

    def send(self, header: bytes, payload: bytes = b"") -> None:
        self._out.append(header)
        if payload:
            self._out.append(payload)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def send_now(self, header: bytes, payload: bytes) -> None:
        """Write at once if nothing is queued before it, else `send`."""
        if self._out or self._flush_scheduled or not self.is_open():
            self.send(header, payload)
        else:
            assert self._transport is not None
            self._transport.writelines((header, payload))

    def flush_soon(self) -> None:
        """Flush once the callbacks queued so far have run (they may send more)."""
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        out, self._out = self._out, []
        if out and self.is_open():
            assert self._transport is not None
            self._transport.writelines(out)

    def write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() if self._transport else 0

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        self._read_frames()

    def _read_frames(self) -> None:
        try:
            while self._may_read():
                frame = self._reader.next_frame()
                if frame is None:
                    return
                self._on_frame(*frame)
        except (FrameError, CodecError) as exc:
            self.drop("protocol error: %s", exc)
        except Exception:
            # A bug of ours, not the peer's: contain it to this connection.
            logger.exception("%s: internal error reading a frame; dropping connection", self.label)
            self.abort()

    def eof_received(self) -> bool | None:
        if self._reader.buffered():
            self._warn(
                "mid_frame",
                "%s: closing connection: peer closed it mid-frame (%d bytes unread)",
                self.label,
                self._reader.buffered(),
            )
        return None  # close our side too

    def _may_read(self) -> bool:
        return self.is_open()

    def _on_frame(self, kind: int, request_id: int, payload: bytes) -> None:
        raise NotImplementedError

    def refuse(self, reason: str) -> None:
        """Tell the peer why, then close; the caller has already logged it."""
        self.send(encode_frame(REFUSE, 0, refuse_payload(reason)))
        self._flush()
        self.close()

    def drop(self, fmt: str, *args: object, reason: str = "protocol_error") -> None:
        """Log why (as `reason`, see `_warn`) and abort the connection."""
        self._warn(reason, "%s: closing connection: " + fmt, self.label, *args)
        self.abort()

    def _warn(self, reason: str, fmt: str, *args: object) -> None:
        """One line about a dropped connection; a server counts and rate-limits these."""
        logger.warning(fmt, *args)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()
