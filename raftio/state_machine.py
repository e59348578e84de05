"""What a service replicates through `Node`: the StateMachine protocol.

A state machine may also define `validate_snapshot(data) -> None`, raising
if `data` would not restore; without it, Node restores into a scratch
instance (`type(sm)()`) when the class can be built without arguments.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

__all__ = ["StateMachine", "snapshot_validator"]


class StateMachine(Protocol):
    """What a service replicates. `apply` must be deterministic."""

    def apply(self, command: Any) -> Any:
        """Apply a committed command; the result goes back to its proposer."""
        ...

    def snapshot(self) -> bytes:
        """The whole state as bytes."""
        ...

    def restore(self, data: bytes) -> None:
        """Replace the whole state with a snapshot's."""
        ...


def snapshot_validator(sm: StateMachine) -> Callable[[bytes], object] | None:
    """How to check that a leader's snapshot would restore, before it is persisted."""
    check = getattr(sm, "validate_snapshot", None)
    if callable(check):
        return check  # type: ignore[no-any-return]
    cls = type(sm)
    try:
        cls()
    except Exception:
        return None  # no scratch instance to try it on

    def restore_into_scratch(data: bytes) -> None:
        cls().restore(data)

    return restore_into_scratch
