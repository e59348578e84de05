"""KVAdmin over a scripted exchange: `pending` retried a bounded number of times, and a
change that an unanswered earlier attempt made is reported done, never a refusal.

The exchange is the KVClient's transport seam: each attempt gets the next
scripted reply, so these tests need no socket and no node.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from raftio.kv.admin_client import KVAdmin
from raftio.kv.client import KVClient, KVRequestError
from raftio.kv.protocol import Member, Members

NODE = "127.0.0.1:7103"
VOTERS = [Member(0, "127.0.0.1:7100", NODE), Member(1, "127.0.0.1:7101", "127.0.0.1:7104")]
BEFORE = Members(VOTERS[:1], [], 1, True, 0)
AFTER = Members(VOTERS, [], 4, True, 0)


def ok(value: Any) -> dict[str, Any]:
    return {"ok": True, "value": value}


def error(code: str, message: str = "") -> dict[str, Any]:
    return {"ok": False, "error": code, "leader": None, "message": message}


class Script:
    """An exchange answering each attempt with the next reply; records the requests."""

    def __init__(self, *replies: dict[str, Any]) -> None:
        self.replies = list(replies)
        self.requests: list[dict[str, Any]] = []

    async def __call__(self, address: str, request: dict[str, Any]) -> Any:
        self.requests.append(request)
        return self.replies.pop(0)


def admin(script: Script, attempts: int = 3) -> KVAdmin:
    client = KVClient([NODE], exchange=script, backoff=(0.0, 0.0), rng=random.Random(1))
    return KVAdmin(client, attempts=attempts, pause=0.0)


async def test_pending_is_retried_until_the_change_is_made() -> None:
    script = Script(error("pending", "catching up"), error("pending"), ok(AFTER.to_wire()))

    members = await admin(script).add_member(1, "127.0.0.1:7101", "127.0.0.1:7104")

    assert members == AFTER
    assert [r["op"] for r in script.requests] == ["member_add"] * 3
    assert script.requests[0] == {"op": "member_add", "id": 1, "raft_address": "127.0.0.1:7101",
                                  "client_address": "127.0.0.1:7104", "voter": True}  # fmt: skip


async def test_pending_is_retried_a_bounded_number_of_times() -> None:
    script = Script(*[error("pending", "another change")] * 5)

    with pytest.raises(KVRequestError) as info:
        await admin(script, attempts=3).remove_member(1)

    assert info.value.error == "pending"
    assert len(script.requests) == 3


async def test_a_change_an_unanswered_attempt_made_is_reported_done() -> None:
    # The first attempt timed out (the KVClient retries it), the retry finds
    # node 1 already a voter at that address: the first attempt added it.
    script = Script(
        error("timeout", "not applied in time"),
        error("membership", "node 1 is already a member"),
        ok(AFTER.to_wire()),
    )

    members = await admin(script).add_member(1, "127.0.0.1:7101", "127.0.0.1:7104")

    assert members == AFTER
    assert [r["op"] for r in script.requests] == ["member_add", "member_add", "members"]


async def test_a_refusal_with_no_unanswered_attempt_is_an_error() -> None:
    script = Script(error("membership", "node 1 is already a member"))

    with pytest.raises(KVRequestError) as info:
        await admin(script).add_member(1, "127.0.0.1:7101", "127.0.0.1:7104")

    assert (info.value.error, info.value.maybe_applied) == ("membership", False)
    assert len(script.requests) == 1  # not even a look at the configuration


async def test_a_refusal_after_an_unanswered_attempt_stands_if_the_change_is_not_there() -> None:
    script = Script(
        error("lost", "leadership changed"),
        error("membership", "node 1 is the last voter"),
        ok(AFTER.to_wire()),  # node 1 is still a voter: the removal did not happen
    )

    with pytest.raises(KVRequestError) as info:
        await admin(script).remove_member(1)

    assert (info.value.error, info.value.maybe_applied) == ("membership", True)


@pytest.mark.parametrize(
    "reply",
    [
        {"voters": "all"},
        {**BEFORE.to_wire(), "index": -1},
        {**BEFORE.to_wire(), "voters": [{"id": "0", "raft_address": "a:1"}]},
        {**BEFORE.to_wire(), "voters": [{"id": 0, "raft_address": "no port"}]},
    ],
    ids=["not-members", "negative-index", "string-id", "bad-address"],
)
async def test_a_malformed_members_reply_is_a_protocol_error(reply: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"members reply|must be|not host:port"):
        await admin(Script(ok(reply))).members()


async def test_transfer_returns_the_new_leader_and_refuses_a_malformed_answer() -> None:
    leader = await admin(Script(ok(1))).transfer(to=1)

    with pytest.raises(ValueError, match="not a node id"):
        await admin(Script(ok("one"))).transfer()

    assert leader == 1
