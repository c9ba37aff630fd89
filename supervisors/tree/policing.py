"""Policing: the part of a supervisor that works with the accountant.

It tracks each tool instance it starts with the accountant, cleans up after a
tool's process ends (its process group, its temp dir, its accounting entry),
runs the ``on_limit`` action when the accountant reports a breach, and (in the
root) keeps the accountant itself alive.
"""

from __future__ import annotations

import os
import shutil
import signal
from typing import TYPE_CHECKING, Any

from actors.busy import marker_path
from actors.errors import ToolError
from actors.messages import AccountantMoved, Breach, Track, Untrack
from actors.state import ToolState
from supervisors.tree.children import Child, describe
from supervisors.tree.jobs import Job

if TYPE_CHECKING:
    from supervisors.tree.supervisor import Supervisor

S = ToolState
MARKER_KEPT = 10.0  # seconds a dead tool's busy marker stays for its callers to read


class Policing:
    """Mixed into ``Supervisor``; uses its context, children and job queue."""

    def _track(self: Supervisor, child: Child) -> None:
        if child.kind != "tool" or self.accountant_address is None or not child.pid \
                or self._system_tool(child):
            return
        spec = child.spec
        runtime_dir = self.spec.get("runtime_dir")
        self.ctx.send(self.accountant_address, Track(
            self._path(child), child.pid, spec.get("limits") or {}, spec.get("on_limit", "restart"),
            bool(spec.get("adaptive")), spec.get("security_level", "standard"), child.inherited_fds,
            marker_path(runtime_dir, child.pid) if runtime_dir else ""))

    def _cleanup(self: Supervisor, child: Child, pid: int | None) -> None:
        """A tool's process ended: end what it started, remove its temp dir, untrack it."""
        if child.kind != "tool" or not pid:
            return
        try:
            os.killpg(pid, signal.SIGKILL)  # the tool led its own process group
        except (ProcessLookupError, PermissionError):
            pass
        if child.tmpdir:
            _remove_dir(child.tmpdir)
            child.tmpdir = None
        runtime_dir = self.spec.get("runtime_dir")
        if runtime_dir:  # later: a caller may still read its batch record (actors.busy)
            self.ctx.after(MARKER_KEPT, ("unlink", marker_path(runtime_dir, pid)))
        if self.accountant_address is not None:
            self.ctx.send(self.accountant_address, Untrack(self._path(child), pid))

    def _on_breach(self: Supervisor, msg: Breach) -> None:
        child = self._find(msg.path.rpartition("/")[2])
        if child is None or child.pid != msg.pid or not child.alive:
            return  # that instance is gone already
        text = f"{msg.metric} {msg.value:g} over its limit {msg.limit:g} (on_limit={msg.action})"
        child.last_error = f"LimitExceeded: {text}"
        self.log.warning("{}: {}", self._path(child), text)
        self._diagnose(child, "quota", {"type": "LimitExceeded", "message": text}, {
            "pause": "paused", "restart": "restarted", "stop": "stopped"}.get(msg.action, msg.action))
        if msg.action == "pause" and child.state is S.RUNNING:
            try:
                self._step(child, "pause", 0.0, None, None)
            except ToolError as exc:
                self.log.info("limit action not applied: {}", exc)
        elif msg.action == "restart":
            if self._will_restart(child, normal=False):
                child.sm.force(S.RESTARTING)
            self.jobs.add(self._failure(child, child.generation, {
                "code": "error", "type": "LimitExceeded", "message": text, "traceback": None},
                normal=False))
        elif msg.action == "stop":
            self.jobs.add(self._quietly(self._stop_at_limit(child, text)))

    def _stop_at_limit(self: Supervisor, child: Child, text: str) -> Job:
        if child.state is S.STOPPED:
            return
        child.operator_stopped = True  # stays down like an operator's stop
        yield from self._stop_process(child, S.STOPPED)
        self._event(child, "stopped at its limit", text)

    def _quietly(self: Supervisor, job: Job) -> Job:
        try:
            yield from job
        except ToolError as exc:
            self.log.info("limit action not applied: {}", exc)

    def _accountant_exited(self: Supervisor, acc: Child) -> None:
        acc.address = None
        acc.pid = None
        if self.sm.state in (S.STOPPING, S.STOPPED):
            return  # the system is ending
        self.log.error("the accountant died; starting a new one")
        self.jobs.add(self._restart_accountant(acc))

    def _restart_accountant(self: Supervisor, acc: Child) -> Job:
        error = yield from self._start(acc)
        if error is not None:
            self.log.error("the accountant could not restart: {}", describe(error))
            return
        self._accountant_moved(acc.address)

    def _accountant_moved(self: Supervisor, address: Any) -> None:
        """Use the new accountant; tell child supervisors; track our tools again."""
        self.accountant_address = address
        for child in self.children:
            if child.alive and child.kind == "supervisor":
                self.ctx.send(child.address, AccountantMoved(address))
            elif child.alive:
                self._track(child)


def _remove_dir(path: str) -> None:
    """Remove a tool's temp dir. Most are empty: ``os.rmdir`` spares the supervisor
    running ``shutil.rmtree``'s code (its first run copies pages: docs/scaling.md)."""
    try:
        os.rmdir(path)
    except FileNotFoundError:
        pass
    except OSError:
        shutil.rmtree(path, ignore_errors=True)
