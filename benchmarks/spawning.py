"""Spawn time: N tools started one after another under one supervisor.

Also measured on that same tree, for reference: the memory of one idle tool
process and of its supervisor (USS via psutil), the mean USS over all the
tools, and how long leaving the ``with ToolSystem()`` block takes with N
tools running.

The tools are spawned with default options first. If that fails part way (a
tool that cannot start, a supervisor that gives up), the failure is recorded
and, so that a spawn time can still be given, the run is repeated with
``on_limit="alert"`` (resource limits only alert). The table then shows the
target as missed with the defaults.
"""

from __future__ import annotations

import inspect
import statistics
import time
from typing import Any

from benchmarks.memory import footprint
from benchmarks.stats import summarize_ms
from supervisors import Policy, SupervisorHandle, ToolSystem

TOOL = "examples.counter:Counter"
TARGET_TOTAL_S = 10.0
TARGET_TOOLS = 100
FALLBACK_OPTIONS = {"on_limit": "alert"}


def _deciles(seconds: list[float]) -> list[float]:
    """Mean spawn time (ms) of each tenth of the tools, in spawn order: shows growth with N."""
    n = len(seconds)
    parts = [seconds[i * n // 10:(i + 1) * n // 10] for i in range(10)] if n >= 10 else [seconds]
    return [round(statistics.fmean(p) * 1000.0, 2) for p in parts if p]


def _memory(system: ToolSystem, sup: SupervisorHandle) -> dict[str, Any]:
    children = sup.children()
    time.sleep(0.5)  # let the last tool settle before reading its memory
    tool_uss = [f["uss_mib"] for f in (footprint(c.pid) for c in children) if "uss_mib" in f]
    return {
        "idle_tool": footprint(children[0].pid) if children else {"error": "no tools"},
        "supervisor": footprint(sup.status().pid),
        "root_supervisor": footprint(system.root.status().pid),
        "tools_mean_uss_mib": round(statistics.fmean(tool_uss), 2) if tool_uss else None,
        "tools_total_uss_mib": round(sum(tool_uss), 2) if tool_uss else None,
        "measured_with_tools_running": len(tool_uss),
    }


def _attempt(tools: int, log_level: str | None, options: dict[str, Any]) -> dict[str, Any]:
    per_tool: list[float] = []
    t_enter = time.perf_counter()
    with ToolSystem(policy=Policy(), log_level=log_level) as system:
        t_started = time.perf_counter()
        sup = system.supervise("fleet")
        t0 = time.perf_counter()
        for i in range(tools):
            ts = time.perf_counter()
            try:
                sup.spawn(TOOL, name=f"t{i:04d}", **options)
            except Exception as exc:
                return {"error": f"{type(exc).__name__}: {exc}", "failed_at_tool": i,
                        "seconds_until_failure": round(time.perf_counter() - t0, 3)}
            per_tool.append(time.perf_counter() - ts)
        total = time.perf_counter() - t0
        running = sum(1 for c in sup.children() if c.state.value == "running")
        memory = _memory(system, sup)
        t_exit = time.perf_counter()
    t_done = time.perf_counter()
    return {
        "tools": tools,
        "spawn_options": options,
        "running_after_spawn": running,
        "total_s": round(total, 3),
        "per_tool": summarize_ms(per_tool),
        "per_tool_mean_ms": round(total / max(1, tools) * 1000.0, 3),
        "per_decile_mean_ms": _deciles(per_tool),
        "system_start_s": round(t_started - t_enter, 3),
        "shutdown_with_tools_s": round(t_done - t_exit, 3),
        "memory": memory,
    }


def run(tools: int = TARGET_TOOLS, log_level: str | None = None) -> dict[str, Any]:
    result = _attempt(tools, log_level, {})
    if "error" in result:
        failure = result
        accepted = inspect.signature(SupervisorHandle.spawn).parameters
        if all(k in accepted for k in FALLBACK_OPTIONS):
            result = _attempt(tools, log_level, dict(FALLBACK_OPTIONS))
        result["with_defaults"] = failure
    result["target"] = {"tools": TARGET_TOOLS, "total_s_max": TARGET_TOTAL_S}
    return result
