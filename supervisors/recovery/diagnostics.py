"""FailureRecord: one failure of one tool, as ``tool.errors()`` and ``toolvisor errors`` show it."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

KINDS = ("command_error", "timeout", "crash", "killed", "exit", "init_failure", "quota", "context")


@dataclass(frozen=True)
class FailureRecord:
    """What failed, when, how, and what the supervisor did about it.

    ``kind`` is one of command_error, timeout, crash, killed, exit, init_failure,
    quota, context. ``usage`` holds the tool's last resource figures (from its
    own process for command errors and timeouts, from the accountant for crashes
    and quota actions, when it had them). ``action`` says what happened next.
    """

    time: float
    tool: str
    kind: str
    state: str
    error_type: str | None
    message: str
    traceback: str | None
    action: str
    restarts: int = 0
    pid: int | None = None
    command: str | None = None
    usage: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FailureRecord:
        return cls(time=float(d.get("time", 0.0)), tool=str(d.get("tool", "")),
                   kind=str(d.get("kind", "")), state=str(d.get("state", "")),
                   error_type=d.get("error_type"), message=str(d.get("message") or ""),
                   traceback=d.get("traceback"), action=str(d.get("action") or ""),
                   restarts=int(d.get("restarts") or 0), pid=d.get("pid"),
                   command=d.get("command"), usage=dict(d.get("usage") or {}))

    def line(self) -> str:
        """One line for a terminal."""
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.time))
        what = f"{self.error_type}: {self.message}" if self.error_type else self.message
        cmd = f" [{self.command}]" if self.command else ""
        return (f"{when}  {self.kind:<13} {what}{cmd} -> {self.action} "
                f"(restarts {self.restarts}, pid {self.pid})")
