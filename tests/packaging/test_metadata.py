"""Release metadata: one version everywhere, the docs extra, the changelog's shape.

Building and installing the wheel is scripts/wheel_smoke.sh's job (in CI);
these checks need no build and run with the suite.
"""

from __future__ import annotations

import importlib.metadata
import re
import tomllib
from pathlib import Path

import pytest

import raftio
from raftio import cli

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]


def test_the_version_is_written_once(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--version"])

    assert exit_info.value.code == 0
    assert capsys.readouterr().out == f"raftio {raftio.__version__}\n"
    assert "version" not in PROJECT
    assert PROJECT["dynamic"] == ["version"]
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "raftio.__version__"}
    assert importlib.metadata.version("raftio") == raftio.__version__


def test_the_metadata_a_release_needs() -> None:
    classifiers = PROJECT["classifiers"]

    assert PROJECT["readme"] == "README.md"
    assert PROJECT["license"] == "MIT"
    assert all((ROOT / name).is_file() for name in PROJECT["license-files"])
    assert PROJECT["requires-python"] == ">=3.11"
    assert "Programming Language :: Python :: 3.11" in classifiers
    assert "Typing :: Typed" in classifiers
    assert (ROOT / "raftio" / "py.typed").is_file()
    assert not [c for c in classifiers if c.startswith("License ::")]  # PEP 639: the expression


def test_the_docs_extra_builds_the_site() -> None:
    docs = " ".join(PROJECT["optional-dependencies"]["docs"])

    for package in ("mkdocs", "mkdocs-material", "mkdocstrings[python]"):
        assert re.search(rf"(^| ){re.escape(package)}[<>=]", docs), package
    assert "mkdocs build --strict" in (ROOT / ".ci" / "run").read_text()
    assert "scripts/wheel_smoke.sh" in (ROOT / ".ci" / "run").read_text()


@pytest.mark.parametrize(
    "component",
    ["Core peer", "MemoryStorage", "FileStorage", "TCP transport", "Node", "Key/value service",
     "In-memory fault-injecting network", "Virtual-clock", "simulation and fuzzer",
     "Linearizability checker", "Pre-vote", "check-quorum", "ReadIndex", "logview"],
)  # fmt: skip
def test_the_changelog_names_each_user_visible_change(component: str) -> None:
    unreleased = _changelog_section("Unreleased")

    assert any(component in line for line in unreleased if line.startswith("- "))


def test_the_changelog_follows_keep_a_changelog() -> None:
    text = (ROOT / "CHANGELOG.md").read_text()
    sections = re.findall(r"^## \[(.+?)\]", text, re.MULTILINE)
    kinds = {"Added", "Changed", "Deprecated", "Removed", "Fixed", "Security"}

    assert sections[0] == "Unreleased"
    assert set(re.findall(r"^### (\w+)", text, re.MULTILINE)) <= kinds


def _changelog_section(name: str) -> list[str]:
    text = (ROOT / "CHANGELOG.md").read_text()
    body = text.split(f"## [{name}]", 1)[1].split("\n## ", 1)[0]
    return [line for line in body.splitlines() if line.strip()]
