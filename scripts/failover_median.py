"""Median failover time of `raftio demo` (SIGKILL of the leader -> first acknowledged write).

Run:  python scripts/failover_median.py [RUNS]     (default 20 runs, one after another)

Every run is a fresh 3-process cluster; a run that fails counts as a failure
and is left out of the statistics. Exits 1 if any run failed.
"""

from __future__ import annotations

import re
import statistics
import subprocess
import sys
import time

PATTERN = re.compile(r"failover time: (\d+\.\d+) s")


def one_run() -> tuple[float | None, float, str]:
    """(failover seconds or None if the demo failed, wall seconds, output)."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "raftio", "demo"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    wall = time.perf_counter() - started
    found = PATTERN.search(done.stdout)
    if done.returncode != 0 or found is None:
        return None, wall, done.stdout + done.stderr
    return float(found.group(1)), wall, done.stdout


def main() -> int:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    times: list[float] = []
    failures = 0
    for i in range(runs):
        failover, wall, output = one_run()
        if failover is None:
            failures += 1
            print(f"run {i + 1:2d}: FAILED ({wall:.1f} s)\n{output}")
            continue
        times.append(failover)
        print(f"run {i + 1:2d}: failover {failover:.3f} s  (demo took {wall:.1f} s)")
    if times:
        print(f"failover over {len(times)} runs: median {statistics.median(times):.3f} s, "
              f"min {min(times):.3f} s, max {max(times):.3f} s")  # fmt: skip
    print(f"failed runs: {failures}")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
