"""Summaries of timing samples: nearest-rank percentiles, mean, min and max, in milliseconds."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any


def median_of(figures: Sequence[dict[str, Any]], key: str) -> float | None:
    """The median of ``key`` over the figures that have it (2 decimals); None if none do."""
    values = [f[key] for f in figures if key in f]
    return round(statistics.median(values), 2) if values else None


def percentile(sorted_values: Sequence[float], pct: float) -> float:
    """The nearest-rank ``pct`` percentile of already sorted values (0 < pct <= 100)."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(pct / 100.0 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def summarize_ms(seconds: Sequence[float]) -> dict[str, float | int]:
    """p50, p90, p99, p99.9, mean, stdev, min and max of ``seconds``, converted to milliseconds."""
    ms = sorted(s * 1000.0 for s in seconds)
    if not ms:
        return {"n": 0}
    return {
        "n": len(ms),
        "p50_ms": round(percentile(ms, 50), 4),
        "p90_ms": round(percentile(ms, 90), 4),
        "p99_ms": round(percentile(ms, 99), 4),
        "p999_ms": round(percentile(ms, 99.9), 4),
        "mean_ms": round(statistics.fmean(ms), 4),
        "stdev_ms": round(statistics.stdev(ms), 4) if len(ms) > 1 else 0.0,
        "min_ms": round(ms[0], 4),
        "max_ms": round(ms[-1], 4),
    }


def ratio(a: float, b: float) -> float:
    """``a / b`` rounded for reporting (NaN when ``b`` is zero or missing)."""
    if not b or math.isnan(b):
        return math.nan
    return round(a / b, 3)


def slope_per_minute(points: Sequence[tuple[float, float]]) -> float:
    """Least-squares slope of ``(seconds, value)`` points, in value units per minute (NaN if < 2)."""
    if len(points) < 2:
        return math.nan
    xs = [x for x, _ in points]
    ys = [y for _, y in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    var = sum((x - mx) ** 2 for x in xs)
    if not var:
        return math.nan
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var * 60.0
