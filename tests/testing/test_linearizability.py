"""raftio.testing.linearizability: the checker on hand-written, generated and large histories."""

from __future__ import annotations

import asyncio
import itertools
import math
import random
import time
from collections.abc import Hashable, Sequence
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raftio.testing import run
from raftio.testing.lincheck.generate import linearizable_history
from raftio.testing.linearizability import (
    UNKNOWN,
    CheckResult,
    History,
    KvModel,
    Operation,
    check,
    timeline,
)

INF = math.inf


def put(client: int, key: str, value: str, call: float, ret: float = INF) -> Operation:
    return Operation(client, "put", key, value, None, call, ret)


def append(client: int, key: str, value: str, call: float, ret: float = INF) -> Operation:
    return Operation(client, "append", key, value, None, call, ret)


def get(client: int, key: str, output: str | None, call: float, ret: float = INF) -> Operation:
    return Operation(client, "get", key, None, output, call, ret)


# --- hand-written histories -------------------------------------------------------------

LINEARIZABLE: dict[str, list[Operation]] = {
    # Sequential, one client.
    "put then get": [put(1, "x", "a", 0, 1), get(1, "x", "a", 2, 3)],
    "missing key reads empty": [get(1, "x", "", 0, 1)],
    "appends concatenate": [
        append(1, "x", "a", 0, 1),
        append(1, "x", "b", 2, 3),
        get(1, "x", "ab", 4, 5),
    ],
    "put resets appends": [
        append(1, "x", "a", 0, 1),
        put(1, "x", "p", 2, 3),
        append(1, "x", "b", 4, 5),
        get(1, "x", "pb", 6, 7),
    ],
    # Concurrency lets either order stand.
    "get overlapping a put may see the old value": [
        put(1, "x", "a", 0, 1),
        put(2, "x", "b", 2, 5),
        get(3, "x", "a", 3, 4),
    ],
    "get overlapping a put may see the new value": [
        put(1, "x", "a", 0, 1),
        put(2, "x", "b", 2, 5),
        get(3, "x", "b", 3, 4),
    ],
    "concurrent appends in either order": [
        append(1, "x", "a", 0, 3),
        append(2, "x", "b", 0, 3),
        get(3, "x", "ba", 4, 5),
    ],
    "equal timestamps count as concurrent": [
        put(1, "x", "a", 0, 1),
        get(2, "x", "", 1, 2),
    ],
    "keys are independent": [
        put(1, "x", "a", 0, 1),
        put(1, "y", "b", 2, 3),
        get(2, "x", "a", 4, 5),
        get(2, "y", "b", 4, 5),
    ],
    # Unknown outcomes: may apply any time after the call, or never.
    "unknown put applies late": [
        put(1, "x", "a", 0, 1),
        put(2, "x", "b", 2),
        get(3, "x", "a", 5, 6),
        get(3, "x", "b", 50, 51),
    ],
    "unknown put never applies": [put(1, "x", "a", 0), get(2, "x", "", 5, 6)],
    "unknown append applies between two reads": [
        append(1, "x", "a", 0, 1),
        append(2, "x", "b", 2),
        get(3, "x", "a", 3, 4),
        get(3, "x", "ab", 9, 10),
    ],
    "unknown get is ignored": [put(1, "x", "a", 0, 1), get(2, "x", "zzz", 2)],
}

NOT_LINEARIZABLE: dict[str, list[Operation]] = {
    "stale read after a completed write": [
        put(1, "x", "a", 0, 1),
        put(2, "x", "b", 2, 3),
        get(3, "x", "a", 4, 5),
    ],
    "two reads see writes in opposite orders": [
        put(1, "x", "a", 0, 10),
        put(2, "x", "b", 0, 10),
        get(3, "x", "a", 1, 2),
        get(3, "x", "b", 3, 4),
        get(4, "x", "b", 1, 2),
        get(4, "x", "a", 3, 4),
    ],
    "lost append": [
        append(1, "x", "a", 0, 1),
        append(2, "x", "b", 2, 3),
        get(3, "x", "b", 4, 5),
    ],
    "read of a value never written": [put(1, "x", "a", 0, 1), get(2, "x", "q", 2, 3)],
    "read from the future": [get(1, "x", "a", 0, 1), put(2, "x", "a", 2, 3)],
    "read of the empty value after a completed put": [
        put(1, "x", "a", 0, 1),
        get(2, "x", "", 2, 3),
    ],
    "value un-read: a newer value, then the older one": [
        put(1, "x", "a", 0, 1),
        put(2, "x", "b", 2, 10),
        get(3, "x", "b", 3, 4),
        get(3, "x", "a", 5, 6),
    ],
    "unknown put cannot apply before its call": [
        put(1, "x", "a", 0, 1),
        get(2, "x", "b", 2, 3),
        put(3, "x", "b", 4),
    ],
    "appends seen in two orders": [
        append(1, "x", "a", 0, 10),
        append(2, "x", "b", 0, 10),
        get(3, "x", "ab", 11, 12),
        get(4, "x", "ba", 13, 14),
    ],
}


@pytest.mark.parametrize("ops", LINEARIZABLE.values(), ids=LINEARIZABLE.keys())
def test_linearizable_histories_pass(ops: list[Operation]) -> None:
    result = check(ops)

    assert result.ok is True, result.explain()
    assert not result.violations
    assert result.explain().startswith("linearizable: ")


@pytest.mark.parametrize("ops", NOT_LINEARIZABLE.values(), ids=NOT_LINEARIZABLE.keys())
def test_non_linearizable_histories_fail(ops: list[Operation]) -> None:
    result = check(ops)

    assert result.ok is False
    [violation] = result.violations
    assert violation.key == "x"
    assert violation.stuck in violation.window
    assert "cannot be placed" in result.explain()


@pytest.mark.parametrize(
    ("ops", "because"),
    [
        (NOT_LINEARIZABLE["stale read after a completed write"], "was overwritten by put(x, 'b')"),
        (NOT_LINEARIZABLE["lost append"], "'a' is missing from 'b'"),
        (NOT_LINEARIZABLE["read of a value never written"], "no write could have produced 'q'"),
        (NOT_LINEARIZABLE["read from the future"], "was called after the get returned"),
        (NOT_LINEARIZABLE["read of the empty value after a completed put"], "initial ''"),
        (NOT_LINEARIZABLE["two reads see writes in opposite orders"], "where it does not fit"),
    ],
)
def test_violations_say_why(ops: list[Operation], because: str) -> None:
    [violation] = check(ops).violations

    assert because in violation.reason


def test_stale_read_report() -> None:
    result = check(NOT_LINEARIZABLE["stale read after a completed write"])

    assert result.explain() == "\n".join(
        [
            "not linearizable: 1 of 1 key without a valid order (3 operations over 1 key)",
            "",
            "key 'x': get(x) -> 'a' cannot be placed",
            "  why: get(x) -> 'a' [client 3, t=4..5] cannot be placed: every write that could"
            " explain 'a': put(x, 'a') [client 1, t=0..1] was overwritten by put(x, 'b')"
            " [client 2, t=2..3], before the get",
            "  operations involved (3), by call time:",
            "    1  t=0..1                 client 1    put(x, 'a')",
            "    2  t=2..3                 client 2    put(x, 'b')",
            "    3  t=4..5                 client 3    get(x) -> 'a'   <- cannot be placed",
            "  longest linearizable prefix: 2 operations, leaving state 'b'; in order:",
            "    t=0..1                 client 1    put(x, 'a')",
            "    t=2..3                 client 2    put(x, 'b')",
            "  timeline ([ call, ] return, > outcome unknown):",
            "              t=0 .. t=5",
            "    client 1  [1]",
            "    client 2      [2]",
            "    client 3          [3]   <- 3 cannot be placed",
        ]
    )


def test_opposite_orders_window_holds_all_six_operations() -> None:
    ops = NOT_LINEARIZABLE["two reads see writes in opposite orders"]

    [violation] = check(ops).violations

    assert sorted(map(id, violation.window)) == sorted(map(id, ops))
    assert len(violation.prefix) == 5


def test_timeline_draws_unknown_outcomes_to_the_edge() -> None:
    ops = [put(1, "x", "a", 0, 1), put(2, "x", "b", 2), get(1, "x", "b", 3, 4)]

    rows = timeline(ops)

    assert rows == [
        "          t=0 .. t=4",
        "client 1  [1]   [3]",
        "client 2      [2----->",
    ]


def test_only_failing_keys_are_reported() -> None:
    ops = [*LINEARIZABLE["keys are independent"], put(3, "z", "a", 0, 1), get(3, "z", "b", 2, 3)]

    result = check(ops)

    assert result.ok is False
    assert [v.key for v in result.violations] == ["z"]
    assert result.parts == 3


def test_kv_model_rejects_unknown_kinds() -> None:
    with pytest.raises(ValueError, match="unknown kind 'cas'"):
        check([Operation(1, "cas", "x", "a", None, 0, 1)])


# --- History: recording from async clients ----------------------------------------------


class FlakyKv:
    """A linearizable in-memory store behind a random delay; some calls time out."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.data: dict[str, str] = {}

    async def do(self, kind: str, key: str, value: str | None) -> str | None:
        await asyncio.sleep(self.rng.uniform(0, 0.01))
        current = self.data.get(key, "")
        if kind == "put":
            self.data[key] = value or ""
        elif kind == "append":
            self.data[key] = current + (value or "")
        await asyncio.sleep(self.rng.uniform(0, 0.01))
        return current if kind == "get" else None


async def run_clients(history: History, seed: int, clients: int, ops_each: int) -> None:
    rng = random.Random(seed)
    kv = FlakyKv(rng)

    async def client(c: int) -> None:
        for n in range(ops_each):
            kind = rng.choice(["get", "put", "append"])
            key, value = rng.choice("xyz"), None if kind == "get" else f"{c}.{n};"
            handle = history.record_call(c, kind, key, value)
            try:
                async with asyncio.timeout(0.015):
                    output = await kv.do(kind, key, value)
            except TimeoutError:
                history.record_unknown(handle)
            else:
                history.record_return(handle, output)

    await asyncio.gather(*(client(c) for c in range(clients)))


def test_history_from_async_clients_on_a_virtual_clock(seed: int) -> None:
    print(f"seed={seed}")
    history = History()

    run(run_clients(history, seed, clients=5, ops_each=40), loop="virtual")
    result = check(history)

    assert len(history) == 200
    assert any(op.is_unknown for op in history.operations)  # some calls timed out
    assert result.ok is True, f"seed={seed}\n{result.explain()}"


def test_history_stamps_with_the_running_loops_clock() -> None:
    async def main() -> list[Operation]:
        history = History()
        handle = history.record_call(1, "put", "x", "a")
        await asyncio.sleep(2.5)
        history.record_return(handle)
        history.record_call(2, "get", "x")  # never completed: unknown
        return history.operations

    ops = run(main(), loop="virtual")

    assert [(op.call_time, op.return_time) for op in ops] == [(0.0, 2.5), (2.5, INF)]
    assert ops[1].is_unknown


def test_equal_timestamps_keep_the_recording_order() -> None:
    history = History(clock=lambda: 7.0)  # a clock that never moves
    for client, kind, value in [(1, "put", "a"), (2, "put", "b")]:
        history.record_return(history.record_call(client, kind, "x", value))
    history.record_return(history.record_call(3, "get", "x"), "a")

    result = check(history)

    # All at t=7, but the get started after put b returned: a stale read.
    assert result.ok is False
    assert "overwritten by put(x, 'b')" in result.violations[0].reason


def test_history_refuses_to_complete_an_operation_twice() -> None:
    history = History(clock=itertools.count().__next__)
    handle = history.record_call(1, "put", "x", "a")
    history.record_return(handle)

    with pytest.raises(ValueError, match="already completed"):
        history.record_unknown(handle)


# --- generated histories: properties ----------------------------------------------------


class PlainKv:
    """KvModel without its hints (read-only operations, lookahead): the bare search."""

    def __init__(self) -> None:
        self.kv = KvModel()

    def init(self) -> str:
        return self.kv.init()

    def step(self, state: str, op: Operation, output: Any) -> tuple[bool, str]:
        return self.kv.step(state, op, output)

    def partition(self, operations: Sequence[Operation]) -> dict[Hashable, list[Operation]]:
        return self.kv.partition(operations)

    def describe(self, op: Operation) -> str:
        return self.kv.describe(op)

    def describe_state(self, state: str) -> str:
        return self.kv.describe_state(state)


_STEP = st.tuples(
    st.sampled_from(["get", "put", "append"]),
    st.sampled_from("xy"),
    st.integers(0, 4),  # client
    st.floats(0.01, 10),  # gap since the previous operation took effect
    st.floats(0, 20),  # called this long before taking effect
    st.one_of(st.floats(0, 20), st.just(INF)),  # returned this long after; inf: unknown
)


@st.composite
def sequential_histories(draw: st.DrawFn) -> list[Operation]:
    """Operations applied to a sequential store one at a time, each stretched into an
    interval around the instant it took effect; some outcomes unknown."""
    store: dict[str, str] = {}
    ops, at = [], 0.0
    for i, (kind, key, client, gap, before, after) in enumerate(draw(st.lists(_STEP, max_size=30))):
        at += gap
        value = None if kind == "get" else f"v{i};"
        output = store.get(key, "") if kind == "get" else None
        if kind == "put":
            store[key] = value or ""
        elif kind == "append":
            store[key] = store.get(key, "") + (value or "")
        ops.append(Operation(client, kind, key, value, output, at - before, at + after))
    return ops


@settings(max_examples=200, deadline=None, derandomize=True)
@given(sequential_histories())
def test_histories_of_a_sequential_store_are_linearizable(ops: list[Operation]) -> None:
    result = check(ops)

    assert result.ok is True, result.explain()


@settings(max_examples=200, deadline=None, derandomize=True)
@given(sequential_histories(), st.data())
def test_a_read_of_a_value_never_written_is_caught(
    ops: list[Operation], data: st.DataObject
) -> None:
    reads = [i for i, op in enumerate(ops) if op.kind == "get" and not op.is_unknown]
    if not reads:
        return
    i = data.draw(st.sampled_from(reads))
    ops[i] = replace(ops[i], output="never-written")

    result = check(ops)

    assert result.ok is False
    assert [v.key for v in result.violations] == [ops[i].key]


@settings(max_examples=200, deadline=None, derandomize=True)
@given(sequential_histories(), st.data())
def test_hints_do_not_change_verdicts(ops: list[Operation], data: st.DataObject) -> None:
    # Make one read return another value that was written: sometimes still linearizable.
    reads = [i for i, op in enumerate(ops) if op.kind == "get" and not op.is_unknown]
    written = sorted({op.output for op in ops if op.kind == "get" and op.output is not None})
    if reads:
        i = data.draw(st.sampled_from(reads))
        ops[i] = replace(ops[i], output=data.draw(st.sampled_from(["", *written])))

    bare = check(ops, model=PlainKv(), timeout=5)

    assert bare.ok is None or check(ops).ok is bare.ok


@st.composite
def small_random_histories(draw: st.DrawFn) -> list[Operation]:
    """Up to 6 operations with arbitrary outputs: some linearizable, most not."""
    ops = []
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["get", "put", "append"]))
        value = None if kind == "get" else draw(st.sampled_from(["a", "b"]))
        output = draw(st.sampled_from(["", "a", "b", "ab", "ba"])) if kind == "get" else None
        call = draw(st.integers(0, 8))
        ret = INF if draw(st.integers(0, 5)) == 0 else call + draw(st.integers(0, 4))
        ops.append(Operation(0, kind, draw(st.sampled_from("xy")), value, output, call, ret))
    return ops


def brute_force(ops: Sequence[Operation]) -> bool:
    """Linearizable? Tries every order of every subset of the unknown-outcome operations."""
    known = [op for op in ops if not op.is_unknown]
    unknown = [op for op in ops if op.is_unknown]
    for r in range(len(unknown) + 1):
        for subset in itertools.combinations(unknown, r):
            for order in itertools.permutations([*known, *subset]):
                if _respects_real_time(order) and _valid(order):
                    return True
    return False


def _respects_real_time(order: Sequence[Operation]) -> bool:
    return not any(
        later.return_time < earlier.call_time
        for i, earlier in enumerate(order)
        for later in order[i + 1 :]
    )


def _valid(order: Sequence[Operation]) -> bool:
    store: dict[Hashable, str] = {}
    for op in order:
        current = store.get(op.key, "")
        if op.kind == "get" and not op.is_unknown and op.output != current:
            return False
        if op.kind == "put":
            store[op.key] = op.value
        elif op.kind == "append":
            store[op.key] = current + op.value
    return True


@settings(max_examples=600, deadline=None, derandomize=True)
@given(small_random_histories())
def test_agrees_with_brute_force(ops: list[Operation]) -> None:
    assert check(ops).ok is brute_force(ops)


# --- large histories, timeouts ----------------------------------------------------------


def test_twenty_thousand_operations_over_fifty_keys(seed: int) -> None:
    print(f"seed={seed}")
    ops = linearizable_history(
        random.Random(seed), operations=20_000, keys=50, clients=16, unknown=0.02
    )

    started = time.perf_counter()
    result = check(ops)
    elapsed = time.perf_counter() - started

    print(f"20000 ops, 50 keys, 16 clients: {elapsed:.3f} s")
    assert result.ok is True, f"seed={seed}\n{result.explain()}"
    assert elapsed < 10, f"seed={seed}: {elapsed:.1f} s"


def test_one_bad_read_among_twenty_thousand_is_found(seed: int) -> None:
    print(f"seed={seed}")
    rng = random.Random(seed)
    ops = linearizable_history(rng, operations=20_000, keys=50, clients=16, unknown=0.02)
    reads = [i for i, op in enumerate(ops) if op.kind == "get" and not op.is_unknown]
    bad = rng.choice(reads)
    ops[bad] = replace(ops[bad], output=ops[bad].output + "X")

    result = check(ops)

    assert result.ok is False, f"seed={seed}"
    [violation] = result.violations
    assert violation.key == ops[bad].key, f"seed={seed}"
    assert "cannot be placed" in violation.explain()


def hard_history() -> list[Operation]:
    """Twelve clients appending to one key: exponential for the bare search."""
    return linearizable_history(
        random.Random(0), operations=2_000, keys=1, clients=12, kinds=("get", "append")
    )


def test_hints_make_concurrent_appends_cheap() -> None:
    assert check(hard_history(), timeout=60).ok is True


def test_timeout_with_an_injected_clock_gives_unknown() -> None:
    ticks = itertools.count()  # every read of this clock is one "second" later

    result = check(hard_history(), model=PlainKv(), timeout=50, clock=lambda: float(next(ticks)))

    assert result.ok is None
    assert not result
    assert result.unchecked == ("k0",)
    assert result.explain().startswith("unknown: timed out with 1 of 1 key unchecked")


def test_timeout_in_real_seconds() -> None:
    started = time.perf_counter()
    result = check(hard_history(), model=PlainKv(), timeout=0.2)

    assert result.ok is None
    assert time.perf_counter() - started < 5


# --- a model of the user's own -----------------------------------------------------------


class Counter:
    """A counter whose "incr" returns the new value; "read" returns the current one."""

    def init(self) -> int:
        return 0

    def step(self, state: int, op: Operation, output: Any) -> tuple[bool, int]:
        after = state + 1 if op.kind == "incr" else state
        return output is UNKNOWN or output == after, after

    def partition(self, operations: Sequence[Operation]) -> dict[Hashable, Sequence[Operation]]:
        return {None: operations}

    def describe(self, op: Operation) -> str:
        return f"{op.kind}() -> {'?' if op.is_unknown else op.output}"

    def describe_state(self, state: int) -> str:
        return str(state)


def counter_op(client: int, kind: str, output: int, call: float, ret: float = INF) -> Operation:
    return Operation(client, kind, None, None, output, call, ret)


def test_a_custom_model_checks_a_counter() -> None:
    good = [
        counter_op(1, "incr", 1, 0, 2),
        counter_op(2, "incr", 2, 1, 3),
        counter_op(3, "incr", 3, 1),  # unknown: applied before the read
        counter_op(1, "read", 3, 4, 5),
    ]
    bad = [counter_op(1, "incr", 1, 0, 1), counter_op(2, "incr", 1, 2, 3)]

    assert check(good, model=Counter()).ok is True
    result: CheckResult = check(bad, model=Counter())
    assert result.ok is False
    assert "incr() -> 1" in result.explain()
    assert "state 1, where it does not fit" in result.violations[0].reason


def test_kv_model_drops_unknown_writes_no_read_saw() -> None:
    seen, unseen = put(1, "x", "a", 0), append(2, "x", "b", 0)
    ops = [seen, unseen, get(3, "x", "a", 1, 2), get(3, "x", None, 3)]

    parts = KvModel().partition(ops)

    # Unseen can always go last; the unknown get promises nothing.
    assert parts == {"x": [seen, ops[2]]}


def test_kv_model_describes_operations() -> None:
    model = KvModel()

    assert model.describe(put(1, "x", "a", 0, 1)) == "put(x, 'a')"
    assert model.describe(append(1, "my key", "a", 0)) == "append('my key', 'a')?"
    assert model.describe(get(1, "x", "a", 0, 1)) == "get(x) -> 'a'"
