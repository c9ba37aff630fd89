"""Chaos: SIGKILL random tools (and now and then a supervisor) under load; does everything recover?

20 tools (4 supervisors x 5 plain tools; pools do not exist yet, so there is
none) serve calls from several threads and from one asyncio caller, and
checkpoint a per-thread sequence number into their context every few calls.
A driver SIGKILLs a random tool every 200-400 ms (every 8th kill hits a
supervisor, which takes its five tools with it) for ``duration`` seconds.

Afterwards it checks that every permanent tool runs again, that every call
got exactly one answer (a value or a ``ToolError``), that no acknowledged
checkpoint was lost (the store holds, per tool and thread, at least the last
sequence number that thread saw acknowledged), and that no process outlived
the system. It reports the recovery rate (kills after which the target
served again within ``RECOVERY_LIMIT_S``), the time from kill to serving
(p50/p99), and calls answered per second during the chaos against a run of
the same load without kills. It also times host calls to a tool with and
without a circuit breaker (``breaker_call_p50``), and a call that checkpoints
against a plain one (``checkpoint``).

``python -m benchmarks --only chaos`` (``--quick``: 15 s) or ``make chaos DURATION=60``.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import tempfile
import threading
import time
from collections import Counter
from typing import Any

from actors import ToolActor, command
from benchmarks.stats import summarize_ms
from supervisors import Backoff, Policy, ToolError, ToolSystem
from supervisors.processes.procs import pid_alive, session_pids

ME = "benchmarks.chaos:ChaosTool"
SUPERVISORS = 4
TOOLS_EACH = 5
THREADS = 4
ASYNC_IN_FLIGHT = 8
SAVE_EVERY = 5            # every n-th call of a thread is a checkpoint
CALL_TIMEOUT = 5.0
RECOVERY_LIMIT_S = 10.0
NEVER_GIVE_UP = Policy(max_restarts=100_000, period=1.0, backoff=Backoff.none())


class ChaosTool(ToolActor):
    @command
    def work(self, n: int) -> int:
        return n + 1

    @command
    def save(self, key: str, seq: int) -> int:
        self.context[key] = seq
        self.checkpoint()
        return seq

    @command
    def pid(self) -> int:
        return os.getpid()


class Load:
    """The callers: threads and one asyncio loop; every call's outcome is counted once."""

    def __init__(self, system: ToolSystem, paths: list[str]) -> None:
        self.system = system
        self.paths = paths
        self.stop = threading.Event()
        self.issued = 0
        self.answered = 0
        self.ok = 0
        self.wrong = 0
        self.errors: Counter[str] = Counter()
        self.acked: dict[tuple[str, str], int] = {}   # (path, thread key) -> last acked seq
        self.saves = 0                                # acknowledged checkpoints
        self.threads: list[threading.Thread] = []
        self.counts: list[tuple[int, int, int, int]] = []  # per caller: issued, answered, ok, wrong

    def start(self) -> None:
        for i in range(THREADS):
            t = threading.Thread(target=self._thread, args=(f"t{i}",), daemon=True)
            t.start()
            self.threads.append(t)
        t = threading.Thread(target=lambda: asyncio.run(self._aio()), daemon=True)
        t.start()
        self.threads.append(t)

    def finish(self, timeout: float) -> bool:
        self.stop.set()
        end = time.monotonic() + timeout
        for t in self.threads:
            t.join(max(0.0, end - time.monotonic()))
        return not any(t.is_alive() for t in self.threads)

    def _thread(self, key: str) -> None:
        rng = random.Random(key)
        issued = answered = ok = wrong = 0
        seq = 0
        while not self.stop.is_set():
            path = rng.choice(self.paths)
            tool = self.system.tool(path)
            issued += 1
            if issued % SAVE_EVERY == 0:
                seq += 1
                try:
                    got = tool.call("save", timeout=CALL_TIMEOUT, key=key, seq=seq)
                    ok += 1
                    if got == seq:
                        self.acked[(path, key)] = seq
                        self.saves += 1
                    else:
                        wrong += 1
                except ToolError as exc:
                    self.errors[type(exc).__name__ + ":" + exc.type] += 1
                answered += 1
                continue
            try:
                got = tool.call("work", timeout=CALL_TIMEOUT, n=issued)
                ok += 1
                wrong += got != issued + 1
            except ToolError as exc:
                self.errors[type(exc).__name__ + ":" + exc.type] += 1
            answered += 1
        self.counts.append((issued, answered, ok, wrong))

    async def _aio(self) -> None:
        rng = random.Random("aio")
        totals = [0, 0, 0, 0]

        async def one() -> None:
            while not self.stop.is_set():
                n = rng.randrange(1_000_000)
                totals[0] += 1
                try:
                    got = await self.system.tool(rng.choice(self.paths)).acall(
                        "work", timeout=CALL_TIMEOUT, n=n)
                    totals[2] += 1
                    totals[3] += got != n + 1
                except ToolError as exc:
                    self.errors["aio " + type(exc).__name__ + ":" + exc.type] += 1
                totals[1] += 1

        await asyncio.gather(*(one() for _ in range(ASYNC_IN_FLIGHT)))
        self.counts.append(tuple(totals))  # type: ignore[arg-type]

    def totals(self) -> dict[str, int]:
        issued, answered, ok, wrong = (sum(c[i] for c in self.counts) for i in range(4))
        return {"calls": issued, "answered": answered, "ok": ok, "wrong_values": wrong,
                "errors": answered - ok}


def _build(system: ToolSystem) -> list[str]:
    paths = []
    for s in range(SUPERVISORS):
        sup = system.supervise(f"c{s}", NEVER_GIVE_UP)
        for t in range(TOOLS_EACH):
            sup.spawn(ME, name=f"t{t}")
            paths.append(f"c{s}/t{t}")
    return paths


def _serving(system: ToolSystem, path: str, old_pid: int | None, until: float) -> bool:
    while time.monotonic() < until:
        try:
            pid = system.tool(path).call("pid", timeout=max(0.05, until - time.monotonic()))
            if pid != old_pid:
                return True
        except ToolError:
            time.sleep(0.005)
    return False


def _chaos(system: ToolSystem, paths: list[str], duration: float, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    recovery: list[float] = []
    kills = sup_kills = failed = 0
    end = time.monotonic() + duration
    while time.monotonic() < end:
        time.sleep(rng.uniform(0.2, 0.4))
        kills += 1
        if kills % 8 == 0:
            sup = f"c{rng.randrange(SUPERVISORS)}"
            targets = [p for p in paths if p.startswith(sup + "/")]
            victim = system.supervisor(sup).status().pid
            sup_kills += 1
        else:
            targets = [rng.choice(paths)]
            victim = system.tool(targets[0]).status().pid
        if not victim:
            kills -= 1
            continue
        olds = {p: system.tool(p).status().pid for p in targets}
        t0 = time.monotonic()
        try:
            os.kill(victim, signal.SIGKILL)
        except ProcessLookupError:
            kills -= 1
            continue
        until = t0 + RECOVERY_LIMIT_S
        if all(_serving(system, p, olds[p], until) for p in targets):
            recovery.append(time.monotonic() - t0)
        else:
            failed += 1
    return {"kills": kills, "supervisor_kills": sup_kills, "recovered": len(recovery),
            "not_recovered": failed, "recovery": recovery}


def _check(system: ToolSystem, paths: list[str], load: Load) -> dict[str, Any]:
    deadline = time.monotonic() + RECOVERY_LIMIT_S
    down = list(paths)
    while down and time.monotonic() < deadline:
        down = [p for p in paths if system.tool(p).status().state.value != "running"]
        if down:
            time.sleep(0.05)
    lost = []
    for (path, key), seq in load.acked.items():
        stored = system.context_of(path).get(key, 0)
        if stored < seq:
            lost.append((path, key, seq, stored))
    return {"not_running_after": down, "checkpoints_acked": load.saves,
            "checked_pairs": len(load.acked),
            "checkpoints_lost": len(lost), "lost_examples": lost[:5]}


def run_once(duration: float, kill: bool, seed: int = 13, log_level: str = "ERROR") -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="toolvisor-chaos-") as data:
        system = ToolSystem(policy=NEVER_GIVE_UP, data_dir=data, log_level=log_level)
        seen: set[int] = set()
        with system:
            sid = system.sid
            paths = _build(system)
            load = Load(system, paths)
            t0 = time.monotonic()
            load.start()
            if kill:
                chaos = _chaos(system, paths, duration, seed)
            else:
                time.sleep(duration)
                chaos = {}
            finished = load.finish(CALL_TIMEOUT + 5.0)
            elapsed = time.monotonic() - t0
            result = {**load.totals(), "callers_finished": finished,
                      "calls_per_s": round(load.totals()["answered"] / elapsed, 1),
                      "error_types": dict(load.errors.most_common(8))}
            if kill:
                result.update(_check(system, paths, load))
                rec = chaos.pop("recovery")
                result.update(chaos)
                result["recovery_rate"] = round(chaos["recovered"] / max(1, chaos["kills"]), 4)
                result["kill_to_serving"] = summarize_ms(rec) if rec else {}
            seen.update(session_pids(sid) if sid else [])
        leftover = [p for p in seen if pid_alive(p)]
        result["orphans"] = len(leftover)
        result["unanswered"] = result["calls"] - result["answered"]
        return result


def breaker_cost(n: int = 5000, rounds: int = 3, log_level: str = "ERROR") -> dict[str, Any]:
    """p50 of sequential host calls to a tool without and with a circuit breaker."""
    def p50(tool: Any) -> float:
        for i in range(300):
            tool.call("work", n=i)
        xs = []
        for i in range(n):
            t0 = time.perf_counter()
            tool.call("work", n=i)
            xs.append(time.perf_counter() - t0)
        return summarize_ms(xs)["p50_ms"] * 1000.0

    from supervisors import Breaker

    out: dict[str, list[float]] = {"without_us": [], "with_us": []}
    with ToolSystem(data_dir=False, log_level=log_level) as system:
        plain = system.supervise("plain", Policy()).spawn(ME, name="t")
        guarded = system.supervise("guarded", Policy(breaker=Breaker())).spawn(ME, name="t")
        for _ in range(rounds):
            out["without_us"].append(round(p50(plain), 1))
            out["with_us"].append(round(p50(guarded), 1))
    return out


def checkpoint_cost(n: int = 300, log_level: str = "ERROR") -> dict[str, Any]:
    """Host call of a command that checkpoints (tool -> store, commit with fsync) vs a plain one."""
    with tempfile.TemporaryDirectory(prefix="toolvisor-ckpt-") as data:
        with ToolSystem(data_dir=data, log_level=log_level) as system:
            tool = system.supervise("c", Policy()).spawn(ME, name="t")
            plain, saving = [], []
            for i in range(n):
                t0 = time.perf_counter()
                tool.call("work", n=i)
                plain.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                tool.call("save", key="k", seq=i)
                saving.append(time.perf_counter() - t0)
    return {"plain_call": summarize_ms(plain), "checkpointing_call": summarize_ms(saving)}


def run(duration: float = 60.0, quiet_duration: float | None = None,
        log_level: str = "ERROR") -> dict[str, Any]:
    """The chaos run and the same load without kills; the figures for the report."""
    chaos = run_once(duration, kill=True, log_level=log_level)
    quiet = run_once(quiet_duration or min(duration, 15.0), kill=False, log_level=log_level)
    return {"breaker_call_p50": breaker_cost(log_level=log_level),
            "checkpoint": checkpoint_cost(log_level=log_level),
            "tools": SUPERVISORS * TOOLS_EACH, "pools": "none (pools do not exist yet)",
            "duration_s": duration, "chaos": chaos, "quiet": quiet,
            "calls_per_s_chaos": chaos["calls_per_s"], "calls_per_s_quiet": quiet["calls_per_s"],
            "ratio_chaos_over_quiet": round(chaos["calls_per_s"] / max(1e-9, quiet["calls_per_s"]), 3),
            "recovery_rate": chaos["recovery_rate"],
            "kill_to_serving_p50_ms": chaos["kill_to_serving"].get("p50_ms"),
            "kill_to_serving_p99_ms": chaos["kill_to_serving"].get("p99_ms")}
