"""`python -m raftio`: the same command line as the `raftio` console script."""

import sys

import raftio

if getattr(raftio, "__file__", None) is None:
    # `python -m` put the working directory first on sys.path, and a raftio/
    # folder there (no __init__.py: a checkout's parent, say) became a
    # namespace package in place of the installed one.
    shadow = next(iter(getattr(raftio, "__path__", [])), "raftio")
    sys.exit(
        f"python -m raftio: the folder {shadow} shadows the installed raftio package; "
        "run from another directory, or use `python -P -m raftio` or the `raftio` command"
    )

from raftio.cli import main  # after the check: a shadowed package fails in one line

if __name__ == "__main__":
    raise SystemExit(main())
