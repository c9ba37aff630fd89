"""Tools that talk to tools: call round trip, send throughput, deadlock detection latency.

- ``call``: a tool's ``self.tool("bench/echo").call("get")`` timed inside the calling
  tool, against the host's ``echo.call("get")`` in the same run, interleaved in
  blocks (each block of tool-to-tool samples is one host call to the caller, which
  times its own calls with ``perf_counter``).
- ``send``: one tool sends ``n`` no-op commands to another, then waits until all are
  answered (``flush``); messages per second from the first send to the last answer.
- ``deadlock``: the time from a tool's ``call`` to its ``DeadlockError``, for a
  cycle along one chain (a -> b -> a, refused before sending) and for a cycle of
  independent calls (found on the wait board while waiting).
"""

from __future__ import annotations

import threading
import time
from typing import Any

from actors import DeadlockError, ToolActor, ToolOverloaded, command
from benchmarks.stats import ratio, summarize_ms
from supervisors import Backoff, Policy, ToolSystem

ME = "benchmarks.messaging:Talker"
TARGETS = {"call_p50_over_host_p50_max": 1.5, "send_per_s_min": 50_000.0, "deadlock_ms_max": 10.0}


class Talker(ToolActor):
    """Echo, caller, sender and cycle maker for the messaging benchmark."""

    def on_init(self, config: dict[str, Any]) -> None:
        self.count = 0

    @command
    def get(self) -> int:
        return self.count

    @command
    def tick(self) -> None:
        self.count += 1

    @command
    def time_calls(self, path: str, n: int) -> list[float]:
        ref = self.tool(path)
        clock = time.perf_counter
        out = []
        for _ in range(n):
            t0 = clock()
            ref.call("get")
            out.append(clock() - t0)
        return out

    @command
    def blast(self, path: str, n: int) -> dict[str, Any]:
        ref = self.tool(path)
        overloaded = 0
        t0 = time.perf_counter()
        i = 0
        while i < n:
            try:
                ref.send("tick")
                i += 1
            except ToolOverloaded:
                overloaded += 1
                ref.flush(timeout=30)
        ok = ref.flush(timeout=60)
        took = time.perf_counter() - t0
        return {"n": n, "seconds": took, "all_answered": ok, "window_full": overloaded,
                "stats": ref.stats()}

    @command
    def bounce(self, path: str, back: str) -> float:
        """Call ``path``, which calls ``back`` (this tool): a cycle along one chain."""
        return self.tool(path).call("call_back", back=back)

    @command
    def call_back(self, back: str) -> float:
        t0 = time.perf_counter()
        try:
            self.tool(back).call("get")
        except DeadlockError:
            return time.perf_counter() - t0
        return -1.0

    @command
    def later_call(self, path: str, delay: float) -> None:
        def go() -> None:
            try:
                self.tool(path).call("get", timeout=30)
            except DeadlockError:
                pass

        self.after(delay, go)

    @command
    def busy_then_call(self, busy: float, path: str) -> float:
        time.sleep(busy)
        t0 = time.perf_counter()
        try:
            self.tool(path).call("get", timeout=30)
        except DeadlockError:
            return time.perf_counter() - t0
        return -1.0


def run(samples: int = 3000, block: int = 100, sends: int = 200_000, cycles: int = 20,
        log_level: str | None = None) -> dict[str, Any]:
    policy = Policy(max_restarts=100, period=1.0, backoff=Backoff.none())
    with ToolSystem(policy=policy, log_level=log_level) as system:
        sup = system.supervise("bench", policy=policy)
        echo = sup.spawn(ME, name="echo")
        caller = sup.spawn(ME, name="caller")
        other = sup.spawn(ME, name="other")
        # round trips, interleaved: a block from the host, then a block from a tool
        caller.call("time_calls", path="bench/echo", n=200)
        for _ in range(200):
            echo.call("get")
        host: list[float] = []
        tool: list[float] = []
        clock = time.perf_counter
        while len(host) < samples:
            for _ in range(block):
                t0 = clock()
                echo.call("get")
                host.append(clock() - t0)
            tool += caller.call("time_calls", path="bench/echo", n=block, timeout=60)
        h, t = summarize_ms(host), summarize_ms(tool)
        # send throughput
        caller.call("blast", path="bench/echo", n=2000, timeout=120)  # warm up
        blast = caller.call("blast", path="bench/echo", n=sends, timeout=300)
        # deadlock along a chain: caller -> other -> caller
        chain = [caller.call("bounce", path="bench/other", back="bench/caller") for _ in range(cycles)]
        # deadlock of independent calls: other (timer) waits on caller, then caller calls other
        board = []
        for _ in range(cycles):
            other.call("later_call", path="bench/caller", delay=0.02)
            board.append(caller.call("busy_then_call", busy=0.1, path="bench/other", timeout=60))
            other.call("get")  # its timer's call has ended
        threading.Event().wait(0.05)
    chain_s = [x for x in chain if x >= 0]
    board_s = [x for x in board if x >= 0]
    return {
        "host_call": h, "tool_call": t,
        "ratio_tool_p50_over_host_p50": ratio(t["p50_ms"], h["p50_ms"]),
        "send": {"n": blast["n"], "seconds": round(blast["seconds"], 4),
                 "msgs_per_s": round(blast["n"] / blast["seconds"], 1),
                 "all_answered": blast["all_answered"], "window_full": blast["window_full"],
                 "failed": blast["stats"]["failed"]},
        "deadlock_chain": {**summarize_ms(chain_s), "missed": len(chain) - len(chain_s)},
        "deadlock_board": {**summarize_ms(board_s), "missed": len(board) - len(board_s)},
        "target": TARGETS,
    }
