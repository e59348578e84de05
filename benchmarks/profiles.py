"""Profiles of the raftio leader under load: cProfile tables and py-spy samples.

`--profile` profiles the leader during an embedded run three ways:

* cProfile, wall clock (the profiled thread's time per function, waits for
  the GIL and inside system calls included: where the event loop's time goes);
* cProfile, `time.thread_time` (the event-loop thread's CPU only);
* py-spy (if installed), sampling every thread of the process from outside at
  250 Hz without slowing it much; idle samples are dropped, so the counts
  are where the CPU went.

Each writes a text summary: the top 25 functions by own time and by
cumulative (inclusive) time.
"""

from __future__ import annotations

import asyncio
import io
import pstats
import shutil
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import cProfile

__all__ = ["TOP", "cprofile_summary", "py_spy", "py_spy_available", "py_spy_summary"]

TOP = 25
PY_SPY_RATE = 250  # samples per second


def cprofile_summary(profiler: cProfile.Profile, top: int = TOP) -> str:
    """The top functions by own time and by cumulative time, as pstats prints them."""
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.strip_dirs()
    out.write(f"== top {top} by tottime ==\n")
    stats.sort_stats("tottime").print_stats(top)
    out.write(f"== top {top} by cumulative ==\n")
    stats.sort_stats("cumulative").print_stats(top)
    return out.getvalue()


def _function(frame: str) -> str:
    """'propose (raftio/node.py:256)' -> 'propose (node.py)': one name per function."""
    name, _, where = frame.partition(" (")
    return f"{name} ({Path(where.rstrip(')').rpartition(':')[0] or where).name})"


def py_spy_summary(raw: str, top: int = TOP) -> str:
    """Own and inclusive sample counts per function (and per thread) from py-spy's raw output."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        thread, frames = frames[0], [_function(f) for f in frames[1:]]
        total += count
        threads[thread.split(": ", 1)[-1]] += count
        if frames:
            own[frames[-1]] += count
        for name in set(frames):
            inclusive[name] += count
    if not total:
        return "py-spy recorded no samples\n"
    lines = [f"{total} samples ({PY_SPY_RATE} Hz, busy threads only)", "", "== by thread =="]
    lines += [f"{n / total:7.1%}  {name}" for name, n in threads.most_common()]
    for title, table in (("own samples", own), ("inclusive samples", inclusive)):
        lines += ["", f"== top {top} by {title} =="]
        lines += [f"{n / total:7.1%}  {name}" for name, n in table.most_common(top)]
    return "\n".join(lines) + "\n"


def py_spy_available() -> bool:
    return shutil.which("py-spy") is not None


async def py_spy(pid: int, seconds: float, raw_path: Path, log: Path) -> str:
    """Sample `pid` for `seconds` (whole seconds, at least 1); the summary text."""
    binary = shutil.which("py-spy")
    if binary is None:
        return "py-spy is not installed\n"
    with log.open("a") as log_file:
        proc = await asyncio.create_subprocess_exec(
            binary, "record", "--pid", str(pid), "--duration", str(max(1, round(seconds))),
            "--rate", str(PY_SPY_RATE), "--format", "raw", "--output", str(raw_path),
            "--nonblocking", "--threads",
            stdin=asyncio.subprocess.DEVNULL, stdout=log_file, stderr=log_file,
        )  # fmt: skip
        try:
            await asyncio.wait_for(proc.wait(), seconds + 30)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    return _summary_of(raw_path, log)


def _summary_of(raw_path: Path, log: Path) -> str:
    if not raw_path.exists():
        return f"py-spy wrote nothing (see {log.name})\n"
    return py_spy_summary(raw_path.read_text())
