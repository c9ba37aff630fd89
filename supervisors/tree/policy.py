"""The tuning vocabulary as data: Policy, Backoff and child specs, with checks.

Everything here is plain data that travels to supervisor processes as a dict;
every check raises ``SpecError`` naming the field and the bad value.
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from actors.breaker import Breaker
from actors.errors import SpecError

STRATEGIES = ("one_for_one", "one_for_all", "rest_for_one")
RESTART_TYPES = ("permanent", "transient", "temporary")
DEFAULT_HANG_TIMEOUT = 120.0  # seconds in one command or callback before the watchdog acts
AUTO_SHUTDOWN = ("never", "any_significant", "all_significant")
SHUTDOWN_WORDS = ("brutal_kill", "infinity")  # OTP's shutdown values besides a timeout
SECURITY_LEVELS = ("low", "standard", "high", "critical")
NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")


def _need(ok: bool, field_name: str, value: Any, what: str) -> None:
    if not ok:
        raise SpecError.invalid(field_name, value, what)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class Backoff:
    """Delay before a restart, as in Akka's restartWithBackoff.

    The n-th consecutive restart waits ``min(maximum, initial * multiplier**n)``
    plus up to ``jitter`` of that at random; the count starts again once the
    child has run ``reset_after`` seconds without failing.
    """

    initial: float = 0.05
    maximum: float = 5.0
    multiplier: float = 2.0
    jitter: float = 0.2
    reset_after: float = 30.0

    def __post_init__(self) -> None:
        _need(_number(self.initial) and self.initial >= 0, "backoff.initial", self.initial,
              "must be a finite number >= 0 (seconds)")
        _need(_number(self.maximum) and self.maximum >= self.initial, "backoff.maximum",
              self.maximum, f"must be a finite number >= initial ({self.initial})")
        _need(_number(self.multiplier) and self.multiplier >= 1, "backoff.multiplier",
              self.multiplier, "must be a finite number >= 1")
        _need(_number(self.jitter) and 0 <= self.jitter <= 1, "backoff.jitter", self.jitter,
              "must be between 0 and 1")
        _need(_number(self.reset_after) and self.reset_after > 0, "backoff.reset_after",
              self.reset_after, "must be a finite number > 0 (seconds)")

    @classmethod
    def none(cls) -> Backoff:
        """Restart at once."""
        return cls(initial=0.0, maximum=0.0, jitter=0.0)

    def delay(self, attempt: int, rand: float | None = None) -> float:
        """Seconds to wait before restart number ``attempt`` (0 = the first)."""
        if self.initial == 0:
            return 0.0
        base = min(self.maximum, self.initial * self.multiplier ** min(attempt, 64))
        r = random.random() if rand is None else rand
        return base * (1.0 + self.jitter * r)


@dataclass(frozen=True)
class Retry:
    """How a caller retries an idempotent command that failed with a transient error.

    Up to ``attempts`` more tries, the n-th after ``min(maximum, initial * multiplier**n)``
    seconds plus up to ``jitter`` of that at random, never past the call's deadline.
    """

    attempts: int = 3
    initial: float = 0.05
    maximum: float = 1.0
    multiplier: float = 2.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        _need(isinstance(self.attempts, int) and not isinstance(self.attempts, bool)
              and self.attempts >= 0, "retry.attempts", self.attempts, "must be a whole number >= 0")
        _need(_number(self.initial) and self.initial >= 0, "retry.initial", self.initial,
              "must be a number >= 0 (seconds)")
        _need(_number(self.maximum) and self.maximum >= self.initial, "retry.maximum",
              self.maximum, f"must be a number >= initial ({self.initial})")
        _need(_number(self.multiplier) and self.multiplier >= 1, "retry.multiplier",
              self.multiplier, "must be a number >= 1")
        _need(_number(self.jitter) and 0 <= self.jitter <= 1, "retry.jitter", self.jitter,
              "must be between 0 and 1")


@dataclass(frozen=True)
class Policy:
    """How a supervisor reacts when a child fails.

    ``strategy``: one_for_one restarts the failed child; one_for_all restarts
    all children; rest_for_one restarts the failed child and those started
    after it. More than ``max_restarts`` restarts within ``period`` seconds and
    the supervisor gives up: it stops its children and fails, and its parent
    handles that as a failure of its own child. ``fatal_errors`` names
    exception classes that, raised by a command, also end the tool.
    ``auto_shutdown`` (OTP 24): ``never``; ``any_significant`` (the supervisor
    stops itself, normally, when any significant child ends normally) or
    ``all_significant`` (when all of them have).

    Recovery (docs/recovery.md): ``breaker`` gives each tool beneath this supervisor
    a circuit breaker (None: no breaker); ``transient`` names exception classes
    after which callers retry an idempotent command, as ``retry`` says.
    """

    strategy: str = "one_for_one"
    max_restarts: int = 3
    period: float = 5.0
    backoff: Backoff = field(default_factory=Backoff)
    fatal_errors: tuple[str, ...] = ()
    auto_shutdown: str = "never"
    breaker: Breaker | None = None
    transient: tuple[str, ...] = ()
    retry: Retry = field(default_factory=Retry)

    def __post_init__(self) -> None:
        _need(self.auto_shutdown in AUTO_SHUTDOWN, "auto_shutdown", self.auto_shutdown,
              f"must be one of {', '.join(AUTO_SHUTDOWN)}")
        _need(self.strategy in STRATEGIES, "strategy", self.strategy,
              f"must be one of {', '.join(STRATEGIES)}")
        _need(isinstance(self.max_restarts, int) and not isinstance(self.max_restarts, bool)
              and self.max_restarts >= 0, "max_restarts", self.max_restarts,
              "must be a whole number >= 0")
        _need(_number(self.period) and self.period > 0, "period", self.period,
              "must be a finite number > 0 (seconds)")
        _need(isinstance(self.backoff, Backoff), "backoff", self.backoff, "must be a Backoff")
        names = self.fatal_errors
        _need(isinstance(names, (tuple, list)) and all(isinstance(n, str) for n in names),
              "fatal_errors", names, "must be a list of exception class names")
        object.__setattr__(self, "fatal_errors", tuple(names))
        _need(self.breaker is None or isinstance(self.breaker, Breaker), "breaker", self.breaker,
              "must be a Breaker or None")
        names = self.transient
        _need(isinstance(names, (tuple, list)) and all(isinstance(n, str) for n in names),
              "transient", names, "must be a list of exception class names")
        object.__setattr__(self, "transient", tuple(names))
        _need(isinstance(self.retry, Retry), "retry", self.retry, "must be a Retry")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["fatal_errors"] = list(self.fatal_errors)
        d["transient"] = list(self.transient)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Policy:
        d = dict(d)
        backoff = d.pop("backoff", None)
        if isinstance(backoff, dict):
            d["backoff"] = Backoff(**backoff)
        elif isinstance(backoff, Backoff):
            d["backoff"] = backoff
        if "breaker" in d:
            d["breaker"] = Breaker.from_dict(d["breaker"])
        retry = d.get("retry")
        if isinstance(retry, dict):
            known = set(Retry.__dataclass_fields__)
            unknown = sorted(set(retry) - known)
            if unknown:
                raise SpecError(f"retry.{unknown[0]} is not a retry setting; use "
                                f"{', '.join(sorted(known))}")
            d["retry"] = Retry(**retry)
        return cls(**d)


class BackoffState:
    """One child's position in its backoff sequence."""

    __slots__ = ("attempt",)  # (one per child of a supervisor)

    def __init__(self) -> None:
        self.attempt = 0

    def next_delay(self, backoff: Backoff, ran_for: float | None) -> float:
        if ran_for is not None and ran_for >= backoff.reset_after:
            self.attempt = 0
        delay = backoff.delay(self.attempt)
        self.attempt += 1
        return delay

    def reset(self) -> None:
        self.attempt = 0


class Intensity:
    """OTP restart intensity: at most ``max_restarts`` restarts in any ``period`` seconds."""

    def __init__(self, max_restarts: int, period: float) -> None:
        self.max_restarts = max_restarts
        self.period = period
        self.times: list[float] = []

    def allow(self, now: float) -> bool:
        """Record a restart at ``now``; False once the limit is exceeded."""
        self.times = [t for t in self.times if now - t < self.period]
        self.times.append(now)
        return len(self.times) <= self.max_restarts


def check_seconds(value: Any, field_name: str, default: float | None = None) -> float:
    """A duration in seconds: a finite number > 0 (not a bool, not text).

    With a ``default``, None means that default.
    """
    if value is None and default is not None:
        return float(default)
    hint = f", or None for the default ({default:g}s)" if default is not None else ""
    _need(_number(value) and value > 0, field_name, value,
          f"must be a finite number of seconds > 0{hint}")
    return float(value)


def check_count(value: Any, field_name: str, minimum: int = 1) -> int:
    """A whole number >= ``minimum`` (not a bool, not a float, not text)."""
    _need(isinstance(value, int) and not isinstance(value, bool) and value >= minimum, field_name,
          value, f"must be a whole number >= {minimum}")
    return int(value)


def check_name(name: Any, what: str = "name") -> str:
    _need(isinstance(name, str) and bool(NAME_RE.match(name)), what, name,
          "use 1-64 letters, digits, '_', '-' or '.', not starting with '-' or '.'")
    return name


def check_child_options(restart: Any, security_level: Any, shutdown_timeout: Any,
                        start_timeout: Any) -> None:
    _need(restart in RESTART_TYPES, "restart", restart,
          f"must be one of {', '.join(RESTART_TYPES)}")
    _need(security_level in SECURITY_LEVELS, "security_level", security_level,
          f"must be one of {', '.join(SECURITY_LEVELS)}")
    _need((_number(shutdown_timeout) and shutdown_timeout > 0) or shutdown_timeout in SHUTDOWN_WORDS,
          "shutdown_timeout", shutdown_timeout,
          "must be a finite number > 0 (seconds), 'brutal_kill' (kill at once) or 'infinity' (wait)")
    _need(_number(start_timeout) and start_timeout > 0, "start_timeout", start_timeout,
          "must be a finite number > 0 (seconds)")


def check_hang_timeout(hang_timeout: Any) -> float | None:
    """``None`` (no watchdog) or seconds > 0."""
    if hang_timeout is None:
        return None
    _need(_number(hang_timeout) and hang_timeout > 0, "hang_timeout", hang_timeout,
          "must be a finite number > 0 (seconds), or None to turn the watchdog off")
    return float(hang_timeout)


def check_significant(significant: Any, restart: str) -> bool:
    """OTP refuses a significant permanent child (it would never end normally for good)."""
    _need(isinstance(significant, bool), "significant", significant, "must be true or false")
    _need(not (significant and restart == "permanent"), "significant", significant,
          "applies to transient or temporary children only, not restart='permanent'")
    return significant


def should_restart(restart: str, normal: bool) -> bool:
    """OTP restart types: permanent always, transient only after a failure, temporary never."""
    return restart == "permanent" or (restart == "transient" and not normal)
