"""Nemesis: a seeded schedule of overlapping faults against any cluster that is a `FaultTarget`.

Faults: partitions (the shapes of `raftio.testing.partitions`), crashes
with restarts, pauses, flaky or reordering links; `heal()` undoes them all.

Never reads a wall clock: every time is the running loop's.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Collection, Sequence
from typing import Protocol

from raftio.testing.partitions import Link, Partition, draw_partition, shapes

__all__ = ["FAULT_KINDS", "FaultTarget", "Nemesis"]

logger = logging.getLogger(__name__)


FAULT_KINDS = ("partition", "crash", "pause", "flaky", "reorder", "membership")


class FaultTarget(Protocol):
    """What a `Nemesis` needs of a cluster. Nodes are 0..n-1.

    `cut(links)` replaces the set of cut links: a cut (i, j) carries none of
    node i's requests to node j nor their replies; every other link works.
    `pause` / `resume` are only called if the nemesis was given "pause",
    `change_membership` only if it was given "membership".
    """

    @property
    def n(self) -> int: ...

    async def leader(self) -> int | None: ...

    def cut(self, links: Collection[Link]) -> None: ...

    def set_network(self, *, flaky: bool, reorder: bool) -> None: ...

    async def crash(self, i: int) -> None: ...

    async def restart(self, i: int) -> None: ...

    async def pause(self, i: int) -> None: ...

    async def resume(self, i: int) -> None: ...

    async def change_membership(self, rng: random.Random) -> str: ...


class Nemesis:
    """A seeded schedule of overlapping faults against `target`.

    Every `interval` seconds (drawn) one new fault starts and lasts `span`
    seconds (drawn), overlapping those in force: a partition (one at a
    time), a crash or a pause of a node (the leader half of the time; at
    most `max_down` nodes down at once, a minority by default), or flaky /
    reordering links. Kinds are dealt from a shuffled deck of `kinds`, the
    first one that can start now is played, so every kind gets its turn.
    Each fault is undone when its time is up. Every action is logged in
    `events`, stamped with the loop's time.
    """

    def __init__(
        self,
        target: FaultTarget,
        rng: random.Random,
        *,
        kinds: Sequence[str] = ("partition", "crash", "flaky"),
        interval: tuple[float, float] = (0.2, 1.5),
        span: tuple[float, float] = (0.3, 3.0),
        max_down: int | None = None,
    ) -> None:
        unknown = set(kinds) - set(FAULT_KINDS)
        if unknown or not kinds:
            raise ValueError(f"unknown fault kinds {sorted(unknown)}; expected {FAULT_KINDS}")
        self.target, self._rng = target, rng
        self.kinds = list(kinds)
        self._interval, self._span = interval, span
        self._max_down = min(target.n, (target.n - 1) // 2 if max_down is None else max_down)
        self._down: dict[int, tuple[str, float]] = {}  # node -> ("crash" | "pause", until)
        self._cut_until: float | None = None
        self._network: dict[str, float] = {}  # "flaky" / "reorder" -> until
        self._deck: list[str] = []
        self.events: list[str] = []
        self.actions = 0

    async def run(self, duration: float) -> None:
        """Inject faults for `duration` seconds (call `heal()` afterwards)."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        until, next_fault = now + duration, now + self._rng.uniform(*self._interval)
        while True:
            wake = min(next_fault, until, *self._deadlines())
            await asyncio.sleep(wake - now)
            now = loop.time()
            if now >= until:
                return
            await self._expire(now)
            if now >= next_fault:
                await self._deal(now)
                next_fault = now + self._rng.uniform(*self._interval)

    def _deadlines(self) -> list[float]:
        """When the faults in force end."""
        ends = [until for _, until in self._down.values()] + list(self._network.values())
        return ends if self._cut_until is None else [*ends, self._cut_until]

    async def heal(self) -> None:
        """Undo every fault: links whole and calm, every node running."""
        await self._expire(float("inf"))

    def log(self, text: str) -> None:
        now = asyncio.get_running_loop().time()
        self.events.append(f"t={now:.3f} {text}")
        logger.info("nemesis: %s", text)

    async def _expire(self, now: float) -> None:
        for i, (what, until) in sorted(self._down.items()):
            if until <= now:
                del self._down[i]
                await (self.target.restart(i) if what == "crash" else self.target.resume(i))
                self.log(f"{'restart' if what == 'crash' else 'resume'} {i}")
        if self._cut_until is not None and self._cut_until <= now:
            self._cut_until = None
            self.target.cut(())
            self.log("heal partition")
        for kind, until in list(self._network.items()):
            if until <= now:
                del self._network[kind]
                self._set_network()
                self.log(f"network {kind} over")

    async def _deal(self, now: float) -> None:
        if not self._deck:
            self._deck = self._rng.sample(self.kinds, len(self.kinds))
        for kind in self._deck:
            if await self._start(kind, now + self._rng.uniform(*self._span)):
                self._deck.remove(kind)
                self.actions += 1
                return

    async def _start(self, kind: str, until: float) -> bool:
        """Start a fault of `kind` lasting until `until`, if one can start now."""
        if kind == "partition" and self._cut_until is None:
            self._cut_until = until
            partition = await self._partition()
            self.target.cut(partition.links)
            self.log(f"partition {partition.shape} {partition.describe()}")
        elif kind in ("crash", "pause") and len(self._down) < self._max_down:
            victim = await self._victim()
            self._down[victim] = (kind, until)
            await (self.target.crash(victim) if kind == "crash" else self.target.pause(victim))
            self.log(f"{kind} {victim} until t={until:.3f}")
        elif kind == "membership":
            self.log(f"membership {await self.target.change_membership(self._rng)}")
        elif kind in ("flaky", "reorder") and kind not in self._network:
            self._network[kind] = until
            self._set_network()
            self.log(f"network {kind} until t={until:.3f}")
        else:
            return False
        return True

    def _set_network(self) -> None:
        self.target.set_network(flaky="flaky" in self._network, reorder="reorder" in self._network)

    async def _victim(self) -> int:
        leader = await self.target.leader()
        up = [i for i in range(self.target.n) if i not in self._down]
        if leader in up and self._rng.random() < 0.5:
            return leader
        return self._rng.choice(up)

    async def _partition(self) -> Partition:
        n, rng = self.target.n, self._rng
        shape = rng.choice(shapes(n))
        return draw_partition(shape, rng, n, await self.target.leader())
