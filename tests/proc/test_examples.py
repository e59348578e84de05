"""Every example runs, as its docstring says to run it, and prints what it promises."""

from __future__ import annotations

import subprocess
import sys

from .conftest import ROOT


def run_example(name: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, f"examples/{name}"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=False,
    )


def test_counter() -> None:
    done = run_example("counter.py")

    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [f"counter = {i}" for i in range(1, 6)]


def test_counter_exits_without_a_word_on_stderr() -> None:
    # Closing the nodes one by one left the others logging `connection lost`
    # in about a third of the runs; four runs would all be quiet by chance 1 in 5.
    runs = [run_example("counter.py") for _ in range(4)]

    assert [done.stderr for done in runs] == [""] * 4


def test_kv_service() -> None:
    done = run_example("kv_service.py")

    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "append -> hello, world"
    assert lines[2] == "same request twice -> '+1', '+1'; log = '+1'"
    assert lines[3].endswith("append -> hello, world!")
    assert lines[5].endswith("caught up: {'greeting': 'hello, world!', 'log': '+1'}")


def test_docstrings_name_the_command() -> None:
    for name in ("counter.py", "kv_service.py"):
        source = (ROOT / "examples" / name).read_text()

        assert f"Run:  python examples/{name}\n" in source


def test_examples_use_only_documented_names() -> None:
    for name in ("counter.py", "kv_service.py"):
        source = (ROOT / "examples" / name).read_text()

        assert "raftio.kv.local" not in source  # the CLI's process helpers, not an API
