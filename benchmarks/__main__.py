"""`python -m benchmarks [options]`: the harness's command line (benchmarks.cli)."""

from benchmarks.cli import main

raise SystemExit(main())
