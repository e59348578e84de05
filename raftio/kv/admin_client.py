"""KVAdmin: membership changes and leadership transfer, asked through a KVClient.

Owns the client side of the admin requests (raftio.kv.protocol). The
KVClient finds the leader and retries timeouts, lost connections and
redirects; on top of that, a `pending` answer (another change not yet
committed, a new member still catching up, a transfer that did not
complete) is retried `attempts` times, `pause` seconds apart.

A change that an earlier attempt may have made (its answer was lost or
timed out), and whose retry is then refused for good (`membership`:
"already a member", "not a member"), is checked against the leader's
configuration: if the cluster is already as asked, that earlier attempt
made the change, and it is reported as done.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from raftio.kv.client import KVClient, KVRequestError
from raftio.kv.protocol import MEMBERSHIP, PENDING, Members, ProtocolError, check_node_id

__all__ = ["KVAdmin"]

logger = logging.getLogger(__name__)


class KVAdmin:
    """Admin requests to the cluster `client` talks to.

    The client's `attempt_timeout` must exceed the servers' `admin_timeout`
    (10 s by default), or a change still under way is abandoned and retried.
    """

    def __init__(self, client: KVClient, *, attempts: int = 10, pause: float = 0.5) -> None:
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        self.client = client
        self._attempts, self._pause = attempts, pause

    async def members(self) -> Members:
        """The leader's configuration: voters and learners with their addresses."""
        return Members.from_wire(await self._ask({"op": "members"}))

    async def add_member(
        self, node_id: int, raft_address: str, client_address: str, *, voter: bool = True
    ) -> Members:
        """Add a node started with `--join`: a learner, then (`voter`) a voter once caught up."""
        request = {"op": "member_add", "id": node_id, "raft_address": raft_address,
                   "client_address": client_address, "voter": voter}  # fmt: skip

        def done(members: Members) -> bool:
            member = members.member(node_id)
            return (
                member is not None
                and member.raft_address == raft_address
                and members.role(node_id) == ("voter" if voter else "learner")
            )

        return await self._change(request, done)

    async def remove_member(self, node_id: int) -> Members:
        """Remove voter or learner `node_id`; the configuration once the removal committed."""
        request = {"op": "member_remove", "id": node_id}
        return await self._change(request, lambda members: members.role(node_id) is None)

    async def transfer(self, to: int | None = None) -> int:
        """Hand leadership to voter `to` (None: the most caught-up); the new leader's id."""
        leader = await self._ask({"op": "transfer", "to": to})
        try:
            return check_node_id(leader, "the new leader")
        except ProtocolError:
            raise ProtocolError(f"transfer answered {leader!r:.60}, not a node id") from None

    async def _change(self, request: dict[str, Any], done: Callable[[Members], bool]) -> Members:
        try:
            return Members.from_wire(await self._ask(request))
        except KVRequestError as exc:
            if exc.error != MEMBERSHIP or not exc.maybe_applied:
                raise
            members = await self.members()
            if not done(members):
                raise
            logger.info("%s: an earlier attempt made the change (%s)", request["op"], exc)
            return members

    async def _ask(self, request: dict[str, Any]) -> Any:
        maybe_applied = False
        for attempt in range(1, self._attempts + 1):
            try:
                return await self.client.request(request)
            except KVRequestError as exc:
                maybe_applied |= exc.maybe_applied
                if exc.error != PENDING or attempt == self._attempts:
                    if maybe_applied and not exc.maybe_applied:
                        raise KVRequestError(exc.error, exc.message, maybe_applied=True) from None
                    raise
                logger.info("%s: %s; retrying (%d/%d)", request["op"], exc, attempt, self._attempts)
            await asyncio.sleep(self._pause)
        raise AssertionError("unreachable")  # the loop returns or raises
