"""The plugin's alert sink: a callable that gets one alert (a dict) and writes it to stderr."""

from __future__ import annotations

import json
import sys
from typing import Any


class StderrSink:
    """An alert sink: ``sink(alert)`` writes the alert as one JSON line to stderr."""

    def __call__(self, alert: dict[str, Any]) -> None:
        print(json.dumps(alert, default=str), file=sys.stderr)
