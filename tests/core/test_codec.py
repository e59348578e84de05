"""The msgpack codec: commands, RPC messages, storage records.

Every replica must apply an equal command (§5.3 State Machine Safety), so
commands round-trip with their exact types; messages come from the network
and are never trusted, so `decode_message` raises CodecError, and nothing
else, on any input.
"""

from __future__ import annotations

import math
import sys
import threading
from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from raftio import codec
from raftio.codec import CodecError
from raftio.membership import Configuration, encode_configuration
from raftio.messages import (
    AppendEntriesArgs,
    AppendEntriesReply,
    Entry,
    InstallSnapshotArgs,
    InstallSnapshotReply,
    Message,
    RequestVoteArgs,
    RequestVoteReply,
    describe,
)

from .helpers import PROPERTY

# Wire tags, as ``[tag, field, ...]`` arrays (raftio/codec.py module docstring).
RV, RV_REPLY, AE, AE_REPLY, IS, IS_REPLY = range(6)


def same(a: Any, b: Any) -> bool:
    """Equal and of the same types all the way down (1 is not True, (1,) is not [1])."""
    if type(a) is not type(b):
        return False
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return len(a) == len(b) and all(
            any(same(k, k2) and same(v, v2) for k2, v2 in b.items()) for k, v in a.items()
        )
    if isinstance(a, set | frozenset):
        return len(a) == len(b) and all(any(same(x, y) for y in b) for x in a)
    if isinstance(a, float):
        return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)
    return bool(a == b)


# --- commands ---------------------------------------------------------------------------

INTS = st.integers(-(2**63), 2**64 - 1)
SCALARS = (
    st.none()
    | st.booleans()
    | INTS
    | st.floats(allow_nan=False)
    | st.text(max_size=8)
    | st.binary(max_size=8)
)
HASHABLE = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3).map(tuple) | st.frozensets(inner, max_size=3),
    max_leaves=6,
)
COMMANDS = st.recursive(
    HASHABLE,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.lists(inner, max_size=4).map(tuple)
        | st.dictionaries(INTS | st.text(max_size=4) | HASHABLE, inner, max_size=4)
        | st.sets(HASHABLE, max_size=4)
        | st.frozensets(HASHABLE, max_size=4)
    ),
    max_leaves=20,
)


@pytest.mark.parametrize(
    "command",
    [
        # scalars keep their type: bool is not int, bytes is not str
        None,
        True,
        0,
        -(2**63),
        2**64 - 1,
        1.5,
        -0.0,
        "",
        "héllo",
        b"\x00\xff",
        # containers keep theirs: a tuple stays a tuple, sets stay sets
        [],
        (),
        [1, (2, 3)],
        ("put", "k", b"v"),
        ((1, (2, (3,))),),
        {1, 2},
        frozenset({(1, 2), "x"}),
        {frozenset({1})},
        # dicts with non-string keys
        {1: "a", -2: "b"},
        {(1, 2): [3], None: {4: {5}}, b"k": 1.0, True: False},
        {"op": "append", "args": [("k", 1), {"n": None}]},
    ],
)
def test_command_round_trip(command: Any) -> None:
    """§5.3: every replica decodes the leader's encoding to an equal command of equal type."""
    assert same(codec.decode_command(codec.encode_command(command)), command)


@PROPERTY
@given(COMMANDS)
def test_command_round_trip_property(command: Any) -> None:
    """§5.3: round trip of arbitrary nested commands, types included."""
    assert same(codec.decode_command(codec.encode_command(command)), command)


class Opaque:
    pass


@pytest.mark.parametrize(
    "command",
    [
        # types msgpack cannot carry
        Opaque(),
        object(),
        1 + 2j,
        # integers outside msgpack's 64-bit range
        2**64,
        -(2**63) - 1,
        # ... also when nested
        [1, Opaque()],
        {"k": (object(),)},
        {Opaque(): 1},
        frozenset({2**70}),
    ],
)
def test_unencodable_command_raises_type_error(command: Any) -> None:
    """§5.3: a command that cannot be replicated exactly is refused with TypeError."""
    with pytest.raises(TypeError, match="cannot be replicated"):
        codec.encode_command(command)


# --- messages ---------------------------------------------------------------------------

ENTRIES = st.lists(st.builds(Entry, INTS, st.binary(max_size=16)), max_size=5)
MESSAGES: st.SearchStrategy[Message] = st.one_of(
    st.builds(RequestVoteArgs, INTS, INTS, INTS, INTS, st.booleans()),
    st.builds(RequestVoteReply, INTS, st.booleans()),
    st.builds(AppendEntriesArgs, INTS, INTS, INTS, INTS, ENTRIES, INTS),
    st.builds(AppendEntriesReply, INTS, st.booleans(), INTS, INTS, INTS, INTS),
    st.builds(InstallSnapshotArgs, INTS, INTS, INTS, INTS, st.binary(max_size=32)),
    st.builds(InstallSnapshotReply, INTS),
)


@PROPERTY
@given(MESSAGES)
def test_message_round_trip(msg: Message) -> None:
    """§5: each RPC argument and reply survives the wire unchanged."""
    decoded = codec.decode_message(codec.encode_message(msg))

    assert type(decoded) is type(msg)
    assert decoded == msg
    assert same(list(vars_of(decoded)), list(vars_of(msg)))


def vars_of(msg: Message) -> list[Any]:
    return [getattr(msg, name) for name in msg.__slots__]


@pytest.mark.parametrize(
    ("msg", "wire"),
    [
        (RequestVoteArgs(3, 1, 7, 2), [RV, 3, 1, 7, 2, False]),
        (RequestVoteReply(3, True), [RV_REPLY, 3, True]),
        (
            AppendEntriesArgs(3, 1, 7, 2, [Entry(3, b"x")], 6),
            [AE, 3, 1, 7, 2, [[3, b"x"]], 6],
        ),
        (AppendEntriesReply(3, False, 0, 2, 5, 8), [AE_REPLY, 3, False, 0, 2, 5, 8]),
        (InstallSnapshotArgs(3, 1, 9, 2, b"s"), [IS, 3, 1, 9, 2, b"s"]),
        (
            InstallSnapshotArgs(3, 1, 9, 2, b"s", Configuration({0: "a:1"}, {4: "b:2"})),
            [IS, 3, 1, 9, 2, b"s", encode_configuration(Configuration({0: "a:1"}, {4: "b:2"}))],
        ),
        (InstallSnapshotReply(3), [IS_REPLY, 3]),
    ],
)
def test_message_wire_form(msg: Message, wire: list[Any]) -> None:
    """§5: messages are [tag, field, ...] arrays in Figure 2 field order."""
    assert msgpack.unpackb(codec.encode_message(msg)) == wire
    assert codec.encode_message(msg) == msgpack.packb(wire, use_bin_type=True)


def packed(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    "data",
    [
        # not msgpack, truncated, trailing bytes, absurd lengths, too deep
        b"",
        b"\xc1",
        b"\x92\x05",
        packed([IS_REPLY, 1]) + b"\x00",
        b"\xdd\xff\xff\xff\xff",
        b"\x91" * 5000 + b"\x00",
        # maps with non-string keys are refused by the decoder
        b"\x81\x01\x02",
        # not a non-empty array
        packed(5),
        packed(None),
        packed(b"x"),
        packed({"tag": 0}),
        packed([]),
        # unknown tags
        packed([6, 1]),
        packed([-1, 1]),
        packed(["AE", 1]),
        packed([True, 1]),
        packed([1.0, 1, True]),
        packed([None]),
        packed([[IS_REPLY], 1]),
        # wrong arity
        packed([IS_REPLY]),
        packed([IS_REPLY, 1, 2]),
        packed([RV, 3, 1, 7, 2]),
        packed([AE, 3, 1, 7, 2, [], 6, 0]),
        # wrong field types: bool is not int, int is not bool, str is not bytes
        packed([RV_REPLY, 3, 1]),
        packed([RV_REPLY, True, True]),
        packed([IS_REPLY, "3"]),
        packed([IS_REPLY, 3.0]),
        packed([IS_REPLY, None]),
        packed([IS, 3, 1, 9, 2, "s"]),
        # a snapshot's configuration that is not one
        packed([IS, 3, 1, 9, 2, b"s", "voters"]),
        packed([IS, 3, 1, 9, 2, b"s", b"\xc1\xc1{}"]),  # no voter
        packed([IS, 3, 1, 9, 2, b"s", b"\xc1\xc1" + b'{"voters":[[-1,"a:1"]]}']),
        packed(
            [IS, 3, 1, 9, 2, b"s", b"\xc1\xc1" + b'{"voters":[[1,"a:1"]],"learners":[[1,"b:2"]]}']
        ),
        packed([IS, 3, 1, 9, 2, b"s", b"{}"]),
        packed([AE_REPLY, 3, None, 0, 0, 0, 0]),
        packed([AE, 3, 1, 7, 2, b"entries", 6]),
        packed([RV, 3, 1, 7, 2, 0]),
        # malformed entries
        packed([AE, 3, 1, 7, 2, [[3]], 6]),
        packed([AE, 3, 1, 7, 2, [[3, "x"]], 6]),
        packed([AE, 3, 1, 7, 2, [[True, b"x"]], 6]),
        packed([AE, 3, 1, 7, 2, [[3, b"x", 0]], 6]),
        packed([AE, 3, 1, 7, 2, [3], 6]),
        packed([AE, 3, 1, 7, 2, [{"term": 3}], 6]),
        packed([AE, 3, 1, 7, 2, [[3, b"x"], None], 6]),
        # extension types and timestamps where a field belongs
        packed([IS_REPLY, msgpack.ExtType(1, b"\x01")]),
        b"\x92\x05\xd6\xff\x00\x00\x00\x00",
    ],
)
def test_decode_message_rejects_malformed(data: bytes) -> None:
    """§5: untrusted input is rejected with CodecError, never a crash or a bogus message."""
    with pytest.raises(CodecError):
        codec.decode_message(data)


@PROPERTY
@given(st.binary(max_size=64))
def test_decode_message_arbitrary_bytes(data: bytes) -> None:
    """§5: any byte string decodes to a valid message or raises CodecError, nothing else."""
    try:
        msg = codec.decode_message(data)
    except CodecError:
        return
    assert codec.decode_message(codec.encode_message(msg)) == msg


MSGPACK_VALUES = st.recursive(
    st.none() | st.booleans() | INTS | st.floats() | st.text(max_size=4) | st.binary(max_size=4),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=2), inner),
    max_leaves=10,
)


@PROPERTY
@given(st.integers(-1, 7), st.lists(MSGPACK_VALUES, max_size=8))
def test_decode_message_arbitrary_arrays(tag: int, fields: list[Any]) -> None:
    """§5: well-formed msgpack of the wrong shape is CodecError too; the right shape decodes."""
    data = packed([tag, *fields])

    try:
        msg = codec.decode_message(data)
    except CodecError:
        return
    assert codec.encode_message(msg) == data


@pytest.mark.parametrize(
    ("msg", "line"),
    [
        (RequestVoteArgs(3, 1, 7, 2), "RV T3 last=7@2"),
        (RequestVoteArgs(3, 1, 7, 2, pre_vote=True), "PV T3 last=7@2"),
        (RequestVoteReply(3, True), "RV-yes T3"),
        (RequestVoteReply(4, False), "RV-no T4"),
        (AppendEntriesArgs(3, 1, 4, 2, [Entry(3, b"x")], 4), "AE T3 prev=4@2 n=1 commit=4"),
        (AppendEntriesReply(3, True, 5), "AE-ok T3 match=5"),
        (AppendEntriesReply(3, False, 0, 2, 4, 9), "AE-no T3 x=2/4/9"),
        (InstallSnapshotArgs(3, 1, 9, 2, b"abc"), "IS T3 last=9@2 bytes=3"),
        (InstallSnapshotReply(3), "IS-ok T3"),
    ],
)
def test_describe(msg: Message, line: str) -> None:
    """§5: one short log line per message, as the logs and scenario files show them."""
    assert describe(msg) == line


# --- storage records --------------------------------------------------------------------


RECORDS = st.recursive(
    st.none() | st.booleans() | INTS | st.floats(allow_nan=False) | st.text() | st.binary(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(INTS | st.text(), inner),
    max_leaves=10,
)


@PROPERTY
@given(RECORDS)
def test_record_round_trip(record: Any) -> None:
    """§5.1 Figure 2 persistent state: what is packed for storage unpacks equal."""
    assert same(codec.unpack(codec.pack(record)), record)


def test_record_with_int_keys_round_trips() -> None:
    """§5.1: storage records may use int keys (e.g. per-index tables)."""
    record = {1: [b"a", 2], 3: {"x": None}}

    assert codec.unpack(codec.pack(record)) == record


@pytest.mark.parametrize("data", [b"", b"\xc1", b"\x92\x01", codec.pack(1) + b"\x01"])
def test_unpack_rejects_malformed(data: bytes) -> None:
    """§5.1: a damaged record is reported as CodecError, not trusted."""
    with pytest.raises(CodecError):
        codec.unpack(data)


# --- tuple commands: 0xC1 and a msgpack array -------------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        (),
        ((),),
        (1, (2, (3, ())), ()),
        ("set", "k", b"v"),
        ("add", frozenset({1, (2, 3)}), {4, "x"}, [frozenset()]),
        ({"k": (1, b"v")}, {1: {2}}, {(1,): frozenset({b""})}),
        (b"\x00\xc1\xff", bytearray(b"ba"), None, True, 1.5, -(2**63), 2**64 - 1),
        ([1, (2,)], [], {}),
    ],
)
def test_tuple_command_round_trip(command: Any) -> None:
    """§5.3: a tuple command, the usual shape, decodes equal and a tuple all the way down."""
    encoded = codec.encode_command(command)

    assert encoded[0] == 0xC1
    expected = tuple(bytes(x) if isinstance(x, bytearray) else x for x in command)
    assert same(codec.decode_command(encoded), expected)


def test_tuple_command_wire_form() -> None:
    """The byte msgpack never uses, then the items as one msgpack array."""
    assert codec.encode_command(("set", "k", b"v")) == b"\xc1" + packed(["set", "k", b"v"])
    assert codec.encode_command(()) == b"\xc1\x90"
    # Only a top-level tuple: other commands are plain msgpack, nested tuples extensions.
    assert codec.encode_command(["set", "k"])[0] != 0xC1
    assert codec.encode_command({"t": ("x",)})[0] != 0xC1
    assert codec.encode_command([("x",)]) == packed([msgpack.ExtType(1, packed(["x"]))])


@pytest.mark.parametrize(
    ("old", "command"),
    [
        (packed(msgpack.ExtType(1, packed(["set", "k"]))), ("set", "k")),
        (packed(msgpack.ExtType(1, packed([]))), ()),
        (
            packed(msgpack.ExtType(1, packed(["a", msgpack.ExtType(2, packed([1, 2]))]))),
            ("a", {1, 2}),
        ),
        (
            packed(msgpack.ExtType(1, packed([msgpack.ExtType(1, packed([b"x"])), {"k": 1}]))),
            ((b"x",), {"k": 1}),
        ),
    ],
)
def test_tuple_command_in_the_old_encoding_still_decodes(old: bytes, command: Any) -> None:
    """Logs written before the 0xC1 form hold tuples as extension type 1: still readable."""
    assert old[0] != 0xC1
    assert same(codec.decode_command(old), command)


@pytest.mark.parametrize(
    "bad",
    [
        ("a", "b", object()),
        ("a", [1, 2, Opaque()]),
        ("n", 2**64),
        ["a", "b", object()],
        {"a": [1, (2, 1 + 2j)]},
        frozenset({("x", 2**70)}),
    ],
)
def test_a_failed_encode_leaves_nothing_behind(bad: Any) -> None:
    """The reused packer is reset after a failure: the next command encodes alone."""
    with pytest.raises(TypeError, match="cannot be replicated"):
        codec.encode_command(bad)

    assert codec.encode_command(("ok", 1)) == b"\xc1" + packed(["ok", 1])
    assert codec.encode_command(["ok", 1]) == packed(["ok", 1])
    assert same(codec.decode_command(codec.encode_command(("ok", (1,)))), ("ok", (1,)))


def test_a_failed_record_pack_leaves_nothing_behind() -> None:
    with pytest.raises(TypeError):
        codec.pack([1, 2, object()])

    assert codec.pack([1, 2]) == packed([1, 2])
    assert codec.unpack(codec.pack({"k": [b"v"]})) == {"k": [b"v"]}


def test_encoding_from_many_threads_at_once() -> None:
    """Each thread has its own packers: concurrent encodes never mix their bytes."""
    threads, rounds = 8, 1500
    barrier = threading.Barrier(threads)
    errors: list[str] = []

    def work(t: int) -> None:
        barrier.wait()
        for i in range(rounds):
            # Nested tuples and sets call back into Python mid-pack, where threads switch.
            command = ("op", t, i, (t, (i, frozenset({t, i}))), {f"{t}-{i}"}, b"%d" % i)
            message = AppendEntriesReply(t, True, i)
            try:
                encoded = codec.encode_command(command)
                if not same(codec.decode_command(encoded), command):
                    errors.append(f"thread {t}: {command!r} came back different")
                if codec.decode_message(codec.encode_message(message)) != message:
                    errors.append(f"thread {t}: {message!r} came back different")
                if codec.unpack(codec.pack([t, i])) != [t, i]:
                    errors.append(f"thread {t}: record [{t}, {i}] came back different")
            except Exception as exc:
                errors.append(f"thread {t}: {exc!r}")

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
    finally:
        sys.setswitchinterval(interval)

    assert errors == []
