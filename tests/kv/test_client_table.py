"""The client-address table in KVStateMachine: replicated by a command, kept in snapshots.

Pure and synchronous, like test_machine.py: commands in, state or KVCommandError out.
"""

from __future__ import annotations

from typing import Any

import pytest

from raftio.codec import pack, unpack
from raftio.kv.client_table import clients_command
from raftio.kv.machine import KVCommandError, KVStateMachine, register_command, write_command

TABLE = {0: "127.0.0.1:7103", 1: "127.0.0.1:7104", 3: "10.0.0.9:7000"}


def with_a_write() -> KVStateMachine:
    m = KVStateMachine()
    session = m.apply(register_command("n"))
    assert isinstance(session, str)
    m.apply(write_command("put", "k", "v", session, 1))
    return m


def test_a_clients_command_replaces_the_whole_table() -> None:
    m = KVStateMachine()

    first = m.apply(clients_command(TABLE))
    m.apply(clients_command({0: "127.0.0.1:7103", 4: "[::1]:7000"}))

    assert first is None
    assert m.clients == {0: "127.0.0.1:7103", 4: "[::1]:7000"}  # a whole table, not a change


def test_the_table_survives_a_snapshot_and_changes_the_digest() -> None:
    m = with_a_write()
    before = m.digest()

    m.apply(clients_command(TABLE))
    restored = KVStateMachine()
    restored.restore(m.snapshot())

    assert restored.clients == TABLE
    assert restored.digest() == m.digest() != before
    assert restored.data == {"k": "v"}


def test_without_a_table_snapshots_and_digests_are_as_before() -> None:
    # Nodes that never changed membership write what older raftio wrote and reads.
    m = with_a_write()

    state = unpack(m.snapshot())
    old = KVStateMachine()
    old.restore(pack({key: value for key, value in state.items() if key != "clients"}))

    assert "clients" not in state
    assert old.clients == {}
    assert old.digest() == m.digest()


@pytest.mark.parametrize(
    "command",
    [
        ("clients",),
        ("clients", TABLE, "extra"),
        ("clients", "127.0.0.1:7000"),
        ("clients", ((0, "127.0.0.1:7000", "x"),)),
        ("clients", ((-1, "127.0.0.1:7000"),)),
        ("clients", ((True, "127.0.0.1:7000"),)),
        ("clients", ((0, "no-port"),)),
        ("clients", ((0, "127.0.0.1:0"),)),
        ("clients", ((0, 7000),)),
        ("clients", ((0, "127.0.0.1:7000"), (0, "127.0.0.1:7001"))),
        ("clients", tuple((i, f"127.0.0.1:{1000 + i}") for i in range(300))),
    ],
    ids=["short", "long", "not-a-list", "triple", "negative-id", "bool-id", "no-port",
         "port-0", "int-address", "twice", "too-many"],
)  # fmt: skip
def test_a_malformed_clients_command_is_refused_alike_and_changes_nothing(
    command: tuple[Any, ...],
) -> None:
    m = KVStateMachine()
    m.apply(clients_command(TABLE))
    digest = m.digest()

    with pytest.raises(KVCommandError) as info:
        m.apply(command)

    assert info.value.error == "failed"
    assert "malformed KV clients" in str(info.value)
    assert (m.clients, m.digest()) == (TABLE, digest)


@pytest.mark.parametrize(
    "clients",
    [{"0": "x"}, [[0, "no-port"]], [[0, "127.0.0.1:1"], [0, "127.0.0.1:2"]], [[0]]],
    ids=["map", "bad-address", "twice", "short-pair"],
)
def test_a_snapshot_with_a_malformed_table_is_refused_and_the_state_kept(clients: Any) -> None:
    m = KVStateMachine()
    m.apply(clients_command(TABLE))
    state = unpack(m.snapshot())
    state["clients"] = clients

    with pytest.raises(ValueError, match="KV snapshot clients"):
        m.restore(pack(state))

    assert m.clients == TABLE
