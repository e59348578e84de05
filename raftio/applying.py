"""What the service receives: committed entries decoded into ApplyMsgs.

The core hands over committed entries as bytes (`ApplyEntries`) and an
installed snapshot as `ApplySnapshot`; the shell turns them into the
`ApplyMsg`s of CONTRACT.md here. A leader skips the decode for immutable
commands it started itself: it delivers the very object it was given.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from raftio import codec
from raftio.messages import Applicable, ApplyEntries, ApplyMsg, ApplySnapshot, UndecodableCommand


class OwnCommands:
    """Immutable commands this leader started, by index, until they are applied."""

    __slots__ = ("_by_index", "_term")

    def __init__(self) -> None:
        self._by_index: dict[int, tuple[int, Any]] = {}
        self._term = -1

    def remember(self, index: int, term: int, command: Any) -> None:
        """`command` was started at `index` in `term` (only immutable ones are kept)."""
        if not codec.is_immutable(command):
            return  # a list or dict may change after propose: every replica decodes it
        if term != self._term:
            # Entries an earlier leadership started may have been replaced.
            self._by_index.clear()
            self._term = term
        # (index, term) names one entry for good: no other peer makes entries of our term.
        self._by_index[index] = (term, command)

    def apply_msgs(self, applicable: ApplyEntries) -> list[ApplyMsg]:
        """The ApplyMsgs for `applicable`, in index order (snapshots: Raft._snapshot_msgs).

        A command that does not decode (only a forged or damaged entry can
        be) is delivered as `UndecodableCommand`, identically on every replica.
        """
        own, decode, msgs = self._by_index, codec.decode_command, []
        for index, entry in enumerate(applicable.entries, applicable.first_index):
            mine = own.pop(index, None) if own else None
            if mine is not None and mine[0] == entry.term:
                command = mine[1]
            else:
                try:
                    command = decode(entry.data)
                except Exception:
                    command = UndecodableCommand(entry.data)
            msgs.append(
                ApplyMsg(
                    command_valid=True,
                    command=command,
                    command_index=index,
                    command_term=entry.term,
                )
            )
        return msgs


def describe_applicable(applicable: Applicable) -> str:
    """One short trace line: ``entries 5..9`` or ``snapshot through 40@T3``."""
    if isinstance(applicable, ApplySnapshot):
        return f"snapshot through {applicable.index}@T{applicable.term}"
    last = applicable.first_index + len(applicable.entries) - 1
    return f"entries {applicable.first_index}..{last}"


async def deliver(
    batch: list[ApplyMsg], to: asyncio.Queue[ApplyMsg], killed: Callable[[], bool]
) -> None:
    """Put `batch` on the service's queue in order, waiting for room when it is full.

    Stops early once the peer is killed. (A callable apply_ch, what `Node`
    passes, takes each batch directly from the applier.)
    """
    for msg in batch:
        if killed():
            return
        if to.full():
            await to.put(msg)
        else:
            to.put_nowait(msg)
