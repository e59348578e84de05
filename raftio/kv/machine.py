"""KVStateMachine: the replicated key/value state and its client sessions (Raft thesis 6.3).

Owns the meaning of KV commands and nothing else: no I/O, no clock, no
asyncio (the snapshot stream's lives in raftio.kv.snapshot_format). Every
replica applies the same commands in the same order and decides
identically from them alone. Commands are tuples, as `propose()`
replicates them:

    ("register", nonce, max_sessions, max_result_chars)  -> a new session id
    ("write", op, key, value, session, seq)              -> the key's new value
    ("clients", ((node_id, "host:port"), ...))           -> None (raftio.kv.client_table)

A client registers once and gets a session id, `"<serial>.<nonce>"`: the
serial counts registrations (every replica counts the same), the nonce is
drawn by the server that proposed the register, so ids cannot be guessed.
It then numbers its writes 1, 2, 3... with one outstanding at a time. The
session keeps the last write's seq, a fingerprint of it (op, key, value)
and its outcome, and judges each write:

    seq == last + 1            applied; the outcome is stored
    seq == last, same write    a retry: the stored outcome, nothing applied
    seq == last, other write   seq_conflict (someone else used this seq)
    seq < last                 stale_seq
    seq > last + 1             seq_gap
    no such session            session_expired (evicted) / unknown_session

so a write is acknowledged only by its own application, never by another
one's result. Refusals raise `KVCommandError` (a ValueError) naming the
error code, which `Node.propose` hands to the server.

Sessions are kept in least-recently-used order; a register evicts the
oldest beyond `max_sessions`, and any command evicts the oldest while the
stored results hold more than `max_result_chars` characters. Both limits
travel in the register command, so every replica evicts the same sessions
whatever it was configured with.

Legacy commands `(op, key, value, client, seq)` (raftio before sessions,
found in old logs and snapshots) still apply with the old rules, so a
replica upgraded in place replays its history to the same state. Servers no
longer propose them.

`digest()` is the sum, mod 2**256, of one hash per key and per session,
kept up to date rather than recomputed: an apply only notes which keys and
sessions it changed, and their hashes are brought into the sum when a digest
is asked for or once 1,024 are pending. A key or session written many times
in between is hashed once, and no digest costs more than those 1,024.
`restore` recomputes the sum from scratch.

Snapshots come two ways. `snapshot()` / `restore()` (bytes: one msgpack
map, format 2) hold the whole state in memory; `snapshot_stream()` /
`restore_stream()` (raftio.kv.snapshot_format) never do, and Node prefers
them. Each restore reads the other's output too, so a data directory
written either way restores; a streamed one is checked against the digest
it carries.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from raftio.codec import CodecError, pack, unpack
from raftio.kv.client_table import CLIENTS, check_table, table_items
from raftio.kv.snapshot_format import (
    MAGIC,
    Image,
    check_session,
    decode,
    read_stream,
    stream_chunks,
)

__all__ = [
    "DEFAULT_MAX_RESULT_CHARS",
    "DEFAULT_MAX_SESSIONS",
    "MAX_VALUE",
    "SESSION_ERRORS",
    "WRITE_OPS",
    "KVCommandError",
    "KVStateMachine",
    "register_command",
    "write_command",
]

WRITE_OPS = frozenset({"put", "append"})
MAX_VALUE = 128 * 1024  # characters (<= 512 KiB of UTF-8): any reply fits in one frame
DEFAULT_MAX_SESSIONS = 4096
DEFAULT_MAX_RESULT_CHARS = 64 << 20  # characters of stored results, across sessions
MAX_NONCE = 64
SNAPSHOT_FORMAT = 2

UNKNOWN_SESSION = "unknown_session"
SESSION_EXPIRED = "session_expired"
STALE_SEQ = "stale_seq"
SEQ_GAP = "seq_gap"
SEQ_CONFLICT = "seq_conflict"
FAILED = "failed"
SESSION_ERRORS = frozenset({UNKNOWN_SESSION, SESSION_EXPIRED, STALE_SEQ, SEQ_GAP, SEQ_CONFLICT})

_MOD = 1 << 256
# Keys and sessions changed since the digest's sum last counted them, at most:
# bounds the work of one digest() (a few ms) while coalescing hot keys.
_SETTLE_AFTER = 1024


class KVCommandError(ValueError):
    """The state machine refused a command; `error` is the protocol's error code."""

    def __init__(self, error: str, message: str) -> None:
        self.error = error
        super().__init__(message)


def register_command(
    nonce: str,
    max_sessions: int = DEFAULT_MAX_SESSIONS,
    max_result_chars: int = DEFAULT_MAX_RESULT_CHARS,
) -> tuple[Any, ...]:
    """The command a session registration is replicated as."""
    return ("register", nonce, max_sessions, max_result_chars)


def write_command(op: str, key: str, value: str, session: str, seq: int) -> tuple[Any, ...]:
    """The command a client's write is replicated as."""
    return ("write", op, key, value, session, seq)


@dataclass(slots=True)
class _Session:
    seq: int  # the last write applied in this session (0: none yet)
    fingerprint: bytes  # of that write: a retry must repeat it exactly
    outcome: tuple[str, str]  # ("ok", the key's new value) or (error code, message)
    used: int  # the state machine's clock when last used: the LRU order, replicated
    term: int = 0  # this session's share of the digest, once the sum counts it


class KVStateMachine:
    """A dict of str -> str with session-checked writes. Deterministic: every replica agrees."""

    def __init__(self) -> None:
        self.data: dict[str, str] = {}
        # session id -> its record, least recently used first
        self.sessions: OrderedDict[str, _Session] = OrderedDict()
        self.registered = 0  # sessions ever registered: the next serial is registered + 1
        self.clock = 0  # counts session commands: orders `used`
        self.max_sessions = DEFAULT_MAX_SESSIONS
        self.max_result_chars = DEFAULT_MAX_RESULT_CHARS
        self.result_chars = 0  # characters held by stored outcomes
        # client -> (seq, result): the pre-session duplicate table, for old logs
        self.legacy: dict[str, tuple[int, str | None]] = {}
        # node id -> client "host:port" of the members, as last replicated (client_table)
        self.clients: dict[int, str] = {}
        self._sum = 0  # sum of the per-key and per-session hashes, mod 2**256
        # What `_sum` still counts for keys and sessions changed since: a key's
        # old value (None: absent), a session's old term (0: none).
        self._unsummed_keys: dict[str, str | None] = {}
        self._unsummed_sessions: dict[str, int] = {}

    # ------------------------------------------------------------------ apply

    def apply(self, command: Any) -> str | None:
        """Apply one committed command; raises KVCommandError for a refused one."""
        try:
            return self._apply(command)
        finally:
            if len(self._unsummed_keys) + len(self._unsummed_sessions) >= _SETTLE_AFTER:
                self._settle()

    def _apply(self, command: Any) -> str | None:
        if type(command) is tuple and command and command[0] == "write":
            return self._write(*_check_write(command))
        if type(command) is tuple and command and command[0] == "register":
            return self._register(*_check_register(command))
        if type(command) is tuple and command and command[0] == CLIENTS:
            self.clients = _check_clients(command)
            return None
        return self._legacy_write(*_check_legacy(command))

    def _register(self, nonce: str, max_sessions: int, max_result_chars: int) -> str:
        self.max_sessions, self.max_result_chars = max_sessions, max_result_chars
        self.registered += 1
        session_id = f"{self.registered}.{nonce}"
        while len(self.sessions) >= max_sessions:
            self._evict()
        self.clock += 1
        self._store(session_id, _Session(0, b"", ("ok", ""), self.clock))
        self._evict_over_budget(keep=session_id)
        return session_id

    def _write(self, op: str, key: str, value: str, session_id: str, seq: int) -> str:
        session = self.sessions.get(session_id)
        if session is None:
            raise self._missing(session_id)
        fingerprint = _fingerprint(op, key, value)
        if seq == session.seq:
            if fingerprint != session.fingerprint:
                raise KVCommandError(SEQ_CONFLICT, f"seq {seq} was used by another write")
            return self._answer(session_id, session, seq, fingerprint, session.outcome)
        if seq < session.seq:
            raise KVCommandError(STALE_SEQ, f"seq {seq} is older than {session.seq}")
        if seq > session.seq + 1:
            raise KVCommandError(SEQ_GAP, f"seq {seq} skips ahead of {session.seq}")
        result = value if op == "put" else self.data.get(key, "") + value
        if len(result) > MAX_VALUE:
            # Refused the same way on every replica, and stored: a retry gets
            # the same refusal, and the next seq follows on.
            message = f"{key!r:.40} would hold {len(result)} characters, over {MAX_VALUE}"
            return self._answer(session_id, session, seq, fingerprint, (FAILED, message))
        self._set(key, result)
        return self._answer(session_id, session, seq, fingerprint, ("ok", result))

    def _answer(
        self,
        session_id: str,
        old: _Session,
        seq: int,
        fingerprint: bytes,
        outcome: tuple[str, str],
    ) -> str:
        self.clock += 1
        self._store(session_id, _Session(seq, fingerprint, outcome, self.clock), old)
        self._evict_over_budget(keep=session_id)
        code, value = outcome
        if code != "ok":
            raise KVCommandError(code, value)
        return value

    def _missing(self, session_id: str) -> KVCommandError:
        serial, _, _ = session_id.partition(".")
        if serial.isdigit() and 0 < int(serial) <= self.registered:
            return KVCommandError(
                SESSION_EXPIRED, f"session {session_id:.40} expired: register again"
            )
        return KVCommandError(UNKNOWN_SESSION, f"no session {session_id:.40}: register first")

    def _legacy_write(self, op: str, key: str, value: str, client: str, seq: int) -> str | None:
        # The pre-session rules, kept only to replay old logs identically.
        last_seq, last_result = self.legacy.get(client, (0, None))
        if seq <= last_seq:
            return last_result if seq == last_seq else None
        result = value if op == "put" else self.data.get(key, "") + value
        if len(result) > MAX_VALUE:
            raise KVCommandError(FAILED, f"{key!r:.40} would hold {len(result)} characters")
        self._set(key, result)
        self._sum = (self._sum - _legacy_term(client, *self.legacy.get(client, (0, None)))) % _MOD
        self.legacy[client] = (seq, result)
        self._sum = (self._sum + _legacy_term(client, seq, result)) % _MOD
        return result

    # ------------------------------------------------------------------ state and digest

    def _set(self, key: str, value: str) -> None:
        unsummed = self._unsummed_keys
        if key not in unsummed:
            unsummed[key] = self.data.get(key)
        self.data[key] = value

    def _store(self, session_id: str, session: _Session, old: _Session | None = None) -> None:
        if old is not None:
            self.result_chars -= len(old.outcome[1])
        unsummed = self._unsummed_sessions
        if session_id not in unsummed:
            unsummed[session_id] = 0 if old is None else old.term
        self.sessions[session_id] = session
        self.sessions.move_to_end(session_id)
        self.result_chars += len(session.outcome[1])

    def _evict(self) -> None:
        session_id, session = self.sessions.popitem(last=False)
        counted = self._unsummed_sessions.pop(session_id, session.term)
        self._sum = (self._sum - counted) % _MOD
        self.result_chars -= len(session.outcome[1])

    def _settle(self) -> None:
        """Bring the keys and sessions changed since into the digest's sum."""
        total = self._sum
        data = self.data
        for key, counted in self._unsummed_keys.items():
            if counted is not None:
                total -= _data_term(key, counted)
            total += _data_term(key, data[key])  # keys are never deleted
        sessions = self.sessions
        for session_id, old_term in self._unsummed_sessions.items():
            session = sessions[session_id]  # an evicted one left this table
            session.term = _session_term(session_id, session)
            total += session.term - old_term
        self._sum = total % _MOD
        self._unsummed_keys.clear()
        self._unsummed_sessions.clear()

    def _evict_over_budget(self, keep: str) -> None:
        while self.result_chars > self.max_result_chars and next(iter(self.sessions)) != keep:
            self._evict()

    def query(self, key: str) -> str | None:
        """The value of `key` (None if absent); Node.read calls it after its barrier."""
        return self.data.get(key)

    def digest(self) -> str:
        """A short fingerprint of the whole state: replicas agree iff their digests do.

        Costs the hashes of at most `_SETTLE_AFTER` keys and sessions changed
        since the last digest, whatever the size of the state.

        The sum of per-key and per-session hashes does not depend on the
        order the state was built in (replay or snapshot); two different
        states collide with negligible probability.
        """
        if self._unsummed_keys or self._unsummed_sessions:
            self._settle()
        head: list[Any] = [self.registered, self.clock, self.max_sessions, self.max_result_chars]
        if self.clients:  # absent while empty: states from before the table hash as they did
            head.append(table_items(self.clients))
        h = hashlib.sha256(self._sum.to_bytes(32, "big") + pack(head))
        return h.hexdigest()[:16]

    # ------------------------------------------------------------------ snapshots

    def snapshot(self) -> bytes:
        sessions = [
            [sid, s.seq, s.fingerprint, list(s.outcome), s.used] for sid, s in self.sessions.items()
        ]
        state = {
            "format": SNAPSHOT_FORMAT,
            "data": self.data,
            "sessions": sessions,
            "registered": self.registered,
            "clock": self.clock,
            "limits": [self.max_sessions, self.max_result_chars],
            "legacy": {client: list(entry) for client, entry in self.legacy.items()},
        }
        if self.clients:  # an optional key: older readers ignore it, older snapshots lack it
            state["clients"] = table_items(self.clients)
        return pack(state)

    def restore(self, data: bytes) -> None:
        """Replace the state with a snapshot's, format 2 or the pre-session format 1.

        Also takes a whole stream of `snapshot_stream`. Raises ValueError,
        leaving the state unchanged, if the bytes are not a well-formed KV
        snapshot.
        """
        if data[: len(MAGIC)] == MAGIC:
            self._restore_image(decode(data))
            return
        try:
            state = unpack(data)
        except CodecError as exc:
            raise ValueError(f"KV snapshot does not decode: {exc}") from None
        if not isinstance(state, dict):
            raise ValueError("KV snapshot is not a map")
        fresh = KVStateMachine()
        if "format" in state:
            fresh._restore_v2(state)
        else:
            fresh._restore_v1(state)
        fresh._recount()
        self.__dict__.update(vars(fresh))  # all or nothing: fresh is fully checked

    def _recount(self) -> None:
        """Derive `_sum`, the session terms and `result_chars` from the restored state."""
        self._sum = sum(_data_term(k, v) for k, v in self.data.items()) % _MOD
        self._sum += sum(_legacy_term(c, *entry) for c, entry in self.legacy.items())
        for session_id, session in self.sessions.items():
            session.term = _session_term(session_id, session)
            self._sum += session.term
            self.result_chars += len(session.outcome[1])
        self._sum %= _MOD

    def snapshot_stream(self) -> AsyncIterator[bytes]:
        """The state as of this call, as chunks of raftio.kv.snapshot_format.

        Copies what later applies change, so Node can iterate while it keeps
        applying: the dicts shallowly (their str and tuple values are never
        changed in place) and each session's fields.
        """
        sessions = {
            session_id: (s.seq, s.fingerprint, *s.outcome, s.used)
            for session_id, s in self.sessions.items()
        }
        counters = (self.registered, self.clock, self.max_sessions, self.max_result_chars)
        image = Image(*counters, dict(self.clients), dict(self.data), sessions, dict(self.legacy))
        image.digest = self.digest()
        return stream_chunks(image)

    async def restore_stream(self, chunks: AsyncIterator[bytes]) -> None:
        """Replace the state with a snapshot's, read chunk by chunk.

        Takes what `snapshot_stream` wrote and, from a data directory of an
        older raftio, what `snapshot` wrote. Raises ValueError, leaving the
        state unchanged, on anything else.
        """
        image = await read_stream(chunks)
        if isinstance(image, bytes):
            self.restore(image)  # the bytes format: one msgpack map, decoded whole
            return
        self._restore_image(image)

    def _restore_image(self, image: Image) -> None:
        fresh = KVStateMachine()
        fresh.registered, fresh.clock = image.registered, image.clock
        fresh.max_sessions, fresh.max_result_chars = image.max_sessions, image.max_result_chars
        fresh.clients, fresh.data, fresh.legacy = image.clients, image.data, image.legacy
        for session_id, (seq, fingerprint, code, value, used) in image.sessions.items():
            fresh.sessions[session_id] = _Session(seq, fingerprint, (code, value), used)
        fresh._recount()
        if fresh.digest() != image.digest:
            raise ValueError("KV snapshot stream: the state does not match its digest")
        self.__dict__.update(vars(fresh))  # all or nothing: fresh is fully checked

    def _restore_v2(self, state: dict[Any, Any]) -> None:
        if state["format"] != SNAPSHOT_FORMAT:
            raise ValueError(f"KV snapshot format {state['format']!r:.20} is not {SNAPSHOT_FORMAT}")
        self.data = _str_map(state.get("data"), "data")
        self.legacy = _legacy_table(state.get("legacy", {}))
        counters = [state.get("registered"), state.get("clock"), *_list(state.get("limits"), 2)]
        if not all(type(n) is int and n >= 0 for n in counters):
            raise ValueError("KV snapshot counters are not non-negative integers")
        self.registered, self.clock, self.max_sessions, self.max_result_chars = counters
        try:
            self.clients = check_table(state.get("clients", []))
        except ValueError as exc:
            raise ValueError(f"KV snapshot clients: {exc}") from None
        items = state.get("sessions")
        if not isinstance(items, list):
            raise ValueError("KV snapshot sessions are not a list")
        for item in items:
            session_id, session = _session_from_list(item)
            if session_id in self.sessions:
                raise ValueError(f"KV snapshot repeats session {session_id:.40}")
            self.sessions[session_id] = session

    def _restore_v1(self, state: dict[Any, Any]) -> None:
        # raftio before sessions: {"data": {...}, "sessions": {client: [seq, result]}}
        self.data = _str_map(state.get("data"), "data")
        self.legacy = _legacy_table(state.get("sessions"))


# ---------------------------------------------------------------------------- helpers


def _hash(parts: list[Any]) -> int:
    return int.from_bytes(hashlib.blake2b(pack(parts), digest_size=32).digest(), "big")


def _data_term(key: str, value: str) -> int:
    return _hash(["d", key, value])


def _session_term(session_id: str, s: _Session) -> int:
    return _hash(["s", session_id, s.seq, s.fingerprint, *s.outcome, s.used])


def _legacy_term(client: str, seq: int, result: str | None) -> int:
    return 0 if seq == 0 else _hash(["l", client, seq, result])


def _fingerprint(op: str, key: str, value: str) -> bytes:
    return hashlib.blake2b(pack([op, key, value]), digest_size=16).digest()


def _check_write(command: tuple[Any, ...]) -> tuple[str, str, str, str, int]:
    # Only the KV server proposes, and it validates requests first; a command
    # that still fails here is refused identically on every replica.
    if len(command) != 6:
        raise KVCommandError(FAILED, f"malformed KV write: {command!r:.80}")
    _, op, key, value, session, seq = command
    if (
        not isinstance(op, str)  # a list or map from a decoded entry is unhashable
        or op not in WRITE_OPS
        or not isinstance(key, str)
        or not isinstance(value, str)
        or not isinstance(session, str)
        or type(seq) is not int
        or seq < 1
    ):
        raise KVCommandError(FAILED, f"malformed KV write: {command!r:.80}")
    return op, key, value, session, seq


def _check_register(command: tuple[Any, ...]) -> tuple[str, int, int]:
    if len(command) != 4:
        raise KVCommandError(FAILED, f"malformed KV register: {command!r:.80}")
    _, nonce, max_sessions, max_result_chars = command
    if (
        not isinstance(nonce, str)
        or not 0 < len(nonce) <= MAX_NONCE
        or type(max_sessions) is not int
        or type(max_result_chars) is not int
        or max_sessions < 1
        or max_result_chars < 0
    ):
        raise KVCommandError(FAILED, f"malformed KV register: {command!r:.80}")
    return nonce, max_sessions, max_result_chars


def _check_clients(command: tuple[Any, ...]) -> dict[int, str]:
    try:
        if len(command) != 2:
            raise ValueError('expected ("clients", table)')
        return check_table(command[1])
    except ValueError as exc:
        raise KVCommandError(FAILED, f"malformed KV clients: {exc}") from None


def _check_legacy(command: Any) -> tuple[str, str, str, str, int]:
    if not (type(command) is tuple and len(command) == 5):
        raise KVCommandError(FAILED, f"not a KV command: {command!r:.80}")
    op, key, value, client, seq = command
    if (
        not isinstance(op, str)
        or op not in WRITE_OPS
        or not isinstance(key, str)
        or not isinstance(value, str)
        or not isinstance(client, str)
        or type(seq) is not int
    ):
        raise KVCommandError(FAILED, f"malformed KV command: {command!r:.80}")
    return op, key, value, client, seq


def _list(obj: Any, length: int) -> list[Any]:
    if not isinstance(obj, list) or len(obj) != length:
        raise ValueError(f"KV snapshot: expected a list of {length}, got {obj!r:.40}")
    return obj


def _str_map(obj: Any, what: str) -> dict[str, str]:
    if not isinstance(obj, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in obj.items()
    ):
        raise ValueError(f"KV snapshot {what} is not a map of strings")
    return obj


def _legacy_table(obj: Any) -> dict[str, tuple[int, str | None]]:
    if not isinstance(obj, dict):
        raise ValueError("KV snapshot duplicate table is not a map")
    table: dict[str, tuple[int, str | None]] = {}
    for client, entry in obj.items():
        seq, result = _list(entry, 2)
        if not isinstance(client, str) or type(seq) is not int or seq < 0:
            raise ValueError(f"KV snapshot duplicate entry {client!r:.40} is malformed")
        if result is not None and not isinstance(result, str):
            raise ValueError(f"KV snapshot duplicate entry {client!r:.40} is malformed")
        table[client] = (seq, result)
    return table


def _session_from_list(item: Any) -> tuple[str, _Session]:
    session_id, seq, fingerprint, outcome, used = _list(item, 5)
    code, value = _list(outcome, 2)
    check_session(item, session_id, seq, fingerprint, code, value, used)
    return session_id, _Session(seq, fingerprint, (code, value), used)
