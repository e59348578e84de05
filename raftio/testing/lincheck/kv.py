"""`KvModel`: one string register per key with get, put and append.

A get of a key never written returns "". Append concatenates strings. Each key
is checked on its own (P-compositionality), and gets whose outcome is unknown
are dropped before the search: they change nothing and promise nothing.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

from raftio.testing.lincheck.history import Operation, precedes
from raftio.testing.lincheck.model import UNKNOWN, describe_at

__all__ = ["KvModel"]

KINDS = ("get", "put", "append")
_SCAN_LIMIT = 1 << 25  # characters of distinct get results searched for unobserved writes


class KvModel:
    """The key/value model `check()` uses by default.

    Also `ReadOnlyAware` (gets), `Lookahead` (appends only grow a value) and
    an `Explainer` (which writes rule a get's result out).
    """

    def init(self) -> str:
        return ""

    def step(self, state: str, op: Operation, output: Any) -> tuple[bool, str]:
        kind = op.kind
        if kind == "get":
            return output is UNKNOWN or output == state, state
        if kind == "put":
            return True, op.value
        return True, state + op.value

    def is_read_only(self, op: Operation) -> bool:
        return op.kind == "get"

    def can_reach(self, state: str, read: Operation, writes: Sequence[Operation]) -> bool:
        # Appends only grow a value, so the read sees the current state, or the value
        # of the last put placed before it, followed by appends.
        seen = read.output
        if not isinstance(seen, str):
            return False
        return seen.startswith(state) or any(
            w.kind == "put" and seen.startswith(w.value) for w in writes
        )

    def partition(self, operations: Sequence[Operation]) -> dict[Hashable, list[Operation]]:
        parts: dict[Hashable, list[Operation]] = {}
        for op in operations:
            if op.kind not in KINDS:
                raise ValueError(f"KvModel: unknown kind {op.kind!r} in {op}; expected {KINDS}")
            if op.kind != "get" and not isinstance(op.value, str):
                raise ValueError(f"KvModel: {op.kind} needs a str value: {op}")
            if op.kind == "get" and op.is_unknown:
                continue
            parts.setdefault(op.key, []).append(op)
        return {key: _drop_unobserved(part) for key, part in parts.items()}

    def describe(self, op: Operation) -> str:
        key = _key(op.key)
        if op.kind != "get":
            return f"{op.kind}({key}, {op.value!r}){'?' if op.is_unknown else ''}"
        return f"get({key}) -> {'?' if op.is_unknown else repr(op.output)}"

    def describe_state(self, state: str) -> str:
        return repr(state)

    def explain(
        self, operations: Sequence[Operation], stuck: Operation
    ) -> tuple[str, list[Operation]] | None:
        """Name the writes that rule out a get's result, when simple reasons suffice."""
        if stuck.kind != "get" or stuck.is_unknown or not isinstance(stuck.output, str):
            return None
        # Appends of "" change nothing; every other write does.
        writes = [op for op in operations if op.kind == "put" or (op.kind == "append" and op.value)]
        return _lost_append(self, writes, stuck) or _unexplained(self, writes, stuck)


def _drop_unobserved(part: list[Operation]) -> list[Operation]:
    """`part` without the unknown-outcome writes whose value no get ever saw.

    Such a write can always go last (as if it never happened): any order that
    places it earlier only changes states no get observes, since every state
    from it until the next put contains its value.
    """
    if not any(op.is_unknown for op in part):
        return part
    outputs = {op.output for op in part if op.kind == "get" and isinstance(op.output, str)}
    if sum(map(len, outputs)) > _SCAN_LIMIT:
        return part  # keeping them is always sound, only slower
    seen = "\0".join(outputs)
    return [op for op in part if not (op.is_unknown and op.value and op.value not in seen)]


def _lost_append(
    model: KvModel, writes: list[Operation], get: Operation
) -> tuple[str, list[Operation]] | None:
    """A completed append missing from a later get, with no put that could erase it."""
    for append in writes:
        if append.kind != "append" or not precedes(append, get) or append.value in get.output:
            continue
        if any(
            w.kind == "put" and not precedes(w, append) and not precedes(get, w) for w in writes
        ):
            continue
        why = (
            f"{describe_at(model, get)} cannot be placed: {describe_at(model, append)} "
            f"completed before the get was called, yet {append.value!r} is missing from "
            f"{get.output!r}, and no put could have overwritten it in between"
        )
        return why, [append, get]
    return None


def _unexplained(
    model: KvModel, writes: list[Operation], get: Operation
) -> tuple[str, list[Operation]] | None:
    """Every write that could have left the value the get saw is ruled out by timing."""
    value: str = get.output
    # The last write before the get left `value`: a put of it, or an append of its tail.
    sources = [
        w for w in writes if (w.value == value if w.kind == "put" else value.endswith(w.value))
    ]
    if not sources and value:
        why = f"{describe_at(model, get)} cannot be placed: no write could have produced {value!r}"
        return why, [get]
    reasons: list[str] = []
    involved = [get]
    if not value:
        first = next((w for w in writes if w.value and precedes(w, get)), None)
        if first is None:
            return None
        reasons.append(
            f"the initial '' was replaced by {describe_at(model, first)}, before the get"
        )
        involved.append(first)
    for source in sources:
        reason = _ruled_out(model, source, writes, get)
        if reason is None:
            return None
        reasons.append(reason[0])
        involved += reason[1]
    what = "every write that could explain" if sources else "nothing could explain"
    why = f"{describe_at(model, get)} cannot be placed: {what} {value!r}: " + "; ".join(reasons)
    return why, involved


def _ruled_out(
    model: KvModel, source: Operation, writes: list[Operation], get: Operation
) -> tuple[str, list[Operation]] | None:
    if precedes(get, source):
        return f"{describe_at(model, source)} was called after the get returned", [source]
    for later in writes:
        if precedes(source, later) and precedes(later, get):
            verb = "overwritten" if later.kind == "put" else "followed"
            after = describe_at(model, later)
            why = f"{describe_at(model, source)} was {verb} by {after}, before the get"
            return why, [source, later]
    return None


def _key(key: Hashable) -> str:
    return key if isinstance(key, str) and key.isidentifier() else repr(key)
