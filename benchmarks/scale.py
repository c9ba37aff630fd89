"""Cost against tree size (issue 10): spawn, restart, call, accountant sweep, memory, shutdown.

First the call latency with a single tool running (the baseline of the call
ratio). Then, for each size N (25, 250, 1,000 by default), in a fresh Python process of its
own (``in_fresh_host``), a ToolSystem spawns N Counter
tools under supervisors of 25 each (``per_supervisor``; ``one_supervisor`` sizes
are run again with all N under one supervisor), then measures on that
tree: the call latency to one tool, SIGKILL-to-serving restarts of one tool,
forced accountant sweeps (the accountant's own timing), the accountant's CPU at
``sample_every=1``, the memory (USS and PSS) of one idle tool and one supervisor,
and the time to leave the ``with`` block. The tool's module is imported by the host
before each system starts (shared by every tool, as in an application). Spawn cost is
reported per tool for the first 25 and the last 100 tools. The load average is recorded with each size: the
machine is shared.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psutil

from benchmarks import machine
from benchmarks.memory import footprint, forker_footprint
from benchmarks.speedprobe import SpeedTrace
from benchmarks.stats import median_of, summarize_ms
from supervisors import Backoff, Policy, ToolSystem
from supervisors.processes.procs import pid_alive

TOOL = "examples.counter:Counter"
TREE_TIMEOUT_S = 900.0  # one tree's whole run in its own process (1,000 tools: about 60 s)
SIZES = (25, 250, 1000)
TARGETS = {"spawn_last100_over_first25_max": 1.5, "restart_p50_ratio_max": 1.5,
           "call_p50_ratio_max": 1.2, "sweep_ms_per_tool_max": 0.2, "accountant_cpu_max": 0.15,
           "shutdown_1000_s_max": 10.0, "tool_uss_mib_max": 6.0, "supervisor_uss_mib_max": 6.0,
           "total_1000_s_max": 30.0}


def _in_turns(first: Any, second: Any, rounds: int,
              measure: Callable[[Any, list[float]], None]) -> tuple[list[float], list[float]]:
    """``measure(tool, out)`` on each tool in turn, the order flipped every round, so both
    see the same machine from moment to moment; the two lists of what was measured."""
    a: list[float] = []
    b: list[float] = []
    pair = ((first, a), (second, b))
    for k in range(rounds):
        for tool, out in (pair if k % 2 == 0 else pair[::-1]):
            measure(tool, out)
    return a, b


def _interleaved(big: Any, alone: Any, n: int, blocks: int = 60) -> dict[str, Any]:
    """Call latency to ``big`` (a tool among many) and to ``alone`` (the only tool of a
    second system running at the same time), in alternating blocks: both see the same
    machine from moment to moment. On this shared VM a p50 measured minutes apart swings
    between 0.03 and 0.1 ms on its own; this comparison keeps only what the tree adds."""
    for tool in (big, alone):
        for _ in range(20):
            tool.call("get")
    a, b = _in_turns(big, alone, blocks, lambda tool, out: _timed(tool, max(1, n // blocks), out))
    big_ms, alone_ms = summarize_ms(a), summarize_ms(b)
    return {"among_all": big_ms, "alone": alone_ms,
            "ratio_p50": round(big_ms["p50_ms"] / alone_ms["p50_ms"], 2)}


@contextmanager
def _same_placement(tool_pids: list[int]) -> Iterator[bool]:
    """While the two call latencies are compared: this thread on the first CPU, both tools
    (every thread of theirs) on the second. On this VM a call to a tool on the caller's CPU
    takes 0.04 ms at p50 and one on the other CPU 0.09-0.12 ms (the cross-CPU wake-up), and
    where the scheduler happened to put each of the two tools moved the ratio between 0.3
    and 2.5 x from one run of blocks to the next. Pinned, both pay the same; yields whether
    it could pin (two CPUs or more), and restores every affinity after."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if len(cpus) < 2:
        yield False
        return
    saved: dict[int, set[int]] = {}
    pinned = True
    try:
        saved[0] = os.sched_getaffinity(0)
        os.sched_setaffinity(0, {cpus[0]})
        for pid in tool_pids:
            for tid in (int(t) for t in os.listdir(f"/proc/{pid}/task")):
                saved[tid] = os.sched_getaffinity(tid)
                os.sched_setaffinity(tid, {cpus[1]})
    except OSError:  # a thread gone, or not allowed: compare unpinned (and say so)
        pinned = False
    try:
        yield pinned
    finally:
        for tid, mask in saved.items():
            try:
                os.sched_setaffinity(tid, mask)
            except OSError:  # the thread ended meanwhile
                pass


def _timed(tool: Any, n: int, out: list[float]) -> None:
    """``n`` calls of ``get``, each one's duration appended to ``out``."""
    for _ in range(n):
        t0 = time.perf_counter()
        tool.call("get")
        out.append(time.perf_counter() - t0)


def _calls(tool: Any, n: int) -> dict[str, Any]:
    for _ in range(20):
        tool.call("get")
    out: list[float] = []
    _timed(tool, n, out)
    return summarize_ms(out)


def _restart_once(tool: Any) -> float:
    """Seconds from SIGKILL to the tool's next answered call."""
    pid = tool.status().pid
    t0 = time.perf_counter()
    os.kill(pid, signal.SIGKILL)
    while pid_alive(pid):
        time.sleep(0.0005)
    tool.call("get", timeout=60)
    return time.perf_counter() - t0


def _restarts(tool: Any, n: int) -> dict[str, Any]:
    return summarize_ms([_restart_once(tool) for _ in range(n)])


def _restarts_beside(big: Any, policy: Policy, log_level: str | None, n: int,
                     per: int = 25) -> dict[str, Any]:
    """Restarts of ``big`` (a tool among all of the tree) against restarts of a tool of a
    second system of ``per`` tools started beside it, alternately (the order flipped every
    round): both see the same machine from moment to moment. Ten restarts per size, runs
    minutes apart, gave the 25-tool p50 anywhere from 18 to 30 ms on this shared VM, and
    the ratio 0.9-1.6 x for no change of ours."""
    with ToolSystem(policy=policy, log_level=log_level, data_dir=False) as other:
        sup = other.supervise("s000", policy=policy)  # (the tree's policy: no backoff)
        small = [sup.spawn(TOOL, name=f"t{i:04d}") for i in range(per)][-1]
        small.call("get")
        a, b = _in_turns(big, small, n, lambda tool, out: out.append(_restart_once(tool)))
    big_ms, small_ms = summarize_ms(a), summarize_ms(b)
    return {"among_all": big_ms, f"among_{per}": small_ms,
            "ratio_p50": round(big_ms["p50_ms"] / small_ms["p50_ms"], 2)}


def _accountant(system: ToolSystem, seconds: float) -> dict[str, Any]:
    ms, per_tool, cpu_per_tool = [], [], []
    for _ in range(3):
        st = system.accounting_stats(sweep_now=True)
        ms.append(st["last_sweep_ms"])
        per_tool.append(st["last_sweep_ms"] / max(1, st["last_sweep_tools"]))
        cpu_per_tool.append(st.get("last_sweep_cpu_ms", 0.0) / max(1, st["last_sweep_tools"]))
    pid = system.accounting_stats().get("pid")
    cpu = None
    if pid:
        p = psutil.Process(pid)
        c0, t0 = sum(p.cpu_times()[:2]), time.perf_counter()
        time.sleep(seconds)
        cpu = round((sum(p.cpu_times()[:2]) - c0) / (time.perf_counter() - t0), 4)
    return {"sweep_ms_p50": round(statistics.median(ms), 3),
            "sweep_ms_per_tool": round(statistics.median(per_tool), 4),
            "sweep_cpu_ms_per_tool": round(statistics.median(cpu_per_tool), 4),
            "cpu_fraction_at_sample_every_1": cpu}


def one_size(n: int, per_supervisor: int, restarts: int, calls: int,
             log_level: str | None) -> dict[str, Any]:
    if n < 1 or per_supervisor < 1:
        raise ValueError(f"a tree needs at least one tool and one tool per supervisor; "
                         f"got n={n}, per_supervisor={per_supervisor}")
    # The host imports the tool's module before the system starts, as an application that
    # imports its tool classes does, so every tool shares it (docs/scaling.md, Memory); the
    # memory section measures the by-name case too.
    importlib.import_module(TOOL.partition(":")[0])
    policy = Policy(max_restarts=1000, period=1.0, backoff=Backoff.none())
    load_start = machine.loadavg()
    per_tool: list[float] = []
    t_enter = time.perf_counter()
    with ToolSystem(policy=policy, log_level=log_level, sample_every=1.0, data_dir=False) as system:
        sups = [system.supervise(f"s{j:03d}", policy=policy)
                for j in range((n + per_supervisor - 1) // per_supervisor)]
        with SpeedTrace() as speed:  # (the probe runs through the spawns only)
            t0 = time.perf_counter()
            ticks = [machine.cpu_ticks()]
            marks = [round(time.time(), 2)]
            used = [machine.memory_used_gib()]
            reported = [machine.reported_gib()]
            for i in range(n):
                ts = time.perf_counter()
                sups[i // per_supervisor].spawn(TOOL, name=f"t{i:04d}")
                per_tool.append(time.perf_counter() - ts)
                if (i + 1) % 100 == 0 or i + 1 == n:
                    ticks.append(machine.cpu_ticks())
                    marks.append(round(time.time(), 2))
                    used.append(machine.memory_used_gib())
                    reported.append(machine.reported_gib())
            total = time.perf_counter() - t0
        target = system.tool("s000/t0000")
        call = _calls(target, calls)
        with ToolSystem(log_level=log_level, data_dir=False) as other:
            alone = other.supervise("s000").spawn(TOOL, name="t0000")
            with _same_placement([target.status().pid, alone.status().pid]) as pinned:
                runs = sorted((_interleaved(target, alone, calls * 4) for _ in range(5)),
                              key=lambda r: r["ratio_p50"])
            call_vs_one = {**runs[2], "ratios": [r["ratio_p50"] for r in runs],  # the median run
                           "pinned": pinned}
        restart = _restarts(target, restarts)
        acc = _accountant(system, 3.0)
        time.sleep(0.5)
        tool_pid = system.tool(f"s000/t{min(n, per_supervisor) - 1:04d}").status().pid
        tool_mem = footprint(tool_pid)
        sup_pid = sups[0].status().pid
        sup_mem = footprint(sup_pid)
        # the others only spawned their tools (s000 also restarted one 10 times and answered
        # the status queries of those restarts): up to 10 of them, spread over the tree
        others = [footprint(s.status().pid) for s in sups[1::max(1, (len(sups) - 1) // 10)][:10]]
        zygote_mem = forker_footprint(tool_pid, sup_pid)
        root_mem = footprint(system.root_route.pid)  # (also holds the event log, keeps the accountant)
        # (after the memory figures: these restarts are of the tree's last tool, beside
        # the 25 tools of a second system; s000's figure stays that of ten restarts)
        last = system.tool(f"s{len(sups) - 1:03d}/t{n - 1:04d}")
        restart_vs_25 = _restarts_beside(last, policy, log_level, 2 * restarts)
        t_exit = time.perf_counter()
    shutdown = time.perf_counter() - t_exit
    first = statistics.fmean(per_tool[:25]) * 1000
    last = statistics.fmean(per_tool[-100:]) * 1000
    return {"tools": n, "supervisors": len(sups), "spawn_total_s": round(total, 2),
            "host_pid": os.getpid(),
            "system_start_s": round(t0 - t_enter, 2),
            "spawn_first25_ms_per_tool": round(first, 2), "spawn_last100_ms_per_tool": round(last, 2),
            "spawn_last100_over_first25": round(last / first, 2) if first else None,
            "spawn_ms_by_hundred": [  # mean, median and max per 100 tools (where time went)
                [round(statistics.fmean(per_tool[k:k + 100]) * 1000, 1),
                 round(statistics.median(per_tool[k:k + 100]) * 1000, 1),
                 round(max(per_tool[k:k + 100]) * 1000, 1)] for k in range(0, n, 100)],
            # the whole machine's CPU shares during each hundred: "busy" counts every process,
            # ours and others; a VM's neighbours take "steal"; "system" is kernel time and
            # "kernel_threads" the kernel's own threads (e.g. kdamond, which walks the reverse
            # maps of pages shared by every forked process): a slow hundred shows which grew
            "cpu_by_hundred": [machine.cpu_shares(a, b) for a, b in zip(ticks, ticks[1:], strict=False)],
            "hundreds_at": marks,  # wall clock at the start and after each hundred
            # the CPU time of a fixed Python loop through each hundred (median ms, from a
            # probe process at nice 19, benchmarks/speedprobe.py): when a slow hundred's is
            # slow too, the machine ran slower, not our spawn path
            "cpu_probe_ms_by_hundred": [speed.median_between(a, b) for a, b in zip(marks, marks[1:],
                                                                                   strict=False)],
            # the machine's memory in use at the start and after each hundred (GiB): on the
            # development VM, pages the guest has not used lately cost 4-6 x more to fault in
            # (python -m benchmarks.fresh_memory): from 1.5-3 GiB in use after a fresh boot,
            # from about 8 GiB once it has run for a while; a tool's start is mostly such faults
            "memory_used_gib": used,
            # and how much free memory the VM handed back to its host so far (GiB since the
            # first spawn; None off such a VM): it will pay again for every page of it
            "handed_back_gib": ([round(r - reported[0], 2) for r in reported[1:]]
                                if None not in reported else None),
            "call": call, "call_vs_one_interleaved": call_vs_one, "restart": restart,
            "restart_vs_25_interleaved": restart_vs_25,
            "accountant": acc, "idle_tool": tool_mem,
            "supervisor": sup_mem, "zygote": zygote_mem, "root_supervisor": root_mem,
            "other_supervisors": {"uss_mib": median_of(others, "uss_mib"),
                                  "pss_mib": median_of(others, "pss_mib"), "sampled": len(others)},
            "shutdown_s": round(shutdown, 2),
            "loadavg_start": load_start, "loadavg_end": machine.loadavg()}


def run(sizes: tuple[int, ...] = SIZES, per_supervisor: int = 25, restarts: int = 10,
        calls: int = 300, log_level: str | None = None,
        one_supervisor: tuple[int, ...] = ()) -> dict[str, Any]:
    """``one_supervisor``: sizes also run with every tool under a single supervisor."""
    out: dict[str, Any] = {"sizes": {}, "per_supervisor": per_supervisor, "target": dict(TARGETS)}
    out["one_tool"] = one_tool(calls, log_level)
    out["host"] = "a fresh process for each tree"
    for n in sizes:
        out["sizes"][str(n)] = in_fresh_host(n, per_supervisor, restarts, calls, log_level)
    if one_supervisor:
        out["one_supervisor"] = {str(n): in_fresh_host(n, n, restarts, calls, log_level)
                                 for n in one_supervisor}
    small, big = out["sizes"][str(sizes[0])], out["sizes"][str(sizes[-1])]
    out["ratio_restart_p50_big_over_small"] = round(big["restart"]["p50_ms"] / small["restart"]["p50_ms"], 2)
    out["ratio_call_p50_big_over_small"] = round(big["call"]["p50_ms"] / small["call"]["p50_ms"], 2)
    out["ratio_call_p50_big_over_one"] = round(big["call"]["p50_ms"] / out["one_tool"]["call"]["p50_ms"], 2)
    out["ratio_call_p50_big_over_one_interleaved"] = big["call_vs_one_interleaved"]["ratio_p50"]
    out["ratio_restart_p50_big_over_25_interleaved"] = big["restart_vs_25_interleaved"]["ratio_p50"]
    return out


def in_fresh_host(n: int, per_supervisor: int, restarts: int, calls: int,
                  log_level: str | None) -> dict[str, Any]:
    """``one_size`` in a new Python process, as an application that starts one system.

    The root is forked from the host, so it inherits the host's small-object pools: in a
    host that had run the three trees before, they were full of holes, the root's new
    objects landed on inherited pages, and it was 0.25-0.45 MiB larger (6.09-6.26 MiB at
    1,000 tools under one supervisor against 5.61-5.86 started in a fresh host; docs/
    benchmarks.md, scale, ninth pass). One tree's figures should not depend on which
    trees the benchmark ran before it."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with tempfile.TemporaryDirectory(prefix="toolvisor-scale-") as tmp:
        out = os.path.join(tmp, "size.json")
        code = ("import json, sys; from benchmarks.scale import one_size; "
                "json.dump(one_size(*json.loads(sys.argv[1])), open(sys.argv[2], 'w'))")
        args = json.dumps([n, per_supervisor, restarts, calls, log_level])
        what = f"the tree of {n} tools ({per_supervisor} per supervisor)"
        try:  # (its log lines go straight to our stderr, as they are written)
            done = subprocess.run([sys.executable, "-c", code, args, out], cwd=root,
                                  timeout=TREE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"{what} ran over {TREE_TIMEOUT_S:.0f} s and was killed; "
                               "see its lines above, and check the machine's load") from None
        if done.returncode != 0:
            raise RuntimeError(f"{what} failed in its process (exit {done.returncode}); "
                               "its traceback is above")
        with open(out) as f:
            return json.load(f)


def one_tool(calls: int, log_level: str | None) -> dict[str, Any]:
    """The call latency with one tool running: the baseline the issue compares 1,000 with."""
    with ToolSystem(log_level=log_level, sample_every=1.0, data_dir=False) as system:
        tool = system.supervise("s000").spawn(TOOL, name="t0000")
        return {"call": _calls(tool, calls), "loadavg": machine.loadavg()}


def plot(result: dict[str, Any], path: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = sorted(result["sizes"].values(), key=lambda s: s["tools"])
    x = [s["tools"] for s in sizes]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    ax = axes[0]
    ax.plot(x, [s["spawn_first25_ms_per_tool"] for s in sizes], "o-", label="spawn, first 25 (ms/tool)")
    ax.plot(x, [s["spawn_last100_ms_per_tool"] for s in sizes], "o-", label="spawn, last 100 (ms/tool)")
    ax.plot(x, [s["restart"]["p50_ms"] for s in sizes], "s-", label="restart p50 (ms)")
    ax.set_xscale("log")
    ax.set_xlabel("tools running")
    ax.legend(fontsize=8)
    ax.set_title("spawn and restart")
    ax = axes[1]
    ax.plot(x, [s["call"]["p50_ms"] for s in sizes], "o-", label="call p50 (ms)")
    ax.plot(x, [s["accountant"]["sweep_ms_per_tool"] for s in sizes], "s-", label="sweep ms per tool")
    ax.set_xscale("log")
    ax.set_xlabel("tools running")
    ax.legend(fontsize=8)
    ax.set_title("call and accountant")
    ax = axes[2]
    ax.plot(x, [s["idle_tool"].get("uss_mib") for s in sizes], "o-", label="idle tool USS (MiB)")
    ax.plot(x, [s["idle_tool"].get("pss_mib") for s in sizes], "o--", label="idle tool PSS (MiB)")
    ax.plot(x, [s["supervisor"].get("uss_mib") for s in sizes], "s-", label="supervisor USS (MiB)")
    ax.set_xscale("log")
    ax.set_xlabel("tools running")
    ax.legend(fontsize=8)
    ax.set_title("memory")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
