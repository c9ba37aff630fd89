"""Child: a supervisor's record of one child (tool, nested supervisor or the accountant)."""

from __future__ import annotations

from typing import Any

from actors.messages import Exiting
from actors.state import StateMachine, ToolState
from supervisors.tree.kept import compact, keep, unpack_spec
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
    """The supervisor's record of one child (tool or supervisor).

    A supervisor of 1,000 tools keeps 1,000 of these, so a record is small (issue 10): it
    has slots; a tool's spec is kept packed (``supervisors.tree.kept``: about 60 bytes
    against 1.3 KiB as a dict) and read back whole, as a new dict, by ``spec``; the
    descriptors the tool inherited are kept as runs; no waiter or failure record is a
    list of its own until there is one."""

    __slots__ = ("_spec", "_hang_timeout", "name", "kind", "sm", "index", "_address",
                 "address_key", "_pid", "socket", "tmpdir", "_inherited_fds", "generation",
                 "restarts", "last_error", "operator_stopped", "backoff", "started_at",
                 "exit_report", "stopping_to", "waiters", "snapshot", "stopped_since", "hung",
                 "records", "breaker")

    def __init__(self, spec: dict[str, Any]) -> None:
        self.kind: str = spec.get("kind", "tool")
        self.spec = spec
        self.name: str = spec["name"]
        self.sm = StateMachine(S.CREATED)
        self.index: LiveIndex | None = None  # the supervisor's, once it holds this child
        self._address: Any = None
        self.address_key: str | None = None  # str(address), kept with it (Supervisor._at)
        self._pid: int | None = None
        self.socket: str | None = None
        self.tmpdir: str | None = None
        self._inherited_fds: tuple[int, ...] = ()
        self.generation = 0
        self.restarts = 0
        self.last_error: str | None = None
        self.operator_stopped = False
        self.backoff = BackoffState()
        self.started_at: float | None = None
        self.exit_report: Exiting | None = None
        self.stopping_to: ToolState | None = None  # while a stop runs: the state it ends in
        # parked resolves (cid, sender, not_pid); () until the first one
        self.waiters: list[tuple[int, Any, int | None]] | tuple[()] = ()
        self.snapshot: list[dict[str, Any]] | None = None  # a dead supervisor's children, last seen
        self.stopped_since: float | None = None  # watchdog: when its process was first seen stopped
        self.hung: dict[str, Any] | None = None  # watchdog: why it killed this instance
        # failure records (supervisors/tree/diagnosing); () until the first one
        self.records: list[dict[str, Any]] | tuple[()] = ()
        self.breaker: dict[str, Any] | None = None  # the tool's last breaker snapshot

    @property
    def spec(self) -> dict[str, Any]:
        """The spec this child is started from. A tool's is kept packed and given back as a
        new dict (changing it changes nothing kept); a child supervisor's is kept as a dict,
        its own children kept compactly (``supervisors.tree.kept``): ``full_spec`` gives it
        whole for the wire."""
        kept = self._spec
        return kept if isinstance(kept, dict) else unpack_spec(kept)

    @spec.setter
    def spec(self, value: dict[str, Any]) -> None:
        # (a supervisor's stays a dict: its parent applies changes below it in place)
        self._spec = compact(value) if self.kind == "supervisor" else keep(value)
        self._hang_timeout = _hang_timeout(self.kind, value)  # (the watchdog reads it often)

    @property
    def inherited_fds(self) -> list[int]:
        """The descriptors the tool's process inherited (not counted as its own files)."""
        out: list[int] = []
        runs = self._inherited_fds
        for i in range(0, len(runs), 2):
            out.extend(range(runs[i], runs[i + 1]))
        return out

    @inherited_fds.setter
    def inherited_fds(self, fds: list[int]) -> None:
        self._inherited_fds = _runs(fds)

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
        return restart_type(self.spec)

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
        return self._hang_timeout

    @property
    def start_timeout(self) -> float:
        return start_budget(self.spec)


def restart_type(spec: dict[str, Any]) -> str:
    return spec.get("restart", "permanent")


def _hang_timeout(kind: str, spec: dict[str, Any]) -> float | None:
    if kind != "tool":
        return None
    value = spec.get("hang_timeout", DEFAULT_HANG_TIMEOUT)
    return None if value is None else float(value)


def _runs(fds: list[int]) -> tuple[int, ...]:
    """``fds`` as (start, stop) pairs of consecutive numbers, flat: [0, 1, 2, 7] -> (0, 3, 7,
    8). A tool inherits about 30, mostly 0 to 28: a tuple of four against a list of 30."""
    out: list[int] = []
    for fd in sorted(set(fds)):
        if out and out[-1] == fd:
            out[-1] = fd + 1
        else:
            out += (fd, fd + 1)
    return tuple(out)


def describe(error: dict[str, Any] | None) -> str:
    if not error:
        return "unknown error"
    kind = error.get("type") or "Error"
    return f"{kind}: {error.get('message', '')}"
