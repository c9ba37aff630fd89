"""What a tool may reach outside its own process: the network and other programs.

A tool that has a security context (``security = {...}`` in its spec, even an empty
one) opens network connections and starts programs only as its ``permissions``
allow (issue 12, "what the tool itself may do"):

- ``"net:HOST:PORT:net"``: connect, bind, ``sendto``/``sendmsg`` on an IP socket.
  HOST is matched against the numeric address the socket uses (``10.0.0.*``) or is
  a host name that resolves to it (``api.example.com``); PORT is a number; ``*``
  stands for either (``"net:*:443:net"``, ``"net:*:net"`` for any). Unix sockets
  are ``net:unix:PATH``.
- ``"exec:PROGRAM:exec"``: starting a program (``subprocess``, ``os.system``, which
  runs ``/bin/sh``, ``os.exec*``, ``os.posix_spawn``, multiprocessing's ``spawn`` and
  ``forkserver``). PROGRAM matches the program as written, its file name, or its
  full path on PATH (``"exec:git:exec"``, ``"exec:/usr/bin/*:exec"``).
  ``"exec:fork:exec"`` lets the tool fork itself (``os.fork``, multiprocessing's
  ``fork``).

The check is a Python audit hook (PEP 578) in the tool's own process, installed
before the tool's module is imported, so import-time code is held to it too. Only
the tool's code is checked: the innermost frame outside the standard library
decides, and toolvisor's own packages and Thespian (its messages, calls to other
tools, the audit writer) pass. A refusal raises ``ActionDenied`` in the code that
tried (a ``PermissionDenied`` and a ``PermissionError`` with errno EACCES, so a
library that copes with a refused socket or program goes on as it would); it is
sent up as a ``denied`` event (which counts against the tool's reputation) and,
unless the context's audit mode is ``off``, written to the audit log.

A guard for code that plays by Python's rules (a library that phones home, an agent
talked into running a shell), not a sandbox: native code (``ctypes``, a C extension)
goes around audit hooks. docs/security.md, "Threat model", says what to use instead.
"""

from __future__ import annotations

import _posixsubprocess
import errno
import os
import shutil
import socket
import sys
import sysconfig
import threading
import time
from collections import deque
from collections.abc import Callable
from fnmatch import fnmatchcase
from typing import Any

from actors.errors import PermissionDenied
from actors.permissions import SecurityContext

FORK = "fork"                  # the program name a fork of the tool itself is checked as
RESOLVE_FOR = 30.0             # seconds a rule's host name stays resolved
REPORTS_PER_SECOND = 20        # denials sent up each second; more are counted
_NET_EVENTS = frozenset({"socket.connect", "socket.bind", "socket.sendto", "socket.sendmsg"})
_EXEC_EVENTS = frozenset({"subprocess.Popen", "os.system", "os.exec", "os.posix_spawn",
                          "os.spawn", "os.fork", "os.forkpty"})


class ActionDenied(PermissionDenied, PermissionError):
    """A tool's own code tried to reach the network or start a program its security
    context does not allow."""

    def __init__(self, message: str, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.errno = errno.EACCES


class Reach:
    """The decisions for one tool: may it reach this address, start this program?"""

    def __init__(self, tool: str, context: SecurityContext) -> None:
        self.tool = tool
        self.context = context
        self._names: dict[str, tuple[float, frozenset[str]]] = {}  # host name -> (until, addresses)

    def check_net(self, host: str, port: int | str) -> None:
        resource = f"net:{host}:{port}"
        if self.context.allows("net", resource) or self._by_name(host, str(port)):
            return
        raise self._refusal("net", resource, f"connect to or bind {host} port {port}")

    def check_unix(self, path: str) -> None:
        resource = f"net:unix:{path}"
        if not self.context.allows("net", resource):
            raise self._refusal("net", resource, f"use the Unix socket {path}")

    def check_exec(self, program: str) -> None:
        names = {program, os.path.basename(program)}
        if program != FORK and os.sep not in program:
            found = shutil.which(program)
            if found:
                names.add(found)
        if any(self.context.allows("exec", f"exec:{name}") for name in names):
            return
        what = "fork itself" if program == FORK else f"start the program {program!r}"
        raise self._refusal("exec", f"exec:{program}", what)

    def _by_name(self, address: str, port: str) -> bool:
        """Does a rule name a host (not an address) that resolves to ``address``?"""
        for perm in self.context.permissions:
            if perm.action not in ("net", "*") or not perm.resource.startswith("net:"):
                continue
            host, _, ports = perm.resource[4:].rpartition(":")
            if not host:
                host, ports = ports, "*"
            if "*" in host or _is_address(host) or not fnmatchcase(port, ports):
                continue
            if address in self._resolved(host):
                return True
        return False

    def _resolved(self, host: str) -> frozenset[str]:
        now = time.monotonic()
        until, addresses = self._names.get(host, (0.0, frozenset()))
        if now < until:
            return addresses
        try:
            found = frozenset(str(info[4][0]) for info in socket.getaddrinfo(host, None))
        except OSError:
            found = frozenset()
        self._names[host] = (now + RESOLVE_FOR, found)
        return found

    def _refusal(self, action: str, resource: str, what: str) -> ActionDenied:
        exc = ActionDenied(
            f"tool {self.tool!r} may not {what}: its security context does not allow "
            f"'{resource}:{action}'; add it (or a wider pattern) to security.permissions")
        exc.principal = f"tool:{self.tool}"  # type: ignore[attr-defined]
        exc.permission = f"{resource}:{action}"  # type: ignore[attr-defined]
        exc.resource = resource  # type: ignore[attr-defined]
        exc.action = action  # type: ignore[attr-defined]
        return exc


def _is_address(host: str) -> bool:
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, host)
            return True
        except OSError:
            pass
    return False


# -- whose code is asking ------------------------------------------------------------------
def _package_dir(name: str) -> str:
    module = sys.modules.get(name) or __import__(name)
    return os.path.dirname(os.path.abspath(module.__file__ or "")) + os.sep


def _stdlib_dirs() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    return tuple({os.path.abspath(paths[k]) + os.sep for k in ("stdlib", "platstdlib")})


class Origins:
    """Which code a frame belongs to: the standard library, toolvisor (and Thespian), or the tool."""

    def __init__(self) -> None:
        self.stdlib = _stdlib_dirs()
        self.runtime = tuple(_package_dir(p) for p in ("actors", "supervisors", "thespian"))
        self._kinds: dict[str, str] = {}

    def kind(self, filename: str) -> str:
        kind = self._kinds.get(filename)
        if kind is None:
            kind = self._kinds[filename] = self._classify(filename)
        return kind

    def _classify(self, filename: str) -> str:
        if filename.startswith("<frozen "):
            return "stdlib"
        path = os.path.abspath(filename) if filename and not filename.startswith("<") else filename
        if path.startswith(self.runtime):
            return "runtime"
        for base in self.stdlib:
            if path.startswith(base):
                first = path[len(base):].split(os.sep, 1)[0]
                return "tool" if first in ("site-packages", "dist-packages") else "stdlib"
        return "tool"

    def tool_is_asking(self, frame: Any) -> bool:
        """True unless the innermost frame outside the standard library is toolvisor's own.
        A stack of standard library frames only (a thread the tool started on a library
        function) counts as the tool's."""
        while frame is not None:
            kind = self.kind(frame.f_code.co_filename)
            if kind != "stdlib":
                return kind == "tool"
            frame = frame.f_back
        return True


# -- the hook ------------------------------------------------------------------------------
class Guard:
    """The audit hook of one tool process, and the denials it has yet to report."""

    def __init__(self, reach: Reach, report: Callable[[ActionDenied], None]) -> None:
        self.reach = reach
        self.origins = Origins()
        self.report = report
        self.owner = threading.get_ident()          # the actor's thread: it may send at once
        self.pending: deque[ActionDenied] = deque()  # denials in other threads, sent by the owner
        self.bell_r, self.bell_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.window = (0, 0)                         # (second, reports sent in it)
        self.unreported = 0

    def hook(self, event: str, args: tuple[Any, ...]) -> None:
        if event in _NET_EVENTS:
            check = self._net
        elif event in _EXEC_EVENTS:
            check = self._exec
        else:
            return
        if self.origins.tool_is_asking(sys._getframe(2)):  # (above this and _hook)
            self.checked(check, event, args)

    def checked(self, check: Callable[[str, tuple[Any, ...]], None], event: str,
                args: tuple[Any, ...]) -> None:
        try:
            check(event, args)
        except ActionDenied as exc:
            self._denied(exc)
            raise

    def _net(self, event: str, args: tuple[Any, ...]) -> None:
        sock, address = args[0], args[1]
        if address is None:  # sendmsg on a connected socket: checked when it connected
            return
        family = getattr(sock, "family", None)
        if family in (socket.AF_INET, socket.AF_INET6) and isinstance(address, tuple):
            self.reach.check_net(str(address[0]), address[1])
        elif family == socket.AF_UNIX:
            path = address.decode(errors="replace") if isinstance(address, bytes) else str(address)
            self.reach.check_unix("@" + path[1:] if path.startswith("\0") else path)
        else:  # netlink, packet, ...: only a rule for every address
            self.reach.check_net(f"{getattr(family, 'name', family)}", "*")

    def _exec(self, event: str, args: tuple[Any, ...]) -> None:
        if event == "fork_exec":  # (see _checking): the candidates' first one that exists runs
            programs, argv = list(args[1] or ()), args[0]
            found = [p for p in programs if os.access(p, os.X_OK)]
            program: Any = (found or programs or [argv[0] if argv else "?"])[0]
        elif event in ("os.fork", "os.forkpty"):
            program: Any = FORK
        elif event == "os.system":
            program = "/bin/sh"
        elif event == "subprocess.Popen":
            executable, argv = args[0], args[1]
            program = executable if executable is not None else \
                (argv if isinstance(argv, (str, bytes, os.PathLike)) else list(argv)[0])
        elif event == "os.spawn":
            program = args[1]
        else:  # os.exec, os.posix_spawn: (path, argv, env)
            program = args[0]
        self.reach.check_exec(os.fsdecode(program))

    def _denied(self, exc: ActionDenied) -> None:
        if threading.get_ident() == self.owner:
            self._send(exc)
            return
        self.pending.append(exc)
        try:
            os.write(self.bell_w, b"!")
        except OSError:  # the pipe is full: the owner is behind and will find them all
            pass

    def flush(self) -> None:
        """Report the denials other threads met (called on the actor's thread)."""
        try:
            while os.read(self.bell_r, 4096):
                pass
        except OSError:
            pass
        while self.pending:
            self._send(self.pending.popleft())

    def _send(self, exc: ActionDenied) -> None:
        second = int(time.monotonic())
        start, sent = self.window
        if second != start:
            start, sent = second, 0
        if sent >= REPORTS_PER_SECOND:
            self.unreported += 1
            self.window = (start, sent)
            return
        self.window = (start, sent + 1)
        if self.unreported:
            exc.unreported = self.unreported  # type: ignore[attr-defined]
            self.unreported = 0
        try:
            self.report(exc)
        except Exception:  # reporting must never turn a refusal into another error
            pass


_installed: Guard | None = None


def enforced(spec: dict[str, Any]) -> bool:
    """Is this tool held to its net and exec permissions? Only when it has a security context."""
    return spec.get("security") is not None


def install(tool: str, context: SecurityContext, report: Callable[[ActionDenied], None]) -> Guard:
    """Hold this process to ``context``'s net and exec permissions, for good (a hook cannot be
    removed). One per process: a second call replaces the rules the hook applies."""
    global _installed
    guard = Guard(Reach(tool, context), report)
    if _installed is None:
        sys.addaudithook(_hook)
        _posixsubprocess.fork_exec = _checking(_posixsubprocess.fork_exec)
    else:
        os.close(_installed.bell_r)
        os.close(_installed.bell_w)
    _installed = guard
    return guard


def _hook(event: str, args: tuple[Any, ...]) -> None:
    guard = _installed
    if guard is not None:
        guard.hook(event, args)


def _checking(real: Callable[..., int]) -> Callable[..., int]:
    """``_posixsubprocess.fork_exec`` raises no audit event of its own (multiprocessing's
    ``spawn`` and ``forkserver`` call it directly): check its program here."""

    def fork_exec(*args: Any, **kwargs: Any) -> int:
        guard = _installed
        if guard is not None and guard.origins.tool_is_asking(sys._getframe(1)):
            guard.checked(guard._exec, "fork_exec", args)
        return real(*args, **kwargs)

    return fork_exec
