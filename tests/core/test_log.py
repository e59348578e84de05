"""Log arithmetic across the snapshot boundary (§5.3 log matching, §7 compaction).

The concrete tables use one log, ``SNAP``: a snapshot through index 5 of
term 2, then entries 6..9 of terms 2, 3, 3, 5, each holding 3 bytes. The
hypothesis tests compare every operation with a naive model: a plain list
of (index, term, data) that is searched linearly.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from raftio.log import Log
from raftio.messages import Entry

from .helpers import PROPERTY

SNAP_TERMS = (2, 3, 3, 5)  # indexes 6..9


def snap_log() -> Log:
    return Log(5, 2, [Entry(term, b"abc") for term in SNAP_TERMS])


def test_empty_log() -> None:
    """§5.3: a fresh log is empty: index 0 has term 0 and nothing follows it."""
    log = Log()

    assert (log.last_index, log.last_term) == (0, 0)
    assert log.term_at(0) == 0
    assert log.term_at(1) is None
    assert log.slice(1, 100) == []
    assert log.last_index_of_term(0) is None


def test_last_index_and_term_after_snapshot() -> None:
    """§7: with no entries after it, the snapshot supplies the last index and term."""
    assert (snap_log().last_index, snap_log().last_term) == (9, 5)
    assert (Log(5, 2).last_index, Log(5, 2).last_term) == (5, 2)


@pytest.mark.parametrize(
    ("index", "term"),
    [
        # compacted away: unknown
        (0, None),
        (4, None),
        # the snapshot's own index still has a term (§7 lastIncludedTerm)
        (5, 2),
        # entries after the snapshot
        (6, 2),
        (7, 3),
        (9, 5),
        # past the end
        (10, None),
    ],
)
def test_term_at(index: int, term: int | None) -> None:
    """§7: term_at answers for the snapshot index and the entries after it only."""
    assert snap_log().term_at(index) == term


@pytest.mark.parametrize(
    ("first", "max_bytes", "expected"),
    [
        # the budget is counted in command bytes (3 per entry)
        (6, 100, [6, 7, 8, 9]),
        (6, 12, [6, 7, 8, 9]),
        (6, 11, [6, 7, 8]),
        (6, 6, [6, 7]),
        (7, 9, [7, 8, 9]),
        # at least one entry even if it alone exceeds the budget
        (6, 2, [6]),
        (6, 0, [6]),
        (9, 1, [9]),
        # nothing after the last index
        (10, 100, []),
    ],
)
def test_slice(first: int, max_bytes: int, expected: list[int]) -> None:
    """§5.3: a leader sends entries from next_index on, batched by a byte budget."""
    log = snap_log()

    got = log.slice(first, max_bytes)

    assert got == [log.entry(i) for i in expected]


@pytest.mark.parametrize(
    ("index", "remaining"),
    [
        # truncating at the first entry after the snapshot empties the log
        (6, []),
        (7, [2]),
        (9, [2, 3, 3]),
        # one past the end: nothing to drop
        (10, [2, 3, 3, 5]),
    ],
)
def test_truncate_from(index: int, remaining: list[int]) -> None:
    """§5.3: a conflicting entry and all that follow it are deleted; the snapshot stays."""
    log = snap_log()

    log.truncate_from(index)

    assert [e.term for e in log.entries] == remaining
    assert (log.snapshot_index, log.snapshot_term) == (5, 2)
    assert log.last_index == 5 + len(remaining)


@pytest.mark.parametrize(
    ("index", "term", "remaining"),
    [
        # the entry at index has the snapshot's term: the suffix is kept
        (6, 2, [3, 3, 5]),
        (7, 3, [3, 5]),
        (8, 3, [5]),
        (9, 5, []),
        # the same snapshot again: nothing changes
        (5, 2, [2, 3, 3, 5]),
        # the entry at index has another term: the whole log conflicts and goes
        (7, 4, []),
        (9, 6, []),
        # a snapshot past the end of the log
        (12, 6, []),
    ],
)
def test_compact(index: int, term: int, remaining: list[int]) -> None:
    """§7: keep the entries after the snapshot only if the log agrees with it there."""
    log = snap_log()

    log.compact(index, term)

    assert (log.snapshot_index, log.snapshot_term) == (index, term)
    assert [e.term for e in log.entries] == remaining
    assert log.last_index == index + len(remaining)
    if remaining:
        assert log.term_at(index + 1) == remaining[0]


@pytest.mark.parametrize(
    ("index", "first"),
    [
        # term 2 started inside the snapshot: the first index after it is reported
        (6, 6),
        # term 3 spans 7..8
        (7, 7),
        (8, 7),
        (9, 9),
    ],
)
def test_first_index_of_term(index: int, first: int) -> None:
    """Lab 2 fast backup: XIndex is the first index of the conflicting entry's term."""
    assert snap_log().first_index_of_term(index) == first


@pytest.mark.parametrize(
    ("term", "last"),
    [
        (2, 6),
        (3, 8),
        (5, 9),
        # terms the entries do not hold: below, between, above
        (1, None),
        (4, None),
        (6, None),
    ],
)
def test_last_index_of_term(term: int, last: int | None) -> None:
    """Lab 2 fast backup: the leader's last entry of XTerm, if it has any."""
    assert snap_log().last_index_of_term(term) == last


# --- properties against a naive model -----------------------------------------


@dataclass
class Model:
    """The log as a list of (index, term, data), searched linearly."""

    snapshot_index: int
    snapshot_term: int
    rows: list[tuple[int, int, bytes]]

    def log(self) -> Log:
        return Log(self.snapshot_index, self.snapshot_term, [Entry(t, d) for _, t, d in self.rows])

    @property
    def last_index(self) -> int:
        return self.rows[-1][0] if self.rows else self.snapshot_index

    def term_at(self, index: int) -> int | None:
        if index == self.snapshot_index:
            return self.snapshot_term
        return next((t for i, t, _ in self.rows if i == index), None)


@st.composite
def models(draw: st.DrawFn) -> Model:
    snapshot_index = draw(st.integers(0, 30))
    snapshot_term = draw(st.integers(1, 4)) if snapshot_index else 0
    term = max(snapshot_term, 1)
    rows = []
    for i, step in enumerate(draw(st.lists(st.integers(0, 2), max_size=25))):
        term += step
        rows.append((snapshot_index + 1 + i, term, draw(st.binary(max_size=6))))
    return Model(snapshot_index, snapshot_term, rows)


@PROPERTY
@given(models())
def test_property_index_arithmetic(model: Model) -> None:
    """§5.3/§7: last_index, last_term, term_at and entry agree with the model everywhere."""
    log = model.log()

    assert log.last_index == model.last_index
    assert log.last_term == model.term_at(model.last_index)
    for index in range(model.last_index + 3):
        assert log.term_at(index) == model.term_at(index)
    for index, term, data in model.rows:
        assert log.entry(index) == Entry(term, data)


@PROPERTY
@given(models(), st.data())
def test_property_slice(model: Model, data: st.DataObject) -> None:
    """§5.3: slice takes entries while their bytes fit the budget, at least one."""
    log = model.log()
    first = data.draw(st.integers(model.snapshot_index + 1, model.last_index + 1))
    max_bytes = data.draw(st.integers(0, 20))

    got = log.slice(first, max_bytes)

    want: list[Entry] = []
    size = 0
    for index, term, payload in model.rows:
        if index < first:
            continue
        size += len(payload)
        if want and size > max_bytes:
            break
        want.append(Entry(term, payload))
    assert got == want


@PROPERTY
@given(models(), st.data())
def test_property_truncate_from(model: Model, data: st.DataObject) -> None:
    """§5.3: truncate_from(i) keeps exactly the entries before i."""
    log = model.log()
    index = data.draw(st.integers(model.snapshot_index + 1, model.last_index + 1))

    log.truncate_from(index)

    assert log.entries == [Entry(t, d) for i, t, d in model.rows if i < index]
    assert log.last_index == min(index - 1, model.last_index)


@PROPERTY
@given(models(), st.data())
def test_property_compact(model: Model, data: st.DataObject) -> None:
    """§7: compact keeps the suffix iff the log has the snapshot's term at its index."""
    log = model.log()
    index = data.draw(st.integers(model.snapshot_index, model.last_index + 2))
    term = data.draw(st.integers(max(model.snapshot_term, 1), 9))
    keep = model.term_at(index) == term

    log.compact(index, term)

    assert (log.snapshot_index, log.snapshot_term) == (index, term)
    suffix = [Entry(t, d) for i, t, d in model.rows if i > index]
    assert log.entries == (suffix if keep else [])


@PROPERTY
@given(models(), st.data())
def test_property_first_index_of_term(model: Model, data: st.DataObject) -> None:
    """Lab 2 fast backup: bisect finds the first index after the snapshot of a term."""
    if not model.rows:
        return
    log = model.log()
    index = data.draw(st.integers(model.snapshot_index + 1, model.last_index))
    term = model.term_at(index)

    first = index
    while first - 1 > model.snapshot_index and model.term_at(first - 1) == term:
        first -= 1
    assert log.first_index_of_term(index) == first


@PROPERTY
@given(models(), st.integers(0, 12))
def test_property_last_index_of_term(model: Model, term: int) -> None:
    """Lab 2 fast backup: bisect finds the last entry of a term, None if there is none."""
    log = model.log()

    want = max((i for i, t, _ in model.rows if t == term), default=None)
    assert log.last_index_of_term(term) == want
