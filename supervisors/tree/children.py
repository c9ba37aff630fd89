"""Child: a supervisor's record of one child (tool, nested supervisor or the accountant)."""

from __future__ import annotations

from typing import Any

from actors.messages import Exiting
from actors.state import StateMachine, ToolState
from supervisors.tree.kept import compact
from supervisors.tree.policy import DEFAULT_HANG_TIMEOUT, BackoffState
from supervisors.tree.specs import start_budget

S = ToolState


class LiveIndex:
    """A supervisor's live children by pid and by address text, kept up to date by each
    Child's ``pid`` and ``address`` setters. An exit notice names a pid or an address;
    found by a scan over every child, each exit cost O(children), and the shutdown of
    1,000 tools under one supervisor was quadratic (issue 10)."""

    def __init__(self) -> None:
        self.by_pid: dict[int, Child] = {}
        self.by_key: dict[str, Child] = {}
        self.starting: dict[int, Child] = {}  # id -> child: an address, no pid yet

    def moved(self, child: Child, old_pid: int | None, old_key: str | None) -> None:
        """``child``'s pid was ``old_pid`` and its address text ``old_key``."""
        if child.pid != old_pid:
            if old_pid is not None and self.by_pid.get(old_pid) is child:
                del self.by_pid[old_pid]  # (a pid used again since is another child's now)
            if child.pid is not None:
                self.by_pid[child.pid] = child
        if child.address_key != old_key:
            if old_key is not None and self.by_key.get(old_key) is child:
                del self.by_key[old_key]
            if child.address_key is not None:
                self.by_key[child.address_key] = child
        if child.alive and child.pid is None:
            self.starting[id(child)] = child
        else:
            self.starting.pop(id(child), None)

    def forget(self, child: Child) -> None:
        """``child`` is no longer the supervisor's (removed)."""
        if child.pid is not None and self.by_pid.get(child.pid) is child:
            del self.by_pid[child.pid]
        if child.address_key is not None and self.by_key.get(child.address_key) is child:
            del self.by_key[child.address_key]
        self.starting.pop(id(child), None)
        child.index = None


class Child:
    """The supervisor's record of one child (tool or supervisor)."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self._spec: dict[str, Any] = {}
        self.spec = spec
        self.name: str = spec["name"]
        self.kind: str = spec.get("kind", "tool")
        self.sm = StateMachine(S.CREATED)
        self.index: LiveIndex | None = None  # the supervisor's, once it holds this child
        self._address: Any = None
        self.address_key: str | None = None  # str(address), kept with it (Supervisor._at)
        self._pid: int | None = None
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
    def spec(self) -> dict[str, Any]:
        """The spec this child is started from. A child supervisor's own children are kept
        compactly (``supervisors.tree.kept``); ``full_spec`` gives it whole for the wire."""
        return self._spec

    @spec.setter
    def spec(self, value: dict[str, Any]) -> None:
        self._spec = compact(value)

    @property
    def state(self) -> ToolState:
        return self.sm.state

    @property
    def address(self) -> Any:
        return self._address

    @address.setter
    def address(self, value: Any) -> None:
        # (its text, compared by Supervisor._at instead of Thespian's slower __eq__)
        old_key = self.address_key
        self._address = value
        self.address_key = None if value is None else str(value)
        if self.index is not None:
            self.index.moved(self, self._pid, old_key)

    @property
    def pid(self) -> int | None:
        return self._pid

    @pid.setter
    def pid(self, value: int | None) -> None:
        old = self._pid
        self._pid = value
        if self.index is not None:
            self.index.moved(self, old, self.address_key)

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
