"""The nemesis's "membership" fault: the leader adds, removes or hands over, at random.

Changes go through `Node.add_member` / `remove_member` / `transfer_leadership`
on the node that leads, as a service would call them; each runs in the
background (adding a voter waits for it to catch up) and may be refused or
cut short by the other faults. Refusals are expected: the point is that no
schedule of changes, partitions and crashes loses an acknowledged write or
breaks linearizability.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Coroutine, Sequence
from typing import Any

from raftio.errors import RaftioError
from raftio.node import Node

ACTIONS = ("add", "remove", "transfer")


def change(
    node: Node, rng: random.Random, addresses: Sequence[str], tasks: set[asyncio.Task[object]]
) -> str:
    """Start one membership action on leader `node` (ids index `addresses`); what it was."""
    config = node.configuration()
    members = set(config.voters) | set(config.learners)
    # Grow back whoever is out more often than not, so the cluster keeps changing shape.
    missing = len(members) < len(addresses) or bool(config.learners)
    action = rng.choices(ACTIONS, (2, 1, 1) if missing else (0, 1, 1))[0]
    work: Coroutine[Any, Any, object]
    if action == "add":
        outsiders = [i for i in range(len(addresses)) if i not in members]
        promote = [i for i in config.learners]
        if not outsiders and not promote:
            return "add: everyone votes"
        target = rng.choice(outsiders + promote)
        voter = target in promote or rng.random() < 0.7
        work = node.add_member(target, addresses[target], voter=voter, timeout=3.0)
        what = f"add {target} as a {'voter' if voter else 'learner'}"
    elif action == "remove":
        target = rng.choice(sorted(members))
        work = node.remove_member(target, timeout=3.0)
        what = f"remove {target}"
    else:
        voters = [v for v in config.voters if v != node.node_id]
        if not voters:
            return "transfer: no other voter"
        target = rng.choice(voters)
        work = node.transfer_leadership(target)
        what = f"transfer to {target}"
    task: asyncio.Task[object] = asyncio.ensure_future(_expected(work))
    tasks.add(task)
    task.add_done_callback(tasks.discard)
    return what


async def _expected(work: Coroutine[Any, Any, object]) -> object:
    """Await `work`; raftio's own refusals and losses are part of the game."""
    try:
        return await work
    except (RaftioError, ValueError, TimeoutError):
        return None
