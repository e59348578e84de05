"""The KV port's admin requests on one node: membership changes and leadership transfer.

Owns what `members`, `member_add`, `member_remove` and `transfer` do, and
where each member serves clients (the command line's `--client-peers`,
overridden by the table replicated through the log: `client_table`). Every
request is served by the leader only; a follower answers NotLeaderError
naming the leader, so clients find it as they do for writes.

`member_add` proposes the client-address table first, then calls
`Node.add_member`: once the new member is in any configuration, every
replica (and the new one, from the log or a snapshot) can already
redirect clients to it. A refused change leaves at most a table entry for
a node that is not a member, which nobody reads and the next table drops.

The server (raftio.kv.server) authenticates the connection and turns the
errors raised here into protocol error codes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from raftio.errors import ChangePendingError, MembershipError, NotLeaderError
from raftio.kv.client_table import clients_command
from raftio.kv.machine import KVStateMachine
from raftio.kv.protocol import Member, Members, Request
from raftio.membership import Configuration, Membership
from raftio.node import Node

__all__ = ["Admin", "MemberRefusedError"]


class MemberRefusedError(MembershipError, ValueError):
    """The configuration refuses this request for good (an address taken, a bad address, ...)."""


class Admin:
    """Serves admin requests for `node`, whose state machine is `machine`.

    Args:
        node: the started Node.
        machine: its KVStateMachine (holds the replicated client-address table).
        static: client addresses by node id from the command line (the first members').
        timeout: seconds a change may take: each of its entries to commit, and a
            new member to catch up (retry after `pending` to wait longer).
    """

    def __init__(
        self, node: Node, machine: KVStateMachine, static: Mapping[int, str], timeout: float
    ) -> None:
        self._node, self._machine = node, machine
        self._static = dict(static)
        self._timeout = timeout

    def client_address(self, node_id: int | None) -> str | None:
        """Where `node_id` serves clients: the replicated table's, else the command line's."""
        if node_id is None:
            return None
        return self._machine.clients.get(node_id) or self._static.get(node_id)

    async def execute(self, request: Request) -> Any:
        """The reply value of an admin request; raises raftio's errors (see the server)."""
        if request.op == "members":
            self._check_leader()
            return self.members().to_wire()
        if request.op == "transfer":
            return await self.transfer(request.node_id)
        assert request.node_id is not None  # parse_request checked it
        if request.op == "member_remove":
            return (await self.remove(request.node_id)).to_wire()
        added = await self.add(
            request.node_id, request.raft_address, request.client_address, voter=request.voter
        )
        return added.to_wire()

    def members(self) -> Members:
        """This node's configuration, with every member's client address."""
        membership = self._node.configuration()
        return Members(
            self._listed(membership.voters),
            self._listed(membership.learners),
            membership.index,
            membership.committed,
            self._node.status().leader_id,
        )

    async def add(self, node_id: int, raft: str, client: str, *, voter: bool) -> Members:
        """Replicate `client` as node_id's client address, then add it (a learner first)."""
        self._check_leader()
        membership = self._node.configuration()
        if not membership.committed:
            raise ChangePendingError("the last configuration change is not committed yet: retry")
        config = Configuration(membership.voters, membership.learners)
        if not (voter and config.learners.get(node_id) == raft):  # else: promote a learner
            try:
                config.with_member(node_id, raft, voter=False)  # refuse before writing anything
            except MembershipError:
                raise
            except ValueError as exc:
                raise MemberRefusedError(str(exc)) from None
        table = self._table_with(membership, node_id, raft, client)
        if table != self._machine.clients:
            await self._node.propose(clients_command(table), timeout=self._timeout)
        await self._node.add_member(node_id, raft, voter=voter, timeout=self._timeout)
        return self.members()

    async def remove(self, node_id: int) -> Members:
        """Remove voter or learner `node_id`; a leader removing itself hands over afterwards."""
        self._check_leader()
        await self._node.remove_member(node_id, timeout=self._timeout)
        return self.members()

    async def transfer(self, to: int | None) -> int:
        """Hand leadership to voter `to` (None: the most caught-up); the new leader's id."""
        self._check_leader()
        return await self._node.transfer_leadership(to)  # NotVoterError for a learner or stranger

    # ------------------------------------------------------------------ helpers

    def _check_leader(self) -> None:
        if not self._node.is_leader():
            status = self._node.status()
            raise NotLeaderError(status.leader_id, status.leader_address)

    def _listed(self, members: Mapping[int, str]) -> list[Member]:
        listed = sorted(members.items())
        return [Member(i, address, self.client_address(i)) for i, address in listed]

    def _table_with(
        self, membership: Membership, node_id: int, raft: str, client: str
    ) -> dict[int, str]:
        """The current members' client addresses, plus node_id's; refuses an address taken."""
        current = {**membership.voters, **membership.learners}
        table = {i: a for i in current if i != node_id and (a := self.client_address(i))}
        taken = {**{a: i for i, a in current.items()}, **{a: i for i, a in table.items()}}
        for address in (raft, client):
            owner = taken.get(address)
            if owner is not None and owner != node_id:
                raise MemberRefusedError(f"address {address} is node {owner}'s")
        table[node_id] = client
        return table
