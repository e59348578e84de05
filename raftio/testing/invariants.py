"""Raft's safety properties, checked incrementally while a cluster runs.

`InvariantChecker` watches every live peer's core through `Raft.view` (read-only), the
replies its RPC handlers give, and what its service applies. It checks, each
time it is told something changed (`step()` after every loop iteration,
`on_trace`, `on_reply`, `on_applied`, `peer_started`):

* election safety: at most one leader per term, ever (across incarnations);
* log matching: an (index, term) pair names one entry everywhere, and the
  same previous term, so equal pairs imply equal prefixes (by induction);
  terms never decrease along a log nor exceed the peer's current term;
* leader completeness: at election time, a leader's log holds the newest
  entry known committed in an earlier term (with log matching: all of them);
* committed entries never change: every entry at or below any peer's
  commit_index equals the one first seen committed at that index, and a
  peer never replaces an entry at or below its own commit_index;
* state machine safety: every service applies the same command, with the
  same hash chain, at each index, in index order;
* monotonicity: current_term and commit_index never decrease within one
  peer incarnation (a restart may restart commit_index from the snapshot);
* durability: a restarted peer keeps every promise its replies made: no
  term below one it replied with, the vote it granted in its current term,
  and the entry it acknowledged to its current term's leader.

Each check costs O(1) per step plus O(entries that changed). A violation
is reported once to `on_violation`; the checker then stops checking.
Reads the peers' views only (raftio.view.CoreView); never changes a peer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from raftio.core import Role
from raftio.messages import (
    AppendEntriesArgs,
    AppendEntriesReply,
    Entry,
    RequestVoteArgs,
    RequestVoteReply,
)
from raftio.storage.base import DurableState
from raftio.view import CoreView


@dataclass(frozen=True, slots=True)
class Violation:
    """A broken invariant: which one, what happened, and when (loop time)."""

    kind: str
    message: str
    time: float

    def __str__(self) -> str:
        return f"{self.kind} at t={self.time:.4f}: {self.message}"


@dataclass(slots=True)
class _PeerView:
    """What the checker last saw of one peer incarnation."""

    me: int
    incarnation: int
    core: CoreView
    term: int
    commit: int
    leader_term: int = 0  # last term this incarnation was seen leading
    # mirror[i] is the Entry object last seen at index i; unchanged objects are not rescanned
    mirror: dict[int, Entry] = field(default_factory=dict)
    mirror_last: int = 0
    mirror_snap: int = 0


@dataclass(slots=True)
class _Promise:
    """The state a peer's replies promised to keep (Figure 2: persist before responding)."""

    term: int = 0
    vote: tuple[int, int] | None = None  # (term, candidate) of the last vote granted
    ack: tuple[int, int, int | None] | None = None  # (term, match index, its term) of an AE ack


class InvariantChecker:
    """Checks Raft's safety properties for `peer_count` peers; see the module docstring."""

    def __init__(
        self,
        peer_count: int,
        now: Callable[[], float],
        on_violation: Callable[[Violation], None],
    ) -> None:
        self._now = now
        self._on_violation = on_violation
        self.violation: Violation | None = None
        self._views: dict[int, _PeerView] = {}
        self._promises = [_Promise() for _ in range(peer_count)]
        self.leaders: dict[int, tuple[int, int]] = {}  # term -> (peer, incarnation)
        self._pairs: dict[tuple[int, int], tuple[bytes, int]] = {}  # (index, term) -> (data, prev)
        self.committed: dict[int, Entry] = {}
        self._committed_by: dict[int, int] = {}  # commit-observation term -> max index
        # index -> (digest, term, command, peer) of the first apply seen at that index
        self._applied: dict[int, tuple[bytes, int, Any, int]] = {}
        self.max_committed = 0
        self.steps = 0

    # --- lifecycle -----------------------------------------------------------

    def peer_started(
        self, me: int, incarnation: int, core: CoreView, restored: DurableState
    ) -> None:
        """A peer (re)started from `restored`: check durability, then watch it."""
        self._check_promises(me, restored)
        view = _PeerView(me, incarnation, core, core.current_term, core.commit_index)
        view.mirror_snap = view.mirror_last = core.log.snapshot_index
        self._views[me] = view
        self._scan_log(view)

    def peer_stopped(self, me: int) -> None:
        """The peer crashed or stopped; stop watching it."""
        view = self._views.pop(me, None)
        if view is not None and self.violation is None:
            self._check_view(view)

    # --- events --------------------------------------------------------------

    def step(self) -> None:
        """Check every live peer (called after every loop iteration)."""
        if self.violation is not None:
            return
        self.steps += 1
        for view in self._views.values():
            core = view.core
            entries = core.log.entries
            if (  # fast path: nothing the checks look at has changed
                core.current_term == view.term
                and core.commit_index == view.commit
                and core.log.snapshot_index == view.mirror_snap
                and len(entries) == view.mirror_last - view.mirror_snap
                and (not entries or entries[-1] is view.mirror.get(view.mirror_last))
                and (core.role is not Role.LEADER or view.leader_term == view.term)
            ):
                continue
            self._check_view(view)

    def on_trace(self, me: int, topic: str, text: str) -> None:
        """A peer's trace line: catches a leader the moment it is elected."""
        if topic == "role" and text.startswith("became leader"):
            view = self._views.get(me)
            if view is not None and self.violation is None:
                self._on_leader(view)

    def on_reply(self, me: int, args: object, reply: object) -> None:
        """Peer `me`'s handler returned `reply` to `args`: remember what it promised."""
        promise = self._promises[me]
        term = getattr(reply, "term", 0)
        promise.term = max(promise.term, term)
        if isinstance(reply, RequestVoteReply) and isinstance(args, RequestVoteArgs):
            if reply.vote_granted and not getattr(args, "pre_vote", False):
                promise.vote = (args.term, args.candidate_id)
        elif (
            isinstance(reply, AppendEntriesReply)
            and isinstance(args, AppendEntriesArgs)
            and reply.success
        ):
            promise.ack = (reply.term, reply.match_index, _acked_term(args, reply))

    def on_applied(self, me: int, index: int, term: int, command: Any, digest: bytes) -> None:
        """Peer `me`'s service applied `command` at `index`; `digest` hashes everything so far."""
        known = self._applied.get(index)
        if known is None:
            self._applied[index] = (digest, term, command, me)
        elif known[0] != digest:
            self._fail(
                "state machine safety",
                f"S{me} applied {command!r}@T{term} at index {index}, but S{known[3]} "
                f"applied {known[2]!r}@T{known[1]} (or their histories differ before it)",
            )

    def on_snapshot(self, me: int, index: int, digest: bytes) -> None:
        """Peer `me`'s service installed a snapshot of everything through `index`."""
        known = self._applied.get(index)
        if known is not None and known[0] != digest:
            self._fail(
                "state machine safety",
                f"S{me} installed a snapshot through {index} whose state differs "
                f"from what S{known[3]} applied",
            )

    def applied_command(self, index: int) -> Any:
        """The command first applied at `index` (None if nobody applied it yet)."""
        known = self._applied.get(index)
        return None if known is None else known[2]

    def fail(self, kind: str, message: str) -> None:
        """Report a violation found outside the checker (e.g. by the simulation)."""
        self._fail(kind, message)

    # --- per-peer checks -----------------------------------------------------

    def _check_view(self, view: _PeerView) -> None:
        core = view.core
        term = core.current_term
        if term < view.term:
            self._fail("term monotonicity", f"S{view.me} term went from {view.term} to {term}")
        view.term = term
        self._scan_log(view)
        if core.role is Role.LEADER and view.leader_term != term:
            self._on_leader(view)  # a leader the trace did not announce
        commit = core.commit_index
        if commit < view.commit:
            self._fail("commit monotonicity", f"S{view.me} commit went {view.commit} -> {commit}")
        elif commit > view.commit:
            self._on_commit(view, view.commit, commit)
        view.commit = commit

    def _scan_log(self, view: _PeerView) -> None:
        """Register the entries that appeared in the peer's log since the last scan."""
        log = view.core.log
        last, snap, entries = log.last_index, log.snapshot_index, log.entries
        unchanged = last == view.mirror_last and snap == view.mirror_snap
        if unchanged and (last == snap or view.mirror.get(last) is entries[-1]):
            return
        mirror = view.mirror
        if snap > view.mirror_snap:
            for index in range(view.mirror_snap + 1, min(snap, view.mirror_last) + 1):
                mirror.pop(index, None)
            view.mirror_snap = snap
        same = max(snap, min(last, view.mirror_last))
        while same > snap and mirror.get(same) is not entries[same - snap - 1]:
            same -= 1
        for index in range(same + 1, last + 1):
            entry = entries[index - snap - 1]
            mirror[index] = entry
            self._register(view, index, entry, log.term_at(index - 1))
        for index in range(last + 1, view.mirror_last + 1):
            mirror.pop(index, None)
        view.mirror_last = last

    def _register(self, view: _PeerView, index: int, entry: Entry, prev: int | None) -> None:
        assert prev is not None
        if entry.term < prev or entry.term > view.core.current_term:
            self._fail(
                "log terms",
                f"S{view.me} has {index}@T{entry.term} after T{prev} "
                f"(current term {view.core.current_term})",
            )
        key = (index, entry.term)
        known = self._pairs.setdefault(key, (entry.data, prev))
        if known != (entry.data, prev):
            self._fail(
                "log matching",
                f"S{view.me} has entry {index}@T{entry.term} = {entry.data!r} after T{prev}; "
                f"another log has {known[0]!r} after T{known[1]}",
            )
        committed = self.committed.get(index)
        if index <= view.commit and committed is not None and committed != entry:
            self._fail(
                "committed entry changed",
                f"S{view.me} replaced its committed entry {index}@T{committed.term} "
                f"with {index}@T{entry.term}",
            )

    def _on_commit(self, view: _PeerView, old: int, new: int) -> None:
        log = view.core.log
        snap = log.snapshot_index
        if new > log.last_index:
            self._fail("commit index", f"S{view.me} commit={new} past last={log.last_index}")
            return
        if new <= snap:
            return  # jumped to an installed snapshot; its entries were checked by their owners
        for index in range(max(old, snap) + 1, new + 1):
            entry = log.entry(index)
            known = self.committed.setdefault(index, entry)
            if known != entry:
                self._fail(
                    "committed entry changed",
                    f"S{view.me} committed {index}@T{entry.term} = {entry.data!r}, but "
                    f"{index}@T{known.term} = {known.data!r} was committed before",
                )
        term = view.core.current_term
        self._committed_by[term] = max(self._committed_by.get(term, 0), new)
        self.max_committed = max(self.max_committed, new)

    def _on_leader(self, view: _PeerView) -> None:
        core = view.core
        term = core.current_term
        view.leader_term = term
        owner = self.leaders.setdefault(term, (view.me, view.incarnation))
        if owner != (view.me, view.incarnation):
            self._fail(
                "election safety",
                f"S{view.me} (incarnation {view.incarnation}) became leader of T{term}, "
                f"which S{owner[0]} (incarnation {owner[1]}) already led",
            )
        # Leader completeness: the newest entry committed in an earlier term is in our log.
        index = max((i for t, i in self._committed_by.items() if t < term), default=0)
        entry = self.committed.get(index)
        if (
            entry is not None
            and index > core.log.snapshot_index
            and core.log.term_at(index) != entry.term
        ):
            self._fail(
                "leader completeness",
                f"S{view.me} became leader of T{term} without committed entry "
                f"{index}@T{entry.term} (its log has T{core.log.term_at(index)} there, "
                f"last={core.log.last_index})",
            )

    def _check_promises(self, me: int, restored: DurableState) -> None:
        promise = self._promises[me]
        term = restored.current_term
        if term < promise.term:
            self._fail(
                "durability", f"S{me} restarted at T{term} after replying in T{promise.term}"
            )
        vote = promise.vote
        if vote is not None and vote[0] == term and restored.voted_for != vote[1]:
            self._fail(
                "durability",
                f"S{me} restarted in T{term} with vote {restored.voted_for} after granting "
                f"its vote to S{vote[1]}",
            )
        ack = promise.ack
        if ack is not None and ack[0] == term and not _holds(restored, ack[1], ack[2]):
            self._fail(
                "durability",
                f"S{me} restarted in T{term} without entry {ack[1]}@T{ack[2]} it acknowledged "
                f"(restored last={restored.snapshot_index + len(restored.entries)})",
            )

    def _fail(self, kind: str, message: str) -> None:
        if self.violation is None:
            self.violation = Violation(kind, message, self._now())
            self._on_violation(self.violation)


def _acked_term(args: AppendEntriesArgs, reply: AppendEntriesReply) -> int | None:
    """The term of the entry at the acknowledged match index, if the args show it."""
    match = reply.match_index
    if args.entries and match == args.prev_log_index + len(args.entries):
        return args.entries[-1].term
    if match == args.prev_log_index:
        return args.prev_log_term
    return None  # acknowledged through a snapshot


def _holds(state: DurableState, index: int, term: int | None) -> bool:
    """Whether a restored state still has the entry at `index` (of `term`, if known)."""
    if index <= state.snapshot_index:
        return True
    offset = index - state.snapshot_index
    if offset > len(state.entries):
        return False
    return term is None or state.entries[offset - 1].term == term
