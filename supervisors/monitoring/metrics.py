"""The metrics aggregator: every figure the dashboard and ``/metrics`` show, in one owner.

``Metrics`` is plain data fed by messages: command timings drained from the tools
(``observe_timings``), host-side call round trips (``observe_call``), lifecycle
events (``observe_event``) and tree snapshots with usage (``observe_tree``). One
thread owns an instance (the dashboard's event loop); nothing in it takes a lock.
``render`` writes the Prometheus text format through prometheus_client.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from actors.timings import BUCKETS

#: lifecycle events that count as quota actions (from the accountant and the policing)
QUOTA_EVENTS = ("limit warning", "limit critical", "limit exceeded", "stopped at its limit",
                "limit adjusted")
WINDOW = 60.0          # seconds over which error rate and throughput are figured
HISTORY = 300          # points of history per tool for the charts (about 5 minutes)

#: per-tool figures an alert rule may name (besides the usage figures such as memory_mb)
TOOL_METRICS = (
    "toolvisor_tool_up", "toolvisor_tool_memory_mb", "toolvisor_tool_cpu_percent",
    "toolvisor_tool_restarts", "toolvisor_error_rate", "toolvisor_throughput_per_second",
    "toolvisor_messages_total", "toolvisor_command_errors_total", "toolvisor_restarts_total",
    "toolvisor_failures_total", "toolvisor_quota_actions_total", "toolvisor_breaker_trips_total",
    "toolvisor_command_seconds", "toolvisor_message_latency_seconds",
)
USAGE_FIGURES = ("memory_mb", "rss_mb", "cpu_percent", "cpu_seconds", "open_files", "threads",
                 "connections", "children", "callers", "io_read_bytes", "io_write_bytes",
                 "busy_fraction", "call_rate", "queue")
KNOWN_METRICS = TOOL_METRICS + USAGE_FIGURES
#: Gauges of the accountant's work history (supervisors.resources.work), per tool.
WORK_GAUGES = {"toolvisor_tool_busy_fraction": "busy_fraction", "toolvisor_tool_call_rate": "call_rate",
               "toolvisor_tool_queue": "queue"}


class _Hist:
    """count, sum, errors and per-bucket counts (not cumulative) of one tool and command."""

    __slots__ = ("count", "sum", "errors", "buckets")

    def __init__(self) -> None:
        self.count = 0
        self.sum = 0.0
        self.errors = 0
        self.buckets = [0] * (len(BUCKETS) + 1)

    def add(self, seconds: float, ok: bool) -> None:
        self.count += 1
        self.sum += seconds
        self.errors += 0 if ok else 1
        i = 0
        while i < len(BUCKETS) and seconds > BUCKETS[i]:
            i += 1
        self.buckets[i] += 1

    def merge(self, batch: dict[str, Any]) -> None:
        self.count += int(batch.get("count", 0))
        self.sum += float(batch.get("sum", 0.0))
        self.errors += int(batch.get("errors", 0))
        for i, n in enumerate(batch.get("buckets", [])[:len(self.buckets)]):
            self.buckets[i] += int(n)

    def cumulative(self) -> list[tuple[str, float]]:
        out, total = [], 0
        for bound, n in zip(BUCKETS, self.buckets, strict=False):
            total += n
            out.append((repr(float(bound)), total))
        out.append(("+Inf", self.count))
        return out


class Metrics:
    """The aggregator's state. Feed it, read ``figure``/``history``, ``render`` for Prometheus."""

    BUCKETS = BUCKETS

    def __init__(self) -> None:
        self.commands: dict[tuple[str, str], _Hist] = {}   # tool-side command time
        self.latency: dict[tuple[str, str], _Hist] = {}    # host-side round trip
        self.restarts: dict[str, int] = {}
        self.failures: dict[str, int] = {}
        self.breaker_trips: dict[str, int] = {}
        self.quota: dict[tuple[str, str], int] = {}
        self.tools: dict[str, dict[str, Any]] = {}         # path -> latest slim node
        self.recent: dict[str, deque[tuple[float, int, int]]] = {}  # path -> (t, calls, errors)
        self.history: dict[str, deque[list[float | None]]] = {}     # [t, mem, cpu, trip ms, cmd ms]
        self._tick_latency: dict[str, list[float]] = {}    # path -> [sum, count] since last point
        self._tick_command: dict[str, list[float]] = {}    # the same, of the tool's own command times
        self.events_seen = 0

    # ------------------------------------------------------------------ feeding
    def observe_timings(self, tool: str, batch: dict[str, dict[str, Any]], now: float | None = None) -> None:
        calls = errors = 0
        for command, figures in batch.items():
            hist = self.commands.get((tool, command))
            if hist is None:
                hist = self.commands[(tool, command)] = _Hist()
            hist.merge(figures)
            calls += int(figures.get("count", 0))
            errors += int(figures.get("errors", 0))
        if calls:
            self.recent.setdefault(tool, deque(maxlen=1000)).append((now or time.time(), calls, errors))
            tick = self._tick_command.setdefault(tool, [0.0, 0])
            tick[0] += sum(float(f.get("sum", 0.0)) for f in batch.values())
            tick[1] += calls

    def observe_call(self, tool: str, command: str, seconds: float, ok: bool) -> None:
        hist = self.latency.get((tool, command))
        if hist is None:
            if not ok and (tool, command) not in self.commands:
                return  # (a failed call of a name the tool never ran: a typo gets no series)
            hist = self.latency[(tool, command)] = _Hist()
        hist.add(seconds, ok)
        tick = self._tick_latency.setdefault(tool, [0.0, 0])
        tick[0] += seconds
        tick[1] += 1

    def observe_event(self, event: dict[str, Any]) -> None:
        self.events_seen += 1
        path = str(event.get("path") or "")
        name = str(event.get("event") or "")
        if name.startswith("restarted"):
            self.restarts[path] = self.restarts.get(path, 0) + 1
        elif name == "failed":
            self.failures[path] = self.failures.get(path, 0) + 1
        elif name.startswith("breaker open"):  # (breakers: the recovery issue's events)
            self.breaker_trips[path] = self.breaker_trips.get(path, 0) + 1
        elif name in QUOTA_EVENTS:
            self.quota[(path, name)] = self.quota.get((path, name), 0) + 1

    def observe_tree(self, tools: Iterable[dict[str, Any]], now: float | None = None,
                     point: bool = True) -> None:
        """The latest tool nodes (slim, see ``slim``); ``point`` adds a history point per tool."""
        now = now or time.time()
        seen = {}
        for node in tools:
            path = node["path"]
            seen[path] = node
            if point:
                # call latency: the host's round trips, and the tool's own command times
                # (which also cover calls from other tools)
                trip = _mean_ms(self._tick_latency.pop(path, None))
                own = _mean_ms(self._tick_command.pop(path, None))
                self.history.setdefault(path, deque(maxlen=HISTORY)).append(
                    [round(now, 3), node.get("memory_mb"), node.get("cpu_percent"), trip, own])
        for gone in set(self.tools) - set(seen):
            self.history.pop(gone, None)
        self.tools = seen

    # ------------------------------------------------------------------ reading
    def window(self, tool: str, now: float | None = None) -> tuple[int, int]:
        """(calls, errors) of ``tool`` in the last ``WINDOW`` seconds."""
        now = now or time.time()
        items = self.recent.get(tool)
        if not items:
            return 0, 0
        while items and items[0][0] < now - WINDOW:
            items.popleft()
        return sum(i[1] for i in items), sum(i[2] for i in items)

    def figure(self, metric: str, tool: str, now: float | None = None) -> float | None:
        """The current value of ``metric`` (a ``KNOWN_METRICS`` name) for ``tool``; None if unknown."""
        node = self.tools.get(tool, {})
        if metric in USAGE_FIGURES:
            value = node.get(metric) if metric in node else (node.get("usage") or {}).get(metric)
            return None if value is None else float(value)
        if metric == "toolvisor_tool_up":
            return 1.0 if node.get("state") == "running" else 0.0
        if metric == "toolvisor_tool_memory_mb":
            return _float(node.get("memory_mb"))
        if metric == "toolvisor_tool_cpu_percent":
            return _float(node.get("cpu_percent"))
        if metric in WORK_GAUGES:
            return self.figure(WORK_GAUGES[metric], tool, now)
        if metric == "toolvisor_tool_restarts":
            return float(node.get("restarts") or 0)
        if metric in ("toolvisor_error_rate", "toolvisor_throughput_per_second"):
            calls, errors = self.window(tool, now)
            if metric == "toolvisor_throughput_per_second":
                return calls / WINDOW
            return errors / calls if calls else 0.0
        per_tool = [h for (t, _), h in self.commands.items() if t == tool]
        lat = [h for (t, _), h in self.latency.items() if t == tool]
        if metric == "toolvisor_messages_total":
            return float(sum(h.count for h in per_tool))
        if metric == "toolvisor_command_errors_total":
            return float(sum(h.errors for h in per_tool))
        if metric == "toolvisor_restarts_total":
            return float(self.restarts.get(tool, 0))
        if metric == "toolvisor_failures_total":
            return float(self.failures.get(tool, 0))
        if metric == "toolvisor_quota_actions_total":
            return float(sum(n for (t, _), n in self.quota.items() if t == tool))
        if metric == "toolvisor_breaker_trips_total":
            return float(self.breaker_trips.get(tool, 0))
        if metric in ("toolvisor_command_seconds", "toolvisor_message_latency_seconds"):
            hists = per_tool if metric == "toolvisor_command_seconds" else lat
            count = sum(h.count for h in hists)
            return sum(h.sum for h in hists) / count if count else None
        return None

    def commands_of(self, tool: str) -> dict[str, dict[str, Any]]:
        """Per command of ``tool``: calls, errors, mean command ms, mean round-trip ms."""
        out: dict[str, dict[str, Any]] = {}
        for (t, cmd), h in self.commands.items():
            if t == tool:
                out[cmd] = {"calls": h.count, "errors": h.errors,
                            "mean_ms": round(h.sum / h.count * 1000, 3) if h.count else None}
        for (t, cmd), h in self.latency.items():
            if t == tool:
                mean = round(h.sum / h.count * 1000, 3) if h.count else None
                out.setdefault(cmd, {})["round_trip_ms"] = mean
        return out

    # ------------------------------------------------------------------ Prometheus
    def collect(self) -> Iterator[Any]:
        yield from _histograms("toolvisor_command_seconds",
                               "Command execution time in the tool's process (seconds).", self.commands)
        yield from _histograms("toolvisor_message_latency_seconds",
                               "Call round trip seen by the host (seconds).", self.latency)
        calls = CounterMetricFamily("toolvisor_messages", "Commands served, per tool and command.",
                                    labels=["tool", "command"])
        errs = CounterMetricFamily("toolvisor_command_errors", "Commands that raised.",
                                   labels=["tool", "command"])
        for (tool, cmd), h in sorted(self.commands.items()):
            calls.add_metric([tool, cmd], h.count)
            errs.add_metric([tool, cmd], h.errors)
        yield calls
        yield errs
        counters = (("toolvisor_restarts", "Restarts (events), per path.", self.restarts),
                    ("toolvisor_failures", "Failures (events), per path.", self.failures),
                    ("toolvisor_breaker_trips", "Circuit breaker openings.", self.breaker_trips))
        for name, doc, table in counters:
            fam = CounterMetricFamily(name, doc, labels=["tool"])
            for tool, n in sorted(table.items()):
                fam.add_metric([tool], n)
            yield fam
        quota = CounterMetricFamily("toolvisor_quota_actions", "Quota warnings and actions.",
                                    labels=["tool", "action"])
        for (tool, action), n in sorted(self.quota.items()):
            quota.add_metric([tool, action], n)
        yield quota
        gauges = {
            "toolvisor_tool_up": "1 if the tool is running.",
            "toolvisor_tool_memory_mb": "Memory (USS) in MB.",
            "toolvisor_tool_cpu_percent": "CPU percent.",
            "toolvisor_tool_restarts": "Restart count kept by the supervisor.",
            "toolvisor_tool_busy_fraction": "Share of the last accountant interval spent working (0..1).",
            "toolvisor_tool_call_rate": "Calls finished per second over the last accountant interval.",
            "toolvisor_tool_queue": "Calls the tool has seen arrive and not started.",
            "toolvisor_error_rate": f"Errors per command over the last {WINDOW:g} s.",
            "toolvisor_throughput_per_second": f"Commands per second over the last {WINDOW:g} s.",
        }
        for name, doc in gauges.items():
            fam = GaugeMetricFamily(name, doc, labels=["tool"])
            for tool in sorted(self.tools):
                value = self.figure(name, tool)
                if value is not None and math.isfinite(value):
                    fam.add_metric([tool], value)
            yield fam

    def render(self) -> bytes:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Collector(self))
        return generate_latest(registry)


class _Collector:
    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Any]:
        return self.metrics.collect()


def _histograms(name: str, doc: str, table: dict[tuple[str, str], _Hist]) -> Iterator[Any]:
    fam = HistogramMetricFamily(name, doc, labels=["tool", "command"])
    for (tool, cmd), h in sorted(table.items()):
        fam.add_metric([tool, cmd], h.cumulative(), h.sum)
    yield fam


def _mean_ms(tick: list[float] | None) -> float | None:
    return round(tick[0] / tick[1] * 1000, 4) if tick and tick[1] else None


def _float(value: Any) -> float | None:
    return None if value is None else float(value)
