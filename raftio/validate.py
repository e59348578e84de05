"""What a peer's RPC may mean: bounds and consistency rules for every field.

The codec checks that a message has the right shape (field types). This
module checks that its numbers could have come from an honest peer of this
cluster, before any of them reaches the core's state. Everything a peer
sends is hostile until it passes here: a term of 2**64 - 1 would be
persisted and end the cluster's elections (the next term could not be
encoded), an index near 2**63 would overflow arithmetic on the way to disk.

Each check returns None for an acceptable message or a short reason (a
metrics label) for a refused one. Pure functions: no I/O, no state.
"""

from __future__ import annotations

from raftio.membership import MAX_NODE_ID, Configuration
from raftio.messages import (
    AppendEntriesArgs,
    AppendEntriesReply,
    Entry,
    InstallSnapshotArgs,
    RequestVoteArgs,
    TimeoutNowArgs,
)

# Far below 2**63: index + batch arithmetic can never overflow a signed
# 64-bit field, and every value stays exact as a float (2**53).
MAX_TERM = 1 << 52
MAX_INDEX = 1 << 52
# How far a request's term may lead ours. Elections raise a term by one
# each, and pre-vote stops an isolated node from raising its own at all, so
# honest requests never come near it. A forged request can still push its
# receiver ahead, but only this far, so exhausting the term space takes
# billions of forged frames rather than one.
MAX_TERM_JUMP = 1 << 20


def check_term(term: int, current_term: int) -> str | None:
    """A request's term: bounded, and not absurdly far ahead of ours.

    Requests come from whoever connects to us; replies do not (see
    `check_reply_term`).
    """
    if not 0 <= term <= MAX_TERM:
        return "term_range"
    if term > current_term + MAX_TERM_JUMP:
        return "term_jump"
    return None


def check_reply_term(term: int) -> str | None:
    """A reply's term: bounded, but it may lead ours by any amount.

    A reply answers a request we sent to the peer's own address, so its term
    is that peer's: a node pushed far ahead by forged requests (at most
    MAX_TERM_JUMP per frame) tells the others through its replies, and the
    cluster moves up to it in one step instead of leaving it stranded.
    """
    if not 0 <= term <= MAX_TERM:
        return "term_range"
    return None


def _check_sender(sender: int, me: int) -> str | None:
    """Any valid id but ours: a sender may be a member we have not heard of yet.

    A node that joins knows no member until the entry that adds it arrives,
    and a voter may vote for a candidate added by an entry it lacks.
    """
    if not 0 <= sender <= MAX_NODE_ID or sender == me:
        return "sender"
    return None


def _check_position(index: int, term: int, max_term: int) -> str | None:
    """A (log index, term) pair: index 0 has term 0, later indexes a term in 1..max_term."""
    if not 0 <= index <= MAX_INDEX:
        return "index_range"
    if index == 0:
        return None if term == 0 else "position"
    return None if 1 <= term <= max_term else "position"


def check_request_vote(args: RequestVoteArgs, me: int, current_term: int) -> str | None:
    return (
        check_term(args.term, current_term)
        or _check_sender(args.candidate_id, me)
        # A candidate's log holds no entry of a term later than the one it runs in.
        or _check_position(args.last_log_index, args.last_log_term, args.term)
    )


def check_timeout_now(args: TimeoutNowArgs, me: int, current_term: int) -> str | None:
    return check_term(args.term, current_term) or _check_sender(args.leader_id, me)


def check_append_entries(args: AppendEntriesArgs, me: int, current_term: int) -> str | None:
    reason = (
        check_term(args.term, current_term)
        or _check_sender(args.leader_id, me)
        or _check_position(args.prev_log_index, args.prev_log_term, args.term)
    )
    if reason:
        return reason
    if not 0 <= args.leader_commit <= MAX_INDEX:
        return "index_range"
    if args.prev_log_index + len(args.entries) > MAX_INDEX:
        return "index_range"
    return check_entry_terms(args.entries, args.prev_log_term, args.term)


def check_entry_terms(entries: list[Entry], prev_term: int, leader_term: int) -> str | None:
    """A leader's log: terms never decrease, start at 1, never pass the leader's term."""
    floor = max(prev_term, 1)
    for entry in entries:
        term = entry.term
        if not floor <= term <= leader_term:
            return "entry_term"
        floor = term
    return None


def check_install_snapshot(
    args: InstallSnapshotArgs, me: int, current_term: int, known_commit: int
) -> str | None:
    """`known_commit`: the highest commit index the leader of `args.term` has told us.

    A leader snapshots only what it has applied, so only what it committed,
    and it tells a follower its commit index (an AppendEntries, sent before
    any snapshot) before it sends a snapshot. A snapshot further ahead is a
    forgery: installed, it would let its receiver win elections with a log
    nobody else has and replace every replica's state.
    """
    reason = check_term(args.term, current_term) or _check_sender(args.leader_id, me)
    if reason:
        return reason
    if args.last_included_index == 0:
        return "position"  # a snapshot of nothing
    if args.config is not None and not isinstance(args.config, Configuration):
        return "config"
    reason = _check_position(args.last_included_index, args.last_included_term, args.term)
    if reason:
        return reason
    if args.last_included_index > known_commit:
        return "snapshot_ahead"
    return check_chunk(args)


MAX_SNAPSHOT_BYTES = 1 << 52
MAX_CHECKSUM = 0xFFFFFFFF


def check_chunk(args: InstallSnapshotArgs) -> str | None:
    """A chunk lies inside its snapshot, `done` marks the last one, the ids are in range."""
    size = args.total_size
    end = args.offset + len(args.data)
    if not (args.offset >= 0 and end <= size <= MAX_SNAPSHOT_BYTES):
        return "chunk"
    if args.done != (end == size):
        return "chunk"
    if not (0 <= args.transfer <= MAX_INDEX and -1 <= args.checksum <= MAX_CHECKSUM):
        return "chunk"
    return None


def check_append_reply(reply: AppendEntriesReply, args: AppendEntriesArgs) -> str | None:
    """A follower's answer must be about the request it answers."""
    reason = check_reply_term(reply.term)
    if reason:
        return reason
    if reply.success:
        # It holds at most what we sent; at least what we anchored at.
        last_sent = args.prev_log_index + len(args.entries)
        if not args.prev_log_index <= reply.match_index <= last_sent:
            return "match_index"
        return None
    if not (
        0 <= reply.x_term <= MAX_TERM
        and 0 <= reply.x_index <= MAX_INDEX
        and 0 <= reply.x_len <= MAX_INDEX + 1
    ):
        return "hint_range"
    return None
