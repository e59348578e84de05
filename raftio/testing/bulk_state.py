"""BulkState: a state machine whose state is large but costs no memory to hold.

For measuring what raftio itself spends moving a big snapshot: the state
is a size and a seed, and its bytes are generated on demand, so a 1 GiB
state is a few integers in memory. `snapshot_stream()` yields the bytes in
1 MiB chunks; `restore_stream()` reads them back without keeping them and
checks every byte (a bad chunk raises, as a real state machine must).

Commands: ``("grow", n)`` adds n bytes to the state, ``("put", s)`` sets a
small string register (to have writes to time while a snapshot streams).
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator
from typing import Any

__all__ = ["BulkState"]

CHUNK = 1 << 20
_HEADER = struct.Struct("<8sQQQ")  # magic, seed, size, applied
_MAGIC = b"BULKSTA1"


def block(seed: int, index: int) -> bytes:
    """The `index`-th 1 MiB block of a state with `seed` (cheap, distinct per block)."""
    stamp = struct.pack("<QQ", seed, index)
    return stamp * (CHUNK // len(stamp))


class BulkState:
    """A synthetic state of `size` bytes, streamed in and out."""

    def __init__(self, seed: int = 1) -> None:
        self.seed = seed
        self.size = 0
        self.applied = 0
        self.register = ""
        self.restores = 0

    def apply(self, command: Any) -> Any:
        self.applied += 1
        match command:
            case ("grow", int(n)) if n >= 0:
                self.size += n
                return self.size
            case ("put", str(value)):
                self.register = value
                return value
        raise ValueError(f"unknown command {command!r:.60}")

    def query(self, _key: Any = None) -> str:
        return self.register

    def snapshot_stream(self) -> AsyncIterator[bytes]:
        return self._chunks(self.seed, self.size, self.applied, self.register)

    async def _chunks(
        self, seed: int, size: int, applied: int, register: str
    ) -> AsyncIterator[bytes]:
        reg = register.encode()
        yield _HEADER.pack(_MAGIC, seed, size, applied) + struct.pack("<I", len(reg)) + reg
        for index, offset in enumerate(range(0, size, CHUNK)):
            yield block(seed, index)[: min(CHUNK, size - offset)]
            await asyncio.sleep(0)  # let proposals run between chunks

    async def restore_stream(self, chunks: AsyncIterator[bytes]) -> None:
        buf = bytearray()
        header: tuple[int, int, int, str] | None = None
        checked = 0  # state bytes verified so far
        async for chunk in chunks:
            buf += chunk
            if header is None:
                if len(buf) < _HEADER.size + 4:
                    continue
                magic, seed, size, applied = _HEADER.unpack_from(buf)
                (n,) = struct.unpack_from("<I", buf, _HEADER.size)
                if magic != _MAGIC or n > 4096:
                    raise ValueError("not a BulkState snapshot")
                if len(buf) < _HEADER.size + 4 + n:
                    continue
                register = buf[_HEADER.size + 4 : _HEADER.size + 4 + n].decode()
                header = (seed, size, applied, register)
                del buf[: _HEADER.size + 4 + n]
            while len(buf) >= CHUNK or (header is not None and checked + len(buf) == header[1]):
                if not buf:
                    break
                take = min(len(buf), CHUNK)
                expected = block(header[0], checked // CHUNK)[:take]
                if bytes(buf[:take]) != expected:
                    raise ValueError(f"BulkState snapshot damaged near byte {checked}")
                checked += take
                del buf[:take]
        if header is None or checked != header[1] or buf:
            raise ValueError("a BulkState snapshot cut short")
        self.seed, self.size, self.applied = header[0], header[1], header[2]
        self.register = header[3]
        self.restores += 1
