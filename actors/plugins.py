"""Plugins: tools, lifecycle hooks and alert sinks that other packages provide via entry points.

A package declares, in its own ``pyproject.toml``::

    [project.entry-points."toolvisor.tools"]
    greeter = "my_package.tools:Greeter"

and a config then says ``actor = "greeter"``. A name without ``:`` is looked up in
the group; ``module:Class`` text is used as it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import entry_points

GROUPS = {"tools": "toolvisor.tools", "hooks": "toolvisor.hooks", "sinks": "toolvisor.sinks"}


@dataclass(frozen=True)
class Plugin:
    """One installed entry point: its group, name, target (``module:attr``) and distribution."""

    group: str
    name: str
    target: str
    distribution: str | None


def installed(group: str | None = None) -> list[Plugin]:
    """The plugins installed in this environment (of one group, or of every toolvisor group)."""
    groups = [group] if group else list(GROUPS.values())
    found = []
    for g in groups:
        for ep in entry_points(group=g):
            dist = getattr(ep, "dist", None)
            found.append(Plugin(g, ep.name, ep.value, getattr(dist, "name", None)))
    return sorted(found, key=lambda p: (p.group, p.name))


def resolve(group: str, name: str) -> str:
    """``module:attr`` for ``name``: as it is if it has a ``:``, else from the entry-point group.

    Raises ``ImportError`` naming the group and the plugins that are installed.
    """
    if ":" in name:
        return name
    matches = [p for p in installed(group) if p.name == name]
    if not matches:
        known = ", ".join(p.name for p in installed(group)) or "none"
        raise ImportError(f"{name!r} is neither 'module:Class' nor a plugin of entry-point group "
                          f"{group!r} (installed: {known}); `toolvisor plugins` lists them")
    return matches[0].target
