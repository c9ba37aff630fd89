"""How fast the machine's CPU runs, traced while a benchmark runs (issue 10's spawn jump).

On this VM the CPU time of a fixed Python loop varies by up to 1.8 x from minute to
minute, with nothing of ours changing and no steal reported: the host gives the CPU to
others, or runs it slower. A step of a benchmark that takes twice as long may be the
machine, not the code. ``SpeedTrace`` runs ``machine.cpu_probe`` in a separate process
at ``nice`` 19 (it takes only CPU nobody else wants, and measures CPU time, so waiting
for the CPU does not count) every ``every`` seconds, and ``median_between(a, b)`` gives
its median over a stretch of the run (wall clock, ``time.time()``).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
from typing import Any

_CHILD = """
import os, sys, time
os.nice(19)
from benchmarks.machine import cpu_probe
out = open(sys.argv[1], "w", buffering=1)
every = float(sys.argv[2])
for _ in range(8):  # (the loop's first runs are slower: the interpreter specialises it)
    cpu_probe(rounds=1, work=10_000)
while True:
    out.write(f"{time.time():.3f} {cpu_probe(rounds=1, work=10_000)}\\n")
    time.sleep(every)
"""


class SpeedTrace:
    """``with SpeedTrace() as trace: ...``; then ``trace.median_between(a, b)``."""

    def __init__(self, every: float = 0.05) -> None:
        self.every = every
        self.samples: list[tuple[float, float]] = []
        self.path = ""  # the probe's file while it runs (one "time ms" line per sample)
        self._proc: subprocess.Popen[bytes] | None = None
        self._dir: tempfile.TemporaryDirectory[str] | None = None

    def __enter__(self) -> SpeedTrace:
        self._dir = tempfile.TemporaryDirectory(prefix="toolvisor-speed-")
        self.path = os.path.join(self._dir.name, "trace")
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
        self._proc = subprocess.Popen([sys.executable, "-c", _CHILD, self.path, str(self.every)],
                                      env=env, stdin=subprocess.DEVNULL)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
        try:
            with open(self.path) as f:
                for line in f:
                    t, ms = line.split()
                    self.samples.append((float(t), float(ms)))
        except (OSError, ValueError):
            pass
        if self._dir is not None:
            self._dir.cleanup()

    def median_between(self, start: float, end: float) -> float | None:
        """The probe's median CPU time (ms) between two wall-clock instants (after ``with``)."""
        inside = [ms for t, ms in self.samples if start <= t < end]
        return round(statistics.median(inside), 3) if inside else None
