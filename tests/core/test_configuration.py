"""raftio.membership: configurations, their changes' typed errors, and the entry format."""

from __future__ import annotations

import json

import pytest

from raftio.errors import DuplicateMemberError, LastVoterError, UnknownMemberError
from raftio.membership import (
    CONFIG_PREFIX,
    MAX_MEMBERS,
    ConfigHistory,
    Configuration,
    decode_configuration,
    encode_configuration,
)

THREE = Configuration.of_voters(["h:1", "h:2", "h:3"])


def test_adding_and_removing_members() -> None:
    learner = THREE.with_member(7, "h:7", voter=False)
    voter = learner.with_member(7, "h:7", voter=True)
    smaller = voter.without_member(0)

    assert learner.learners == {7: "h:7"}
    assert voter.voters == {0: "h:1", 1: "h:2", 2: "h:3", 7: "h:7"}
    assert voter.learners == {}
    assert sorted(smaller.voters) == [1, 2, 7]
    assert THREE.voters == {0: "h:1", 1: "h:2", 2: "h:3"}  # never mutated


@pytest.mark.parametrize(
    ("change", "error"),
    [
        (lambda c: c.with_member(1, "h:9", voter=True), DuplicateMemberError),  # id taken
        (lambda c: c.with_member(9, "h:2", voter=True), DuplicateMemberError),  # address taken
        (lambda c: c.without_member(9), UnknownMemberError),
        (lambda c: Configuration({0: "h:1"}).without_member(0), LastVoterError),
        (lambda c: c.with_member(-1, "h:9", voter=True), ValueError),
        (lambda c: c.with_member(1 << 31, "h:9", voter=True), ValueError),
        (lambda c: c.with_member(True, "h:9", voter=True), ValueError),
        (lambda c: c.with_member(9, "nowhere", voter=True), ValueError),
        (lambda c: c.with_member(9, "h:70000", voter=True), ValueError),
        (lambda c: c.with_member(9, "h:" + "9" * 300, voter=True), ValueError),
    ],
)
def test_bad_changes_get_typed_errors(change: object, error: type[Exception]) -> None:
    with pytest.raises(error):
        change(THREE)  # type: ignore[operator]


def test_a_learner_added_twice_is_a_duplicate_but_promoting_it_is_not() -> None:
    learner = THREE.with_member(7, "h:7", voter=False)
    with pytest.raises(DuplicateMemberError):
        learner.with_member(7, "h:7", voter=False)
    with pytest.raises(DuplicateMemberError):
        learner.with_member(7, "h:8", voter=True)  # promoted at another address


def test_the_entry_format_round_trips() -> None:
    config = Configuration({0: "h:1", 5: "[::1]:7000"}, {9: "h:9"})
    data = encode_configuration(config)

    assert data.startswith(CONFIG_PREFIX)
    assert decode_configuration(data) == config


def body(**fields: object) -> bytes:
    return CONFIG_PREFIX + json.dumps(fields).encode()


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xc1",
        CONFIG_PREFIX,
        CONFIG_PREFIX + b"\xff\xfe",
        CONFIG_PREFIX + b"[]",
        body(),  # no voter
        body(voters=[]),
        body(voters=[[0]]),
        body(voters=[[0, "a", "b"]]),
        body(voters=[["0", "a:1"]]),
        body(voters=[[-1, "a:1"]]),
        body(voters=[[1 << 31, "a:1"]]),
        body(voters=[[0, 7]]),
        body(voters=[[0, "a" * 300]]),
        body(voters=[[0, "a:1"], [0, "b:1"]]),  # an id twice
        body(voters=[[0, "a:1"]], learners=[[0, "b:1"]]),  # an id in two roles
        body(voters=[[0, "a:1"]], learners={"1": "b:1"}),
        body(voters=[[i, f"h:{i}"] for i in range(MAX_MEMBERS + 1)]),
        CONFIG_PREFIX + b" " * 70000,  # too long to read at all
    ],
)
def test_a_malformed_entry_is_no_configuration(data: bytes) -> None:
    assert decode_configuration(data) is None


def test_the_history_reverts_on_truncation_and_forgets_on_compaction() -> None:
    history = ConfigHistory(THREE, 0)
    four = THREE.with_member(3, "h:4", voter=True)
    two = four.without_member(0).without_member(1)
    history.add(5, four)
    history.add(9, two)

    assert history.at(4) == THREE
    assert history.at(5) == four
    assert history.latest == two
    assert history.previous == four

    assert history.truncate_from(9)
    assert (history.latest, history.latest_index) == (four, 5)
    assert not history.truncate_from(9)

    history.compact(7)
    assert (history.latest, history.latest_index) == (four, 5)
    assert history.previous is None
