"""ToolSystem start and shutdown time (an empty tree: root supervisor, reaper, actor system)."""

from __future__ import annotations

import time
from typing import Any

from benchmarks.stats import summarize_ms
from supervisors import ToolSystem


def run(repeats: int = 5, log_level: str | None = None) -> dict[str, Any]:
    starts: list[float] = []
    shutdowns: list[float] = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        with ToolSystem(log_level=log_level):
            t1 = time.perf_counter()
            t2 = time.perf_counter()
        t3 = time.perf_counter()
        starts.append(t1 - t0)
        shutdowns.append(t3 - t2)
    return {"repeats": repeats, "start": summarize_ms(starts), "shutdown": summarize_ms(shutdowns)}
