"""What `check()` returns: `CheckResult`, its `Violation`s, and their text.

A violation is reported at the deepest point of the search: the longest
linearizable prefix found, the operation that cannot be placed after it, the
window of operations involved, and a sentence saying why.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

from raftio.testing.lincheck.history import Operation, call_key, fmt_time, plural, return_key
from raftio.testing.lincheck.model import Model

__all__ = ["CheckResult", "Violation", "timeline"]

_LABELS = "123456789abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ"


@dataclass(frozen=True, slots=True)
class Violation:
    """One part (key) with no valid order.

    Attributes:
        key: the part's key.
        stuck: the operation that cannot be placed after `prefix`.
        prefix: the longest linearizable prefix the search found, in order.
        state: the model state after `prefix`, described.
        window: the operations involved, by call time (including `stuck`).
        reason: one sentence: why no order works.
    """

    key: Hashable
    stuck: Operation
    prefix: tuple[Operation, ...]
    state: str
    window: tuple[Operation, ...]
    reason: str
    model: Model[Any] = field(repr=False, compare=False)

    def explain(self) -> str:
        """A multi-line report: the reason, the window, the prefix's end, a timeline."""
        describe = self.model.describe
        lines = [
            f"key {self.key!r}: {describe(self.stuck)} cannot be placed",
            f"  why: {self.reason}",
        ]
        lines.append(f"  operations involved ({len(self.window)}), by call time:")
        for label, op in zip(_LABELS, self.window, strict=False):
            mark = "   <- cannot be placed" if op is self.stuck else ""
            lines.append(
                f"    {label}  {_span(op):<22} client {op.client_id:<4} {describe(op)}{mark}"
            )
        tail = self.prefix[-8:]
        shown = "in order" if len(tail) == len(self.prefix) else f"the last {len(tail)}"
        lines.append(
            f"  longest linearizable prefix: {plural(len(self.prefix), 'operation')}, "
            f"leaving state {self.state}" + (f"; {shown}:" if tail else "")
        )
        lines += [f"    {_span(op):<22} client {op.client_id:<4} {describe(op)}" for op in tail]
        lines.append("  timeline ([ call, ] return, > outcome unknown):")
        lines += ["    " + row for row in timeline(self.window, self.stuck)]
        return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class CheckResult:
    """The verdict of `check()`.

    Attributes:
        ok: True if linearizable, False if not, None if the time ran out first
            (with no violation found in the parts checked so far).
        violations: one per key with no valid order (empty unless ok is False).
        operations: how many operations were checked.
        parts: how many independent parts (keys) the history split into.
        unchecked: keys not (fully) checked when the time ran out.
    """

    ok: bool | None
    violations: tuple[Violation, ...] = ()
    operations: int = 0
    parts: int = 0
    unchecked: tuple[Hashable, ...] = ()

    def __bool__(self) -> bool:
        return self.ok is True

    def explain(self) -> str:
        """A multi-line report of the verdict; for a violation, why no order works."""
        size = f"{plural(self.operations, 'operation')} over {plural(self.parts, 'key')}"
        if self.ok:
            return f"linearizable: {size}"
        if self.ok is None:
            unchecked = f"{len(self.unchecked)} of {plural(self.parts, 'key')} unchecked"
            return f"unknown: timed out with {unchecked} ({size})"
        bad = f"{len(self.violations)} of {plural(self.parts, 'key')} without a valid order"
        head = f"not linearizable: {bad} ({size})"
        if self.unchecked:
            head += f"; timed out before checking {plural(len(self.unchecked), 'key')}"
        return "\n\n".join([head, *(v.explain() for v in self.violations)])


def timeline(ops: Sequence[Operation], marked: Operation | None = None) -> list[str]:
    """One row per client; each call and return gets its own column, in time order.

    Operation i (1-based, in the order given) is drawn as `[i--]` from its call
    to its return, or `[i-->` to the right edge when its outcome is unknown.
    """
    ops = list(ops)[: len(_LABELS)]
    keys = sorted(
        {call_key(op) for op in ops} | {return_key(op) for op in ops if not op.is_unknown}
    )
    col = {k: 2 * rank for rank, k in enumerate(keys)}
    width = 2 * len(keys) + 2
    rows: dict[int, list[list[str]]] = {}
    notes: dict[int, str] = {}  # id(line) -> what to say after it
    for label, op in zip(_LABELS, ops, strict=False):
        start = col[call_key(op)]
        stop = width - 1 if op.is_unknown else col[return_key(op)]
        bar = "[" + label + "-" * (stop - start - 2) + (">" if op.is_unknown else "]")
        line = _draw(rows.setdefault(op.client_id, []), start, bar, width)
        if op is marked:
            notes[id(line)] = f"   <- {label} cannot be placed"
    first, last = min(k[0] for k in keys), max(k[0] for k in keys)
    name_width = max(len(f"client {c}") for c in rows) + 2
    out = [f"{'':<{name_width}}t={fmt_time(first)} .. t={fmt_time(last)}"]
    for client in sorted(rows):
        for line in rows[client]:
            bars = "".join(line).rstrip() + notes.get(id(line), "")
            out.append(f"{f'client {client}':<{name_width}}{bars}")
    return out


def _draw(lines: list[list[str]], start: int, bar: str, width: int) -> list[str]:
    """Draw `bar` at `start` on the first of a client's lines where it fits; returns that line."""
    for line in lines:
        if all(c == " " for c in line[max(start - 1, 0) : start + len(bar)]):
            break
    else:
        line = [" "] * (width + 1)
        lines.append(line)
    line[start : start + len(bar)] = bar
    return line


def _span(op: Operation) -> str:
    return f"t={fmt_time(op.call_time)}..{fmt_time(op.return_time)}"
