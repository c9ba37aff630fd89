"""Permission helpers for principals (the values themselves live in ``actors.permissions``)."""

from __future__ import annotations

from actors.errors import PermissionDenied
from actors.permissions import ACTIONS, Permission

__all__ = ["ACTIONS", "Permission", "denied", "supervisor_resource", "tool_resource"]


def tool_resource(path: str) -> str:
    return f"tool:{path.strip('/')}"


def supervisor_resource(path: str) -> str:
    return f"supervisor:{path.strip('/')}" if path.strip("/") else "supervisor:"


def denied(principal: str, action: str, resource: str, why: str = "") -> PermissionDenied:
    """The error for a refusal, naming the principal, the permission and the resource."""
    exc = PermissionDenied(f"principal {principal!r} lacks permission '{resource}:{action}' "
                           f"on {resource!r}{': ' + why if why else ''}; grant it with a role "
                           f"(system.security.add_role(..., permissions=['{resource}:{action}']))")
    exc.principal = principal  # type: ignore[attr-defined]
    exc.permission = f"{resource}:{action}"  # type: ignore[attr-defined]
    exc.resource = resource  # type: ignore[attr-defined]
    exc.action = action  # type: ignore[attr-defined]
    return exc
