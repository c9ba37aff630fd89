"""Work history: how busy each tool is, how many calls it finishes, how many wait.

Each tool keeps cumulative work counters in its busy marker's shared file
(``actors.busy``: busy time, calls finished, calls waiting). The accountant reads
them at every sweep, and whenever an autoscaler asks for fresh figures, and keeps
per tool instance a bounded history of ``WorkPoint``: the busy fraction over the
span since the previous reading (Δbusy/Δt, 0..1), the call rate (Δcalls/Δt) and the
queue depth seen at the reading. A reading costs one ``open``, one ``pread`` and
one ``close`` (a few microseconds): no message to the tool.
"""

from __future__ import annotations

import os
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from actors.busy import read_counters

#: Readings kept per instance: two minutes at the default 1 s cadence, more when an
#: autoscaler asks for fresh figures more often.
POINTS = 240
#: A reading closer than this (seconds) to the previous one is not taken: its
#: fractions would be mostly noise.
MIN_SPAN = 0.05


@dataclass(frozen=True)
class WorkPoint:
    """One reading: ``time`` (``time.time()``), ``span`` (seconds since the previous
    reading), ``busy_fraction`` over that span, ``call_rate`` (calls/s) and ``queue``."""

    time: float
    span: float
    busy_fraction: float
    call_rate: float
    queue: int

    def to_dict(self) -> dict[str, Any]:
        return {"time": self.time, "span": round(self.span, 4),
                "busy_fraction": round(self.busy_fraction, 4), "call_rate": round(self.call_rate, 2),
                "queue": self.queue}


class WorkHistory:
    """The work counters of one tool instance, read on demand, and their history."""

    def __init__(self, marker: str) -> None:
        self.marker = marker
        self.points: deque[WorkPoint] = deque(maxlen=POINTS)
        self.last: tuple[int, float, int] | None = None  # (monotonic ns, busy s, calls) at the last reading
        self.busy = 0.0
        self.calls = 0

    def read(self, now_ns: int | None = None) -> WorkPoint | None:
        """Take a reading (if the last one is at least ``MIN_SPAN`` old); the new point or None."""
        if not self.marker:
            return None
        now_ns = now_ns if now_ns is not None else time.monotonic_ns()
        if self.last is not None and now_ns - self.last[0] < MIN_SPAN * 1e9:
            return None
        try:
            fd = os.open(self.marker, os.O_RDONLY)
        except OSError:
            return None
        try:
            got = read_counters(fd)
        finally:
            os.close(fd)
        if got is None:
            return None
        busy, calls, waiting = got
        busy = max(busy, self.busy)  # counters only grow (a torn read may dip)
        calls = max(calls, self.calls)
        last, self.last = self.last, (now_ns, busy, calls)
        self.busy, self.calls = busy, calls
        if last is None:
            return None
        span = (now_ns - last[0]) / 1e9
        point = WorkPoint(time.time(), span, min(1.0, (busy - last[1]) / span),
                          (calls - last[2]) / span, int(waiting))
        self.points.append(point)
        return point

    def latest(self) -> dict[str, Any]:
        """The newest figures, for ``usage``: None each before the second reading."""
        p = self.points[-1] if self.points else None
        return {"busy_fraction": round(p.busy_fraction, 4) if p else None,
                "call_rate": round(p.call_rate, 2) if p else None,
                "queue": p.queue if p else None}

    def report(self, since: float = 0.0) -> dict[str, Any]:
        """The history (points newer than ``since``) and the totals, as plain data."""
        return {**self.latest(), "busy_seconds": round(self.busy, 6), "calls": self.calls,
                "points": [p.to_dict() for p in self.points if p.time > since]}


#: The figures ``usage`` gains from the work history.
WORK_FIGURES = ("busy_fraction", "call_rate", "queue")
