"""Fenced code blocks of the docs and README, and what each one is for.

Every fence has a language; an HTML comment on the line just before it
(invisible on the site and on GitHub) says what a test does with it:

    ```python                      a program: run on its own, must exit 0, print nothing on stderr
    <!-- snippet: continue -->     appended to the page's previous python group, run together
    <!-- snippet: pytest -->       starts a group that is a pytest module: run with pytest
    <!-- snippet: output -->       (before a text fence) the exact stdout of the group above
    <!-- snippet: no-run REASON -->  a python fragment: compiled, its imports executed, not run
    <!-- snippet: setup -->        (before an sh fence) run with bash in the next group's directory
    ```sh                          shell: not run; `raftio` commands are parsed by the real
                                   CLI parser, `python`/`pytest` targets must exist
    ```text / ```mermaid / ```     diagrams and output: not run; `$ raftio ...` lines parsed
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PYTHON = "python"
LANGUAGES = frozenset({PYTHON, "sh", "text", "mermaid", ""})
_FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})\s*(?P<lang>[\w+-]*)")
_MARKER = re.compile(r"^\s*<!--\s*snippet:\s*(?P<what>[\w-]+)\s*(?P<why>.*?)\s*-->\s*$")


@dataclass
class Fence:
    page: str  # path relative to the repository root
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    marker: str | None  # continue | pytest | output | no-run, or None
    reason: str = ""

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"


@dataclass
class Group:
    """Python fences run together: a program or a pytest module."""

    first: Fence
    fences: list[Fence] = field(default_factory=list)
    expected_output: str | None = None
    setup: list[Fence] = field(default_factory=list)  # sh fences run first, in its directory

    @property
    def pytest(self) -> bool:
        return self.first.marker == "pytest"

    @property
    def code(self) -> str:
        return "\n\n".join(f.code for f in self.fences)


def pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("**/*.md"))]


def fences(path: Path) -> list[Fence]:
    """Every fenced block of a markdown file, with the marker just before it."""
    lines = path.read_text(encoding="utf-8").splitlines()
    page = path.relative_to(ROOT).as_posix()
    found: list[Fence] = []
    i = 0
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        indent, fence = opening["indent"], opening["fence"]
        body: list[str] = []
        j = i + 1
        while j < len(lines) and not lines[j].strip().startswith(fence):
            body.append(lines[j][len(indent) :] if lines[j].startswith(indent) else lines[j])
            j += 1
        marker = _marker_before(lines, i)
        what, why = (marker["what"], marker["why"]) if marker else (None, "")
        found.append(Fence(page, i + 1, opening["lang"], "\n".join(body) + "\n", what, why))
        i = j + 1
    return found


def _marker_before(lines: list[str], index: int) -> re.Match[str] | None:
    k = index - 1
    while k >= 0 and not lines[k].strip():
        k -= 1
    return _MARKER.match(lines[k]) if k >= 0 else None


def groups(found: list[Fence]) -> list[Group]:
    """The runnable python groups of one page, outputs attached; raises on misuse."""
    result: list[Group] = []
    setup: list[Fence] = []
    for fence in found:
        if fence.marker == "setup":
            if fence.lang != "sh":
                raise ValueError(f"{fence.where}: a setup block must be sh")
            setup.append(fence)
        elif fence.marker == "output":
            if not result or result[-1].expected_output is not None:
                raise ValueError(f"{fence.where}: an output block with no program above it")
            result[-1].expected_output = fence.code
        elif fence.lang != PYTHON or fence.marker == "no-run":
            continue
        elif fence.marker == "continue":
            if not result:
                raise ValueError(f"{fence.where}: 'continue' with no python block before it")
            result[-1].fences.append(fence)
        elif fence.marker in (None, "pytest"):
            result.append(Group(fence, [fence], setup=setup))
            setup = []
        else:
            raise ValueError(f"{fence.where}: unknown snippet marker {fence.marker!r}")
    if setup:
        raise ValueError(f"{setup[0].where}: a setup block with no python block after it")
    return result


def shell_commands(fence: Fence) -> list[list[str]]:
    """The commands a fence shows, as argv lists (continuations joined, comments dropped).

    In `sh` fences every line is a command; in other fences only `$ ` lines are.
    """
    import shlex

    commands: list[list[str]] = []
    text = fence.code.replace("\\\n", " ")
    for raw in text.splitlines():
        line = raw.strip()
        if fence.lang != "sh":
            if not line.startswith("$ "):
                continue
            line = line[2:]
        words = shlex.split(line, comments=True)
        current: list[str] = []
        for word in [*words, "&&"]:
            if word in ("&&", "||", "|", ";"):
                if current:
                    commands.append(current)
                current = []
            else:
                current.append(word)
    return [_without_env(argv) for argv in commands if _without_env(argv)]


def _without_env(argv: list[str]) -> list[str]:
    k = 0
    while k < len(argv) and re.match(r"^[A-Z_][A-Z0-9_]*=", argv[k]):
        k += 1
    return argv[k:]
