"""Child: a supervisor's record of one child (tool, nested supervisor or the accountant)."""

from __future__ import annotations

from typing import Any

from actors.messages import Exiting
from actors.state import StateMachine, ToolState
from supervisors.tree.policy import DEFAULT_HANG_TIMEOUT, BackoffState
from supervisors.tree.specs import start_budget

S = ToolState


class Child:
    """The supervisor's record of one child (tool or supervisor)."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.name: str = spec["name"]
        self.kind: str = spec.get("kind", "tool")
        self.sm = StateMachine(S.CREATED)
        self._address: Any = None
        self.address_key: str | None = None  # str(address), kept with it (Supervisor._at)
        self.pid: int | None = None
        self.socket: str | None = None
        self.tmpdir: str | None = None
        self.inherited_fds: list[int] = []
        self.generation = 0
        self.restarts = 0
        self.last_error: str | None = None
        self.operator_stopped = False
        self.backoff = BackoffState()
        self.started_at: float | None = None
        self.exit_report: Exiting | None = None
        self.stopping_to: ToolState | None = None  # while a stop runs: the state it ends in
        self.waiters: list[tuple[int, Any, int | None]] = []
        self.snapshot: list[dict[str, Any]] | None = None  # a dead supervisor's children, last seen
        self.stopped_since: float | None = None  # watchdog: when its process was first seen stopped
        self.hung: dict[str, Any] | None = None  # watchdog: why it killed this instance
        self.records: list[dict[str, Any]] = []     # failure records (supervisors/tree/diagnosing)
        self.breaker: dict[str, Any] | None = None  # the tool's last breaker snapshot

    @property
    def state(self) -> ToolState:
        return self.sm.state

    @property
    def address(self) -> Any:
        return self._address

    @address.setter
    def address(self, value: Any) -> None:
        # (its text, compared by Supervisor._at instead of Thespian's slower __eq__)
        self._address = value
        self.address_key = None if value is None else str(value)

    @property
    def alive(self) -> bool:
        return self._address is not None

    @property
    def restart_type(self) -> str:
        return self.spec.get("restart", "permanent")

    @property
    def shutdown_timeout(self) -> float | None:
        """Seconds to wait for a polite stop; 0.0 for 'brutal_kill', None for 'infinity'."""
        value = self.spec.get("shutdown_timeout", 5.0)
        if value == "brutal_kill":
            return 0.0
        if value == "infinity":
            return None
        return float(value)

    @property
    def hang_timeout(self) -> float | None:
        if self.kind != "tool":
            return None
        value = self.spec.get("hang_timeout", DEFAULT_HANG_TIMEOUT)
        return None if value is None else float(value)

    @property
    def start_timeout(self) -> float:
        return start_budget(self.spec)


def describe(error: dict[str, Any] | None) -> str:
    if not error:
        return "unknown error"
    kind = error.get("type") or "Error"
    return f"{kind}: {error.get('message', '')}"
