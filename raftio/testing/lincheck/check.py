"""`check()`: split a history into parts, search each, and explain what fails.

Never reads a clock of its own: a timeout is measured with the injected
`clock`, or else by a `threading.Timer` that raises a flag the search polls.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Hashable, Iterator, Sequence
from typing import Any

from raftio.testing.lincheck.history import History, Operation, call_key, plural, return_key
from raftio.testing.lincheck.kv import KvModel
from raftio.testing.lincheck.model import UNKNOWN, Explainer, Model, describe_at
from raftio.testing.lincheck.report import CheckResult, Violation
from raftio.testing.lincheck.search import DeadEnd, search

__all__ = ["check"]

_WINDOW_MAX = 40  # operations shown for one violation


def check(
    history: History | Sequence[Operation],
    *,
    model: Model[Any] | None = None,
    timeout: float | None = None,
    clock: Callable[[], float] | None = None,
) -> CheckResult:
    """Decide whether `history` is linearizable with respect to `model`.

    Args:
        history: a `History`, or operations in any order.
        model: the sequential specification; defaults to `KvModel()`.
        timeout: give up after this many seconds (then `ok` is None, unless a
            violation was already found). None: no limit.
        clock: measures the timeout (e.g. `time.monotonic`); by default a
            `threading.Timer` does, in real seconds.

    Returns:
        A `CheckResult`; `result.explain()` says why a history is not linearizable.
    """
    ops = history.operations if isinstance(history, History) else list(history)
    model = model if model is not None else KvModel()
    parts = model.partition(ops)
    violations: list[Violation] = []
    unchecked: list[Hashable] = []
    with _deadline(timeout, clock) as expired:
        for key, part in parts.items():
            outcome = None if unchecked else search(model, part, expired)
            if outcome is None:
                unchecked.append(key)
            elif isinstance(outcome, DeadEnd):
                violations.append(_violation(model, key, part, outcome))
    ok = False if violations else (None if unchecked else True)
    return CheckResult(ok, tuple(violations), len(ops), len(parts), tuple(unchecked))


@contextlib.contextmanager
def _deadline(
    timeout: float | None, clock: Callable[[], float] | None
) -> Iterator[Callable[[], bool]]:
    if timeout is None:
        yield lambda: False
    elif clock is not None:
        deadline = clock() + timeout
        yield lambda: clock() >= deadline
    else:
        flag = threading.Event()
        timer = threading.Timer(timeout, flag.set)
        timer.daemon = True
        timer.start()
        try:
            yield flag.is_set
        finally:
            timer.cancel()


def _violation(
    model: Model[Any], key: Hashable, part: Sequence[Operation], dead: DeadEnd
) -> Violation:
    explained = model.explain(part, dead.stuck) if isinstance(model, Explainer) else None
    reason, involved = (
        explained if explained is not None else (_generic_reason(model, part, dead), [])
    )
    window = _window(part, dead, involved)
    return Violation(
        key, dead.stuck, dead.prefix, model.describe_state(dead.state), window, reason, model
    )


def _generic_reason(model: Model[Any], part: Sequence[Operation], dead: DeadEnd) -> str:
    stuck, state = dead.stuck, model.describe_state(dead.state)
    prefix = f"the longest linearizable prefix ({plural(len(dead.prefix), 'operation')})"
    output = UNKNOWN if stuck.is_unknown else stuck.output
    if model.step(dead.state, stuck, output)[0]:
        where = f"it fits after {prefix}, in state {state}, but every way on from there fails"
    else:
        where = f"{prefix} leaves state {state}, where it does not fit"
    others = sum(1 for op in part if op is not stuck and _overlap(op, stuck))
    if others:
        around = f"the {plural(others, 'operation')} overlapping it, or of those before,"
    else:
        around = "the operations before it"
    return (
        f"{describe_at(model, stuck)} cannot be placed: {where}, and no other order of "
        f"{around} leads to a state where it does"
    )


def _window(
    part: Sequence[Operation], dead: DeadEnd, involved: list[Operation]
) -> tuple[Operation, ...]:
    """The operations around the dead end: those overlapping the stuck one's neighbourhood.

    The neighbourhood runs from the earliest call among the stuck operation,
    the unplaced operations called before it returned and the prefix
    operations still running when it was called, to its return. The last
    prefix operation before that (which set the state it starts from) and
    the ones the model's explanation names are added.
    """
    stuck = dead.stuck
    placed = {id(op) for op in dead.prefix}
    end = return_key(stuck)
    around = [op for op in part if id(op) not in placed and call_key(op) < end]
    around += [op for op in dead.prefix if return_key(op) > call_key(stuck)]
    start = min(call_key(op) for op in around if op is stuck or not op.is_unknown)
    window = {id(op): op for op in part if call_key(op) < end and return_key(op) > start}
    before = [op for op in dead.prefix if id(op) not in window]
    must = {id(op): op for op in [*involved, *before[-1:], stuck]}
    rest = sorted(
        (op for i, op in window.items() if i not in must),
        key=lambda op: abs(op.call_time - stuck.call_time),
    )
    chosen = [*must.values(), *rest[: max(_WINDOW_MAX - len(must), 0)]]
    return tuple(sorted(chosen, key=call_key))


def _overlap(a: Operation, b: Operation) -> bool:
    return call_key(a) < return_key(b) and call_key(b) < return_key(a)
