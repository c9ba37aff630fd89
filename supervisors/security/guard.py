"""``system.security``: the system's roles and principals plus what the host needs around them.

``SystemSecurity`` is the ``Security`` registry (roles, principals, the check)
of one ``ToolSystem``, together with: each tool's security context (noted when
it is spawned), the audit writer (the ``_audit`` tool, started when the system
has an ``audit_log``), and the reputation of every tool (from the root's event
log, command errors and denials). It lives in the host process and is owned by
the ToolSystem.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

from loguru import logger

from actors.errors import ToolError
from actors.permissions import AUDIT_TOOL, SecurityContext, restricted_marker
from supervisors.security.audit import AuditWriter, entry
from supervisors.security.reputation import Reputation
from supervisors.security.roles import Security

__all__ = ["AUDIT_TOOL", "AuditUnavailable", "SystemSecurity"]
REFRESH_EVERY = 1.0  # seconds between reads of the event log for reputation
WATCH_THREAD = "toolvisor-reputation"


class AuditUnavailable(ToolError):
    """The audit line could not be written, so the operation is not acknowledged."""

    code = "audit_unavailable"


class SystemSecurity(Security):
    def __init__(self, system: Any, audit_log: str | None = None,
                 audit_max_bytes: int = 64 * 1024 * 1024) -> None:
        super().__init__()
        self.system = system
        self.audit_log = os.path.abspath(audit_log) if audit_log else None
        self.audit_max_bytes = int(audit_max_bytes)
        self.contexts: dict[str, SecurityContext] = {}
        self.reputation = Reputation()
        self._writer: Any = None
        self._refreshed = 0.0
        self._events_since = 0.0
        self._stop_watch: threading.Event | None = None

    # ------------------------------------------------------------------ contexts
    def note_spec(self, path: str, spec: dict[str, Any]) -> None:
        """Remember the security context of the tool (or every tool of the subtree) at ``path``."""
        if spec.get("kind") == "tool":
            try:
                self.contexts[path] = SecurityContext.from_spec(spec.get("security"),
                                                                spec.get("security_level", "standard"))
            except Exception as exc:  # checked when the spec was built; never fail a spawn here
                logger.warning("security context of {} not understood: {}", path, exc)
            return
        for child in spec.get("children", []):
            self.note_spec(f"{path}/{child['name']}" if path else child["name"], child)

    def context_of(self, path: str) -> SecurityContext:
        return self.contexts.get(path.strip("/")) or SecurityContext()

    # ------------------------------------------------------------------ audit
    def start_audit(self) -> None:
        if not self.audit_log:
            return
        os.makedirs(os.path.dirname(self.audit_log) or ".", exist_ok=True)
        self._writer = self.system.root.spawn(
            AuditWriter, name=AUDIT_TOOL, restart="permanent", security_level="standard",
            config={"path": self.audit_log, "max_bytes": self.audit_max_bytes})

    def audit(self, principal: str | None, operation: str, resource: str, result: str,
              level: str | None = None, **context: Any) -> None:
        """Write one line (if the system has an audit log) and return only once it is written."""
        if self._writer is None:
            return
        line = entry(principal, operation, resource, result, level, **context)
        last: Exception | None = None
        for _ in range(3):
            try:
                self._writer.call("append", entries=[line], timeout=10.0)
                return
            except ToolError as exc:
                last = exc
        raise AuditUnavailable(f"the audit log {self.audit_log} could not be written ({last}); "
                               f"the {operation} on {resource} is not acknowledged")

    def tool_denied(self, caller: str, target: str, why: str) -> None:
        """A tool was refused a call to another tool: count it against the caller, audit it.

        For the tool-to-tool call path (the messaging work) to call on a refusal.
        """
        self.reputation.record(caller, "denial")
        ctx = self.context_of(caller)
        if ctx.audit != "off":
            self.audit(f"tool:{caller}", "call", f"tool:{target}", "denied", ctx.level, reason=why)

    # ------------------------------------------------------------------ reputation
    def start_watch(self) -> None:
        """Keep reputation current while the system runs (a restriction must not wait for
        someone to ask for a status): one read of the event log every ``REFRESH_EVERY``."""
        stop = self._stop_watch = threading.Event()

        def watch() -> None:
            while not stop.wait(REFRESH_EVERY):
                self.refresh(force=True)

        threading.Thread(target=watch, name=WATCH_THREAD, daemon=True).start()

    def stop_watch(self) -> None:
        if self._stop_watch is not None:
            self._stop_watch.set()
            self._stop_watch = None

    def _mark(self, path: str, restricted: bool) -> None:
        """Leave (or remove) the marker the tool's own process checks before calling others."""
        runtime_dir = getattr(self.system, "runtime_dir", None)
        if not runtime_dir:
            return
        marker = restricted_marker(runtime_dir, path)
        try:
            if restricted:
                os.makedirs(os.path.dirname(marker), exist_ok=True)
                open(marker, "w").close()
            else:
                os.unlink(marker)
        except OSError:
            pass

    def refresh(self, force: bool = False) -> None:
        """Read new events into the reputation record; audit threshold crossings.

        While the watch thread runs, it alone refreshes (one owner of the record); the
        figures other threads read are at most ``REFRESH_EVERY`` old. ``force`` reads now."""
        if not force and self._stop_watch is not None and threading.current_thread().name != WATCH_THREAD:
            return
        now = time.time()
        if not force and now - self._refreshed < REFRESH_EVERY:
            return
        self._refreshed = now
        try:
            events = self.system.events(since=self._events_since, timeout=5.0)
        except Exception:
            return
        if events:
            self._events_since = max(e.get("time", 0.0) for e in events)
        self.reputation.observe(events)
        for path, restricted, score in self.reputation.changes(now=now):
            self._mark(path, restricted)
            logger.warning("tool {} {} (reputation {})", path,
                           "is restricted: its calls to other tools are refused" if restricted
                           else "has recovered its rights", score)
            try:
                self.audit("system", "reputation", f"tool:{path}",
                           "restricted" if restricted else "restored",
                           self.context_of(path).level, score=score)
            except ToolError as exc:
                logger.error("could not audit the reputation change of {}: {}", path, exc)

    def reputation_of(self, path: str) -> float:
        self.refresh()
        return self.reputation.score(path.strip("/"))

    def restricted(self, path: str) -> bool:
        self.refresh()
        return self.reputation.restricted(path.strip("/"))

    def annotate(self, tree: dict[str, Any]) -> dict[str, Any]:
        """Add ``reputation`` and ``restricted`` to every tool node of a ``tree()``."""
        self.refresh()

        def walk(node: dict[str, Any]) -> None:
            if node.get("kind") == "tool":
                path = node.get("path", "")
                node["reputation"] = self.reputation.score(path)
                node["restricted"] = self.reputation.restricted(path)
            for child in node.get("children", []):
                walk(child)

        walk(tree)
        return tree
