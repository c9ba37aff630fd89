"""Resource accounting (issue 4): sweep overhead, breach-to-action latency, accountant memory.

- ``overhead``: 100 Counter tools under one supervisor; sweeps forced with
  ``system.accounting_stats(sweep_now=True)``; the accountant's own timing of
  each sweep (``last_sweep_ms``), p50 and max, and per tool. Measured right
  after the spawn (short usage histories) and again after the memory run, when
  every tool's history is full: the steady state, which is the verdict.
- ``memory``: on that same system, the accountant's RSS
  (``accounting_stats()["rss_mb"]``) and USS read every second or so for
  ``duration`` seconds; start, end, growth and the least-squares slope, and the
  growth once its bounded usage history (600 samples per metric) is full.
- ``breach``: a ``Leaky`` tool with ``limits={"memory_mb": 60}``,
  ``on_limit="restart"`` is made to hold 80 MiB; the time from the ``leak`` call
  returning to ``status().restarts`` going up, in sampling periods (the
  ``ToolSystem(sample_every=...)`` cadence). Also kept: the same from the call's
  start (the leak takes ~50 ms, and a sweep may catch it half-way), and when the
  "limit exceeded" event came relative to the call's return (negative: before).
"""

from __future__ import annotations

import random
import statistics
import time
from typing import Any

from benchmarks.memory import footprint
from benchmarks.stats import slope_per_minute, summarize_ms
from supervisors import Backoff, Policy, SupervisorHandle, ToolState, ToolSystem
from supervisors.resources.accountant import ANOMALY_MIN_DELTA
from supervisors.resources.adaptive import HISTORY

TOOL = "examples.counter:Counter"
LEAKY = "benchmarks.tools:Leaky"
TARGETS = {"ms_per_tool_max": 0.2, "sweep_100_tools_ms_max": 20.0, "breach_periods_max": 2.0,
           "memory_growth_mib_max": 1.0}
RESTARTS = Policy(max_restarts=1000, period=60.0, backoff=Backoff.none())


def _wait(pred: Any, timeout: float, what: str, poll: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(poll)
    raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")


def _spawn_fleet(sup: SupervisorHandle, tools: int) -> dict[str, Any]:
    """Spawn ``tools`` Counters with default options; on failure, again with on_limit='alert'."""
    t0 = time.perf_counter()
    options: dict[str, Any] = {}
    failure = None
    i = 0
    while i < tools:
        try:
            sup.spawn(TOOL, name=f"t{i:04d}", **options)
            i += 1
        except Exception as exc:
            if options:
                raise
            failure = {"failed_at_tool": i, "error": f"{type(exc).__name__}: {exc}"[:300]}
            options = {"on_limit": "alert"}  # the failed tool is not kept: spawn it again
    return {"tools": tools, "spawn_s": round(time.perf_counter() - t0, 3), "spawn_options": options,
            "with_defaults": failure}


def _forced(system: ToolSystem, sweeps: int) -> dict[str, Any]:
    """Force ``sweeps`` sweeps; the accountant's own timing of each, and the host's request time."""
    ms: list[float] = []
    asked: list[float] = []
    counted: list[int] = []
    for _ in range(sweeps):
        t0 = time.perf_counter()
        st = system.accounting_stats(sweep_now=True)
        asked.append(time.perf_counter() - t0)
        ms.append(st["last_sweep_ms"])
        counted.append(st["last_sweep_tools"])
        time.sleep(0.02)
    n = max(1, min(counted))
    return {"tools_swept": min(counted), "forced_sweeps": sweeps,
            "sweep_ms": summarize_ms([m / 1000.0 for m in ms]),
            "ms_per_tool_p50": round(statistics.median(ms) / n, 4),
            "ms_per_tool_max": round(max(ms) / n, 4),
            "host_request_ms": summarize_ms(asked)}


def _overhead(system: ToolSystem, tools: int, sweeps: int) -> dict[str, Any]:
    _wait(lambda: system.accounting_stats()["tracked"] >= tools, 30, f"{tools} tools tracked")
    system.accounting_stats(sweep_now=True)  # the first sweep reads every tool's USS exactly
    out = _forced(system, sweeps)
    background = system.accounting_stats()
    out["background"] = {k: background.get(k) for k in ("sweeps", "mean_sweep_ms", "max_sweep_ms",
                                                        "ms_per_tool", "cadence")}
    return out


def _ring(tools: int) -> dict[str, Any]:
    """How much the accountant's bounded usage history holds when full (Python floats in deques)."""
    metrics = len(ANOMALY_MIN_DELTA)
    per_sample = 32  # a float object (24 B) plus its deque slot (8 B)
    return {"samples_per_metric": HISTORY, "metrics": metrics, "tools": tools,
            "full_mib_about": round(HISTORY * metrics * tools * per_sample / 2**20, 1)}


def _memory(system: ToolSystem, tools: int, duration: float, every: float) -> dict[str, Any]:
    """The accountant's RSS (its own figure) and USS (psutil, from here) over ``duration`` s.

    The usage history is a ring of ``HISTORY`` samples per metric per tool, so the
    accountant grows until the ring is full and is flat after that; growth is
    judged after the ring-full time (``HISTORY`` x the measured sweep period).
    """
    points: list[tuple[float, float]] = []
    uss: list[tuple[float, float]] = []
    t0 = time.monotonic()
    while True:
        now = time.monotonic() - t0
        st = system.accounting_stats()
        points.append((round(now, 2), st["rss_mb"]))
        uss.append((round(now, 2), footprint(st["pid"]).get("uss_mib", float("nan"))))
        if now >= duration:
            break
        time.sleep(min(every, max(0.0, duration - now)))
    last = system.accounting_stats()
    period = last["cadence"] + last["mean_sweep_ms"] / 1000.0  # the next sweep is armed after one ends
    full_at = HISTORY * period  # from this run's start: every tool was tracked before it began
    after = [p for p in points if p[0] >= full_at + 2 * every]
    growth_after = round(after[-1][1] - after[0][1], 2) if len(after) > 1 else None
    rss = [v for _, v in points]
    return {"duration_s": duration, "readings": len(points), "cadence_s": last["cadence"],
            "sweep_period_s": round(period, 4), "sweeps_during_run_about": round(duration / period),
            "history_ring": {**_ring(tools), "full_after_s_about": round(full_at, 1)},
            "rss_mb_start": rss[0], "rss_mb_end": rss[-1], "rss_mb_max": max(rss),
            "growth_mib": round(rss[-1] - rss[0], 2),
            "slope_mib_per_min": round(slope_per_minute(points), 4),
            "after_ring_full": {"readings": len(after),
                                "growth_mib": growth_after,
                                "slope_mib_per_min": round(slope_per_minute(after), 4)},
            "uss_mib_start": uss[0][1], "uss_mib_end": uss[-1][1],
            "uss_growth_mib": round(uss[-1][1] - uss[0][1], 2),
            "series_rss": points, "series_uss": uss}


def fleet(tools: int, sweeps: int, duration: float, cadence: float,
          log_level: str | None = None) -> dict[str, Any]:
    """Overhead and accountant memory on one system with ``tools`` Counter tools."""
    with ToolSystem(policy=Policy(), log_level=log_level, sample_every=cadence) as system:
        spawned = _spawn_fleet(system.supervise("fleet"), tools)
        overhead = _overhead(system, tools, sweeps)
        memory = _memory(system, tools, duration, every=max(1.0, duration / 90))
        later = _forced(system, sweeps)  # the same, with each tool's usage history as full as it got
        t_exit = time.perf_counter()
    return {"spawn": spawned, "overhead": overhead, "memory": memory, "overhead_after_memory_run": later,
            "shutdown_s": round(time.perf_counter() - t_exit, 3)}


def _one_breach(system: ToolSystem, tool: Any, period: float) -> dict[str, float]:
    time.sleep(random.uniform(0.0, period))  # land anywhere in the sweep cycle
    before = tool.status().restarts
    t_call, wall_call = time.perf_counter(), time.time()
    tool.call("leak", mb=80, timeout=30)
    t_ret, wall_ret = time.perf_counter(), time.time()
    _wait(lambda: tool.status().restarts > before, 20 * period + 10, "the restart", poll=0.005)
    t_seen = time.perf_counter()
    found = [e["time"] for e in system.events(since=wall_call - 1.0)
             if e["path"] == "leaky" and e["event"] == "limit exceeded" and e["time"] >= wall_call]
    _wait(lambda: tool.status().state is ToolState.RUNNING and tool.status().usage.get("sampled_at"), 30,
          "re-sampled")
    return {"total_s": t_seen - t_ret, "from_call_start_s": t_seen - t_call,
            "leak_call_s": t_ret - t_call,
            "detect_after_return_s": (min(found) - wall_ret) if found else float("nan")}


def breach(period: float, repeats: int, log_level: str | None = None) -> dict[str, Any]:
    """Breach-to-restart latency at a sampling period of ``period`` seconds."""
    with ToolSystem(policy=RESTARTS, log_level=log_level, sample_every=period) as system:
        tool = system.spawn(LEAKY, name="leaky", limits={"memory_mb": 60}, on_limit="restart")
        _wait(lambda: tool.status().usage.get("sampled_at"), 10 + 5 * period, "the first sample")
        runs = [_one_breach(system, tool, period) for _ in range(repeats)]
        last_error = tool.status().last_error
    total = [r["total_s"] for r in runs]
    return {"period_s": period, "repeats": repeats, "limit_mb": 60, "leak_mb": 80,
            "breach_to_restart": summarize_ms(total),
            "call_start_to_restart": summarize_ms([r["from_call_start_s"] for r in runs]),
            "leak_call": summarize_ms([r["leak_call_s"] for r in runs]),
            "detection_after_return_s": [round(r["detect_after_return_s"], 4) for r in runs],
            "periods_p50": round(statistics.median(total) / period, 3),
            "periods_max": round(max(total) / period, 3),
            "last_error": (last_error or "")[:200]}


def run(tools: int, sweeps: int, duration: float, cadence: float, periods: list[float],
        repeats: int, log_level: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"fleet": fleet(tools, sweeps, duration, cadence, log_level)}
    out["breach"] = [breach(p, repeats, log_level) for p in periods]
    out["target"] = dict(TARGETS)
    return out
