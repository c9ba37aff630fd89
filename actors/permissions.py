"""Permissions and a tool's security context: plain values both sides of the wire use.

A permission is ``"RESOURCE:ACTION"`` with ``*`` wildcards on either part. A
resource is a kind and a path (``tool:workers/counter``, ``supervisor:workers``,
``system``); the action is one word (``call``, ``pause``, ``spawn``, ...). The
resource may itself hold colons, so the action is what follows the *last* one:
``"tool:workers/*:call"`` is resource ``tool:workers/*``, action ``call``. In
the resource ``*`` matches any run of characters (``/`` included); an action of
``*`` matches every action.

A tool's security context is ``security = {permissions = [...], audit = "denials",
env = {...}, workdir = "...", umask = 0o077}`` (in code or TOML): ``permissions``
is what the tool itself may do (``"tool:db/*:call"``, ...); ``audit`` is ``off``,
``denials`` (default) or ``all``; ``env`` the only environment the tool sees
besides PATH, HOME, LANG and TMPDIR; ``workdir`` its working directory; ``umask``
an integer.

``check_tool_call`` is the isolation rule for one tool calling another. It lives
here, at the bottom of the layers, because the tool side (``self.tool(path).call``
in ``actors/``) must make it on the path the call takes, before the call is sent.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any
from urllib.parse import quote

from actors.errors import PermissionDenied, SpecError

#: The actions toolvisor checks (``*`` covers them all).
ACTIONS = ("read", "call", "pause", "resume", "stop", "start", "restart", "spawn", "policy",
           "admin", "net", "exec", "ack")  # ack: acknowledge an alert (alert:ID)
_RESOURCE_RE = re.compile(r"^[A-Za-z0-9_*.#/:\-\[\]@]+$")  # ([::1], @: net rules)


@dataclass(frozen=True)
class Permission:
    resource: str
    action: str

    @classmethod
    def parse(cls, text: object) -> Permission:
        """Parse ``"RESOURCE:ACTION"``; a malformed string raises ``SpecError`` naming it."""
        if isinstance(text, Permission):
            return text
        if not isinstance(text, str) or ":" not in text:
            raise SpecError(f"permission {text!r} is malformed: write 'RESOURCE:ACTION', e.g. "
                            "'tool:workers/*:call' or '*:read'")
        resource, _, action = text.rpartition(":")
        if not resource or not _RESOURCE_RE.match(resource):
            raise SpecError(f"permission {text!r} is malformed: the resource {resource!r} may hold "
                            "letters, digits and _ * . # / : - [ ] @ only, and must not be empty")
        if action != "*" and action not in ACTIONS:
            raise SpecError(f"permission {text!r} is malformed: unknown action {action!r}; use one "
                            f"of {', '.join(ACTIONS)} or *")
        return cls(resource, action)

    def allows(self, action: str, resource: str) -> bool:
        if self.action != "*" and self.action != action:
            return False
        if self.resource == "*" or self.resource == resource:
            return True
        return "*" in self.resource and fnmatchcase(resource, self.resource)

    def __str__(self) -> str:
        return f"{self.resource}:{self.action}"


AUDIT_MODES = ("off", "denials", "all")
#: The name of the audit writer tool under the root (``supervisors.security``).
AUDIT_TOOL = "_audit"
#: The context store tool under the root (supervisors/recovery), reached by every tool.
STORE_TOOL = "_store"
#: The system's own tools under the root: listed apart from the user's children, no hooks.
SYSTEM_TOOLS = frozenset({AUDIT_TOOL, STORE_TOOL})
#: The event a tool publishes when one of its calls to another tool is refused (counts against
#: its reputation, see ``supervisors.security.reputation``).
DENIED_EVENT = "denied"
LEVEL_RANK = {"low": 0, "standard": 1, "high": 2, "critical": 3}
KEYS = ("permissions", "audit", "env", "workdir", "umask")


@dataclass(frozen=True)
class SecurityContext:
    level: str = "standard"
    permissions: tuple[Permission, ...] = ()
    audit: str = "denials"
    env: dict[str, str] | None = None
    workdir: str | None = None
    umask: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_spec(cls, security: Any, level: str = "standard") -> SecurityContext:
        return cls(level=level, **_parsed(check_security(security)))

    def allows(self, action: str, resource: str) -> bool:
        return any(p.allows(action, resource) for p in self.permissions)


def _parsed(sec: dict[str, Any]) -> dict[str, Any]:
    out = dict(sec)
    out["permissions"] = tuple(Permission.parse(p) for p in sec.get("permissions", []))
    return out


def check_security(security: Any) -> dict[str, Any]:
    """Validate a ``security`` table; returns it as plain data (for the spec). Raises SpecError."""
    if security is None:
        return {}
    if not isinstance(security, dict):
        raise SpecError(f"security={security!r} is invalid: give a table such as "
                        "{permissions = ['tool:db/*:call'], audit = 'all'}")
    for key in security:
        if key not in KEYS:
            raise SpecError(f"security.{key} is unknown; known: {', '.join(KEYS)}")
    out: dict[str, Any] = {}
    perms = security.get("permissions", [])
    if isinstance(perms, str) or not isinstance(perms, (list, tuple)):
        raise SpecError(f"security.permissions={perms!r} is invalid: give a list of 'RESOURCE:ACTION'")
    parsed = [Permission.parse(p) for p in perms]
    for perm in parsed:
        _check_reach(perm)
    out["permissions"] = [str(p) for p in parsed]
    audit = security.get("audit", "denials")
    if audit not in AUDIT_MODES:
        raise SpecError(f"security.audit={audit!r} is invalid: use one of {', '.join(AUDIT_MODES)}")
    out["audit"] = audit
    env = security.get("env")
    if env is not None:
        if not isinstance(env, dict) or not all(isinstance(k, str) and k and "=" not in k
                                                and isinstance(v, str) for k, v in env.items()):
            raise SpecError(f"security.env={env!r} is invalid: give a table of NAME = 'text'")
        out["env"] = dict(env)
    workdir = security.get("workdir")
    if workdir is not None:
        if not isinstance(workdir, str) or not os.path.isabs(workdir):
            raise SpecError(f"security.workdir={workdir!r} is invalid: give an absolute directory path")
        out["workdir"] = workdir
    umask = security.get("umask")
    if umask is not None:
        if not isinstance(umask, int) or isinstance(umask, bool) or not 0 <= umask <= 0o777:
            raise SpecError(f"security.umask={umask!r} is invalid: give an integer 0..0o777 (e.g. 0o077)")
        out["umask"] = umask
    return out


_PORT_RE = re.compile(r"^[0-9*]+$")
_NAME_RE = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*\.?$")
_PATTERN_RE = re.compile(r"^[0-9A-Fa-f.:*]+$")


def parse_net(rest: str) -> tuple[str, str, str]:
    """``(host, kind, port)`` of a net permission's resource after ``net:``: ``HOST``,
    ``HOST:PORT``, ``[IPV6]`` or ``[IPV6]:PORT`` (an IPv6 address or pattern is always in
    brackets). ``kind``
    is ``any``, ``address`` (canonical text), ``pattern`` (with ``*``) or ``name`` (lower
    case). A malformed one raises ``SpecError`` naming it."""
    import ipaddress

    def bad(why: str) -> SpecError:
        return SpecError(f"permission 'net:{rest}:net' is malformed: {why}; write net:HOST:PORT, "
                         "net:HOST, net:[IPV6]:PORT or net:unix:PATH (HOST an address, a pattern "
                         "such as 10.0.* or a host name; PORT a number or *)")

    if rest == "*":
        return "*", "any", "*"
    if rest.startswith("["):
        host, close, tail = rest[1:].partition("]")
        if not close or (tail and not tail.startswith(":")) or tail == ":":
            raise bad("after [IPV6] comes nothing or :PORT")
        port = tail[1:] or "*"
        if "*" not in host and ":" not in host:
            raise bad(f"{host!r} in brackets is not an IPv6 address")
    elif ":" not in rest:
        host, port = rest, "*"
    elif rest.count(":") == 1:
        host, _, port = rest.partition(":")
    else:  # ::1:8080 could be either an address or one with a port: brackets say which
        raise bad(f"an IPv6 address or pattern goes in brackets: net:[{rest}] (any port) or "
                  "net:[ADDRESS]:PORT")
    if not host:
        raise bad("the host is empty")
    if not _PORT_RE.match(port) or (port.isdigit() and int(port) > 65535):
        raise bad(f"the port {port!r} is not a number up to 65535 or a pattern of digits and *")
    if host == "*":
        return "*", "any", port
    try:
        return str(ipaddress.ip_address(host)), "address", port
    except ValueError:
        pass
    if "*" in host:
        if not _PATTERN_RE.match(host):
            raise bad(f"the pattern {host!r} matches addresses only: digits, hex, '.', ':' and *")
        return host.lower(), "pattern", port
    if ":" in host or not _NAME_RE.match(host):
        raise bad(f"{host!r} is neither an address nor a host name")
    return host.lower().rstrip("."), "name", port


def _check_reach(perm: Permission) -> None:
    """A net permission's resource must parse (see ``parse_net``); others are free-form."""
    if perm.action in ("net", "*") and perm.resource.startswith("net:") and \
            not perm.resource.startswith("net:unix:"):
        parse_net(perm.resource[4:])


def check_tool_call(caller: str, caller_ctx: SecurityContext, target: str, target_level: str,
                    restricted: bool = False) -> None:
    """May tool ``caller`` call tool ``target``? Raise ``PermissionDenied`` if not.

    A tool may call tools of its own level or a lower one; a higher-level target
    needs ``"tool:TARGET:call"`` in the caller's context. A tool whose reputation
    is below the threshold (``restricted``) may call no other tool.
    """
    resource = f"tool:{target}"
    if restricted:
        raise _refusal(caller, resource, "its reputation is below the threshold; its calls to other "
                       "tools are refused until the score recovers")
    if target_level not in LEVEL_RANK:
        raise _refusal(caller, resource, f"the target's level {target_level!r} is unknown")
    if LEVEL_RANK.get(caller_ctx.level, -1) >= LEVEL_RANK[target_level]:
        return
    if caller_ctx.allows("call", resource):
        return
    raise _refusal(caller, resource, f"it is a {caller_ctx.level}-level tool and {target!r} is "
                   f"{target_level}-level; add '{resource}:call' to the caller's security.permissions")


def _refusal(caller: str, resource: str, why: str) -> PermissionDenied:
    return stamp(PermissionDenied(f"tool {caller!r} may not call {resource!r}: {why}"),
                 f"tool:{caller}", "call", resource)


def stamp(exc: Any, principal: str, action: str, resource: str) -> Any:
    """``exc`` naming who was refused what (its principal, permission, resource, action:
    what the audit log and the denied event read)."""
    exc.principal = principal
    exc.permission = f"{resource}:{action}"
    exc.resource = resource
    exc.action = action
    return exc


def audit_entry(principal: str | None, operation: str, resource: str, result: str,
                level: str | None = None, **context: Any) -> dict[str, Any]:
    """One audit record, as the audit writer's ``append`` command takes it (a list of these)."""
    return {"ts": round(time.time(), 6), "principal": principal, "level": level,
            "operation": operation, "resource": resource, "result": result,
            "context": context or {}}


def restricted_marker(runtime_dir: str, path: str) -> str:
    """The file whose presence says that tool ``path`` is restricted by its reputation.

    The host writes and removes it (``SystemSecurity.refresh``); the tool's own
    process checks it before each call to another tool (``actors.isolation``).
    """
    return os.path.join(runtime_dir, "restricted", quote(path.strip("/"), safe=""))


def is_restricted(runtime_dir: str | None, path: str) -> bool:
    return bool(runtime_dir) and os.path.exists(restricted_marker(runtime_dir, path))  # type: ignore[arg-type]
