"""Read-only windows on a running peer: its status, its metrics, its core.

`Raft.status()` and `Raft.metrics()` are what monitoring reads.
`Raft.view` is for test harnesses (the simulator, the invariant checker,
the fuzzers): the core's whole state through properties that cannot change
it, instead of reaching into `raft._core`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from raftio.core import RaftCore, Role
from raftio.messages import Entry


@dataclass(frozen=True, slots=True)
class RaftStatus:
    """What `Raft.status()` reports."""

    me: int
    role: Role
    term: int
    leader_id: int | None
    commit_index: int
    last_index: int
    snapshot_index: int
    term_start_index: int  # a leader's first index of its term (0 if not leader)
    match_index: dict[int, int]
    failure: str | None = None  # why the peer fail-stopped (role is then "failed")


def status_of(me: int, core: RaftCore, failure: str | None) -> RaftStatus:
    return RaftStatus(
        me=me,
        role=Role.FAILED if failure is not None else core.role,
        term=core.current_term,
        leader_id=core.leader_id,
        commit_index=core.commit_index,
        last_index=core.log.last_index,
        snapshot_index=core.log.snapshot_index,
        term_start_index=core.term_start_index,
        match_index={peer: pr.match_index for peer, pr in core.progress.items()},
        failure=failure,
    )


def core_metrics(core: RaftCore, *, leading: bool, failed: bool) -> dict[str, float]:
    """The core's counters and gauges, keyed by Prometheus sample name."""
    out: dict[str, float] = {
        "raftio_term": core.current_term,
        "raftio_is_leader": int(leading),
        "raftio_commit_index": core.commit_index,
        "raftio_last_index": core.log.last_index,
        "raftio_snapshot_index": core.log.snapshot_index,
        "raftio_applied_index": core.applied_index,
        "raftio_elections_total": core.elections,
        "raftio_terms_led_total": core.terms_led,
        "raftio_failed": int(failed),
        "raftio_voters": len(core.configuration.voters),
        "raftio_learners": len(core.configuration.learners),
        "raftio_configuration_index": core.configs.latest_index,
        "raftio_is_voter": int(core.me in core.voters),
    }
    for reason, count in core.refused.items():
        out[f'raftio_refused_total{{reason="{reason}"}}'] = count
    return out


class LogView:
    """A peer's log, read-only: entries after the snapshot, and the snapshot's position."""

    __slots__ = ("_core",)

    def __init__(self, core: RaftCore) -> None:
        self._core = core

    @property
    def snapshot_index(self) -> int:
        return self._core.log.snapshot_index

    @property
    def snapshot_term(self) -> int:
        return self._core.log.snapshot_term

    @property
    def last_index(self) -> int:
        return self._core.log.last_index

    @property
    def last_term(self) -> int:
        return self._core.log.last_term

    @property
    def entries(self) -> Sequence[Entry]:
        """Entries snapshot_index + 1 ... last_index (the live list: do not keep it)."""
        return self._core.log.entries

    def term_at(self, index: int) -> int | None:
        return self._core.log.term_at(index)

    def entry(self, index: int) -> Entry:
        return self._core.log.entry(index)


class CoreView:
    """A peer's Raft state, read-only (`Raft.view`): what harnesses check invariants on."""

    __slots__ = ("_core", "log")

    def __init__(self, core: RaftCore) -> None:
        self._core = core
        self.log = LogView(core)

    @property
    def me(self) -> int:
        return self._core.me

    @property
    def current_term(self) -> int:
        return self._core.current_term

    @property
    def voted_for(self) -> int | None:
        return self._core.voted_for

    @property
    def role(self) -> Role:
        return self._core.role

    @property
    def leader_id(self) -> int | None:
        return self._core.leader_id

    @property
    def commit_index(self) -> int:
        return self._core.commit_index

    @property
    def applied_index(self) -> int:
        """The last index handed to the applier."""
        return self._core.applied_index

    @property
    def durable_index(self) -> int:
        return self._core.durable_index

    @property
    def term_start_index(self) -> int:
        return self._core.term_start_index

    @property
    def match_index(self) -> Mapping[int, int]:
        """A leader's knowledge of each follower's log (empty unless leading)."""
        return {peer: pr.match_index for peer, pr in self._core.progress.items()}

    def lease_holds(self, now: float) -> bool:
        """A leader may answer reads from its lease at loop time `now` (lease_reads)."""
        return self._core.lease_holds(now)

    @property
    def refused(self) -> Mapping[str, int]:
        """Peer input refused as impossible from an honest peer, by reason."""
        return dict(self._core.refused)
