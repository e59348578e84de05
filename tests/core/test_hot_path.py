"""Shortcuts a leader takes on its hot path: each must give what the long way gives.

* It applies an immutable command it started itself as the very object it
  was given (no decode; raftio.applying.OwnCommands, as the shell uses it);
  anything else is decoded like on every replica.
* Followers in step get one shared AppendEntries object, so the transport
  encodes the batch once; followers out of step get their own.
"""

from __future__ import annotations

from typing import Any

import pytest

from raftio import codec
from raftio.applying import OwnCommands
from raftio.core import RaftCore
from raftio.messages import AppendEntriesArgs, AppendEntriesReply, Entry
from tests.core.helpers import drain, make_core, make_leader, pairs, sent_to


def commit_all(core: Any) -> None:
    """Both followers acknowledge everything sent; the leader's own write is durable."""
    core.on_log_durable(core.log.last_index, core.log.last_term)
    for peer, args in pairs(core.take_outbox()):
        if isinstance(args, AppendEntriesArgs):
            match = args.prev_log_index + len(args.entries)
            core.on_append_entries_reply(
                peer, args, AppendEntriesReply(core.current_term, True, match)
            )


def start(core: RaftCore, own: OwnCommands, command: Any) -> int:
    """What Raft.start does: encode, append, remember."""
    index, term, is_leader = core.start(codec.encode_command(command))
    assert is_leader
    own.remember(index, term, command)
    return index


def apply(core: RaftCore, own: OwnCommands) -> list[Any]:
    applicable = core.take_applicable(10)
    assert applicable is not None
    return own.apply_msgs(applicable)


@pytest.mark.parametrize(
    ("command", "same_object"),
    [
        (("set", "key", b"value", 1, 2.5, True, None), True),
        ("a string", True),
        (["set", "key"], False),  # a list can change after propose: decode it
        (("outer", ("inner",)), False),  # only flat tuples skip the decode
        (("set", {"a": 1}), False),
    ],
)
def test_leader_applies_its_own_immutable_commands_as_given(
    command: Any, same_object: bool
) -> None:
    core, own = make_leader(term=2, synced=True), OwnCommands()
    index = start(core, own, command)
    commit_all(core)

    (msg,) = apply(core, own)

    assert msg.command_index == index
    assert msg.command == command
    assert type(msg.command) is type(command)
    assert (msg.command is command) is same_object


def test_a_truncated_entry_is_never_applied_from_the_leaders_cache() -> None:
    # The leader starts an entry, is deposed before it commits, and a new
    # leader's entry (other term) takes the index: the cached command must not leak.
    core, own = make_leader(term=2, synced=True), OwnCommands()
    index = start(core, own, ("mine",))
    drain(core)
    theirs = codec.encode_command(("theirs",))
    prev_term = core.log.term_at(index - 1)
    assert prev_term is not None
    args = AppendEntriesArgs(3, 1, index - 1, prev_term, [Entry(3, theirs)], index)
    reply = core.handle_append_entries(args)
    assert reply.success

    (msg,) = apply(core, own)

    assert msg.command_index == index
    assert msg.command == ("theirs",)


def test_followers_in_step_share_one_append_entries_encoded_once() -> None:
    core = make_leader(term=2, synced=True)
    core.start(codec.encode_command(("set", "k", "v")))
    _, outbox = drain(core)

    (to_1,) = sent_to(outbox, 1)
    (to_2,) = sent_to(outbox, 2)

    assert to_1 is to_2
    assert codec.encode_message(to_1) is codec.encode_message(to_2)
    assert codec.decode_message(codec.encode_message(to_2)) == to_2


def test_a_follower_out_of_step_gets_its_own_append_entries() -> None:
    # Both followers are probed at the leader's last index 2; peer 1 has the
    # log, peer 2 has nothing and says so (a real follower's reject).
    core = make_leader((1, 1), term=2)
    probe_1 = probe_2 = AppendEntriesArgs(2, 0, 2, 1, [], 0)  # what make_leader sent
    core.on_append_entries_reply(1, probe_1, AppendEntriesReply(2, True, 2))
    empty_follower = make_core(me=2, term=2)
    reject = empty_follower.handle_append_entries(probe_2)
    assert not reject.success
    core.on_append_entries_reply(2, probe_2, reject)
    core.start(codec.encode_command(("new",)))
    _, outbox = drain(core)

    (to_1,) = sent_to(outbox, 1)
    (to_2,) = sent_to(outbox, 2)

    assert to_1 is not to_2
    assert isinstance(to_1, AppendEntriesArgs)
    assert isinstance(to_2, AppendEntriesArgs)
    assert (to_1.prev_log_index, len(to_1.entries)) == (2, 1)
    assert (to_2.prev_log_index, len(to_2.entries)) == (0, 2)  # probing: "new" waits
    assert codec.decode_message(codec.encode_message(to_1)) == to_1
    assert codec.decode_message(codec.encode_message(to_2)) == to_2
