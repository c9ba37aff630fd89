"""Roles, principals and the permission check (``system.security``).

A role has permissions and parent roles whose permissions it inherits; adding
a role that would close a cycle is refused, and nothing changes. Four
templates are always there: ``viewer`` (read), ``operator`` (viewer + call,
pause, resume, ``alert:*:ack``), ``maintainer`` (operator + spawn, stop, start, restart, policy)
and ``admin`` (everything). A principal is a name, roles and an optional token.

``check`` answers from a cache of each principal's decisions; below it, each
role's permissions with its ancestors' are flattened and indexed by action
(exact resources, prefixes such as ``tool:workers/*``, other patterns). A change to a role clears the cache of
the principals that hold that role or one inheriting from it; a change to a
principal clears its own. All of this lives in the host process, owned by the ``ToolSystem``
(one owner, no locks: the dicts are only replaced or cleared, never shared out).
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from dataclasses import dataclass, field
from fnmatch import fnmatchcase

from actors.errors import PermissionDenied, SpecError
from supervisors.security.permissions import Permission, denied

TEMPLATES: dict[str, tuple[list[str], list[str]]] = {
    "viewer": (["*:read"], []),
    "operator": (["*:call", "*:pause", "*:resume", "alert:*:ack"], ["viewer"]),
    "maintainer": (["*:spawn", "*:stop", "*:start", "*:restart", "*:policy"], ["operator"]),
    "admin": (["*:*"], []),
}
CACHE_LIMIT = 65536


@dataclass(frozen=True)
class Role:
    name: str
    permissions: tuple[Permission, ...] = ()
    parents: tuple[str, ...] = ()


@dataclass(frozen=True)
class Principal:
    name: str
    roles: tuple[str, ...] = ()
    token: str | None = field(default=None, repr=False)


class _Matcher:
    """A principal's permissions indexed by action: exact resources, prefixes, other globs."""

    def __init__(self, perms: tuple[Permission, ...]) -> None:
        index: dict[str, tuple[set[str], list[str], list[str], list[bool]]] = {}
        for p in perms:
            exact, prefixes, globs, anything = index.setdefault(p.action, (set(), [], [], [False]))
            r = p.resource
            if r == "*":
                anything[0] = True
            elif "*" not in r:
                exact.add(r)
            elif r.endswith("*") and "*" not in r[:-1]:
                prefixes.append(r[:-1])
            else:
                globs.append(r)
        self.by_action = {a: (frozenset(e), tuple(p), tuple(g), any_[0])
                          for a, (e, p, g, any_) in index.items()}

    def allows(self, action: str, resource: str) -> bool:
        for key in (action, "*"):
            entry = self.by_action.get(key)
            if entry is None:
                continue
            exact, prefixes, globs, anything = entry
            if (anything or resource in exact or resource.startswith(prefixes)
                    or any(fnmatchcase(resource, g) for g in globs)):
                return True
        return False


class UnknownPrincipal(PermissionDenied):
    """No principal has that name."""


def _names(value: object, what: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise SpecError(f"{what}={value!r} is invalid: give a list of names")
    out = list(value)
    for item in out:
        if not isinstance(item, str) or not item:
            raise SpecError(f"{what} holds {item!r}: every entry must be a non-empty name")
    return out


class Security:
    """The roles and principals of one system, and the check."""

    def __init__(self) -> None:
        self.roles: dict[str, Role] = {}
        self.principals: dict[str, Principal] = {}
        self._flat: dict[str, tuple[Permission, ...]] = {}
        self._matchers: dict[str, tuple[_Matcher, ...]] = {}  # principal -> its roles' matchers
        self._role_matchers: dict[str, _Matcher] = {}
        self._closures: dict[str, tuple[Permission, ...]] = {}  # role -> its and its ancestors' perms
        self._decisions: dict[str, dict[tuple[str, str], bool]] = {}
        self.generation = 0
        for name, (perms, parents) in TEMPLATES.items():
            self.add_role(name, permissions=perms, parents=parents)

    # ------------------------------------------------------------------ changes
    def _changed(self, role: str | None = None, principal: str | None = None) -> None:
        """Drop what a change may have made stale: everything, or what depends on one name."""
        self.generation += 1
        if role is None and principal is None:
            self._flat, self._matchers, self._decisions, self._closures = {}, {}, {}, {}
            self._role_matchers = {}
            return
        affected = {principal} if principal else set()
        if role is not None:
            roles = {role}
            grew = True
            while grew:  # every role that inherits from ``role``, however deep
                more = {r.name for r in self.roles.values() if roles & set(r.parents)} - roles
                roles |= more
                grew = bool(more)
            affected |= {p.name for p in self.principals.values() if roles & set(p.roles)}
            for name in roles:
                self._closures.pop(name, None)
                self._role_matchers.pop(name, None)
        for name in affected:
            self._flat.pop(name, None)
            self._matchers.pop(name, None)
            self._decisions.pop(name, None)

    def add_role(self, name: str, permissions: Iterable[str] = (), parents: Iterable[str] = ()) -> Role:
        """Add (or replace) a role. Unknown parents, cycles and bad permissions raise ``SpecError``."""
        if not isinstance(name, str) or not name or ":" in name:
            raise SpecError(f"role name {name!r} is invalid: give a non-empty name without ':'")
        perms = tuple(Permission.parse(p) for p in _names(permissions, f"role {name!r} permissions"))
        parent_names = tuple(_names(parents, f"role {name!r} parents"))
        for parent in parent_names:
            if parent not in self.roles and parent != name:
                raise SpecError(f"role {name!r} names an unknown parent role {parent!r}; known: "
                                f"{', '.join(sorted(self.roles))}")
        cycle = self._cycle(name, parent_names)
        if cycle:
            raise SpecError(f"role {name!r} would close a cycle of roles: {' -> '.join(cycle)}; "
                            "nothing was changed")
        role = Role(name, perms, parent_names)
        self.roles[name] = role
        self._changed(role=name)
        return role

    def _cycle(self, name: str, parents: tuple[str, ...]) -> list[str] | None:
        def walk(current: str, trail: list[str]) -> list[str] | None:
            if current == name:
                return trail + [current]
            role = self.roles.get(current)
            for parent in role.parents if role else ():
                found = walk(parent, trail + [current])
                if found:
                    return found
            return None

        for parent in parents:
            found = walk(parent, [name])
            if found:
                return found
        return None

    def remove_role(self, name: str) -> None:
        users = [r.name for r in self.roles.values() if name in r.parents]
        users += [p.name for p in self.principals.values() if name in p.roles]
        if users:
            raise SpecError(f"role {name!r} is still used by {', '.join(users)}")
        self.roles.pop(name, None)
        self._changed(role=name)

    def add_principal(self, name: str, roles: Iterable[str] = (), token: str | None = None) -> Principal:
        """Add (or replace) a principal; every role must exist."""
        if not isinstance(name, str) or not name:
            raise SpecError(f"principal name {name!r} is invalid: give a non-empty name")
        role_names = tuple(_names(roles, f"principal {name!r} roles"))
        for role in role_names:
            if role not in self.roles:
                raise SpecError(f"principal {name!r} names an unknown role {role!r}; known: "
                                f"{', '.join(sorted(self.roles))}")
        if token is not None and (not isinstance(token, str) or len(token) < 8):
            raise SpecError(f"principal {name!r}: token must be a string of at least 8 characters")
        principal = Principal(name, role_names, token)
        self.principals[name] = principal
        self._changed(principal=name)
        return principal

    def remove_principal(self, name: str) -> None:
        self.principals.pop(name, None)
        self._changed(principal=name)

    # ------------------------------------------------------------------ questions
    def principal(self, name: str, token: str | None = None) -> Principal:
        """The principal called ``name``; checks ``token`` when the principal has one."""
        found = self.principals.get(name)
        if found is None:
            exc = UnknownPrincipal(f"unknown principal {name!r}; add it with "
                                   "system.security.add_principal(name, roles=[...])")
            exc.principal, exc.permission, exc.resource = name, None, None  # type: ignore[attr-defined]
            raise exc
        if found.token is not None and (token is None or not hmac.compare_digest(
                found.token.encode(), str(token).encode())):
            exc = PermissionDenied(f"principal {name!r}: the token is missing or wrong")
            exc.principal, exc.permission, exc.resource = name, None, None  # type: ignore[attr-defined]
            raise exc
        return found

    def permissions_of(self, name: str) -> tuple[Permission, ...]:
        """Every permission of a principal, its roles' and their parents' (cached)."""
        flat = self._flat.get(name)
        if flat is not None:
            return flat
        principal = self.principals.get(name)
        perms: list[Permission] = []
        for role_name in principal.roles if principal else ():
            perms.extend(self._closure(role_name))
        flat = tuple(dict.fromkeys(perms))
        self._flat[name] = flat
        return flat

    def _role_matcher(self, role_name: str) -> _Matcher:
        """The index of a role's closure (memoized; a change rebuilds only the roles it touches)."""
        found = self._role_matchers.get(role_name)
        if found is None:
            found = self._role_matchers[role_name] = _Matcher(self._closure(role_name))
        return found

    def _closure(self, role_name: str) -> tuple[Permission, ...]:
        """A role's permissions with its ancestors' (memoized per role; roles have no cycles)."""
        found = self._closures.get(role_name)
        if found is not None:
            return found
        role = self.roles.get(role_name)
        if role is None:
            return ()
        perms = list(role.permissions)
        for parent in role.parents:
            perms.extend(self._closure(parent))
        found = self._closures[role_name] = tuple(dict.fromkeys(perms))
        return found

    def allowed(self, principal: str, action: str, resource: str) -> bool:
        decisions = self._decisions.get(principal)
        if decisions is None:
            if principal not in self.principals:
                return False
            decisions = self._decisions[principal] = {}
        key = (action, resource)
        hit = decisions.get(key)
        if hit is not None:
            return hit
        matchers = self._matchers.get(principal)
        if matchers is None:
            matchers = self._matchers[principal] = tuple(
                self._role_matcher(r) for r in self.principals[principal].roles)
        ok = any(m.allows(action, resource) for m in matchers)
        if len(decisions) >= CACHE_LIMIT:
            decisions.clear()
        decisions[key] = ok
        return ok

    def decided(self, principal: str, action: str, resource: str) -> bool | None:
        """The cached decision, or None (for fast paths that must not do more)."""
        decisions = self._decisions.get(principal)
        return None if decisions is None else decisions.get((action, resource))

    def check(self, principal: str, action: str, resource: str) -> None:
        """Raise ``PermissionDenied`` (naming principal, permission and resource) unless allowed."""
        if not self.allowed(principal, action, resource):
            if principal not in self.principals:
                self.principal(principal)  # raises UnknownPrincipal
            raise denied(principal, action, resource)

    # ------------------------------------------------------------------ config
    def load(self, roles: Iterable[dict], principals: Iterable[dict]) -> None:
        """Add ``[[role]]`` and ``[[principal]]`` tables (as parsed from TOML), in order."""
        for i, table in enumerate(roles):
            _only(table, {"name", "permissions", "parents"}, f"role #{i + 1}")
            self.add_role(table.get("name"), table.get("permissions", []), table.get("parents", []))
        for i, table in enumerate(principals):
            _only(table, {"name", "roles", "token"}, f"principal #{i + 1}")
            self.add_principal(table.get("name"), table.get("roles", []), table.get("token"))


def _only(table: object, keys: set[str], what: str) -> None:
    if not isinstance(table, dict):
        raise SpecError(f"{what} must be a table, got {table!r}")
    extra = sorted(set(table) - keys)
    if extra:
        raise SpecError(f"{what} has unknown field {extra[0]!r}; known: {', '.join(sorted(keys))}")
