"""Level isolation on the tool-to-tool path, run in the calling tool's own process.

Installed into ``actors.peers`` when a tool starts: before every ``self.tool(path)``
call, send and ask, ``actors.permissions.check_tool_call`` decides whether this
tool may reach the target (same or lower level, or a ``"tool:PATH:call"``
permission in its security context), and a tool whose reputation fell below the
threshold (the host leaves a marker file, ``actors.permissions.restricted_marker``)
may call none. A refusal is reported as a ``denied``
event (the host's reputation counts it) and, unless the context's audit mode is
``off``, appended to the audit log through the audit writer tool; then the
``PermissionDenied`` reaches the calling tool. Calls to the audit writer and to
the context store are toolvisor's own and skip the rule (a restricted tool still
checkpoints and gets its context back).

A tool with a security context is also held to its ``net`` and ``exec`` permissions
(``actors.reach``: an audit hook in its process); those refusals are reported the
same way.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from actors import peers, reach
from actors.errors import PermissionDenied
from actors.messages import Event
from actors.permissions import (
    AUDIT_TOOL,
    DENIED_EVENT,
    SecurityContext,
    audit_entry,
    check_tool_call,
    is_restricted,
)
from actors.routes import RouteEntry

if TYPE_CHECKING:
    from actors.runner import ToolRunner


def install(runner: ToolRunner, spec: dict[str, Any]) -> None:
    """Guard every tool-to-tool message this process sends with the caller's security context."""
    context = SecurityContext.from_spec(spec.get("security"), runner.level)

    def check(caller: str, _level: str, callee: RouteEntry) -> None:
        if callee.path == AUDIT_TOOL or callee.path == runner.store:
            return  # toolvisor's own tools (the audit writer, the context store)
        try:
            check_tool_call(caller, context, callee.path, callee.level,
                            restricted=is_restricted(runner.runtime_dir, caller))
        except PermissionDenied as exc:
            _report(runner, context, "call", f"tool:{callee.path}", exc)
            raise

    peers.set_permission_check(check)
    if reach.enforced(spec):
        runner.guard = reach.install(
            runner.path, context,
            lambda exc: _report(runner, context, exc.action, exc.resource, exc))  # type: ignore[attr-defined]


def _report(runner: ToolRunner, context: SecurityContext, operation: str, resource: str,
            exc: PermissionDenied) -> None:
    if runner.supervisor is not None:
        runner.ctx.send(runner.supervisor, Event({
            "time": time.time(), "path": runner.path, "event": DENIED_EVENT,
            "detail": str(exc), "state": runner.sm.state.value}))
    if context.audit == "off":
        return
    more = getattr(exc, "unreported", 0)  # (reach: refusals past its rate, not sent one by one)
    extra = {"unreported_before": more} if more else {}
    entry = audit_entry(f"tool:{runner.path}", operation, resource, "denied", context.level,
                        reason=str(exc), **extra)
    try:
        runner.peer(AUDIT_TOOL).send("append", entries=[entry])
    except Exception as err:  # no audit log configured, or its writer is restarting
        runner.log.debug("tool {}: denial not audited: {}", runner.path, err)
