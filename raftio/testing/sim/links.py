"""Links: the simulation's per-link fault rules (a `raftio.transport.memory.LinkFaults`).

A message from peer `src` to peer `dst` (a request on an end named
``(src, dst, incarnation)``, or the reply to a request `dst` made of `src`)
is lost if the link src->dst is cut, else lost with probability `loss`,
else delivered after a base latency plus `delay` (and, with probability
`long_delay`, held 0.2-2 s: reordering), and a request is duplicated with
probability `duplicate`. Which links a partition cuts is drawn by
`raftio.testing.partitions` (split, isolate_leader, bridge, one_way), the
vocabulary the key/value nemesis uses too; `partition()` applies one.
"""

from __future__ import annotations

import random
from collections.abc import Collection, Hashable, Sequence

from raftio.testing.partitions import Link

_BASE_LATENCY = (0.0002, 0.002)
_LONG_DELAY = (0.2, 2.0)


class Links:
    """Which links are cut, and how lossy, slow and repetitive the others are."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self.cut: set[Link] = set()
        self.isolated: set[int] = set()  # peers cut off from everyone, both ways
        self.loss = 0.0
        self.duplicate = 0.0
        self.delay = 0.0  # extra uniform delay up to this many seconds
        self.long_delay = 0.0
        self.corrupt = 0.0  # chance a snapshot chunk arrives damaged (see SimCluster)

    # --- topology ------------------------------------------------------------

    def heal(self) -> None:
        self.cut.clear()
        self.isolated.clear()

    def isolate(self, peer: int) -> None:
        self.isolated.add(peer)

    def rejoin(self, peer: int) -> None:
        self.isolated.discard(peer)

    def partition(self, links: Collection[Link]) -> None:
        """Heal, then cut exactly `links` (a `raftio.testing.partitions.Partition`'s)."""
        self.heal()
        self.cut.update(links)

    def calm(self) -> None:
        """No loss, duplication or extra delay (cuts stay)."""
        self.loss = self.duplicate = self.delay = self.long_delay = self.corrupt = 0.0

    def describe(self) -> str:
        cuts = " ".join(f"{a}->{b}" for a, b in sorted(self.cut)) or "none"
        alone = " ".join(f"S{i}" for i in sorted(self.isolated)) or "none"
        return (
            f"cut={cuts} isolated={alone} loss={self.loss:.2f} dup={self.duplicate:.2f} "
            f"delay={self.delay * 1000:.0f}ms long={self.long_delay:.2f} corrupt={self.corrupt:.2f}"
        )

    # --- LinkFaults ----------------------------------------------------------

    def request(self, end_name: Hashable, server_name: Hashable, method: str) -> Sequence[float]:
        src, dst = _peers(end_name, server_name)
        if self._blocked(src, dst) or self._lost():
            return ()
        if self.duplicate and self._rng.random() < self.duplicate:
            return (self._latency(), self._latency())
        return (self._latency(),)

    def reply(self, end_name: Hashable, server_name: Hashable, method: str) -> float | None:
        src, dst = _peers(end_name, server_name)
        if self._blocked(dst, src) or self._lost():
            return None
        return self._latency()

    def _blocked(self, src: int, dst: int) -> bool:
        isolated = self.isolated
        return (src, dst) in self.cut or (bool(isolated) and (src in isolated or dst in isolated))

    def _lost(self) -> bool:
        return bool(self.loss) and self._rng.random() < self.loss

    def _latency(self) -> float:
        rng = self._rng
        latency = rng.uniform(*_BASE_LATENCY)
        if self.delay:
            latency += rng.uniform(0, self.delay)
        if self.long_delay and rng.random() < self.long_delay:
            latency += rng.uniform(*_LONG_DELAY)
        return latency


def _peers(end_name: Hashable, server_name: Hashable) -> tuple[int, int]:
    assert isinstance(end_name, tuple)
    src = end_name[0]
    assert isinstance(src, int)
    assert isinstance(server_name, int)
    return src, server_name
