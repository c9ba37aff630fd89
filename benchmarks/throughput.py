"""Throughput: batched calls to one tool, async calls across four tools, and the 20,000-call burst.

- ``batch``: ``tool.call_many([("add", {"k": 1})] * size)`` repeated; calls/s over
  all batches, and ms per batch. The last answer must equal the number of calls.
- ``async``: ``workers`` asyncio tasks on one event loop, each awaiting
  ``tool.acall("add")`` one after another, spread round-robin over ``tools``
  tools (fast path); calls/s over the whole run; every tool must end at the
  number of calls it was sent.
- ``burst``: one ``asyncio.gather`` of 20,000 ``acall("add")`` to one tool;
  the answers must be exactly 1..20,000 (each call answered once, none lost or
  duplicated), checked as a set and as a count.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from benchmarks.stats import summarize_ms
from supervisors import Policy, ToolHandle, ToolSystem

TOOL = "examples.counter:Counter"
TARGETS = {"batch_calls_per_s_min": 50_000, "async_calls_per_s_min": 20_000}


def batched(tool: ToolHandle, size: int, batches: int) -> dict[str, Any]:
    calls = [("add", {"k": 1})] * size
    tool.call_many(calls[:10])  # warm up (connection, code paths)
    start = tool.call("get")
    per_batch: list[float] = []
    last: Any = None
    t0 = time.perf_counter()
    for _ in range(batches):
        ts = time.perf_counter()
        out = tool.call_many(calls, timeout=60)
        per_batch.append(time.perf_counter() - ts)
        last = out[-1]
    elapsed = time.perf_counter() - t0
    errors = sum(isinstance(x, Exception) for x in out)
    return {"batch_size": size, "batches": batches, "calls": size * batches,
            "seconds": round(elapsed, 4), "calls_per_s": round(size * batches / elapsed),
            "per_batch": summarize_ms(per_batch),
            "answers_ok": last == start + size * batches and errors == 0}


async def _workers(tools: list[ToolHandle], workers: int, per_worker: int) -> float:
    async def worker(i: int) -> None:
        tool = tools[i % len(tools)]
        for _ in range(per_worker):
            await tool.acall("add", timeout=60)

    await asyncio.gather(*(tools[i % len(tools)].acall("get") for i in range(len(tools) * 4)))  # warm
    t0 = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(workers)))
    return time.perf_counter() - t0


def concurrent(tools: list[ToolHandle], workers: int, per_worker: int) -> dict[str, Any]:
    before = [t.call("get") for t in tools]
    elapsed = asyncio.run(_workers(tools, workers, per_worker))
    sent = [0] * len(tools)
    for i in range(workers):
        sent[i % len(tools)] += per_worker
    after = [t.call("get") for t in tools]
    calls = workers * per_worker
    return {"tools": len(tools), "workers": workers, "calls_per_worker": per_worker, "calls": calls,
            "seconds": round(elapsed, 4), "calls_per_s": round(calls / elapsed),
            "answers_ok": [a - b for a, b in zip(after, before, strict=True)] == sent}


def burst(tool: ToolHandle, n: int) -> dict[str, Any]:
    start = tool.call("get")

    async def go() -> tuple[list[Any], float]:
        t0 = time.perf_counter()
        out = await asyncio.gather(*(tool.acall("add", k=1, timeout=120) for _ in range(n)),
                                   return_exceptions=True)
        return list(out), time.perf_counter() - t0

    results, elapsed = asyncio.run(go())
    errors = [r for r in results if isinstance(r, BaseException)]
    values = [r for r in results if not isinstance(r, BaseException)]
    expected = set(range(start + 1, start + n + 1))
    return {"calls": n, "seconds": round(elapsed, 4), "calls_per_s": round(n / elapsed),
            "answers": len(results), "errors": len(errors),
            "error_types": sorted({type(e).__name__ for e in errors}),
            "distinct_answers": len(set(values)),
            "exactly_once": len(values) == n and set(values) == expected,
            "final_count_ok": tool.call("get") == start + n}


def run(batch_size: int, batches: int, workers: int, per_worker: int, burst_calls: int,
        log_level: str | None = None) -> dict[str, Any]:
    with ToolSystem(policy=Policy(), log_level=log_level, call_path="socket") as system:
        sup = system.supervise("bench")
        tools = [sup.spawn(TOOL, name=f"c{i}") for i in range(4)]
        for t in tools:
            t.call("get")
        return {
            "batch": batched(tools[0], batch_size, batches),
            "async": concurrent(tools, workers, per_worker),
            "burst": burst(tools[1], burst_calls),
            "target": dict(TARGETS),
        }
