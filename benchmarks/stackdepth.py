"""Thespian-path cost vs the host's Python stack depth when the actor system starts.

Thespian forks its admin from inside the caller's stack, and every actor
process (tool, supervisor, Echo) then runs its whole life inside frames it
inherited. CPython 3.11 keeps frames on a stack of 16 KiB chunks and frees a
chunk as soon as the stack drops back below it; if an actor's message loop sits
right at a chunk edge, every message maps and unmaps a chunk (6 to 18
``mmap`` + ``munmap`` per call, measured with ``strace -c``) and costs up to
three times as much CPU. Which processes land on an edge depends only on how
deep the host's stack was at ``ToolSystem.start()`` -- so one layout (say
``python -m benchmarks``) can show the thespian path at 2 ms while a plain
script shows 0.6 ms, for the same code.

This section starts one ``ToolSystem(call_path="thespian")`` per depth offset
(the host recurses ``d`` extra frames before starting it; 10 frames of the
small recursion take about 1 KiB of the frame stack, so offsets 0..190 in steps
of 10 walk across a whole chunk), measures the slow path and a bare ask on
that same actor system, interleaved, and reports the p50s per depth and the
spread. The ratio slow / bare is paired per depth; the median is the verdict.
"""

from __future__ import annotations

import contextlib
import statistics
from collections.abc import Callable
from typing import Any

from benchmarks.roundtrip import TOOL, RoundTripSettings, echo_actor, interleave
from benchmarks.stats import ratio, summarize_ms
from supervisors import Policy, ToolSystem


def _at_depth(d: int, fn: Callable[[], Any]) -> Any:
    """Call ``fn`` from ``d`` extra Python frames down."""
    return fn() if d <= 0 else _at_depth(d - 1, fn)


def _one(settings: RoundTripSettings, log_level: str | None) -> dict[str, float]:
    with contextlib.ExitStack() as stack:
        system = stack.enter_context(ToolSystem(policy=Policy(), log_level=log_level,
                                                call_path="thespian"))
        tool = system.supervise("bench").spawn(TOOL, name="counter")
        ask, _ = stack.enter_context(echo_actor(system))
        raw = interleave({"bare_ask": ask, "slow_path": lambda: tool.call("get")}, settings)
    return {name: summarize_ms(v)["p50_ms"] for name, v in raw.items()}


def run(depths: list[int], samples: int, log_level: str | None = None) -> dict[str, Any]:
    settings = RoundTripSettings(samples=samples, warmup=50, block=25)
    rows = []
    for d in depths:
        p50 = _at_depth(d, lambda: _one(settings, log_level))
        rows.append({"extra_frames": d, "bare_ask_p50_ms": p50["bare_ask"],
                     "slow_path_p50_ms": p50["slow_path"],
                     "ratio_slow_over_bare": ratio(p50["slow_path"], p50["bare_ask"])})
    slow = [r["slow_path_p50_ms"] for r in rows]
    bare = [r["bare_ask_p50_ms"] for r in rows]
    ratios = [r["ratio_slow_over_bare"] for r in rows]
    return {
        "samples_per_depth": samples, "depths": rows,
        "slow_path_p50_ms": {"min": min(slow), "median": statistics.median(slow), "max": max(slow)},
        "bare_ask_p50_ms": {"min": min(bare), "median": statistics.median(bare), "max": max(bare)},
        "ratio_slow_over_bare": {"min": min(ratios), "median": statistics.median(ratios),
                                 "max": max(ratios)},
        "ratio_min_slow_over_min_bare": ratio(min(slow), min(bare)),
        "target": {"slow_over_bare_ask_max": 1.5},
    }
