"""Changes to the cluster's shape: membership (thesis 4.1) and leadership transfer (3.10).

A mixin of `RaftCore` (raftio/core.py), pure like it: the rules that add
and remove members, track the configuration in effect, and hand
leadership over. It reads and writes the core's state, declared below for
the type checker; everything else about a peer lives in the core.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from raftio.log import Log
from raftio.membership import (
    CONFIG_PREFIX,
    ConfigHistory,
    Configuration,
    decode_configuration,
    encode_configuration,
)
from raftio.messages import Entry, Send, TimeoutNowArgs, TimeoutNowReply
from raftio.progress import Progress, Replication, Role, quorum
from raftio.validate import check_reply_term, check_timeout_now


class ShapeChanges:
    """Membership and leadership transfer, as methods of `RaftCore`."""

    # The core's state these rules use (RaftCore.__init__ sets it).
    me: int
    role: Role
    current_term: int
    commit_index: int
    term_start_index: int
    log: Log
    progress: dict[int, Progress]
    configs: ConfigHistory
    voters: frozenset[int]
    _quorum: int
    config_version: int
    change_needs_term_commit: bool
    transfer_target: int | None
    _transfer_elapsed: int
    _lease_void_term: int
    _replicate_pending: bool
    _outbox: list[Send]

    if TYPE_CHECKING:  # the core's own methods these rules call

        @property
        def is_leader(self) -> bool: ...

        @property
        def configuration(self) -> Configuration: ...

        def _append_new(self, data: bytes) -> int: ...
        def _send_append(self, peer: int) -> None: ...
        def _become_follower(self, term: int, leader_id: int | None) -> None: ...
        def _campaign(self, transfer: bool = False) -> None: ...
        def _check_sole_leader(self, term: int, leader_id: int) -> str | None: ...
        def _refuse(self, reason: str | None) -> bool: ...
        def _debug(self, topic: str, text: str) -> None: ...

    # ------------------------------------------------------------------ membership

    def propose_configuration(self, config: Configuration) -> str | None:
        """Append `config` as the next configuration (thesis 4.1); a reason if refused.

        Takes effect at once, here and on each follower as it appends it.
        Refused unless we lead, no transfer is under way, the latest
        configuration is committed, and (raft-dev 2015) an entry of our term
        is committed; and unless it changes the voters by at most one server.
        """
        if self.role is not Role.LEADER or self.transfer_target is not None:
            return "not_leader"
        if self.configs.latest_index > self.commit_index:
            return "change_pending"
        if self.change_needs_term_commit and self.commit_index < self.term_start_index:
            return "change_pending"
        if config.outgoing or len(set(self.configuration.voters) ^ set(config.voters)) > 1:
            return "not_single_change"
        if not config.voters:
            return "last_voter"
        index = self._append_new(encode_configuration(config))
        self.configs.add(index, config)
        self._config_changed()
        return None

    def _note_configs(self, first_index: int, entries: list[Entry]) -> None:
        """Track the configuration entries of `entries` (at `first_index` on) the log now holds."""
        changed = False
        for k, entry in enumerate(entries):
            if entry.data[:2] == CONFIG_PREFIX:
                changed |= self._note_config(first_index + k, entry)
        if changed:
            self._config_changed()

    def _note_config(self, index: int, entry: Entry) -> bool:
        """Track a configuration entry the log now holds; False if `entry` is none.

        A malformed one is ignored alike by every replica (only forgery or
        damage makes one), so they keep agreeing on the configuration.
        """
        config = decode_configuration(entry.data)
        if config is None:
            return False
        self.configs.add(index, config)
        return True

    def _may_campaign(self) -> bool:
        """A voter may; so may a node whose removal it has not seen commit.

        Without the second case a leader that removed itself and crashed
        before the removal committed could deadlock the cluster: its log
        (holding the removal) is the most up to date, so only it can win,
        yet by its latest configuration it is no voter. Elected, it commits
        the removal and steps down. Votes still count by the latest
        configuration, so this is as safe as any campaign.
        """
        if self.me in self.voters:
            return True
        previous = self.configs.previous
        return (
            previous is not None
            and self.configs.latest_index > self.commit_index
            and previous.is_voter(self.me)
        )

    def _config_changed(self) -> None:
        config = self.configs.latest
        self.voters = frozenset(config.voters) | frozenset(config.outgoing)
        self._quorum = quorum(len(self.voters))
        self.config_version += 1
        if self.role is Role.LEADER:
            next_index = self.log.last_index + 1
            for peer in sorted(config.members()):
                if peer != self.me and peer not in self.progress:
                    self.progress[peer] = Progress(next_index)
                    self._replicate_pending = True
        if self.transfer_target is not None and self.transfer_target not in self.voters:
            self._end_transfer()
        self._debug("config", f"{config.describe()} at {self.configs.latest_index}")

    def _config_committed(self) -> None:
        """The latest configuration committed: forget departed members; step down if one.

        Thesis 4.2.2: a leader removed from the configuration leads until the
        removal commits. Handing over with TimeoutNow spares the others an
        election timeout.
        """
        config = self.configs.latest
        for peer in [p for p in self.progress if not config.is_member(p)]:
            del self.progress[peer]
        if self.me in self.voters:
            return
        successor = self.most_caught_up_peer()
        if successor is not None and self.progress[successor].match_index >= self.log.last_index:
            self._outbox.append(Send(successor, TimeoutNowArgs(self.current_term, self.me)))
        self._debug("role", "removed from the configuration")
        self._become_follower(self.current_term, None)

    # ------------------------------------------------------------------ leadership transfer

    def transfer_leadership(self, target: int) -> str | None:
        """Hand leadership to voter `target` (thesis 3.10); a reason if refused.

        The leader stops taking proposals, brings `target` up to date, then
        sends it TimeoutNow. The transfer ends when we stop leading, or is
        abandoned after an election timeout (proposals are taken again).
        A new target replaces a pending transfer.
        """
        if self.role is not Role.LEADER:
            return "not_leader"
        if target not in self.progress:
            return "unknown_peer"
        if target not in self.voters:
            return "not_voter"
        if self.transfer_target == target:
            return None  # already under way
        self.transfer_target = target
        self._transfer_elapsed = 0
        self._lease_void_term = self.current_term  # its TimeoutNow ends our lease
        self._debug("role", f"transferring leadership to S{target}")
        self._continue_transfer(target)
        return None

    def most_caught_up_peer(self) -> int | None:
        """Where a transfer goes by default: of the peers that answer, the most caught up."""
        answering = [
            p
            for p, pr in self.progress.items()
            if pr.state is Replication.REPLICATE and p in self.voters
        ]
        if not answering:
            return None
        return max(answering, key=lambda peer: (self.progress[peer].match_index, -peer))

    def _continue_transfer(self, peer: int) -> None:
        """TimeoutNow once `peer` holds our whole log; until then, replicate to it."""
        if self.progress[peer].match_index >= self.log.last_index:
            self._outbox.append(Send(peer, TimeoutNowArgs(self.current_term, self.me)))
        else:
            self._send_append(peer)

    def _end_transfer(self) -> None:
        if self.transfer_target is not None:
            self._debug("role", f"transfer to S{self.transfer_target} ended")
            self.transfer_target = None

    def handle_timeout_now(self, args: TimeoutNowArgs) -> TimeoutNowReply | None:
        """Our leader hands over: campaign at once, without pre-vote (thesis 3.10)."""
        if args.term < self.current_term:
            return TimeoutNowReply(self.current_term)
        if self._refuse(check_timeout_now(args, self.me, self.current_term)):
            return None
        if self._refuse(self._check_sole_leader(args.term, args.leader_id)):
            return None
        if not self._may_campaign():
            self._refuse("not_voter")  # a learner or a removed node never campaigns
            return None
        if args.term > self.current_term:
            self._become_follower(args.term, args.leader_id)
        self._debug("role", f"S{args.leader_id} hands leadership over")
        self._campaign(transfer=True)
        return TimeoutNowReply(self.current_term)

    def on_timeout_now_reply(
        self, peer: int, args: TimeoutNowArgs, reply: TimeoutNowReply | None
    ) -> None:
        if reply is not None and self._refuse(check_reply_term(reply.term)):
            reply = None
        if reply is None:
            # Unreachable target: give up now rather than refuse proposals for an
            # election timeout (as hashicorp/raft does); the caller may retry.
            if self.is_leader and self.transfer_target == peer and args.term == self.current_term:
                self._end_transfer()
            return
        if reply.term > self.current_term:
            # The term the target now campaigns in: our leadership is over.
            self._become_follower(reply.term, None)
