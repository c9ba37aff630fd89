"""The root supervisor's event log: the last ``kept`` lifecycle events of the whole tree.

An event is a dict ``{"time", "path", "event", "detail", "state"}``. Kept as such, each
cost about 440 bytes (a five-key dict and four strings of its own); 2,000 of them were
about 0.9 MiB of the root's memory (issue 10). An event of that exact shape is kept as a
tuple of its five values, the path, the event's name and the state interned (a tool's
events share one path; names and states come from a short list), and is read back as an
equal dict with its keys in the same order. Anything else is kept as it came.
"""

from __future__ import annotations

import sys
from collections import deque
from collections.abc import Iterator
from typing import Any

KEYS = ("time", "path", "event", "detail", "state")
_TYPES = (float, str, str, str, str)


class EventLog:
    """The last ``kept`` events, oldest first."""

    def __init__(self, kept: int) -> None:
        self._events: deque[tuple[Any, ...] | dict[str, Any]] = deque(maxlen=kept)

    def append(self, event: dict[str, Any]) -> None:
        self._events.append(_pack(event))

    def since(self, since: float) -> list[dict[str, Any]]:
        """The events later than ``since`` (seconds since the epoch), as dicts."""
        return [_unpack(e) for e in self._events if (e[0] if type(e) is tuple else e["time"]) > since]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return (_unpack(e) for e in self._events)

    def __len__(self) -> int:
        return len(self._events)


def _pack(event: dict[str, Any]) -> tuple[Any, ...] | dict[str, Any]:
    if tuple(event) != KEYS:
        return event
    values = tuple(event.values())
    if any(type(v) is not t for v, t in zip(values, _TYPES, strict=True)):
        return event
    at, path, what, detail, state = values
    return at, sys.intern(path), sys.intern(what), detail, sys.intern(state)


def _unpack(entry: tuple[Any, ...] | dict[str, Any]) -> dict[str, Any]:
    if type(entry) is tuple:
        return dict(zip(KEYS, entry, strict=True))
    return entry
