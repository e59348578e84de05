"""Run pytest while busy processes keep every core loaded: a hunt for timing flakes.

    python scripts/stress_tests.py [--hogs N] [pytest args...]
    python scripts/stress_tests.py                     # the README suite, one hog per core
    python scripts/stress_tests.py --hogs 2 tests/lab --loop uvloop

CI runs on a shared 2-core machine where a test can be paused (a GC pass,
the process descheduled) at any moment. A test that measures time from the
wrong point, or assumes an order that only an idle machine gives, fails
there now and then. Under this load it fails far more often: the full suite
with two hogs on 2 cores found three such tests in one run. The hogs are
plain busy loops in child processes, stopped when pytest ends (or on
Ctrl-C). Exit code: pytest's.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import subprocess
import sys


def _spin() -> None:
    while True:
        pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument(
        "--hogs", type=int, default=os.cpu_count() or 1, help="busy processes (one per core)"
    )
    options, pytest_args = parser.parse_known_args(argv)
    if options.hogs < 0:
        parser.error("--hogs must be >= 0")
    hogs = [multiprocessing.Process(target=_spin, daemon=True) for _ in range(options.hogs)]
    for hog in hogs:
        hog.start()
    print(f"stress: {len(hogs)} busy processes; pytest {' '.join(pytest_args) or '(all)'}")
    try:
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *pytest_args]
        return subprocess.call(command)
    except KeyboardInterrupt:
        return 130
    finally:
        for hog in hogs:
            hog.terminate()
        for hog in hogs:
            hog.join()


if __name__ == "__main__":
    sys.exit(main())
