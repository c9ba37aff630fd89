"""The root supervisor's event log: the last ``kept`` lifecycle events of the whole tree.

An event is a dict ``{"time", "path", "event", "detail", "state"}``. Kept as such, each
cost about 440 bytes (a five-key dict, a float and three strings of its own); 2,000 of
them were about 0.9 MiB of the root's memory (issue 10). An event of that exact shape
(those keys in that order, a float and four strings) is kept as the msgpack array of its
five values, about 80 bytes, and read back as an equal dict with its keys in the same
order (a query decodes only the events it answers with). Anything else is kept as it came.
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Iterator
from typing import Any

from actors.codec import pack_value, unpack_value

KEYS = ("time", "path", "event", "detail", "state")
_TYPES = (float, str, str, str, str)
_TIME = struct.Struct(">d")  # a packed event starts 0x95 (five items), 0xcb (a float64), the time


class EventLog:
    """The last ``kept`` events, oldest first."""

    def __init__(self, kept: int) -> None:
        self._events: deque[bytes | dict[str, Any]] = deque(maxlen=kept)

    def append(self, event: dict[str, Any]) -> None:
        self._events.append(_pack(event))

    def since(self, since: float) -> list[dict[str, Any]]:
        """The events later than ``since`` (seconds since the epoch), as dicts."""
        return [_unpack(e) for e in self._events if _time(e) > since]

    def packed_since(self, since: float) -> list[bytes | dict[str, Any]]:
        """The events later than ``since`` as they are kept (``unpack_events`` reads them):
        answered as dicts, the root built them all at once, and 1,071 left it 0.8 MiB
        larger for good (the allocators keep the pages they freed)."""
        return [e for e in self._events if _time(e) > since]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return (_unpack(e) for e in self._events)

    def __len__(self) -> int:
        return len(self._events)


def unpack_events(items: list[bytes | dict[str, Any]]) -> list[dict[str, Any]]:
    """The events ``EventLog.packed_since`` gave, as dicts."""
    return [_unpack(e) for e in items]


def _pack(event: dict[str, Any]) -> bytes | dict[str, Any]:
    if tuple(event) != KEYS:
        return event
    values = list(event.values())
    if any(type(v) is not t for v, t in zip(values, _TYPES, strict=True)):
        return event
    try:
        return pack_value(values)
    except ValueError:  # (a string msgpack cannot encode: a lone surrogate)
        return event


def _time(entry: bytes | dict[str, Any]) -> Any:
    if type(entry) is bytes:
        return _TIME.unpack_from(entry, 2)[0]
    return entry["time"]


def _unpack(entry: bytes | dict[str, Any]) -> dict[str, Any]:
    if type(entry) is bytes:
        return dict(zip(KEYS, unpack_value(entry), strict=True))
    return entry
