"""Cluster configuration: who votes, who only learns, and where each listens.

Pure: no I/O. A configuration travels in the log as an entry of its own
(`encode_configuration`), in every snapshot (with its index), and in
InstallSnapshot. Each entry holds the whole configuration, not a delta, so
a node that joins learns every member from the entry that added it.

Changes are single-server (Raft thesis 4.1, with the raft-dev 2015 fix):
a configuration takes effect as soon as it is appended, at most one is
uncommitted, and a leader changes it only after committing an entry of its
own term. `outgoing` is reserved for the old voters of a joint
configuration (thesis 4.3); it is always empty today, so joint consensus can
come later without a format change.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from raftio.errors import (
    DuplicateMemberError,
    LastVoterError,
    NotSingleChangeError,
    UnknownMemberError,
)

# Ids are small non-negative ints chosen by the operator; the Lab's peers are 0..n-1.
MAX_NODE_ID = (1 << 31) - 1
MAX_MEMBERS = 255
MAX_ADDRESS = 255  # bytes of "host:port"
# A configuration entry's data starts with these bytes. The command codec
# never makes them: 0xC1 starts a top-level tuple, and an array header follows it.
CONFIG_PREFIX = b"\xc1\xc1"


@dataclass(frozen=True, slots=True)
class Configuration:
    """Voters and learners, each id mapped to its "host:port" ("" where unknown).

    Never mutated: changes make a new one (see `with_member`, `without_member`).
    """

    voters: Mapping[int, str] = field(default_factory=dict)
    learners: Mapping[int, str] = field(default_factory=dict)
    # Reserved for joint consensus (the old voters of a joint configuration).
    outgoing: Mapping[int, str] = field(default_factory=dict)

    @classmethod
    def of_voters(cls, addresses: Sequence[str] | Mapping[int, str]) -> Configuration:
        """Every listed node a voter: a list is indexed by id (the bootstrap configuration)."""
        if isinstance(addresses, Mapping):
            return cls(dict(addresses))
        return cls(dict(enumerate(addresses)))

    def is_voter(self, node_id: int) -> bool:
        return node_id in self.voters or node_id in self.outgoing

    def is_member(self, node_id: int) -> bool:
        return node_id in self.voters or node_id in self.learners or node_id in self.outgoing

    def members(self) -> dict[int, str]:
        """Every member's address, voters and learners alike."""
        return {**self.outgoing, **self.learners, **self.voters}

    def address(self, node_id: int) -> str | None:
        return self.members().get(node_id)

    def with_member(self, node_id: int, address: str, *, voter: bool) -> Configuration:
        """Add a learner, or a voter; promoting a learner to voter keeps its address.

        Raises DuplicateMemberError if the id or address is taken (by another
        node, or by this one in the same role), ValueError for a bad id or address.
        """
        check_member(node_id, address)
        if node_id in self.voters or (node_id in self.learners and not voter):
            raise DuplicateMemberError(f"node {node_id} is already a member")
        if node_id in self.learners and self.learners[node_id] != address:
            raise DuplicateMemberError(
                f"node {node_id} is a learner at {self.learners[node_id]}, not {address}"
            )
        for other, where in self.members().items():
            if other != node_id and where == address:
                raise DuplicateMemberError(f"address {address} is node {other}'s")
        if len(self.members()) >= MAX_MEMBERS and node_id not in self.learners:
            raise ValueError(f"a cluster has at most {MAX_MEMBERS} members")
        learners = {k: v for k, v in self.learners.items() if k != node_id}
        if voter:
            return Configuration({**self.voters, node_id: address}, learners)
        return Configuration(dict(self.voters), {**learners, node_id: address})

    def without_member(self, node_id: int) -> Configuration:
        """Remove a voter or a learner; UnknownMemberError, LastVoterError."""
        if not self.is_member(node_id):
            raise UnknownMemberError(f"node {node_id} is not a member")
        if node_id in self.voters and len(self.voters) == 1:
            raise LastVoterError(f"node {node_id} is the last voter")
        voters = {k: v for k, v in self.voters.items() if k != node_id}
        learners = {k: v for k, v in self.learners.items() if k != node_id}
        return Configuration(voters, learners)

    def describe(self) -> str:
        learners = f" learners={sorted(self.learners)}" if self.learners else ""
        return f"voters={sorted(self.voters)}{learners}"


@dataclass(frozen=True, slots=True)
class Membership:
    """What `Node.configuration()` reports: the configuration in effect and where it stands."""

    voters: dict[int, str]
    learners: dict[int, str]
    index: int  # of its entry (or of the snapshot that holds it; 0: the bootstrap one)
    committed: bool


def check_member(node_id: object, address: object) -> None:
    """ValueError unless `node_id` is a valid id and `address` a plausible "host:port"."""
    if type(node_id) is not int or not 0 <= node_id <= MAX_NODE_ID:
        raise ValueError(f"node id {node_id!r} is not an int in 0..{MAX_NODE_ID}")
    if type(address) is not str or not address or len(address.encode()) > MAX_ADDRESS:
        raise ValueError(f"address {address!r} is not a host:port of at most {MAX_ADDRESS} bytes")
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"address {address!r} is not host:port")


def check_single_change(old: Configuration, new: Configuration) -> None:
    """NotSingleChangeError unless the voter sets differ by at most one server (thesis 4.1)."""
    if new.outgoing:
        raise NotSingleChangeError("joint configurations are not supported yet")
    if len(set(old.voters) ^ set(new.voters)) > 1:
        raise NotSingleChangeError(
            f"voters {sorted(old.voters)} -> {sorted(new.voters)} changes more than one server"
        )
    if not new.voters:
        raise LastVoterError("a configuration needs at least one voter")


# --- the entry format ---------------------------------------------------------


def encode_configuration(config: Configuration) -> bytes:
    """A configuration entry's data: the prefix, then compact JSON (rare, and readable)."""
    body = {
        "voters": sorted(config.voters.items()),
        "learners": sorted(config.learners.items()),
        "outgoing": sorted(config.outgoing.items()),
    }
    return CONFIG_PREFIX + json.dumps(body, separators=(",", ":")).encode()


def is_configuration(data: bytes) -> bool:
    return data[:2] == CONFIG_PREFIX


def decode_configuration(data: bytes) -> Configuration | None:
    """The configuration an entry holds; None if it is not a well-formed one.

    A malformed configuration entry (only a forged or damaged one can be)
    is ignored alike by every replica, so they keep agreeing.
    """
    if not is_configuration(data) or len(data) > 64 * 1024:
        return None
    try:
        body = json.loads(data[len(CONFIG_PREFIX) :])
    except (ValueError, UnicodeDecodeError):
        return None
    if type(body) is not dict:
        return None
    sets = []
    for key in ("voters", "learners", "outgoing"):
        items = body.get(key, [])
        if type(items) is not list:
            return None
        members: dict[int, str] = {}
        for item in items:
            if type(item) is not list or len(item) != 2:
                return None
            node_id, address = item
            if type(node_id) is not int or not 0 <= node_id <= MAX_NODE_ID:
                return None
            if type(address) is not str or len(address.encode()) > MAX_ADDRESS:
                return None
            if node_id in members:
                return None
            members[node_id] = address
        sets.append(members)
    voters, learners, outgoing = sets
    config = Configuration(voters, learners, outgoing)
    if not voters or len(config.members()) != len(voters) + len(learners) + len(outgoing):
        return None  # no voter, or an id in two roles
    if len(config.members()) > MAX_MEMBERS:
        return None
    return config


# --- the configurations in a log ------------------------------------------------


class ConfigHistory:
    """The configuration at the snapshot, then each configuration entry after it.

    The latest one is in effect (even uncommitted); truncating the log
    reverts to the one before (thesis 4.1); compacting it forgets all but
    the latest configuration at or before the snapshot.
    """

    def __init__(self, base: Configuration, base_index: int) -> None:
        self._items: list[tuple[int, Configuration]] = [(base_index, base)]

    @property
    def latest(self) -> Configuration:
        return self._items[-1][1]

    @property
    def latest_index(self) -> int:
        return self._items[-1][0]

    @property
    def previous(self) -> Configuration | None:
        """The configuration before the latest, if the log still holds both."""
        return self._items[-2][1] if len(self._items) > 1 else None

    def add(self, index: int, config: Configuration) -> None:
        self._items.append((index, config))

    def at(self, index: int) -> Configuration:
        """The configuration in effect once the log holds `index`."""
        for at, config in reversed(self._items):
            if at <= index:
                return config
        return self._items[0][1]

    def truncate_from(self, index: int) -> bool:
        """The log loses `index` and after: forget their configurations. True if any."""
        keep = [item for item in self._items[1:] if item[0] < index]
        changed = len(keep) != len(self._items) - 1
        self._items[1:] = keep
        return changed

    def compact(self, index: int) -> None:
        """The log before `index` (inclusive) became a snapshot."""
        base = self.at(index)
        later = [item for item in self._items if item[0] > index]
        base_index = max((at for at, _ in self._items if at <= index), default=index)
        self._items = [(base_index, base), *later]

    def reset(self, index: int, config: Configuration) -> None:
        """An installed snapshot replaced the whole log."""
        self._items = [(index, config)]
