"""ToolSystem: the facade that starts the actor system, builds the tree, and ends it all.

``with ToolSystem() as system:`` starts a Thespian actor system on a free
loopback port with a root supervisor; leaving the block stops every tool in
reverse start order and ends every process the system started. A reaper
process and the root's own watch on the host make sure that is true even if
the host is killed.
"""

from __future__ import annotations

import asyncio
import collections
import os
import signal
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loguru import logger

from actors import logs
from actors.busy import (
    call_ids,
    died_rerunnable,
    marker_path,
    read_batch,
    unrun,
    verdict_path,
)
from actors.codec import unpack_value
from actors.errors import (
    CallTimeout,
    NotServing,
    ToolError,
    ToolUnavailable,
    error_from_wire,
)
from actors.messages import Ack, Batch, BatchReply, Call, Reply, Request, Start
from actors.permissions import SYSTEM_TOOLS
from actors.retry import with_retries, with_retries_async
from actors.timings import TIMINGS_COMMAND
from supervisors.host.aio import AsyncCalls
from supervisors.host.fastclient import NotDelivered, SocketCalls
from supervisors.host.handles import SupervisorHandle, ToolHandle, _split
from supervisors.host.transport import PeerGone, Transport
from supervisors.processes import reaper
from supervisors.processes import runtime_dir as runtime_dirs
from supervisors.processes.procs import end_session, pid_alive, session_pids
from supervisors.recovery import DB_FILE, STORE_NAME
from supervisors.recovery.store import STORE_LIMITS, ContextStore
from supervisors.resources.usage import blank
from supervisors.security import PrincipalView, SystemSecurity
from supervisors.tree import kept
from supervisors.tree.eventlog import unpack_events
from supervisors.tree.hooks import LifecycleHook, pack_hooks
from supervisors.tree.policy import Policy, check_count, check_seconds
from supervisors.tree.supervisor import SupervisorShell

CALL_PATHS = ("socket", "thespian")
DEATH_WAIT = 0.05  # seconds a caller that lost its connection waits to see the tool process end
#: How long ``tree()`` waits for a parent's list of a child supervisor's children when
#: that supervisor did not answer (``ToolSystem._kinds_kept``).
KINDS_TIMEOUT = 2.0


@dataclass(frozen=True)
class Route:
    """Where a tool or supervisor instance lives right now."""

    address: Any
    pid: int
    generation: int
    kind: str
    socket: str | None = None
    retry: dict[str, Any] | None = None  # for an idempotent call it dies in (actors.retry)


class ToolSystem:
    """The running actor system and the root of the supervision tree.

    ``policy`` applies to children spawned directly under the root; ``hooks``
    run for every tool in the system. ``call_timeout`` is the default for
    ``call``; ``op_timeout`` for lifecycle and tree operations.
    """

    #: Sessions of every actor system started in this process (for leak checks).
    started_sessions: list[int] = []

    def __init__(self, *, policy: Policy | None = None, hooks: Sequence[LifecycleHook] = (),
                 base: str = "multiprocTCPBase", call_timeout: float = 30.0,
                 op_timeout: float = 60.0, log_level: str | None = None,
                 handle_signals: bool = True, ip: str = "127.0.0.1",
                 call_path: str | None = None, window_per_caller: int = 1024,
                 window_per_tool: int = 4096, sample_every: float = 1.0,
                 audit_log: str | os.PathLike[str] | None = None,
                 data_dir: str | os.PathLike[str] | None | bool = None) -> None:
        self.policy = policy or Policy()
        self.hooks = list(hooks)
        pack_hooks(self.hooks)  # fail now if they cannot travel
        self.sample_every = check_seconds(sample_every, "sample_every")
        self.call_timeout = check_seconds(call_timeout, "call_timeout")
        self.op_timeout = check_seconds(op_timeout, "op_timeout")
        window_per_caller = check_count(window_per_caller, "window_per_caller")
        window_per_tool = check_count(window_per_tool, "window_per_tool")
        self.log_level = log_level
        self.handle_signals = handle_signals
        self.transport = Transport(base, ip)
        call_path = call_path or os.environ.get("TOOLVISOR_CALL_PATH") or "socket"
        if call_path not in CALL_PATHS:
            raise ValueError(f"call_path={call_path!r} is invalid: use one of {', '.join(CALL_PATHS)}")
        if base != "multiprocTCPBase":
            call_path = "thespian"  # only the TCP base can watch our sockets
        self.call_path = call_path
        if base != "multiprocTCPBase" and data_dir not in (None, False):
            raise ValueError(f"data_dir={data_dir!r} needs base='multiprocTCPBase': tools reach "
                             f"the context store over sockets, which the {base} cannot watch")
        if base != "multiprocTCPBase":
            data_dir = False  # no context store (see docs/recovery.md)
        self.fast = SocketCalls()
        self.aio = AsyncCalls(window_per_caller, window_per_tool)
        self.config_specs: list[dict[str, Any]] = []
        self.root_route: Route | None = None
        self.sid: int | None = None  # the actor system's session (its admin's pid)
        self._routes: dict[str, Route] = {}
        self._gone: dict[str, int] = {}  # path -> pid of an instance seen dying
        self._accountant_route: Route | None = None
        self.runtime_dir: str | None = None
        if data_dir is True or not (data_dir is None or data_dir is False
                                    or isinstance(data_dir, (str, os.PathLike))):
            raise ValueError(f"data_dir={data_dir!r} is invalid: give a directory path, None (the "
                             "default: $TOOLVISOR_DATA_DIR or ./.toolvisor) or False (no store)")
        self.data_dir: str | None = None if data_dir is False else os.path.abspath(
            data_dir if data_dir is not None else
            os.environ.get("TOOLVISOR_DATA_DIR") or os.path.join(os.getcwd(), ".toolvisor"))
        #: Why the context store cannot be used (corrupted or locked file), or None.
        self.store_error: str | None = None
        self._cids = call_ids()  # (unique across processes: busy markers name calls by id)
        self._reaper: Any = None
        self._old_sigterm: Any = None
        self._running = False
        #: (path, command, seconds, ok) per call while a metrics aggregator listens (docs/monitoring.md);
        #: deque appends and pops are atomic, so callers on any thread need no lock
        self.call_log: collections.deque[tuple[str, str, float, bool]] | None = None
        #: the [system] dashboard address and [[alert]] / [[alert_sink]] tables of a config file
        self.dashboard: str | None = None
        self.alert_tables: tuple[list[dict[str, Any]], list[dict[str, Any]]] = ([], [])
        from supervisors.host.pools import Pools

        #: pools of this system: routing, scale() and autoscalers (docs/scaling.md)
        self.pools = Pools(self)
        #: roles, principals, tool contexts, the audit log and reputation (docs/security.md)
        self.security = SystemSecurity(self, os.fspath(audit_log) if audit_log else None)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_config(cls, path: str | Path, **overrides: Any) -> ToolSystem:
        """A system described by a TOML file; checked now, started on ``with`` / ``start()``."""
        from supervisors.tree.config import load_config

        cfg = load_config(path)
        options = {**cfg.system_options, **overrides}
        system = cls(**options)
        system.config_specs = cfg.supervisors
        from actors.errors import SpecError
        from supervisors.monitoring.alerts import parse_alerts
        from supervisors.tree.config import ConfigError

        try:
            system.security.load(cfg.roles, cfg.principals)
            parse_alerts(cfg.alerts, cfg.alert_sinks)  # fail now: an unknown metric, a bad op, ...
        except (SpecError, ValueError) as exc:
            raise ConfigError(f"{path}: {exc}") from None
        system.dashboard = cfg.dashboard
        system.alert_tables = (cfg.alerts, cfg.alert_sinks)
        return system

    def as_principal(self, name: str, token: str | None = None) -> PrincipalView:
        """A view of this system in which every operation is checked against ``name``'s roles.

        Raises ``PermissionDenied`` for an unknown principal or a missing/wrong token.
        """
        return PrincipalView(self, self.security.principal(name, token))

    def __enter__(self) -> ToolSystem:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.shutdown()

    @property
    def running(self) -> bool:
        return self._running

    def start(self) -> ToolSystem:
        if self._running:
            return self
        logs.setup(self.log_level)
        started = time.monotonic()
        kept.warm()  # before the fork: what every supervisor keeps specs against, shared
        self.runtime_dir = runtime_dirs.make()  # in RAM; the tools' temp dirs on disk
        self.fast = SocketCalls()  # (a system started again after shutdown starts with new pools)
        # The reaper comes first: if this process dies at any moment from here on, it ends
        # what we started (the admin tells it who it is as soon as it runs).
        self._reaper = reaper.launch(0, self.runtime_dir)
        try:
            self.transport.start(admin_pidfile=os.path.join(self.runtime_dir, reaper.ADMIN_PIDFILE))
        except BaseException:
            self._abort_start()
            raise
        self._running = True
        try:
            address = self.transport.create(SupervisorShell)
            cid = next(self._cids)
            spec = {"kind": "supervisor", "name": "", "path": "", "root": True,
                    "policy": self.policy.to_dict(), "children": [],
                    "hooks": pack_hooks(self.hooks) if self.hooks else None,
                    "host_pid": os.getpid(), "log_level": self.log_level,
                    "call_path": self.call_path, "sample_every": self.sample_every,
                    "runtime_dir": self.runtime_dir,
                    "context_store": STORE_NAME if self.data_dir else None}
            if self.data_dir:  # the store always opens its socket: tools call it
                spec["store_door"] = True
            ack = self.transport.exchange(
                address, Start(cid, spec), lambda m: isinstance(m, Ack) and m.ref == cid,
                time.time() + 30.0)
            if not ack.ok:
                raise error_from_wire(ack.error or {}, tool="(root)")
            self.root_route = Route(address, int(ack.value["pid"]), 0, "supervisor")
            info = self._request("", "ping", {}, 10.0)
            self.sid = int(info["sid"])
            ToolSystem.started_sessions.append(self.sid)
            self._install_signals()
        except BaseException:  # e.g. Ctrl-C while starting: end it all at once, no waiting
            self._abort_start()
            raise
        try:
            self._start_store()  # first: every tool, the audit writer too, loads its context
            self.security.start_audit()
            self.security.start_watch()
            for sup in self.config_specs:
                self.root.add(sup)
            self._start_autoscalers(self.config_specs, "")
        except BaseException:
            self.shutdown()
            raise
        logger.info("toolvisor started on 127.0.0.1:{} in {:.0f} ms (root pid {})",
                    self.transport.port, (time.monotonic() - started) * 1000,
                    self.root_route.pid)
        return self

    def _start_autoscalers(self, specs: Sequence[dict[str, Any]], parent: str) -> None:
        """Autoscaled pools from a config file: start their autoscalers."""
        from supervisors.tree.pools import check_replicas

        seen: set[str] = set()
        for spec in specs:
            path = f"{parent}/{spec['name']}" if parent else spec["name"]
            if spec.get("kind") == "supervisor":
                self._start_autoscalers(spec.get("children", []), path)
            elif spec.get("pool") and isinstance(spec.get("pool_replicas"), dict) \
                    and spec["pool"] not in seen:
                seen.add(spec["pool"])
                pool = f"{parent}/{spec['pool']}" if parent else spec["pool"]
                self.pools.autoscale(pool, check_replicas(spec["pool_replicas"]))  # type: ignore[arg-type]

    # ------------------------------------------------------------------ the context store
    def _start_store(self) -> None:
        """Start the context store tool (``_store``) before any other tool."""
        if not self.data_dir:
            return
        os.makedirs(self.data_dir, exist_ok=True)
        # level "low": every tool may call it (a tool may call its own level or a lower one),
        # and the widest hard limits: one connection per tool that checkpoints
        self.root.spawn(ContextStore, STORE_NAME, {"path": os.path.join(self.data_dir, DB_FILE)},
                        shutdown_timeout=5.0, security_level="low", limits=STORE_LIMITS)
        health = self.store().call("health", timeout=self.op_timeout)
        self.store_error = health.get("problem")
        if self.store_error:
            logger.error("{}", self.store_error)

    def store(self) -> ToolHandle:
        """The context store tool's handle (raises if this system has none)."""
        if not self.data_dir:
            raise ToolUnavailable("this ToolSystem has no context store (data_dir=False)")
        return self.tool(STORE_NAME)

    def set_context(self, **values: Any) -> dict[str, Any]:
        """Set keys of the system's context, which every tool reads as a fallback."""
        return self.root.set_context(**values)

    def context_of(self, path: str, timeout: float | None = None) -> dict[str, Any]:
        """The stored context of ``path`` ("" for the system, "w" a supervisor, "w/k" a tool)."""
        return self.store().call("get", timeout=timeout, path=path)

    def snapshot(self, label: str, timeout: float | None = None) -> int:
        """Copy every stored context under ``label``; returns how many were copied."""
        return self.store().call("snapshot", timeout=timeout, label=label)

    def snapshots(self, timeout: float | None = None) -> list[str]:
        return self.store().call("snapshots", timeout=timeout)

    def restore_snapshot(self, label: str, timeout: float | None = None) -> int:
        """Replace every stored context by the snapshot ``label``; tools read it when they
        next start (restart them to use it now)."""
        return self.store().call("restore_snapshot", timeout=timeout, label=label)

    def shutdown(self, timeout: float | None = None) -> None:
        """Stop every tool (reverse start order) and end every process of this system."""
        if not self._running:
            return
        self.security.stop_watch()
        self.pools.close()
        if self.root_route is not None:
            try:
                self._request("", "shutdown", {}, timeout or self.op_timeout)
            except Exception as exc:
                logger.warning("orderly shutdown did not finish ({}); ending processes", exc)
        self._running = False
        self.fast.close()
        self.aio.close()
        try:
            self.transport.close()
        except Exception as exc:
            logger.warning("actor system shutdown reported: {}", exc)
        if self.sid is not None and not end_session(self.sid, grace=2.0):
            logger.error("processes of session {} survived SIGKILL: {}", self.sid,
                         session_pids(self.sid))
        self._release_host_side()

    def _abort_start(self) -> None:
        """Start-up failed or was interrupted: kill the actor system's session, no questions."""
        self._running = False
        sid = self.sid or reaper.admin_pid(self.runtime_dir)
        if sid:
            end_session(sid, grace=0.5)
            try:
                os.kill(sid, signal.SIGKILL)  # the admin, in case it had not made its session yet
            except OSError:
                pass
        self.transport.abandon()
        self._release_host_side()

    def _release_host_side(self) -> None:
        """The processes are gone: stop the reaper (no work left), remove the runtime
        directory, give back the signal handlers, forget the routes."""
        if self._reaper is not None:
            self._reaper.kill()
            self._reaper.wait()
            self._reaper = None
        if self.runtime_dir:
            runtime_dirs.remove(self.runtime_dir)
            self.runtime_dir = None
        self._restore_signals()
        self._routes.clear()
        self.root_route = None

    def _install_signals(self) -> None:
        if not self.handle_signals or threading.current_thread() is not threading.main_thread():
            return
        if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
            def on_sigterm(signum: int, frame: Any) -> None:
                raise SystemExit(128 + signum)

            self._old_sigterm = signal.signal(signal.SIGTERM, on_sigterm)

    def _restore_signals(self) -> None:
        if self._old_sigterm is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._old_sigterm)
            self._old_sigterm = None

    # ------------------------------------------------------------------ tree building
    @property
    def root(self) -> SupervisorHandle:
        return SupervisorHandle(self, "")

    def supervise(self, name: str, policy: Policy | None = None,
                  hooks: Sequence[LifecycleHook] = (), **options: Any) -> SupervisorHandle:
        """Start a supervisor under the root (see ``SupervisorHandle.supervise``)."""
        return self.root.supervise(name, policy, hooks, **options)

    def spawn(self, actor: type | str, name: str, config: dict[str, Any] | None = None,
              **options: Any) -> ToolHandle:
        """Start a tool directly under the root (see ``SupervisorHandle.spawn``)."""
        return self.root.spawn(actor, name, config, **options)

    def tool(self, path: str) -> ToolHandle:
        """The handle of the tool at ``path`` (``"workers/counter"``).

        A pool's path (``"w/fetch"``) gives its ``PoolHandle``; ``"w/fetch#2"`` one
        instance (``NotFound`` if the pool has no such instance)."""
        from supervisors.host.pools import PoolHandle

        path = path.strip("/")
        if self._running and path:
            if "#" in path.rpartition("/")[2]:
                self.pools.check_instance(path)
            elif self.pools.is_pool(path):
                return PoolHandle(self, path)
        return ToolHandle(self, path)

    def supervisor(self, path: str) -> SupervisorHandle:
        return SupervisorHandle(self, path.strip("/"))

    def tree(self, timeout: float | None = None) -> dict[str, Any]:
        """The whole supervision tree as nested dicts (name, kind, state, children, ...).

        Tool nodes carry ``usage`` (see ``usage()``; every figure None until sampled), and
        ``breaker`` when their supervisor's policy gives them one. The system's own tools
        under the root (names starting with ``_``: the context store ``_store``, the audit
        writer ``_audit``) are listed under the root's ``system`` key, not among its children.
        """
        tree = self._subtree("", None, timeout)
        try:
            figures = self.usage(timeout=timeout)
        except ToolError:
            figures = {}

        def attach(node: dict[str, Any]) -> None:
            if node.get("kind") == "tool":
                found = figures.get(node.get("path", ""))
                node["usage"] = found if found and found.get("pid") == node.get("pid") else blank()
            for child in node.get("children", []):
                attach(child)

        attach(tree)
        tree = self.security.annotate(tree)
        # the system's own tools (the context store, the audit writer) are listed apart, so
        # children[i] stay the user's own children in the order they were made
        tree["system"] = [c for c in tree["children"] if c["name"] in SYSTEM_TOOLS]
        tree["children"] = [c for c in tree["children"] if c["name"] not in SYSTEM_TOOLS]
        return tree

    def _kinds_kept(self, path: str, info: dict[str, Any],
                    timeout: float | None) -> list[dict[str, Any]]:
        """The name and kind of each child of the supervisor at ``path``, as its parent keeps
        them: ``info`` has them unless the parent listed it running (the supervisor then
        went down or did not answer in time). The parent is asked then, for at most
        ``KINDS_TIMEOUT`` seconds: a ``tree()`` waits at most that much longer."""
        if "children" in info:
            return list(info["children"])
        parent, _, name = path.rpartition("/")
        wait = KINDS_TIMEOUT if timeout is None else min(timeout, KINDS_TIMEOUT)
        try:
            return list(self._request(parent, "status", {"name": name}, wait)["children"])
        except ToolError as exc:  # its parent is down or busy too: list no children
            logger.warning("tree(): {} did not answer and its parent {} could not list its "
                           "children either ({}); it is shown without them", path,
                           parent or "(root)", exc)
            return []

    def _subtree(self, path: str, info: dict[str, Any] | None,
                 timeout: float | None) -> dict[str, Any]:
        try:
            data = self._request(path, "inspect", {}, timeout)
        except ToolUnavailable:
            if info is None:
                raise
            node = dict(info)
            node["children"] = [{"name": c["name"], "path": f"{path}/{c['name']}",
                                 "kind": c["kind"], "state": "stopped", "pid": None,
                                 "restarts": 0, "last_error": None, "children": []}
                                for c in self._kinds_kept(path, info, timeout)]
            return node
        node = {**(info or {}), "name": data["name"] or "root", "path": path,
                "kind": "supervisor", "state": data["state"], "pid": data["pid"],
                "policy": data["policy"], "last_error": (info or {}).get("last_error")
                or data["last_error"]}
        kids = []
        for child in data["children"]:
            if child["kind"] == "supervisor" and child["state"] in ("running", "paused"):
                kids.append(self._subtree(child["path"], child, timeout))
            elif child["kind"] == "supervisor":
                kids.append({**child, "children": [
                    {"name": c["name"], "path": f"{child['path']}/{c['name']}",
                     "kind": c["kind"], "state": "stopped", "pid": None, "restarts": 0,
                     "last_error": None, "children": []} for c in child["children"]]})
            else:
                kids.append({k: v for k, v in child.items() if k != "children"})
        node["children"] = kids
        return node

    def usage(self, paths: Sequence[str] | None = None,
              timeout: float | None = None) -> dict[str, dict[str, Any]]:
        """Latest resource figures per tool path, from the accountant.

        Each holds ``memory_mb`` (USS), ``rss_mb``, ``cpu_percent``, ``cpu_seconds``,
        ``open_files``, ``threads``, ``connections``, ``children``, I/O bytes,
        ``sampled_at``, and the tool's ``limits`` (as enforced now), ``configured``
        limits, ``level`` and ``on_limit``; ``callers`` is the number of connections
        callers hold to its socket (not part of ``open_files``). A tool not sampled
        yet has every figure, each None.
        """
        args = {} if paths is None else {"paths": list(paths)}
        return dict(self._ask_accountant("usage", args, timeout))

    def usage_history(self, paths: Sequence[str] | None = None, since: float = 0.0,
                      refresh: float = 0.0, timeout: float | None = None) -> dict[str, dict[str, Any]]:
        """Work history per tool path, from the accountant (``supervisors.resources.work``).

        Each holds the latest ``busy_fraction`` (0..1, Δbusy/Δt over the span since the
        reading before), ``call_rate`` (calls finished per second), ``queue`` (calls the
        tool has seen arrive and not started), the totals ``busy_seconds`` and ``calls``,
        and ``points``: the readings newer than ``since`` (``time.time()``), oldest first,
        each ``{"time", "span", "busy_fraction", "call_rate", "queue"}``. The accountant
        reads the counters at every sweep (``sample_every``); ``refresh`` > 0 makes it read
        those of ``paths`` first if their last reading is older than ``refresh`` seconds.
        Paths the accountant does not track (not running, not a tool) are left out.
        """
        args: dict[str, Any] = {"since": float(since), "refresh": float(refresh)}
        if paths is not None:
            args["paths"] = list(paths)
        return dict(self._ask_accountant("history", args, timeout))

    def accounting_stats(self, sweep_now: bool = False,
                         timeout: float | None = None) -> dict[str, Any]:
        """The accountant's own figures: tools tracked, sweep times, its memory."""
        return dict(self._ask_accountant("sweep" if sweep_now else "stats", {}, timeout))

    def _ask_accountant(self, op: str, args: dict[str, Any], timeout: float | None) -> Any:
        self._require_running()
        deadline = self._deadline(timeout, self.op_timeout)
        for _ in range(3):
            route = self._accountant_route
            if route is None or not pid_alive(route.pid):
                info = self._request("", "ping", {}, timeout)
                if not info.get("accountant"):
                    raise ToolUnavailable("resource accounting is not running")
                route = self._accountant_route = Route(info["accountant"],
                                                       int(info["accountant_pid"]), 0, "accountant")
            cid = next(self._cids)
            try:
                reply = self.transport.exchange(
                    route.address, Request(cid, op, args, deadline),
                    lambda m, cid=cid: isinstance(m, Reply) and m.cid == cid, deadline,
                    lambda pid=route.pid: pid_alive(pid))
            except PeerGone:
                self._accountant_route = None
                continue
            if reply.ok:
                return reply.value
            raise error_from_wire(reply.error or {})
        raise ToolUnavailable("the accountant kept going away; try again")

    def events(self, since: float = 0.0, timeout: float | None = None) -> list[dict[str, Any]]:
        """Recent lifecycle events of the whole tree (kept by the root), oldest first.

        Each is a dict with ``time``, ``path``, ``event``, ``detail`` and ``state``.
        """
        return unpack_events(self._request("", "events_packed", {"since": since}, timeout))

    # ------------------------------------------------------------------ the call path
    def _deadline(self, timeout: float | None, default: float) -> float:
        return time.time() + check_seconds(timeout, "timeout", default)

    def _require_running(self) -> None:
        if not self._running or self.root_route is None:
            raise ToolUnavailable("the ToolSystem is not running; use 'with ToolSystem() as "
                                  "system:' or call start()")

    def _call(self, path: str, command: str, args: dict[str, Any],
              timeout: float | None, hold: bool = True) -> Any:
        """Call ``command`` on the tool at ``path``. ``hold``: wait while it restarts (a
        pool's instance is called with False: ``NotServing`` then, and the pool picks again)."""
        if command == TIMINGS_COMMAND:
            raise _reserved(path)
        log = self.call_log
        if log is None:
            return self._call_once(path, command, args, timeout, hold)
        started = time.perf_counter()
        ok = False
        try:
            value = self._call_once(path, command, args, timeout, hold)
            ok = True
            return value
        finally:
            log.append((path, command, time.perf_counter() - started, ok))

    def _call_once(self, path: str, command: str, args: dict[str, Any],
                   timeout: float | None, hold: bool = True) -> Any:
        limit = check_seconds(timeout, "timeout", self.call_timeout)
        deadline = time.time() + limit
        def once() -> Any:
            reply = self._exchange(path, lambda cid: Call(cid, command, args, deadline), deadline,
                                   f"{command!r}", limit, hold)
            if reply.ok:
                return reply.value
            raise error_from_wire(reply.error or {}, tool=path)

        try:
            return once()
        except ToolError as exc:
            if not exc.retry:
                raise
            first = [exc]
        return with_retries(lambda: _raise_first(first) or once(), deadline)

    def _batch(self, path: str, calls: list[tuple[str, dict[str, Any]]],
               timeout: float | None, hold: bool = True) -> list[Any]:
        limit = check_seconds(timeout, "timeout", self.call_timeout)
        deadline = time.time() + limit
        wire_calls = [_batch_item(i, item) for i, item in enumerate(calls)]
        if any(c[0] == TIMINGS_COMMAND for c in wire_calls):
            raise _reserved(path)
        cids: list[int] = []
        try:
            reply = self._exchange(path, lambda cid: cids.append(cid) or Batch(cid, wire_calls, deadline),
                                   deadline, f"a batch of {len(wire_calls)} calls", limit, hold)
        except CallTimeout:
            raise
        except ToolUnavailable as exc:
            if "ended while handling" not in str(exc):
                raise
            return self._batch_after_crash(path, cids[-1], len(wire_calls), exc)
        if isinstance(reply, Reply):  # the whole batch was refused
            raise error_from_wire(reply.error or {}, tool=path)
        return [value if ok else error_from_wire(error or {}, tool=path)
                for ok, value, error in reply.results]

    def _exchange(self, path: str, make: Any, deadline: float, what: str, limit: float,
                  hold: bool = True) -> Any:
        """Deliver a call (or batch) to the live instance at ``path``; return its reply.

        Resends to the next instance when the call certainly did not run (the
        instance was gone, or answered 'moved'); never resends a call that may
        have run.
        """
        self._require_running()
        cid = next(self._cids)
        msg = make(cid)

        def match(m: Any) -> bool:
            return isinstance(m, Reply | BatchReply) and m.cid == cid

        not_pid: int | None = None
        while True:
            route = self._route(path, deadline, not_pid, hold)
            fast = bool(route.socket) and self.call_path == "socket"
            try:
                if route.kind != "tool":
                    raise ToolError(f"{path} is a supervisor; call commands on its tools")
                if fast:
                    reply = self.fast.exchange(route.socket, msg, match, deadline)
                else:
                    reply = self.transport.exchange(route.address, msg, match, deadline,
                                                    lambda pid=route.pid: pid_alive(pid))
            except (NotDelivered, PeerGone, CallTimeout) as exc:
                reply = self._settle(path, route, what, limit, error=exc, cid=cid if fast else 0)
            else:
                reply = self._settle(path, route, what, limit, reply=reply)
            if reply is not _RESEND:
                return reply
            not_pid = route.pid

    async def _acall(self, path: str, command: str, args: dict[str, Any],
                     timeout: float | None, hold: bool = True) -> Any:
        """``_call`` for asyncio: never blocks the loop on the fast path."""
        if command == TIMINGS_COMMAND:
            raise _reserved(path)
        log = self.call_log
        if log is None:
            return await self._acall_once(path, command, args, timeout, hold=hold)
        started = time.perf_counter()
        ok = False
        try:
            value = await self._acall_once(path, command, args, timeout, hold=hold)
            ok = True
            return value
        finally:
            log.append((path, command, time.perf_counter() - started, ok))

    async def _acall_once(self, path: str, command: str, args: dict[str, Any],
                          timeout: float | None, retried: bool = False, hold: bool = True) -> Any:
        self._require_running()
        limit = check_seconds(timeout, "timeout", self.call_timeout)
        deadline = time.time() + limit
        try:
            return await self._acall_attempt(path, command, args, deadline, limit, hold)
        except ToolError as exc:  # a transient error, or its tool died in an idempotent command
            if not exc.retry or retried:
                raise
            return await self._aretry(path, command, args, deadline, exc)

    async def _acall_attempt(self, path: str, command: str, args: dict[str, Any],
                             deadline: float, limit: float, hold: bool = True) -> Any:
        cid = next(self._cids)
        msg = Call(cid, command, args, deadline)
        not_pid: int | None = None
        while True:
            route = self._cached_route(path, not_pid) or await self.aio.coalesce(
                ("route", path, not_pid, hold),
                lambda not_pid=not_pid: asyncio.to_thread(self._route, path, deadline, not_pid,
                                                          hold))
            fast = bool(route.socket) and self.call_path == "socket"
            try:
                if route.kind != "tool":
                    raise ToolError(f"{path} is a supervisor; call commands on its tools")
                if fast:
                    reply = await self.aio.exchange(path, route.socket, cid, msg, deadline)
                else:
                    reply = await asyncio.to_thread(
                        self.transport.exchange, route.address, msg,
                        lambda m: isinstance(m, Reply) and m.cid == cid, deadline,
                        lambda pid=route.pid: pid_alive(pid))
            except (NotDelivered, PeerGone, CallTimeout) as exc:
                reply = self._settle(path, route, repr(command), limit, error=exc,
                                     cid=cid if fast else 0)
            else:
                reply = self._settle(path, route, repr(command), limit, reply=reply)
            if reply is _RESEND:
                not_pid = route.pid
                continue
            if reply.ok:
                return reply.value
            raise error_from_wire(reply.error or {}, tool=path)

    async def _aretry(self, path: str, command: str, args: dict[str, Any], deadline: float,
                      error: ToolError) -> Any:
        first = [error]
        return await with_retries_async(
            lambda: _raise_first_async(first) or self._acall_once(
                path, command, args, max(0.001, deadline - time.time()), True),
            deadline)

    def _settle(self, path: str, route: Route, what: str, limit: float, reply: Any = None,
                error: BaseException | None = None, cid: int = 0) -> Any:
        """Judge one delivery attempt: the reply, ``_RESEND``, or the error to raise.

        A call that certainly did not run (the instance was gone, or answered
        'moved', or died while busy with something else with no reply left inside:
        ``cid``, a call made on the fast path, see actors.busy) goes to the next
        instance; one that may have run never does.
        """
        if isinstance(error, NotDelivered) or (error is None and _moved(reply)):
            self._routes.pop(path, None)
            return _RESEND
        if isinstance(error, PeerGone):
            self._forget_instance(path, route)
            if unrun(self.runtime_dir, route.pid, cid, DEATH_WAIT):
                return _RESEND  # (a closing door's, or queued behind the call it ended in)
            why = self._verdict(route.pid)
            lost = ToolUnavailable(f"{path} ended while handling {what}"
                                   + (f" ({why})" if why else "") + "; it may or may not have run",
                                   tool=path)
            if route.retry and died_rerunnable(self.runtime_dir, route.pid, cid):
                lost.retry = route.retry  # an idempotent command: run it once more
            raise lost
        if isinstance(error, CallTimeout):
            raise CallTimeout(f"no answer from {path} to {what} within {limit:g}s", tool=path)
        return reply

    def _batch_after_crash(self, path: str, cid: int, size: int, exc: ToolUnavailable) -> list[Any]:
        """The tool died during a batch: the items that finished keep their results (read
        from the tool's shared batch record), the one that was running and the rest get
        ``ToolUnavailable``."""
        pid = self._gone.get(path)
        found = read_batch(marker_path(self.runtime_dir, pid), cid) \
            if pid and self.runtime_dir else None
        done, recorded = found or (0, [])
        out: list[Any] = []
        for raw in recorded[:done]:
            ok, value, error = unpack_value(raw)
            out.append(value if ok else error_from_wire(error or {}, tool=path))
        for _ in range(len(out), done):  # finished, but its result did not fit the record
            out.append(ToolUnavailable(f"{path} ran this item of the batch, then ended; its "
                                       "result was lost", tool=path))
        if done < size:
            out.append(exc)
        out += [ToolUnavailable(f"{path} ended in an earlier item of the batch; this one did "
                                "not run", tool=path) for _ in range(size - len(out))]
        return out

    def _verdict(self, pid: int) -> str | None:
        """Why a supervisor killed ``pid`` (e.g. the watchdog found it hung), if it said."""
        if not self.runtime_dir:
            return None
        try:
            with open(verdict_path(self.runtime_dir, pid)) as f:
                return f.read(1000) or None
        except OSError:
            return None

    def _route(self, path: str, deadline: float, not_pid: int | None = None,
               hold: bool = True) -> Route:
        """The live instance at ``path``; waits (until ``deadline``) while it restarts, or
        with ``hold`` False raises ``NotServing`` at once (a pool then picks another)."""
        if not path:
            self._require_running()
            assert self.root_route is not None
            if not pid_alive(self.root_route.pid):
                raise ToolUnavailable("the root supervisor's process is gone; the system "
                                      "cannot recover from that: start a new ToolSystem")
            return self.root_route
        if not_pid is None:
            not_pid = self._gone.get(path)
        cached = self._cached_route(path, not_pid)
        if cached is not None:
            return cached
        stale = self._routes.get(path)
        if stale is not None and stale.pid != not_pid:
            not_pid = stale.pid  # that instance is gone: wait for the next one
        parent, name = _split(path)
        args: dict[str, Any] = {"name": name, "wait": hold}
        if not_pid is not None:
            args["not_pid"] = not_pid
        try:
            info = self._request_until(parent, "resolve", args, deadline)
        except CallTimeout:
            if not hold:
                raise NotServing(f"{path} did not answer whether it serves", tool=path) from None
            raise CallTimeout(f"{path} was not serving before the deadline (it is starting or "
                              "restarting, or its supervisor is busy)", tool=path)
        except ToolError as exc:
            if hold:
                raise
            raise NotServing(exc.message, tool=path) from None
        route = Route(info["address"], int(info["pid"]), int(info["generation"]), info["kind"],
                      info.get("socket"), info.get("retry"))
        self._routes[path] = route
        self._gone.pop(path, None)
        return route

    def _forget_instance(self, path: str, route: Route) -> None:
        """That instance died under a call: never route to it again, even if its
        supervisor has not noticed yet."""
        self._routes.pop(path, None)
        self._gone[path] = route.pid

    def _cached_route(self, path: str, not_pid: int | None) -> Route | None:
        """The known route to ``path`` if it still leads to a live instance (never blocks)."""
        cached = self._routes.get(path)
        if cached is None or cached.pid == not_pid or not path:
            return None
        if (cached.socket and self.call_path == "socket") or pid_alive(cached.pid):
            return cached  # (a socket tells by itself when its instance is gone)
        return None

    def _request(self, path: str, op: str, args: dict[str, Any], timeout: float | None) -> Any:
        """Run supervisor operation ``op`` on the supervisor at ``path``."""
        self._require_running()
        return self._request_until(path, op, args, self._deadline(timeout, self.op_timeout))

    def _request_until(self, path: str, op: str, args: dict[str, Any], deadline: float) -> Any:
        cid = next(self._cids)
        while True:
            route = self._route(path, deadline)
            if route.kind != "supervisor":
                raise ToolError(f"{path} is a tool, not a supervisor")
            try:
                reply = self.transport.exchange(
                    route.address, Request(cid, op, args, deadline),
                    lambda m: isinstance(m, Reply) and m.cid == cid, deadline,
                    lambda pid=route.pid: pid_alive(pid))
            except PeerGone:
                self._routes.pop(path, None)
                if op in ("resolve", "inspect", "status", "events", "events_packed", "ping"):
                    continue  # harmless to ask the next instance
                raise ToolUnavailable(f"supervisor {path} ended during {op!r}", tool=path or None)
            except CallTimeout:
                raise CallTimeout(f"supervisor {path or '(root)'} did not finish {op!r} in time",
                                  tool=path or None)
            if reply.ok:
                return reply.value
            raise error_from_wire(reply.error or {}, tool=path or None)


_RESEND = object()  # marker: deliver the call to the next instance


def _reserved(path: str) -> ToolError:
    return ToolError(f"{TIMINGS_COMMAND!r} is toolvisor's own (the metrics aggregator collects "
                     "command times with it); it cannot be called", tool=path, type="UnknownCommand")


def _batch_item(i: int, item: Any) -> list[Any]:
    """One ``call_many`` item as ``[command, args]``; a clear error for any other shape."""
    if isinstance(item, (tuple, list)) and len(item) == 2 and isinstance(item[0], str) and (
            item[1] is None or isinstance(item[1], Mapping)):
        return [item[0], dict(item[1] or {})]
    raise TypeError(f"call_many item {i} is {item!r:.80}: each item is (command, {{args}}), "
                    "e.g. ('add', {'k': 2}) or ('get', {})")


def _raise_first(first: list[ToolError]) -> None:
    """For a retry loop whose first attempt already failed: raise that error once."""
    if first:
        raise first.pop()


def _raise_first_async(first: list[ToolError]) -> Any:
    if first:
        error = first.pop()

        async def fail() -> Any:
            raise error
        return fail()
    return None


def never_ran(runtime_dir: str, pid: int | None, cid: int) -> bool:
    """Call ``cid`` to the instance ``pid`` got no answer and its connection closed: did
    that call certainly never start? (``actors.busy.unrun``: its door was shut with every
    reply out, or it ended busy with something else with every earlier reply out.)"""
    return unrun(runtime_dir, pid, cid, DEATH_WAIT)


def _moved(reply: Any) -> bool:
    """The instance was going away and did not run the call: send it to the next one."""
    return isinstance(reply, Reply) and not reply.ok and (reply.error or {}).get("code") == "moved"
