"""A simulated service: one peer's apply_ch consumer and state machine.

The state machine is a hash chain: after applying index i its state is
``(i, digest_i)`` with ``digest_i = blake2b(digest_{i-1}, i, term, command)``,
so two services agree on the digest at i only if they applied the same
commands at every index up to i. Every `snapshot_every` entries the service
hands Raft a snapshot of its state (``rf.snapshot``), from inside the
consumer as a real service would. Every apply and snapshot install goes to
the `InvariantChecker` (state machine safety).
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

import raftio
from raftio import codec
from raftio.membership import Configuration
from raftio.messages import ApplyMsg
from raftio.testing.invariants import InvariantChecker


def encode_state(index: int, digest: bytes, pad: int = 0) -> bytes:
    """A snapshot of the service; `pad` bytes of filler make it span several chunks."""
    if not pad:
        return codec.encode_command([index, digest])
    return codec.encode_command([index, digest, _filler(digest, pad)])


def _filler(digest: bytes, n: int) -> bytes:
    """n bytes that depend on the digest: a damaged byte anywhere shows."""
    return (digest * (n // max(1, len(digest)) + 1))[:n]


def decode_state(snapshot: bytes) -> tuple[int, bytes]:
    """The (index, digest) a snapshot holds; (0, b"") for no snapshot."""
    if not snapshot:
        return 0, b""
    index, digest, *filler = codec.decode_command(snapshot)
    if not (isinstance(index, int) and isinstance(digest, bytes) and len(filler) <= 1):
        raise ValueError("not a snapshot of this service")
    if filler and filler[0] != _filler(digest, len(filler[0])):
        raise ValueError("a damaged snapshot")
    return index, digest


class Service:
    """Consumes one peer incarnation's apply_ch."""

    def __init__(
        self,
        me: int,
        rf: raftio.Raft,
        apply_ch: asyncio.Queue[ApplyMsg],
        checker: InvariantChecker,
        snapshot_every: int,
        restored: bytes,
        pad: int = 0,
    ) -> None:
        self.me = me
        self._rf = rf
        self._apply_ch = apply_ch
        self._checker = checker
        self._snapshot_every = snapshot_every
        self._pad = pad
        self.last_index, self.digest = decode_state(restored)
        self.applied = 0  # commands applied by this incarnation

    async def run(self) -> None:
        while True:
            self.handle(await self._apply_ch.get())

    def drain(self) -> None:
        """What the peer put on apply_ch before it died was delivered: apply it too."""
        while not self._apply_ch.empty():
            self.handle(self._apply_ch.get_nowait())

    def handle(self, msg: ApplyMsg) -> None:
        if msg.snapshot_valid:
            self._install(msg)
        elif msg.command_valid:
            self._apply(msg.command_index, msg.command_term, msg.command)

    def _install(self, msg: ApplyMsg) -> None:
        try:
            index, digest = decode_state(msg.snapshot)
        except Exception as exc:
            self._checker.fail("snapshot", f"S{self.me} was handed a damaged snapshot: {exc!r}")
            return
        if index != msg.snapshot_index:
            self._checker.fail(
                "snapshot", f"S{self.me} got a snapshot of {index} labelled {msg.snapshot_index}"
            )
        self.last_index, self.digest = index, digest
        self._checker.on_snapshot(self.me, index, digest)

    def _apply(self, index: int, term: int, command: Any) -> None:
        if isinstance(command, Configuration):  # raftio's own entry: apply its description
            command = ("configuration", command.describe())
        if index != self.last_index + 1:
            self._checker.fail(
                "apply order", f"S{self.me} applied index {index} after {self.last_index}"
            )
        chain = hashlib.blake2b(self.digest, digest_size=16)
        chain.update(codec.encode_command([index, term, command]))
        self.last_index, self.digest = index, chain.digest()
        self.applied += 1
        self._checker.on_applied(self.me, index, term, command, self.digest)
        if index % self._snapshot_every == 0:
            self._rf.snapshot(index, encode_state(index, self.digest, self._pad))
