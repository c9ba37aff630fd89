"""Usage history, a prediction of the next window, adaptive limits and anomaly detection.

- ``History``: a bounded ring of samples per metric (memory stays flat).
- ``Holt``: double exponential smoothing (level + trend); ``predict(h)`` is the
  expected value ``h`` samples ahead.
- ``adapt``: a limit that follows the prediction with headroom but never
  leaves ``[floor, ceiling]`` (the ceiling is the tool's configured limit).
- ``robust_z``: the robust z-score (median and MAD) of the newest sample
  against the window before it; a large one is a spike the quota may miss.
"""

from __future__ import annotations

from collections import deque
from statistics import median

HISTORY = 600          # samples kept per metric (10 minutes at the default 1 s cadence)
ANOMALY_WINDOW = 60    # samples the robust z-score compares against
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

    def __init__(self, size: int = HISTORY) -> None:
        self.values: deque[float] = deque(maxlen=size)
        self.holt = Holt()

    def add(self, x: float) -> float:
        """Record ``x``; return its robust z-score against the window before it."""
        window = list(self.values)[-ANOMALY_WINDOW:]
        z = robust_z(x, window) if len(window) >= ANOMALY_MIN_SAMPLES else 0.0
        self.values.append(x)
        self.holt.update(x)
        return z


def robust_z(x: float, window: list[float]) -> float:
    med = median(window)
    mad = median(abs(v - med) for v in window)
    if mad == 0:
        spread = max(abs(med) * 0.01, 1e-6)  # a flat series: compare to 1 % of its level
        return (x - med) / spread / 1.4826
    return 0.6745 * (x - med) / mad


def adapt(prediction: float, current: float, ceiling: float) -> float:
    """The adaptive limit: headroom over what is expected, within [floor, ceiling]."""
    floor = ceiling * FLOOR_FRACTION
    wanted = max(prediction, current) * HEADROOM
    return round(min(ceiling, max(floor, wanted)), 2)
