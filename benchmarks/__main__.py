"""`python -m benchmarks [options]`: the same as `raftio bench [options]`."""

from benchmarks.runner import main

raise SystemExit(main())
