"""The write-ahead log format: record framing, segment and snapshot files, reading them.

Owns the bytes of a FileStorage directory: how records are encoded and
framed, how a segment is scanned, where its good records end and what lies
after them, file names. Pure functions and plain reads; knows nothing of
asyncio or of Raft's rules (`recovery.py` replays records and decides what
to repair, `writer.py` writes them; the MANIFEST is `manifest.py`'s).
Format (also in docs/storage.md):

    LOCK                          flock(LOCK_EX|LOCK_NB) by the open FileStorage
    MANIFEST                      the durable watermark (manifest.py)
    wal-<seq:016x>.log            segments, seq = 1, 2, 3, ... in write order
    snap-<index:016x>-<term:016x>.snap   snapshot files
    quarantine/                   bytes cut from the log by a repair, kept for a post-mortem

A segment is a sequence of frames::

    u32 length n | u32 crc32(body) | u32 crc32(the 8 bytes before) | body (n bytes)

little-endian; crc32 is zlib's (CRC-32/ISO-HDLC). The header's own
checksum means a flipped length is never mistaken for a torn tail. The
body is a msgpack array (codec.pack) whose first item is the record kind:

    [0, seq, term, vote, snap_index, snap_term, snap_file, [[t, d], ...], config, crc]
                                              checkpoint
    [1, seq, prev_size]                       segment start (bytes in segment seq - 1)
    [2, term, vote]                           hard state
    [3, first_index, [[t, d], ...]]           entries (replace the log from first_index)
    [4, first_index]                          truncation (drop entries >= first_index)
    [5, index, term, snap_file, config, crc]  snapshot marker
    [6, offset]                               watermark: bytes [0, offset) of this segment
                                              were fdatasynced before this record was written

The first record of a segment is a checkpoint (a whole state: the first
segment, and each compaction) or a segment start (a size roll). Replay
starts at the newest checkpoint segment. A snapshot file is a 36-byte
header ``b"RAFTSNP1" | u64 index | u64 term | u64 length | u32 crc32(data)``
then the data. A checkpoint's and a marker's trailing fields may be absent
(older directories): the snapshot's configuration (b"": the bootstrap one)
and the crc32 of its data, which recovery compares with the file's.
"""

from __future__ import annotations

import os
import re
import struct
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from raftio import codec
from raftio.messages import Entry
from raftio.storage.base import StorageCorruptError, StorageError

HEADER_SIZE = 12
_HEAD = struct.Struct("<II")  # body length, crc32(body)
_U32 = struct.Struct("<I")
_MAX_BODY = 0xFFFF_FFFF

_CHECKPOINT, _SEGMENT, _HARD_STATE, _ENTRIES, _TRUNCATE, _SNAPSHOT, _WATERMARK = range(7)

_SEGMENT_RE = re.compile(r"wal-([0-9a-f]{16})\.log")
_SNAPSHOT_RE = re.compile(r"snap-[0-9a-f]{16}-[0-9a-f]{16}\.snap")
_SNAP_HEAD = struct.Struct("<8sQQQI")  # magic, index, term, data length, crc32(data)
SNAPSHOT_HEADER_SIZE = _SNAP_HEAD.size
_SNAP_MAGIC = b"RAFTSNP1"
LOCK_NAME = "LOCK"


# --- records -----------------------------------------------------------------


@dataclass(slots=True, frozen=True)
class Checkpoint:
    """A whole durable state; starts a segment that replay may begin at."""

    seq: int
    current_term: int
    voted_for: int | None
    snapshot_index: int
    snapshot_term: int
    snapshot_file: str
    # entries[i] has index snapshot_index + 1 + i
    entries: Sequence[Entry]
    # The configuration at the snapshot (raftio.membership's entry format; b"": the bootstrap).
    snapshot_config: bytes = b""
    # crc32 of the snapshot's data; NO_CHECKSUM when not recorded (older directories).
    snapshot_checksum: int = -1


NO_CHECKSUM = -1


@dataclass(slots=True, frozen=True)
class SegmentStart:
    seq: int
    prev_size: int  # the previous segment's length: a segment cut short is caught


@dataclass(slots=True, frozen=True)
class HardState:
    current_term: int
    voted_for: int | None


@dataclass(slots=True, frozen=True)
class Entries:
    first_index: int
    entries: list[Entry]


@dataclass(slots=True, frozen=True)
class Truncate:
    first_index: int


@dataclass(slots=True, frozen=True)
class SnapshotMark:
    index: int
    term: int
    file: str
    config: bytes = b""  # the configuration at `index` (b"": the bootstrap one)
    checksum: int = NO_CHECKSUM  # crc32 of the snapshot's data


@dataclass(slots=True, frozen=True)
class Watermark:
    offset: int  # bytes of this segment durable before this record was written


Record = Checkpoint | SegmentStart | HardState | Entries | Truncate | SnapshotMark | Watermark


def frame_into(buf: bytearray, body: bytes) -> None:
    """Append a record body, with its 12-byte header, to `buf` (the hot path: no copies)."""
    if len(body) > _MAX_BODY:
        raise StorageError(f"a record of {len(body)} bytes does not fit a 32-bit length")
    head = _HEAD.pack(len(body), zlib.crc32(body))
    buf += head
    buf += _U32.pack(zlib.crc32(head))
    buf += body


def frame(body: bytes) -> bytes:
    """A record body with its 12-byte header."""
    buf = bytearray()
    frame_into(buf, body)
    return bytes(buf)


def hard_state_body(current_term: int, voted_for: int | None) -> bytes:
    return codec.pack([_HARD_STATE, current_term, voted_for])


def entries_body(first_index: int, entries: Sequence[Entry]) -> bytes:
    return codec.pack([_ENTRIES, first_index, [[e.term, e.data] for e in entries]])


def truncate_body(first_index: int) -> bytes:
    return codec.pack([_TRUNCATE, first_index])


def snapshot_mark_body(
    index: int, term: int, file: str, config: bytes = b"", checksum: int = NO_CHECKSUM
) -> bytes:
    return codec.pack([_SNAPSHOT, index, term, file, *_snapshot_tail(config, checksum)])


def _snapshot_tail(config: bytes, checksum: int) -> list[bytes | int]:
    # Trailing fields left out when empty, as older versions wrote them.
    if checksum != NO_CHECKSUM:
        return [config, checksum]
    return [config] if config else []


def watermark_body(offset: int) -> bytes:
    return codec.pack([_WATERMARK, offset])


def encode_entries(first_index: int, entries: Sequence[Entry]) -> bytes:
    return frame(entries_body(first_index, entries))


def encode_segment_start(seq: int, prev_size: int) -> bytes:
    return frame(codec.pack([_SEGMENT, seq, prev_size]))


def encode_checkpoint(cp: Checkpoint) -> bytes:
    entries = [[e.term, e.data] for e in cp.entries]
    return frame(
        codec.pack([
            _CHECKPOINT, cp.seq, cp.current_term, cp.voted_for,
            cp.snapshot_index, cp.snapshot_term, cp.snapshot_file, entries,
            *_snapshot_tail(cp.snapshot_config, cp.snapshot_checksum),
        ])
    )  # fmt: skip


_SHAPES: dict[int, tuple[type | tuple[type, ...], ...]] = {
    _CHECKPOINT: (int, int, (int, type(None)), int, int, str, list, bytes, int),
    _SEGMENT: (int, int),
    _HARD_STATE: (int, (int, type(None))),
    _ENTRIES: (int, list),
    _TRUNCATE: (int,),
    _SNAPSHOT: (int, int, str, bytes, int),
    _WATERMARK: (int,),
}

# Trailing fields a record may leave out: the snapshot's configuration (added
# with membership changes) and its crc32 (added with snapshot files).
_OPTIONAL_FIELDS = {_CHECKPOINT: 2, _SNAPSHOT: 2}


def decode_body(body: bytes) -> Record:
    """Decode and type-check one record body; raises ValueError naming the problem."""
    obj = codec.unpack(body)
    if type(obj) is not list or not obj or type(obj[0]) is not int or obj[0] not in _SHAPES:
        raise ValueError(f"unknown record kind {obj!r:.40}")
    kind, fields = obj[0], obj[1:]
    shape = _SHAPES[kind]
    optional = _OPTIONAL_FIELDS.get(kind, 0)
    if not len(shape) - optional <= len(fields) <= len(shape):
        raise ValueError(f"record kind {kind} needs {len(shape)} fields, got {len(fields)}")
    for value, want in zip(fields, shape, strict=False):
        if type(value) not in (want if isinstance(want, tuple) else (want,)):
            raise ValueError(f"record kind {kind}: unexpected {type(value).__name__} field")
    return _build(kind, fields)


def _build(kind: int, f: list[Any]) -> Record:
    if kind in _OPTIONAL_FIELDS:
        _check_crc(f, len(_SHAPES[kind]) - 1)
    if kind == _CHECKPOINT:
        return Checkpoint(f[0], f[1], f[2], f[3], f[4], f[5], _entries(f[6]), *f[7:])
    if kind == _SEGMENT:
        return SegmentStart(f[0], f[1])
    if kind == _HARD_STATE:
        return HardState(f[0], f[1])
    if kind == _ENTRIES:
        return Entries(f[0], _entries(f[1]))
    if kind == _TRUNCATE:
        return Truncate(f[0])
    if kind == _WATERMARK:
        return Watermark(f[0])
    return SnapshotMark(f[0], f[1], f[2], *f[3:])


def _check_crc(fields: list[Any], at: int) -> None:
    if len(fields) > at and not 0 <= fields[at] <= 0xFFFF_FFFF:
        raise ValueError(f"snapshot checksum {fields[at]} is not a crc32")


def _entries(items: list[Any]) -> list[Entry]:
    out = []
    for item in items:
        if type(item) is not list or len(item) != 2:
            raise ValueError("an entry must be [term, data]")
        term, data = item
        if type(term) is not int or type(data) is not bytes:
            raise ValueError("an entry must be [term: int, data: bytes]")
        out.append(Entry(term, data))
    return out


# --- reading segments ----------------------------------------------------------


@dataclass(slots=True)
class Tail:
    """Where the good records of a segment end; `torn` says why bytes after `end` are dropped."""

    end: int
    torn: str | None = None


def corrupt(path: str, offset: int, what: str) -> StorageCorruptError:
    return StorageCorruptError(f"{path} at offset {offset}: {what}")


def _next_frame(path: str, data: bytes, off: int, *, last: bool) -> bytes | Tail:
    """The body of the frame at `off`, or the Tail if the log ends at `off`.

    The newest segment is preallocated, so its records are followed by
    zeros: zeros from `off` on are its clean end. Torn (a crash mid-write)
    is allowed only at the end of the newest segment: a cut header, a body
    cut short, or a final record whose checksum fails with nothing but
    zeros after it. Anything else is corruption.
    """
    size = len(data)
    if size - off < HEADER_SIZE:
        if data.count(0, off) == size - off:
            return Tail(off) if last else _torn(path, off, last, "zero-filled tail")
        return _torn(path, off, last, f"{size - off}-byte partial record header")
    length, body_crc = _HEAD.unpack_from(data, off)
    if zlib.crc32(data[off : off + 8]) != _U32.unpack_from(data, off + 8)[0]:
        if data.count(0, off) == size - off:
            return Tail(off) if last else _torn(path, off, last, "zero-filled tail")
        if data.count(0, off + HEADER_SIZE) == size - off - HEADER_SIZE:
            return _torn(path, off, last, "final record header cut short")
        raise corrupt(path, off, "record header checksum mismatch")
    end = off + HEADER_SIZE + length
    if end > size:
        have = size - off - HEADER_SIZE
        return _torn(path, off, last, f"record of {length} bytes cut short after {have}")
    body = data[off + HEADER_SIZE : end]
    if zlib.crc32(body) != body_crc:
        if data.count(0, end) == size - end:
            return _torn(path, off, last, "final record fails its checksum")
        raise corrupt(path, off, "record checksum mismatch, and valid-looking data follows")
    return body


def _torn(path: str, off: int, last: bool, why: str) -> Tail:
    if not last:
        raise corrupt(path, off, f"{why} in a segment that is not the newest")
    return Tail(off, why)


def scan_segment(path: str, data: bytes, *, on_record: Callable[[Record, int], None]) -> Tail:
    """Decode every record of a segment that is not the newest, calling `on_record(record, offset)`.

    Such a segment was whole and synced before the next one was started, so
    it must hold nothing but records. A ValueError from decoding or from
    `on_record` (a record that contradicts the log) becomes a
    StorageCorruptError naming file and offset.
    """
    off = 0
    while off < len(data):
        body = _next_frame(path, data, off, last=False)
        if isinstance(body, Tail):
            return body
        try:
            on_record(decode_body(body), off)
        except (ValueError, codec.CodecError) as exc:
            raise corrupt(path, off, str(exc)) from None
        off += HEADER_SIZE + len(body)
    return Tail(off)


@dataclass(slots=True)
class Newest:
    """The newest segment read as far as its records go, and what lies after them."""

    records: list[tuple[int, Record]]  # (offset, record): the unbroken run from offset 0
    end: int  # where that run ends
    problem: str | None  # why the bytes at `end` are no record; None: only zeros follow
    data_end: int  # one past the last non-zero byte: a cut at `end` moves [end, data_end) aside
    later: list[tuple[int, Record]]  # whole, checksummed records found after `end`


def scan_newest(path: str, data: bytes) -> Newest:
    """Read the newest segment's records up to the first frame that is not one.

    Zeros from a record boundary to the end are its clean end (preallocated
    space). Anything else is described in `problem`, with the whole records
    found after it in `later` (a power cut may write back a later page and
    lose an earlier one): recovery decides, with the durable watermark,
    whether to cut or to refuse. A checksummed record that does not decode
    is corruption at once.
    """
    records: list[tuple[int, Record]] = []
    off, size = 0, len(data)
    while off < size:
        body = _frame_at(data, off)
        if isinstance(body, str):
            if data.count(0, off) == size - off:
                break  # the clean end
            data_end = len(data.rstrip(b"\0"))
            return Newest(records, off, body, data_end, _resync(data, off + 1, data_end))
        try:
            records.append((off, decode_body(body)))
        except (ValueError, codec.CodecError) as exc:
            raise corrupt(path, off, str(exc)) from None
        off += HEADER_SIZE + len(body)
    return Newest(records, off, None, off, [])


def _frame_at(data: bytes, off: int) -> bytes | str:
    """The body of the whole, checksummed frame at `off`, or what is wrong there."""
    size = len(data)
    if size - off < HEADER_SIZE:
        return f"{size - off}-byte partial record header at the end of the file"
    if data.count(0, off, off + HEADER_SIZE) == HEADER_SIZE:
        resumes = size - len(data[off:].lstrip(b"\0"))
        return f"zeros where a record should start, then data at offset {resumes}"
    length, body_crc = _HEAD.unpack_from(data, off)
    if zlib.crc32(data[off : off + 8]) != _U32.unpack_from(data, off + 8)[0]:
        return "record header checksum mismatch"
    end = off + HEADER_SIZE + length
    if end > size:
        have = size - off - HEADER_SIZE
        return f"record of {length} bytes cut short by the end of the file after {have}"
    body = data[off + HEADER_SIZE : end]
    if zlib.crc32(body) == body_crc:
        return body
    zeros = length - len(body.rstrip(b"\0"))
    if zeros and data.count(0, end) == size - end:
        return f"record of {length} bytes torn: its last {zeros} bytes are zeros"
    return f"a whole record of {length} bytes fails its checksum"


# A record body is a msgpack fixarray of 2-8 items whose first item is the kind.
_BODY_START = re.compile(rb"[\x92-\x98][\x00-\x06]")


def _resync(data: bytes, start: int, stop: int) -> list[tuple[int, Record]]:
    """Whole, checksummed, decodable records in data[start:stop], found by searching."""
    found: list[tuple[int, Record]] = []
    resume = start
    for match in _BODY_START.finditer(data, start + HEADER_SIZE, stop):
        off = match.start() - HEADER_SIZE
        if off < resume:
            continue
        body = _frame_at(data, off)
        if isinstance(body, str):
            continue
        try:
            found.append((off, decode_body(body)))
        except (ValueError, codec.CodecError):
            continue
        resume = off + HEADER_SIZE + len(body)
    return found


def describe(records: Sequence[tuple[int, Record]]) -> str:
    """What a list of records held, for a log line: kinds, counts and the entries' indexes."""
    if not records:
        return "no whole record"
    kinds: dict[str, int] = {}
    low = high = 0
    for _, record in records:
        kinds[type(record).__name__] = kinds.get(type(record).__name__, 0) + 1
        if isinstance(record, Entries | Checkpoint) and record.entries:
            first = record.first_index if isinstance(record, Entries) else record.snapshot_index + 1
            last = first + len(record.entries) - 1
            low = min(low, first) if low else first
            high = max(high, last)
    text = ", ".join(f"{n} {kind}" for kind, n in kinds.items())
    return f"{text}; entries {low}-{high}" if low else text


def read_first(path: str, *, last: bool) -> Record | None:
    """The first record of a segment; None if the newest segment is torn there."""
    with open(path, "rb") as f:
        data = f.read() if last else f.read(HEADER_SIZE)
        if not last and len(data) == HEADER_SIZE:
            # Never trust an unchecked length for an allocation: cap it at the file size.
            size = os.fstat(f.fileno()).st_size
            data += f.read(min(_HEAD.unpack_from(data)[0], size - HEADER_SIZE))
    body = _next_frame(path, data, 0, last=last)
    if isinstance(body, Tail):
        return None
    try:
        return decode_body(body)
    except (ValueError, codec.CodecError) as exc:
        raise corrupt(path, 0, str(exc)) from None


@dataclass(slots=True)
class Listing:
    segments: list[int]  # seqs, ascending
    snapshots: list[str]
    temporary: list[str]


def list_directory(directory: str) -> Listing:
    listing = Listing([], [], [])
    for name in os.listdir(directory):
        if m := _SEGMENT_RE.fullmatch(name):
            listing.segments.append(int(m.group(1), 16))
        elif _SNAPSHOT_RE.fullmatch(name):
            listing.snapshots.append(name)
        elif name.endswith(".tmp"):
            listing.temporary.append(name)
    listing.segments.sort()
    return listing


def segment_name(seq: int) -> str:
    return f"wal-{seq:016x}.log"


def snapshot_name(index: int, term: int) -> str:
    return f"snap-{index:016x}-{term:016x}.snap"


def read_snapshot_file(path: str, index: int, term: int) -> bytes:
    """The data of a snapshot file, checked against the marker that names it (whole, in memory)."""
    check_snapshot_file(path, index, term)
    with open(path, "rb") as f:
        f.seek(_SNAP_HEAD.size)
        return f.read()


def check_snapshot_file(path: str, index: int, term: int) -> tuple[int, int]:
    """(size, crc32) of a snapshot file's data, checked in 1 MiB blocks against its header
    and the marker that names it (index, term)."""
    try:
        f = open(path, "rb")  # noqa: SIM115 (closed by the `with` below; only open may fail here)
    except FileNotFoundError:
        raise StorageCorruptError(f"{path}: snapshot file named by the log is missing") from None
    with f:
        head = f.read(_SNAP_HEAD.size)
        if len(head) < _SNAP_HEAD.size:
            raise corrupt(
                path, len(head), f"snapshot file ends after {len(head)} bytes, in its header"
            )
        magic, s_index, s_term, length, crc = _SNAP_HEAD.unpack(head)
        if magic != _SNAP_MAGIC:
            raise corrupt(path, 0, "not a raftio snapshot file")
        if (s_index, s_term) != (index, term):
            raise corrupt(path, 8, f"holds {s_index}@T{s_term}, the log says {index}@T{term}")
        running, size = 0, 0
        while block := f.read(1 << 20):
            running = zlib.crc32(block, running)
            size += len(block)
    if length != size or running != crc:
        raise corrupt(path, _SNAP_HEAD.size, "snapshot data fails its checksum")
    return size, crc


def snapshot_header(index: int, term: int, data: bytes) -> bytes:
    """The 36-byte header written before a snapshot's data."""
    return snapshot_header_for(index, term, len(data), zlib.crc32(data))


def snapshot_header_for(index: int, term: int, size: int, checksum: int) -> bytes:
    """The header of a snapshot whose data was streamed (size and crc32 known at the end)."""
    return _SNAP_HEAD.pack(_SNAP_MAGIC, index, term, size, checksum)
