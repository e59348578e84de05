"""Operations and the `History` builder that records them from async clients.

An `Operation` is one client request with its call and return times. An
operation whose outcome is unknown (the client timed out or crashed) has
`return_time = inf`: it may or may not have taken effect, and if it did, at
any moment after its call.

`History` timestamps events with the running loop's clock
(`asyncio.get_running_loop().time()`) or an injected clock function. It also
numbers every event it records, so two events with equal timestamps (common on
a virtual clock, where callbacks take no time) keep the order in which they
really happened. Never reads a wall clock.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, NewType

__all__ = ["CallHandle", "History", "Operation", "fmt_time", "plural", "precedes"]

CallHandle = NewType("CallHandle", int)


@dataclass(frozen=True, slots=True)
class Operation:
    """One client operation, as the checker sees it.

    Attributes:
        client_id: who issued it; the timeline draws one row per client.
        kind: what it does: "get", "put" or "append" for the key/value model,
            anything a custom `Model` understands otherwise.
        key: what it touches; the key/value model checks each key separately.
        value: its input (the value written; None for a get).
        output: what it returned (the value read; None for writes, and
            ignored when the outcome is unknown).
        call_time: when the client sent it.
        return_time: when the client got the answer; `math.inf` if it never
            learned the outcome.
        call_seq, return_seq: `History`'s event numbers, used only to order
            events whose timestamps are equal. None for hand-built operations:
            at equal times, a call then counts as concurrent with a return.
    """

    client_id: int
    kind: str
    key: Hashable
    value: Any = None
    output: Any = None
    call_time: float = 0.0
    return_time: float = math.inf
    call_seq: int | None = field(default=None, repr=False, compare=False)
    return_seq: int | None = field(default=None, repr=False, compare=False)

    @property
    def is_unknown(self) -> bool:
        """Whether the outcome is unknown (no return was ever observed)."""
        return self.return_time == math.inf


# Event sort keys. At equal times a call without a sequence number sorts before
# every return and a return without one after every call, which treats them as
# concurrent: the checker never claims an order the timestamps do not show.
_CALL_DEFAULT = -1
_RETURN_DEFAULT = 1 << 62


def call_key(op: Operation) -> tuple[float, int]:
    """Where `op`'s call event sorts among all events."""
    return (op.call_time, _CALL_DEFAULT if op.call_seq is None else op.call_seq)


def return_key(op: Operation) -> tuple[float, int]:
    """Where `op`'s return event sorts among all events."""
    return (op.return_time, _RETURN_DEFAULT if op.return_seq is None else op.return_seq)


def precedes(a: Operation, b: Operation) -> bool:
    """Whether `a` returned before `b` was called (so `a` must be ordered first)."""
    return return_key(a) < call_key(b)


@dataclass(slots=True)
class _Pending:
    client_id: int
    kind: str
    key: Hashable
    value: Any
    call_time: float
    call_seq: int
    done: Operation | None = None


class History:
    """Records operations from async clients, for `check()`.

    ::

        history = History()
        handle = history.record_call(client_id=1, kind="put", key="x", value="a")
        try:
            await kv.put("x", "a")
        except TimeoutError:
            history.record_unknown(handle)      # may or may not have happened
        else:
            history.record_return(handle)

    Calls never completed by `record_return` or `record_unknown` count as
    unknown-outcome operations.
    """

    def __init__(self, clock: Callable[[], float] | None = None) -> None:
        """Create an empty history.

        Args:
            clock: returns the current time; defaults to the running event
                loop's `time()`, so a virtual clock stamps virtual times.
        """
        self._clock = clock if clock is not None else _loop_time
        self._pending: list[_Pending] = []
        self._next_seq = 0

    def record_call(
        self, client_id: int, kind: str, key: Hashable, value: Any = None
    ) -> CallHandle:
        """Record that `client_id` sent an operation; returns its handle."""
        self._pending.append(_Pending(client_id, kind, key, value, self._clock(), self._seq()))
        return CallHandle(len(self._pending) - 1)

    def record_return(self, handle: CallHandle, output: Any = None) -> None:
        """Record the operation's result (`output` is the value read; None for writes)."""
        pending = self._open(handle)
        pending.done = self._finish(pending, output, self._clock(), self._seq())

    def record_unknown(self, handle: CallHandle) -> None:
        """Record that the client will never learn the outcome (timeout, crash)."""
        pending = self._open(handle)
        pending.done = self._finish(pending, None, math.inf, None)

    @property
    def operations(self) -> list[Operation]:
        """Every recorded operation, in call order; open calls count as unknown."""
        return [p.done or self._finish(p, None, math.inf, None) for p in self._pending]

    def __len__(self) -> int:
        return len(self._pending)

    def _seq(self) -> int:
        self._next_seq += 1
        return self._next_seq

    def _open(self, handle: CallHandle) -> _Pending:
        pending = self._pending[handle]
        if pending.done is not None:
            raise ValueError(f"operation {handle} already completed: {pending.done}")
        return pending

    @staticmethod
    def _finish(p: _Pending, output: Any, return_time: float, seq: int | None) -> Operation:
        return Operation(
            p.client_id, p.kind, p.key, p.value, output, p.call_time, return_time, p.call_seq, seq
        )


def _loop_time() -> float:
    return asyncio.get_running_loop().time()


def fmt_time(t: float) -> str:
    """A time for reports: at most 3 decimals, trailing zeros dropped; "?" for never."""
    if t == math.inf:
        return "?"
    return f"{t:.3f}".rstrip("0").rstrip(".")


def plural(n: int, noun: str) -> str:
    """`n` and `noun`, with an "s" unless n is 1: "1 key", "3 keys"."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
