"""A simulated disk for power-cut tests: what survives when the power goes.

`PowerCutDisk` is a `Disk` that does every call on real files and records
it: per file, the bytes its last fsync made durable and the writes since;
the namespace and size changes (create, rename, unlink, truncate,
fallocate, growth) as one ordered journal, committed by any fsync. After
`cut()` every call fails, as on a dead machine, and `image()` builds what
the disk may hold after the cut:

* data: the durable bytes, plus a random subset of the later writes, page
  by page (4 KiB): each page kept, lost, or torn (a random subset of its
  512-byte sectors), so a later page may reach the disk and an earlier not;
* metadata ``strict``: every change up to the cut is durable (in order);
  ``journalled``: those up to the last fsync, plus a random prefix of the
  later ones.

Seeded by the caller's RNG, so an image is reproducible. Truncations are
applied to the recorded contents at once (FileStorage truncates only
zeros at a roll, or at recovery, which these tests do not cut).
"""

from __future__ import annotations

import errno
import os
import random
import stat
import threading
from dataclasses import dataclass, field
from pathlib import Path

from raftio.storage.writer import Disk

PAGE, SECTOR = 4096, 512


@dataclass(slots=True)
class _File:
    durable: bytearray = field(default_factory=bytearray)
    pending: list[tuple[int, bytes]] = field(default_factory=list)


class PowerCutDisk(Disk):
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cut = False
        self._files: dict[int, _File] = {}
        self._live: dict[tuple[int, int], int] = {}  # (st_dev, st_ino) -> file id
        self._sizes: dict[int, int] = {}  # current size of each file id
        self.journal: list[tuple[str, object, object]] = []
        self.committed = 0  # journal[:committed] is durable
        self.syncs = 0
        self.calls = 0
        self.cut_at: int | None = None  # cut() right after this many calls

    @property
    def is_cut(self) -> bool:
        return self._cut

    # --- the recorded calls --------------------------------------------------------

    def open(self, path: str, flags: int) -> int:
        with self._lock:
            self._alive()
            existed = os.path.exists(path)
            fd = super().open(path, flags)
            key = _key(os.fstat(fd))
            if not existed or key not in self._live:
                fid = len(self._files)
                self._files[fid] = _File()
                self._live[key] = fid
                self._sizes[fid] = 0
                self.journal.append(("create", path, fid))
            elif flags & os.O_TRUNC:
                self._resize(self._live[key], 0)
            return fd

    def write(self, fd: int, data: bytes | bytearray) -> None:
        with self._lock:
            self._alive()
            pos = os.lseek(fd, 0, os.SEEK_CUR)
            super().write(fd, data)
            fid = self._fid(fd)
            self._files[fid].pending.append((pos, bytes(data)))
            if pos + len(data) > self._sizes[fid]:
                self._sizes[fid] = pos + len(data)
                self.journal.append(("size", fid, pos + len(data)))

    def fdatasync(self, fd: int) -> None:
        self._sync(fd, super().fdatasync)

    def fsync(self, fd: int) -> None:
        self._sync(fd, super().fsync)

    def preallocate(self, fd: int, offset: int, length: int) -> None:
        with self._lock:
            self._alive()
            super().preallocate(fd, offset, length)
            fid = self._fid(fd)
            if offset + length > self._sizes[fid]:
                self._sizes[fid] = offset + length
                self.journal.append(("size", fid, offset + length))

    def truncate(self, fd: int, size: int) -> None:
        with self._lock:
            self._alive()
            super().truncate(fd, size)
            self._resize(self._fid(fd), size)

    def fsync_dir(self, fd: int) -> None:
        with self._lock:
            self._alive()
            super().fsync_dir(fd)
            self.committed = len(self.journal)

    def rename(self, src: str, dst: str) -> None:
        with self._lock:
            self._alive()
            super().rename(src, dst)
            self.journal.append(("rename", src, dst))

    def unlink(self, path: str) -> None:
        with self._lock:
            self._alive()
            super().unlink(path)
            self.journal.append(("unlink", path, None))

    def cut(self) -> None:
        """The power goes: nothing more reaches the disk, every later call fails."""
        with self._lock:
            self._cut = True

    # --- helpers ------------------------------------------------------------------

    def _alive(self) -> None:
        """Called under the lock before each call: fails once the power is off. With
        `cut_at`, the power goes right after that many calls (mid-batch, say between a
        write and its fdatasync)."""
        if self._cut:
            raise OSError(errno.EIO, "the power is off")
        self.calls += 1
        if self.cut_at is not None and self.calls > self.cut_at:
            self._cut = True
            raise OSError(errno.EIO, "the power is off")

    def _fid(self, fd: int) -> int:
        return self._live[_key(os.fstat(fd))]

    def _sync(self, fd: int, call: object) -> None:
        with self._lock:
            self._alive()
            call(fd)  # type: ignore[operator]
            self.syncs += 1
            f = self._files[self._fid(fd)]
            for pos, data in f.pending:
                _put(f.durable, pos, data)
            f.pending.clear()
            self.committed = len(self.journal)  # one ordered journal: a sync commits it

    def _resize(self, fid: int, size: int) -> None:
        f = self._files[fid]
        del f.durable[size:]
        f.pending = [(p, d[: max(0, size - p)]) for p, d in f.pending if p < size]
        self._sizes[fid] = size
        self.journal.append(("size", fid, size))

    # --- the image after the cut ----------------------------------------------------

    def image(self, rng: random.Random, metadata: str, src: Path, dst: Path) -> None:
        """Write into `dst` what the files under `src` may hold after the cut."""
        assert self._cut
        n = len(self.journal)
        if metadata == "journalled":
            n = rng.randint(self.committed, len(self.journal))
        names: dict[str, int] = {}
        sizes: dict[int, int] = {}
        for kind, a, b in self.journal[:n]:
            if kind == "create":
                names[str(a)] = int(b)  # type: ignore[call-overload]
                sizes[int(b)] = 0  # type: ignore[call-overload]
            elif kind == "rename":
                if str(a) in names:
                    names[str(b)] = names.pop(str(a))
            elif kind == "unlink":
                names.pop(str(a), None)
            else:
                sizes[int(a)] = int(b)  # type: ignore[call-overload]
        for path, fid in sorted(names.items()):
            if not path.startswith(str(src) + os.sep):
                continue
            out = dst / os.path.relpath(path, src)
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(self._contents(fid, sizes[fid], rng))

    def _contents(self, fid: int, size: int, rng: random.Random) -> bytes:
        f = self._files[fid]
        data = bytearray(f.durable)
        for pos, chunk in f.pending:
            start, end = pos, pos + len(chunk)
            while start < end:
                page_end = min((start // PAGE + 1) * PAGE, end)
                roll = rng.random()
                if roll < 0.45:  # the page reached the disk
                    _put(data, start, chunk[start - pos : page_end - pos])
                elif roll >= 0.8:  # torn: some of the page's sectors did
                    s = start
                    while s < page_end:
                        s_end = min((s // SECTOR + 1) * SECTOR, page_end)
                        if rng.random() < 0.5:
                            _put(data, s, chunk[s - pos : s_end - pos])
                        s = s_end
                start = page_end
        del data[size:]
        data += bytes(size - len(data))
        return bytes(data)


def _put(buf: bytearray, pos: int, data: bytes) -> None:
    if len(buf) < pos:
        buf += bytes(pos - len(buf))
    buf[pos : pos + len(data)] = data


def _key(st: os.stat_result) -> tuple[int, int]:
    assert stat.S_ISREG(st.st_mode)
    return st.st_dev, st.st_ino
