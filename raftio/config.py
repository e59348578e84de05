"""RaftConfig: every timing and sizing knob of a peer, in seconds and bytes.

The core counts time in ticks; the tick counts are derived here, once.
Defaults satisfy CONTRACT.md section 5: at most 10 heartbeats per second
per follower, and elections that finish well inside 5 seconds.
"""

from __future__ import annotations

from dataclasses import dataclass

_MAX_SNAPSHOT_WINDOW = 32 << 20


@dataclass(frozen=True, slots=True)
class RaftConfig:
    """Timing and batching settings of one peer.

    Attributes:
        tick_interval: seconds per logical clock tick of the core.
        heartbeat_interval: seconds between heartbeats to an idle follower.
        election_timeout_min: lower bound of the randomized election timeout.
        election_timeout_max: upper bound of the randomized election timeout.
        max_inflight: AppendEntries RPCs a leader keeps in flight per follower.
        max_batch_bytes: command bytes a leader puts in one AppendEntries.
        max_apply_batch: entries the applier hands over before yielding.
        pre_vote: ask for pre-votes before a real election (Raft thesis 9.6), so
            a node rejoining from a partition cannot disrupt a healthy leader.
        check_quorum: a leader steps down once it has not heard from a
            majority for an election timeout (Raft thesis 6.2).
        storage_stall_timeout: a leader whose storage has not finished a
            sync for this long steps down.
        leader_noop: a new leader appends a no-op entry (command None) so that
            it commits an entry of its term at once (§8; needed for reads).
        snapshot_chunk_bytes: bytes of snapshot data in one InstallSnapshot.
        snapshot_chunks_inflight: InstallSnapshot chunks a leader keeps in
            flight per follower (with the chunk size: the memory a transfer
            may hold on either side).
        lease_reads: a leader answers linearizable reads without a heartbeat
            round while a majority acknowledged one that started less than
            `lease_duration` ago (Raft thesis 6.4.1). Opt-in: it is safe only
            while clocks run within `max_clock_drift` of each other (below).
        max_clock_drift: the largest fraction by which one peer's monotonic
            clock may run faster or slower than another's (0.1: 10%); the
            lease is shortened by it. Ignored without `lease_reads`.
    """

    tick_interval: float = 0.01
    heartbeat_interval: float = 0.1
    election_timeout_min: float = 0.3
    election_timeout_max: float = 0.6
    max_inflight: int = 4
    max_batch_bytes: int = 1 << 20
    max_apply_batch: int = 512
    pre_vote: bool = True
    check_quorum: bool = True
    storage_stall_timeout: float = 1.0
    leader_noop: bool = False
    snapshot_chunk_bytes: int = 1 << 20
    snapshot_chunks_inflight: int = 4
    lease_reads: bool = False
    max_clock_drift: float = 0.1

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ValueError if the settings cannot work together."""
        if not self.tick_interval > 0:
            raise ValueError("tick_interval must be positive")
        if self.heartbeat_interval < self.tick_interval:
            raise ValueError("heartbeat_interval must be at least one tick")
        if not self.heartbeat_interval < self.election_timeout_min:
            raise ValueError("election_timeout_min must exceed heartbeat_interval")
        if not self.election_timeout_min < self.election_timeout_max:
            raise ValueError("election_timeout_max must exceed election_timeout_min")
        if self.max_inflight < 1:
            raise ValueError("max_inflight must be at least 1")
        if self.max_batch_bytes < 1:
            raise ValueError("max_batch_bytes must be positive")
        if not self.storage_stall_timeout > 0:
            raise ValueError("storage_stall_timeout must be positive")
        if self.max_apply_batch < 1:
            raise ValueError("max_apply_batch must be at least 1")
        if not 1 <= self.snapshot_chunk_bytes <= 32 << 20:
            raise ValueError("snapshot_chunk_bytes must be between 1 and 32 MiB")
        if self.snapshot_chunks_inflight < 1:
            raise ValueError("snapshot_chunks_inflight must be at least 1")
        if self.snapshot_chunk_bytes * self.snapshot_chunks_inflight > _MAX_SNAPSHOT_WINDOW:
            # What a transfer may hold in memory on each side, whatever the state's size.
            raise ValueError("snapshot_chunk_bytes * snapshot_chunks_inflight must be <= 32 MiB")
        if not 0 <= self.max_clock_drift < 1:
            raise ValueError("max_clock_drift must be at least 0 and below 1")
        if self.lease_reads and not self.check_quorum:
            # The lease rests on voters refusing elections while they hear a leader.
            raise ValueError("lease_reads needs check_quorum")

    @property
    def heartbeat_ticks(self) -> int:
        return max(1, round(self.heartbeat_interval / self.tick_interval))

    @property
    def lease_duration(self) -> float:
        """Seconds a leader may serve reads after a heartbeat round a majority answered,
        counted from the round's start.

        A voter that heard the leader refuses to elect another for at least
        `election_ticks[0] - 1` of its ticks (its first tick may come at once),
        each at least `tick_interval` of its own clock; shortened by the drift.
        """
        return (self.election_ticks[0] - 1) * self.tick_interval * (1 - self.max_clock_drift)

    @property
    def election_ticks(self) -> tuple[int, int]:
        """(min, max) election timeout in ticks, inclusive."""
        low = max(self.heartbeat_ticks + 1, round(self.election_timeout_min / self.tick_interval))
        high = max(low + 1, round(self.election_timeout_max / self.tick_interval))
        return low, high
