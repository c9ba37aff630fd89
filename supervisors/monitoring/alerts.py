"""Alert rules, the alerts they raise, and the sinks that hear about them.

A rule (``[[alert]]``) names a metric (a ``toolvisor_`` metric or a usage figure
such as ``memory_mb``), an ``op`` (``>``, ``>=``, ``<``, ``<=``), a ``threshold``,
``for`` (seconds the condition must hold) and a ``severity``; ``tool`` (a glob,
default every tool) narrows it. ``Alerts`` evaluates the rules against a
``Metrics`` and returns what changed (firing, resolved); an alert can be
acknowledged (who, when). Sinks (``[[alert_sink]]``): ``log`` and ``webhook``
(POST JSON to ``url``).
"""

from __future__ import annotations

import fnmatch
import math
import operator
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from loguru import logger

from actors.loading import load_object
from actors.plugins import GROUPS, resolve
from supervisors.monitoring.metrics import KNOWN_METRICS, Metrics

OPS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le}
SEVERITIES = ("info", "warning", "error", "critical")
SINK_KINDS = ("log", "webhook")
RULE_KEYS = {"name", "metric", "op", "threshold", "for", "severity", "tool"}
SINK_KEYS = {"kind", "url"}
KEEP = 500  # alerts kept (firing ones always, resolved ones up to this many)


@dataclass(frozen=True)
class AlertRule:
    name: str
    metric: str
    op: str
    threshold: float
    for_seconds: float = 0.0
    severity: str = "warning"
    tool: str | None = None      # a glob over tool paths; None: every tool

    def __post_init__(self) -> None:
        where = f"alert {self.name!r}" if isinstance(self.name, str) and self.name else "alert"
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError(f"{where}: name = {self.name!r} is invalid: give every [[alert]] a name")
        if self.metric not in KNOWN_METRICS:
            raise ValueError(
                f"{where}: metric = {self.metric!r} is unknown: use a toolvisor_ metric "
                f"({', '.join(m for m in KNOWN_METRICS if m.startswith('toolvisor_'))}) or a usage "
                f"figure ({', '.join(m for m in KNOWN_METRICS if not m.startswith('toolvisor_'))})")
        if self.op not in OPS:
            raise ValueError(f"{where}: op = {self.op!r} is invalid: use one of {', '.join(OPS)}")
        if not _number(self.threshold):
            raise ValueError(f"{where}: threshold = {self.threshold!r} is invalid: must be a finite number")
        if not _number(self.for_seconds) or self.for_seconds < 0:
            raise ValueError(f"{where}: for = {self.for_seconds!r} is invalid: must be seconds >= 0")
        if self.severity not in SEVERITIES:
            raise ValueError(f"{where}: severity = {self.severity!r} is invalid: use one of "
                             f"{', '.join(SEVERITIES)}")
        if self.tool is not None and not isinstance(self.tool, str):
            raise ValueError(f"{where}: tool = {self.tool!r} is invalid: give a path or a glob")

    def holds(self, value: float | None) -> bool:
        return value is not None and OPS[self.op](value, float(self.threshold))


@dataclass(frozen=True)
class AlertSink:
    """Where alerts go: ``log``, ``webhook`` (POST JSON to ``url``), or a plugin: a name in
    the ``toolvisor.sinks`` entry-point group or a ``module:Class``, whose instance is
    called with each alert (a dict)."""

    kind: str
    url: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in SINK_KINDS:
            try:
                self.plugin()
            except (ImportError, AttributeError, TypeError) as exc:
                raise ValueError(f"alert_sink: kind = {self.kind!r} is invalid: use one of "
                                 f"{', '.join(SINK_KINDS)}, or a plugin sink ({exc})") from None
        if self.kind == "webhook" and not (isinstance(self.url, str)
                                           and self.url.startswith(("http://", "https://"))):
            raise ValueError(f"alert_sink (webhook): url = {self.url!r} is invalid: give an http(s):// URL")

    def plugin(self) -> Any:
        """The plugin sink's callable (a new instance of its class)."""
        if not isinstance(self.kind, str):
            raise TypeError(f"{self.kind!r} is not a name")
        return load_object(resolve(GROUPS["sinks"], self.kind))()


def _check_table(kind: str, i: int, table: Any, allowed: set[str]) -> None:
    """The i-th ``[[kind]]`` is a table with known keys only; ValueError naming what is not."""
    if not isinstance(table, dict):
        raise ValueError(f"{kind} #{i + 1} must be a table")
    unknown = set(table) - allowed
    if unknown:
        raise ValueError(f"{kind} #{i + 1}: unknown key(s) {', '.join(sorted(unknown))}; allowed: "
                         f"{', '.join(sorted(allowed))}")


def parse_alerts(rules: Iterable[Any], sinks: Iterable[Any]) -> tuple[list[AlertRule], list[AlertSink]]:
    """``[[alert]]`` and ``[[alert_sink]]`` tables as rules and sinks; ValueError naming the field."""
    out_rules, out_sinks = [], []
    for i, table in enumerate(rules):
        _check_table("alert", i, table, RULE_KEYS)
        try:
            out_rules.append(AlertRule(name=table.get("name"), metric=table.get("metric"),
                                       op=table.get("op"), threshold=table.get("threshold"),
                                       for_seconds=table.get("for", 0.0),
                                       severity=table.get("severity", "warning"),
                                       tool=table.get("tool")))
        except ValueError as exc:
            raise ValueError(f"alert #{i + 1}: {exc}") from None
    names = [r.name for r in out_rules]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"alert name(s) used twice: {', '.join(twice)}")
    for i, table in enumerate(sinks):
        _check_table("alert_sink", i, table, SINK_KEYS)
        try:
            out_sinks.append(AlertSink(kind=table.get("kind"), url=table.get("url")))
        except ValueError as exc:
            raise ValueError(f"alert_sink #{i + 1}: {exc}") from None
    return out_rules, out_sinks


@dataclass
class Alert:
    id: int
    rule: str
    tool: str
    metric: str
    op: str
    threshold: float
    severity: str
    value: float | None
    state: str = "firing"                 # firing | resolved
    since: float = field(default_factory=time.time)
    resolved_at: float | None = None
    acknowledged_by: str | None = None
    acknowledged_at: float | None = None
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Alerts:
    """Pending, firing and past alerts; evaluated against ``Metrics`` by its owner's thread."""

    def __init__(self, rules: Sequence[AlertRule]) -> None:
        self.rules = list(rules)
        self.pending: dict[tuple[str, str], float] = {}   # (rule, tool) -> condition true since
        self.firing: dict[tuple[str, str], Alert] = {}
        self.past: deque[Alert] = deque(maxlen=KEEP)
        self.next_id = 1

    def evaluate(self, metrics: Metrics, now: float | None = None) -> list[Alert]:
        """Alerts that started firing or resolved in this round (their ``state`` says which)."""
        now = now or time.time()
        changed = []
        for rule in self.rules:
            for tool in list(metrics.tools):
                if rule.tool is not None and not fnmatch.fnmatchcase(tool, rule.tool):
                    continue
                key = (rule.name, tool)
                value = metrics.figure(rule.metric, tool, now)
                if rule.holds(value):
                    start = self.pending.setdefault(key, now)
                    if key not in self.firing and now - start >= rule.for_seconds:
                        alert = Alert(self.next_id, rule.name, tool, rule.metric, rule.op,
                                      float(rule.threshold), rule.severity, value, since=now)
                        self.next_id += 1
                        self.firing[key] = alert
                        changed.append(alert)
                    elif key in self.firing:
                        self.firing[key].value = value
                else:
                    self.pending.pop(key, None)
                    alert = self.firing.pop(key, None)
                    if alert is not None:
                        alert.state, alert.resolved_at, alert.value = "resolved", now, value
                        self.past.append(alert)
                        changed.append(alert)
        for key in [k for k in self.firing if k[1] not in metrics.tools]:  # the tool was removed
            alert = self.firing.pop(key)
            alert.state, alert.resolved_at = "resolved", now
            self.past.append(alert)
            changed.append(alert)
        return changed

    def all(self) -> list[Alert]:
        """Firing alerts first (newest first), then resolved ones (newest first)."""
        return (sorted(self.firing.values(), key=lambda a: -a.id)
                + sorted(self.past, key=lambda a: -a.id))

    def get(self, alert_id: int) -> Alert | None:
        return next((a for a in self.all() if a.id == alert_id), None)

    def acknowledge(self, alert_id: int, who: str, note: str | None = None) -> Alert:
        alert = self.get(alert_id)
        if alert is None:
            raise KeyError(f"no alert {alert_id}")
        alert.acknowledged_by, alert.acknowledged_at, alert.note = who, time.time(), note
        return alert


def log_alert(alert: Alert) -> None:
    text = (f"alert {alert.rule} {alert.state} for {alert.tool}: {alert.metric} = {alert.value} "
            f"({alert.op} {alert.threshold:g}), severity {alert.severity}")
    level = {"info": "INFO", "warning": "WARNING", "error": "ERROR", "critical": "CRITICAL"}[alert.severity]
    logger.log(level if alert.state == "firing" else "INFO", text)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
