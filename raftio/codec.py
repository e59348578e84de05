"""msgpack encoding of commands, RPC messages and durable records.

The only module that imports msgpack. Three families:

* commands: `encode_command` / `decode_command`. Commands may be None,
  bool, int, float, str, bytes, and lists, tuples, sets, frozensets and
  dicts of those; tuples and sets survive the round trip as themselves
  (msgpack extension types 1-3), so every replica applies an equal value.
  A command that is itself a tuple, the usual shape, is the byte 0xC1
  (never used by msgpack) followed by its items as an array: one pack.
* messages: `encode_message` / `decode_message` for the six RPC dataclasses,
  as ``[tag, field, ...]`` arrays with entries as ``[term, data]`` pairs.
  Decoding validates every field's type and raises `CodecError` on
  anything malformed: input from the network is never trusted.
* records: `pack` / `unpack` of plain values for storage files.
"""

from __future__ import annotations

import threading
from typing import Any

import msgpack

from raftio.membership import decode_configuration, encode_configuration
from raftio.messages import (
    AppendEntriesArgs,
    AppendEntriesReply,
    Entry,
    InstallSnapshotArgs,
    InstallSnapshotReply,
    Message,
    RequestVoteArgs,
    RequestVoteReply,
    TimeoutNowArgs,
    TimeoutNowReply,
)

__all__ = [
    "CodecError",
    "decode_command",
    "decode_message",
    "encode_command",
    "encode_message",
    "is_immutable",
    "pack",
    "unpack",
]


class CodecError(ValueError):
    """Bytes that do not decode to what was expected."""


# --- commands --------------------------------------------------------------

_EXT_TUPLE, _EXT_SET, _EXT_FROZENSET = 1, 2, 3


# A command that is a tuple (the usual shape, e.g. ("set", key, value)) is
# encoded as this byte, which msgpack never uses, then its items as an
# array: one pack instead of an array packed inside an extension type.
_TOP_TUPLE = 0xC1
_TOP_TUPLE_PREFIX = bytes([_TOP_TUPLE])


class _Packers(threading.local):
    """Reusable packers, one set per thread (a Packer is not thread-safe).

    Reusing one skips building a Packer per call, which costs more than
    packing a small command. `_command_default` must not use these: it runs
    in the middle of a pack.
    """

    def __init__(self) -> None:
        self.command = msgpack.Packer(
            use_bin_type=True, strict_types=True, default=_command_default
        )
        self.plain = msgpack.Packer(use_bin_type=True)


def _command_default(obj: Any) -> Any:
    # strict_types sends tuples and container subclasses here.
    if isinstance(obj, tuple):
        return msgpack.ExtType(_EXT_TUPLE, _packb_command(list(obj)))
    if isinstance(obj, frozenset):
        return msgpack.ExtType(_EXT_FROZENSET, _packb_command(list(obj)))
    if isinstance(obj, set):
        return msgpack.ExtType(_EXT_SET, _packb_command(list(obj)))
    if isinstance(obj, list):
        return list(obj)
    if isinstance(obj, dict):
        return dict(obj)
    if isinstance(obj, bool):
        return bool(obj)
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        return float(obj)
    if isinstance(obj, str):
        return str(obj)
    if isinstance(obj, bytes | bytearray | memoryview):
        return bytes(obj)
    raise TypeError(f"raftio cannot encode a command of type {type(obj).__name__}")


def _command_ext_hook(code: int, data: bytes) -> Any:
    items = _unpackb_command(data)
    if code == _EXT_TUPLE:
        return tuple(items)
    if code == _EXT_SET:
        return set(items)
    if code == _EXT_FROZENSET:
        return frozenset(items)
    return msgpack.ExtType(code, data)


def _packb_command(obj: Any) -> bytes:
    # A fresh Packer: this also runs nested, from _command_default.
    return msgpack.packb(obj, use_bin_type=True, strict_types=True, default=_command_default)  # type: ignore[no-any-return]


_PACKERS = _Packers()


def _unpackb_command(data: bytes | memoryview) -> Any:
    return msgpack.unpackb(data, raw=False, strict_map_key=False, ext_hook=_command_ext_hook)


def encode_command(command: Any) -> bytes:
    """Encode a user command; raises TypeError naming an unsupported type."""
    try:
        if type(command) is tuple:
            return _TOP_TUPLE_PREFIX + _PACKERS.command.pack(list(command))  # type: ignore[no-any-return]
        return _PACKERS.command.pack(command)  # type: ignore[no-any-return]
    except (TypeError, ValueError, OverflowError) as exc:
        raise TypeError(f"command {command!r:.80} cannot be replicated: {exc}") from None


_SCALARS = frozenset({str, bytes, int, float, bool, type(None)})


def is_immutable(command: Any) -> bool:
    """Whether `command` is a scalar or a tuple of scalars: no one can change it later.

    Such a command may be handed to the proposer's own state machine as is;
    anything else is applied from its encoding, like on every other replica.
    """
    kind = type(command)
    if kind is tuple:
        return _SCALARS.issuperset(map(type, command))  # all in C: 3x faster than all(...)
    return kind in _SCALARS


def decode_command(data: bytes) -> Any:
    if data and data[0] == _TOP_TUPLE:
        if len(data) > 1 and data[1] == _TOP_TUPLE:  # a configuration entry (raftio.membership)
            config = decode_configuration(data)
            if config is None:
                raise CodecError("a malformed configuration entry")
            return config
        return tuple(_unpackb_command(memoryview(data)[1:]))
    return _unpackb_command(data)


# --- messages ----------------------------------------------------------------

_RV, _RV_REPLY, _AE, _AE_REPLY, _IS, _IS_REPLY, _TN, _TN_REPLY = range(8)


# The last AppendEntries encoded and its bytes. A leader hands followers in
# step the same args object, so the batch is encoded once, not once per
# follower. Holding the object keeps its identity from being reused.
_last_append: tuple[object, bytes] = (None, b"")


def encode_message(msg: Message) -> bytes:
    """Encode one RPC dataclass."""
    global _last_append
    last = _last_append
    if last[0] is msg:
        return last[1]
    payload: bytes = _PACKERS.plain.pack(_message_to_list(msg))
    if type(msg) is AppendEntriesArgs:
        _last_append = (msg, payload)
    return payload


def _message_to_list(msg: Message) -> list[Any]:
    if isinstance(msg, AppendEntriesArgs):
        return [
            _AE, msg.term, msg.leader_id, msg.prev_log_index, msg.prev_log_term,
            [[e.term, e.data] for e in msg.entries], msg.leader_commit,
        ]  # fmt: skip
    if isinstance(msg, AppendEntriesReply):
        return [
            _AE_REPLY, msg.term, msg.success, msg.match_index,
            msg.x_term, msg.x_index, msg.x_len,
        ]  # fmt: skip
    if isinstance(msg, RequestVoteArgs):
        fields = [
            _RV, msg.term, msg.candidate_id, msg.last_log_index, msg.last_log_term, msg.pre_vote,
        ]  # fmt: skip
        if msg.transfer:
            fields.append(True)  # a trailing field: peers without transfer read the rest
        return fields
    if isinstance(msg, RequestVoteReply):
        return [_RV_REPLY, msg.term, msg.vote_granted]
    if isinstance(msg, InstallSnapshotArgs):
        snapshot: list[Any] = [
            _IS, msg.term, msg.leader_id, msg.last_included_index,
            msg.last_included_term, msg.data,
        ]  # fmt: skip
        chunked = msg.transfer != 0 or msg.offset != 0 or not msg.done
        if msg.config is not None or chunked:
            # Trailing fields, like RV's transfer. A whole snapshot in one message
            # keeps the older form, which peers before chunking understand.
            snapshot.append(encode_configuration(msg.config) if msg.config is not None else b"")
        if chunked:
            snapshot += [msg.offset, msg.done, msg.transfer, msg.total_size, msg.checksum]
        return snapshot
    if isinstance(msg, InstallSnapshotReply):
        if msg.next_offset < 0:
            return [_IS_REPLY, msg.term]  # the older form (see InstallSnapshotReply)
        return [_IS_REPLY, msg.term, msg.next_offset, msg.transfer]
    if isinstance(msg, TimeoutNowArgs):
        return [_TN, msg.term, msg.leader_id]
    if isinstance(msg, TimeoutNowReply):
        return [_TN_REPLY, msg.term]
    raise TypeError(f"not a raftio message: {type(msg).__name__}")


def decode_message(data: bytes) -> Message:
    """Decode and validate; raises CodecError on anything malformed."""
    try:
        obj = msgpack.unpackb(data, raw=False, use_list=True)
    except Exception as exc:  # msgpack raises several unrelated types
        raise CodecError(f"undecodable message: {exc}") from None
    return message_from_list(obj)


def message_from_list(obj: Any) -> Message:
    """Build a message from its decoded array form, validating every field."""
    if not isinstance(obj, list) or not obj:
        raise CodecError("a message must be a non-empty array")
    tag = obj[0]
    shape = _SHAPES.get(tag) if type(tag) is int else None
    if shape is None:
        raise CodecError(f"unknown message tag {tag!r:.20}")
    cls, types = shape
    optional = _OPTIONAL_FIELDS.get(tag, ())
    if not (len(obj) == len(types) + 1 or len(obj) - 1 in optional):
        raise CodecError(f"{cls.__name__} needs {len(types)} fields, got {len(obj) - 1}")
    for value, want in zip(obj[1:], types, strict=False):
        if type(value) is not want:
            raise CodecError(
                f"{cls.__name__}: expected {want.__name__}, got {type(value).__name__}"
            )
    if cls is AppendEntriesArgs:
        obj[5] = _entries_from_list(obj[5])
    elif cls is InstallSnapshotArgs and len(obj) >= 7:
        if obj[6] or len(obj) == 7:
            config = decode_configuration(obj[6])
            if config is None:
                raise CodecError("InstallSnapshotArgs: a malformed configuration")
            obj[6] = config
        else:
            obj[6] = None  # a chunk without a configuration
    return cls(*obj[1:])  # type: ignore[no-any-return]


def _entries_from_list(items: list[Any]) -> list[Entry]:
    entries = []
    for item in items:
        if (
            type(item) is not list
            or len(item) != 2
            or type(item[0]) is not int
            or type(item[1]) is not bytes
        ):
            raise CodecError("an entry must be [term: int, data: bytes]")
        entries.append(Entry(item[0], item[1]))
    return entries


_SHAPES: dict[int, tuple[Any, tuple[type, ...]]] = {
    _RV: (RequestVoteArgs, (int, int, int, int, bool, bool)),
    _RV_REPLY: (RequestVoteReply, (int, bool)),
    _AE: (AppendEntriesArgs, (int, int, int, int, list, int)),
    _AE_REPLY: (AppendEntriesReply, (int, bool, int, int, int, int)),
    _IS: (InstallSnapshotArgs, (int, int, int, int, bytes, bytes, int, bool, int, int, int)),
    _IS_REPLY: (InstallSnapshotReply, (int, int, int)),
    _TN: (TimeoutNowArgs, (int, int)),
    _TN_REPLY: (TimeoutNowReply, (int,)),
}
# The shorter forms a message may take (field counts; the rest take their defaults).
_OPTIONAL_FIELDS: dict[int, tuple[int, ...]] = {_RV: (5,), _IS: (5, 6), _IS_REPLY: (1,)}


# --- records -----------------------------------------------------------------


def pack(obj: Any) -> bytes:
    """Encode plain values (ints, bytes, str, lists, dicts) for storage."""
    return _PACKERS.plain.pack(obj)  # type: ignore[no-any-return]


def unpack(data: bytes) -> Any:
    """Decode what `pack` made; raises CodecError on malformed bytes."""
    try:
        return msgpack.unpackb(data, raw=False, use_list=True, strict_map_key=False)
    except Exception as exc:
        raise CodecError(f"undecodable record: {exc}") from None
