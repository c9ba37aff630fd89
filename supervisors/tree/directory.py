"""Keeps the route directory (``actors.routes``) up to date for one supervisor's children.

The supervisor calls ``publish_child`` whenever a child's state may have changed
(it already does so to answer parked resolves), so tools calling tools always
find the current instance of a path.
"""

from __future__ import annotations

from typing import Any

from loguru import logger

from actors import routes


def publish_child(runtime_dir: str | None, path: str, child: Any, present: bool,
                  retry: dict[str, Any] | None = None) -> None:
    """Describe ``child`` at ``path`` (or withdraw it when it is no longer ``present``);
    ``retry``: the settings for rerunning an idempotent call it dies in (``actors.retry``)."""
    if not runtime_dir or child.kind not in ("tool", "supervisor"):
        return
    try:
        if not present:
            routes.withdraw(runtime_dir, path)
            return
        routes.publish(runtime_dir, routes.RouteEntry(
            path=path, kind=child.kind, state=child.state.value, pid=child.pid,
            socket=child.socket if child.kind == "tool" else None,
            level=str(child.spec.get("security_level", "standard")),
            generation=child.generation, retry=retry))
    except OSError as exc:  # the runtime directory is going away (shutdown)
        logger.debug("route directory: could not write {}: {}", path, exc)
