"""Seeded histories of a simulated linearizable key/value store, for tests and benchmarks.

Every operation takes effect at one random instant inside its interval, and
the store applies them in that order, so the history is linearizable by
construction. Unknown-outcome operations take effect later (possibly after
their client has moved on) or never.
"""

from __future__ import annotations

import heapq
import math
import random
from dataclasses import dataclass

from raftio.testing.lincheck.history import Operation

__all__ = ["linearizable_history"]


@dataclass(slots=True)
class _Planned:
    client_id: int
    kind: str
    key: str
    value: str | None
    call_time: float
    effect_time: float  # inf: never takes effect
    return_time: float
    output: str | None = None


def linearizable_history(
    rng: random.Random,
    *,
    operations: int,
    keys: int,
    clients: int,
    unknown: float = 0.0,
    latency: float = 1.0,
    kinds: tuple[str, ...] = ("get", "get", "put", "append"),
) -> list[Operation]:
    """A linearizable history of `operations` get/put/append operations.

    Args:
        rng: all randomness comes from here.
        operations: how many operations in all.
        keys: spread over keys "k0".."k{keys-1}".
        clients: how many sequential clients run at once.
        unknown: the fraction of operations whose outcome the client never
            learns (half of those never take effect).
        latency: the mean time from call to return; clients issue their next
            call right after, so about `clients` operations overlap.
        kinds: each operation's kind is drawn from these, uniformly.
    """
    planned: list[_Planned] = []
    ready = [(rng.uniform(0, latency), c) for c in range(clients)]
    for n in range(operations):
        now, client = heapq.heappop(ready)
        kind = rng.choice(kinds)
        op = _plan(rng, client, n, kind, now, keys, latency, rng.random() < unknown)
        planned.append(op)
        moves_on = op.return_time if op.return_time < math.inf else now + 2 * latency
        heapq.heappush(ready, (moves_on + rng.uniform(0, latency / 10), client))
    _apply_in_effect_order(planned)
    return [
        Operation(p.client_id, p.kind, p.key, p.value, p.output, p.call_time, p.return_time)
        for p in planned
    ]


def _plan(
    rng: random.Random,
    client: int,
    n: int,
    kind: str,
    now: float,
    keys: int,
    latency: float,
    lost: bool,
) -> _Planned:
    value = None if kind == "get" else f"{client}.{n};"
    effect = now + rng.uniform(0, latency)
    if not lost:
        end = effect + rng.uniform(0, latency)
        return _Planned(client, kind, f"k{rng.randrange(keys)}", value, now, effect, end)
    if rng.random() < 0.5:
        effect = math.inf
    else:
        effect += rng.uniform(0, 4 * latency)
    return _Planned(client, kind, f"k{rng.randrange(keys)}", value, now, effect, math.inf)


def _apply_in_effect_order(planned: list[_Planned]) -> None:
    store: dict[str, str] = {}
    for op in sorted(planned, key=lambda p: p.effect_time):
        if op.effect_time == math.inf:
            break
        current = store.get(op.key, "")
        if op.kind == "get":
            op.output = current
        elif op.kind == "put":
            store[op.key] = op.value or ""
        else:
            store[op.key] = current + (op.value or "")
