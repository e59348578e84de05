"""`python -m raftio`: the same command line as the `raftio` console script."""

from raftio.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
