"""An actor's timers in one heap, with one Thespian wakeup armed for the earliest.

Thespian keeps its pending wakeups in a list that it sorts again on every
``wakeupAfter``, and cannot cancel one. A supervisor arms a timer for every child
it starts (the start timeout) and more per restart, so with hundreds of children
each new timer cost O(pending) Python comparisons (profiled: about 2 ms per spawn
at 600 children under one supervisor). Here a timer is a heap push; Thespian is
asked for a wakeup only when the new timer is due before every wakeup already
armed, so it holds one or two at a time.
"""

from __future__ import annotations

import heapq
import itertools
import time
from typing import Any

WAKEUP = "__timers__"  # the payload of the Thespian wakeups this module arms


class Timers:
    """Deadlines and payloads; ``add`` says when Thespian must be asked for a wakeup."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Any]] = []
        self._order = itertools.count()
        self._armed: list[float] = []  # deadlines of the Thespian wakeups still to ring

    def __len__(self) -> int:
        return len(self._heap)

    def add(self, delay: float, payload: Any) -> float | None:
        """Keep ``payload`` for ``delay`` seconds; the delay to arm a wakeup for, or None."""
        when = time.monotonic() + max(0.0, delay)
        heapq.heappush(self._heap, (when, next(self._order), payload))
        return self._arm(when)

    def rang(self) -> tuple[list[Any], float | None]:
        """A wakeup rang: the payloads due now (in deadline order), and the delay to arm next."""
        if self._armed:
            heapq.heappop(self._armed)
        now = time.monotonic()
        due = []
        while self._heap and self._heap[0][0] <= now:
            due.append(heapq.heappop(self._heap)[2])
        return due, (self._arm(self._heap[0][0]) if self._heap else None)

    def _arm(self, when: float) -> float | None:
        if self._armed and self._armed[0] <= when:
            return None  # an armed wakeup rings first; it will arm the next one
        heapq.heappush(self._armed, when)
        return max(0.0, when - time.monotonic())
