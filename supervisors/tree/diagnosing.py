"""Diagnosing: the part of a supervisor that keeps failure records and breaker states.

Every failure of a child becomes a record (time, tool, kind, state, error type
and message, remote traceback, the last resource figures, restart count, what
the supervisor did), kept per child in a bounded list (``tool.errors()``
reads it) and passed up to the root, which hands it to the context store so
``toolvisor errors NAME`` can read it after the system is gone. Command errors
and timeouts are recorded by the tool's own runner and arrive as
``ToolReport``; crashes, kills, init failures, quota actions and exits are
recorded here. A tool's circuit breaker lives in its runner; the supervisor
keeps the last snapshot it reported, counts crashes into it, and hands it to
the next instance (see ``actors.breaker``).
"""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from actors.breaker import Breakers, summary
from actors.messages import Call, FailureNote, Reply, Request, ToolReport
from actors.permissions import SYSTEM_TOOLS
from actors.retry import CRASH, rerun_settings
from supervisors.tree.children import Child

if TYPE_CHECKING:
    from supervisors.tree.supervisor import Supervisor

RECORDS_KEPT = 100   # per child


class Diagnosing:
    """Mixed into ``Supervisor``; uses its context, children and policy."""

    def _diagnose(self: Supervisor, child: Child, kind: str, error: dict[str, Any] | None,
                  action: str) -> None:
        """Record a failure seen by this supervisor (crash, kill, init failure, quota, exit)."""
        if child.kind != "tool":
            return
        error = error or {}
        record = {"time": time.time(), "tool": self._path(child), "kind": kind,
                  "state": child.state.value, "error_type": error.get("type"),
                  "message": error.get("message", ""), "traceback": error.get("traceback"),
                  "command": None, "usage": {}, "pid": child.pid, "action": action}
        self._keep(child, record)
        if kind in ("crash", "quota", "killed") and self.accountant_address is not None \
                and child.pid:  # ask for the last figures before the tool is untracked
            cid = self._new_token()
            self.usage_wanted[cid] = record
            self.ctx.send(self.accountant_address, Request(cid, "usage",
                                                           {"paths": [self._path(child)]},
                                                           time.time() + 5.0))

    def _note_exit(self: Supervisor, child: Child, pid: int | None) -> None:
        """A child's process ended; if nobody expected it (a crash, a kill), record it."""
        if self.jobs.waiting_exit(child) or child.exit_report is not None:
            return  # a stop, a start that failed, or an exit the tool announced
        self._breaker_crash(child)
        action = "restarted" if self._will_restart(child, normal=False) else \
            f"left {'stopped' if child.operator_stopped else 'failed'}"
        if child.hung is not None:  # the watchdog killed it (supervisors/tree/watchdog.py)
            self._diagnose(child, "hang", dict(child.hung), action)
            return
        self._diagnose(child, "crash", {
            "type": "ProcessExited", "traceback": None,
            "message": f"process {pid} ended unexpectedly (killed or crashed)"}, action)

    def _keep(self: Supervisor, child: Child, record: dict[str, Any]) -> None:
        record["restarts"] = child.restarts
        records = child.records if isinstance(child.records, list) else []  # (() until the first)
        records.append(record)
        if len(records) > RECORDS_KEPT:
            del records[: len(records) - RECORDS_KEPT]
        child.records = records
        self._pass_up(record)

    def _pass_up(self: Supervisor, record: dict[str, Any]) -> None:
        """Records go up to the root, which gives them to the context store."""
        if not (self.is_root or self.parent is None):
            self.ctx.send(self.parent, FailureNote(record))
            return
        store = self._find(self.spec.get("context_store") or "")
        if store is not None and store.alive and store.state.value == "running" \
                and record.get("tool") != store.name:
            self.ctx.send(store.address, Call(0, "record_failure", {"record": record},
                                              time.time() + 30.0))

    def _on_report(self: Supervisor, msg: ToolReport, sender: Any) -> None:
        child = self._at(sender, accountant=False)
        if child is None:
            return
        if msg.breaker is not None:
            self._breaker_now(child, msg.breaker)
        if msg.record is not None:
            self._keep(child, dict(msg.record))

    def _on_reply(self: Supervisor, msg: Reply) -> None:
        """Answers to what this supervisor asked: usage figures for a record, store acks."""
        record = self.usage_wanted.pop(msg.cid, None)
        if record is not None and msg.ok and isinstance(msg.value, dict):
            figures = msg.value.get(record["tool"]) or {}
            if figures.get("pid") == record.get("pid"):
                record["usage"] = {k: v for k, v in figures.items()
                                   if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if len(self.usage_wanted) > 256:
            for k in list(self.usage_wanted)[:128]:
                del self.usage_wanted[k]

    def _breaker_now(self: Supervisor, child: Child, snapshot: dict[str, Any]) -> None:
        before = (summary(child.breaker) or {}).get("state", "closed")
        child.breaker = snapshot
        after = (summary(snapshot) or {}).get("state", "closed")
        if after != before:
            self._event(child, f"breaker {after}", _breaker_detail(snapshot))

    def _breaker_crash(self: Supervisor, child: Child) -> None:
        """A tool's process died: that is a failure for its breaker."""
        cfg = self.policy.breaker
        if child.kind != "tool" or cfg is None:
            return
        breakers = Breakers(cfg, self._path(child), child.breaker)
        breakers.crash(time.time())
        self._breaker_now(child, breakers.snapshot())

    def _recovery_spec(self: Supervisor, child: Child, spec: dict[str, Any]) -> None:
        """What a tool's runner needs for breakers, retries and its context."""
        spec["context_store"] = self.spec.get("context_store")
        if child.kind != "tool":
            return
        if self._system_tool(child):
            if self.spec.get("store_door"):
                spec["call_path"] = "socket"  # tools reach the store over its socket on any path
            return  # no breaker or retries for the system's own store
        p = self.policy
        spec["breaker"] = p.breaker.to_dict() if p.breaker is not None else None
        spec["breaker_state"] = child.breaker
        spec["transient"] = list(p.transient)
        spec["retry"] = asdict(p.retry)

    def _breaker_info(self: Supervisor, child: Child) -> dict[str, Any] | None:
        if child.kind != "tool" or (self.policy.breaker is None and child.breaker is None):
            return None
        return summary(child.breaker) or {"state": "closed", "retry_at": 0.0, "failures": 0,
                                          "opens": 0}

    def _rerun_settings(self: Supervisor, child: Child) -> dict[str, Any] | None:
        """The ``Retry`` settings its callers use for an idempotent call a tool died in (its
        route carries them: the dead tool cannot mark the error), or None."""
        if child.kind != "tool" or self._system_tool(child) or CRASH not in self.policy.transient:
            return None
        return rerun_settings(self.policy.transient, asdict(self.policy.retry))

    def _system_tool(self: Supervisor, child: Child) -> bool:
        """The context store or the audit writer: tools of the system itself; no hooks, no
        accounting for them."""
        return self.is_root and (child.name == self.spec.get("context_store") or child.name in SYSTEM_TOOLS)

    def _op_errors(self: Supervisor, req: Request, sender: Any) -> Any:
        return list(self._child(req.args["name"]).records)


def _breaker_detail(snapshot: dict[str, Any]) -> str:
    s = summary(snapshot) or {}
    if s.get("state") == "open":
        return f"{s.get('failures', 0)} failures; next trial at {s.get('retry_at', 0):.3f}"
    return f"{s.get('failures', 0)} failures in the window"

