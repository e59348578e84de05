"""Scripts in etcd's datadriven format: directives, `----`, the expected output.

    # A comment: kept as is.
    cluster 3
    elect 0
    ----
    S0 became candidate at T1
    S0 became leader at T1

A block is one or more directive lines (run in order, outputs joined), a
line `----`, then the output up to the next blank line (`ok` if empty).
`run_file` compares every block; with `rewrite` it writes the actual
outputs back into the file instead, so a deliberate change in behaviour is
reviewed as a diff of the script.
"""

from __future__ import annotations

import difflib
from pathlib import Path

from tests.scenarios.interpreter import Interpreter, ScriptError

SEPARATOR = "----"


def run_script(text: str, name: str = "<script>") -> str:
    """The script `text` with every block's output replaced by what the directives print."""
    interp = Interpreter()
    lines = text.splitlines()
    out: list[str] = []
    directives: list[tuple[int, str]] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if line == SEPARATOR:
            if not directives:
                raise ScriptError(f"{name}:{i}: `----` without a directive")
            out.append(line)
            out.extend(_run_block(interp, directives, name))
            directives = []
            while i < len(lines) and lines[i].strip():
                i += 1  # the old expected output
            continue
        out.append(line)
        if line.strip() and not line.lstrip().startswith("#"):
            directives.append((i, line))
        elif directives and not line.strip():
            raise ScriptError(f"{name}:{i}: a blank line before `----`")
    if directives:
        raise ScriptError(f"{name}:{directives[0][0]}: directives without `----`")
    return "\n".join(out) + "\n"


def _run_block(interp: Interpreter, directives: list[tuple[int, str]], name: str) -> list[str]:
    produced: list[str] = []
    for number, line in directives:
        try:
            produced.extend(interp.run(line))
        except ScriptError as exc:
            raise ScriptError(f"{name}:{number}: {line}: {exc}") from None
    return produced or ["ok"]


def run_file(path: Path, rewrite: bool) -> None:
    """Check (or with `rewrite`, regenerate) the expected outputs of the script at `path`."""
    expected = path.read_text()
    actual = run_script(expected, path.name)
    if actual == expected:
        return
    if rewrite:
        path.write_text(actual)
        return
    diff = difflib.unified_diff(
        expected.splitlines(), actual.splitlines(), "expected", "actual", lineterm=""
    )
    raise AssertionError(
        f"{path.name}: output differs (RAFTIO_REWRITE=1 regenerates it; review the diff):\n"
        + "\n".join(diff)
    )
