"""The search for a linearization of one part: Wing & Gong, with Lowe's improvements.

Never imports asyncio and never reads a clock: time limits arrive as an
`expired()` function, polled every few thousand steps.

The history becomes a doubly linked list of call and return events in time
order. The operations whose calls come before the first return event are the
candidates: one of them must be placed next. The search is depth first:

* Place the first candidate the model accepts whose (linearized set, new
  state) pair is new: push an undo record, unlink both of its events (a
  placed operation is no longer in anyone's way) and compute the candidates
  again.
* No candidate left: the operation returning first can no longer be placed
  before its own return, so this prefix is a dead end. Pop the last record,
  relink its events in place (dancing links: their neighbours still point at
  them) and try that node's next candidate.
* The list empties: every operation is placed, the history is linearizable.
  The undo stack empties at a dead end: no order works.

Memoizing (linearized set, state) pairs (Lowe) makes the search visit each
configuration once. The linearized set is a bitset kept small: operations are
numbered in call order, so it is stored as `done` (every operation below it is
linearized) plus the bits above `done`, which span only the operations that
overlap the search front. Unknown-outcome operations, which may stay
unlinearized until the very end, get bits of their own so they do not hold
`done` back.

One more reduction, for models that mark read-only operations: a read that
fits the current state is placed at once, with no alternatives. Moving a read
earlier, to a point where it fits, changes no other operation's result, and
every operation that must precede it is already placed (they returned before
its call, so before the first return event). Without this, a register with
eight writers explores orders of writes no read can tell apart.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from raftio.testing.lincheck.history import Operation, call_key, return_key
from raftio.testing.lincheck.model import UNKNOWN, Lookahead, Model, ReadOnlyAware

__all__ = ["DeadEnd", "search"]

_CHECK_EVERY = 1024  # steps between calls to expired()

# An undo record, a cons cell: (op, state, done, bits, unknown_bits, first,
# candidates, next candidate, older record): everything to restore the node it
# left and try that node's next candidate. Records are immutable and shared,
# so remembering a prefix costs one reference.
_Undo = tuple[int, Any, int, int, int, int, list[int], int, Any]


@dataclass(frozen=True, slots=True)
class DeadEnd:
    """The deepest point the search reached before it ran out of orders.

    Attributes:
        prefix: the longest linearizable prefix found, in linearization order.
        state: the model state after `prefix`.
        stuck: the operation whose return came before it could be placed.
    """

    prefix: tuple[Operation, ...]
    state: Any
    stuck: Operation


def search(
    model: Model[Any], operations: Sequence[Operation], expired: Callable[[], bool]
) -> DeadEnd | bool | None:
    """Look for a linearization of `operations` (one part).

    Returns True if one exists, a `DeadEnd` if none does, None if `expired()`
    said to stop first.
    """
    if not operations:
        return True
    ops = sorted((op for op in operations if not op.is_unknown), key=call_key)
    finite = len(ops)
    ops += sorted((op for op in operations if op.is_unknown), key=call_key)
    outputs = [UNKNOWN if op.is_unknown else op.output for op in ops]
    ev_op, ev_is_call, call_pos, ret_pos = _event_list(ops)
    end = len(ev_op) - 1
    nxt = list(range(1, end + 2))
    prv = list(range(-1, end))
    step = model.step
    seen: set[tuple[int, int, int, Any]] = set()
    is_read = model.is_read_only if isinstance(model, ReadOnlyAware) else None
    reads = [is_read is not None and is_read(op) for op in ops]
    can_reach = model.can_reach if isinstance(model, Lookahead) and is_read else None

    def candidates(state: Any) -> tuple[int, list[int]]:
        """The next operation to return, and the pending operations to try placing, in order.

        No operations to try means a dead end: the returned operation cannot be placed.
        """
        entry, calls = nxt[0], []
        while ev_is_call[entry]:
            calls.append(ev_op[entry])
            entry = nxt[entry]
        for i in calls:
            if reads[i] and step(state, ops[i], outputs[i])[0]:
                return ev_op[entry], [i]  # a read that fits now goes now, with no alternative
        if can_reach is not None:
            blocked = _next_read_blocked(state, entry, [i for i in calls if not reads[i]])
            if blocked is not None:
                return blocked, []
        return ev_op[entry], calls

    def _next_read_blocked(state: Any, entry: int, writes: list[int]) -> int | None:
        """The first read to return, if the model says no order of what may precede it fits it."""
        assert can_reach is not None
        while entry != end:
            i = ev_op[entry]
            if ev_is_call[entry]:
                if not reads[i]:
                    writes.append(i)
            elif reads[i] and i < finite:
                return None if can_reach(state, ops[i], [ops[w] for w in writes]) else i
            entry = nxt[entry]
        return None

    state: Any = model.init()
    done = bits = unknown_bits = 0
    top: _Undo | None = None
    depth, best_depth = 0, -1
    best: tuple[_Undo | None, Any, int] = (None, state, 0)
    steps = 0
    first, cands = candidates(state)
    index = 0
    while True:  # one loop, inlined: it runs millions of times on hard histories
        steps += 1
        if steps % _CHECK_EVERY == 0 and expired():
            return None
        if index < len(cands):
            i = cands[index]
            index += 1
            ok, new_state = step(state, ops[i], outputs[i])
            if not ok:
                continue
            if i >= finite:
                key = (done, bits, unknown_bits | 1 << (i - finite), new_state)
            elif i == done:
                rest = bits >> 1
                ones = ((~rest) & (rest + 1)).bit_length() - 1  # trailing ones of rest
                key = (done + 1 + ones, rest >> ones, unknown_bits, new_state)
            else:
                key = (done, bits | 1 << (i - done), unknown_bits, new_state)
            if key in seen:
                continue
            seen.add(key)
            top = (i, state, done, bits, unknown_bits, first, cands, index, top)
            depth += 1
            done, bits, unknown_bits, state = key
            c, r = call_pos[i], ret_pos[i]
            nxt[prv[c]] = nxt[c]
            prv[nxt[c]] = prv[c]
            nxt[prv[r]] = nxt[r]
            prv[nxt[r]] = prv[r]
            if nxt[0] == end:
                return True
            first, cands = candidates(state)
            index = 0
            continue
        if depth > best_depth:
            best_depth, best = depth, (top, state, first)
        if top is None:
            return _dead_end(ops, *best)
        i, state, done, bits, unknown_bits, first, cands, index, top = top
        depth -= 1
        c, r = call_pos[i], ret_pos[i]
        nxt[prv[r]] = r
        prv[nxt[r]] = r
        nxt[prv[c]] = c
        prv[nxt[c]] = c


def _event_list(ops: Sequence[Operation]) -> tuple[list[int], list[bool], list[int], list[int]]:
    """Events in time order at positions 1..2n (0 is the head, 2n+1 the end).

    Returns, per position, the operation and whether it is a call, and per
    operation, the positions of its call and of its return.
    """
    events = sorted(
        [(call_key(op), 0, i) for i, op in enumerate(ops)]
        + [(return_key(op), 1, i) for i, op in enumerate(ops)]
    )
    ev_op, ev_is_call = [-1], [False]
    call_pos, ret_pos = [0] * len(ops), [0] * len(ops)
    for pos, (_, is_return, i) in enumerate(events, start=1):
        ev_op.append(i)
        ev_is_call.append(not is_return)
        (ret_pos if is_return else call_pos)[i] = pos
    ev_op.append(-1)
    ev_is_call.append(False)
    return ev_op, ev_is_call, call_pos, ret_pos


def _dead_end(ops: Sequence[Operation], top: _Undo | None, state: Any, stuck: int) -> DeadEnd:
    prefix: list[Operation] = []
    while top is not None:
        prefix.append(ops[top[0]])
        top = top[8]
    prefix.reverse()
    return DeadEnd(tuple(prefix), state, ops[stuck])
