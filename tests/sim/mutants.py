"""Deliberately broken versions of raftio, to prove the simulation catches them.

Each mutant is a drop-in replacement for one method; tests install it with
pytest's monkeypatch.
"""

from __future__ import annotations

from typing import Any

from raftio.core import RaftCore, majority_match, quorum
from raftio.raft import Raft


def commit_by_counting_any_term(self: RaftCore) -> None:
    """RaftCore._maybe_commit without §5.4.2's current-term check (Figure 8's bug)."""
    matches = [pr.match_index for pr in self.progress.values()]
    matches.append(self.durable_index)
    candidate = majority_match(matches)
    if candidate > self.commit_index:
        self.commit_index = candidate


_config_changed = RaftCore._config_changed


def learners_vote(self: RaftCore) -> None:
    """RaftCore._config_changed that counts learners' votes (quorum still of the voters)."""
    _config_changed(self)
    config = self.configs.latest
    self.voters = frozenset(config.voters) | frozenset(config.learners)
    self._quorum = quorum(len(config.voters))


def settle_before_sync(self: Raft, reply: Any) -> Any:
    """Raft._settle_now that replies without waiting for storage to sync."""
    if reply is None:
        return None
    self._drain()
    return None if self._killed else reply
