"""KVStateMachine: sessions that never lie (Raft thesis 6.3), snapshots, the O(1) digest.

Pure and synchronous: commands in, results or KVCommandError out.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

import raftio.kv.machine as machine_module
from raftio.codec import pack
from raftio.kv.machine import (
    MAX_VALUE,
    KVCommandError,
    KVStateMachine,
    register_command,
    write_command,
)


def register(m: KVStateMachine, nonce: str = "abc", cap: int = 4096, budget: int = 1 << 30) -> str:
    session = m.apply(register_command(nonce, cap, budget))
    assert isinstance(session, str)
    return session


def refused(m: KVStateMachine, command: Any) -> str:
    with pytest.raises(KVCommandError) as info:
        m.apply(command)
    return info.value.error


# ---------------------------------------------------------------------------- seq rules


def test_each_seq_is_judged_and_only_its_own_write_acknowledges_it() -> None:
    m = KVStateMachine()
    s = register(m)

    first = m.apply(write_command("append", "k", "a", s, 1))
    retry = m.apply(write_command("append", "k", "a", s, 1))  # a lost reply, resent
    second = m.apply(write_command("append", "k", "b", s, 2))
    stale = refused(m, write_command("append", "k", "a", s, 1))
    gap = refused(m, write_command("append", "k", "z", s, 4))
    conflict = refused(m, write_command("append", "k", "other", s, 2))
    third = m.apply(write_command("append", "k", "c", s, 3))

    assert (first, retry, second, third) == ("a", "a", "ab", "abc")
    assert (stale, gap, conflict) == ("stale_seq", "seq_gap", "seq_conflict")
    assert m.data == {"k": "abc"}  # refusals changed nothing


@pytest.mark.parametrize(
    ("session", "error"),
    [
        # never issued: a serial beyond those registered, or not a serial at all
        ("99.abc", "unknown_session"),
        ("abc", "unknown_session"),
        ("", "unknown_session"),
        ("-1.abc", "unknown_session"),
        # a serial that was issued, with the wrong nonce: reads as evicted
        ("1.wrong", "session_expired"),
    ],
)
def test_a_write_in_a_session_the_cluster_does_not_hold_is_refused(
    session: str, error: str
) -> None:
    m = KVStateMachine()
    register(m)

    assert refused(m, write_command("put", "k", "v", session, 1)) == error
    assert m.data == {}


def test_a_forged_large_seq_cannot_make_the_owners_writes_vanish() -> None:
    # Before sessions, one request with seq 10**9 for someone's id made every
    # later write of theirs answer ok without being applied.
    m = KVStateMachine()
    victim = register(m, "victim")
    m.apply(write_command("put", "k", "1", victim, 1))

    forged = refused(m, write_command("put", "k", "evil", victim, 10**9))
    second = m.apply(write_command("put", "k", "2", victim, 2))
    third = m.apply(write_command("put", "j", "3", victim, 3))

    assert forged == "seq_gap"
    assert (second, third) == ("2", "3")
    assert m.data == {"k": "2", "j": "3"}


def test_a_forged_next_seq_is_never_passed_off_as_the_owners_write() -> None:
    m = KVStateMachine()
    victim = register(m, "victim")

    forged = m.apply(write_command("put", "k", "evil", victim, 1))  # the forger wins seq 1
    owner = refused(m, write_command("put", "k", "mine", victim, 1))

    assert forged == "evil"
    assert owner == "seq_conflict"  # an error, never "ok" with the forger's result


def test_two_registrations_are_two_sessions_however_the_clients_name_themselves() -> None:
    # A restarted client, or two sharing a client_id, register anew: their
    # writes number from 1 in sessions of their own and all apply.
    m = KVStateMachine()
    a, b = register(m, "same"), register(m, "same")

    results = [
        m.apply(write_command("append", "k", "a1", a, 1)),
        m.apply(write_command("append", "k", "b1", b, 1)),
        m.apply(write_command("append", "k", "a2", a, 2)),
    ]

    assert a != b
    assert results == ["a1", "a1b1", "a1b1a2"]


def test_a_refused_oversized_write_is_stored_and_the_next_seq_follows() -> None:
    m = KVStateMachine()
    s = register(m)
    big = "x" * (MAX_VALUE + 1)

    first = refused(m, write_command("put", "k", big, s, 1))
    retry = refused(m, write_command("put", "k", big, s, 1))
    second = m.apply(write_command("put", "k", "small", s, 2))

    assert (first, retry, second) == ("failed", "failed", "small")
    assert m.data == {"k": "small"}


@pytest.mark.parametrize(
    "command",
    [
        None,
        (),
        ("write",),
        ("write", "put", "k", "v", "1.abc", 0),  # seq 0
        ("write", "put", "k", "v", "1.abc", -5),
        ("write", "put", "k", "v", "1.abc", True),  # a bool is not a seq
        ("write", "put", "k", b"v", "1.abc", 1),
        ("write", "delete", "k", "v", "1.abc", 1),
        ("write", "put", "k", "v", 1, 1),
        ("register",),
        ("register", "", 10, 10),
        ("register", "n" * 65, 10, 10),
        ("register", "abc", 0, 10),  # a cap of 0 sessions
        ("register", "abc", 10, -1),
        ("register", "abc", "10", 10),
        ("put", "k", "v", "legacy-client"),  # a legacy write missing its seq
        ["write", "put", "k", "v", "1.abc", 1],  # a list, not a tuple
        ("write", ["put"], "k", "v", "1.abc", 1),  # unhashable op (fuzz K1's kind)
        ("write", {}, "k", "v", "1.abc", 1),
        (["put"], "k", "v", "legacy-client", 1),
    ],
)
def test_malformed_commands_are_refused_alike_on_every_replica(command: Any) -> None:
    m = KVStateMachine()
    register(m)
    before = m.digest()

    assert refused(m, command) == "failed"
    assert m.digest() == before


# ---------------------------------------------------------------------------- expiry


def test_registering_beyond_the_cap_evicts_the_least_recently_used_session() -> None:
    m = KVStateMachine()
    a, b = register(m, "a", cap=2), register(m, "b", cap=2)
    m.apply(write_command("put", "k", "1", a, 1))  # a is now more recent than b

    c = register(m, "c", cap=2)

    assert list(m.sessions) == [a, c]
    assert refused(m, write_command("put", "k", "2", b, 1)) == "session_expired"
    assert m.apply(write_command("put", "k", "2", a, 2)) == "2"


def test_stored_results_over_the_budget_evict_the_oldest_sessions() -> None:
    m = KVStateMachine()
    a, b = register(m, "a", budget=10), register(m, "b", budget=10)
    m.apply(write_command("put", "k", "x" * 6, a, 1))

    m.apply(write_command("put", "j", "y" * 6, b, 1))  # 12 characters stored: a goes

    assert list(m.sessions) == [b]
    assert m.result_chars == 6
    assert refused(m, write_command("put", "k", "x" * 6, a, 1)) == "session_expired"


def test_the_limits_travel_in_the_log_so_replicas_configured_apart_agree() -> None:
    leader, follower = KVStateMachine(), KVStateMachine()
    follower.max_sessions = 1  # as if this replica had been started with another default
    commands = [register_command(f"n{i}", 3, 1 << 20) for i in range(5)]

    for command in commands:
        leader.apply(command)
        follower.apply(command)

    assert list(leader.sessions) == list(follower.sessions) == ["3.n2", "4.n3", "5.n4"]
    assert leader.digest() == follower.digest()


# ---------------------------------------------------------------------------- snapshots


def test_a_snapshot_carries_sessions_their_order_and_limits() -> None:
    m = KVStateMachine()
    a, _ = register(m, "a", cap=2), register(m, "b", cap=2)
    m.apply(write_command("put", "k", "1", a, 1))

    restored = KVStateMachine()
    restored.restore(m.snapshot())
    c = register(restored, "c", cap=2)  # evicts b, the least recently used, as m would

    assert list(restored.sessions) == [a, c]
    assert restored.apply(write_command("put", "k", "1", a, 1)) == "1"  # a retry still answers
    assert restored.max_sessions == 2


def test_a_pre_session_snapshot_restores_and_its_log_replays_as_before() -> None:
    # Format 1 (raftio before sessions): data plus {client: [seq, result]}.
    old = pack({"data": {"k": "ab"}, "sessions": {"c1": [2, "ab"]}})
    m = KVStateMachine()

    m.restore(old)
    duplicate = m.apply(("append", "k", "b", "c1", 2))  # an old log entry: a retry
    fresh = m.apply(("append", "k", "c", "c1", 3))
    stray = m.apply(("append", "k", "a", "c1", 1))
    s = register(m)
    new = m.apply(write_command("append", "k", "d", s, 1))

    assert (duplicate, fresh, stray, new) == ("ab", "abc", None, "abcd")
    again = KVStateMachine()
    again.restore(m.snapshot())
    assert again.digest() == m.digest()
    assert again.legacy == {"c1": (3, "abc")}


def damaged_snapshots() -> list[Any]:
    m = KVStateMachine()
    s = register(m)
    m.apply(write_command("put", "k", "v", s, 1))
    good = m.snapshot()
    rng = random.Random(7)
    flips = []
    for _ in range(40):
        data = bytearray(good)
        data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        flips.append(bytes(data))
    cut = [good[:n] for n in (0, 1, len(good) // 2, len(good) - 1)]
    shapes = [
        pack([1, 2]),
        pack({"format": 3, "data": {}}),
        pack({"format": 2, "data": {"k": 1}, "sessions": [], "registered": 0, "clock": 0,
              "limits": [1, 1]}),
        pack({"format": 2, "data": {}, "sessions": [["1.a", 0, b"", ["ok", ""], 0]] * 2,
              "registered": 1, "clock": 1, "limits": [9, 9]}),
        pack({"format": 2, "data": {}, "sessions": [["1.a", 0, b"", ["ok"], 0]],
              "registered": 1, "clock": 1, "limits": [9, 9]}),
        pack({"format": 2, "data": {}, "sessions": [["1.a", 0, b"", ["ok", ""], -1]],
              "registered": 1, "clock": 1, "limits": [9, 9]}),
        pack({"format": 2, "data": {}, "sessions": [], "registered": -1, "clock": 0,
              "limits": [9, 9]}),
        pack({"format": 2, "data": {}, "sessions": {}, "registered": 0, "clock": 0,
              "limits": [9]}),
        pack({"data": {"k": "v"}, "sessions": {"c": [1, 2]}}),
        pack({"data": {"k": "v"}, "sessions": {"c": "x"}}),
    ]  # fmt: skip
    return [*flips, *cut, *shapes, b"\xc1"]


def test_a_damaged_snapshot_is_refused_and_the_state_is_untouched() -> None:
    m = KVStateMachine()
    s = register(m)
    m.apply(write_command("put", "live", "1", s, 1))
    before = (m.snapshot(), m.digest())
    refusals = 0

    for data in damaged_snapshots():
        try:
            m.restore(data)
        except ValueError:
            refusals += 1
            assert (m.snapshot(), m.digest()) == before
        else:  # a flip that still decodes to a well-formed state: digest must match it
            fresh = KVStateMachine()
            fresh.restore(m.snapshot())
            assert fresh.digest() == m.digest()
            m.restore(before[0])

    assert refusals >= 20


# ---------------------------------------------------------------------------- digest


def random_history(rng: random.Random, n: int) -> list[tuple[Any, ...]]:
    """Commands a few clients would send, with retries, stale copies and forgeries."""
    commands: list[tuple[Any, ...]] = []
    sessions: list[tuple[str, int]] = []
    m = KVStateMachine()  # to learn the session ids the commands will get
    for _ in range(n):
        roll = rng.random()
        if roll < 0.1 or not sessions:
            command = register_command(f"n{rng.randrange(1000)}", 6, 5000)
            sessions.append((m.apply(command), 0))
        else:
            i = rng.randrange(len(sessions))
            session, seq = sessions[i]
            seq += rng.choice([1, 1, 1, 0, -1, 3])
            value = f"v{rng.randrange(50)}"
            command = write_command(rng.choice(["put", "append"]), f"k{rng.randrange(8)}",
                                    value, session, max(seq, 1))  # fmt: skip
            try:
                m.apply(command)
                sessions[i] = (session, max(seq, 1))
            except KVCommandError:
                pass
        commands.append(command)
    return commands


def replay(commands: list[tuple[Any, ...]], into: KVStateMachine | None = None) -> KVStateMachine:
    m = into if into is not None else KVStateMachine()
    for command in commands:
        try:
            m.apply(command)
        except KVCommandError:
            pass
    return m


def test_digests_agree_after_replay_and_after_a_snapshot_midway(seed: int) -> None:
    print(f"seed {seed} (rerun: pytest tests/kv/test_machine.py --seed {seed})")
    rng = random.Random(seed)
    commands = random_history(rng, 400)
    cut = rng.randrange(len(commands))

    replayed = replay(commands)
    midway = replay(commands[:cut])
    restored = KVStateMachine()
    restored.restore(midway.snapshot())
    replay(commands[cut:], into=restored)
    from_scratch = KVStateMachine()
    from_scratch.restore(replayed.snapshot())

    assert restored.data == replayed.data
    assert restored.digest() == replayed.digest() == from_scratch.digest()
    assert restored._sum == replayed._sum == from_scratch._sum


def test_the_digest_differs_when_one_key_or_one_session_differs() -> None:
    base = KVStateMachine()
    s = register(base)
    base.apply(write_command("put", "k", "v", s, 1))
    same, other_value, other_key = KVStateMachine(), KVStateMachine(), KVStateMachine()
    for m, (key, value) in zip(
        (same, other_value, other_key), [("k", "v"), ("k", "w"), ("j", "v")], strict=True
    ):
        t = register(m)
        m.apply(write_command("put", key, value, t, 1))
    other_session = KVStateMachine()
    other_session.restore(base.snapshot())
    register(other_session, "more")

    assert same.digest() == base.digest()
    digests = {base.digest(), other_value.digest(), other_key.digest(), other_session.digest()}
    assert len(digests) == 4


def test_put_back_to_an_earlier_value_gives_the_earlier_data_term() -> None:
    # Subtracting a key's old term exactly: v -> w -> v leaves no trace in the data's share.
    m = KVStateMachine()
    s = register(m)
    m.apply(write_command("put", "k", "v", s, 1))
    m.digest()  # brings the changes into the sum
    data_sum = m._sum - sum(session.term for session in m.sessions.values())

    m.apply(write_command("put", "k", "w", s, 2))
    m.digest()
    m.apply(write_command("put", "k", "v", s, 3))
    m.digest()

    assert (m._sum - sum(x.term for x in m.sessions.values())) % (1 << 256) == data_sum % (1 << 256)


def count_hashes(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Counts the digest's hashes from now on, in the returned dict's "hash"."""
    calls = {"hash": 0}
    real = machine_module._hash

    def counting(parts: list[Any]) -> int:
        calls["hash"] += 1
        return real(parts)

    monkeypatch.setattr(machine_module, "_hash", counting)
    return calls


def test_a_digest_hashes_at_most_the_pending_changes_whatever_the_state_size(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    m = KVStateMachine()
    s = register(m)
    for i in range(5000):
        m.apply(write_command("put", f"k{i % 3000}", f"v{i}", s, i + 1))
    calls = count_hashes(monkeypatch)
    m.digest()

    # Each pending key costs its old and new hash, each pending session one.
    assert 0 < calls["hash"] <= 2 * machine_module._SETTLE_AFTER

    calls["hash"] = 0
    monkeypatch.setattr(machine_module, "pack", lambda obj: calls.__setitem__("pack", 1) or b"")
    m.digest()

    assert calls["hash"] == 0  # nothing changed since
    assert calls.get("pack", 0) == 1  # the four counters, whatever the number of keys


def test_a_key_and_a_session_written_many_times_between_digests_are_hashed_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    m = KVStateMachine()
    s = register(m)
    m.digest()
    calls = count_hashes(monkeypatch)
    for seq in range(1, 501):
        m.apply(write_command("append", "hot", "x", s, seq))
    digest = m.digest()

    assert calls["hash"] == 2  # the key's one term and the session's (the key was new)
    fresh = KVStateMachine()
    fresh.restore(m.snapshot())
    assert fresh.digest() == digest


@pytest.mark.parametrize("settle_after", [1, 3, 1024])
def test_the_digest_at_any_point_matches_one_computed_from_scratch(
    seed: int, settle_after: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Changes reach the sum late (at a digest, or once settle_after are
    # pending): evictions, refusals and rewrites in between must not skew it.
    print(f"seed {seed} (rerun: pytest tests/kv/test_machine.py --seed {seed})")
    monkeypatch.setattr(machine_module, "_SETTLE_AFTER", settle_after)
    rng = random.Random(seed)
    m = KVStateMachine()
    for command in random_history(rng, 600):
        try:
            m.apply(command)
        except KVCommandError:
            pass
        if rng.random() < 0.05:
            fresh = KVStateMachine()
            fresh.restore(m.snapshot())
            assert m.digest() == fresh.digest()
            assert m._sum == fresh._sum
    fresh = KVStateMachine()
    fresh.restore(m.snapshot())
    assert m.digest() == fresh.digest()
