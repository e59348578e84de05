"""What a service replicates through `Node`: the StateMachine protocols.

Two ways to snapshot, one per protocol:

- `StateMachine` (bytes): `snapshot()` returns the whole state, `restore`
  takes it back. Simple; the whole state is in memory once more while a
  snapshot is taken, sent or restored. A bytes state machine may also
  define `validate_snapshot(data) -> None`, raising if `data` would not
  restore; without it, Node restores into a scratch instance (`type(sm)()`)
  when the class can be built without arguments.
- `StreamingStateMachine` (chunks): for states of any size. Node prefers
  it when both methods exist. Memory stays bounded by the chunks in
  flight; Node takes the snapshot in the background without blocking
  proposals.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol

__all__ = ["StateMachine", "StreamingStateMachine", "snapshot_validator"]


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


class StreamingStateMachine(Protocol):
    """A state machine that snapshots and restores as a stream of chunks."""

    def apply(self, command: Any) -> Any:
        """Apply a committed command; the result goes back to its proposer."""
        ...

    def snapshot_stream(self) -> AsyncIterator[bytes]:
        """The state as of this call, as chunks (say 64 KiB to 1 MiB each).

        Node calls it between two applies: the call is the consistent point.
        It then iterates the chunks in the background *while it keeps
        applying*, so what they hold must not change with later applies: copy
        what is mutable before returning (or share it copy-on-write), and keep
        the copy cheap, since the call blocks the loop. Yielding to the loop
        between chunks is what keeps proposals flowing meanwhile.
        """
        ...

    async def restore_stream(self, chunks: AsyncIterator[bytes]) -> None:
        """Replace the whole state with a snapshot's, read chunk by chunk.

        Raise if the data is not a snapshot this state machine wrote: the
        node then fail-stops rather than run on a partial state (the
        snapshot's size and crc32 were verified before it was offered).
        """
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
