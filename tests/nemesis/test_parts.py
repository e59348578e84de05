"""The nemesis toolkit's pieces on their own: workload, checks, result model, schedule, proxy."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Collection
from typing import Any

import pytest

from raftio.testing import run
from raftio.testing.linearizability import Operation, check
from raftio.testing.nemesis import (
    FAULT_KINDS,
    KvResultModel,
    LinkProxy,
    Nemesis,
    Workload,
    acknowledged_write_problems,
)
from raftio.testing.partitions import Partition, between, draw_partition


def op(
    client: int, kind: str, value: str | None, output: Any, call: float, ret: float
) -> Operation:
    return Operation(client, kind, "x", value, output, call, ret)


# --------------------------------------------------------------------------- workload


class Store:
    """A linearizable store whose client gives up (TimeoutError) on every `fail_every`th call."""

    def __init__(self, fail_every: int) -> None:
        self.data: dict[str, str] = {}
        self.calls = 0
        self.fail_every = fail_every

    async def _step(self) -> None:
        self.calls += 1
        n = self.calls
        await asyncio.sleep(0.01)
        if n % self.fail_every == 0:
            raise TimeoutError("gave up")

    async def get(self, key: str) -> str | None:
        result = self.data.get(key)
        await self._step()
        return result

    async def put(self, key: str, value: str) -> str:
        self.data[key] = value  # applied even if the client then gives up
        await self._step()
        return value

    async def append(self, key: str, value: str) -> str:
        result = self.data[key] = self.data.get(key, "") + value
        await self._step()
        return result


def test_the_workload_records_every_operation_with_unique_values() -> None:
    store = Store(fail_every=7)

    async def main() -> Workload:
        workload = Workload([store, store, store], keys=["a", "b"], rng=random.Random(1))
        await workload.run(2.0)
        return workload

    workload = run(main(), "virtual")
    ops = workload.history.operations

    assert len(ops) == store.calls == workload.acknowledged + workload.unknown
    assert workload.unknown == store.calls // 7
    assert {o.client_id for o in ops} == {0, 1, 2}
    assert {o.kind for o in ops} == {"get", "put", "append"}
    values = [o.value for o in ops if o.kind != "get"]
    assert len(values) == len(set(values))
    assert all(o.output is None for o in ops if o.is_unknown)
    assert all(o.output == o.value for o in ops if o.kind == "put" and not o.is_unknown)
    assert check(workload.history, model=KvResultModel()).ok is True


# --------------------------------------------------------------------------- write checks


def test_an_acknowledged_append_missing_from_the_final_read_is_reported() -> None:
    ops = [op(1, "append", "1.1;", "1.1;", 0, 1), op(2, "append", "2.1;", "1.1;2.1;", 2, 3)]
    final = op(9, "get", None, "1.1;", 4, 5)

    problems = acknowledged_write_problems([*ops, final], final)

    assert len(problems) == 1
    assert "acknowledged append '2.1;'" in problems[0]


def test_doubled_and_unknown_values_in_the_final_read_are_reported() -> None:
    ops = [op(1, "append", "1.1;", "1.1;", 0, 1)]
    final = op(9, "get", None, "1.1;1.1;7.7;", 4, 5)

    problems = acknowledged_write_problems([*ops, final], final)

    assert problems == [
        "key 'x': '1.1;' applied 2 times",
        "key 'x': '7.7;' was never written to it",
    ]


def test_appends_a_put_may_have_overwritten_and_unknown_appends_may_be_missing() -> None:
    ops = [
        op(1, "append", "1.1;", "1.1;", 0, 2),
        op(2, "put", "2.1;", "2.1;", 1, 3),  # concurrent with the append: may come after it
        op(3, "append", "3.1;", None, 4, float("inf")),  # outcome unknown
    ]
    final = op(9, "get", None, "2.1;", 5, 6)

    assert acknowledged_write_problems([*ops, final], final) == []


# --------------------------------------------------------------------------- result model


def test_the_result_model_checks_what_writes_returned() -> None:
    right = [op(1, "append", "a;", "a;", 0, 1), op(2, "append", "b;", "a;b;", 2, 3)]
    wrong = [op(1, "append", "a;", "a;", 0, 1), op(2, "append", "b;", "b;", 2, 3)]
    silent = [op(1, "append", "a;", None, 0, 1), op(2, "append", "b;", None, 2, 3)]

    assert check(right, model=KvResultModel()).ok is True
    assert check(silent, model=KvResultModel()).ok is True
    result = check(wrong, model=KvResultModel())
    assert result.ok is False
    assert "append(x, 'b;') -> 'b;'" in result.explain()


def test_an_unknown_write_seen_only_in_another_writes_answer_is_kept() -> None:
    # a;'s outcome is unknown, but b;'s answer shows it happened first.
    ops = [op(1, "append", "a;", None, 0, float("inf")), op(2, "append", "b;", "a;b;", 1, 2)]

    assert check(ops, model=KvResultModel()).ok is True


# --------------------------------------------------------------------------- nemesis


class FakeTarget:
    """Records what the nemesis does to it; node 0 leads while it is up."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.down: set[int] = set()
        self.paused: set[int] = set()
        self.links: set[tuple[int, int]] = set()
        self.network = (False, False)
        self.most_down = 0
        self.cuts: list[set[tuple[int, int]]] = []
        self.changes = 0

    async def leader(self) -> int | None:
        return None if 0 in self.down | self.paused else 0

    def cut(self, links: Collection[tuple[int, int]]) -> None:
        self.links = set(links)
        if links:
            self.cuts.append(self.links)

    def set_network(self, *, flaky: bool, reorder: bool) -> None:
        self.network = (flaky, reorder)

    async def crash(self, i: int) -> None:
        assert i not in self.down | self.paused
        self.down.add(i)
        self.most_down = max(self.most_down, len(self.down | self.paused))

    async def restart(self, i: int) -> None:
        self.down.remove(i)

    async def pause(self, i: int) -> None:
        assert i not in self.down | self.paused
        self.paused.add(i)
        self.most_down = max(self.most_down, len(self.down | self.paused))

    async def resume(self, i: int) -> None:
        self.paused.remove(i)

    async def change_membership(self, rng: random.Random) -> str:
        self.changes += 1
        return "changed"


@pytest.mark.parametrize("n", [3, 5])
def test_the_nemesis_keeps_a_majority_up_and_heal_undoes_everything(n: int) -> None:
    target = FakeTarget(n)
    nemesis = Nemesis(target, random.Random(n), kinds=FAULT_KINDS)

    async def main() -> None:
        await nemesis.run(60.0)
        await nemesis.heal()

    run(main(), "virtual")

    assert target.most_down == (n - 1) // 2
    assert target.down == target.paused == set()
    assert target.links == set()
    assert target.network == (False, False)
    played = [event.split()[1] for event in nemesis.events]
    assert {"partition", "crash", "restart", "pause", "resume", "network", "membership"} <= set(
        played
    )
    assert target.changes > 0
    for links in target.cuts:  # never a node cut from itself, never a link out of range
        assert all(i != j and 0 <= i < n and 0 <= j < n for i, j in links)


def test_the_same_seed_gives_the_same_schedule() -> None:
    def schedule(seed: int) -> list[str]:
        nemesis = Nemesis(FakeTarget(5), random.Random(seed), kinds=FAULT_KINDS)
        run(nemesis.run(30.0), "virtual")
        return nemesis.events

    assert schedule(3) == schedule(3)
    assert schedule(3) != schedule(4)


def test_unknown_fault_kinds_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown fault kinds"):
        Nemesis(FakeTarget(3), random.Random(1), kinds=["meteor"])


# --------------------------------------------------------------------------- partitions


def cut_from(partition: Partition, i: int) -> set[int]:
    """The nodes node i can no longer send to."""
    return {j for src, j in partition.links if src == i}


@pytest.mark.parametrize("n", [3, 4, 5, 7])
def test_every_shape_cuts_what_its_name_says(n: int) -> None:
    rng, everyone = random.Random(n), set(range(n))

    for _ in range(50):
        split = draw_partition("split", rng, n, leader=None)
        alone = draw_partition("isolate_leader", rng, n, leader=1)
        bridge = draw_partition("bridge", rng, n, leader=1)
        one_way = draw_partition("one_way", rng, n, leader=1)

        # split: a minority (at most half) cut from the rest, both ways.
        group = everyone - cut_from(split, 0)
        assert split.links == between(group, everyone - group)
        assert 1 <= min(len(group), n - len(group)) <= n // 2
        # isolate_leader: the leader cut from everyone, both ways; nobody else cut.
        assert alone.links == between({1}, everyone - {1})
        # bridge: one node cut from nobody, the others in two groups cut both ways.
        bridges = [i for i in everyone if not cut_from(bridge, i)]
        assert len(bridges) == 1
        assert all((j, i) in bridge.links and bridges[0] not in (i, j) for i, j in bridge.links)
        # one_way: only the leader's sending is cut.
        assert one_way.links == {(1, j) for j in everyone - {1}}
        for p in (split, alone, bridge, one_way):
            assert all(i != j and {i, j} <= everyone for i, j in p.links)


def test_partitions_are_described_by_who_is_cut_from_whom() -> None:
    assert draw_partition("isolate_leader", random.Random(1), 3, leader=0).describe() == (
        "[0] alone: cut 0->1 0->2 1->0 2->0"
    )
    assert draw_partition("one_way", random.Random(1), 3, leader=2).describe() == (
        "2 cannot send: cut 2->0 2->1"
    )
    with pytest.raises(ValueError, match="no 'bridge' partition of 2 nodes"):
        draw_partition("bridge", random.Random(1), 2, leader=None)


# --------------------------------------------------------------------------- TCP proxy


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(1024):
        writer.write(data)
        await writer.drain()
    writer.close()


async def roundtrip(address: str, payload: bytes) -> bytes:
    host, port = address.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(payload)
        await writer.drain()
        return await reader.readexactly(len(payload))
    finally:
        writer.close()
        await writer.wait_closed()


async def test_a_link_proxy_forwards_cuts_restores_and_delays() -> None:
    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    proxy = LinkProxy(f"127.0.0.1:{server.sockets[0].getsockname()[1]}")
    await proxy.start()
    loop = asyncio.get_running_loop()
    try:
        host, port = proxy.address.rsplit(":", 1)
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"ping")
        assert await reader.readexactly(4) == b"ping"

        proxy.cut()
        assert await reader.read(10) == b""  # the open connection is closed
        with pytest.raises((asyncio.IncompleteReadError, ConnectionError)):
            await roundtrip(proxy.address, b"again")  # and new ones are refused
        writer.close()

        proxy.restore()
        proxy.delay = 0.05
        started = loop.time()
        assert await roundtrip(proxy.address, b"slow") == b"slow"
        assert loop.time() - started >= 0.1  # held once each way
    finally:
        await proxy.close()
        server.close()
        await server.wait_closed()
