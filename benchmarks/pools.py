"""Pools (issue 10): throughput against pool size, and an autoscaling trace.

``throughput``: closed-loop callers (``callers`` threads, each calling again as soon
as its call returns) for ``seconds`` against one tool and against pools, first with
a command that sleeps 10 ms (I/O-like), then with one that burns 10 ms of CPU.
Ratios are pool / single tool measured in the same run.

``autoscale``: an open-loop load (asyncio, calls started on a schedule whatever
the answers do) that ramps from ``rate_from`` to ``rate_to`` calls/s of the 10 ms
sleep against a pool ``{min=1, max=8, target_busy=0.7}``, holds, then stops; every
half second the trace records the offered rate, the instances and the p99 latency
of the calls started in that half second; after the load it waits for the pool to
return to ``min``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from benchmarks import machine
from benchmarks.stats import percentile
from supervisors import ToolSystem

TOOL = "examples.pool_worker:Fetcher"
#: CPU-bound tools run at 100 % of a core; the standard level's policing would restart them
OPTIONS = {"on_limit": "alert", "limits": {"cpu_percent": 100}}
TARGETS = {"sleep_pool4_over_single_min": 3.5, "cpu_pool2_over_single_min": 1.7,
           "autoscale_p99_over_idle_p99_max": 3.0}


def _closed_loop(handle: Any, command: str, seconds: float, callers: int, work: float) -> float:
    stop = time.perf_counter() + seconds
    counts = [0] * callers

    def caller(i: int) -> None:
        while time.perf_counter() < stop:
            handle.call(command, seconds=work)
            counts[i] += 1

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(callers)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts) / (time.perf_counter() - t0)


def throughput(seconds: float, log_level: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {"loadavg_start": machine.loadavg()}
    with ToolSystem(log_level=log_level, data_dir=False) as system:
        single = system.root.spawn(TOOL, name="single", **OPTIONS)
        sleep: dict[str, float] = {"1": _closed_loop(single, "fetch", seconds, 8, 0.01)}
        for n in (2, 4, 8):
            pool = system.root.spawn(TOOL, name=f"sleep{n}", replicas=n, **OPTIONS)
            sleep[str(n)] = _closed_loop(pool, "fetch", seconds, 2 * n, 0.01)
        cpu: dict[str, float] = {"1": _closed_loop(single, "crunch", seconds, 4, 0.01)}
        pool2 = system.root.spawn(TOOL, name="cpu2", replicas=2, **OPTIONS)
        cpu["2"] = _closed_loop(pool2, "crunch", seconds, 4, 0.01)
    out.update({"sleep_10ms_calls_per_s": {k: round(v, 1) for k, v in sleep.items()},
                "cpu_10ms_calls_per_s": {k: round(v, 1) for k, v in cpu.items()},
                "ratio_sleep_pool4_over_single": round(sleep["4"] / sleep["1"], 2),
                "ratio_cpu_pool2_over_single": round(cpu["2"] / cpu["1"], 2),
                "loadavg_end": machine.loadavg()})
    return out


async def _open_loop(pool: Any, rate_at: Any, seconds: float, trace: list[dict[str, Any]],
                     system: ToolSystem) -> None:
    latencies: list[tuple[float, float]] = []
    tasks: set[asyncio.Task[Any]] = set()
    t0 = time.perf_counter()

    async def one(start: float) -> None:
        try:
            await pool.acall("fetch", seconds=0.01, timeout=30)
            latencies.append((start, time.perf_counter() - start))
        except Exception:  # noqa: BLE001 - counted as a very slow call
            latencies.append((start, 30.0))

    next_call, mark = t0, t0 + 0.5
    while True:
        now = time.perf_counter()
        if now - t0 >= seconds:
            break
        while next_call <= now:
            task = asyncio.get_running_loop().create_task(one(next_call))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            next_call += 1.0 / max(1e-3, rate_at(next_call - t0))
        if now >= mark:
            window = [lat for s, lat in latencies if mark - 0.5 <= s < mark]
            size = len(system.pools.members(pool.path))
            trace.append({"t": round(mark - t0, 2), "offered_per_s": round(rate_at(mark - t0), 1),
                          "instances": size, "calls": len(window),
                          "p99_ms": round(percentile(sorted(window), 99) * 1000, 2) if window else None})
            mark += 0.5
        await asyncio.sleep(min(0.002, max(0.0, next_call - time.perf_counter())))
    if tasks:
        await asyncio.wait(tasks, timeout=30)


def autoscale(rate_from: float, rate_to: float, ramp_s: float, hold_s: float, quiet_s: float,
              log_level: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {"loadavg_start": machine.loadavg()}
    rule = {"min": 1, "max": 8, "target_busy": 0.7, "interval": 0.5, "quiet": quiet_s, "window": 4.0}
    with ToolSystem(log_level=log_level, data_dir=False) as system:
        pool = system.root.spawn(TOOL, name="auto", replicas=rule, **OPTIONS)
        idle: list[float] = []
        for _ in range(200):
            t0 = time.perf_counter()
            pool.call("fetch", seconds=0.01)
            idle.append(time.perf_counter() - t0)
            time.sleep(0.005)
        idle_p99 = percentile(sorted(idle), 99) * 1000

        def rate_at(t: float) -> float:
            if t < ramp_s:
                return rate_from + (rate_to - rate_from) * t / ramp_s
            return rate_to

        trace: list[dict[str, Any]] = []
        asyncio.run(_open_loop(pool, rate_at, ramp_s + hold_s, trace, system))
        t_end = time.perf_counter()
        back = None
        while time.perf_counter() - t_end < quiet_s * 8 + 30:
            if pool.status().replicas == 1:
                back = round(time.perf_counter() - t_end, 1)
                break
            trace.append({"t": round(trace[-1]["t"] + 0.5, 2) if trace else 0, "offered_per_s": 0,
                          "instances": len(system.pools.members(pool.path)), "calls": 0, "p99_ms": None})
            time.sleep(0.5)
        events = [e for e in system.events() if e["path"] == "auto" and e["event"] == "scaled"]
    p99s = [row["p99_ms"] for row in trace if row["p99_ms"] is not None and row["t"] > 2.0]
    out.update({"rule": rule, "idle_p99_ms": round(idle_p99, 2), "trace": trace,
                "worst_p99_ms_while_scaling": max(p99s) if p99s else None,
                "ratio_worst_p99_over_idle_p99": round(max(p99s) / idle_p99, 2) if p99s else None,
                "max_instances": max(row["instances"] for row in trace) if trace else None,
                "back_to_min_after_s": back, "decisions": [e["detail"] for e in events],
                "load": {"from_per_s": rate_from, "to_per_s": rate_to, "ramp_s": ramp_s, "hold_s": hold_s},
                "loadavg_end": machine.loadavg()})
    return out


def run(quick: bool = False, log_level: str | None = None) -> dict[str, Any]:
    return {"throughput": throughput(2.0 if quick else 5.0, log_level),
            "autoscale": autoscale(50, 200 if quick else 500, 8 if quick else 20, 4 if quick else 10,
                                   3.0 if quick else 5.0, log_level),
            "target": dict(TARGETS)}


def plot(result: dict[str, Any], path: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(13, 3.8))
    ax = axes[0]
    tp = result["throughput"]
    sizes = sorted(tp["sleep_10ms_calls_per_s"], key=int)
    ax.plot([int(s) for s in sizes], [tp["sleep_10ms_calls_per_s"][s] for s in sizes], "o-",
            label="sleep 10 ms")
    cpu = sorted(tp["cpu_10ms_calls_per_s"], key=int)
    ax.plot([int(s) for s in cpu], [tp["cpu_10ms_calls_per_s"][s] for s in cpu], "s-", label="CPU 10 ms")
    ax.set_xlabel("instances")
    ax.set_ylabel("calls per second")
    ax.set_title("throughput against pool size")
    ax.legend(fontsize=8)
    trace = result["autoscale"]["trace"]
    ax = axes[1]
    t = [r["t"] for r in trace]
    ax.plot(t, [r["offered_per_s"] for r in trace], "-", label="offered calls/s")
    ax.set_xlabel("seconds")
    ax.set_ylabel("calls/s")
    ax2 = ax.twinx()
    ax2.step(t, [r["instances"] for r in trace], "g-", where="post", label="instances")
    ax2.plot(t, [(r["p99_ms"] or float("nan")) / 10 for r in trace], "r.", label="p99 (10 ms units)")
    ax2.set_ylabel("instances / p99 in 10 ms")
    ax.set_title("autoscaling trace")
    lines = ax.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], fontsize=8, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
