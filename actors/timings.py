"""Command timings kept inside a tool's process and shipped to the host in batches.

The runner times every command it runs (``record``); the host's metrics
aggregator asks for what piled up with the reserved command ``TIMINGS_COMMAND``,
which the runner answers in any state without running user code (``drain``
hands over the figures and starts a new batch). Recording costs two clock reads
and a few list updates per command.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Any

#: The reserved command name the host's aggregator sends to collect a batch.
TIMINGS_COMMAND = "__toolvisor_timings__"
#: Upper bounds (seconds) of the histogram buckets; a last bucket catches the rest.
BUCKETS: tuple[float, ...] = (0.0001, 0.00025, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0,
                              5.0, 30.0)


class CommandTimings:
    """Per command: count, sum of seconds, errors, and counts per bucket (not cumulative).

    ``record`` only appends to a list (the cheap part, on the call path); the list is
    folded into the per-command figures at ``drain`` (or when it grows past ``FOLD_AT``).
    """

    __slots__ = ("stats", "pending")
    FOLD_AT = 50_000

    def __init__(self) -> None:
        self.stats: dict[str, list[Any]] = {}
        self.pending: list[tuple[str, float, bool]] = []

    def record(self, command: str, seconds: float, ok: bool) -> None:
        pending = self.pending
        pending.append((command, seconds, ok))
        if len(pending) >= self.FOLD_AT:
            self._fold()

    def _fold(self) -> None:
        stats = self.stats
        for command, seconds, ok in self.pending:
            entry = stats.get(command)
            if entry is None:
                entry = stats[command] = [0, 0.0, 0, [0] * (len(BUCKETS) + 1)]
            entry[0] += 1
            entry[1] += seconds
            if not ok:
                entry[2] += 1
            entry[3][bisect_left(BUCKETS, seconds)] += 1
        self.pending = []

    def drain(self) -> dict[str, dict[str, Any]]:
        """What was recorded since the last drain, as plain data; starts a new batch."""
        self._fold()
        out = {cmd: {"count": e[0], "sum": e[1], "errors": e[2], "buckets": e[3]}
               for cmd, e in self.stats.items()}
        self.stats = {}
        return out
