"""Restart time: SIGKILL a tool's process and time the next successful call.

With ``Policy(backoff=Backoff.none())`` and a large restart intensity, each
repetition reads the tool's pid, SIGKILLs it, polls ``pid_alive`` until the
process is gone (a zombie counts as gone), then calls ``get``. Two figures per
repetition: from the confirmed death to the call's return (the call is made
right after the death is seen), and from the kill itself.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

from benchmarks.stats import summarize_ms
from supervisors import Backoff, Policy, ToolSystem
from supervisors.processes.procs import pid_alive

TOOL = "examples.counter:Counter"
TARGET_P50_MS = 50.0
POLL_S = 0.0002
CALL_TIMEOUT_S = 30.0


def _wait_dead(pid: int, limit: float = 10.0) -> float:
    """Poll until ``pid`` is gone; return the perf_counter time when that was seen."""
    deadline = time.perf_counter() + limit
    while pid_alive(pid):
        if time.perf_counter() > deadline:
            raise RuntimeError(f"pid {pid} still alive {limit}s after SIGKILL")
        time.sleep(POLL_S)
    return time.perf_counter()


def run(repeats: int = 30, log_level: str | None = None) -> dict[str, Any]:
    policy = Policy(max_restarts=max(1000, repeats * 10), period=1.0, backoff=Backoff.none())
    from_dead: list[float] = []
    from_kill: list[float] = []
    to_dead: list[float] = []
    same_pid = 0
    with ToolSystem(policy=policy, log_level=log_level) as system:
        tool = system.supervise("restarts", policy=policy).spawn(TOOL, name="victim",
                                                                 config={"start": 7})
        tool.call("get")
        for _ in range(repeats):
            pid = tool.status().pid
            if pid is None:
                raise RuntimeError("the tool has no pid")
            t_kill = time.perf_counter()
            os.kill(pid, signal.SIGKILL)
            t_dead = _wait_dead(pid)
            tool.call("get", timeout=CALL_TIMEOUT_S)
            t_ok = time.perf_counter()
            from_dead.append(t_ok - t_dead)
            from_kill.append(t_ok - t_kill)
            to_dead.append(t_dead - t_kill)
            if tool.status().pid == pid:
                same_pid += 1
            tool.call("get")  # one more warm call, so every repetition starts alike
        restarts = tool.status().restarts
    return {
        "repeats": repeats,
        "restarts_counted": restarts,
        "pid_unchanged_after_restart": same_pid,
        "from_dead": summarize_ms(from_dead),
        "from_kill": summarize_ms(from_kill),
        "kill_to_dead": summarize_ms(to_dead),
        "policy": policy.to_dict(),
        "target": {"from_dead_p50_ms_max": TARGET_P50_MS},
    }
