"""The Accountant: one actor that samples every tool's process and polices its limits.

Supervisors ``Track`` each tool instance they start (and ``Untrack`` it when
its process ends). Every ``cadence`` seconds the accountant samples them all
(``supervisors.resources.usage``), keeps a bounded history per tool, and compares each
figure with the tool's limit: at 80 % a warning event, at 95 % a critical one,
at 100 % a ``Breach`` to the tool's supervisor, which runs the tool's
``on_limit`` action (alert, pause, restart or stop). With ``adaptive`` the
limits follow a forecast of the tool's own usage (within the configured
limit); a robust z-score flags sudden spikes the limits would not catch.

At each sweep it also reads every tool's work counters (``supervisors.resources.work``):
busy fraction, call rate and queue depth per instance, kept as a bounded history
that autoscalers decide from (``history``).

It owns the usage figures: the host asks it for them (``usage``, ``history``, ``stats``).
"""

from __future__ import annotations

import os
import signal
import time
from collections import deque
from typing import Any

from loguru import logger

from actors import logs
from actors.context import Context
from actors.errors import ToolError, error_to_wire
from actors.messages import Ack, Alive, Breach, Event, Reply, Request, Start, Stop, Track, Untrack
from actors.shell import SHELLS, Shell
from supervisors.processes.procs import pid_alive
from supervisors.resources.adaptive import ANOMALY_MIN_SAMPLES, ANOMALY_Z, History, adapt
from supervisors.resources.quotas import CRITICAL_AT, LIMIT_NAMES, WARNING_AT
from supervisors.resources.usage import ProcessTable, Sweep, Tracker, blank, sample
from supervisors.resources.work import WorkHistory

DEFAULT_CADENCE = 1.0
ACCOUNTANT_NICE = 5       # CPU priority below the tools it samples (os.nice increment)
RANK = {None: 0, "warning": 1, "critical": 2, "action": 3}
REARM_BELOW = 0.75          # a metric must fall below this share of its limit to warn again
ANOMALY_QUIET = 30          # samples between two anomaly alerts for one metric
#: Metrics watched for anomalies, with the smallest change that counts (ignore jitter on tiny
#: values). Each costs two medians per tool per sweep, so only the ones that spike matter.
ANOMALY_MIN_DELTA = {"memory_mb": 8.0, "cpu_percent": 25.0, "open_files": 16}
#: The spread below which a series counts as flat (robust z-score's MAD floor), per metric.
MIN_MAD = {"memory_mb": 1.0, "cpu_percent": 3.0, "open_files": 2}
#: Metrics whose limit adapts (the others move in steps that a forecast does not help with).
ADAPTIVE = ("memory_mb",)
#: Samples a metric must stay at or over its limit before the action (CPU use is bursty).
SUSTAIN = {"cpu_percent": 2}
#: Figures policed together with what the tool's own child processes use.
WITH_CHILDREN = {"memory_mb": "children_memory_mb", "cpu_percent": "children_cpu_percent"}
FORECAST_STEPS = 10


def _end_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


class AccountantShell(Shell):
    behaviour = "supervisors.resources.accountant:Accountant"


SHELLS["accountant"] = AccountantShell


class Entry:
    """One tracked tool instance."""

    def __init__(self, msg: Track, owner: Any) -> None:
        self.path = msg.path
        self.pid = msg.pid
        self.owner = owner
        self.configured = {k: float(v) for k, v in msg.limits.items() if k in LIMIT_NAMES}
        self.limits = dict(self.configured)
        self.on_limit = msg.on_limit
        self.adaptive = msg.adaptive
        self.level = msg.level
        self.tracker = Tracker(msg.pid, inherited=frozenset(str(fd) for fd in msg.inherited_fds))
        self.history = {m: History(min_mad=MIN_MAD[m]) for m in ANOMALY_MIN_DELTA}
        self.notified: dict[str, str] = {}
        self.over: dict[str, int] = {}  # consecutive samples at or over a limit
        self.quiet_until: dict[str, int] = {}
        self.usage: dict[str, Any] = {}
        self.work = WorkHistory(msg.marker)  # busy fraction, call rate, queue (actors.busy counters)


class Accountant:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.parent: Any = None
        self.cadence = DEFAULT_CADENCE
        self.entries: dict[str, Entry] = {}
        # (wall ms, tools, CPU ms) per sweep: the wall time includes waiting for a core on a
        # busy machine; the CPU time is what the sweep itself costs
        self.sweeps: deque[tuple[float, int, float]] = deque(maxlen=120)
        self.processes = ProcessTable()  # the process tree, kept between sweeps
        self.log = logger

    # ------------------------------------------------------------------ Behaviour
    def receive(self, msg: Any, sender: Any) -> None:
        if isinstance(msg, Track):
            old = self.entries.get(msg.path)
            if old is not None and old.pid != msg.pid and not pid_alive(old.pid):
                _end_group(old.pid)  # the instance it replaces died before we noticed
            self.entries[msg.path] = Entry(msg, sender)
        elif isinstance(msg, Untrack):
            entry = self.entries.get(msg.path)
            if entry is not None and entry.pid == msg.pid:
                del self.entries[msg.path]
        elif isinstance(msg, Request):
            self._on_request(msg, sender)
        elif isinstance(msg, Start):
            self._on_start(msg, sender)
        elif isinstance(msg, Stop):
            self.ctx.send(sender, Ack(msg.ref, True))
            self.ctx.exit()

    def wakeup(self, payload: Any) -> None:
        if payload == "sweep":
            try:
                self.sweep()
            finally:
                self.ctx.after(self.cadence, "sweep")

    def child_exited(self, address: Any) -> None:
        """The accountant has no children."""

    def system_exit(self) -> None:
        """Nothing to release."""

    # ------------------------------------------------------------------ start, requests
    def _on_start(self, msg: Start, sender: Any) -> None:
        self.parent = sender
        self.cadence = float(msg.spec.get("cadence") or DEFAULT_CADENCE)
        logs.setup(msg.spec.get("log_level"))
        logs.set_title("toolvisor accountant")
        _yield_cpu()
        self.ctx.send(sender, Alive(msg.ref, self.ctx.pid, self.ctx.my_address))
        self.ctx.send(sender, Ack(msg.ref, True, {"pid": self.ctx.pid}))
        self.ctx.after(self.cadence, "sweep")

    def _on_request(self, req: Request, sender: Any) -> None:
        try:
            if req.op == "usage":
                wanted = req.args.get("paths")
                value: Any = {p: self._report(e) for p, e in self.entries.items()
                              if wanted is None or p in wanted}
            elif req.op == "history":
                value = self.history(req.args.get("paths"), float(req.args.get("refresh") or 0.0),
                                     float(req.args.get("since") or 0.0))
            elif req.op == "stats":
                value = self.stats()
            elif req.op == "sweep":
                self.sweep()
                value = self.stats()
            else:
                raise ToolError(f"unknown accountant operation {req.op!r}")
        except Exception as exc:
            self.ctx.send(sender, Reply(req.cid, False, error=error_to_wire(exc)))
            return
        self.ctx.send(sender, Reply(req.cid, True, value))

    def _report(self, e: Entry) -> dict[str, Any]:
        return {**blank(), **e.usage, **e.work.latest(), "pid": e.pid, "level": e.level,
                "on_limit": e.on_limit,
                "limits": dict(e.limits), "configured": dict(e.configured),
                "adaptive": e.adaptive}

    def history(self, paths: list[str] | None, refresh: float, since: float) -> dict[str, Any]:
        """Work history per tracked path (``paths``: those only; unknown ones are left out).

        ``refresh`` > 0: first read the counters of those paths whose last reading is
        older than ``refresh`` seconds (an autoscaler whose interval is shorter than the
        sweep cadence asks this way: only its instances are read, not the whole tree).
        ``since``: only the points newer than this ``time.time()``.
        """
        wanted = self.entries if paths is None else {p: self.entries[p] for p in paths
                                                      if p in self.entries}
        if refresh > 0:
            now = time.monotonic_ns()
            for e in wanted.values():
                last = e.work.last
                if last is None or now - last[0] >= refresh * 1e9:
                    e.work.read(now)
        return {p: {"pid": e.pid, **e.work.report(since)} for p, e in wanted.items()}

    def stats(self) -> dict[str, Any]:
        ms = [m for m, _, _ in self.sweeps]
        tools = [n for _, n, _ in self.sweeps]
        last_ms, last_n, last_cpu = self.sweeps[-1] if self.sweeps else (0.0, 0, 0.0)
        rss = 0.0
        try:
            with open(f"/proc/{os.getpid()}/statm") as f:
                rss = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
        except OSError:
            pass
        return {"tracked": len(self.entries), "cadence": self.cadence, "sweeps": len(ms),
                "last_sweep_ms": round(last_ms, 3), "last_sweep_tools": last_n,
                "last_sweep_cpu_ms": round(last_cpu, 3),
                "mean_sweep_ms": round(sum(ms) / len(ms), 3) if ms else 0.0,
                "max_sweep_ms": round(max(ms), 3) if ms else 0.0,
                "ms_per_tool": round(sum(ms) / max(1, sum(tools)), 4) if ms else 0.0,
                "rss_mb": round(rss, 2), "pid": os.getpid()}

    # ------------------------------------------------------------------ sampling
    def sweep(self) -> None:
        started, cpu = time.perf_counter(), time.thread_time()
        shared = Sweep(self.processes)
        for path, entry in list(self.entries.items()):
            figures = sample(entry.tracker, shared)
            if figures is None:  # the process ended between two samples: a normal event
                self.log.debug("accountant: {} (pid {}) is gone", path, entry.pid)
                del self.entries[path]
                _end_group(entry.pid)  # what it started dies with it, even if its supervisor died too
                continue
            entry.usage = figures
            entry.work.read()
            self._police(entry, figures)
        self.sweeps.append(((time.perf_counter() - started) * 1000, len(self.entries),
                            (time.thread_time() - cpu) * 1000))

    def _police(self, e: Entry, u: dict[str, Any]) -> None:
        n = e.tracker.samples
        for metric in LIMIT_NAMES:
            value = float(u.get(metric, 0.0))
            limit = e.limits.get(metric)  # as set before this sample
            if metric in WITH_CHILDREN:
                value += float(u.get(WITH_CHILDREN[metric], 0.0))
            history = e.history.get(metric)
            if history is not None:
                self._spot_anomaly(e, metric, value, history.add(value), history, n)
                if e.adaptive and metric in ADAPTIVE and n >= ANOMALY_MIN_SAMPLES and metric in e.configured:
                    self._adapt(e, metric, history)
            if not limit:
                continue
            ratio = value / limit
            e.over[metric] = e.over.get(metric, 0) + 1 if ratio >= 1.0 else 0
            if ratio >= 1.0 and e.over[metric] >= SUSTAIN.get(metric, 1):
                level: str | None = "action"
            elif ratio >= CRITICAL_AT:  # (also: over, but not for long enough yet)
                level = "critical"
            else:
                level = "warning" if ratio >= WARNING_AT else None
            if level is None:
                if ratio < REARM_BELOW:
                    e.notified.pop(metric, None)
                continue
            if RANK[level] <= RANK[e.notified.get(metric)]:
                continue
            e.notified[metric] = level
            detail = f"{metric} {value:g} is {ratio:.0%} of its limit {limit:g}"
            if level != "action":
                self._event(e, f"limit {level}", detail)
                continue
            self._event(e, "limit exceeded", f"{detail}; action: {e.on_limit}")
            self.log.warning("{}: {} over its limit {:g} (pid {}); action: {}", e.path, metric,
                             limit, e.pid, e.on_limit)
            # once per episode: the metric must fall back under REARM_BELOW to act again
            self.ctx.send(e.owner, Breach(e.path, e.pid, metric, value, limit, e.on_limit))

    def _spot_anomaly(self, e: Entry, metric: str, value: float, z: float, history: History,
                      n: int) -> None:
        if abs(z) < ANOMALY_Z or n < e.quiet_until.get(metric, 0):
            return
        window = list(history.values)[-20:-1]
        typical = sorted(window)[len(window) // 2] if window else value
        if abs(value - typical) < ANOMALY_MIN_DELTA[metric]:
            return
        e.quiet_until[metric] = n + ANOMALY_QUIET
        self._event(e, "anomaly", f"{metric} jumped to {value:g} (typical {typical:g}, z={z:.1f})")

    def _adapt(self, e: Entry, metric: str, history: History) -> None:
        new = adapt(history.holt.predict(FORECAST_STEPS), e.configured[metric])
        old = e.limits[metric]
        if abs(new - old) > 0.1 * old:
            e.limits[metric] = new
            self.log.info("{}: {} limit adjusted {:g} -> {:g}", e.path, metric, old, new)
            self._event(e, "limit adjusted", f"{metric} {old:g} -> {new:g} (forecast "
                        f"{history.holt.predict(FORECAST_STEPS):.1f}, ceiling {e.configured[metric]:g})")

    def _event(self, e: Entry, what: str, detail: str) -> None:
        if self.parent is not None:
            self.ctx.send(self.parent, Event({"time": time.time(), "path": e.path, "event": what,
                                              "detail": detail, "state": "running"}))


def _yield_cpu() -> None:
    """Sampling is background work: under contention the tools, calls and spawns it
    watches get the CPU first (its sweeps then start a little late; each sample still
    carries its own time). ``TOOLVISOR_ACCOUNTANT_NICE`` sets the increment (0: none)."""
    try:
        os.nice(int(os.environ.get("TOOLVISOR_ACCOUNTANT_NICE", ACCOUNTANT_NICE)))
    except (OSError, ValueError) as exc:
        logger.warning("accountant: could not lower its CPU priority: {}", exc)
