"""What each KV request does on one node, and which protocol error each of raftio's errors becomes.

Owns the mapping from requests to `Node.propose` / `Node.read` (admin
requests to raftio.kv.admin), from raftio's errors to protocol error
codes, and the `status` map. No sockets: raftio.kv.server reads frames,
admits connections and calls `handle` for each admitted request.
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import asdict
from typing import Any

from raftio.errors import (
    LeadershipTransferError,
    MembershipError,
    NodeClosedError,
    NotLeaderError,
    ProposalLostError,
    ProposalTimeoutError,
)
from raftio.kv.admin import Admin
from raftio.kv.machine import KVCommandError, KVStateMachine, register_command, write_command
from raftio.kv.protocol import (
    ADMIN_OPS,
    AUTH_OPS,
    CLOSED,
    FAILED,
    LOST,
    MEMBERSHIP,
    NOT_LEADER,
    PENDING,
    TIMEOUT,
    Request,
    error_reply,
    ok_reply,
)
from raftio.node import Node

__all__ = ["Requests"]


class Requests:
    """Serves parsed requests for `node`, whose state machine is `machine`.

    Args:
        node: the started Node.
        machine: its KVStateMachine.
        client_addresses: client "host:port" by node id from the command line.
        timeout: seconds a write or read may wait before answering `timeout`.
        max_sessions, max_result_chars: the session limits each register carries.
        admin_timeout: seconds a membership change may take (raftio.kv.admin).
    """

    def __init__(
        self,
        node: Node,
        machine: KVStateMachine,
        client_addresses: dict[int, str],
        *,
        timeout: float,
        max_sessions: int,
        max_result_chars: int,
        admin_timeout: float,
    ) -> None:
        self.node, self.machine = node, machine
        self._client_addresses = client_addresses
        self._timeout = timeout
        self._max_sessions, self._max_result_chars = max_sessions, max_result_chars
        self._admin = Admin(node, machine, client_addresses, admin_timeout)

    async def handle(self, request: Request) -> dict[str, Any]:
        """Answer one request with a reply map (never raises for raftio's errors)."""
        try:
            return ok_reply(await self._execute(request))
        except NotLeaderError as exc:
            leader = self._admin.client_address(exc.leader_id)
            hint = f"; try node {exc.leader_id} at {leader}" if leader else ""
            return error_reply(
                NOT_LEADER, f"node {self.node.node_id} is not the leader{hint}", leader
            )
        except ProposalTimeoutError as exc:
            return error_reply(TIMEOUT, str(exc))
        except ProposalLostError as exc:
            return error_reply(LOST, str(exc))
        except NodeClosedError as exc:
            return error_reply(CLOSED, str(exc))
        except MembershipError as exc:  # before ValueError: most of them are ValueErrors too
            return error_reply(PENDING if exc.retriable else MEMBERSHIP, str(exc))
        except LeadershipTransferError as exc:
            return error_reply(PENDING, str(exc))
        except KVCommandError as exc:  # a session check or the state machine refused it
            return error_reply(exc.error, str(exc))
        except ValueError as exc:
            return error_reply(FAILED, str(exc))

    async def _execute(self, request: Request) -> Any:
        if request.op == "status":
            return self.status()
        if request.op == "get":
            return await self.node.read(request.key, timeout=self._timeout)
        if request.op in ADMIN_OPS:
            return await self._admin.execute(request)
        if request.op == "register":
            nonce = secrets.token_hex(8)
            command = register_command(nonce, self._max_sessions, self._max_result_chars)
        elif request.op in AUTH_OPS:
            return None  # an admitted connection repeating the handshake: harmless
        else:
            command = write_command(
                request.op, request.key, request.value, request.session, request.seq
            )
        return await self.node.propose(command, timeout=self._timeout)

    def status(self) -> dict[str, Any]:
        """The node's status plus this service's view: client addresses, configuration,
        key count, digest.

        Constant work on the event loop: the digest is kept up to date by the
        state machine, not computed here.
        """
        status = asdict(self.node.status())
        status["role"] = str(status["role"])  # a plain str on the wire
        status["client_address"] = self._client_addresses[self.node.node_id]
        status["leader_client_address"] = self._admin.client_address(status["leader_id"])
        status.update(self._membership())
        status["keys"] = len(self.machine.data)
        status["sessions"] = len(self.machine.sessions)
        status["digest"] = self.machine.digest()
        status["metrics"] = self.node.metrics()
        status["loop"] = type(asyncio.get_running_loop()).__module__.partition(".")[0]
        return status

    def _membership(self) -> dict[str, Any]:
        """This node's view of the configuration: voters, learners, and what it is in it."""
        config = self.node.configuration()
        me = self.node.node_id
        if me in config.voters or me in config.learners:
            member = "voter" if me in config.voters else "learner"
        else:  # no voter known: waiting to be added (--join); else it was removed
            member = "removed" if config.voters else "joining"
        return {"voters": sorted(config.voters), "learners": sorted(config.learners),
                "member": member}  # fmt: skip
