"""Handles: what user code holds to talk to a tool or a supervisor.

A handle is a path (``"workers/counter"``) plus the system it lives in; it
finds the current instance on every use, so it stays valid across restarts.
Handles are safe to share between threads.
"""

from __future__ import annotations

from collections.abc import Awaitable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from loguru import logger

from actors.errors import CallTimeout, ToolError, ToolUnavailable
from actors.fastpath import DEFAULT_MAX_CALLERS
from actors.permissions import SYSTEM_TOOLS
from actors.state import ToolState
from supervisors.recovery.diagnostics import FailureRecord
from supervisors.resources.usage import blank
from supervisors.tree.hooks import LifecycleHook
from supervisors.tree.policy import DEFAULT_HANG_TIMEOUT, Policy
from supervisors.tree.specs import supervisor_spec, tool_spec

if TYPE_CHECKING:
    from supervisors.host.system import ToolSystem


@dataclass(frozen=True)
class ToolStatus:
    """A snapshot of one tool (or supervisor) as its supervisor sees it."""

    name: str
    path: str
    kind: str
    state: ToolState
    pid: int | None
    restarts: int
    last_error: str | None
    generation: int = 0
    restart: str = "permanent"
    security_level: str | None = None
    since: float = 0.0
    usage: dict[str, Any] = field(default_factory=dict)
    reputation: float | None = None  # 0..100, higher is better (supervisors.security.reputation)
    busy: dict[str, Any] | None = None   # {"command": name, "since": time.time()} while busy
    hang_timeout: float | None = None
    #: The circuit breaker: {"state": closed|open|half_open, "retry_at", "failures", ...}
    breaker: dict[str, Any] | None = None

    @classmethod
    def from_info(cls, info: dict[str, Any]) -> ToolStatus:
        return cls(name=info["name"], path=info["path"], kind=info["kind"],
                   state=ToolState(info["state"]), pid=info.get("pid"),
                   restarts=int(info.get("restarts", 0)), last_error=info.get("last_error"),
                   generation=int(info.get("generation", 0)),
                   restart=info.get("restart", "permanent"),
                   security_level=info.get("security_level"), since=info.get("since", 0.0),
                   usage={**blank(), **(info.get("usage") or {})} if info["kind"] == "tool"
                   else dict(info.get("usage") or {}), reputation=info.get("reputation"),
                   busy=info.get("busy"), hang_timeout=info.get("hang_timeout"),
                   breaker=info.get("breaker"))


RECORDS_SHOWN = 100


def _key(record: dict[str, Any]) -> tuple[Any, ...]:
    return (round(float(record.get("time") or 0.0), 6), record.get("kind"), record.get("message"))


def _split(path: str) -> tuple[str, str]:
    parent, _, name = path.rpartition("/")
    return parent, name


class _Node:
    def __init__(self, system: ToolSystem, path: str) -> None:
        self.system = system
        self.path = path

    @property
    def name(self) -> str:
        return _split(self.path)[1] or "root"

    def _control(self, op: str, timeout: float | None) -> ToolStatus:
        if not self.path:
            raise ToolError("the root supervisor cannot be stopped, started or restarted; "
                            "leave the ToolSystem block to end everything")
        parent, name = _split(self.path)
        try:
            info = self.system._request(parent, "control", {"name": name, "op": op}, timeout)
        except ToolError as exc:
            exc.tool = self.path  # the error is about this child, not its supervisor
            raise
        finally:
            if "#" in name:  # a pool's instance: the pool's next call lists it again
                self.system.pools.stale(f"{parent}/{name.rpartition('#')[0]}".strip("/"))
        return ToolStatus.from_info(info)

    def stop(self, timeout: float | None = None) -> ToolStatus:
        """Stop it; no restart type brings it back until ``start()``."""
        return self._control("stop", timeout)

    def start(self, timeout: float | None = None) -> ToolStatus:
        """Start it again after ``stop()`` or after it FAILED."""
        return self._control("start", timeout)

    def restart(self, timeout: float | None = None) -> ToolStatus:
        """Stop (if running) and start again; does not count against restart intensity."""
        return self._control("restart", timeout)

    def status(self, timeout: float | None = None) -> ToolStatus:
        if not self.path:
            info = self.system._request("", "inspect", {}, timeout)
            return ToolStatus(name="root", path="", kind="supervisor",
                              state=ToolState(info["state"]), pid=info["pid"], restarts=0,
                              last_error=info.get("last_error"))
        parent, name = _split(self.path)
        try:
            info = self.system._request(parent, "status", {"name": name, "children": False},
                                        timeout)
        except CallTimeout:
            raise
        except ToolUnavailable:  # its supervisor is down: ask the nearest one that runs
            info = self._status_from_above(timeout)
        if info["kind"] == "tool" and info.get("pid"):
            try:
                found = self.system.usage([self.path], timeout).get(self.path) or {}
            except ToolError:
                found = {}
            info["usage"] = found if found.get("pid") == info["pid"] else {}
        if info["kind"] == "tool":
            info["reputation"] = self.system.security.reputation_of(self.path)
        return ToolStatus.from_info(info)

    def usage_history(self, since: float = 0.0, timeout: float | None = None) -> dict[str, Any]:
        """This tool's work history from the accountant (see ``ToolSystem.usage_history``);
        ``{}`` if the accountant does not track it (not running)."""
        return self.system.usage_history([self.path], since=since, timeout=timeout).get(self.path, {})

    def _status_from_above(self, timeout: float | None) -> dict[str, Any]:
        parts = self.path.split("/")
        for k in range(len(parts) - 2, -1, -1):
            try:
                return dict(self.system._request("/".join(parts[:k]), "status_below",
                                                 {"name": parts[k], "rest": parts[k + 1:]}, timeout))
            except CallTimeout:
                raise
            except ToolUnavailable:
                continue
        raise ToolUnavailable(f"no running supervisor above {self.path} knows it", tool=self.path)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.path or '(root)'}>"


class ToolHandle(_Node):
    """Calls and lifecycle operations for one tool, found by its path."""

    def call(self, command: str, /, timeout: float | None = None, **args: Any) -> Any:
        """Run ``command`` with keyword ``args`` and return its result.

        Raises ``ToolError`` (with the remote type, message and traceback) if the
        command raised, ``UnknownCommand`` / ``BadArguments`` for a bad request,
        ``ToolUnavailable`` if the tool is stopped, failed or died during the
        call, and ``CallTimeout`` after ``timeout`` seconds. A call made while the
        tool restarts waits for the new instance (within ``timeout``).
        """
        return self.system._call(self.path, command, args, timeout)

    def call_many(self, calls: Iterable[tuple[str, dict[str, Any]]],
                  timeout: float | None = None) -> list[Any]:
        """Run several calls in one message, in order; a failed item is its exception.

        The tool runs every item even if an earlier one failed. If the batch is
        refused or undeliverable as a whole (tool stopped, paused with its hold
        queue full, timeout, too large), that one error is raised.
        """
        return self.system._batch(self.path, list(calls), timeout)

    def acall(self, command: str, /, timeout: float | None = None, **args: Any) -> Awaitable[Any]:
        """``call`` for asyncio code (``await tool.acall(...)``): many calls may be in
        flight from one thread.

        Bounded windows (per connection and per tool) apply backpressure: a call
        waits for a slot until its deadline, then raises ``ToolOverloaded``.
        """
        return self.system._acall(self.path, command, args, timeout)

    def errors(self, timeout: float | None = None) -> list[FailureRecord]:
        """This tool's failure records, oldest first (the last 100): command errors,
        timeouts, crashes, kills, init failures, quota actions (docs/recovery.md).

        Its supervisor's records, together with the copies in the context store (which
        outlive a restart of the supervisor or of the whole system)."""
        parent, name = _split(self.path)
        records = {_key(r): r for r in self.system._request(parent, "errors", {"name": name},
                                                             timeout)}
        if self.system.data_dir:  # the store's copies outlive a supervisor (or system) restart
            try:
                for r in self.system.store().call("errors", timeout=timeout, tool=self.path):
                    records.setdefault(_key(r), r)
            except ToolError:
                pass
        ordered = sorted(records.values(), key=lambda r: float(r.get("time") or 0.0))
        return [FailureRecord.from_dict(r) for r in ordered[-RECORDS_SHOWN:]]

    def scale(self, n: int, timeout: float | None = None) -> Any:
        """Only a pool can be scaled (``PoolHandle.scale``); a single tool raises ``ToolError``."""
        raise ToolError(f"{self.path} is a single tool, not a pool: scale({n!r}) needs a pool; "
                        "spawn it with replicas=N (or replicas = N in its config)", tool=self.path)

    def pause(self, timeout: float | None = None) -> ToolStatus:
        """Run ``on_pause``; later calls are held, in order, until ``resume()``."""
        return self._control("pause", timeout)

    def resume(self, timeout: float | None = None) -> ToolStatus:
        """Run ``on_resume`` and serve the held calls in the order they came."""
        return self._control("resume", timeout)


class SupervisorHandle(_Node):
    """Build and tune one supervisor's part of the tree."""

    def _child_path(self, name: str) -> str:
        return f"{self.path}/{name}" if self.path else name

    def spawn(self, actor: type | str, name: str, config: dict[str, Any] | None = None, *,
              restart: str = "permanent", security_level: str = "standard",
              shutdown_timeout: float | str = 5.0, start_timeout: float = 10.0,
              hold_limit: int = 10_000, limits: dict[str, Any] | None = None,
              on_limit: str = "restart", adaptive: bool = False, hard_memory: bool = False,
              max_callers: int = DEFAULT_MAX_CALLERS, security: dict[str, Any] | None = None,
              hang_timeout: float | None = DEFAULT_HANG_TIMEOUT, significant: bool = False,
              timeout: float | None = None, replicas: Any = None) -> ToolHandle:
        """Start a tool under this supervisor and return its handle.

        ``actor`` is a ToolActor subclass or ``"module:Class"``. ``security_level``
        supplies default limits and their ceilings; ``limits`` may ask for less
        (``{"memory_mb": 64, "open_files": 64, ...}``, see ``supervisors.resources.quotas``);
        ``on_limit`` says what happens at 100 % of a limit (alert, pause, restart,
        stop); ``adaptive`` lets limits follow the tool's own usage forecast;
        ``hard_memory`` also caps its address space in the kernel. ``max_callers`` caps
        the connections callers hold to its socket at once (they do not count as its
        open files; one more is refused with ``ToolOverloaded``). ``security`` is the
        tool's security context (``{"permissions": [...], "audit": "all", "env": {...},
        "workdir": ..., "umask": ...}``, see docs/security.md). ``hang_timeout``
        (seconds, None = off): the watchdog kills a tool busy in one command or callback,
        or stopped, for longer. ``shutdown_timeout`` also takes ``"brutal_kill"`` and
        ``"infinity"``; ``significant=True`` (transient or temporary only) makes its normal
        exit count for the supervisor's ``auto_shutdown``. Bad values raise
        ``SpecError`` at once; a failing ``on_init`` raises ``ToolError`` and the
        tool is not kept (as OTP's ``start_child``).

        ``replicas=N`` (or ``{"min": 1, "max": 8, "target_busy": 0.7}`` to autoscale)
        makes a pool: N instances ``name#1..#N``, one ``PoolHandle`` (docs/scaling.md).
        """
        if replicas is not None:
            from supervisors.host.pools import spawn_pool

            return spawn_pool(self, actor, name, config, replicas, timeout,
                              restart=restart, security_level=security_level,
                              shutdown_timeout=shutdown_timeout, start_timeout=start_timeout,
                              hold_limit=hold_limit, limits=limits, on_limit=on_limit,
                              adaptive=adaptive, hard_memory=hard_memory, max_callers=max_callers,
                              security=security, hang_timeout=hang_timeout, significant=significant)
        spec = tool_spec(actor, name, config, restart=restart, security_level=security_level,
                         shutdown_timeout=shutdown_timeout, start_timeout=start_timeout,
                         hold_limit=hold_limit, limits=limits, on_limit=on_limit,
                         adaptive=adaptive, hard_memory=hard_memory, max_callers=max_callers,
                         security=security, hang_timeout=hang_timeout, significant=significant)
        try:
            self.system._request(self.path, "spawn", {"spec": spec}, timeout or start_timeout + 5.0)
        except ToolError as exc:
            exc.tool = self._child_path(name)
            raise
        self.system.security.note_spec(self._child_path(name), spec)
        return ToolHandle(self.system, self._child_path(name))

    def supervise(self, name: str, policy: Policy | None = None,
                  hooks: Sequence[LifecycleHook] = (), *, restart: str = "permanent",
                  shutdown_timeout: float | str = 60.0, significant: bool = False,
                  timeout: float | None = None) -> SupervisorHandle:
        """Start a nested supervisor (with its own policy and hooks) under this one."""
        spec = supervisor_spec(name, policy, hooks, restart=restart,
                               shutdown_timeout=shutdown_timeout, significant=significant)
        return self.add(spec, timeout)

    def add(self, spec: dict[str, Any], timeout: float | None = None) -> SupervisorHandle:
        """Start a whole subtree from a spec (as built by ``supervisors.tree.specs``)."""
        self.system._request(self.path, "spawn", {"spec": spec},
                             timeout or float(spec.get("start_timeout", 60.0)) + 5.0)
        self.system.security.note_spec(self._child_path(spec["name"]), spec)
        return SupervisorHandle(self.system, self._child_path(spec["name"]))

    def set_policy(self, policy: Policy, timeout: float | None = None) -> Policy:
        """Change strategy, intensity or backoff now; children keep running."""
        if not isinstance(policy, Policy):
            raise TypeError("set_policy takes a Policy")
        return Policy.from_dict(self.system._request(self.path, "set_policy",
                                                     {"policy": policy.to_dict()}, timeout))

    def remove(self, name: str, timeout: float | None = None) -> None:
        """Stop a child (if running) and forget it, with its stored context; for a pool,
        every instance (and its autoscaler)."""
        if "#" not in name and self.system.pools.is_pool(self._child_path(name)):
            instances = self.system.pools.members(self._child_path(name), fresh=True)
            self.system.pools.remove(self._child_path(name))
            for inst in instances:
                self.remove(_split(inst)[1], timeout)
            return
        self.system._request(self.path, "remove", {"name": name}, timeout)
        self.system.pools.remove_under(self._child_path(name))  # (a supervisor's pools go too)
        if self.system.data_dir:
            try:
                self.system.store().call("forget", timeout=timeout, path=self._child_path(name))
            except ToolError as exc:
                logger.warning("the stored context of {} was not removed: {}",
                               self._child_path(name), exc)

    def set_context(self, timeout: float | None = None, **values: Any) -> dict[str, Any]:
        """Set keys of this supervisor's context (the root's: the system's); the tools
        beneath it read them as a fallback for keys they do not have. Stored at once;
        a tool reads its ancestors' contexts when it starts."""
        return self.system.store().call("merge", timeout=timeout, path=self.path, values=values)

    def tool(self, name: str) -> ToolHandle:
        return self.system.tool(self._child_path(name))

    def supervisor(self, name: str) -> SupervisorHandle:
        return SupervisorHandle(self.system, self._child_path(name))

    def count(self, timeout: float | None = None) -> dict[str, int]:
        """OTP's ``count_children``: ``specs`` (children), ``active`` (with a live process),
        ``supervisors`` and ``workers`` (tools). Answers at once, even during a restart."""
        return dict(self.system._request(self.path, "count", {}, timeout))

    def children(self, timeout: float | None = None) -> list[ToolStatus]:
        info = self.system._request(self.path, "inspect", {}, timeout)
        return [ToolStatus.from_info(c) for c in info["children"]
                if self.path or c["name"] not in SYSTEM_TOOLS]  # the system's own tools
