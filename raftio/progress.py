"""A peer's role, and a leader's view of each follower: pure data, no I/O."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from raftio.snapshot_transfer import Outgoing


class Role(enum.StrEnum):
    """A peer's role; a str, so `status().role == "leader"` reads as it always did."""

    FOLLOWER = "follower"
    PRE_CANDIDATE = "pre-candidate"  # asking whether it could win, term unchanged (thesis 9.6)
    CANDIDATE = "candidate"
    LEADER = "leader"
    FAILED = "failed"  # the shell fail-stopped the peer; never a state of the core itself


class Replication(enum.Enum):
    """How a leader talks to one follower (cf. etcd's Progress states)."""

    PROBE = "probe"  # next_index unconfirmed: one AppendEntries per reply or heartbeat
    REPLICATE = "replicate"  # in sync: stream entries, up to max_inflight at once
    SNAPSHOT = "snapshot"  # an InstallSnapshot is in flight


@dataclass(slots=True)
class Progress:
    """A leader's view of one follower."""

    next_index: int
    match_index: int = 0
    state: Replication = Replication.PROBE
    paused: bool = False  # PROBE/SNAPSHOT: waiting for a reply before sending again
    inflight: int = 0  # AppendEntries with entries not yet answered (REPLICATE)
    wait_ticks: int = 0  # REPLICATE: ticks spent waiting for entries in flight to be answered
    recent_active: bool = False  # answered since the last check-quorum
    sent_commit: int = 0  # the highest leader_commit sent to this follower
    outgoing: Outgoing | None = None  # SNAPSHOT: the transfer under way

    def become_probe(self) -> None:
        self.state = Replication.PROBE
        self.next_index = self.match_index + 1
        self.paused = False
        self.inflight = 0
        self.wait_ticks = 0
        self.outgoing = None


def quorum(voters: int) -> int:
    """How many of `voters` make a majority: the one quorum rule of raftio."""
    return voters // 2 + 1


def majority_match(match_indexes: list[int]) -> int:
    """The highest index that a majority of `match_indexes` has reached."""
    ordered = sorted(match_indexes, reverse=True)
    return ordered[quorum(len(ordered)) - 1]
