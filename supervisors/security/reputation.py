"""Reputation: a tool's record of misbehaviour as a score that recovers with time.

    score(t) = max(0, 100 - sum(penalty_i * 0.5 ** ((t - t_i) / half_life)))

over the tool's incidents i (at times t_i). Penalties: crash (``failed``,
``escalated``) 10, hang (``hung``, ``killed``) 15, quota breach (``limit
exceeded``, ``stopped at its limit``) 10, command error 2, denial 5. With the
default half-life of 300 s a crash costs 10 points now, 5 in five minutes,
and is forgotten after an hour or so. Higher is better; 100 is a clean record.

Below ``threshold`` (default 50) a tool is *restricted*: its calls to other
tools are refused (see ``supervisors.security.context.check_tool_call``) until
the score climbs back. Crossing the threshold either way is reported by
``changes()`` so the host can audit it.
"""

from __future__ import annotations

import time
from collections import defaultdict

PENALTIES = {"crash": 10.0, "hang": 15.0, "breach": 10.0, "error": 2.0, "denial": 5.0}
EVENT_KINDS = {"failed": "crash", "escalated": "crash", "hung": "hang", "killed": "hang",
               "limit exceeded": "breach", "stopped at its limit": "breach",
               "denied": "denial"}  # a tool's call to another tool was refused (DENIED_EVENT)
MAX_INCIDENTS = 200  # per tool: older ones weigh almost nothing anyway


class Reputation:
    def __init__(self, half_life: float = 300.0, threshold: float = 50.0) -> None:
        if half_life <= 0 or not 0 <= threshold <= 100:
            raise ValueError(f"half_life={half_life!r} must be > 0 and threshold={threshold!r} in 0..100")
        self.half_life = float(half_life)
        self.threshold = float(threshold)
        self.incidents: dict[str, list[tuple[float, float]]] = defaultdict(list)
        self._seen_events: set[tuple[float, str, str]] = set()
        self._restricted: set[str] = set()

    def record(self, path: str, kind: str, at: float | None = None) -> None:
        if kind not in PENALTIES:
            raise ValueError(f"unknown incident kind {kind!r}; use one of {', '.join(PENALTIES)}")
        items = self.incidents[path]
        items.append((time.time() if at is None else at, PENALTIES[kind]))
        if len(items) > MAX_INCIDENTS:
            del items[: len(items) - MAX_INCIDENTS]

    def observe(self, events: list[dict]) -> None:
        """Take incidents from the root's event log (each event counted once)."""
        for e in events:
            kind = EVENT_KINDS.get(e.get("event", ""))
            if kind is None:
                continue
            key = (float(e.get("time", 0.0)), str(e.get("path", "")), str(e.get("event")))
            if key in self._seen_events:
                continue
            self._seen_events.add(key)
            self.record(key[1], kind, key[0])
        if len(self._seen_events) > 10_000:  # only the newest can come again (the log is read by time)
            newest = max(k[0] for k in self._seen_events)
            self._seen_events = {k for k in self._seen_events if k[0] >= newest}

    def score(self, path: str, now: float | None = None) -> float:
        now = time.time() if now is None else now
        lost = sum(p * 0.5 ** (max(0.0, now - t) / self.half_life) for t, p in self.incidents.get(path, ()))
        return round(max(0.0, 100.0 - lost), 1)

    def restricted(self, path: str, now: float | None = None) -> bool:
        return self.score(path, now) < self.threshold

    def changes(self, paths: list[str] | None = None,
                now: float | None = None) -> list[tuple[str, bool, float]]:
        """(path, restricted now, score) for each tool whose side of the threshold changed."""
        out = []
        for path in paths if paths is not None else list(self.incidents):
            s = self.score(path, now)
            low = s < self.threshold
            if low != (path in self._restricted):
                (self._restricted.add if low else self._restricted.discard)(path)
                out.append((path, low, s))
        return out
