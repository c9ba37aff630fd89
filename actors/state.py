"""ToolState and the transition graph that every tool and supervisor follows.

A transition the graph does not allow raises ``InvalidTransition`` and changes
nothing; an allowed one is recorded with its time so it can be shown.
"""

from __future__ import annotations

import time
from enum import StrEnum

from actors.errors import InvalidTransition


class ToolState(StrEnum):
    CREATED = "created"
    INITIALIZING = "initializing"
    READY = "ready"
    RUNNING = "running"
    PAUSED = "paused"
    STOPPING = "stopping"
    STOPPED = "stopped"
    RESTARTING = "restarting"
    FAILED = "failed"


S = ToolState

#: Allowed transitions: from -> the states it may move to.
TRANSITIONS: dict[ToolState, frozenset[ToolState]] = {
    S.CREATED: frozenset({S.INITIALIZING, S.STOPPED, S.FAILED}),
    S.INITIALIZING: frozenset({S.READY, S.STOPPING, S.RESTARTING, S.FAILED}),
    S.READY: frozenset({S.RUNNING, S.STOPPING, S.RESTARTING, S.FAILED}),
    S.RUNNING: frozenset({S.PAUSED, S.STOPPING, S.RESTARTING, S.FAILED}),
    S.PAUSED: frozenset({S.RUNNING, S.STOPPING, S.RESTARTING, S.FAILED}),
    S.STOPPING: frozenset({S.STOPPED, S.RESTARTING, S.FAILED}),
    S.STOPPED: frozenset({S.INITIALIZING, S.RESTARTING}),
    S.RESTARTING: frozenset({S.INITIALIZING, S.STOPPING, S.STOPPED, S.FAILED}),
    S.FAILED: frozenset({S.INITIALIZING, S.RESTARTING, S.STOPPED}),
}


def allowed(src: ToolState, dst: ToolState) -> bool:
    return dst in TRANSITIONS[src]


def check(src: ToolState, dst: ToolState, what: str = "") -> None:
    """Raise ``InvalidTransition`` unless ``src -> dst`` is in the graph."""
    if not allowed(src, dst):
        subject = f"{what}: " if what else ""
        ok = ", ".join(sorted(s.value for s in TRANSITIONS[src])) or "nothing"
        raise InvalidTransition(
            f"{subject}cannot go from {src.value} to {dst.value}; "
            f"from {src.value} it may go to: {ok}")


class StateMachine:
    """Holds one state, moves it only along the graph, remembers recent moves.

    A supervisor keeps one per child: the moves are a plain list trimmed to ``history``
    (a ``deque(maxlen=64)`` took 760 bytes from the first move on, 0.7 KiB of a
    supervisor's memory per child; issue 10), and the machine has slots."""

    __slots__ = ("state", "since", "history", "_keep")

    def __init__(self, initial: ToolState = S.CREATED, history: int = 64) -> None:
        self.state = initial
        self.since = time.time()
        self.history: list[tuple[float, str, str]] = []  # the last ``history`` moves, oldest first
        self._keep = history

    def go(self, dst: ToolState, what: str = "") -> ToolState:
        """Move to ``dst`` (a no-op if already there); returns the old state."""
        old = self.state
        if dst is old:
            return old
        check(old, dst, what)
        self.state = dst
        self.since = time.time()
        self.history.append((self.since, old.value, dst.value))
        if len(self.history) > self._keep:
            del self.history[0]
        return old

    def force(self, dst: ToolState) -> None:
        """Set the state without checking: for facts (a process died), not requests."""
        if dst is not self.state:
            self.history.append((time.time(), self.state.value, dst.value))
            if len(self.history) > self._keep:
                del self.history[0]
            self.state = dst
            self.since = time.time()
