"""A tool's security context and the tool-to-tool isolation rule (defined in ``actors.permissions``).

Where the check must be made: on the path a tool-to-tool call takes (the
messaging work's ``self.tool(path).call/send/ask`` inside a tool), before the
call is sent, with the caller's context (its spec's ``security`` and
``security_level``), the target's level and whether the caller is restricted by
its reputation. A refusal is ``PermissionDenied`` raised to the calling tool and
is audited (mode permitting) through the system's audit writer.
"""

from actors.permissions import (
    AUDIT_MODES,
    LEVEL_RANK,
    SecurityContext,
    check_security,
    check_tool_call,
)

__all__ = ["AUDIT_MODES", "LEVEL_RANK", "SecurityContext", "check_security", "check_tool_call"]
