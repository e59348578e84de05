"""KVClient's redirects: a stale hint never traps a request between two nodes."""

from __future__ import annotations

import random
from typing import Any

from raftio.kv import KVClient
from raftio.testing import run

A, B, C = "10.0.0.1:8000", "10.0.0.2:8000", "10.0.0.3:8000"


def test_a_stale_hint_does_not_bounce_a_read_between_two_nodes_forever() -> None:
    """A removed node (A) still names the node it last heard lead (B), which no
    longer knows a leader; the leader (C) must still be found."""
    replies = {
        A: {"ok": False, "error": "not_leader", "leader": B, "message": "try B"},
        B: {"ok": False, "error": "not_leader", "leader": None, "message": "no leader"},
        C: {"ok": True, "value": "v"},
    }
    tried: list[str] = []

    async def exchange(address: str, request: dict[str, Any]) -> dict[str, Any]:
        tried.append(address)
        return replies[address]

    async def main() -> Any:
        # B first: after it, rotation reaches A, whose hint leads back to B.
        client = KVClient([B, A, C], exchange=exchange, backoff=(0.0, 0.0), rng=random.Random(1))
        async with client:
            return await client.request({"op": "get", "key": "k"})

    assert run(main(), "virtual") == "v"
    assert tried == [B, A, C]
