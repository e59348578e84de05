"""The in-memory Raft log: entries after a snapshot, and index/term arithmetic.

Pure data structure; no I/O. Indexes are Raft log indexes (the first entry
ever is index 1); the snapshot stands in for every entry up to and
including `snapshot_index`.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Sequence

from raftio.messages import Entry


class Log:
    """Entries after a snapshot offset.

    Invariant: entries[i] has index snapshot_index + 1 + i.
    """

    __slots__ = ("entries", "snapshot_index", "snapshot_term")

    def __init__(
        self, snapshot_index: int = 0, snapshot_term: int = 0, entries: Sequence[Entry] = ()
    ) -> None:
        self.snapshot_index = snapshot_index
        self.snapshot_term = snapshot_term
        self.entries: list[Entry] = list(entries)

    @property
    def last_index(self) -> int:
        return self.snapshot_index + len(self.entries)

    @property
    def last_term(self) -> int:
        return self.entries[-1].term if self.entries else self.snapshot_term

    def term_at(self, index: int) -> int | None:
        """Term of the entry at `index`; None if compacted away or past the end."""
        offset = index - self.snapshot_index
        if offset == 0:
            return self.snapshot_term
        if 0 < offset <= len(self.entries):
            return self.entries[offset - 1].term
        return None

    def entry(self, index: int) -> Entry:
        """The entry at `index`, which must be after the snapshot and present."""
        return self.entries[index - self.snapshot_index - 1]

    def between(self, first: int, last: int) -> list[Entry]:
        """Entries `first` through `last`, all after the snapshot and present."""
        offset = self.snapshot_index + 1
        return self.entries[first - offset : last - offset + 1]

    def slice(self, first: int, max_bytes: int) -> list[Entry]:
        """Entries from `first` on, at least one, stopping before `max_bytes` of data."""
        start = first - self.snapshot_index - 1
        assert start >= 0, "slice starts inside the snapshot"
        if start >= len(self.entries):
            return []
        taken, size = start, 0
        for e in self.entries[start:]:
            size += len(e.data)
            if size > max_bytes and taken > start:
                break
            taken += 1
        return self.entries[start:taken]

    def append(self, entries: Sequence[Entry]) -> None:
        self.entries.extend(entries)

    def truncate_from(self, index: int) -> None:
        """Drop every entry at or after `index` (which must be after the snapshot)."""
        assert index > self.snapshot_index, "cannot truncate into the snapshot"
        del self.entries[index - self.snapshot_index - 1 :]

    def compact(self, index: int, term: int) -> None:
        """Make the snapshot cover everything through `index`.

        Later entries are kept if the entry at `index` has `term`; otherwise
        the whole log is discarded (it conflicts with the snapshot).
        """
        if self.term_at(index) == term:
            # A fresh list, so the discarded entries can be freed.
            self.entries = self.entries[index - self.snapshot_index :]
        else:
            self.entries = []
        self.snapshot_index, self.snapshot_term = index, term

    # Terms never decrease along a log, so both searches below bisect.

    def first_index_of_term(self, index: int) -> int:
        """First index (after the snapshot) whose entry has the term of the entry at `index`."""
        term = self.term_at(index)
        assert term is not None
        i = bisect_left(self.entries, term, hi=index - self.snapshot_index, key=_term)
        return self.snapshot_index + 1 + i

    def last_index_of_term(self, term: int) -> int | None:
        """Last index holding an entry of `term`, or None if the log has none."""
        i = bisect_right(self.entries, term, key=_term)
        if i == 0 or self.entries[i - 1].term != term:
            return None
        return self.snapshot_index + i


def _term(entry: Entry) -> int:
    return entry.term
