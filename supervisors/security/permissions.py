"""Permission helpers for principals (the values themselves live in ``actors.permissions``)."""

from __future__ import annotations

from actors.errors import PermissionDenied
from actors.permissions import ACTIONS, Permission, stamp

__all__ = ["ACTIONS", "Permission", "denied", "supervisor_resource", "tool_resource"]


def tool_resource(path: str) -> str:
    return f"tool:{path.strip('/')}"


def supervisor_resource(path: str) -> str:
    return f"supervisor:{path.strip('/')}" if path.strip("/") else "supervisor:"


def denied(principal: str, action: str, resource: str, why: str = "") -> PermissionDenied:
    """The error for a refusal, naming the principal, the permission and the resource."""
    return stamp(PermissionDenied(
        f"principal {principal!r} lacks permission '{resource}:{action}' on {resource!r}"
        f"{': ' + why if why else ''}; grant it with a role "
        f"(system.security.add_role(..., permissions=['{resource}:{action}']))"),
        principal, action, resource)
