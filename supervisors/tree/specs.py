"""Build and check child specs on the host, before anything is sent or started.

A spec is the plain-data description of a child that its supervisor keeps
so it can start the child again: for a tool the class path and config, for a
supervisor its policy, hooks and children's specs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from actors import plugins
from actors.codec import pack_value
from actors.fastpath import DEFAULT_MAX_CALLERS
from actors.loading import class_path, load_object, main_file
from actors.permissions import check_security
from actors.tool import ToolActor
from supervisors.resources.quotas import check_on_limit, effective_limits
from supervisors.tree.hooks import LifecycleHook, pack_hooks
from supervisors.tree.kept import KeptChildren
from supervisors.tree.policy import (
    DEFAULT_HANG_TIMEOUT,
    Policy,
    SpecError,
    check_child_options,
    check_count,
    check_hang_timeout,
    check_name,
    check_significant,
)


def resolve_actor(actor: type | str, field_name: str = "actor") -> str:
    """Check that ``actor`` names an importable ToolActor subclass; return 'module:Class'."""
    if isinstance(actor, str):
        try:
            path = plugins.resolve(plugins.GROUPS["tools"], actor)  # "name" -> its entry point
            obj = load_object(path)
        except ImportError as exc:
            raise SpecError(f"{field_name}={actor!r} cannot be loaded: {exc}")
    elif isinstance(actor, type):
        obj, path = actor, class_path(actor)
    else:
        raise SpecError(f"{field_name}={actor!r} is invalid: give a ToolActor subclass "
                        "or 'module:Class'")
    if not (isinstance(obj, type) and issubclass(obj, ToolActor)):
        raise SpecError(f"{field_name}={path!r} is not a ToolActor subclass")
    if "<locals>" in path:
        raise SpecError(f"{field_name}={path!r} is defined inside a function; define tool "
                        "classes at module level so their process can import them")
    return path


def tool_spec(actor: type | str, name: str, config: dict[str, Any] | None = None, *,
              restart: str = "permanent", security_level: str = "standard",
              shutdown_timeout: float | str = 5.0, start_timeout: float = 10.0,
              hold_limit: int = 10_000, limits: dict[str, Any] | None = None,
              on_limit: str = "restart", adaptive: bool = False,
              hard_memory: bool = False, max_callers: int = DEFAULT_MAX_CALLERS,
              security: dict[str, Any] | None = None,
              hang_timeout: float | None = DEFAULT_HANG_TIMEOUT,
              significant: bool = False) -> dict[str, Any]:
    check_name(name)
    check_child_options(restart, security_level, shutdown_timeout, start_timeout)
    hang_timeout = check_hang_timeout(hang_timeout)
    check_significant(significant, restart)
    if limits is not None and not isinstance(limits, dict):
        raise SpecError.invalid("limits", limits, "give a dict such as {'memory_mb': 64}")
    effective = effective_limits(security_level, limits)
    check_on_limit(on_limit)
    for flag, value in (("adaptive", adaptive), ("hard_memory", hard_memory)):
        if not isinstance(value, bool):
            raise SpecError.invalid(flag, value, "must be true or false")
    if not isinstance(hold_limit, int) or isinstance(hold_limit, bool) or hold_limit < 0:
        raise SpecError.invalid("hold_limit", hold_limit, "must be a whole number >= 0")
    check_count(max_callers, "max_callers")
    if config is not None and not isinstance(config, Mapping):
        raise SpecError.invalid("config", config, "config must be a mapping of names to values, "
                                "such as {'start': 1}")
    config = dict(config or {})
    try:
        pack_value(config)
    except (TypeError, ValueError) as exc:
        raise SpecError(f"config for {name!r} cannot be sent to the tool: {exc}")
    path = resolve_actor(actor)
    spec: dict[str, Any] = {"kind": "tool", "name": name, "actor": path, "config": config,
                            "restart": restart, "security_level": security_level,
                            "shutdown_timeout": _shutdown(shutdown_timeout),
                            "start_timeout": float(start_timeout), "hold_limit": hold_limit,
                            "limits": effective, "on_limit": on_limit, "adaptive": adaptive,
                            "hard_memory": hard_memory, "max_callers": max_callers,
                            "hang_timeout": hang_timeout, "significant": significant}
    if security is not None:  # the tool's security context (permissions, audit, env, workdir, umask)
        spec["security"] = check_security(security)
    if path.startswith("__main__:"):
        spec["main"] = main_file()
    return spec


def supervisor_spec(name: str, policy: Policy | None = None,
                    hooks: Sequence[LifecycleHook] = (), *, restart: str = "permanent",
                    shutdown_timeout: float | str = 60.0,
                    children: Sequence[dict[str, Any]] = (),
                    significant: bool = False) -> dict[str, Any]:
    check_name(name)
    check_child_options(restart, "standard", shutdown_timeout, 1.0)
    check_significant(significant, restart)
    policy = policy or Policy()
    if not isinstance(policy, Policy):
        raise SpecError(f"policy={policy!r} is invalid: give a Policy")
    names = [c["name"] for c in children]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise SpecError(f"supervisor {name!r} has more than one child named {dupes[0]!r}")
    shared = sorted({n.rpartition("#")[0] for n in names if "#" in n} & set(names))
    if shared:
        raise SpecError(f"supervisor {name!r} has a pool and a single tool both named "
                        f"{shared[0]!r}; a name is one or the other: rename one of them")
    spec = {"kind": "supervisor", "name": name, "policy": policy.to_dict(),
            "hooks": pack_hooks(hooks) if hooks else None, "children": list(children),
            "restart": restart, "shutdown_timeout": _shutdown(shutdown_timeout),
            "significant": significant}
    spec["start_timeout"] = start_budget(spec)
    return spec


def _shutdown(value: float | str) -> float | str:
    return value if isinstance(value, str) else float(value)


def start_budget(spec: dict[str, Any]) -> float:
    """How long a supervisor may take to start its whole subtree."""
    if spec.get("kind") != "supervisor":
        return float(spec.get("start_timeout", 10.0))
    return 30.0 + sum(start_budget(c) for c in spec.get("children", []))


def apply_spec_change(spec: dict[str, Any], path: list[str], child: dict[str, Any] | None,
                      gone: bool) -> bool:
    """Apply one change deep in a supervisor's kept spec: the child at ``path`` (names below
    ``spec``) now has spec ``child`` (replaced in place, or added last), or is ``gone``.
    False if a supervisor on the way is not in ``spec`` (the change does not fit).
    ``spec``'s children may be a list or kept compactly (``supervisors.tree.kept``)."""
    node = spec
    for name in path[:-1]:
        node = _below(node.get("children") or [], name)  # type: ignore[assignment]
        if node is None:
            return False
    children = node.setdefault("children", [])
    if isinstance(children, KeptChildren):
        if gone:
            children.drop(path[-1])
        elif child is None:
            return False  # (a change with no spec: nothing to keep)
        else:
            children.put(child)
        return True
    at = next((i for i, c in enumerate(children) if c.get("name") == path[-1]), None)
    if gone:
        if at is not None:
            del children[at]
    elif at is None:
        children.append(child)
    else:
        children[at] = child
    return True


def _below(children: list[dict[str, Any]] | KeptChildren, name: str) -> dict[str, Any] | None:
    if isinstance(children, KeptChildren):
        return children.node(name)
    return next((c for c in children if c.get("name") == name), None)
