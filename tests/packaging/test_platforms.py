"""What pyproject.toml promises about platforms, Python versions and the docs build (issue 12).

raftio runs on POSIX only (FileStorage locks with fcntl, the CLI's default
loop is uvloop), on the Python versions its classifiers list, and its docs
extra installs everything `mkdocs build` needs to render API signatures.
"""

from __future__ import annotations

import importlib.util
import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_no_dependency_suggests_windows_works() -> None:
    requirements = [Requirement(text) for text in PROJECT["dependencies"]]

    assert not [str(r) for r in requirements if r.marker is not None]
    assert "uvloop" in {r.name for r in requirements}
    assert "Operating System :: POSIX" in PROJECT["classifiers"]
    assert not [c for c in PROJECT["classifiers"] if "Windows" in c or "OS Independent" in c]
    assert importlib.util.find_spec("fcntl") is not None  # what FileStorage needs


def test_the_classifiers_name_each_tested_python() -> None:
    versions = [c.rsplit(" :: ", 1)[1] for c in PROJECT["classifiers"]
                if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)]  # fmt: skip

    assert versions == ["3.11", "3.12", "3.13"]
    assert PROJECT["requires-python"] == ">=3.11"


def test_the_docs_extra_formats_api_signatures() -> None:
    docs = [Requirement(text).name for text in PROJECT["optional-dependencies"]["docs"]]

    # mkdocstrings-python formats `separate_signature` with Ruff or Black, if installed.
    assert {"ruff", "black"} & set(docs)
    assert "separate_signature: true" in (ROOT / "mkdocs.yml").read_text()
