"""The mutation engine: captured frames in, seeded structure-aware mutants out. No I/O, no clock.

A `Seed` is one real frame as it crossed the wire: the method it was sent
as, the peer it went to and its msgpack payload (`codec.encode_message` for
the peer protocol, the request map for the KV protocol). `Mutator(corpus,
seed).mutant(n)` decodes a seed chosen by `random.Random(f"{seed}:{n}")` and
changes its decoded structure, so mutant n is a pure function of the corpus,
the seed and n: a failure is replayed by asking for the same n again.

Structural mutations (one to four per mutant):

* integers to boundaries (0, -1, 1, 2, 2^31, 2^32, 2^53, 2^63-1, 2^63,
  2^64-1, -2^63), off by one or two, or far ahead (+2^8 .. +2^62);
* a field's value taken from another captured frame (an older term, another
  peer's index), or a value of the wrong type;
* arrays and maps cut short, extended, shuffled, items dropped or doubled
  (the message itself, its entries, a KV request's keys);
* bytes fields (entry commands, snapshot data) decoded and mutated the same
  way then re-encoded, or bit-flipped, cut or extended;
* strings emptied, lengthened, swapped with another frame's;
* the frame sent to another peer or as another method, or replayed as is.

Then, for one mutant in five, byte-level damage to the encoded payload:
bit flips, overwritten, inserted or deleted bytes, a cut tail.

Peer messages are named by field (``AE.entries[0].term``) from the codec's
own encoding of sample messages, so descriptions follow the codec if its
field order changes.
"""

from __future__ import annotations

import dataclasses
import json
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from raftio import codec
from raftio.membership import CONFIG_PREFIX, Configuration
from raftio.messages import (
    AppendEntriesArgs,
    AppendEntriesReply,
    Entry,
    InstallSnapshotArgs,
    InstallSnapshotReply,
    RequestVoteArgs,
    RequestVoteReply,
    TimeoutNowArgs,
    TimeoutNowReply,
)

__all__ = ["BOUNDARY_INTS", "PEER_METHODS", "Mutant", "Mutator", "Seed", "field_names"]

PEER_METHODS = ("request_vote", "append_entries", "install_snapshot", "timeout_now")

# The extremes msgpack can carry: below -2^63 or from 2^64 up it cannot encode.
INT_MIN, INT_MAX = -(2**63), 2**64 - 1
BOUNDARY_INTS = (
    0, -1, 1, 2, 2**31 - 1, 2**31, 2**32, 2**53, 2**63 - 1, 2**63, 2**64 - 1, INT_MIN,
)  # fmt: skip
_FAR = (2**8, 2**16, 2**20, 2**31, 2**32, 2**40, 2**62)
_WRONG_TYPES: tuple[Any, ...] = (None, True, False, 0.5, -1.0, "", "x", b"", b"\x00", [], {}, [1])

Path = tuple[Any, ...]


def _json_default(value: Any) -> Any:
    # JSON has no bytes: a bytes value a mutation put into a configuration goes out as
    # a string, still of a type the decoder must refuse where it expects a number.
    if isinstance(value, bytes):
        return value.decode("latin-1")
    raise TypeError(f"cannot put {type(value).__name__} into JSON")


@dataclass(frozen=True, slots=True)
class Seed:
    """One captured frame: sent as `method` to peer `target`, as `payload` bytes."""

    method: str
    target: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class Mutant:
    """Mutant number `number`: what to send where, and the steps that made it."""

    number: int
    method: str
    target: int
    payload: bytes
    steps: tuple[str, ...]
    origin: int = 0  # the index in the corpus of the frame it was made from

    def describe(self) -> str:
        return f"#{self.number} {self.method} ->S{self.target}: {'; '.join(self.steps)}"


# --- field names, from the codec's own encoding -------------------------------------

_SAMPLES: tuple[Any, ...] = (
    RequestVoteArgs(1001, 1002, 1003, 1004, True, True),
    RequestVoteReply(1001, True),
    AppendEntriesArgs(1001, 1002, 1003, 1004, [Entry(1005, b"")], 1006),
    AppendEntriesReply(1001, True, 1002, 1003, 1004, 1005),
    InstallSnapshotArgs(1001, 1002, 1003, 1004, b"data"),
    InstallSnapshotReply(1001),
    TimeoutNowArgs(1001, 1002),
    TimeoutNowReply(1001),
)
_ABBREV = {
    RequestVoteArgs: "RV",
    RequestVoteReply: "RV-reply",
    AppendEntriesArgs: "AE",
    AppendEntriesReply: "AE-reply",
    InstallSnapshotArgs: "IS",
    InstallSnapshotReply: "IS-reply",
    TimeoutNowArgs: "TN",
    TimeoutNowReply: "TN-reply",
}


def _field_table() -> dict[Any, tuple[str, dict[int, str]]]:
    """tag -> (message name, position -> field name), read off encoded samples."""
    table: dict[Any, tuple[str, dict[int, str]]] = {}
    for sample in _SAMPLES:
        encoded = codec.unpack(codec.encode_message(sample))
        if not isinstance(encoded, list) or not encoded:
            continue
        names: dict[int, str] = {}
        for field in dataclasses.fields(sample):
            value = getattr(sample, field.name)
            for pos, item in enumerate(encoded):
                if pos and item == value and type(item) is type(value) and pos not in names:
                    names[pos] = field.name
                    break
            else:
                if field.name == "entries":
                    names.update({p: "entries" for p, i in enumerate(encoded) if type(i) is list})
        table[encoded[0]] = (_ABBREV[type(sample)], names)
    return table


_FIELDS = _field_table()


def field_names(tree: Any, path: Path) -> str:
    """A readable name for `path` inside a decoded peer message (or the raw path)."""
    if isinstance(tree, list) and tree and _hashable(tree[0]) and tree[0] in _FIELDS and path:
        name, names = _FIELDS[tree[0]]
        head = names.get(path[0], f"[{path[0]}]") if type(path[0]) is int else str(path[0])
        rest = "".join(_part(p, i, tree[0]) for i, p in enumerate(path[1:]))
        return f"{name}.{head}{rest}"
    return "".join(f"[{p!r}]" for p in path) or "<frame>"


def _part(p: Any, depth: int, tag: Any) -> str:
    if depth == 1 and p in (0, 1):  # an entry's fields
        return ".term" if p == 0 else ".data"
    return f"[{p!r}]"


def _hashable(value: Any) -> bool:
    return isinstance(value, int | str | bytes | bool | float) or value is None


# --- trees ---------------------------------------------------------------------------


def _walk(obj: Any, path: Path = ()) -> Iterator[tuple[Path, Any]]:
    yield path, obj
    if isinstance(obj, list):
        for i, item in enumerate(obj):
            yield from _walk(item, (*path, i))
    elif isinstance(obj, dict):
        for key, item in obj.items():
            yield from _walk(item, (*path, key))


def _get(obj: Any, path: Path) -> Any:
    for p in path:
        obj = obj[p]
    return obj


def _set(obj: Any, path: Path, value: Any) -> Any:
    """`obj` with the value at `path` replaced (the root itself if path is empty)."""
    if not path:
        return value
    _get(obj, path[:-1])[path[-1]] = value
    return obj


def _clamp(n: int) -> int:
    return max(INT_MIN, min(INT_MAX, n))


def _thaw(obj: Any) -> Any:
    """Tuples and sets (decoded commands) as lists, so the walker can change them."""
    if isinstance(obj, tuple | set | frozenset | list):
        return [_thaw(item) for item in obj]
    if isinstance(obj, dict):
        return {key: _thaw(item) for key, item in obj.items()}
    return obj


class Mutator:
    """Seeded mutants of a corpus of captured frames.

    Args:
        corpus: the captured frames (at least one).
        seed: the campaign's seed; mutant n depends only on it, n and the corpus.
        peers: how many peers a mutant may be sent to (0..peers-1).
        methods: the methods a mutant may be re-sent as (PEER_METHODS for the
            peer protocol; ("kv",) for the KV protocol).
    """

    def __init__(
        self, corpus: Sequence[Seed], seed: int, peers: int, methods: Sequence[str] = PEER_METHODS
    ) -> None:
        if not corpus:
            raise ValueError("a Mutator needs at least one captured frame")
        self.corpus = list(corpus)
        self.seed = seed
        self.peers = peers
        self.methods = list(methods)
        self._trees = [_decode(s.payload) for s in self.corpus]
        self._strings = sorted({v for t in self._trees for _, v in _walk(t) if type(v) is str})
        self._by_method: dict[str, list[int]] = {}
        for i, s in enumerate(self.corpus):
            self._by_method.setdefault(s.method, []).append(i)
        self._ops: list[tuple[int, Callable[[random.Random, Any, Any], tuple[Any, str] | None]]]
        self._ops = [
            (6, self._int_boundary),
            (4, self._off_by_one),
            (3, self._far_ahead),
            (4, self._donor),
            (3, self._wrong_type),
            (4, self._list_shape),
            (2, self._dict_shape),
            (5, self._blob),
            (2, self._string),
        ]

    def mutant(self, number: int) -> Mutant:
        """Mutant `number` (deterministic)."""
        rng = random.Random(f"{self.seed}:{number}")
        index = rng.randrange(len(self.corpus))
        origin = self.corpus[index]
        method, target = origin.method, origin.target
        steps: list[str] = [f"from seed frame {index} ({origin.method} ->S{origin.target})"]
        if rng.random() < 0.15:
            target = rng.randrange(self.peers)
            steps.append(f"to S{target}")
        if method not in self.methods or (rng.random() < 0.05 and len(self.methods) > 1):
            method = rng.choice(self.methods)  # a reply, or another RPC, sent as a request
            steps.append(f"as {method}")
        payload = origin.payload
        tree = self._trees[index]
        if rng.random() < 0.06:
            steps.append("replayed as captured")
        elif tree is not _UNDECODABLE:
            payload = self._mutate_tree(rng, tree, steps)
        if rng.random() < 0.2 or (payload is origin.payload and len(steps) == 1):
            payload = _damage(rng, payload, steps)
        return Mutant(number, method, target, payload, tuple(steps), index)

    def _mutate_tree(self, rng: random.Random, original: Any, steps: list[str]) -> bytes:
        tree = codec.unpack(codec.pack(original))  # a private copy
        for _ in range(1 + min(3, int(rng.expovariate(1.2)))):
            tree = self._one_op(rng, tree, original, steps)
        try:
            return codec.pack(tree)
        except (TypeError, ValueError, OverflowError) as exc:
            steps.append(f"unencodable ({exc}); sent the original")
            return codec.pack(original)

    def _one_op(self, rng: random.Random, tree: Any, original: Any, steps: list[str]) -> Any:
        for _ in range(8):  # an op may not apply to this tree: try another
            op = rng.choices([op for _, op in self._ops], [w for w, _ in self._ops])[0]
            done = op(rng, tree, original)
            if done is not None:
                tree, step = done
                steps.append(step)
                return tree
        return tree

    # --- operators: each returns (new tree, description) or None if it does not apply ---

    def _pick(
        self, rng: random.Random, tree: Any, want: Callable[[Any], bool]
    ) -> tuple[Path, Any] | None:
        found = [(p, v) for p, v in _walk(tree) if want(v)]
        return rng.choice(found) if found else None

    def _ints(self, rng: random.Random, tree: Any) -> tuple[Path, int] | None:
        # Not the message tag (path (0,) of a peer message): that is the codec's business.
        return self._pick(rng, tree, lambda v: type(v) is int)

    def _int_boundary(self, rng: random.Random, tree: Any, original: Any) -> Any:
        hit = self._ints(rng, tree)
        if hit is None:
            return None
        value = rng.choice(BOUNDARY_INTS)
        return _set(tree, hit[0], value), f"{field_names(tree, hit[0])}={_num(value)}"

    def _off_by_one(self, rng: random.Random, tree: Any, original: Any) -> Any:
        hit = self._ints(rng, tree)
        if hit is None:
            return None
        delta = rng.choice((-2, -1, 1, 2))
        value = _clamp(hit[1] + delta)
        return _set(tree, hit[0], value), f"{field_names(tree, hit[0])}{delta:+d}"

    def _far_ahead(self, rng: random.Random, tree: Any, original: Any) -> Any:
        hit = self._ints(rng, tree)
        if hit is None:
            return None
        jump = rng.choice(_FAR)
        value = _clamp(hit[1] + jump)
        return _set(tree, hit[0], value), f"{field_names(tree, hit[0])}+{_num(jump)}"

    def _donor(self, rng: random.Random, tree: Any, original: Any) -> Any:
        """A value from another captured frame: same path if it has one, else any value."""
        paths = [p for p, _ in _walk(tree) if p]
        if not paths:
            return None
        path = rng.choice(paths)
        donor = self._trees[rng.randrange(len(self._trees))]
        if donor is _UNDECODABLE:
            return None
        try:
            value = _get(donor, path)
        except (LookupError, TypeError):
            value = rng.choice([v for _, v in _walk(donor)])
        value = codec.unpack(codec.pack(value))
        return _set(tree, path, value), f"{field_names(tree, path)}<-{_short(value)} (other frame)"

    def _wrong_type(self, rng: random.Random, tree: Any, original: Any) -> Any:
        paths = [p for p, _ in _walk(tree) if p]
        if not paths:
            return None
        path = rng.choice(paths)
        current = _get(tree, path)
        value = rng.choice([v for v in _WRONG_TYPES if type(v) is not type(current)])
        return _set(tree, path, codec.unpack(codec.pack(value))), (
            f"{field_names(tree, path)}={_short(value)} (wrong type)"
        )

    def _list_shape(self, rng: random.Random, tree: Any, original: Any) -> Any:
        hit = self._pick(rng, tree, lambda v: type(v) is list)
        if hit is None:
            return None
        path, items = hit
        name = field_names(tree, path)
        what = rng.choice(("cut", "extend", "drop", "double", "shuffle", "empty"))
        if what == "cut" and items:
            del items[rng.randrange(len(items)) :]
        elif what == "extend":
            for _ in range(rng.randint(1, 3)):
                pool = items or list(_WRONG_TYPES)
                items.append(codec.unpack(codec.pack(rng.choice(pool))))
        elif what == "drop" and items:
            del items[rng.randrange(len(items))]
        elif what == "double" and items:
            at = rng.randrange(len(items))
            items.insert(at, codec.unpack(codec.pack(items[at])))
        elif what == "shuffle":
            rng.shuffle(items)
        elif what == "empty":
            items.clear()
        else:
            return None
        return tree, f"{name} {what}"

    def _dict_shape(self, rng: random.Random, tree: Any, original: Any) -> Any:
        hit = self._pick(rng, tree, lambda v: type(v) is dict)
        if hit is None:
            return None
        path, mapping = hit
        name = field_names(tree, path)
        keys = list(mapping)
        what = rng.choice(("drop", "add", "rename"))
        if what == "drop" and keys:
            key = rng.choice(keys)
            del mapping[key]
            return tree, f"{name} without {key!r}"
        if what == "rename" and keys:
            key = rng.choice(keys)
            mapping[key + "_" if isinstance(key, str) else 0] = mapping.pop(key)
            return tree, f"{name} {key!r} renamed"
        key = rng.choice(["op", "key", "value", "client", "seq", "extra", 1, ""])
        mapping[key] = codec.unpack(codec.pack(rng.choice(_WRONG_TYPES)))
        return tree, f"{name}[{key!r}] added/replaced"

    def _blob(self, rng: random.Random, tree: Any, original: Any) -> Any:
        """A bytes field (a command, a snapshot): its structure mutated, or its bytes damaged."""
        hit = self._pick(rng, tree, lambda v: type(v) is bytes)
        if hit is None:
            return None
        path, data = hit
        inner: list[str] = []
        changed = self._mutate_blob(rng, data, inner)
        return _set(tree, path, changed), f"{field_names(tree, path)}: {', '.join(inner)}"

    def _mutate_blob(self, rng: random.Random, data: bytes, steps: list[str]) -> bytes:
        if data and rng.random() < 0.6:
            try:
                inner = codec.decode_command(data)
            except Exception:  # undecodable bytes: damage them instead
                inner = _UNDECODABLE
            if isinstance(inner, Configuration):  # a configuration entry: mutate its JSON
                tree = json.loads(data[len(CONFIG_PREFIX) :])
                sub_steps: list[str] = []
                tree = self._one_op(rng, tree, tree, sub_steps)
                steps.append("configuration, " + "; ".join(sub_steps))
                return CONFIG_PREFIX + json.dumps(tree, default=_json_default).encode()
            if inner is not _UNDECODABLE:
                tuple_top = type(inner) is tuple
                tree = _thaw(inner)
                sub: list[str] = []
                for _ in range(rng.randint(1, 2)):
                    tree = self._one_op(rng, tree, tree, sub)
                steps.append("decoded, " + "; ".join(sub))
                try:
                    return codec.encode_command(tuple(tree) if tuple_top else tree)
                except TypeError:
                    return codec.pack(tree)
        return _damage(rng, data, steps)

    def _string(self, rng: random.Random, tree: Any, original: Any) -> Any:
        hit = self._pick(rng, tree, lambda v: type(v) is str)
        if hit is None:
            return None
        path, text = hit
        what = rng.choice(("empty", "long", "unicode", "other"))
        if what == "empty":
            value = ""
        elif what == "long":
            value = text * rng.choice((2, 100)) or "x" * 1000
        elif what == "unicode":
            value = text + "\u0000\u00e9\U0001f600"
        else:
            strings = self._strings or [v for _, v in _walk(tree) if type(v) is str]
            value = rng.choice(strings)
        return _set(tree, path, value), f"{field_names(tree, path)} {what}"


_UNDECODABLE: Any = object()


def _decode(payload: bytes) -> Any:
    try:
        return codec.unpack(payload)
    except codec.CodecError:
        return _UNDECODABLE


def _damage(rng: random.Random, data: bytes, steps: list[str]) -> bytes:
    """Byte-level damage: flips, overwrites, inserts, deletes, a cut tail."""
    buf = bytearray(data)
    what = rng.choice(("flip", "overwrite", "insert", "delete", "cut"))
    if what == "flip" and buf:
        for _ in range(rng.randint(1, 4)):
            buf[rng.randrange(len(buf))] ^= 1 << rng.randrange(8)
    elif what == "overwrite" and buf:
        for _ in range(rng.randint(1, 4)):
            buf[rng.randrange(len(buf))] = rng.choice((0x00, 0xFF, 0xC1, 0xCF, 0xD3, 0xDD))
    elif what == "insert":
        at = rng.randint(0, len(buf))
        buf[at:at] = rng.randbytes(rng.randint(1, 8))
    elif what == "delete" and buf:
        at = rng.randrange(len(buf))
        del buf[at : at + rng.randint(1, 4)]
    elif buf:
        del buf[rng.randrange(len(buf)) :]
        what = "cut"
    else:
        buf = bytearray(rng.randbytes(4))
        what = "random"
    steps.append(f"bytes {what}")
    return bytes(buf)


def _num(n: int) -> str:
    for name, value in (("2**64-1", 2**64 - 1), ("2**63-1", 2**63 - 1), ("-2**63", INT_MIN)):
        if n == value:
            return name
    if n > 0 and n & (n - 1) == 0 and n >= 256:
        return f"2**{n.bit_length() - 1}"
    return str(n)


def _short(value: Any) -> str:
    return f"{value!r:.40}"
