"""Latency samples and their summaries: percentiles, CDF points, medians of runs.

Pure functions and plain data, shared by the load generators (which run in
the measured processes) and the harness (which merges and reports). Samples
are seconds from `time.perf_counter()`; summaries are in microseconds.
"""

from __future__ import annotations

import base64
import math
import statistics
from array import array
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = [
    "CDF_POINTS",
    "cdf_points",
    "decode_samples",
    "encode_samples",
    "median_run",
    "merge_summaries",
    "percentile",
    "summarize",
]

CDF_POINTS = 200  # points of a latency CDF kept in results.json (log-spaced in the tail)


def encode_samples(samples: array[float]) -> str:
    """Samples as text for a JSON control reply: base64 of the doubles (8 bytes each)."""
    return base64.b64encode(samples.tobytes()).decode("ascii")


def decode_samples(text: str) -> array[float]:
    samples = array("d")
    samples.frombytes(base64.b64decode(text))
    return samples


def percentile(ordered: Sequence[float], q: float) -> float:
    """The q-quantile (0 <= q <= 1) of sorted samples, nearest-rank; nan if there are none."""
    if not ordered:
        return math.nan
    rank = min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))
    return ordered[rank]


def _cdf_quantiles(n: int) -> list[float]:
    """Quantiles dense where CDF plots need them: linear to 0.9, then 0.99, 0.999..."""
    linear = [i / 100 for i in range(1, 90)]
    tail = [1 - 10 ** (-x / 20) for x in range(20, 81)]  # 0.9 .. 0.9999
    quantiles = sorted({*linear, *tail, 0.0, 1.0})
    return quantiles[: max(2, n)]


def cdf_points(ordered: Sequence[float], n: int = CDF_POINTS) -> list[list[float]]:
    """[[latency_us, fraction <= it], ...] from sorted samples in seconds."""
    if not ordered:
        return []
    return [[percentile(ordered, q) * 1e6, q] for q in _cdf_quantiles(n)]


def summarize(samples: Iterable[float]) -> dict[str, Any]:
    """count, mean, p50, p99, p99.9 and max (microseconds) and the CDF of latency samples."""
    ordered = sorted(samples)
    if not ordered:
        return {"count": 0}
    return {
        "count": len(ordered),
        "mean_us": statistics.fmean(ordered) * 1e6,
        "p50_us": percentile(ordered, 0.50) * 1e6,
        "p99_us": percentile(ordered, 0.99) * 1e6,
        "p999_us": percentile(ordered, 0.999) * 1e6,
        "max_us": ordered[-1] * 1e6,
        "cdf": cdf_points(ordered),
    }


def merge_summaries(encoded: Sequence[str]) -> dict[str, Any]:
    """One summary of the samples of several processes (each `encode_samples` text)."""
    merged: array[float] = array("d")
    for text in encoded:
        merged.extend(decode_samples(text))
    return summarize(merged)


def median_run(runs: Sequence[dict[str, Any]], key: str = "throughput") -> dict[str, Any]:
    """The run whose `key` is the median (the lower one of an even count): its
    latencies and counters stay consistent with its throughput."""
    if not runs:
        raise ValueError("no runs")
    ordered = sorted(runs, key=lambda run: float(run.get(key) or 0.0))
    return ordered[(len(ordered) - 1) // 2]
