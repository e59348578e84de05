"""The KV snapshot stream: `KVStateMachine`'s state as framed records, in bounded chunks.

Owns the bytes and their syntax (types, order, duplicates, counts); the
meaning, the derived state and the digest check stay in raftio.kv.machine.
Never imports the machine. Bytes in, bytes out, plus two thin async
wrappers for Node's streaming API.

    stream = MAGIC record*
    MAGIC  = b"\\xc1raftio.kv"    0xC1 is the one byte msgpack never uses, so no
                                 bytes-format snapshot (a msgpack map) starts with it
    record = size (4 bytes, big-endian, <= MAX_RECORD) + a msgpack array:

    ["kv", 3, registered, clock, max_sessions, max_result_chars, [[id, address], ...]]
    ["d", key, value]                                  one per key
    ["s", id, seq, fingerprint, code, value, used]     one per session, least recently used first
    ["l", client, seq, result]                         one per pre-session duplicate entry
    ["end", keys, sessions, legacy, digest]            the counts and KVStateMachine.digest()

Records come in that order. One record holds one key, session or entry, so
the encoder holds one chunk (CHUNK_SIZE, plus the record that crossed it)
and the decoder one record plus one chunk, whatever the state's size.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

from raftio.codec import CodecError, pack, unpack
from raftio.kv.client_table import check_table, table_items

__all__ = [
    "CHUNK_SIZE",
    "MAGIC",
    "MAX_RECORD",
    "STREAM_FORMAT",
    "Image",
    "SessionRow",
    "decode",
    "encode",
    "read_stream",
    "stream_chunks",
]

MAGIC = b"\xc1raftio.kv"
STREAM_FORMAT = 3  # after the bytes format's 1 (before sessions) and 2
CHUNK_SIZE = 256 << 10
# A record holds one key and its value: values are at most 512 KiB of UTF-8
# (MAX_VALUE) and keys arrive in client frames of at most 1 MiB.
MAX_RECORD = 8 << 20
FRAME = struct.Struct(">I")

_HEAD, _KEY, _SESSION, _LEGACY, _END = "kv", "d", "s", "l", "end"
_STAGE = {_KEY: 1, _SESSION: 2, _LEGACY: 3, _END: 4}  # the order records come in

# (seq, fingerprint, outcome code, outcome value, used): a session as it travels
SessionRow = tuple[int, bytes, str, str, int]


@dataclass(slots=True)
class Image:
    """A KV state as the stream carries it: plain values, none of the derived state."""

    registered: int
    clock: int
    max_sessions: int
    max_result_chars: int
    clients: dict[int, str]
    data: dict[str, str] = field(default_factory=dict)
    sessions: dict[str, SessionRow] = field(default_factory=dict)  # least recently used first
    legacy: dict[str, tuple[int, str | None]] = field(default_factory=dict)
    digest: str = ""  # KVStateMachine.digest() of the state


# ---------------------------------------------------------------------------- writing


def encode(image: Image) -> Iterator[bytes]:
    """The stream of `image`, in chunks of about CHUNK_SIZE bytes.

    Raises ValueError on a record over MAX_RECORD rather than write a
    snapshot that would not restore.
    """
    buffer = bytearray(MAGIC)
    for record in _records(image):
        body = pack(record)
        if len(body) > MAX_RECORD:
            raise ValueError(f"KV snapshot record of {len(body)} bytes is over {MAX_RECORD}")
        buffer += FRAME.pack(len(body))
        buffer += body
        if len(buffer) >= CHUNK_SIZE:
            yield bytes(buffer)
            buffer.clear()
    if buffer:
        yield bytes(buffer)


async def stream_chunks(image: Image) -> AsyncIterator[bytes]:
    """`encode(image)` for Node, yielding to the loop between chunks so applies go on."""
    for chunk in encode(image):
        yield chunk
        await asyncio.sleep(0)


def _records(image: Image) -> Iterator[list[Any]]:
    counters = [image.registered, image.clock, image.max_sessions, image.max_result_chars]
    yield [_HEAD, STREAM_FORMAT, *counters, table_items(image.clients)]
    for key, value in image.data.items():
        yield [_KEY, key, value]
    for session_id, row in image.sessions.items():
        yield [_SESSION, session_id, *row]
    for client, (seq, result) in image.legacy.items():
        yield [_LEGACY, client, seq, result]
    counts = [len(image.data), len(image.sessions), len(image.legacy)]
    yield [_END, *counts, image.digest]


# ---------------------------------------------------------------------------- reading


async def read_stream(chunks: AsyncIterator[bytes]) -> Image | bytes:
    """The image a stream holds or, for a snapshot in the bytes format, its bytes.

    Raises ValueError on a stream that is truncated, malformed or
    inconsistent. The bytes format (one msgpack map) cannot be read
    incrementally: it is returned whole, for `KVStateMachine.restore`.
    """
    stream = aiter(chunks)
    head = b""
    while len(head) < len(MAGIC):
        chunk = await anext(stream, None)
        if chunk is None:
            break
        head += chunk
    if not head.startswith(MAGIC):
        parts = [head]
        async for chunk in stream:
            parts.append(chunk)
        return b"".join(parts)
    decoder = Decoder()
    decoder.feed(head[len(MAGIC) :])
    async for chunk in stream:
        decoder.feed(chunk)
        await asyncio.sleep(0)
    return decoder.finish()


def decode(data: bytes) -> Image:
    """The image of a whole stream held in memory (it starts with MAGIC)."""
    if data[: len(MAGIC)] != MAGIC:
        raise ValueError("not a KV snapshot stream")
    decoder = Decoder()
    view = memoryview(data)
    for start in range(len(MAGIC), len(view), CHUNK_SIZE):  # the buffer stays a chunk
        decoder.feed(view[start : start + CHUNK_SIZE])
    return decoder.finish()


class Decoder:
    """Checks the records after MAGIC as their bytes arrive; no I/O.

    Holds at most one record's bytes beyond the data fed in one call.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._image: Image | None = None  # once the header is read
        self._stage = 0  # of the last record (_STAGE)

    def feed(self, data: bytes | memoryview) -> None:
        """Take the next bytes; raises ValueError as soon as they cannot be right."""
        buffer = self._buffer
        buffer += data
        start = 0
        while len(buffer) - start >= FRAME.size:
            self._check_not_ended()
            (size,) = FRAME.unpack_from(buffer, start)
            if size > MAX_RECORD:
                raise ValueError(f"KV snapshot record of {size} bytes is over {MAX_RECORD}")
            end = start + FRAME.size + size
            if end > len(buffer):
                break
            self._take(_record(buffer[start + FRAME.size : end]))
            start = end
        del buffer[:start]

    def finish(self) -> Image:
        """The image, once every byte was fed; raises ValueError if the stream ended early."""
        if self._buffer:
            self._check_not_ended()
        if self._image is None or self._stage != _STAGE[_END] or self._buffer:
            raise ValueError("KV snapshot stream ends early")
        return self._image

    def _check_not_ended(self) -> None:
        if self._stage == _STAGE[_END]:
            raise ValueError("KV snapshot stream goes on after its end record")

    def _take(self, record: list[Any]) -> None:
        if self._image is None:
            self._image = _header(record)
            return
        tag = record[0]
        stage = _STAGE.get(tag) if isinstance(tag, str) else None
        if stage is None:
            raise ValueError(f"KV snapshot stream: unknown record {record!r:.60}")
        if stage < self._stage:
            raise ValueError(f"KV snapshot stream: record {tag!r} out of order")
        self._stage = stage
        if tag == _KEY:
            _add_key(self._image, record)
        elif tag == _SESSION:
            _add_session(self._image, record)
        elif tag == _LEGACY:
            _add_legacy(self._image, record)
        else:
            _end(self._image, record)


def _record(body: bytearray) -> list[Any]:
    try:
        record = unpack(bytes(body))
    except CodecError as exc:
        raise ValueError(f"KV snapshot record does not decode: {exc}") from None
    if type(record) is not list or not record:
        raise ValueError(f"KV snapshot record {record!r:.60} is not a non-empty array")
    return record


def _header(record: list[Any]) -> Image:
    if len(record) != 7 or record[0] != _HEAD:
        raise ValueError(f"KV snapshot stream: {record!r:.60} is not a header")
    if type(record[1]) is not int or record[1] != STREAM_FORMAT:
        raise ValueError(f"KV snapshot stream format {record[1]!r:.20} is not {STREAM_FORMAT}")
    _, _, registered, clock, max_sessions, max_result_chars, clients = record
    if not all(type(n) is int and n >= 0 for n in record[2:6]):
        raise ValueError("KV snapshot counters are not non-negative integers")
    try:
        table = check_table(clients)
    except ValueError as exc:
        raise ValueError(f"KV snapshot clients: {exc}") from None
    return Image(registered, clock, max_sessions, max_result_chars, table)


def _add_key(image: Image, record: list[Any]) -> None:
    if len(record) != 3 or not isinstance(record[1], str) or not isinstance(record[2], str):
        raise ValueError(f"KV snapshot key {record!r:.60} is malformed")
    _, key, value = record
    if key in image.data:
        raise ValueError(f"KV snapshot repeats key {key!r:.40}")
    image.data[key] = value


def check_session(
    record: object, session_id: Any, seq: Any, fingerprint: Any, code: Any, value: Any, used: Any
) -> None:
    """ValueError unless a session's fields (of `record`, in either snapshot form) fit."""
    if (
        not isinstance(session_id, str)
        or type(seq) is not int
        or seq < 0
        or not isinstance(fingerprint, bytes)
        or not isinstance(code, str)
        or not isinstance(value, str)
        or type(used) is not int
        or used < 0
    ):
        raise ValueError(f"KV snapshot session {record!r:.60} is malformed")


def _add_session(image: Image, record: list[Any]) -> None:
    if len(record) != 7:
        raise ValueError(f"KV snapshot session {record!r:.60} is malformed")
    _, session_id, seq, fingerprint, code, value, used = record
    check_session(record, session_id, seq, fingerprint, code, value, used)
    if session_id in image.sessions:
        raise ValueError(f"KV snapshot repeats session {session_id:.40}")
    image.sessions[session_id] = (seq, fingerprint, code, value, used)


def _add_legacy(image: Image, record: list[Any]) -> None:
    if len(record) != 4:
        raise ValueError(f"KV snapshot duplicate entry {record!r:.60} is malformed")
    _, client, seq, result = record
    if (
        not isinstance(client, str)
        or type(seq) is not int
        or seq < 0
        or not (result is None or isinstance(result, str))
    ):
        raise ValueError(f"KV snapshot duplicate entry {record!r:.60} is malformed")
    if client in image.legacy:
        raise ValueError(f"KV snapshot repeats duplicate entry {client!r:.40}")
    image.legacy[client] = (seq, result)


def _end(image: Image, record: list[Any]) -> None:
    counts = [len(image.data), len(image.sessions), len(image.legacy)]
    if (
        len(record) != 5
        or not all(type(n) is int for n in record[1:4])
        or not isinstance(record[4], str)
    ):
        raise ValueError(f"KV snapshot stream: {record!r:.60} is not an end record")
    if record[1:4] != counts:
        raise ValueError(f"KV snapshot holds {counts} keys, sessions, entries; says {record[1:4]}")
    image.digest = record[4]
