"""The watchdog: the part of a supervisor that finds hung and frozen tools.

A tool is hung when it has been inside one command, lifecycle callback or timer
for longer than its ``hang_timeout`` (read from its busy marker, see
``actors.busy``), or when its process has been stopped (state ``T``, e.g.
SIGSTOP) for that long. Neither check needs the tool's cooperation. A hung tool
is killed (its whole process group), a note saying why is left where its
callers look (``verdict-<pid>`` in the runtime directory), and its death is
handled as a failure under the supervisor's policy, with the hang as the error.
"""

from __future__ import annotations

import os
import signal
import time
from typing import TYPE_CHECKING, Any

from actors.busy import marker_path, read_marker, verdict_path
from actors.state import ToolState
from supervisors.processes.procs import kill_tree
from supervisors.tree.children import Child

if TYPE_CHECKING:
    from supervisors.tree.supervisor import Supervisor

S = ToolState
MAX_PERIOD = 1.0    # seconds between checks, at most
MIN_PERIOD = 0.05   # and at least


def sampling_period(hang_timeout: float) -> float:
    """How often to look: a tenth of the timeout, within [MIN_PERIOD, MAX_PERIOD]."""
    return max(MIN_PERIOD, min(MAX_PERIOD, hang_timeout / 10.0))


def process_state(pid: int) -> str | None:
    """The one-letter state of ``pid`` from /proc (R, S, D, T, t, Z, ...), or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    return stat[stat.rindex(b")") + 2:].split(maxsplit=1)[0].decode()


class Watchdog:
    """Mixed into ``Supervisor``; one timer per supervisor, at the shortest period needed."""

    _watchdog_due: float | None = None

    def _arm_watchdog(self: Supervisor, child: Child) -> None:
        if child.hang_timeout is None:
            return
        period = sampling_period(child.hang_timeout)
        due = time.monotonic() + period
        if self._watchdog_due is None or due < self._watchdog_due - 1e-3:
            self._watchdog_due = due
            self.ctx.after(period, "watchdog")

    def _busy(self: Supervisor, child: Child) -> dict[str, Any] | None:
        runtime_dir = self.spec.get("runtime_dir")
        if child.kind != "tool" or not child.alive or not child.pid or not runtime_dir:
            return None
        busy = read_marker(marker_path(runtime_dir, child.pid))
        if busy is None:
            return None
        return {"command": busy["command"], "since": busy["since"], "kind": busy["kind"]}

    def _watchdog_tick(self: Supervisor) -> None:
        now = time.monotonic()
        if self._watchdog_due is not None and now < self._watchdog_due - 1e-3:
            return  # a stale timer; a sooner one was armed meanwhile
        self._watchdog_due = None
        period: float | None = None
        for child in self.children:
            limit = child.hang_timeout
            if limit is None or not child.alive or not child.pid or child.hung is not None:
                continue
            if child.state not in (S.RUNNING, S.PAUSED):
                continue  # starting and stopping have their own timeouts
            period = min(period or MAX_PERIOD, sampling_period(limit))
            self._judge(child, limit)
        if period is not None:
            self._watchdog_due = time.monotonic() + period
            self.ctx.after(period, "watchdog")

    def _judge(self: Supervisor, child: Child, limit: float) -> None:
        assert child.pid is not None
        if process_state(child.pid) in ("T", "t"):
            if child.stopped_since is None:
                child.stopped_since = time.time()
            elif time.time() - child.stopped_since > limit:
                self._hung(child, f"stopped (process state T) for "
                                  f"{time.time() - child.stopped_since:.0f} s", limit)
            return
        child.stopped_since = None
        busy = self._busy(child)
        if busy is not None and time.time() - busy["since"] > limit:
            self._hung(child, f"hung in {busy['kind']} '{busy['command']}' for "
                              f"{time.time() - busy['since']:.0f} s", limit)

    def _hung(self: Supervisor, child: Child, what: str, limit: float) -> None:
        """Kill a hung instance; its death is then handled as a failure naming the hang."""
        pid = child.pid
        message = f"{what}; killed by the watchdog (hang_timeout={limit:g} s)"
        path = self._path(child)
        self.log.error("{} {}", path, message)
        child.hung = {"code": "error", "type": "ToolHung", "message": message, "traceback": None}
        child.last_error = f"ToolHung: {message}"
        self._event(child, "hung", message)
        runtime_dir = self.spec.get("runtime_dir")
        if runtime_dir and pid:
            try:
                with open(verdict_path(runtime_dir, pid), "w") as f:
                    f.write(f"{path} was {message}")
            except OSError:
                pass
        kill_tree(pid)
        try:
            os.killpg(pid, signal.SIGKILL)  # type: ignore[arg-type]
        except (OSError, TypeError):
            pass
