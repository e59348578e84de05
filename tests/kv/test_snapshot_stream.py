"""KVStateMachine's streamed snapshots: round trips, the consistent point, old data, bounds.

`snapshot_stream()` / `restore_stream()` as Node drives them (raftio.snapshotting),
without Node: chunks in and out of one machine. The bytes are
raftio.kv.snapshot_format's; these tests frame records themselves, so they
also pin the format down.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import struct
import time
import tracemalloc
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from raftio.codec import pack, unpack
from raftio.kv.client_table import clients_command
from raftio.kv.machine import (
    DEFAULT_MAX_RESULT_CHARS,
    DEFAULT_MAX_SESSIONS,
    FAILED,
    MAX_NONCE,
    MAX_VALUE,
    KVCommandError,
    KVStateMachine,
    register_command,
    write_command,
)
from raftio.kv.snapshot_format import CHUNK_SIZE, MAGIC, MAX_RECORD

FRAME = struct.Struct(">I")  # a record's size, before its msgpack body


def register(m: KVStateMachine, nonce: str = "n", cap: int = 4096, budget: int = 1 << 30) -> str:
    session = m.apply(register_command(nonce, cap, budget))
    assert isinstance(session, str)
    return session


def busy_machine() -> KVStateMachine:
    """Every part of the state: keys, sessions of each kind, pre-session entries, clients."""
    m = KVStateMachine()
    m.apply(("put", "old", "from a pre-session log", "c1", 1))
    m.apply(("append", "old", "!", "c2", 4))
    a, b, _ = register(m, "a"), register(m, "b"), register(m, "idle")
    for seq in range(1, 30):
        m.apply(write_command("append", f"k{seq % 7}", f"<{seq}>", a, seq))
    m.apply(write_command("put", "ünïcode ☃", "välue ☃", b, 1))
    with pytest.raises(KVCommandError):  # stored as the session's FAILED outcome
        m.apply(write_command("append", "k1", "x" * MAX_VALUE, b, 2))
    m.apply(clients_command({0: "127.0.0.1:7103", 2: "[::1]:7000"}))
    return m


def state_of(m: KVStateMachine) -> tuple[Any, ...]:
    """Everything a restore must bring back, derived state included, sessions in LRU order."""
    m.digest()  # brings every change into the sum and the session terms
    sessions = [
        (sid, s.seq, s.fingerprint, s.outcome, s.used, s.term) for sid, s in m.sessions.items()
    ]
    limits = (m.max_sessions, m.max_result_chars)
    counters = (m.registered, m.clock, m.result_chars, m._sum)
    return (m.digest(), m.data, sessions, limits, counters, m.legacy, m.clients)


async def streamed(m: KVStateMachine) -> bytes:
    return b"".join([chunk async for chunk in m.snapshot_stream()])


async def chunks_of(data: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def iterate(chunks: list[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


async def restored_from(data: bytes, size: int = 1 << 20) -> KVStateMachine:
    m = KVStateMachine()
    await m.restore_stream(chunks_of(data, size))
    return m


def records_of(stream: bytes) -> list[Any]:
    """The records of a stream, unframed."""
    assert stream.startswith(MAGIC)
    records, at = [], len(MAGIC)
    while at < len(stream):
        (size,) = FRAME.unpack_from(stream, at)
        records.append(unpack(stream[at + FRAME.size : at + FRAME.size + size]))
        at += FRAME.size + size
    return records


def framed(records: list[Any]) -> bytes:
    return MAGIC + b"".join(FRAME.pack(len(pack(r))) + pack(r) for r in records)


# ---------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("size", [1, 3, 4096, 1 << 20])
async def test_a_streamed_snapshot_restores_the_same_state(size: int) -> None:
    m = busy_machine()
    data = await streamed(m)

    restored = await restored_from(data, size)

    assert state_of(restored) == state_of(m)
    assert restored.query("k3") == m.query("k3")
    assert restored.query("absent") is None


async def test_restored_sessions_judge_the_next_writes_as_the_original_does() -> None:
    m = busy_machine()
    restored = await restored_from(await streamed(m))
    a, b, idle = (
        next(sid for sid in m.sessions if sid.endswith(f".{n}")) for n in ("a", "b", "idle")
    )
    retry = write_command("append", "k1", "<29>", a, 29)  # a's last write, resent
    commands = [retry, write_command("put", "k", "v", b, 3), register_command("new", 3)]

    results = [[replica.apply(c) for c in commands] for replica in (m, restored)]

    assert results[0] == results[1] == [m.query("k1"), "v", "4.new"]
    assert idle not in restored.sessions  # evicted alike: the LRU order came through
    assert state_of(restored) == state_of(m)


async def test_streamed_and_bytes_snapshots_restore_alike() -> None:
    m = busy_machine()
    stream = await streamed(m)
    from_bytes, bytes_api_from_stream = KVStateMachine(), KVStateMachine()

    from_bytes.restore(m.snapshot())
    from_stream = await restored_from(stream)
    bytes_api_from_stream.restore(stream)  # the bytes API reads a whole stream too

    assert state_of(from_bytes) == state_of(from_stream) == state_of(bytes_api_from_stream)
    assert from_stream.digest() == m.digest()


async def test_an_empty_state_streams_and_restores() -> None:
    m = KVStateMachine()

    restored = await restored_from(await streamed(m))

    assert state_of(restored) == state_of(m)


# ---------------------------------------------------------------------------- the consistent point


async def test_a_stream_holds_the_state_of_its_call_while_applies_go_on() -> None:
    m = busy_machine()
    s = register(m, "writer", cap=50)
    for i in range(3000):
        m.apply(write_command("put", f"big{i}", f"{i:05d}" * 60, s, i + 1))
    at_call = KVStateMachine()
    at_call.restore(m.snapshot())  # the state at the call, kept by the bytes API
    seq = 3000
    chunks = []

    async for chunk in m.snapshot_stream():
        chunks.append(chunk)
        for i in range(len(chunks) * 100):  # rewrite, add, evict, and touch every part
            seq += 1
            m.apply(write_command("append", f"big{i}", "+", s, seq))
            m.apply(write_command("put", f"new{len(chunks)}.{i}", "v", s, seq + 1))
            seq += 1
        register(m, f"late{len(chunks)}", cap=3)
        m.apply(("append", "old", "?", "c1", 1 + len(chunks)))
        m.apply(clients_command({len(chunks): "127.0.0.1:7000"}))
    restored = await restored_from(b"".join(chunks))

    assert len(chunks) > 3
    assert state_of(restored) == state_of(at_call)
    assert restored.digest() != m.digest()  # m did move on meanwhile


async def test_the_stream_yields_to_the_loop_between_chunks() -> None:
    m = KVStateMachine()
    s = register(m)
    for i in range(2000):
        m.apply(write_command("put", f"k{i}", "v" * 1000, s, i + 1))
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.get_running_loop().create_task(ticker())
    chunks = [chunk async for chunk in m.snapshot_stream()]
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task

    assert len(chunks) >= 7
    assert ticks >= len(chunks) - 1


# ---------------------------------------------------------------------------- older data


@pytest.mark.parametrize("size", [1, 3, len(MAGIC), 4096, 1 << 20])
async def test_an_older_raftios_bytes_snapshot_restores_through_the_stream_api(size: int) -> None:
    m = busy_machine()
    old = m.snapshot()  # what an older raftio's Node stored

    restored = await restored_from(old, size)

    assert state_of(restored) == state_of(m)


async def test_a_pre_session_snapshot_restores_through_the_stream_api() -> None:
    old = pack({"data": {"k": "ab"}, "sessions": {"c1": [2, "ab"]}})  # format 1
    by_bytes = KVStateMachine()
    by_bytes.restore(old)

    restored = await restored_from(old, 2)

    assert state_of(restored) == state_of(by_bytes)
    assert restored.apply(("append", "k", "b", "c1", 2)) == "ab"  # an old log's retry


# ---------------------------------------------------------------------------- hostile bytes

Damage = Callable[[bytes], bytes]


def edit(change: Callable[[list[Any]], None]) -> Damage:
    """Damage made on the good stream's records, framed again as they should be."""

    def damaged(good: bytes) -> bytes:
        records = records_of(good)
        change(records)
        return framed(records)

    return damaged


def at(records: list[Any], tag: str) -> int:
    return next(i for i, record in enumerate(records) if record[0] == tag)


def set_field(tag: str, field: int, value: Any) -> Damage:
    return edit(lambda records: records[at(records, tag)].__setitem__(field, value))


def insert_before(tag: str, record: Callable[[list[Any]], Any]) -> Damage:
    return edit(lambda records: records.insert(at(records, tag), record(records)))


def repeat(tag: str) -> Damage:
    return insert_before(tag, lambda records: list(records[at(records, tag)]))


def move_first(tag: str, before: str) -> Damage:
    def change(records: list[Any]) -> None:
        record = records.pop(at(records, tag))
        records.insert(at(records, before), record)

    return edit(change)


GARBAGE = bytes(random.Random(3).randrange(256) for _ in range(300))

HOSTILE: list[Any] = [
    # truncated, anywhere
    pytest.param(lambda good: b"", "decode", id="empty"),
    pytest.param(lambda good: good[:5], "decode", id="cut-in-magic"),
    pytest.param(lambda good: good[: len(MAGIC) + 2], "ends early", id="cut-in-size"),
    pytest.param(lambda good: good[: len(MAGIC) + 9], "ends early", id="cut-in-record"),
    pytest.param(edit(lambda records: records.pop()), "ends early", id="no-end-record"),
    pytest.param(lambda good: good[:-1], "ends early", id="last-byte-missing"),
    pytest.param(edit(lambda records: records.clear()), "ends early", id="magic-alone"),
    # garbage
    pytest.param(lambda good: GARBAGE, "decode", id="garbage"),
    pytest.param(lambda good: MAGIC + GARBAGE, None, id="garbage-after-magic"),
    pytest.param(lambda good: MAGIC + FRAME.pack(2) + b"\xc1\xc1", "decode", id="not-msgpack"),
    pytest.param(lambda good: good + b"\x00", "after its end", id="trailing-byte"),
    pytest.param(lambda good: good + FRAME.pack(0), "after its end", id="trailing-empty-record"),
    pytest.param(lambda good: good + FRAME.pack(MAX_RECORD), "after its end", id="trailing-big"),
    # oversized: refused from its size alone, before its bytes arrive
    pytest.param(lambda good: MAGIC + FRAME.pack(MAX_RECORD + 1), "over", id="oversized"),
    pytest.param(
        lambda good: framed(records_of(good)[:-1]) + FRAME.pack(0xFFFFFFFF),
        "over",
        id="oversized-late",
    ),
    # wrong shapes and types
    pytest.param(set_field("kv", 1, 99), "format", id="header-version"),
    pytest.param(set_field("kv", 1, 3.0), "format", id="header-version-float"),
    pytest.param(set_field("kv", 2, -1), "counters", id="header-negative"),
    pytest.param(set_field("kv", 3, "7"), "counters", id="header-str"),
    pytest.param(set_field("kv", 4, True), "counters", id="header-bool"),
    pytest.param(set_field("kv", 6, [[1, 2]]), "clients", id="header-clients"),
    pytest.param(edit(lambda records: records.pop(0)), "not a header", id="no-header"),
    pytest.param(edit(lambda records: records.__setitem__(0, 5)), "array", id="not-an-array"),
    pytest.param(edit(lambda records: records.__setitem__(1, [])), "array", id="empty-array"),
    pytest.param(set_field("d", 1, 5), "key", id="key-int"),
    pytest.param(set_field("d", 2, b"v"), "key", id="value-bytes"),
    pytest.param(set_field("d", 2, None), "key", id="value-none"),
    pytest.param(edit(lambda r: r[at(r, "d")].append("x")), "key", id="key-long"),
    pytest.param(set_field("s", 1, 7), "session", id="session-id-int"),
    pytest.param(set_field("s", 2, -1), "session", id="session-seq-negative"),
    pytest.param(set_field("s", 3, "fp"), "session", id="session-fingerprint-str"),
    pytest.param(set_field("s", 5, ["ok"]), "session", id="session-value-list"),
    pytest.param(set_field("s", 6, 1.5), "session", id="session-used-float"),
    pytest.param(edit(lambda r: r[at(r, "s")].pop()), "session", id="session-short"),
    pytest.param(set_field("l", 3, 5), "duplicate entry", id="legacy-result-int"),
    pytest.param(set_field("l", 2, "1"), "duplicate entry", id="legacy-seq-str"),
    pytest.param(insert_before("end", lambda r: ["x", 1]), "unknown", id="unknown-tag"),
    pytest.param(insert_before("end", lambda r: [[1], 2]), "unknown", id="unhashable-tag"),
    pytest.param(insert_before("d", lambda r: list(r[0])), "unknown", id="second-header"),
    # duplicates, order, counts, digest
    pytest.param(repeat("d"), "repeats key", id="duplicate-key"),
    pytest.param(repeat("s"), "repeats session", id="duplicate-session"),
    pytest.param(repeat("l"), "repeats duplicate entry", id="duplicate-legacy"),
    pytest.param(move_first("s", before="d"), "out of order", id="session-before-key"),
    pytest.param(move_first("d", before="end"), "out of order", id="key-after-legacy"),
    pytest.param(edit(lambda r: r.append(["d", "late", "v"])), "after its end", id="after-end"),
    pytest.param(edit(lambda r: r.append(list(r[-1]))), "after its end", id="two-ends"),
    pytest.param(set_field("end", 1, 999), "holds", id="count-keys"),
    pytest.param(set_field("end", 2, 0), "holds", id="count-sessions"),
    pytest.param(set_field("end", 3, "2"), "end record", id="count-str"),
    pytest.param(set_field("end", 4, b"digest"), "end record", id="digest-bytes"),
    pytest.param(set_field("end", 4, "0" * 16), "digest", id="digest-wrong"),
    pytest.param(set_field("d", 2, "changed"), "digest", id="value-changed"),
    pytest.param(set_field("s", 6, 12345), "digest", id="session-used-changed"),
    pytest.param(set_field("kv", 2, 12345), "digest", id="registered-changed"),
    pytest.param(edit(lambda r: r.pop(at(r, "d"))), "digest", id="key-dropped-and-counted"),
]


def recount(records: list[Any]) -> None:
    """Fix the end record's counts, so only what the case damaged is wrong."""
    tags = [record[0] for record in records if isinstance(record, list) and record]
    records[-1][1:4] = [tags.count("d"), tags.count("s"), tags.count("l")]


async def test_the_good_stream_is_framed_as_these_tests_frame_it() -> None:
    good = await streamed(busy_machine())

    assert framed(records_of(good)) == good
    assert {"d", "s", "l"} <= {record[0] for record in records_of(good)}


@pytest.mark.parametrize(("damage", "match"), HOSTILE)
async def test_a_damaged_stream_is_refused_and_the_state_is_untouched(
    damage: Damage, match: str | None
) -> None:
    good = await streamed(busy_machine())
    data = damage(good)
    if match == "digest" and data.startswith(MAGIC):  # counts agree: only the digest can tell
        records = records_of(data)
        recount(records)
        data = framed(records)
    m = busy_machine()
    m.apply(("put", "mine", "unchanged", "c9", 1))
    before = state_of(m)

    for size in (1, 7, 1 << 20):
        with pytest.raises(ValueError, match=match):
            await m.restore_stream(chunks_of(data, size))
        assert state_of(m) == before
    with pytest.raises(ValueError, match=match):
        m.restore(data)  # the bytes API refuses it alike
    assert state_of(m) == before


async def test_every_flipped_bit_is_refused() -> None:
    good = await streamed(busy_machine())
    rng = random.Random(11)
    m = KVStateMachine()

    for _ in range(300):
        data = bytearray(good)
        data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        with pytest.raises(ValueError):  # noqa: PT011 - any refusal will do
            await m.restore_stream(chunks_of(bytes(data), 4096))

    assert state_of(m) == state_of(KVStateMachine())


async def test_a_stream_that_never_ends_is_refused_at_the_first_oversized_record() -> None:
    async def endless() -> AsyncIterator[bytes]:
        yield MAGIC + FRAME.pack(MAX_RECORD + 1)
        while True:
            yield b"\x00" * 65536

    m = KVStateMachine()

    with pytest.raises(ValueError, match="over"):
        await m.restore_stream(endless())


# ---------------------------------------------------------------------------- bounds

CLIENTS = 100_000
KEYS = 100
FINGERPRINT = 16  # bytes: machine._fingerprint's digest size
MAX_INT = 9  # bytes of a msgpack int
MAX_STR_HEADER = 5  # bytes before a msgpack str's (or array's, or map's) contents
OUTCOME_CODES = ("ok", FAILED)  # the codes a session stores (refusals but FAILED are not)
SMALL = 1024  # header, end record, magic; the bytes format's map keys


def session_bound(max_sessions: int, max_result_chars: int, value_chars: int) -> int:
    """The most bytes a session table bounded so can take, in either snapshot format.

    Each session: its record's framing, an id of at most `len(str(CLIENTS))`
    digits, a dot and MAX_NONCE characters, seq, fingerprint, outcome code
    and used. Its outcome's value is the value its one put wrote (ASCII here):
    at most `value_chars`, and all of them together at most max_result_chars
    (eviction keeps the newest even over budget, but a value fits it here).
    """
    session_id = len(str(CLIENTS)) + 1 + MAX_NONCE
    code = max(map(len, OUTCOME_CODES))
    record = FRAME.size + 1 + 2  # frame, array header, tag "s"
    fields = (MAX_STR_HEADER + session_id) + MAX_INT + (2 + FINGERPRINT) + (1 + code)
    fields += MAX_STR_HEADER + 2 * MAX_INT  # the value's header; seq and used
    results = min(max_result_chars, max_sessions * value_chars)
    return max_sessions * (record + fields) + results


def live_data_bytes(m: KVStateMachine) -> int:
    """The live data encoded: each key and value, plus its record's framing in the stream."""
    record = FRAME.size + 1 + 2  # frame, array header, tag "d"
    return sum(len(pack(key)) + len(pack(value)) + record for key, value in m.data.items())


@pytest.mark.parametrize(
    ("budget", "value_chars"),
    [
        # max_sessions binds: 4096 short outcomes are far under the result budget
        pytest.param(DEFAULT_MAX_RESULT_CHARS, 8, id="max-sessions"),
        # max_result_chars binds: 200 KB of 1,000-character outcomes is 200 sessions
        pytest.param(200_000, 1000, id="max-result-chars"),
    ],
)
async def test_100_000_one_shot_clients_leave_only_the_live_data_and_the_bounded_sessions(
    budget: int, value_chars: int
) -> None:
    m = KVStateMachine()
    started = time.perf_counter()
    for i in range(CLIENTS):  # each registers, writes once, and is never seen again
        session = register(m, f"{i:016x}", DEFAULT_MAX_SESSIONS, budget)
        value = f"{i:0{value_chars}d}"
        m.apply(write_command("put", f"key{i % KEYS}", value, session, 1))
    applied = time.perf_counter() - started

    stream = await streamed(m)
    bound = live_data_bytes(m) + session_bound(DEFAULT_MAX_SESSIONS, budget, value_chars) + SMALL

    print(
        f"{CLIENTS} clients applied in {applied:.2f}s; {len(m.sessions)} sessions kept; "
        f"snapshot {len(m.snapshot())} bytes, stream {len(stream)} bytes, bound {bound}"
    )
    assert m.registered == CLIENTS
    assert len(m.sessions) <= DEFAULT_MAX_SESSIONS
    assert len(m.snapshot()) <= bound
    assert len(stream) <= bound
    every_client = CLIENTS * (16 + FINGERPRINT + value_chars)  # nonce, fingerprint, outcome
    assert bound < every_client // 4  # the bound is no bound if every client fits in it


def big_machine() -> KVStateMachine:
    """About 50 MB of live data: 50,000 values of 1 KiB."""
    m = KVStateMachine()
    s = register(m)
    for i in range(50_000):
        m.apply(write_command("put", f"key{i:05d}", f"{i:08d}" * 128, s, i + 1))
    return m


async def test_streaming_50_mb_holds_a_few_chunks_not_the_state() -> None:
    m = big_machine()
    sizes = []

    tracemalloc.start()
    try:
        base, _ = tracemalloc.get_traced_memory()
        async for chunk in m.snapshot_stream():
            sizes.append(len(chunk))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    print(f"streamed {sum(sizes)} bytes in {len(sizes)} chunks; peak {peak - base} bytes")
    assert sum(sizes) > 50_000 * 1024
    assert max(sizes) < CHUNK_SIZE + 2048  # a chunk, plus the record that crossed its end
    assert peak - base < 8 << 20  # the dict's shallow copy and a chunk or two


async def test_restoring_50_mb_holds_the_new_state_and_a_few_chunks() -> None:
    source = big_machine()
    chunks = [chunk async for chunk in source.snapshot_stream()]
    m = KVStateMachine()

    tracemalloc.start()
    try:
        base, _ = tracemalloc.get_traced_memory()
        await m.restore_stream(iterate(chunks))
        final, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    print(f"restored state {final - base} bytes; peak {peak - base} bytes")
    assert m.digest() == source.digest()
    assert peak - base < (final - base) + (16 << 20)
