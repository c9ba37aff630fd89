"""Pools: one name, N identical tool instances, and the rules that size them.

A pool is not a new kind of child: the supervisor keeps N ordinary tool
children named ``fetch#1`` .. ``fetch#N`` whose specs say ``"pool": "fetch"``.
Each has its own process and its own restarts; a failed instance is restarted
alone whatever the supervisor's strategy, and its restarts count against the
supervisor's intensity like any child's. Routing (fewest calls in flight)
lives in the host (``supervisors.host.pools``) and in ``actors.peers``.

``replicas`` is a whole number >= 1 (a fixed size) or an autoscaling dict
``{"min": 1, "max": 8, "target_busy": 0.7}`` (optional: ``interval``, ``quiet``,
``window``); ``decide`` is the pure autoscaling rule.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psutil

from actors.errors import SpecError

SEP = "#"
AUTOSCALE_KEYS = ("min", "max", "target_busy", "interval", "quiet", "window")


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_size(value: Any, field: str = "replicas") -> int:
    """A pool size: a whole number >= 1."""
    if isinstance(value, float) and not math.isfinite(value):
        raise SpecError.invalid(field, value, "must be a whole number >= 1 (NaN and infinity are not)")
    if not _whole(value):
        raise SpecError.invalid(field, value, "must be a whole number >= 1, e.g. 4" + (
            ", or an autoscaling table {min = 1, max = 8, target_busy = 0.7}"
            if field == "replicas" else ""))
    if value < 1:
        raise SpecError.invalid(field, value, "must be at least 1 (a pool needs an instance; "
                                "stop() it to run none)")
    return int(value)


@dataclass(frozen=True)
class Autoscale:
    """How an autoscaled pool sizes itself.

    ``target_busy``: the busy fraction per instance the pool aims at. ``interval``:
    seconds between samples and decisions. ``quiet``: seconds the pool must stay
    under its target (at one instance less) before an instance is removed.
    ``window``: seconds of history the trend is fitted on.
    """

    min: int = 1
    max: int = 8
    target_busy: float = 0.7
    interval: float = 0.5
    quiet: float = 30.0
    window: float = 10.0

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in AUTOSCALE_KEYS}


def check_replicas(value: Any) -> int | Autoscale:
    """``replicas`` as given in code or config: a size or an ``Autoscale``."""
    if isinstance(value, Autoscale):
        return value
    if isinstance(value, dict):
        unknown = sorted(set(value) - set(AUTOSCALE_KEYS))
        if unknown:
            raise SpecError.invalid(f"replicas.{unknown[0]}", value[unknown[0]],
                                    f"unknown key; allowed: {', '.join(AUTOSCALE_KEYS)}")
        if "max" not in value:
            raise SpecError("replicas.max is missing: an autoscaling table needs its max, the "
                            "most instances the pool may run, e.g. {min = 1, max = 8, "
                            "target_busy = 0.7} (min defaults to 1, target_busy to 0.7)")
        low = check_size(value.get("min", 1), "replicas.min")
        high = check_size(value["max"], "replicas.max")
        if low > high:
            raise SpecError.invalid("replicas.min", low, f"must not exceed replicas.max = {high}")
        target = value.get("target_busy", 0.7)
        if not (isinstance(target, (int, float)) and not isinstance(target, bool)
                and math.isfinite(target) and 0 < target <= 1):
            raise SpecError.invalid("replicas.target_busy", target,
                                    "must be a number in (0, 1]: the busy fraction per instance "
                                    "to aim at, e.g. 0.7")
        seconds = {}
        for key, default in (("interval", 0.5), ("quiet", 30.0), ("window", 10.0)):
            v = value.get(key, default)
            if not (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0):
                raise SpecError.invalid(f"replicas.{key}", v, "must be a number of seconds > 0")
            seconds[key] = float(v)
        return Autoscale(low, high, float(target), **seconds)
    return check_size(value)


#: What one more instance is taken to need (MiB of memory it will not share: an idle tool
#: is about 5, docs/scaling.md) when a pool starts or grows: a size whose new instances
#: could not fit in the memory available now is refused before any is started.
INSTANCE_MIB = 6


def check_room(new: int, field: str, value: int) -> None:
    """Refuse to start ``new`` instances that could not fit in the memory available now
    (``INSTANCE_MIB`` each): ``replicas = 1000000000`` is a typo, not a plan."""
    available = psutil.virtual_memory().available / (1 << 20)
    if new * INSTANCE_MIB > available:
        raise SpecError.invalid(field, value, f"would start {new:,} instances, about "
                                f"{new * INSTANCE_MIB / 1024:,.0f} GiB at {INSTANCE_MIB} MiB each; "
                                f"this machine has {available / 1024:,.1f} GiB available")


def initial_size(replicas: int | Autoscale) -> int:
    return replicas.min if isinstance(replicas, Autoscale) else replicas


def instance_name(pool: str, k: int) -> str:
    return f"{pool}{SEP}{k}"


def split_instance(name: str) -> tuple[str, int] | None:
    """``("fetch", 2)`` for ``"fetch#2"``; None for a name that is not an instance's."""
    pool, sep, k = name.rpartition(SEP)
    if not sep or not pool or not k.isdigit():
        return None
    return pool, int(k)


def instance_spec(template: dict[str, Any], pool: str, k: int) -> dict[str, Any]:
    spec = {key: value for key, value in template.items() if key != "replicas"}
    spec["name"] = instance_name(pool, k)
    spec["pool"] = pool
    return spec


def expand(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """The child specs a spec stands for: itself, or its pool's instances ``#1..#N``."""
    if "replicas" not in spec:
        return [spec]
    replicas = check_replicas(spec["replicas"])
    check_room(initial_size(replicas), "replicas.min" if isinstance(replicas, Autoscale)
               else "replicas", initial_size(replicas))
    template = {**spec, "pool_replicas": replicas.to_dict() if isinstance(replicas, Autoscale)
                else replicas}
    return [instance_spec(template, spec["name"], k) for k in range(1, initial_size(replicas) + 1)]


# ------------------------------------------------------------------ autoscaling
#: Where a sample's figures came from, as the reasons name it.
SOURCES = {"accountant": "accountant history", "host": "host fallback (busy markers, host calls)"}


@dataclass(frozen=True)
class Sample:
    """One look at the pool: when, how many instances, their mean busy fraction (0..1),
    calls waiting beyond one per instance, calls finished per second, the span (seconds)
    the figures cover, and their ``source``: ``"accountant"`` (its usage history) or
    ``"host"`` (the fallback: busy markers and the host's own calls)."""

    time: float
    size: int
    busy: float
    queued: float = 0.0
    rate: float = 0.0
    span: float = 0.0
    source: str = "accountant"

    def figures(self) -> str:
        over = f" over {self.span:.2f}s" if self.span else ""
        return (f"{SOURCES.get(self.source, self.source)}: busy {self.busy:.0%} per instance{over}, "
                f"{self.queued:.1f} queued, {self.rate:.0f} calls/s")


@dataclass(frozen=True)
class Decision:
    size: int
    reason: str


def _slope(points: Sequence[tuple[float, float]]) -> float:
    """Least-squares slope of (t, y); 0 with fewer than 3 points."""
    if len(points) < 3:
        return 0.0
    n = len(points)
    mt = sum(t for t, _ in points) / n
    my = sum(y for _, y in points) / n
    den = sum((t - mt) ** 2 for t, _ in points)
    if den <= 0:
        return 0.0
    return sum((t - mt) * (y - my) for t, y in points) / den


def decide(history: Sequence[Sample], rule: Autoscale, quiet_since: float | None) -> Decision | None:
    """What size the pool should have now, and why; None to keep it.

    Work is measured in busy instances (``busy * size + queued``). Up: when the work
    now, or the work the trend over ``window`` predicts one ``window`` ahead, needs more
    instances than ``size`` at ``target_busy``. Down by one: only when the pool has
    been ``quiet`` (it would stay under its target with one instance less) since
    ``quiet_since`` for ``rule.quiet`` seconds, and the trend is not rising.
    """
    if not history:
        return None
    now = history[-1]
    size = now.size
    recent = [s for s in history if s.time >= now.time - rule.window]
    work = [(s.time, s.busy * s.size + s.queued) for s in recent]
    current = work[-1][1]
    slope = _slope(work)
    horizon = min(rule.window, 4 * rule.interval)
    predicted = max(current, current + slope * horizon)
    need_now = math.ceil(current / rule.target_busy - 1e-9)
    need_soon = math.ceil(predicted / rule.target_busy - 1e-9)
    if size < rule.min:
        return Decision(rule.min, f"below min = {rule.min}")
    if size > rule.max:
        return Decision(rule.max, f"above max = {rule.max}")
    want = min(rule.max, max(need_now, need_soon))
    if want > size:
        if need_now > size:
            why = (f"{now.figures()}: {current:.2f} instances of work at target "
                   f"{rule.target_busy:.0%}")
        else:
            why = (f"trend +{slope:.2f} busy instances/s over {len(recent)} samples predicts "
                   f"{predicted:.2f} instances of work in {horizon:g}s (now {current:.2f}; "
                   f"{now.figures()}) at target {rule.target_busy:.0%}")
        return Decision(want, f"scale up {size} -> {want}: {why}")
    if size > rule.min and quiet_since is not None and now.time - quiet_since >= rule.quiet \
            and slope <= 0:
        return Decision(size - 1, f"scale down {size} -> {size - 1}: under target "
                        f"{rule.target_busy:.0%} with one instance less for "
                        f"{now.time - quiet_since:.0f}s (work {current:.2f} instances; "
                        f"{now.figures()})")
    return None


def is_quiet(sample: Sample, rule: Autoscale) -> bool:
    """Would the pool stay under its target with one instance less?"""
    if sample.size <= rule.min:
        return False
    work = sample.busy * sample.size + sample.queued
    return work < rule.target_busy * (sample.size - 1) * 0.8
