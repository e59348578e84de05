"""The MANIFEST: a durable lower bound on how far a FileStorage's log reaches.

Owns the bytes of the ``MANIFEST`` file and reading them back. A *mark*
``(segment seq, offset)`` says: segment `seq` exists and its first `offset`
bytes of records were fdatasynced before the mark was written. Recovery
refuses to start when the log ends short of its durable watermark (the
newest mark, or a watermark record in the WAL past it; see `recovery.py`),
and repairs only what lies beyond it. Pure functions and plain reads;
writing is `writer.py`'s. Format (also in docs/storage.md)::

    MANIFEST   1024 bytes: two 512-byte slots, one per disk sector
    slot       b"RAFTMAN1" | u64 generation | u64 seq | u64 offset | zeros to byte 508
               | u32 crc32(bytes 0..507): every byte of the sector is checked

little-endian. Generation g is written into slot ``g % 2``, in place, then
the file is fdatasynced: a write torn by a power cut spoils at most the slot
being written, and the other still holds the previous mark. The slot with
the highest generation that passes its checksum is the mark; an all-zero
slot has never been written.
"""

from __future__ import annotations

import os
import struct
import zlib
from dataclasses import dataclass

from raftio.storage.base import StorageCorruptError

MANIFEST_NAME = "MANIFEST"
SLOT_SIZE = 512
FILE_SIZE = 2 * SLOT_SIZE
_SLOT = struct.Struct("<8sQQQ")  # magic, generation, segment seq, offset
_CRC = struct.Struct("<I")
_MAGIC = b"RAFTMAN1"
_CHECKED = SLOT_SIZE - _CRC.size  # the checksum covers everything before it


@dataclass(slots=True, frozen=True)
class Mark:
    """Segment `seq` holds at least `offset` durable bytes of records (seq 0: nothing yet)."""

    generation: int
    seq: int
    offset: int


def encode_slot(mark: Mark) -> bytes:
    """The 512 bytes of the slot that holds `mark`; it goes at `slot_offset(mark.generation)`."""
    head = _SLOT.pack(_MAGIC, mark.generation, mark.seq, mark.offset)
    body = head + bytes(_CHECKED - len(head))
    return body + _CRC.pack(zlib.crc32(body))


def slot_offset(generation: int) -> int:
    return (generation % 2) * SLOT_SIZE


def empty_file() -> bytes:
    """A new MANIFEST: generation 1 (nothing durable yet) in its slot, the other one zeros."""
    first = Mark(1, 0, 0)
    data = bytearray(FILE_SIZE)
    at = slot_offset(first.generation)
    data[at : at + SLOT_SIZE] = encode_slot(first)
    return bytes(data)


@dataclass(slots=True)
class Manifest:
    """What a MANIFEST holds: the newest valid mark, and what was wrong with the other slot."""

    mark: Mark
    damaged: list[str]  # one line per slot that is neither valid nor never written


def read(path: str) -> Manifest | None:
    """The MANIFEST at `path`; None if there is none. Raises StorageCorruptError if no slot
    passes its checksum."""
    try:
        with open(path, "rb") as f:
            data = f.read(FILE_SIZE)
    except FileNotFoundError:
        return None
    marks: list[Mark] = []
    damaged: list[str] = []
    zeroed: list[int] = []
    if len(data) < FILE_SIZE:  # always written whole (a tmp file renamed into place)
        damaged.append(f"{path} at offset {len(data)}: the file ends short of {FILE_SIZE} bytes")
    for at in (0, SLOT_SIZE):
        slot = data[at : at + SLOT_SIZE]
        problem = _check(slot)
        if problem is None:
            marks.append(_decode(slot))
        elif slot.count(0) == len(slot):
            zeroed.append(at)
        else:
            damaged.append(f"{path} at offset {at}: {problem}")
    # Only a new MANIFEST (generation 1) has a slot never written; later, zeros are damage.
    if any(m.generation > 1 for m in marks):
        damaged += [f"{path} at offset {at}: slot is all zeros" for at in zeroed]
    if not marks:
        why = damaged[0].split(": ", 1)[1] if damaged else "both slots are empty"
        raise StorageCorruptError(f"{path} at offset 0: no valid slot ({why})")
    return Manifest(max(marks, key=lambda m: m.generation), damaged)


def _check(slot: bytes) -> str | None:
    if len(slot) < SLOT_SIZE:
        return f"slot ends after {len(slot)} of its {SLOT_SIZE} bytes"
    if zlib.crc32(slot[:_CHECKED]) != _CRC.unpack_from(slot, _CHECKED)[0]:
        return "slot fails its checksum"
    if slot[:8] != _MAGIC:
        return "not a raftio MANIFEST slot"
    return None


def _decode(slot: bytes) -> Mark:
    _magic, generation, seq, offset = _SLOT.unpack_from(slot)
    return Mark(generation, seq, offset)


def path_in(directory: str) -> str:
    return os.path.join(directory, MANIFEST_NAME)
