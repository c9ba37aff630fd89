"""``system.as_principal(name)``: a view of the system in which every operation is checked.

Each operation names an action and a resource (``spawn`` on ``tool:workers/x``,
``call`` on ``tool:workers/counter``, ``policy`` on ``supervisor:workers``,
``read`` on ``system`` for the tree, ...). A refusal raises ``PermissionDenied``
naming the principal, the permission and the resource, is audited, and changes
nothing. An allowed operation runs on the trusted system and is audited before
its answer is returned: changes (spawn, stop, start, restart, pause, resume,
policy, remove) always; calls as the target tool's ``security.audit`` says
(``denials`` by default); reads (status, tree, lookups) on denial only.
The audit writer itself (``_audit``) is out of every principal's reach.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from actors.errors import PermissionDenied, ToolError, ToolUnavailable
from supervisors.security.guard import AUDIT_TOOL, SystemSecurity
from supervisors.security.permissions import denied, supervisor_resource, tool_resource
from supervisors.security.roles import Principal


def _join(parent: str, name: str) -> str:
    return f"{parent}/{name}" if parent else name


class PrincipalView:
    """The system as seen by one principal (from ``system.as_principal``)."""

    def __init__(self, system: Any, principal: Principal) -> None:
        self.system = system
        self.principal = principal
        self.security: SystemSecurity = system.security

    # ------------------------------------------------------------------ the one gate
    def _run(self, action: str, resource: str, operation: str, run: Callable[[], Any], *,
             audit: str = "all", level: str | None = None, **context: Any) -> Any:
        sec, who = self.security, self.principal.name
        if resource.split(":", 1)[-1].split("/", 1)[0] == AUDIT_TOOL and action != "read":
            exc = denied(who, action, resource, "the audit writer is toolvisor's own")
            sec.audit(who, operation, resource, "denied", level, **context)
            raise exc
        if not sec.allowed(who, action, resource):
            if audit != "off":
                sec.audit(who, operation, resource, "denied", level, **context)
            sec.check(who, action, resource)  # raises the right PermissionDenied
        try:
            result = run()
        except PermissionDenied:
            raise
        except Exception as exc:  # a failed operation is written too (a bad spec, a tool error)
            if action == "call" and isinstance(exc, ToolError) and not isinstance(exc, ToolUnavailable):
                sec.reputation.record(resource.split(":", 1)[1], "error")
            if audit == "all":
                kind = exc.type if isinstance(exc, ToolError) else type(exc).__name__
                sec.audit(who, operation, resource, f"error: {kind}", level, **context)
            raise
        if audit == "all":
            sec.audit(who, operation, resource, "ok", level, **context)
        return result

    # ------------------------------------------------------------------ system-wide
    @property
    def root(self) -> PrincipalSupervisor:
        return PrincipalSupervisor(self, "")

    def tool(self, path: str) -> PrincipalTool:
        path = path.strip("/")
        self._run("read", tool_resource(path), "lookup", lambda: None, audit="denials")
        return PrincipalTool(self, path)

    def supervisor(self, path: str) -> PrincipalSupervisor:
        path = path.strip("/")
        self._run("read", supervisor_resource(path), "lookup", lambda: None, audit="denials")
        return PrincipalSupervisor(self, path)

    def spawn(self, actor: type | str, name: str, config: dict[str, Any] | None = None,
              **options: Any) -> PrincipalTool:
        return self.root.spawn(actor, name, config, **options)

    def supervise(self, name: str, policy: Any = None, hooks: Iterable[Any] = (),
                  **options: Any) -> PrincipalSupervisor:
        return self.root.supervise(name, policy, hooks, **options)

    def status(self, path: str, timeout: float | None = None) -> Any:
        return self.tool(path).status(timeout)

    def tree(self, timeout: float | None = None) -> dict[str, Any]:
        """The tree with only the nodes this principal may read (``read`` on ``tool:PATH`` or
        ``supervisor:PATH``); refused if it may read none of them nor ``system``."""
        allowed = self.security.allowed
        who = self.principal.name
        tree = self.system.tree(timeout)

        def keep(node: dict[str, Any]) -> dict[str, Any] | None:
            path = node.get("path", "")
            if node.get("kind") == "tool":
                ok = allowed(who, "read", tool_resource(path)) and path != AUDIT_TOOL
                return node if ok else None
            kids = [k for k in (keep(c) for c in node.get("children", [])) if k is not None]
            if path and not kids and not allowed(who, "read", supervisor_resource(path)):
                return None
            return {**node, "children": kids}

        kept = keep(tree) or {**tree, "children": []}
        if not kept["children"] and not allowed(who, "read", "system"):
            self._run("read", "system", "tree", lambda: None, audit="denials")
        return kept

    def events(self, since: float = 0.0, timeout: float | None = None) -> list[dict[str, Any]]:
        return self._run("read", "system", "events", lambda: self.system.events(since, timeout),
                         audit="denials")

    def __repr__(self) -> str:
        return f"<PrincipalView {self.principal.name}>"


class _Node:
    kind = "tool"

    def __init__(self, view: PrincipalView, path: str) -> None:
        self.view = view
        self.path = path
        self.resource = tool_resource(path) if self.kind == "tool" else supervisor_resource(path)

    @property
    def _level(self) -> str | None:
        return self.view.security.context_of(self.path).level if self.kind == "tool" else None

    def _trusted(self) -> Any:
        return (self.view.system.tool(self.path) if self.kind == "tool"
                else self.view.system.supervisor(self.path))

    def _control(self, op: str, timeout: float | None) -> Any:
        return self.view._run(op, self.resource, op, lambda: getattr(self._trusted(), op)(timeout),
                              level=self._level)

    def stop(self, timeout: float | None = None) -> Any:
        return self._control("stop", timeout)

    def start(self, timeout: float | None = None) -> Any:
        return self._control("start", timeout)

    def restart(self, timeout: float | None = None) -> Any:
        return self._control("restart", timeout)

    def status(self, timeout: float | None = None) -> Any:
        return self.view._run("read", self.resource, "status", lambda: self._trusted().status(timeout),
                              audit="denials", level=self._level)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.path or '(root)'} as {self.view.principal.name}>"


class PrincipalTool(_Node):
    kind = "tool"
    _pooled: bool | None = None

    def _route(self) -> Any:
        """Where calls go once allowed: a pool's routing (least busy instance) or the tool."""
        system = self.view.system
        if self._pooled is None:
            self._pooled = system.pools.is_pool(self.path)
        if self._pooled:
            pools = system.pools
            return (lambda c, a, t: pools.call(self.path, c, a, t),
                    lambda calls, t: pools.call_many(self.path, calls, t),
                    lambda c, a, t: pools.acall(self.path, c, a, t))
        return (lambda c, a, t: system._call(self.path, c, a, t),
                lambda calls, t: system._batch(self.path, calls, t),
                lambda c, a, t: system._acall(self.path, c, a, t))

    def _audit_mode(self) -> str:
        return self.view.security.context_of(self.path).audit

    def call(self, command: str, /, timeout: float | None = None, **args: Any) -> Any:
        view = self.view
        sec = view.security
        ctx = sec.contexts.get(self.path)
        if ((ctx is None or ctx.audit != "all") and self.path.split("/", 1)[0] != AUDIT_TOOL
                and sec.decided(view.principal.name, "call", self.resource) is True):
            # the fast lane: allowed before (cached) and nothing to write for an allowed call
            try:
                return self._route()[0](command, args, timeout)
            except ToolError as exc:
                if not isinstance(exc, ToolUnavailable | PermissionDenied):
                    sec.reputation.record(self.path, "error")
                raise
        return self.view._run("call", self.resource, "call",
                              lambda: self._route()[0](command, args, timeout),
                              audit=self._audit_mode(), level=self._level, command=command)

    def call_many(self, calls: Iterable[tuple[str, dict[str, Any]]],
                  timeout: float | None = None) -> list[Any]:
        calls = list(calls)
        return self.view._run("call", self.resource, "call_many",
                              lambda: self._route()[1](calls, timeout),
                              audit=self._audit_mode(), level=self._level,
                              commands=[c for c, _ in calls][:20])

    async def acall(self, command: str, /, timeout: float | None = None, **args: Any) -> Any:
        self.view._run("call", self.resource, "acall", lambda: None, level=self._level,
                       audit="off" if self._audit_mode() == "off" else "denials")
        try:
            result = await self._route()[2](command, args, timeout)
        except ToolError as exc:
            if self._audit_mode() == "all":
                self.view.security.audit(self.view.principal.name, "acall", self.resource,
                                         f"error: {exc.type}", self._level, command=command)
            raise
        if self._audit_mode() == "all":
            self.view.security.audit(self.view.principal.name, "acall", self.resource, "ok",
                                     self._level, command=command)
        return result

    def pause(self, timeout: float | None = None) -> Any:
        return self._control("pause", timeout)

    def resume(self, timeout: float | None = None) -> Any:
        return self._control("resume", timeout)


class PrincipalSupervisor(_Node):
    kind = "supervisor"

    def spawn(self, actor: type | str, name: str, config: dict[str, Any] | None = None,
              **options: Any) -> PrincipalTool:
        path = _join(self.path, name)
        level = options.get("security_level", "standard")
        self.view._run("spawn", tool_resource(path), "spawn",
                       lambda: self.view.system.supervisor(self.path).spawn(actor, name, config, **options),
                       level=level, actor=actor if isinstance(actor, str) else actor.__qualname__)
        return PrincipalTool(self.view, path)

    def supervise(self, name: str, policy: Any = None, hooks: Iterable[Any] = (),
                  **options: Any) -> PrincipalSupervisor:
        path = _join(self.path, name)
        self.view._run("spawn", supervisor_resource(path), "supervise",
                       lambda: self.view.system.supervisor(self.path).supervise(name, policy, hooks,
                                                                                **options))
        return PrincipalSupervisor(self.view, path)

    def set_policy(self, policy: Any, timeout: float | None = None) -> Any:
        return self.view._run("policy", self.resource, "set_policy",
                              lambda: self.view.system.supervisor(self.path).set_policy(policy, timeout),
                              policy=getattr(policy, "strategy", None))

    def remove(self, name: str, timeout: float | None = None) -> None:
        path = _join(self.path, name)
        self.view._run("stop", tool_resource(path), "remove",
                       lambda: self.view.system.supervisor(self.path).remove(name, timeout))

    def tool(self, name: str) -> PrincipalTool:
        return self.view.tool(_join(self.path, name))

    def supervisor(self, name: str) -> PrincipalSupervisor:
        return self.view.supervisor(_join(self.path, name))

    def children(self, timeout: float | None = None) -> list[Any]:
        kids = self.view._run("read", self.resource, "children",
                              lambda: self.view.system.supervisor(self.path).children(timeout),
                              audit="denials")
        allowed = self.view.security.allowed
        who = self.view.principal.name
        return [k for k in kids if k.path != AUDIT_TOOL and allowed(
            who, "read", tool_resource(k.path) if k.kind == "tool" else supervisor_resource(k.path))]
