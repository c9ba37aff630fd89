"""Callers (issue 9): a thread per call, and a crowd of idle connections to one tool.

- Thread per call: ``calls`` calls, each made from a new short-lived thread (8 alive
  at once, as a churning thread pool), on the socket path and (fewer) on the Thespian
  path: failed calls, descriptors of the host and of the tool before and after, and
  calls per second next to the same calls made from one reused thread.
- Idle crowd: ``idle`` connections opened to one tool's socket and left idle: the
  tool's memory (USS) before and after, its ``callers`` and ``open_files`` figures,
  and the latency of an active caller with and without the crowd; it must keep serving
  (no restart, no failed call).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from typing import Any

from benchmarks.stats import summarize_ms
from examples.counter import Counter
from supervisors import ToolSystem

WIDTH = 8  # threads alive at once in the thread-per-call run


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _uss_mb(pid: int) -> float:
    total = 0
    with open(f"/proc/{pid}/smaps_rollup", "rb") as f:
        for line in f:
            if line.startswith((b"Private_Clean:", b"Private_Dirty:")):
                total += int(line.split()[1]) * 1024
    return round(total / 2**20, 2)


def _per_thread(n: int, fn: Any) -> tuple[float, int]:
    """Run ``fn`` ``n`` times, each in a new thread; (seconds, failures)."""
    failed = [0]

    def one() -> None:
        try:
            fn()
        except Exception:
            failed[0] += 1

    started = time.perf_counter()
    done = 0
    while done < n:
        batch = [threading.Thread(target=one) for _ in range(min(WIDTH, n - done))]
        for th in batch:
            th.start()
        for th in batch:
            th.join()
        done += len(batch)
    return time.perf_counter() - started, failed[0]


def _reused(n: int, fn: Any) -> float:
    started = time.perf_counter()
    for _ in range(n):
        fn()
    return time.perf_counter() - started


def thread_per_call(path: str, calls: int, level: str) -> dict[str, Any]:
    with ToolSystem(call_path=path, log_level=level) as system:
        t = system.spawn(Counter, name="c")
        t.call("add")
        pid = t.status().pid
        _per_thread(2 * WIDTH, lambda: t.call("add"))  # fill the pools
        host0, tool0 = _fds(os.getpid()), _fds(pid)
        seconds, failed = _per_thread(calls, lambda: t.call("add"))
        deadline = time.monotonic() + 5
        while _fds(pid) > tool0 and time.monotonic() < deadline:
            time.sleep(0.05)  # the tool closes hung-up peers on its next turn
        host1, tool1 = _fds(os.getpid()), _fds(pid)
        reused = _reused(calls, lambda: t.call("add"))
        return {"calls": calls, "failed": failed, "host_fds_before": host0, "host_fds_after": host1,
                "tool_fds_before": tool0, "tool_fds_after": tool1,
                "thread_per_call_calls_per_s": round(calls / seconds, 1),
                "reused_thread_calls_per_s": round(calls / reused, 1)}


def idle_crowd(idle: int, samples: int, level: str) -> dict[str, Any]:
    with ToolSystem(call_path="socket", log_level=level, sample_every=0.25) as system:
        t = system.spawn(Counter, name="c", max_callers=idle + 64)
        t.call("add")
        pid = t.status().pid
        address = system._routes["c"].socket

        def latencies() -> dict[str, Any]:
            out = []
            for _ in range(samples):
                s = time.perf_counter()
                t.call("add")
                out.append(time.perf_counter() - s)
            return summarize_ms(out)

        before = latencies()
        uss0 = _uss_mb(pid)
        crowd = []
        try:
            for _ in range(idle):
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.connect(address)
                crowd.append(s)
            t.call("add")  # one turn of its loop accepts them
            deadline = time.monotonic() + 10
            usage: dict[str, Any] = {}
            while time.monotonic() < deadline:
                usage = t.status().usage
                if (usage.get("callers") or 0) >= idle:
                    break
                time.sleep(0.1)
            uss1 = _uss_mb(pid)
            during = latencies()
            st = t.status()
            return {"idle_callers": idle, "callers_counted": usage.get("callers"),
                    "open_files_counted": usage.get("open_files"),
                    "tool_uss_before_mb": uss0, "tool_uss_with_crowd_mb": uss1,
                    "uss_per_idle_caller_bytes": round((uss1 - uss0) * 2**20 / idle),
                    "latency_alone": before, "latency_with_crowd": during,
                    "state": st.state.value, "restarts": st.restarts}
        finally:
            for s in crowd:
                s.close()


def run(calls: int, thespian_calls: int, idle: int, samples: int, level: str) -> dict[str, Any]:
    return {"socket": thread_per_call("socket", calls, level),
            "thespian": thread_per_call("thespian", thespian_calls, level),
            "idle": idle_crowd(idle, samples, level),
            "target": {"failed_calls": 0, "fd_growth_max": 16}}
