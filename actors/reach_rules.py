"""The net and exec rules of one tool: may it reach this address, start this program?

Pure decisions over a ``SecurityContext`` (``actors.reach`` asks them from its audit
hook). A net permission's resource is parsed by ``actors.permissions.parse_net``:
``net:HOST:PORT``, ``net:HOST`` (any port), ``net:[IPV6]:PORT``, ``net:[IPV6]`` (an
IPv6 address or pattern is always in brackets) or ``net:unix:PATH``. HOST is an
address, an address pattern (``10.0.*``, ``[fd00::*]``), ``*`` or a host name:

- addresses are compared in their canonical form (``2001:DB8::1`` is ``2001:db8::1``;
  an IPv4-mapped ``::ffff:10.0.0.5`` is also ``10.0.0.5``; an IPv6 pattern matches the
  compressed text); a pattern matches addresses only, never a name;
- a name allows the addresses it resolves to (looked up with the C resolver when a
  connection is checked, kept ``RESOLVE_FOR`` seconds), and a connection to that very
  name; a connection to a name that no rule names is refused (its address is not
  known for sure: the name could resolve differently for the check and the connect);
- ``net:*`` is every IP address and port; Unix sockets need ``net:unix:...`` rules,
  matched against the socket's real path (symbolic links followed, ``..`` removed);
  other families (netlink, packet) need ``*:net``.

An exec permission's resource is ``exec:PROGRAM``. A program given with a ``/``
(``/usr/bin/git``, ``./git``) is that file, made absolute against the working
directory it is started in; one given by bare name is the file PATH finds (the PATH
it is started with). A rule with a ``/`` matches the file's normalised path or its
real one (links followed; a path whose ``..`` follows a link is judged by its real
path only). A bare-name rule matches the file the tool's PATH *as the tool started*
finds by that name, and only that file (``exec:git:exec`` allows ``git`` and
``/usr/bin/git``; not ``/tmp/x/git``, even after the tool puts ``/tmp/x`` on its
PATH). ``exec:fork`` is a fork of the tool itself, never a program called ``fork``.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import shutil
import time
from _socket import getaddrinfo as _getaddrinfo
from dataclasses import dataclass
from fnmatch import fnmatchcase
from functools import lru_cache
from typing import Any

from actors.errors import PermissionDenied
from actors.permissions import SecurityContext, parse_net, stamp

FORK = "fork"           # the program name a fork of the tool itself is checked as
RESOLVE_FOR = 30.0      # seconds a rule's host name stays resolved


class ActionDenied(PermissionDenied, PermissionError):
    """A tool's own code tried to reach the network or start a program its security
    context does not allow (also a ``PermissionError``, errno EACCES)."""

    def __init__(self, message: str, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.errno = errno.EACCES
        self.strerror = message  # (libraries quote it: asyncio's create_server, say)


@dataclass(frozen=True)
class NetRule:
    host: str        # "*", a canonical address, an address pattern, or a lower-case name
    kind: str        # "any", "address", "pattern" or "name"
    port: str        # a port pattern


@lru_cache(maxsize=1024)
def canonical(host: str) -> str | None:
    """The canonical text of an IP address (None: not an address)."""
    try:
        return str(ipaddress.ip_address(host.split("%", 1)[0]))
    except ValueError:
        return None


@lru_cache(maxsize=1024)
def _forms(address: str) -> frozenset[str]:
    """An address's canonical text, and the IPv4 address an IPv4-mapped IPv6 one carries."""
    out = {address}
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        out.add(str(ip.ipv4_mapped))
    return frozenset(out)


def _real(path: str) -> str:
    """The file a path leads to, as the kernel would resolve it (links followed)."""
    try:
        return os.path.realpath(path)
    except ValueError:  # a NUL byte: no file has that name (the kernel refuses it too)
        return os.path.normpath(path)


class Reach:
    """The decisions for one tool."""

    def __init__(self, tool: str, context: SecurityContext) -> None:
        self.tool = tool
        self.context = context
        self.ip: list[NetRule] = []
        self.unix: list[str] = []
        self.other: list[Any] = []  # net permissions written some other way (fnmatch on the text)
        self.everything = False     # *:net or *:* (other socket families too)
        for perm in context.permissions:
            if perm.action not in ("net", "*"):
                continue
            resource = perm.resource
            if resource == "*":
                self.ip.append(NetRule("*", "any", "*"))
                self.unix.append("*")
                self.everything = True
            elif resource.startswith("net:unix:"):
                pattern = resource[len("net:unix:"):]
                self.unix.append(pattern if pattern.startswith("@") else os.path.normpath(pattern))
            elif resource.startswith("net:"):
                self.ip.append(NetRule(*parse_net(resource[4:])))
            else:
                self.other.append(perm)
        self._names: dict[str, tuple[float, frozenset[str]]] = {}  # name -> (until, addresses)
        self.exec = [p for p in context.permissions if p.action in ("exec", "*")]
        self.path = os.environ.get("PATH", os.defpath)  # as the tool started
        self._programs: dict[str, str | None] = {}     # bare name -> its file on that PATH

    # -- the network -------------------------------------------------------------------
    def check_net(self, host: str, port: int | str) -> None:
        """A connect, bind, sendto or listen on an IP socket to/at ``host`` (an address or a
        name) and ``port``."""
        port = str(port)
        address = canonical(host)
        if address is not None:
            if self._allows(_forms(address), port):
                return
            shown = address
        else:
            name = host.lower().rstrip(".")
            if any(fnmatchcase(port, r.port) for r in self.ip
                   if r.kind == "any" or (r.kind == "name" and r.host == name)):
                return
            shown = name
        resource = f"net:[{shown}]:{port}" if ":" in shown else f"net:{shown}:{port}"
        if any(p.allows("net", resource) for p in self.other):
            return
        raise self._refusal("net", resource, f"connect to or bind {shown} port {port}")

    def _allows(self, forms: frozenset[str], port: str) -> bool:
        for rule in self.ip:
            if not fnmatchcase(port, rule.port):
                continue
            if rule.kind == "any" or (rule.kind == "address" and rule.host in forms):
                return True
            if rule.kind == "pattern" and any(fnmatchcase(a, rule.host) for a in forms):
                return True
            if rule.kind == "name" and forms & self._lookup(rule.host):
                return True
        return False

    def _lookup(self, name: str) -> frozenset[str]:
        now = time.monotonic()
        until, addresses = self._names.get(name, (0.0, frozenset()))
        if now < until:
            return addresses
        try:  # (the C resolver: a resolver the tool patched in would be checked in turn)
            found = frozenset(a for info in _getaddrinfo(name, None)
                              if (a := canonical(str(info[4][0]))) is not None)
        except (OSError, UnicodeError):
            found = frozenset()
        self._names[name] = (now + RESOLVE_FOR, found)
        return found

    def check_unix(self, address: Any) -> None:
        """A connect, bind or sendto on a Unix socket."""
        if isinstance(address, (bytes, bytearray)):
            path = bytes(address).decode(errors="replace")
        else:
            path = os.fspath(address) if isinstance(address, (str, os.PathLike)) else str(address)
        path = "@" + path[1:] if path.startswith("\0") else (_real(path) if path else path)
        if any(fnmatchcase(path, pattern) for pattern in self.unix):
            return
        resource = f"net:unix:{path}"
        if any(p.allows("net", resource) for p in self.other):
            return
        raise self._refusal("net", resource, f"use the Unix socket {path}")

    def check_family(self, family: Any) -> None:
        """A socket of another family (netlink, packet, ...): only ``*:net`` (or ``*:*``)."""
        name = str(getattr(family, "name", family))
        if self.everything:
            return
        raise self._refusal("net", f"net:{name}", f"use a {name} socket")

    # -- programs ------------------------------------------------------------------------
    def check_exec(self, program: str, cwd: str | None = None, path: str | None = None) -> None:
        """Starting ``program`` (as given to exec, spawn or Popen), in working directory
        ``cwd`` with ``PATH`` ``path`` (None: this process's)."""
        if program == FORK:
            if self.context.allows("exec", f"exec:{FORK}"):
                return
            raise self._refusal("exec", f"exec:{FORK}", "fork itself")
        if os.sep in program:
            file = os.path.join(cwd or os.getcwd(), program)
        else:
            found = shutil.which(program, path=path)
            file = os.path.abspath(found) if found else program
        shown, real = os.path.normpath(file), _real(file)
        if _real(shown) != real:  # a link before '..': what runs is not what the text says
            shown = real
        for perm in self.exec:
            pattern = perm.resource[len("exec:"):] if perm.resource.startswith("exec:") else None
            if perm.resource == "*" or pattern == "*":
                return
            if pattern is None:
                if perm.allows("exec", f"exec:{shown}"):
                    return
            elif os.sep in pattern:
                if fnmatchcase(shown, pattern) or fnmatchcase(real, pattern):
                    return
            elif pattern != FORK and fnmatchcase(os.path.basename(shown), pattern) and \
                    self._on_path(os.path.basename(shown)) == real:
                return
        name = os.path.basename(shown)
        also = f", 'exec:{name}:exec' (the {name} on PATH)" if self._on_path(name) == real else ""
        raise self._refusal("exec", f"exec:{shown}", f"start the program {shown!r}", also)

    def _on_path(self, name: str) -> str | None:
        """The real path of the program ``name`` on the PATH this tool started with (a PATH it
        sets for itself later does not change what a bare-name rule allows)."""
        if name not in self._programs:
            found = shutil.which(name, path=self.path)
            self._programs[name] = _real(found) if found else None
        return self._programs[name]

    def _refusal(self, action: str, resource: str, what: str, also: str = "") -> ActionDenied:
        return stamp(ActionDenied(
            f"tool {self.tool!r} may not {what}: its security context does not allow "
            f"'{resource}:{action}'; add it{also} or a wider pattern to security.permissions"),
            f"tool:{self.tool}", action, resource)
