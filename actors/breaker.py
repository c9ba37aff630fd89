"""Circuit breakers: a tool stops being hammered once it keeps failing.

``Breaker`` is the setting (it travels in a tool's start spec, from its
supervisor's ``Policy``); ``BreakerState`` is one breaker's state machine:

    closed --(threshold failures in the window)--> open
    open --(open_for seconds later, at the next call)--> half_open
    half_open --(successes trial calls succeed)--> closed
    half_open --(a trial call fails)--> open

The breaker lives in the tool's own process (its runner sees every call, from
the host and from other tools); the supervisor keeps the last snapshot the
tool reported and adds crashes to it, and hands it to the next instance, so a
restart does not reset it. Times are wall-clock (``time.time()``) so a snapshot
means the same in every process of the machine. Defined in ``actors`` because
both the tool side and the tree use it.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any

from actors.errors import SpecError, ToolUnavailable

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
TOOL_KEY = "*"


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class Breaker:
    """When a tool's breaker opens, how long it stays open, and how it closes again.

    ``threshold`` failures within ``window`` seconds (or, with ``count_based``,
    within the last ``window`` calls) open it; open, it answers every call at once
    with ``ToolUnavailable`` (type ``BreakerOpen``) for ``open_for`` seconds; then
    up to ``half_open_calls`` trial calls go through at a time, and ``successes``
    successful trials close it (one failed trial opens it again). ``per_command``
    keeps one breaker per command instead of one per tool.
    """

    threshold: int = 5
    window: float = 10.0
    open_for: float = 30.0
    successes: int = 2
    half_open_calls: int = 1
    count_based: bool = False
    per_command: bool = False

    def __post_init__(self) -> None:
        def need(ok: bool, name: str, what: str) -> None:
            if not ok:
                raise SpecError(f"breaker.{name}={getattr(self, name)!r} is invalid: {what}")

        need(_whole(self.threshold) and self.threshold >= 1, "threshold",
             "must be a whole number >= 1 (failures that open the breaker)")
        need(isinstance(self.count_based, bool), "count_based", "must be true or false")
        need(isinstance(self.per_command, bool), "per_command", "must be true or false")
        if self.count_based:
            need(_whole(self.window) and self.window >= self.threshold, "window",
                 f"with count_based it must be a whole number of calls >= threshold ({self.threshold})")
        else:
            need(_number(self.window) and self.window > 0, "window",
                 "must be a number > 0 (seconds in which failures are counted)")
        need(_number(self.open_for) and self.open_for > 0, "open_for",
             "must be a number > 0 (seconds the breaker stays open)")
        need(_whole(self.successes) and self.successes >= 1, "successes",
             "must be a whole number >= 1 (successful trials that close it)")
        need(_whole(self.half_open_calls) and self.half_open_calls >= 1, "half_open_calls",
             "must be a whole number >= 1 (trial calls let through at a time)")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | Breaker | None) -> Breaker | None:
        if d is None or isinstance(d, Breaker):
            return d
        if not isinstance(d, dict):
            raise SpecError(f"breaker={d!r} is invalid: give a table such as "
                            "{threshold = 5, open_for = 30.0}")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(d) - known)
        if unknown:
            raise SpecError(f"breaker.{unknown[0]} is not a breaker setting; use "
                            f"{', '.join(sorted(known))}")
        return cls(**d)


class BreakerState:
    """One breaker: its state, recent outcomes, and when it opened."""

    def __init__(self, config: Breaker, name: str, snapshot: dict[str, Any] | None = None) -> None:
        self.config = config
        self.name = name
        self.state = CLOSED
        self.outcomes: deque[tuple[float, bool]] = deque()  # (time, failed)
        self.opened_at = 0.0
        self.opens = 0
        self.trials = 0        # trial calls admitted and not finished
        self.trial_ok = 0      # successful trials so far
        if snapshot:
            self.state = snapshot.get("state", CLOSED)
            self.outcomes = deque((float(t), bool(f)) for t, f in snapshot.get("outcomes", []))
            self.opened_at = float(snapshot.get("opened_at", 0.0))
            self.opens = int(snapshot.get("opens", 0))
            self.trial_ok = int(snapshot.get("trial_ok", 0))

    @property
    def retry_at(self) -> float:
        return self.opened_at + self.config.open_for if self.state == OPEN else 0.0

    def snapshot(self) -> dict[str, Any]:
        return {"state": self.state, "outcomes": [[t, f] for t, f in self.outcomes],
                "opened_at": self.opened_at, "retry_at": self.retry_at, "opens": self.opens,
                "trial_ok": self.trial_ok, "failures": self.failures(), "name": self.name}

    def failures(self) -> int:
        return sum(1 for _, failed in self.outcomes if failed)

    # -- the three questions a runner asks ---------------------------------------
    def admit(self, now: float) -> ToolUnavailable | None:
        """None if a call may run now, else the error to answer it with."""
        if self.state == OPEN and now >= self.retry_at:
            self.state, self.trials, self.trial_ok = HALF_OPEN, 0, 0
        if self.state == CLOSED:
            return None
        if self.state == HALF_OPEN and self.trials < self.config.half_open_calls:
            self.trials += 1
            return None
        if self.state == HALF_OPEN:
            return ToolUnavailable(
                f"circuit breaker of {self.name} is half-open and its "
                f"{self.config.half_open_calls} trial call(s) are in progress; try again in a moment",
                type="BreakerOpen")
        wait = max(0.0, self.retry_at - now)
        return ToolUnavailable(
            f"circuit breaker of {self.name} is open after {self.failures()} failures; it will let "
            f"a trial call through again in {wait:.1f}s (at {self.retry_at:.3f}, epoch seconds)",
            type="BreakerOpen")

    def record(self, now: float, failed: bool, trial: bool) -> str | None:
        """Count an outcome; return the new state if it changed."""
        before = self.state
        if trial and self.state == HALF_OPEN:
            self.trials = max(0, self.trials - 1)
            if failed:
                self._open(now)
            else:
                self.trial_ok += 1
                if self.trial_ok >= self.config.successes:
                    self.state = CLOSED
                    self.outcomes.clear()
        elif self.state == CLOSED:
            self.outcomes.append((now, failed))
            self._trim(now)
            if failed and self.failures() >= self.config.threshold:
                self._open(now)
        elif failed and self.state == HALF_OPEN:
            self._open(now)  # a crash while half-open
        return self.state if self.state != before else None

    def _open(self, now: float) -> None:
        self.state = OPEN
        self.opened_at = now
        self.opens += 1
        self.trials = self.trial_ok = 0

    def _trim(self, now: float) -> None:
        c = self.config
        if c.count_based:
            while len(self.outcomes) > int(c.window):
                self.outcomes.popleft()
        else:
            while self.outcomes and now - self.outcomes[0][0] > c.window:
                self.outcomes.popleft()
            if len(self.outcomes) > 4 * c.threshold + 64:  # keep memory flat under success floods
                kept = [o for o in self.outcomes if o[1]]
                self.outcomes = deque(kept[-c.threshold:])


class Breakers:
    """A tool's breakers: one for the tool, or one per command."""

    def __init__(self, config: Breaker, path: str, snapshot: dict[str, Any] | None = None) -> None:
        self.config = config
        self.path = path
        self.by_key: dict[str, BreakerState] = {}
        for key, snap in ((snapshot or {}).get("breakers") or {}).items():
            self.by_key[key] = BreakerState(config, self._name(key), snap)

    def _name(self, key: str) -> str:
        return self.path if key == TOOL_KEY else f"{self.path} command {key!r}"

    def get(self, command: str) -> BreakerState:
        key = command if self.config.per_command else TOOL_KEY
        b = self.by_key.get(key)
        if b is None:
            b = self.by_key[key] = BreakerState(self.config, self._name(key))
        return b

    def crash(self, now: float) -> list[tuple[str, str]]:
        """The process died: a failure for the tool's breaker, or (per command) for every
        command's breaker seen so far."""
        if not self.config.per_command:
            self.get(TOOL_KEY)
        changed = []
        for key, b in self.by_key.items():
            new = b.record(now, True, trial=False)
            if new:
                changed.append((key, new))
        return changed

    def snapshot(self) -> dict[str, Any]:
        return {"breakers": {k: b.snapshot() for k, b in self.by_key.items()}}


def summary(snapshot: dict[str, Any] | None) -> dict[str, Any] | None:
    """What status() and tree() show: the worst state, when it retries, per-command detail."""
    if not snapshot:
        return None
    breakers = snapshot.get("breakers") or {}
    order = {CLOSED: 0, HALF_OPEN: 1, OPEN: 2}
    worst = max((b["state"] for b in breakers.values()), key=lambda s: order.get(s, 0),
                default=CLOSED)
    retry = max((b.get("retry_at", 0.0) for b in breakers.values()), default=0.0)
    out: dict[str, Any] = {"state": worst, "retry_at": retry,
                           "failures": sum(b.get("failures", 0) for b in breakers.values()),
                           "opens": sum(b.get("opens", 0) for b in breakers.values())}
    commands = {k: {"state": b["state"], "retry_at": b.get("retry_at", 0.0),
                    "failures": b.get("failures", 0)} for k, b in breakers.items() if k != TOOL_KEY}
    if commands:
        out["commands"] = commands
    return out
