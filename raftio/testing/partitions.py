"""Network partitions as sets of cut links: the one fault vocabulary of every nemesis.

Both the key/value nemesis (`raftio.testing.nemesis`) and the Figure 2
simulator (`raftio.testing.sim`) draw their partitions here, so a shape
means the same thing, and reads the same in their logs, in both.

A link (i, j) is node i's connection to node j: cut, it carries none of
node i's requests to node j nor their replies; node j's own requests to
node i still flow unless (j, i) is cut too. Nodes are 0..n-1. Shapes:

* split: a random minority (1 to n // 2 nodes) cut from the rest, both ways;
* isolate_leader: the leader (a random node if there is none) cut from
  everyone, both ways;
* bridge: two groups cut from each other, both ways, and one node joined
  to both (n >= 3);
* one_way: the leader (a random node if there is none) can no longer send
  to anyone; everyone can still send to it, and hears its replies.

Pure: never imports asyncio; a partition is a function of the rng, n and the leader.
"""

from __future__ import annotations

import random
from collections.abc import Collection
from dataclasses import dataclass

__all__ = ["SHAPES", "Link", "Partition", "between", "describe_links", "draw_partition", "shapes"]

Link = tuple[int, int]  # (i, j): node i's connection to node j (its requests, their replies)

SHAPES = ("split", "isolate_leader", "bridge", "one_way")


@dataclass(frozen=True, slots=True)
class Partition:
    """One partition: its shape, the links it cuts, and who is cut from whom."""

    shape: str
    links: frozenset[Link]
    groups: str  # "[0] | [1, 2]", "[0] alone", "[1] | [2] bridged by 0", "0 cannot send"

    def describe(self) -> str:
        """Who is cut from whom, then the links: `[0] | [1, 2]: cut 0->1 0->2 1->0 2->0`."""
        return f"{self.groups}: cut {describe_links(self.links)}"


def shapes(n: int) -> tuple[str, ...]:
    """The shapes a cluster of n nodes can take (a bridge needs three)."""
    return SHAPES if n >= 3 else ("split", "isolate_leader")


def draw_partition(shape: str, rng: random.Random, n: int, leader: int | None) -> Partition:
    """A partition of `shape` among nodes 0..n-1, drawn from `rng`."""
    if shape not in shapes(n):
        raise ValueError(f"no {shape!r} partition of {n} nodes; expected one of {shapes(n)}")
    nodes = list(range(n))
    rng.shuffle(nodes)
    if shape in ("isolate_leader", "one_way") and leader is not None:
        nodes.remove(leader)
        nodes.insert(0, leader)
    if shape == "split":
        k = rng.randint(1, n // 2)
        minority, rest = nodes[:k], nodes[k:]
        return Partition(shape, between(minority, rest), f"{sorted(minority)} | {sorted(rest)}")
    if shape == "isolate_leader":
        return Partition(shape, between(nodes[:1], nodes[1:]), f"[{nodes[0]}] alone")
    if shape == "bridge":
        k = rng.randint(2, n - 1)
        left, right = nodes[1:k], nodes[k:]
        text = f"{sorted(left)} | {sorted(right)} bridged by {nodes[0]}"
        return Partition(shape, between(left, right), text)
    cut = frozenset((nodes[0], j) for j in nodes[1:])
    return Partition(shape, cut, f"{nodes[0]} cannot send")


def between(a: Collection[int], b: Collection[int]) -> frozenset[Link]:
    """Every link between a node of `a` and a node of `b`, both ways."""
    return frozenset({(i, j) for i in a for j in b} | {(j, i) for i in a for j in b})


def describe_links(links: Collection[Link]) -> str:
    """`0->1 0->2`, in order; `nothing` for no link."""
    return " ".join(f"{i}->{j}" for i, j in sorted(links)) or "nothing"
