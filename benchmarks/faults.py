"""Faults the supervisor must never miss (issue 8): four figures.

- **missed deaths**: SIGKILL one tool and at once run a lifecycle operation on a
  sibling (stop+start, start, restart, spawn+remove, pause+resume, in turn); a miss
  is a killed tool that is not running again, with one more restart, within 10 s.
- **hang to replacement**: a tool with ``hang_timeout`` spins in a command; from the
  moment it became busy (its marker's ``since``) to the first call served by a new
  instance. Target: ``hang_timeout`` + one sampling period + a restart (the slowest
  of the same tool's plain restarts, SIGKILL to serving, measured right after).
- **query latency in a restart loop**: a child that fails slowly in ``on_init`` with
  no backoff; ``status``, ``count`` and ``inspect`` on its supervisor meanwhile.
- **host kill during start**: ``tests.subreaper`` kills a host at a sweep of delays
  after ``ToolSystem.start()`` began (SIGKILL and SIGINT) and counts what is alive 5 s
  after the host died.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

from benchmarks.stats import summarize_ms
from supervisors import Backoff, Policy, ToolState, ToolSystem, ToolUnavailable
from supervisors.tree.watchdog import sampling_period

COUNTER = "examples.counter:Counter"
STUCK = "benchmarks.tools:Stuck"
OPS = ("stop", "start", "restart", "spawn", "pause")
SPACING_S = 0.005


def _wait(pred: Any, limit: float) -> bool:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.005)
    return False


def missed_deaths(tries: int, log_level: str | None) -> dict[str, Any]:
    policy = Policy(max_restarts=tries * 10, period=1.0, backoff=Backoff.none())
    misses: list[dict[str, Any]] = []
    per_op = {op: 0 for op in OPS}
    t0 = time.perf_counter()
    with ToolSystem(policy=policy, log_level=log_level) as system:
        w = system.supervise("w", policy)
        a = w.spawn(STUCK, name="a")
        b = w.spawn(STUCK, name="b")
        for i in range(tries):
            op = OPS[i % len(OPS)]
            per_op[op] += 1
            before = a.status().restarts
            pid = a.call("pid", timeout=10)
            if op == "start":
                b.stop()
            os.kill(pid, signal.SIGKILL)
            if op == "stop":
                b.stop()
                b.start()
            elif op == "start":
                b.start()
            elif op == "restart":
                b.restart()
            elif op == "spawn":
                w.spawn(COUNTER, name=f"x{i}")
                w.remove(f"x{i}")
            else:
                b.pause()
                b.resume()
            ok = _wait(lambda before=before: (lambda s: s.restarts == before + 1
                                              and s.state is ToolState.RUNNING)(a.status()), 10.0)
            if not ok:
                misses.append({"try": i, "op": op, "status": str(a.status())})
                a.restart()
    return {"tries": tries, "per_op": per_op, "missed": len(misses), "misses": misses[:10],
            "seconds": round(time.perf_counter() - t0, 1), "target_missed": 0}


def hang_to_replacement(repeats: int, hang_timeout: float, log_level: str | None) -> dict[str, Any]:
    times: list[float] = []
    policy = Policy(max_restarts=1000, period=60.0, backoff=Backoff.none())
    with ToolSystem(policy=policy, log_level=log_level) as system:
        t = system.spawn(STUCK, name="stuck", hang_timeout=hang_timeout)
        for _ in range(repeats):
            pid = t.call("pid", timeout=30)
            threading.Thread(target=lambda: _swallow(t), daemon=True).start()
            busy = None
            while busy is None:
                busy = t.status().busy
                time.sleep(0.002)
            while True:
                try:
                    if t.call("pid", timeout=30) != pid:
                        break
                except ToolUnavailable:
                    pass
            times.append(time.time() - busy["since"])
        restart: list[float] = []  # the same tool's plain restart: SIGKILL to serving
        for _ in range(repeats):
            pid = t.call("pid", timeout=30)
            t0 = time.time()
            os.kill(pid, signal.SIGKILL)
            while True:
                try:
                    if t.call("pid", timeout=30) != pid:
                        break
                except ToolUnavailable:
                    pass
            restart.append(time.time() - t0)
    period = sampling_period(hang_timeout)
    return {"repeats": repeats, "hang_timeout_s": hang_timeout, "sampling_period_s": period,
            "hang_to_serving": summarize_ms(times), "kill_to_serving": summarize_ms(restart),
            "target_ms": round((hang_timeout + period + max(restart)) * 1000, 1)}


def _swallow(t: Any) -> None:
    try:
        t.call("spin", timeout=120)
    except ToolUnavailable:
        pass


def query_latency(queries: int, log_level: str | None) -> dict[str, Any]:
    lat: dict[str, list[float]] = {"status": [], "count": [], "inspect": []}
    with tempfile.TemporaryDirectory() as tmp, ToolSystem(log_level=log_level) as system:
        w = system.supervise("w", Policy(max_restarts=100_000, period=60.0, backoff=Backoff.none()))
        w.spawn(COUNTER, name="other")
        loop = w.spawn(STUCK, name="loop", config={"marker": f"{tmp}/m", "sleep": 0.5})
        os.kill(loop.call("pid"), signal.SIGKILL)
        time.sleep(0.2)
        for i in range(queries):
            kind = ("status", "count", "inspect")[i % 3]
            t0 = time.perf_counter()
            if kind == "status":
                system._request("w", "status", {"name": "loop"}, 5.0)
            elif kind == "count":
                w.count(timeout=5.0)
            else:
                system._request("w", "inspect", {}, 5.0)
            lat[kind].append(time.perf_counter() - t0)
            time.sleep(SPACING_S)  # spread the queries over several steps of the loop
        restarts = loop.status().restarts
    every = [x for v in lat.values() for x in v]
    return {"queries": queries, "loop_restarts_meanwhile": restarts, "all": summarize_ms(every),
            **{k: summarize_ms(v) for k, v in lat.items()}, "target_p99_ms": 10.0}


def host_kill_sweep(step_ms: int) -> dict[str, Any]:
    out: dict[str, Any] = {"delays_ms": list(range(0, 301, step_ms)), "leftovers": 0,
                           "runs": 0, "sigint_exit_s_max": 0.0, "details": []}
    for sig in (signal.SIGKILL, signal.SIGINT):
        for delay in out["delays_ms"]:
            done = subprocess.run([sys.executable, "-m", "tests.subreaper", str(int(sig)), str(delay)],
                                  capture_output=True, timeout=60, check=False)
            found = json.loads(done.stdout.decode().strip().splitlines()[-1])
            out["runs"] += 1
            out["leftovers"] += len(found.get("left", []))
            if found.get("left"):
                out["details"].append({"signal": sig.name, "delay_ms": delay, "left": found["left"]})
            if sig == signal.SIGINT:
                out["sigint_exit_s_max"] = max(out["sigint_exit_s_max"], found["host_exit_s"])
    out["target_leftovers"] = 0
    return out


def run(tries: int = 1000, hang_repeats: int = 3, hang_timeout: float = 1.0, queries: int = 600,
        sweep_step_ms: int = 10, log_level: str | None = None) -> dict[str, Any]:
    return {"missed_deaths": missed_deaths(tries, log_level),
            "hang": hang_to_replacement(hang_repeats, hang_timeout, log_level),
            "query_latency": query_latency(queries, log_level),
            "host_kill": host_kill_sweep(sweep_step_ms),
            "loadavg": list(os.getloadavg())}


if __name__ == "__main__":  # python -m benchmarks.faults [TRIES]: the soak on its own
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    print(json.dumps(missed_deaths(n, "WARNING"), indent=1))
