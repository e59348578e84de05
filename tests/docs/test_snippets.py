"""Every code snippet in docs/ and README.md works as shown (see snippets.py for the markers).

Python groups run in a fresh interpreter in a temporary directory; pytest
groups run under pytest; fragments are compiled and their imports run;
shell commands are checked against the real CLI parser and the tree.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from raftio.cli import build_parser

from .snippets import LANGUAGES, PYTHON, ROOT, Fence, Group, fences, groups, pages, shell_commands

ALL_FENCES = [fence for page in pages() for fence in fences(page)]
ALL_GROUPS = [group for page in pages() for group in groups(fences(page))]
FRAGMENTS = [f for f in ALL_FENCES if f.lang == PYTHON and f.marker == "no-run"]
SHELL = [(f, argv) for f in ALL_FENCES if f.lang != PYTHON for argv in shell_commands(f)]


def _env() -> dict[str, str]:
    # Pages promise their output as shown: no trace lines, colors or asyncio debug warnings.
    unset = ("RAFTIO_DEBUG", "NO_COLOR", "PYTHONASYNCIODEBUG")
    env = {k: v for k, v in os.environ.items() if k not in unset}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def test_the_docs_have_snippets_of_every_kind() -> None:
    kinds = {(f.lang, f.marker) for f in ALL_FENCES}

    assert len(ALL_GROUPS) >= 5
    assert any(g.pytest for g in ALL_GROUPS)
    assert {(PYTHON, None), (PYTHON, "continue"), (PYTHON, "no-run"), ("text", "output")} <= kinds
    assert any(argv[0] == "raftio" for _, argv in SHELL)
    assert any(g.setup for g in ALL_GROUPS)


@pytest.mark.parametrize("fence", ALL_FENCES, ids=lambda f: f.where)
def test_every_fence_says_what_it_is(fence: Fence) -> None:
    assert fence.lang in LANGUAGES, (
        f"{fence.where}: fence language {fence.lang!r}; use one of {sorted(LANGUAGES)} "
        "(python is run: mark fragments with <!-- snippet: no-run REASON -->)"
    )
    if fence.marker == "no-run":
        assert fence.reason, f"{fence.where}: say why it is not run"
    if fence.marker == "output":
        assert fence.lang == "text"


@pytest.mark.parametrize("group", ALL_GROUPS, ids=lambda g: g.first.where)
def test_python_snippet_runs(group: Group, tmp_path: Path) -> None:
    for fence in group.setup:
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", fence.code],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, f"{fence.where} failed:\n{done.stderr}"
    if group.pytest:
        _run_pytest(group, tmp_path)
        return
    program = tmp_path / "snippet.py"
    program.write_text(group.code)

    done = subprocess.run(
        [sys.executable, str(program)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env=_env(),
        check=False,
    )

    where = ", ".join(f.where for f in group.fences)
    assert done.returncode == 0, f"{where} failed:\n{done.stderr}"
    assert done.stderr == "", f"{where} wrote to stderr:\n{done.stderr}"
    if group.expected_output is not None:
        assert done.stdout == group.expected_output, f"{where}: output differs from the page"


def _run_pytest(group: Group, tmp_path: Path) -> None:
    module = tmp_path / "test_snippet.py"
    module.write_text(group.code)

    # The page's tests are plain functions that call raftio.testing.run: no plugin needed.
    plugins = ["-p", "no:cacheprovider", "-p", "no:asyncio"]
    options = ["-q", *plugins, "-W", "error", "--rootdir", str(tmp_path)]
    done = subprocess.run(
        [sys.executable, "-m", "pytest", *options, str(module)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env=_env(),
        check=False,
    )

    summary = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    assert done.returncode == 0, f"{group.first.where}:\n{done.stdout}\n{done.stderr}"
    assert re.fullmatch(r"\d+ passed in [\d.]+s", summary), summary
    tests = len(re.findall(r"^def test_", group.code, re.MULTILINE))
    assert int(summary.split()[0]) >= tests > 0


@pytest.mark.parametrize("fence", FRAGMENTS, ids=lambda f: f.where)
def test_python_fragment_compiles_and_imports(fence: Fence) -> None:
    flags = ast.PyCF_ONLY_AST | ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
    tree = compile(fence.code, fence.where, "exec", flags)
    imports = [node for node in ast.walk(tree) if isinstance(node, ast.Import | ast.ImportFrom)]

    compile(tree, fence.where, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    exec(compile(ast.Module(body=imports, type_ignores=[]), fence.where, "exec"), {})


@pytest.mark.parametrize(
    ("fence", "argv"), SHELL, ids=[f"{f.where}:{' '.join(a)[:40]}" for f, a in SHELL]
)
def test_shell_command_is_valid(fence: Fence, argv: list[str]) -> None:
    program, args = argv[0], argv[1:]
    if program == "raftio":
        try:
            build_parser().parse_args(args)
        except SystemExit as exc:
            if exc.code != 0:  # --help and --version exit 0
                pytest.fail(f"{fence.where}: `raftio {' '.join(args)}` does not parse")
    elif program in ("python", "python3"):
        _check_python(fence, args)
    elif program == "pytest":
        _check_test_paths(fence, args)


def _check_python(fence: Fence, args: list[str]) -> None:
    if args[:2] == ["-m", "pytest"]:
        _check_test_paths(fence, args[2:])
    elif args[:1] == ["-m"]:
        assert importlib.util.find_spec(args[1]) is not None, f"{fence.where}: no module {args[1]}"
    elif args and args[0].endswith(".py"):
        assert (ROOT / args[0]).is_file(), f"{fence.where}: no file {args[0]}"


def _check_test_paths(fence: Fence, args: list[str]) -> None:
    for arg in args:
        if not arg.startswith("tests"):
            continue
        path, _, name = arg.partition("::")
        assert (ROOT / path).exists(), f"{fence.where}: no {path}"
        if name:
            assert f"def {name.split('[')[0]}(" in (ROOT / path).read_text(), (
                f"{fence.where}: no test {name} in {path}"
            )
