"""The core is pure: importing it loads no event loop, codec, file or socket code.

Run in a fresh interpreter, so nothing another test imported can hide a
leak. The core (and the rules it is split into) may import only `messages`,
`config`, `log`, `membership`, `progress`, `validate` and `core_changes` from
raftio, and the standard library.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

import raftio.core
import raftio.core_changes
import raftio.core_snapshots
import raftio.progress
import raftio.snapshot_transfer

FORBIDDEN = ("asyncio", "msgpack", "fcntl", "socket", "ssl", "uvloop", "aiofiles")
ALLOWED_RAFTIO = {
    "raftio.messages",
    "raftio.config",
    "raftio.log",
    "raftio.membership",
    "raftio.progress",
    "raftio.validate",
    "raftio.snapshot_transfer",
    "raftio.core_snapshots",
    "raftio.core_changes",
}
CORE_MODULES = [
    raftio.core,
    raftio.core_changes,
    raftio.core_snapshots,
    raftio.progress,
    raftio.snapshot_transfer,
]


def test_importing_the_core_loads_no_io_codec_storage_or_transport() -> None:
    probe = "import sys, raftio.core\nprint('\\n'.join(sorted(sys.modules)))\n"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    loaded = set(done.stdout.split())

    assert "raftio.core" in loaded
    assert not loaded & set(FORBIDDEN), sorted(loaded & set(FORBIDDEN))
    leaked = sorted(
        m
        for m in loaded
        if m.startswith(("raftio.storage", "raftio.transport", "raftio.codec", "raftio.raft"))
    )
    assert leaked == []


@pytest.mark.parametrize("module", CORE_MODULES, ids=lambda m: m.__name__)
def test_the_core_imports_only_pure_modules(module: ModuleType) -> None:
    tree = ast.parse(Path(str(module.__file__)).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
        elif isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)

    ours = {m for m in imported if m == "raftio" or m.startswith("raftio.")}
    assert ours <= ALLOWED_RAFTIO, sorted(ours - ALLOWED_RAFTIO)
    others = {m.split(".")[0] for m in imported - ours}
    assert others <= set(sys.stdlib_module_names) | {"__future__"}, sorted(others)
