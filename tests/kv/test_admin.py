"""The KV port's admin requests over real TCP: validated before use, authenticated like any
request, and every refusal a protocol error code that says whether to retry.

Nodes keep their logs in MemoryStorage; a second node joins in-process.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from raftio.config import RaftConfig
from raftio.kv import KVClient, KVNode
from raftio.kv.local import free_ports
from raftio.kv.protocol import Members
from raftio.storage.memory import MemoryStorage

from .helpers import TOKEN, close, closed_by_server, connect, exchange, kv_service

UNREACHABLE = "127.0.0.1:9"  # discard: nothing listens there on a test machine

# --------------------------------------------------------------------------- validation


def add(**fields: Any) -> dict[str, Any]:
    request = {"op": "member_add", "id": 1, "raft_address": "127.0.0.1:7101",
               "client_address": "127.0.0.1:7104", "voter": True}  # fmt: skip
    request.update(fields)
    return {k: v for k, v in request.items() if v is not ...}  # ...: leave the field out


HOSTILE = {
    # ids: missing, of the wrong type, out of range
    "add-no-id": add(id=...),
    "add-id-str": add(id="1"),
    "add-id-bool": add(id=True),
    "add-id-float": add(id=1.0),
    "add-id-negative": add(id=-1),
    "add-id-huge": add(id=1 << 31),
    "add-id-list": add(id=[1]),
    # addresses: missing, not a str, not host:port, out of range, oversized
    "add-no-raft": add(raft_address=...),
    "add-raft-int": add(raft_address=7101),
    "add-raft-empty": add(raft_address=""),
    "add-raft-no-port": add(raft_address="127.0.0.1"),
    "add-raft-port-0": add(raft_address="127.0.0.1:0"),
    "add-raft-port-high": add(raft_address="127.0.0.1:65536"),
    "add-raft-space": add(raft_address="a b:7101"),
    "add-raft-newline": add(raft_address="127.0.0.1:7101\n"),
    "add-raft-unicode-port": add(raft_address="127.0.0.1:\uff17\uff11\uff10\uff11"),
    "add-raft-oversized": add(raft_address="a" * 300 + ":7101"),
    "add-client-bytes": add(client_address=b"127.0.0.1:7104"),
    "add-client-map": add(client_address={"host": "127.0.0.1"}),
    "add-same-addresses": add(client_address="127.0.0.1:7101"),
    # voter: a bool or nothing
    "add-voter-int": add(voter=1),
    "add-voter-str": add(voter="yes"),
    "add-voter-null": add(voter=None),
    # remove and transfer
    "remove-no-id": {"op": "member_remove"},
    "remove-id-str": {"op": "member_remove", "id": "0"},
    "remove-id-negative": {"op": "member_remove", "id": -3},
    "transfer-to-str": {"op": "transfer", "to": "0"},
    "transfer-to-bool": {"op": "transfer", "to": False},
    "transfer-to-negative": {"op": "transfer", "to": -1},
    "transfer-to-map": {"op": "transfer", "to": {}},
}


async def test_every_hostile_admin_request_is_a_bad_request_and_changes_nothing() -> None:
    # One node for every case (each on a connection of its own): a node per
    # case would spend most of the test electing leaders.
    async with kv_service() as server:
        outcomes: dict[str, tuple[Any, ...]] = {}
        for case, request in HOSTILE.items():
            stream = await connect(server)
            reply = await exchange(stream, request)
            closed = await closed_by_server(stream)
            outcomes[case] = (reply["ok"], reply["error"], bool(reply["message"]), closed)
            await close(stream)
        configuration = server.node.configuration()
        stream = await connect(server)
        alive = await exchange(stream, {"op": "members"})
        await close(stream)

    expected = (False, "bad_request", True, True)  # a message naming the field; closed
    assert {case: expected for case in HOSTILE} == outcomes
    assert (list(configuration.voters), configuration.learners) == ([0], {})
    assert alive["ok"]  # the node serves on


@pytest.mark.parametrize(
    "request_",
    [{"op": "members"}, add(), {"op": "member_remove", "id": 0}, {"op": "transfer"}],
    ids=["members", "member_add", "member_remove", "transfer"],
)
async def test_an_admin_request_before_authentication_is_unauthorized(
    request_: dict[str, Any],
) -> None:
    async with kv_service(token=TOKEN) as server:
        stream = await connect(server)

        reply = await exchange(stream, request_)
        closed = await closed_by_server(stream)
        await close(stream)
        configuration = server.node.configuration()

    assert (reply["ok"], reply["error"]) == (False, "unauthorized")
    assert closed
    assert (list(configuration.voters), configuration.learners) == ([0], {})


async def test_an_authenticated_connection_may_ask_for_the_members() -> None:
    async with kv_service(token=TOKEN) as server:
        stream = await connect(server, TOKEN)

        reply = await exchange(stream, {"op": "members"})
        await close(stream)

    members = Members.from_wire(reply["value"])
    assert [m.node_id for m in members.voters] == [0]
    assert members.voters[0].client_address == server.client_addresses[0]


# --------------------------------------------------------------------------- refusals


async def test_permanent_refusals_are_membership_errors() -> None:
    async with kv_service() as server:
        stream = await connect(server)
        raft0, client0 = server.node.address, server.client_addresses[0]

        replies = {
            "last voter": await exchange(stream, {"op": "member_remove", "id": 0}),
            "unknown": await exchange(stream, {"op": "member_remove", "id": 7}),
            "id taken": await exchange(stream, add(id=0, raft_address="127.0.0.1:7101")),
            "raft taken": await exchange(stream, add(raft_address=raft0)),
            "client taken": await exchange(stream, add(client_address=client0)),
            "raft is a client's": await exchange(stream, add(raft_address=client0)),
            "not a voter": await exchange(stream, {"op": "transfer", "to": 5}),
        }
        await close(stream)
        configuration = server.node.configuration()

    for what, reply in replies.items():
        assert (what, reply["ok"], reply["error"]) == (what, False, "membership"), reply
    assert "last voter" in replies["last voter"]["message"]
    assert "not a member" in replies["unknown"]["message"]
    assert (list(configuration.voters), configuration.learners) == ([0], {})
    assert server.machine.clients == {}  # refused before anything was written


async def test_a_learner_is_listed_and_a_promotion_that_cannot_catch_up_is_pending() -> None:
    async with kv_service(admin_timeout=0.5) as server:
        stream = await connect(server)

        added = await exchange(stream, add(raft_address=UNREACHABLE, voter=False))
        status = await exchange(stream, {"op": "status"})
        promoted = await exchange(stream, add(raft_address=UNREACHABLE))
        removed = await exchange(stream, {"op": "member_remove", "id": 1})
        await close(stream)

    assert added["ok"], added
    members = Members.from_wire(added["value"])
    assert [(m.node_id, m.raft_address, m.client_address) for m in members.learners] == [
        (1, UNREACHABLE, "127.0.0.1:7104")
    ]
    assert (members.committed, members.leader, members.index > 0) == (True, 0, True)
    value = status["value"]
    assert (value["voters"], value["learners"], value["member"]) == ([0], [1], "voter")
    assert (promoted["error"], "learner" in promoted["message"]) == ("pending", True)
    assert Members.from_wire(removed["value"]).learners == []


# --------------------------------------------------------------------------- two nodes


@contextlib.asynccontextmanager
async def two_nodes() -> AsyncIterator[tuple[KVNode, KVNode]]:
    """Node 0, a lone voter, and node 1 started with join=True knowing only its own addresses.

    Without check-quorum, node 0 leads on when node 1 is gone: changes then
    stay uncommitted instead of failing with not_leader.
    """
    r0, c0, r1, c1 = (f"127.0.0.1:{port}" for port in free_ports(4))
    options: dict[str, Any] = {"kv_options": {"admin_timeout": 1.0}, "client_timeout": 1.0}
    first = KVNode(0, [r0], [c0], None, storage=MemoryStorage(),
                   config=RaftConfig(check_quorum=False), **options)  # fmt: skip
    joining = KVNode(1, {1: r1}, {1: c1}, None, join=True, storage=MemoryStorage(), **options)
    async with first, joining:
        await asyncio.wait_for(first.node.wait_for_leader(), 10)
        yield first, joining


async def until(predicate: Any, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while True:
            if predicate():
                return
            await asyncio.sleep(0.01)


async def test_a_joined_node_redirects_to_the_leader_and_changes_wait_their_turn() -> None:
    async with two_nodes() as (first, joining):
        c0, c1 = first.server.client_addresses[0], joining.server.client_addresses[1]
        to_first, to_joining = await connect(first.server), await connect(joining.server)

        before = await exchange(to_joining, {"op": "members"})
        joining_status = (await exchange(to_joining, {"op": "status"}))["value"]
        added = await exchange(to_first, add(raft_address=joining.node.address, client_address=c1))
        await until(lambda: joining.server.status()["leader_client_address"] == c0)
        redirect = await exchange(to_joining, {"op": "transfer"})
        async with KVClient([c1]) as client:  # knows only the new node
            written = await client.put("k", "through node 1")

        # A learner added and removed while both voters run: its client address
        # stays in the table, so adding it again needs no table entry first.
        learner = add(id=2, raft_address=UNREACHABLE, client_address="127.0.0.1:7105", voter=False)
        assert (await exchange(to_first, learner))["ok"]
        assert (await exchange(to_first, {"op": "member_remove", "id": 2}))["ok"]
        await joining.close()  # two voters, one gone: no change can commit
        stuck = await exchange(to_first, learner)
        pending_add = await exchange(to_first, add(id=3, raft_address="127.0.0.1:7106",
                                                   client_address="127.0.0.1:7107"))  # fmt: skip
        pending_remove = await exchange(to_first, {"op": "member_remove", "id": 1})
        await close(to_first, to_joining)

    assert (before["error"], before["leader"]) == ("not_leader", None)
    assert joining_status["member"] == "joining"
    assert added["ok"], added
    assert [m.node_id for m in Members.from_wire(added["value"]).voters] == [0, 1]
    assert first.machine.clients == {0: c0, 1: c1, 2: "127.0.0.1:7105"}
    assert (redirect["error"], redirect["leader"]) == ("not_leader", c0)
    assert written == "through node 1"
    assert stuck["error"] == "timeout"  # appended, but it cannot commit
    assert (pending_add["error"], pending_remove["error"]) == ("pending", "pending")
