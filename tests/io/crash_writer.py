"""The child process of the kill -9 tests, and the parent's side of one round.

Child: ``python crash_writer.py DIRECTORY SEED`` opens a FileStorage and,
until it is killed, issues random writes from a few concurrent tasks, each
syncing after a small group. Every event is one ``os.write`` of one line to
stdout, so a kill never leaves half a line:

    ready              the storage is open (recovery is done)
    op <json>          printed before the operation is issued
    ack <n>            a sync covering the first n operations has resolved

Parent: `run_round()` starts a child, SIGKILLs it after a seeded random
delay, reopens the directory and checks that the state is exactly the state
after some prefix of the printed operations, at least as long as every
acknowledged one. Used by test_crash_kill9.py and scripts/crash_stress.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from raftio.messages import Entry
from raftio.storage.base import DurableState
from raftio.storage.file import FileStorage
from raftio.storage.memory import MemoryStorage

CHILD = Path(__file__).resolve()
Op = list[Any]


# --- operations ----------------------------------------------------------------


def next_op(rng: random.Random, state: DurableState) -> Op:
    """A random valid write for a storage in `state` (JSON-ready)."""
    last = state.snapshot_index + len(state.entries)
    roll = rng.random()
    if roll < 0.15:
        return ["hard", state.current_term + rng.choice([0, 0, 1]), rng.choice([None, 0, 1, 2])]
    if roll < 0.2 and last > state.snapshot_index:
        index = rng.randint(state.snapshot_index + 1, last + 2)
        term = state.entries[index - state.snapshot_index - 1].term if index <= last else 9
        return ["snap", index, term, rng.randbytes(rng.choice([0, 10, 3000])).hex()]
    first = max(last + 1 - rng.choice([0, 0, 0, 0, 1, 2, 5]), state.snapshot_index + 1)
    size = rng.choice([1, 16, 100, 1000])
    entries = [[state.current_term, rng.randbytes(size).hex()] for _ in range(rng.randint(0, 4))]
    return ["append", first, entries]


def apply_op(storage: FileStorage | MemoryStorage, op: Op) -> None:
    if op[0] == "hard":
        storage.save_hard_state(op[1], op[2])
    elif op[0] == "snap":
        storage.save_snapshot(op[1], op[2], bytes.fromhex(op[3]))
    else:
        storage.append_entries(op[1], [Entry(term, bytes.fromhex(data)) for term, data in op[2]])


# --- the child -----------------------------------------------------------------


def emit(line: str) -> None:
    os.write(1, (line + "\n").encode())


async def child(directory: str, seed: int) -> None:
    rng = random.Random(seed)
    storage = FileStorage(
        directory,
        segment_size=rng.choice([1024, 8192, 1 << 20]),
        compact_min_bytes=rng.choice([0, 4096, 1 << 20]),
    )
    emit("ready")
    issued = 0

    async def writer() -> None:
        nonlocal issued
        while True:
            for _ in range(rng.randint(1, 3)):
                op = next_op(rng, storage.load())
                emit("op " + json.dumps(op))
                apply_op(storage, op)
                issued += 1
            covered = issued
            pending = storage.sync()
            if pending is not None:
                await pending
            emit(f"ack {covered}")

    await asyncio.gather(*(writer() for _ in range(rng.choice([1, 4, 16]))))


# --- the parent ----------------------------------------------------------------


@dataclass(slots=True)
class Round:
    seed: int
    killed_before_ready: bool
    issued: int  # op lines printed
    acked: int  # the longest acknowledged prefix
    recovered: int  # the prefix the reopened state equals


State = tuple[DurableState, bytes]


def read_state(directory: Path) -> State:
    """Open (recover), read, close."""
    with FileStorage(directory) as storage:
        return storage.load(), storage.read_snapshot()


def run_round(directory: Path, seed: int, scratch: Path) -> Round:
    """One child, killed at a random moment; raises AssertionError naming the seed on loss."""
    rng = random.Random(seed)
    start = read_state(directory)
    out, err = scratch / "child.out", scratch / "child.err"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, str(CHILD), str(directory), str(seed)], stdout=stdout, stderr=stderr
        )
        early = rng.random() < 0.15  # sometimes during start-up or recovery
        if not early:
            wait_for_ready(proc, out)
        time.sleep(rng.uniform(0.0, 0.25))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    if proc.returncode != -signal.SIGKILL:
        raise AssertionError(f"seed {seed}: child exited {proc.returncode}: {err.read_text()}")
    text = out.read_text()
    # A kill can cut a long line short mid-write; then its op was never issued.
    lines = text[: text.rfind("\n") + 1].splitlines()
    ops = [json.loads(line[3:]) for line in lines if line.startswith("op ")]
    acked = max((int(line[4:]) for line in lines if line.startswith("ack ")), default=0)
    recovered = matching_prefix(start, ops, read_state(directory), acked)
    if recovered is None:
        raise AssertionError(
            f"seed {seed}: the reopened state is no prefix of the {len(ops)} issued ops "
            f"at least {acked} long (acknowledged)"
        )
    return Round(seed, "ready" not in lines, len(ops), acked, recovered)


def wait_for_ready(proc: subprocess.Popen[bytes], out: Path) -> None:
    deadline = time.monotonic() + 20.0
    while b"ready" not in out.read_bytes():
        if proc.poll() is not None or time.monotonic() > deadline:
            return  # the exit status check reports it
        time.sleep(0.002)


def matching_prefix(start: State, ops: list[Op], recovered: State, acked: int) -> int | None:
    """The length of a prefix of `ops` (>= acked) that turns `start` into `recovered`."""
    mem = MemoryStorage()
    state, snapshot = start
    mem.save_snapshot(state.snapshot_index, state.snapshot_term, snapshot)
    mem.append_entries(state.snapshot_index + 1, state.entries)
    mem.save_hard_state(state.current_term, state.voted_for)
    for done in range(len(ops) + 1):
        if done >= acked and (mem.load(), mem.read_snapshot()) == recovered:
            return done
        if done < len(ops):
            apply_op(mem, ops[done])
    return None


if __name__ == "__main__":
    asyncio.run(child(sys.argv[1], int(sys.argv[2])))
