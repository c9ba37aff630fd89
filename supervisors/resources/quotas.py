"""Security levels and their resource quotas, and the checks on what a tool asks for.

Each level gives every limit a default and a ceiling. A stricter level means
*tighter* limits: ``critical`` tools get the least. A tool may ask for less
than its level allows (``limits={...}`` at spawn), never for more.

Limits: ``memory_mb`` (USS), ``cpu_percent`` (of one core, averaged over a
sample), ``cpu_seconds`` (CPU time of the process in total, also set as a hard
RLIMIT_CPU), ``open_files`` (also a hard RLIMIT_NOFILE), ``connections``,
``threads`` and ``children`` (processes the tool started).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from actors.errors import SpecError

ON_LIMIT = ("alert", "pause", "restart", "stop")
WARNING_AT = 0.80   # fraction of a limit that raises a warning event
CRITICAL_AT = 0.95  # ... a critical one; at 1.0 the on_limit action runs


@dataclass(frozen=True)
class Quota:
    memory_mb: float
    cpu_percent: float
    cpu_seconds: float
    open_files: int
    connections: int
    threads: int
    children: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


LIMIT_NAMES = tuple(Quota.__dataclass_fields__)

#: level -> (default quota, ceiling). Stricter levels: lower defaults and ceilings.
LEVELS: dict[str, tuple[Quota, Quota]] = {
    "low": (Quota(512, 100, 3600, 256, 64, 64, 16), Quota(2048, 200, 86400, 1024, 256, 256, 64)),
    "standard": (Quota(256, 80, 600, 128, 32, 32, 8), Quota(1024, 100, 7200, 512, 128, 128, 32)),
    "high": (Quota(128, 50, 120, 64, 16, 16, 4), Quota(512, 80, 600, 256, 64, 64, 8)),
    "critical": (Quota(64, 30, 30, 32, 8, 8, 2), Quota(256, 50, 120, 128, 16, 32, 4)),
}


def effective_limits(level: str, asked: dict[str, Any] | None) -> dict[str, float]:
    """The level's defaults overridden by ``asked``; every value checked against the ceiling."""
    if level not in LEVELS:
        raise SpecError.invalid("security_level", level, f"must be one of {', '.join(LEVELS)}")
    default, ceiling = LEVELS[level]
    limits: dict[str, float] = default.to_dict()
    for name, value in (asked or {}).items():
        if name not in LIMIT_NAMES:
            raise SpecError.invalid(f"limits.{name}", value,
                                    f"unknown limit; known: {', '.join(LIMIT_NAMES)}")
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) \
                or value <= 0:
            raise SpecError.invalid(f"limits.{name}", value, "must be a finite number > 0")
        top = getattr(ceiling, name)
        if value > top:
            raise SpecError.invalid(f"limits.{name}", value, f"security level {level!r} allows at "
                                    f"most {top}; ask for less or use a lower level")
        limits[name] = value
    return limits


def check_on_limit(on_limit: Any) -> str:
    if on_limit not in ON_LIMIT:
        raise SpecError.invalid("on_limit", on_limit, f"must be one of {', '.join(ON_LIMIT)}")
    return str(on_limit)
