"""Usage history, a prediction of the next window, adaptive limits and anomaly detection.

- ``History``: a bounded ring of samples per metric (memory stays flat).
- ``Holt``: double exponential smoothing (level + trend); ``predict(h)`` is the
  expected value ``h`` samples ahead.
- ``adapt``: a limit that follows the forecast with headroom but never
  leaves ``[floor, ceiling]`` (the ceiling is the tool's configured limit).
- ``robust_z``: the robust z-score (median and MAD) of the newest sample
  against the window before it; a large one is a spike the quota may miss.
"""

from __future__ import annotations

import itertools
from collections import deque
from statistics import median

ANOMALY_WINDOW = 40    # samples the robust z-score compares against
HISTORY = 2 * ANOMALY_WINDOW  # samples kept per metric (the ring is full after 80 samples)
ANOMALY_Z = 8.0        # |z| above this is an anomaly ...
ANOMALY_MIN_SAMPLES = 20
HEADROOM = 1.5         # adaptive limit = prediction * HEADROOM (clamped)
FLOOR_FRACTION = 0.25  # adaptive limits never go below this share of the configured limit


class Holt:
    """Holt's linear trend method (double exponential smoothing)."""

    def __init__(self, alpha: float = 0.3, beta: float = 0.1) -> None:
        self.alpha = alpha
        self.beta = beta
        self.level: float | None = None
        self.trend = 0.0

    def update(self, x: float) -> None:
        if self.level is None:
            self.level = x
            return
        previous = self.level
        self.level = self.alpha * x + (1 - self.alpha) * (self.level + self.trend)
        self.trend = self.beta * (self.level - previous) + (1 - self.beta) * self.trend

    def predict(self, steps: int = 1) -> float:
        return (self.level or 0.0) + steps * self.trend


class History:
    """The recent samples of one metric, its forecast and its anomaly score."""

    def __init__(self, size: int = HISTORY, min_mad: float = 1.0) -> None:
        self.values: deque[float] = deque(maxlen=size)
        self.holt = Holt()
        self.min_mad = min_mad

    def add(self, x: float) -> float:
        """Record ``x``; return its robust z-score against the window before it."""
        values = self.values
        window = list(itertools.islice(values, max(0, len(values) - ANOMALY_WINDOW), None))
        z = robust_z(x, window, self.min_mad) if len(window) >= ANOMALY_MIN_SAMPLES else 0.0
        self.values.append(x)
        self.holt.update(x)
        return z


def robust_z(x: float, window: list[float], min_mad: float = 1e-6) -> float:
    """0.6745 (x - median) / MAD; ``min_mad`` keeps a flat series from making every
    tiny change look infinite."""
    med = median(window)
    mad = max(median(abs(v - med) for v in window), min_mad)
    return 0.6745 * (x - med) / mad


def adapt(forecast: float, ceiling: float) -> float:
    """The adaptive limit: headroom over the forecast, within [floor, ceiling].

    It follows the smoothed forecast, not the newest sample, so a sudden spike
    meets the limit set before it instead of dragging the limit up with it.
    """
    floor = ceiling * FLOOR_FRACTION
    return round(min(ceiling, max(floor, forecast * HEADROOM)), 2)
