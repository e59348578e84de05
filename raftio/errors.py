"""Errors raised to services by raftio's embedding API."""

from __future__ import annotations


class RaftioError(Exception):
    """Base class of raftio's errors."""


class NotLeaderError(RaftioError):
    """This peer is not the leader; `leader_id` / `leader_address` name the one it knows of."""

    def __init__(self, leader_id: int | None = None, leader_address: str | None = None) -> None:
        self.leader_id = leader_id
        self.leader_address = leader_address
        hint = f": try node {leader_id} at {leader_address}" if leader_id is not None else ""
        super().__init__(f"not the leader{hint}")


class ProposalTimeoutError(RaftioError, TimeoutError):
    """The command was not applied in time; it may still be applied later."""


class ProposalLostError(RaftioError):
    """Leadership changed before the command committed; it may or may not have been applied."""


class NodeClosedError(RaftioError):
    """The node is shut down."""


class NodeFailedError(NodeClosedError):
    """The node fail-stopped: it met something it could not trust (`reason` says what)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"the node fail-stopped: {reason}")


class LeadershipTransferError(RaftioError):
    """A leadership transfer did not complete in time; the old leader leads on (retriable)."""


class MembershipError(RaftioError):
    """A membership change was refused; `retriable` says whether trying again may succeed."""

    retriable = False


class ChangePendingError(MembershipError):
    """Another configuration change is not committed yet, or this leader's term has
    committed nothing yet (raft-dev 2015): try again shortly."""

    retriable = True


class DuplicateMemberError(MembershipError, ValueError):
    """The node id or address already belongs to a member."""


class UnknownMemberError(MembershipError, ValueError):
    """No member has this node id."""


class LastVoterError(MembershipError, ValueError):
    """Removing this voter would leave the cluster without one."""


class NotVoterError(MembershipError, ValueError):
    """The node named is not a voter (e.g. the target of a leadership transfer)."""


class NotSingleChangeError(MembershipError, ValueError):
    """A configuration may change the voters by one server at a time."""


class CatchUpError(MembershipError):
    """A new member did not catch up with the leader in time (it stays a learner; retriable)."""

    retriable = True
