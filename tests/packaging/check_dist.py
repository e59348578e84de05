"""Check a built wheel and sdist against the source tree: `python check_dist.py DIST_DIR`.

Run by scripts/wheel_smoke.sh after `python -m build`. Fails (exit 1, one
line per problem) if a module of the source tree is missing from the wheel,
if the wheel lacks py.typed, the license or the `raftio` entry point, or if
the sdist lacks what a release needs to be rebuilt and read.
"""

from __future__ import annotations

import sys
import tarfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SDIST_FILES = (
    "pyproject.toml",
    "README.md",
    "LICENSE",
    "CHANGELOG.md",
    "mkdocs.yml",
    "docs/index.md",
    "raftio/py.typed",
    "raftio/__init__.py",
)


def source_modules() -> set[str]:
    return {
        path.relative_to(ROOT).as_posix()
        for path in (ROOT / "raftio").rglob("*.py")
        if "__pycache__" not in path.parts
    }


def check_wheel(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
        entry_points = zf.read(f"{info}/entry_points.txt").decode()
        metadata = zf.read(f"{info}/METADATA").decode()
    problems = [f"wheel lacks {m}" for m in sorted(source_modules() - names)]
    problems += [
        f"wheel has {n}, not in the source tree"
        for n in sorted(n for n in names if n.endswith(".py") and n not in source_modules())
    ]
    if "raftio/py.typed" not in names:
        problems.append("wheel lacks raftio/py.typed")
    if f"{info}/licenses/LICENSE" not in names:
        problems.append("wheel lacks the license file")
    if "raftio = raftio.cli:main" not in entry_points:
        problems.append("wheel lacks the raftio console script")
    fields = ("License-Expression: MIT", "Requires-Python: >=3.11", "Classifier: Typing :: Typed")
    for field in (*fields, "Description-Content-Type: text/markdown"):
        if field not in metadata:
            problems.append(f"wheel METADATA lacks {field!r}")
    return problems


def check_sdist(sdist: Path) -> list[str]:
    with tarfile.open(sdist) as tf:
        names = {name.split("/", 1)[1] for name in tf.getnames() if "/" in name}
    return [f"sdist lacks {f}" for f in SDIST_FILES if f not in names]


def main(dist: Path) -> int:
    wheels, sdists = sorted(dist.glob("*.whl")), sorted(dist.glob("*.tar.gz"))
    if len(wheels) != 1 or len(sdists) != 1:
        print(f"expected one wheel and one sdist in {dist}, found {wheels + sdists}")
        return 1
    problems = check_wheel(wheels[0]) + check_sdist(sdists[0])
    for problem in problems:
        print(problem)
    if not problems:
        print(f"{wheels[0].name} and {sdists[0].name}: contents ok")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
