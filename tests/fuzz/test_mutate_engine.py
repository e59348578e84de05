"""The mutation engine: seeded, reproducible, and reaching every kind of field and damage."""

from __future__ import annotations

import collections

import pytest

from raftio import codec
from raftio.membership import Configuration, encode_configuration, is_configuration
from raftio.messages import (
    AppendEntriesArgs,
    AppendEntriesReply,
    Entry,
    InstallSnapshotArgs,
    RequestVoteArgs,
)
from raftio.testing.mutate.engine import BOUNDARY_INTS, Mutator, Seed, field_names

CORPUS = [
    Seed("request_vote", 1, codec.encode_message(RequestVoteArgs(3, 0, 12, 3, True))),
    Seed(
        "append_entries",
        2,
        codec.encode_message(
            AppendEntriesArgs(3, 0, 10, 3, [Entry(3, codec.encode_command(("set", "k", "v")))], 9)
        ),
    ),
    Seed(
        "install_snapshot",
        1,
        codec.encode_message(InstallSnapshotArgs(3, 0, 8, 2, codec.pack({"data": {"k": "v"}}))),
    ),
    Seed("append_entries_reply", 0, codec.encode_message(AppendEntriesReply(3, True, 11))),
]


def test_a_mutant_depends_only_on_seed_and_number(seed: int) -> None:
    print(f"seed={seed} (rerun with --seed {seed})")
    first = Mutator(CORPUS, seed, 3)
    again = Mutator(CORPUS, seed, 3)

    forwards = [first.mutant(n) for n in range(300)]
    backwards = [again.mutant(n) for n in reversed(range(300))][::-1]

    assert forwards == backwards
    assert [Mutator(CORPUS, seed + 1, 3).mutant(n) for n in range(50)] != forwards[:50]


def test_mutants_reach_every_kind_of_change(seed: int) -> None:
    print(f"seed={seed} (rerun with --seed {seed})")
    mutator = Mutator(CORPUS, seed, 3)

    mutants = [mutator.mutant(n) for n in range(3000)]
    steps = " | ".join(s for m in mutants for s in m.steps)
    methods = collections.Counter(m.method for m in mutants)
    targets = collections.Counter(m.target for m in mutants)

    # A given field meets a given boundary a handful of times per 3,000
    # mutants, so the check is per field (any power of two) and per value.
    for expected in (
        "AE.term=2**",
        "RV.term=2**",
        "IS.last_included_index=2**",
        "=2**64-1",
        "=2**63-1",
        "AE.entries[0].term",
        "AE.entries[0].data: decoded",
        "IS.data: bytes",
        "(wrong type)",
        "(other frame)",
        "AE.entries cut",
        "AE.entries double",
        "replayed as captured",
        "bytes flip",
        "bytes cut",
        "as install_snapshot",
        "to S",
    ):
        assert expected in steps, expected
    # Replies are sent as requests; every peer and method is reached.
    assert set(methods) == {"request_vote", "append_entries", "install_snapshot", "timeout_now"}
    assert set(targets) == {0, 1, 2}
    # Most mutants still decode: they reach the Raft layer, not just the codec.
    decoded = sum(1 for m in mutants if _decodes(m.payload))
    assert decoded > len(mutants) // 3


def _decodes(payload: bytes) -> bool:
    try:
        codec.decode_message(payload)
    except codec.CodecError:
        return False
    return True


def test_configuration_entries_mutate_into_bytes_that_still_go_out(seed: int) -> None:
    # A configuration entry is JSON inside the command bytes; a mutation may put
    # bytes (which JSON cannot hold) into it. Found by CI seed 3031152647.
    print(f"seed={seed} (rerun with --seed {seed})")
    config = encode_configuration(Configuration.of_voters(["a:1", "b:2", "c:3"]))
    corpus = [
        Seed(
            "append_entries",
            1,
            codec.encode_message(AppendEntriesArgs(3, 0, 4, 3, [Entry(3, config)], 4)),
        )
    ]
    mutator = Mutator(corpus, seed, 3)

    mutants = [mutator.mutant(n) for n in range(2000)]

    touched = [m for m in mutants if any("configuration" in s for s in m.steps)]
    assert touched, "no mutant reached the configuration's JSON"
    still_configurations = 0
    for mutant in touched:
        try:
            message = codec.decode_message(mutant.payload)
        except codec.CodecError:
            continue
        if isinstance(message, AppendEntriesArgs):
            still_configurations += any(is_configuration(e.data) for e in message.entries)
    assert still_configurations > 0


@pytest.mark.parametrize(
    ("message", "path", "name"),
    [
        (RequestVoteArgs(1, 2, 3, 4, False), (1,), "RV.term"),
        (RequestVoteArgs(1, 2, 3, 4, False), (5,), "RV.pre_vote"),
        (AppendEntriesArgs(1, 2, 3, 4, [Entry(5, b"x")], 6), (3,), "AE.prev_log_index"),
        (AppendEntriesArgs(1, 2, 3, 4, [Entry(5, b"x")], 6), (5, 0, 0), "AE.entries[0].term"),
        (AppendEntriesArgs(1, 2, 3, 4, [Entry(5, b"x")], 6), (5, 0, 1), "AE.entries[0].data"),
        (InstallSnapshotArgs(1, 2, 3, 4, b"s"), (3,), "IS.last_included_index"),
    ],
)
def test_fields_are_named_from_the_codec(message: object, path: tuple[int, ...], name: str) -> None:
    tree = codec.unpack(codec.encode_message(message))  # type: ignore[arg-type]

    assert field_names(tree, path) == name


def test_boundaries_are_all_encodable() -> None:
    for value in BOUNDARY_INTS:
        assert codec.unpack(codec.pack(value)) == value


def test_an_empty_corpus_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one"):
        Mutator([], 1, 3)
