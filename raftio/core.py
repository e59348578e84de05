"""Figure 2 as a state machine: no I/O, no clock, no wire format.

`RaftCore` is one peer's protocol logic, synchronous and deterministic:
time arrives as `tick()` calls, randomness from an injected
`random.Random`, commands as opaque bytes. It imports only pure modules
(`messages`, `config`, `log`, `membership`, `progress`, `validate`, and
`core_changes`, its membership and transfer rules; a test checks it). Its
inputs are `tick`,
`start`, `compact`, the three `handle_*` RPC handlers, the three
`on_*_reply` callbacks and `on_log_durable`. Its outputs are typed effects
(raftio.messages), drained by the shell (raftio/raft.py) in one fixed
order: `take_storage_ops()` (persist), `take_outbox()` (send),
`take_applicable()` (apply).

Replication is batched and pipelined: `start()` only appends; the next
`take_outbox()` sends each follower every pending entry (up to a byte
budget) and a follower in the replicate state may have several
AppendEntries in flight. The leader counts itself toward a majority only
for entries its storage reports durable (Raft thesis 10.2.1).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass

from raftio.config import RaftConfig
from raftio.core_changes import ShapeChanges
from raftio.core_snapshots import Snapshots
from raftio.log import Log
from raftio.membership import (
    CONFIG_PREFIX,
    ConfigHistory,
    Configuration,
)
from raftio.messages import (
    NO_SNAPSHOT,
    NOOP_COMMAND,
    AppendEntriesArgs,
    AppendEntriesReply,
    AppendLog,
    Applicable,
    ApplyEntries,
    ApplySnapshot,
    DurableState,
    Entry,
    ReadConfirmed,
    ReadRefused,
    ReadResult,
    RequestVoteArgs,
    RequestVoteReply,
    SaveHardState,
    Send,
    SnapshotInfo,
    StorageEffect,
)
from raftio.progress import Progress, Replication, Role, majority_match, quorum
from raftio.snapshot_transfer import Incoming
from raftio.validate import (
    check_append_entries,
    check_append_reply,
    check_reply_term,
    check_request_vote,
)

# Re-exported: the core's vocabulary, as callers have always imported it.
__all__ = ["Progress", "RaftCore", "Replication", "Role", "majority_match", "quorum"]


@dataclass(slots=True)
class ReadRound:
    """One heartbeat round confirming leadership for the reads waiting on it (§6.4).

    `sent` is the very AppendEntries sent to each peer: only an answer to one
    of them, in our term, counts (an answer to an earlier heartbeat proves
    nothing about leadership after the reads arrived).
    """

    index: int  # the commit index when the round started: what its reads wait for
    read_ids: list[int]
    sent: dict[int, AppendEntriesArgs]
    acks: int = 1  # the leader itself
    answered: int = 0
    # The shell's clock before the round was sent (lease reads): a quorum's
    # answers grant a lease counted from here.
    started: float | None = None


class RaftCore(ShapeChanges, Snapshots):
    """One Raft peer's state and rules (extended Raft paper, Figure 2 and section 7).

    Invariant: log.snapshot_index <= applied_index <= commit_index <= log.last_index,
    where applied_index is the last index handed to the applier.
    """

    def __init__(
        self,
        me: int,
        peer_count: int,
        state: DurableState,
        config: RaftConfig,
        rng: random.Random,
        snapshot: SnapshotInfo = NO_SNAPSHOT,
        trace: Callable[[str, str], None] | None = None,
        bootstrap: Configuration | None = None,
    ) -> None:
        """`bootstrap`: the configuration before any is stored (default: voters 0..peer_count-1)."""
        if bootstrap is None:
            if not 0 <= me < peer_count:
                raise ValueError(f"me={me} is not an index into {peer_count} peers")
            bootstrap = Configuration.of_voters([""] * peer_count)
        self.me = me
        self.config = config
        self._rng = rng
        self._trace = trace
        self._heartbeat_ticks = config.heartbeat_ticks
        self._election_ticks = config.election_ticks

        # Persistent state (Figure 2), restored from storage.
        self.current_term = state.current_term
        self.voted_for = state.voted_for
        self.log = Log(state.snapshot_index, state.snapshot_term, state.entries)
        # The latest snapshot (its bytes stay in storage), sent to laggards.
        self.snapshot_info = snapshot
        # Membership (thesis 4.1): the latest configuration in the log is in effect.
        self.configs = ConfigHistory(state.snapshot_config or bootstrap, state.snapshot_index)
        for offset, entry in enumerate(state.entries):
            self._note_config(state.snapshot_index + 1 + offset, entry)
        self.voters: frozenset[int] = frozenset()
        self._quorum = 1
        self.config_version = 0  # bumped on every change: the shell connects new members
        # Tests turn the raft-dev 2015 fix off to show the bug it prevents.
        self.change_needs_term_commit = True

        # Volatile state.
        self.role = Role.FOLLOWER
        self.leader_id: int | None = None
        # (term, highest leader_commit its leader sent us): bounds its snapshots.
        self._leader_commit_heard = (0, 0)
        self.commit_index = state.snapshot_index
        self.applied_index = state.snapshot_index
        self.durable_index = self.log.last_index  # restored entries are durable
        self._votes: set[int] = set()
        self._won_alone = False  # a sole voter's campaign, waiting for its vote to be durable
        self.progress: dict[int, Progress] = {}
        self._election_elapsed = 0
        self._election_timeout = self._random_election_timeout()
        self._heartbeat_elapsed = 0
        self._quorum_elapsed = 0
        self.term_start_index = 0  # leader only: the first index of its term
        # Leader only: the voter it is handing leadership to (thesis 3.10), and for how long.
        self.transfer_target: int | None = None
        self._transfer_elapsed = 0
        self.elections = 0  # campaigns started (real elections, not pre-votes)
        self.terms_led = 0  # elections won
        # Peer input refused as impossible from an honest peer, by reason (metrics).
        self.refused: dict[str, int] = {}
        self._commit_broadcast = False  # commit advanced: tell idle followers soon
        # ReadIndex (§6.4, etcd's readOnly): reads waiting for a round, rounds in flight.
        self._reads_waiting: list[int] = []
        self._read_rounds: list[ReadRound] = []
        self._read_results: list[ReadResult] = []
        # Lease reads (thesis 6.4.1), on the shell's clock: the latest reading
        # it gave us, and until when a majority's answers keep others from leading.
        self._now: float | None = None
        self._lease_until = -math.inf
        # A restarted voter forgot the leader it heard: it refuses elections
        # for one minimum election timeout, as if it had just heard one.
        self._restart_guard = config.lease_reads
        # A term in which we sent TimeoutNow: its target's election skips the
        # voters' refusal, so no lease holds for the rest of that term.
        self._lease_void_term = 0

        # Outputs waiting for the shell.
        self._storage_ops: list[StorageEffect] = []
        self._outbox: list[Send] = []
        self._installed: ApplySnapshot | None = None  # for the service, before any entry
        self._transfer_serial = 0  # leader: the last snapshot transfer id used
        self._incoming: Incoming | None = None  # follower: the snapshot being received
        self._last_append: AppendEntriesArgs | None = None
        self._replicate_pending = False
        self._config_changed()

    # ------------------------------------------------------------------ queries

    @property
    def is_leader(self) -> bool:
        return self.role is Role.LEADER

    @property
    def configuration(self) -> Configuration:
        """The configuration in effect: the latest in the log, committed or not."""
        return self.configs.latest

    def quorum_size(self) -> int:
        """How many voters make a majority of the configuration in effect."""
        return self._quorum

    def has_applicable(self) -> bool:
        return self._installed is not None or self.applied_index < self.commit_index

    # ------------------------------------------------------------------ drains

    def take_storage_ops(self) -> list[StorageEffect]:
        ops, self._storage_ops = self._storage_ops, []
        return ops

    def take_outbox(self) -> list[Send]:
        if self._replicate_pending:
            self._replicate_pending = False
            if self.role is Role.LEADER:
                for peer in self.progress:
                    self._send_append(peer)
        if self._reads_waiting:
            self._start_read_round()
        out, self._outbox = self._outbox, []
        return out

    def take_reads(self) -> list[ReadResult]:
        """Reads confirmed or refused since the last call, in the order they were decided."""
        out, self._read_results = self._read_results, []
        return out

    def take_applicable(self, limit: int) -> Applicable | None:
        """What the service applies next (at most `limit` entries); marks it handed over."""
        if self._installed is not None:
            installed, self._installed = self._installed, None
            return installed
        first = self.applied_index + 1
        last = min(self.commit_index, self.applied_index + limit)
        if last < first:
            return None
        self.applied_index = last
        return ApplyEntries(first, self.log.between(first, last))

    # ------------------------------------------------------------------ inputs

    def tick(self, now: float | None = None, late: int = 0) -> None:
        """One unit of logical time has passed; `now`: the shell's clock (lease reads).

        `late`: further ticks that passed before the shell could tick (its loop
        was busy). Only a leader's heartbeat timer counts them, so heartbeats
        keep the clock's pace; check-quorum and the in-flight timer do not
        shorten, and a follower's election timer only ever runs slow.
        """
        if now is not None:
            self._now = now
        if self.role is Role.LEADER:
            self._heartbeat_elapsed += late
            self._tick_leader()
        else:
            self._election_elapsed += 1
            if self._election_elapsed >= self._election_timeout:
                if not self._may_campaign():
                    # A learner, a node waiting to join, or a removed one: never campaigns.
                    # (The timer runs on, so its pre-vote lease expires as a voter's does.)
                    return
                if self.config.pre_vote:
                    self._pre_campaign()
                else:
                    self._campaign()

    def start(self, data: bytes) -> tuple[int, int, bool]:
        """Append a command (encoded by the shell) if leader; sent with the next outbox drain.

        Refused (not leader) while leadership is being handed over: the new
        leader may already be campaigning, and the entry would only be lost.
        """
        if self.role is not Role.LEADER or self.transfer_target is not None:
            return self.log.last_index + 1, self.current_term, False
        return self._append_new(data), self.current_term, True

    def _append_new(self, data: bytes) -> int:
        index = self.log.last_index + 1
        entry = Entry(self.current_term, data)
        self.log.entries.append(entry)
        self._record_append(index, entry)
        self._replicate_pending = True
        return index

    def read_index(self, read_id: int, now: float | None = None) -> bool:
        """Ask to confirm a linearizable read (ReadIndex, §6.4); False if we cannot serve it.

        The answer comes as a `ReadConfirmed` (with the index the service must
        have applied) or `ReadRefused` from `take_reads()`. Reads that arrive
        together share one heartbeat round, started by the next `take_outbox()`.
        A new leader confirms reads only once an entry of its term has committed
        (§8): with `leader_noop` they wait for the no-op, without it they are refused.
        With `lease_reads` and the shell's clock `now` inside the lease, the
        read is confirmed at once, without a round.
        """
        if now is not None:
            self._now = now
        if self.role is not Role.LEADER:
            return False
        if self.commit_index < self.term_start_index and not self.config.leader_noop:
            return False
        if now is not None and self.lease_holds(now):
            self._read_results.append(ReadConfirmed(read_id, self.commit_index))
            return True
        self._reads_waiting.append(read_id)
        return True

    def lease_holds(self, now: float) -> bool:
        """Thesis 6.4.1: no other leader can exist before `now` passes the lease.

        A majority answered a heartbeat round that started less than
        `lease_duration` before `now`; each of them refuses to elect another
        leader until its own clock says an election timeout passed. Never
        during a leadership transfer: the target's election skips that refusal.
        """
        return (
            self.role is Role.LEADER
            and now < self._lease_until
            and self.commit_index >= self.term_start_index
            and self.transfer_target is None
            and self._lease_void_term != self.current_term
        )

    def _start_read_round(self) -> None:
        if self.role is not Role.LEADER or self.commit_index < self.term_start_index:
            return  # waiting for our term's first commit: a later take_outbox starts it
        round = self._new_read_round()
        for peer, pr in self.progress.items():
            args = self.heartbeat_args(peer)
            round.sent[peer] = args
            self._post_append(peer, pr, args)
        self._settle_read_rounds()

    def _new_read_round(self) -> ReadRound:
        """A round for the reads waiting now; the caller sends its heartbeats."""
        started = self._now if self.config.lease_reads else None
        acks = int(self.me in self.voters)
        round = ReadRound(self.commit_index, self._reads_waiting, {}, acks, started=started)
        self._reads_waiting = []
        self._read_rounds.append(round)
        return round

    def _count_read_answer(
        self, peer: int, args: AppendEntriesArgs, reply: AppendEntriesReply | None
    ) -> None:
        for round in self._read_rounds:
            if round.sent.get(peer) is args:
                round.answered += 1
                # Any answer in our term shows the follower still follows us.
                if (
                    reply is not None
                    and reply.term == self.current_term == args.term
                    and peer in self.voters
                ):
                    round.acks += 1
                self._settle_read_rounds()
                return

    def _settle_read_rounds(self) -> None:
        """Confirm every round up to the newest one a quorum answered; refuse hopeless ones."""
        rounds, needed = self._read_rounds, self._quorum
        confirmed = max((i for i, r in enumerate(rounds) if r.acks >= needed), default=-1)
        for round in rounds[: confirmed + 1]:
            # A later round's quorum confirms leadership after the earlier reads arrived too.
            self._read_results.extend(ReadConfirmed(i, round.index) for i in round.read_ids)
            if round.started is not None:
                lease = round.started + self.config.lease_duration
                self._lease_until = max(self._lease_until, lease)
        kept = []
        for round in rounds[confirmed + 1 :]:
            if round.acks + len(round.sent) - round.answered < needed:
                self._read_results.extend(ReadRefused(i) for i in round.read_ids)
            else:
                kept.append(round)
        self._read_rounds = kept

    def _refuse_reads(self) -> None:
        waiting = self._reads_waiting + [i for r in self._read_rounds for i in r.read_ids]
        self._read_results.extend(ReadRefused(i) for i in waiting)
        self._reads_waiting, self._read_rounds = [], []

    def on_vote_durable(self) -> None:
        """Storage made our term and vote durable (a write that held them was synced)."""
        if self._won_alone:
            self._won_alone = False
            # Still that campaign (a role change clears the flag), and still a quorum of one.
            if self.role is Role.CANDIDATE and len(self._votes) >= self._quorum:
                self._become_leader()

    def on_log_durable(self, index: int, term: int) -> None:
        """Storage made the log durable through `index`, whose entry had `term` then.

        Ignored if that entry has since been replaced (a different term at
        `index` means the durable write was of a discarded suffix).
        """
        if index <= self.durable_index or self.log.term_at(index) != term:
            return
        self.durable_index = index
        if self.role is Role.LEADER:
            self._maybe_commit()

    # ------------------------------------------------------------------ RequestVote

    def handle_request_vote(self, args: RequestVoteArgs) -> RequestVoteReply | None:
        """Answer a (pre-)vote request; None (no answer) for one no honest peer sends."""
        if args.term < self.current_term:
            return RequestVoteReply(self.current_term, False)  # changes nothing here
        if self._refuse(check_request_vote(args, self.me, self.current_term)):
            return None
        # §5.4.1: vote only for a candidate whose log is at least as up-to-date.
        log = self.log
        log_ok = (args.last_log_term, args.last_log_index) >= (log.last_term, log.last_index)
        if args.pre_vote:
            # Thesis 9.6: a pre-vote changes nothing here. Refuse while a leader is
            # known to be alive, so a rejoining node cannot depose a healthy leader.
            granted = args.term > self.current_term and log_ok and not self._hears_leader()
            self._debug("vote", f"pre-vote S{args.candidate_id} {'yes' if granted else 'no'}")
            return RequestVoteReply(self.current_term, granted)
        if (
            args.term > self.current_term
            and self.config.check_quorum
            and not args.transfer
            and self._hears_leader()
        ):
            # Thesis 4.2.3: inside the leader's lease a vote request only disrupts
            # (e.g. from a removed server); a transfer's candidate was sent by it.
            self._debug("vote", f"S{args.candidate_id} refused: a leader is alive")
            return RequestVoteReply(self.current_term, False)
        if args.term > self.current_term:
            self._become_follower(args.term, None)
        granted = False
        free = self.voted_for is None or self.voted_for == args.candidate_id
        if args.term == self.current_term and free and log_ok:
            granted = True
            if self.voted_for is None:
                self.voted_for = args.candidate_id
                self._record_hard_state()
            self._election_elapsed = 0
        self._debug("vote", f"S{args.candidate_id} {'granted' if granted else 'refused'}")
        return RequestVoteReply(self.current_term, granted)

    def on_request_vote_reply(
        self, peer: int, args: RequestVoteArgs, reply: RequestVoteReply | None
    ) -> None:
        if reply is None or self._refuse(check_reply_term(reply.term)):
            return
        if reply.term > self.current_term and not reply.vote_granted:
            self._become_follower(reply.term, None)
            return
        if args.pre_vote:
            if self.role is not Role.PRE_CANDIDATE or args.term != self.current_term + 1:
                return  # stale
        elif self.role is not Role.CANDIDATE or args.term != self.current_term:
            return  # stale
        if reply.vote_granted and peer in self.voters:
            self._votes.add(peer)
            if len(self._votes) >= self._quorum:
                if args.pre_vote:
                    self._campaign()
                else:
                    self._become_leader()

    # ------------------------------------------------------------------ AppendEntries

    def handle_append_entries(self, args: AppendEntriesArgs) -> AppendEntriesReply | None:
        """Figure 2's receiver rules; None (no answer) for a request no honest leader sends."""
        if args.term < self.current_term:
            return AppendEntriesReply(self.current_term, False)  # changes nothing here
        checked = check_append_entries(args, self.me, self.current_term)
        if self._refuse(checked):
            return None
        if not self._follow(args.term, args.leader_id):
            return None
        heard_term, heard = self._leader_commit_heard
        if heard_term != args.term:
            heard = 0
        self._leader_commit_heard = (args.term, max(heard, args.leader_commit))

        log = self.log
        prev, entries = args.prev_log_index, args.entries
        if prev < log.snapshot_index:
            # Entries through our snapshot are committed, so they match: skip them.
            skip = log.snapshot_index - prev
            if skip >= len(entries):
                # All of it is committed here; confirm only what was sent.
                return AppendEntriesReply(self.current_term, True, prev + len(entries))
            prev, entries = log.snapshot_index, entries[skip:]
            prev_term = log.snapshot_term
        else:
            prev_term = args.prev_log_term
        if prev > log.last_index:
            return self._reject(prev, x_term=0, x_index=0)
        term_here = log.term_at(prev)
        if term_here != prev_term:
            if term_here is None or prev <= self.commit_index:
                # Our committed entry cannot disagree with an honest leader's log.
                self._refuse("committed_conflict")
                return None
            return self._reject(prev, x_term=term_here, x_index=log.first_index_of_term(prev))

        if self._refuse(self._merge_entries(prev, entries)):
            return None
        match = prev + len(entries)
        if args.leader_commit > self.commit_index:
            # Figure 2: commit up to the leader's commit, but never past what this AE matched.
            self.commit_index = max(self.commit_index, min(args.leader_commit, match))
        return AppendEntriesReply(self.current_term, True, match)

    def _reject(self, prev: int, x_term: int, x_index: int) -> AppendEntriesReply:
        self._debug("append", f"reject prev={prev} x={x_term}/{x_index}")
        return AppendEntriesReply(
            self.current_term, False, x_term=x_term, x_index=x_index, x_len=self.log.last_index + 1
        )

    def _merge_entries(self, prev: int, entries: list[Entry]) -> str | None:
        """§5.3: append new entries, truncating at the first conflicting one only.

        Returns the reason to refuse the whole request (changing nothing) if
        it contradicts what this log already holds in a way no honest leader
        can: a different entry at or below our commit index (ours is
        committed, so the frame is the forgery), or a different command at
        the same index and term (a leader makes one entry per index in its
        term; of two, we keep the one we have, and may have acknowledged).
        """
        log = self.log
        for i, entry in enumerate(entries):
            index = prev + 1 + i
            if index > log.last_index:
                new = entries[i:]
            else:
                mine = log.entry(index)
                if mine.term == entry.term:
                    if mine.data != entry.data:
                        return "entry_forked"
                    continue
                if index <= self.commit_index:
                    return "committed_conflict"
                log.truncate_from(index)
                self.durable_index = min(self.durable_index, index - 1)
                if self.configs.truncate_from(index):
                    self._config_changed()  # thesis 4.1: back to the previous configuration
                new = entries[i:]
            log.append(new)
            self._storage_ops.append(AppendLog(index, list(new)))
            for entry in new:
                if entry.data[:2] == CONFIG_PREFIX:  # rare: found, scan the batch again
                    self._note_configs(index, new)
                    break
            return None
        return None

    def on_append_entries_reply(
        self, peer: int, args: AppendEntriesArgs, reply: AppendEntriesReply | None
    ) -> None:
        if reply is not None and self._refuse(check_append_reply(reply, args)):
            reply = None  # as if lost: probe again rather than believe it
        if reply is not None and reply.term > self.current_term:
            self._become_follower(reply.term, None)
            return
        if self._read_rounds and not args.entries:
            self._count_read_answer(peer, args, reply)
        if self.role is not Role.LEADER or args.term != self.current_term:
            return  # stale
        pr = self.progress.get(peer)
        if pr is None:
            return  # no longer a member
        if args.entries:
            pr.wait_ticks = 0
            if pr.inflight > 0:
                pr.inflight -= 1
                if pr.inflight == 0 and pr.sent_commit < self.commit_index:
                    self._commit_broadcast = True  # it missed commits while busy
        if reply is None:
            # Lost: fall back to probing; the next heartbeat retries (never in a tight loop).
            if pr.state is Replication.REPLICATE:
                pr.become_probe()
            return
        pr.recent_active = True
        if reply.success:
            self._on_append_success(peer, pr, reply.match_index)
        else:
            self._on_append_reject(peer, pr, args, reply)

    def _on_append_success(self, peer: int, pr: Progress, match: int) -> None:
        if match > pr.match_index:
            pr.match_index = match
            self._maybe_commit()
            if peer not in self.progress:
                return  # committing removed it (or us: we stepped down)
        pr.next_index = max(pr.next_index, pr.match_index + 1)
        if pr.state is Replication.PROBE:
            pr.state = Replication.REPLICATE
            pr.next_index = pr.match_index + 1
            pr.paused = False
        if pr.state is Replication.REPLICATE:
            self._send_append(peer)
        if peer == self.transfer_target and match >= self.log.last_index:
            self._continue_transfer(peer)

    def _on_append_reject(
        self, peer: int, pr: Progress, args: AppendEntriesArgs, reply: AppendEntriesReply
    ) -> None:
        rejected = args.prev_log_index
        if pr.state is Replication.SNAPSHOT:
            return
        if rejected <= pr.match_index:
            # Stale, but if it carried entries past what the follower confirmed, those
            # entries were lost to reordering: resend from match instead of waiting.
            if pr.state is Replication.REPLICATE and rejected + len(args.entries) > pr.match_index:
                pr.become_probe()
                self._send_append(peer)
            return
        if pr.state is Replication.PROBE and rejected != pr.next_index - 1:
            return  # an older probe's answer
        # The handout's fast backup with XTerm / XIndex / XLen.
        if reply.x_term == 0:
            next_index = reply.x_len
        else:
            last_of_term = self.log.last_index_of_term(reply.x_term)
            next_index = reply.x_index if last_of_term is None else last_of_term + 1
        pr.become_probe()
        pr.next_index = max(pr.match_index + 1, min(next_index, rejected))
        self._debug("append", f"S{peer} rejected prev={rejected}: next={pr.next_index}")
        self._send_append(peer)

    # ------------------------------------------------------------------ roles

    def _become_follower(self, term: int, leader_id: int | None) -> None:
        if self._reads_waiting or self._read_rounds:
            self._refuse_reads()
        self._end_transfer()
        self._won_alone = False
        if term > self.current_term:
            self.current_term = term
            self.voted_for = None
            self._record_hard_state()
        if self.role is not Role.FOLLOWER:
            known = f" (leader S{leader_id})" if leader_id is not None else ""
            self._debug("role", f"became follower{known}")
        self.role = Role.FOLLOWER
        self.leader_id = leader_id
        self.progress = {}
        self._restart_guard = False
        self._election_elapsed = 0
        self._election_timeout = self._random_election_timeout()

    def _pre_campaign(self) -> None:
        """Thesis 9.6: ask for pre-votes first; only a likely winner bumps its term."""
        self.role = Role.PRE_CANDIDATE
        self.leader_id = None
        self._restart_guard = False
        self._votes = {self.me} & self.voters  # a leaving node's own vote does not count
        self._election_elapsed = 0
        self._election_timeout = self._random_election_timeout()
        self._debug("role", "became pre-candidate")
        if len(self._votes) >= self._quorum:
            self._campaign()
            return
        self._request_votes(self.current_term + 1, pre_vote=True)

    def _request_votes(self, term: int, pre_vote: bool, transfer: bool = False) -> None:
        log = self.log
        args = RequestVoteArgs(term, self.me, log.last_index, log.last_term, pre_vote, transfer)
        for peer in sorted(self.voters):
            if peer != self.me:
                self._outbox.append(Send(peer, args))

    def _hears_leader(self) -> bool:
        """A leader (maybe us) was heard from within the minimum election timeout."""
        if self.role is Role.LEADER:
            return True
        heard = self.leader_id is not None or self._restart_guard
        return heard and self._election_elapsed < self._election_ticks[0]

    def step_down(self) -> None:
        """Stop leading (e.g. our storage stalled); another peer will take over."""
        if self.role is Role.LEADER:
            self._debug("role", "stepping down")
            self._become_follower(self.current_term, None)

    def _campaign(self, transfer: bool = False) -> None:
        self.elections += 1
        self.current_term += 1
        self.role = Role.CANDIDATE
        self.voted_for = self.me
        self.leader_id = None
        self._restart_guard = False
        self._record_hard_state()
        self._votes = {self.me} & self.voters  # a leaving node's own vote does not count
        self._election_elapsed = 0
        self._election_timeout = self._random_election_timeout()
        self._debug("role", "became candidate")
        if len(self._votes) >= self._quorum:
            # A sole voter wins by its own vote, which counts once it is durable
            # (on_vote_durable): a crash before then must not let it lead this term twice.
            self._won_alone = True
            return
        self._request_votes(self.current_term, pre_vote=False, transfer=transfer)

    def _become_leader(self) -> None:
        self.terms_led += 1
        self.role = Role.LEADER
        self.transfer_target = None
        self.leader_id = self.me
        self._lease_until = -math.inf  # earned anew by this term's rounds
        self._heartbeat_elapsed = 0
        self._quorum_elapsed = 0
        self.term_start_index = next_index = self.log.last_index + 1
        self.progress = {
            peer: Progress(next_index)
            for peer in sorted(self.configuration.members())
            if peer != self.me
        }
        self._debug("role", f"became leader (last={self.log.last_index})")
        if self.config.leader_noop:
            self._append_new(NOOP_COMMAND)
        for peer in self.progress:
            self._send_append(peer)  # announce leadership at once
        self._maybe_commit()

    # ------------------------------------------------------------------ leader helpers

    def _tick_leader(self) -> None:
        self._heartbeat_elapsed += 1
        if self.config.check_quorum:
            self._quorum_elapsed += 1
            if self._quorum_elapsed >= self._election_ticks[0]:
                self._quorum_elapsed = 0
                if not self._has_quorum():
                    self._debug("role", "lost contact with a majority")
                    self._become_follower(self.current_term, None)
                    return
        for pr in self.progress.values():
            if pr.state is Replication.REPLICATE and pr.inflight:
                pr.wait_ticks += 1
                if pr.wait_ticks > 2 * self._heartbeat_ticks:
                    pr.become_probe()  # in-flight entries presumed lost: resend from match
        if self.transfer_target is not None:
            self._transfer_elapsed += 1
            if self._transfer_elapsed >= self._election_ticks[1]:
                self._end_transfer()  # abandoned: take proposals again
        if self._heartbeat_elapsed >= self._heartbeat_ticks:
            self._heartbeat_elapsed -= self._heartbeat_ticks  # a late tick's rest counts on
            # With lease reads every heartbeat is a read round: its answers renew the lease.
            round = None
            if self.config.lease_reads and self.commit_index >= self.term_start_index:
                round = self._new_read_round()
            for peer in self.progress:
                args = self._heartbeat(peer)
                if round is not None and args is not None:
                    round.sent[peer] = args
            if round is not None:
                self._settle_read_rounds()

    def _has_quorum(self) -> bool:
        """§6.2 / thesis 6.2 check-quorum: a majority answered since the last check."""
        voters = self.voters
        active = (self.me in voters) + sum(
            pr.recent_active for peer, pr in self.progress.items() if peer in voters
        )
        for pr in self.progress.values():
            pr.recent_active = False
        return active >= self._quorum

    def heartbeat_args(self, peer: int) -> AppendEntriesArgs:
        """An empty AppendEntries anchored at what `peer` surely has.

        Anchoring at match_index means reordered entries cause no reject; any
        answer in the current term shows the follower still follows us.
        """
        prev = max(self.progress[peer].match_index, self.log.snapshot_index)
        prev_term = self.log.term_at(prev)
        assert prev_term is not None
        return AppendEntriesArgs(self.current_term, self.me, prev, prev_term, [], self.commit_index)

    def can_serve_reads(self) -> bool:
        """§8: a leader knows the commit index only once an entry of its term is committed."""
        return self.role is Role.LEADER and self.commit_index >= self.term_start_index

    def _heartbeat(self, peer: int) -> AppendEntriesArgs | None:
        """Send `peer` its heartbeat; the empty AppendEntries sent, if one was."""
        pr = self.progress[peer]
        if pr.state is Replication.PROBE:
            pr.paused = False
            self._send_append(peer)
            return None
        if pr.state is Replication.REPLICATE:
            args = self.heartbeat_args(peer)
            self._post_append(peer, pr, args)
        else:
            # A snapshot is streaming; keep the follower from campaigning meanwhile,
            # and resend from its offset if the chunks in flight were lost.
            args = self._snapshot_heartbeat()
            self._post_append(peer, pr, args)
            self._resume_snapshot(peer, pr)
        return args

    def _send_append(self, peer: int) -> None:
        """Send `peer` what it is missing, if its replication state allows it now."""
        pr = self.progress[peer]
        if pr.paused or (
            pr.state is Replication.REPLICATE and pr.inflight >= self.config.max_inflight
        ):
            return
        log = self.log
        prev = pr.next_index - 1
        if prev < log.snapshot_index:
            self._send_snapshot(peer, pr)
            return
        entries = log.slice(pr.next_index, self.config.max_batch_bytes)
        if not entries and pr.state is Replication.REPLICATE:
            return  # up to date; heartbeats carry the commit index
        prev_term = log.term_at(prev)
        assert prev_term is not None
        args = self._last_append
        if not (
            args is not None
            and args.prev_log_index == prev
            and args.term == self.current_term
            and args.prev_log_term == prev_term
            and args.leader_commit == self.commit_index
            and len(args.entries) == len(entries)
            and (not entries or args.entries[-1] is entries[-1])
        ):
            args = AppendEntriesArgs(
                self.current_term, self.me, prev, prev_term, entries, self.commit_index
            )
            # Followers in step get this very object, so it is encoded once (codec).
            self._last_append = args
        self._post_append(peer, pr, args)
        if pr.state is Replication.REPLICATE:
            pr.next_index += len(entries)
            if pr.inflight == 0:
                pr.wait_ticks = 0
            pr.inflight += 1
            if pr.inflight < self.config.max_inflight and pr.next_index <= log.last_index:
                self._send_append(peer)  # more than one batch pending
        else:
            pr.paused = True

    def _maybe_commit(self) -> None:
        """§5.4.2: commit by counting replicas only for an entry of the current term."""
        voters = self.voters
        if len(self.progress) == len(voters) - 1 and self.me in voters:  # no learner
            matches = [pr.match_index for pr in self.progress.values()]
        else:
            matches = [pr.match_index for peer, pr in self.progress.items() if peer in voters]
        if self.me in voters:
            matches.append(self.durable_index)
        candidate = majority_match(matches)
        if candidate > self.commit_index and self.log.term_at(candidate) == self.current_term:
            before, self.commit_index = self.commit_index, candidate
            self._commit_broadcast = True
            if before < self.configs.latest_index <= candidate:
                self._config_committed()

    def _post_append(self, peer: int, pr: Progress, args: AppendEntriesArgs) -> None:
        pr.sent_commit = args.leader_commit
        self._outbox.append(Send(peer, args))

    @property
    def commit_broadcast_due(self) -> bool:
        """The commit index advanced past what some follower was told."""
        return self._commit_broadcast and self.role is Role.LEADER

    def broadcast_commit(self) -> None:
        """Tell each idle, in-step follower the new commit index now, not at the next heartbeat.

        A follower with entries in flight learns it from the answer's follow-up
        (its inflight count reaching zero re-arms this), so under load this
        sends nothing extra; at low rates it is at most one empty AppendEntries
        per follower per commit advance. The shell calls it a moment after the
        advance (raft.COMMIT_BROADCAST_DELAY), which coalesces the advances
        meanwhile, and lets the next proposal's AppendEntries carry it instead.
        """
        self._commit_broadcast = False
        if self.role is not Role.LEADER:
            return
        for peer, pr in self.progress.items():
            if (
                pr.state is Replication.REPLICATE
                and pr.inflight == 0
                and pr.sent_commit < self.commit_index
            ):
                self._post_append(peer, pr, self.heartbeat_args(peer))

    # ------------------------------------------------------------------ persistence

    def _record_hard_state(self) -> None:
        ops = self._storage_ops
        if ops and type(ops[-1]) is SaveHardState:
            ops.pop()  # only the latest term and vote matter
        ops.append(SaveHardState(self.current_term, self.voted_for))

    def _record_append(self, index: int, entry: Entry) -> None:
        ops = self._storage_ops
        if ops:
            last = ops[-1]
            if type(last) is AppendLog and last.first_index + len(last.entries) == index:
                last.entries.append(entry)  # coalesce a burst of start() calls into one write
                return
        ops.append(AppendLog(index, [entry]))

    # ------------------------------------------------------------------ refusals

    def _follow(self, term: int, leader_id: int) -> bool:
        """Take a checked request from `term`'s leader as its follower (its
        message resets our election timer); False if another leads that term."""
        if self._refuse(self._check_sole_leader(term, leader_id)):
            return False
        if term > self.current_term or self.role is not Role.FOLLOWER:
            self._become_follower(term, leader_id)
        self.leader_id = leader_id
        self._election_elapsed = 0
        return True

    def _check_sole_leader(self, term: int, leader_id: int) -> str | None:
        """At most one leader per term (§5.2): a second one in our term is forged."""
        if term != self.current_term:
            return None
        if self.role is Role.LEADER or (self.leader_id is not None and self.leader_id != leader_id):
            return "second_leader"
        return None

    def _refuse(self, reason: str | None) -> bool:
        """Count a refused input (by reason); True if there was one."""
        if reason is None:
            return False
        self.refused[reason] = self.refused.get(reason, 0) + 1
        self._debug("refuse", reason)
        return True

    # ------------------------------------------------------------------ misc

    def _random_election_timeout(self) -> int:
        low, high = self._election_ticks
        return self._rng.randint(low, high)

    def _debug(self, topic: str, text: str) -> None:
        if self._trace is not None:
            self._trace(topic, text)
