#!/usr/bin/env bash
# Build the sdist and the wheel, check them, install the wheel into a fresh
# virtual environment and smoke-test it there (run by .ci/run).
#
#   scripts/wheel_smoke.sh
#
# `python -m build` builds the sdist, then the wheel from the unpacked sdist,
# so a file missing from the sdist breaks the wheel too. `twine check` checks
# what PyPI would render; tests/packaging/check_dist.py compares the wheel with
# the source tree; tests/packaging/smoke.py runs in the fresh venv, from a
# directory outside the repository, so it can only import the installed copy.
# Build tools go into a venv of their own, so the caller's environment is untouched.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
quiet() { "$@" >"$work/step.log" 2>&1 || { cat "$work/step.log"; return 1; }; }

echo "building the sdist and the wheel"
python -m venv "$work/tools"
quiet "$work/tools/bin/python" -m pip install --upgrade pip build twine
quiet "$work/tools/bin/python" -m build --outdir "$work/dist" .
ls -l "$work/dist"
"$work/tools/bin/python" -m twine check --strict "$work"/dist/*
python tests/packaging/check_dist.py "$work/dist"

echo "installing the wheel into a fresh venv"
python -m venv "$work/venv"
quiet "$work/venv/bin/python" -m pip install "$work"/dist/*.whl
cd "$work"
"$work/venv/bin/python" "$repo/tests/packaging/smoke.py"
