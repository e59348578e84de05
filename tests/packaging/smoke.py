"""Smoke test of an installed raftio: `python smoke.py`, with the venv's python, outside the repo.

Run by scripts/wheel_smoke.sh in a fresh virtual environment where only the
built wheel (and its dependencies) is installed. Checks that the package
imported is the installed one, that its version agrees with its metadata and
with `raftio --version`, and that the installed code works: a 3-peer cluster
on the virtual clock commits a command (with RAFTIO_DEBUG tracing to a file
that `raftio logview` then reads), and a FileStorage survives a reopen.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import os
import subprocess
import sys
import tempfile
from pathlib import Path

CLUSTER = """
import asyncio, random
import raftio
from raftio.testing import run
from raftio.transport.memory import Network

async def main():
    net = Network(seed=1)
    queues = [asyncio.Queue() for _ in range(3)]
    peers = []
    for i in range(3):
        ends = [net.make_end((i, j)) for j in range(3)]
        for j in range(3):
            net.connect((i, j), j)
            net.enable((i, j), True)
        peers.append(raftio.make(ends, i, raftio.MemoryStorage(), queues[i], rng=random.Random(i)))
        net.add_server(i, peers[i])
    while not any(p.get_state()[1] for p in peers):
        await asyncio.sleep(0.05)
    leader = next(p for p in peers if p.get_state()[1])
    leader.start("hello")
    msgs = [await q.get() for q in queues]
    print(*sorted({(m.command_index, m.command) for m in msgs}))
    for p in peers:
        p.kill()
    net.cleanup()

run(main(), "virtual")
"""


def check(condition: bool, what: str) -> None:
    if not condition:
        sys.exit(f"smoke test FAILED: {what}")
    print(f"ok  {what}")


def tool(name: str) -> str:
    return str(Path(sys.executable).parent / name)


async def file_storage_round_trip(directory: str) -> tuple[int, int | None, int]:
    from raftio import FileStorage
    from raftio.messages import Entry

    storage = FileStorage(directory)
    storage.save_hard_state(3, 1)
    storage.append_entries(1, [Entry(3, b"x"), Entry(3, b"y")])
    pending = storage.sync()
    if pending is not None:
        await pending
    storage.close()
    reopened = FileStorage(directory)
    state = reopened.load()
    reopened.close()
    return state.current_term, state.voted_for, len(state.entries)


def main() -> None:
    import raftio

    installed = Path(raftio.__file__).resolve()
    check(Path(sys.prefix).resolve() in installed.parents, f"raftio imported from {installed}")
    version = importlib.metadata.version("raftio")
    check(raftio.__version__ == version, f"raftio.__version__ == metadata version {version}")
    out = subprocess.run([tool("raftio"), "--version"], capture_output=True, text=True, check=True)
    check(out.stdout.strip() == f"raftio {version}", f"`raftio --version` prints {out.stdout!r}")
    check((installed.parent / "py.typed").is_file(), "py.typed is installed")

    with tempfile.TemporaryDirectory() as tmp:
        trace = os.path.join(tmp, "trace.log")
        env = {**os.environ, "RAFTIO_DEBUG": trace}
        run = subprocess.run(
            [sys.executable, "-c", CLUSTER],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
            check=False,
        )
        result = f"{run.stdout.strip()!r} {run.stderr[-500:]}"
        check(
            run.returncode == 0 and run.stdout.strip() == "(1, 'hello')",
            f"a 3-peer cluster commits a command: {result}",
        )
        view = subprocess.run(
            [tool("raftio"), "logview", trace, "--topics", "role", "--no-color", "--width", "200"],
            capture_output=True,
            text=True,
            check=False,
        )
        check(
            view.returncode == 0 and "became leader" in view.stdout,
            "`raftio logview` reads the cluster's trace",
        )
        state = asyncio.run(file_storage_round_trip(os.path.join(tmp, "store")))
        check(state == (3, 1, 2), f"FileStorage keeps term, vote and entries on reopen: {state}")
    print("smoke test passed")


if __name__ == "__main__":
    main()
