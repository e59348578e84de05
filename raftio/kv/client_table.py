"""Where each member serves KV clients: the client-address table, replicated through the log.

Raft's configuration holds each member's Raft (peer) address; the KV
service also needs each member's *client* address, to redirect a client
to the leader. The first members get theirs on the command line
(`--client-peers`). A member added later reaches every replica through
the log: before it is added, the leader proposes the whole table (the
client address of every current member it knows, and the new member's)
as one KV command,

    ("clients", ((node_id, "host:port"), ...))

which every replica applies alike and keeps in its snapshots. Like a
configuration entry it holds the whole table, not a change, so a node
that joins learns every member's client address from the latest one.

Pure: no I/O, no asyncio.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from raftio.membership import MAX_MEMBERS, check_member

__all__ = ["CLIENTS", "check_table", "clients_command", "table_items"]

CLIENTS = "clients"  # the command's tag


def clients_command(table: Mapping[int, str]) -> tuple[Any, ...]:
    """The command that replicates `table` (node id -> client "host:port"), sorted by id."""
    return (CLIENTS, tuple(sorted(table.items())))


def table_items(table: Mapping[int, str]) -> list[list[Any]]:
    """The table as it is stored in a snapshot and hashed for the digest: [[id, address], ...]."""
    return [[node_id, address] for node_id, address in sorted(table.items())]


def check_table(items: Any) -> dict[int, str]:
    """The table a command or a snapshot holds; ValueError naming what is wrong.

    Every replica checks the same bytes the same way, so a malformed table
    (only a forged or damaged entry can hold one) is refused alike everywhere.
    """
    if not isinstance(items, list | tuple) or len(items) > MAX_MEMBERS:
        raise ValueError(f"a client-address table is a list of at most {MAX_MEMBERS} pairs")
    table: dict[int, str] = {}
    for item in items:
        if not isinstance(item, list | tuple) or len(item) != 2:
            raise ValueError(f"client-address entry {item!r:.60} is not an (id, address) pair")
        node_id, address = item
        check_member(node_id, address)
        if node_id in table:
            raise ValueError(f"client-address table names node {node_id} twice")
        table[node_id] = address
    return table
