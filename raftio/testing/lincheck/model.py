"""The `Model` protocol: a sequential specification the checker replays histories against.

A model is pure: `step()` returns a new state instead of changing one, and
states are hashable (the checker memoizes `(linearized set, state)` pairs), so
use str, int, tuple or frozenset, never list or dict.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any, Final, Protocol, TypeVar, runtime_checkable

from raftio.testing.lincheck.history import Operation, fmt_time

__all__ = ["UNKNOWN", "Explainer", "Lookahead", "Model", "ReadOnlyAware", "describe_at"]

S = TypeVar("S")


class _Unknown:
    """The output `step()` receives for an operation whose outcome is unknown."""

    _instance: _Unknown | None = None

    def __new__(cls) -> _Unknown:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNKNOWN"


UNKNOWN: Final = _Unknown()


class Model(Protocol[S]):
    """A sequential specification: what one correct, single-copy service would answer.

    Example: a counter whose "incr" returns the new value::

        class Counter:
            def init(self) -> int:
                return 0

            def step(self, state: int, op: Operation, output: Any) -> tuple[bool, int]:
                return output is UNKNOWN or output == state + 1, state + 1

            def partition(self, operations):
                return {None: list(operations)}

            def describe(self, op: Operation) -> str:
                return f"incr() -> {op.output}"

            def describe_state(self, state: int) -> str:
                return str(state)
    """

    def init(self) -> S:
        """The state before any operation."""
        ...

    def step(self, state: S, op: Operation, output: Any) -> tuple[bool, S]:
        """Apply `op` (its input: kind, key, value) to `state`.

        Returns whether `output` is what the service should have answered, and
        the state after `op`. `output` is `op.output`, or `UNKNOWN` when the
        outcome is unknown: then accept any answer, and return the state as if
        `op` took effect (the checker tries it in every position after its
        call, including "after everything", which is "never").
        """
        ...

    def partition(self, operations: Sequence[Operation]) -> Mapping[Hashable, Sequence[Operation]]:
        """Split a history into independent parts, checked separately.

        The history must be linearizable exactly when every part is (true for
        disjoint keys: P-compositionality). `{None: operations}` never splits.
        A part may leave out operations that cannot affect the verdict.
        """
        ...

    def describe(self, op: Operation) -> str:
        """`op` in a few characters for reports, e.g. "get(x) -> 'a'"."""
        ...

    def describe_state(self, state: S) -> str:
        """A state in a few characters for reports."""
        ...


@runtime_checkable
class Explainer(Protocol):
    """Optional: a model that can say, in its own terms, why an operation cannot be placed."""

    def explain(
        self, operations: Sequence[Operation], stuck: Operation
    ) -> tuple[str, list[Operation]] | None:
        """Why no order of `operations` (one part) can place `stuck`.

        Returns a sentence and the operations it mentions, or None when no
        model-specific reason applies (the checker then gives a generic one).
        Only return reasons that hold for every order, not just one prefix.
        """
        ...


@runtime_checkable
class ReadOnlyAware(Protocol):
    """Optional: a model that knows which operations never change the state.

    The search places such an operation as soon as it fits, without trying
    alternatives: moving a read earlier, to a point where it already fits,
    cannot change any other operation's result. For read-heavy histories
    this removes most of the backtracking.
    """

    def is_read_only(self, op: Operation) -> bool:
        """True only if `step` returns the state unchanged for `op` in every state."""
        ...


@runtime_checkable
class Lookahead(Protocol):
    """Optional, with `ReadOnlyAware`: lets a read that returns later prune a prefix now.

    At every step the search asks about the next read to return (placed or
    not yet called): could it still fit? If not, no continuation of the
    current prefix works, and the search backs up at once instead of finding
    out many steps later. For appends this turns a search over orders of
    concurrent appends into a walk along the one order the reads reveal.
    """

    def can_reach(self, state: Any, read: Operation, writes: Sequence[Operation]) -> bool:
        """Could `read` fit after some of `writes`, in some order, are applied to `state`?

        `writes` holds every unplaced operation that is not read-only and may
        still be placed before `read`. Return True when unsure: False must be
        certain, or a linearizable history is reported as a violation.
        """
        ...


def describe_at(model: Model[Any], op: Operation) -> str:
    """`op` with its client and times, e.g. "put(x, 'a') [client 1, t=0..1]"."""
    span = f"t={fmt_time(op.call_time)}..{fmt_time(op.return_time)}"
    return f"{model.describe(op)} [client {op.client_id}, {span}]"
