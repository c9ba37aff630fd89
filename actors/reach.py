"""What a tool may reach outside its own process: the network and other programs.

A tool that has a security context (``security = {...}`` in its spec, even an empty
one) opens network connections and starts programs only as its ``permissions``
allow (issue 12, "what the tool itself may do"); the rules are in
``actors.reach_rules``:

- ``"net:HOST:PORT:net"``: connect, bind, listen, ``sendto``/``sendmsg`` on an IP
  socket (``"net:10.0.0.*:443:net"``, ``"net:api.example.com:443:net"``,
  ``"net:*:net"``); ``"net:unix:PATH:net"`` for Unix sockets.
- ``"exec:PROGRAM:exec"``: starting a program (``subprocess``, ``os.system``, which
  runs ``/bin/sh``, ``os.exec*``, ``os.posix_spawn``, multiprocessing's ``spawn`` and
  ``forkserver``); ``"exec:fork:exec"``: ``os.fork`` (multiprocessing's ``fork``).

The check is a Python audit hook (PEP 578) in the tool's own process, installed
before the tool's module is imported, so import-time code is held to it too; two
things raise no audit event and are wrapped instead: ``_posixsubprocess.fork_exec``
(``subprocess`` and multiprocessing start programs with it; its check sees the file
that will run) and ``socket.listen`` on a socket that was
never bound (the kernel binds it to every interface).

Whose code asks decides: the innermost frame outside the standard library. The tool's
code, the libraries it uses and code it built are checked; toolvisor's own packages
and Thespian (messages, calls to other tools, the audit writer) are not, except below
``tool_code``: the runner runs every command, callback, timer and ``on_reply`` through
it, so a standard-library function handed to the runtime (a timer of
``partial(os.system, ...)``) is still the tool's.

A refusal raises ``ActionDenied`` in the code that tried (a ``PermissionDenied`` and a
``PermissionError`` with errno EACCES, so a library that copes with a refused socket
or program goes on as it would). It is queued and sent from the tool's actor loop
(never from inside the hook: that may be a finalizer or a signal handler) as a
``denied`` event (which counts against the tool's reputation) and, unless the
context's audit mode is ``off``, as an audit line. A fork of the tool is held to the
same rules but cannot report (it has no actor loop).

A guard for code that plays by Python's rules (a library that phones home, an agent
talked into running a shell), not a sandbox: native code (``ctypes``, a C extension)
goes around audit hooks. docs/security.md, "Threat model", says what to use instead.
"""

from __future__ import annotations

import _posixsubprocess
import os
import socket
import sys
import sysconfig
import time
import weakref
from collections import deque
from collections.abc import Callable
from typing import Any

from actors.reach_rules import FORK, ActionDenied, Reach

__all__ = ["ActionDenied", "Guard", "Origins", "Reach", "enforced", "install", "tool_code"]

REPORTS_PER_SECOND = 20        # denials sent up each second; more are counted
MAX_QUEUED = 1000              # denials waiting for the actor loop; more are counted
_NET_EVENTS = frozenset({"socket.connect", "socket.bind", "socket.sendto", "socket.sendmsg"})
_EXEC_EVENTS = frozenset({"subprocess.Popen", "os.system", "os.exec", "os.posix_spawn",
                          "os.spawn", "os.fork", "os.forkpty"})
_IP = (socket.AF_INET, socket.AF_INET6)


def tool_code(fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
    """Run code the tool supplied (a command, callback, timer or ``on_reply``). Below this
    frame, the innermost frame that is not the standard library's decides whose code it
    is; when that is this frame (a standard-library function was handed over), the tool's."""
    return fn(*args, **kwargs)


#: Frames that hand over to the tool's code: below them, a standard-library function is the
#: tool's (``weakref.finalize`` runs the tool's clean-ups whenever a collection happens to
#: come, under toolvisor's frames as often as under the tool's).
_BOUNDARIES = frozenset({tool_code.__code__, weakref.finalize.__call__.__code__})


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
        """True unless the innermost frame outside the standard library is toolvisor's own
        (and not a hand-over: ``tool_code``, ``weakref.finalize``). A stack of standard-library
        frames only (a thread or an ``atexit`` function the tool started on a library
        function) is the tool's."""
        while frame is not None:
            code = frame.f_code
            if code in _BOUNDARIES:
                return True
            kind = self.kind(code.co_filename)
            if kind != "stdlib":
                return kind == "tool"
            frame = frame.f_back
        return True


def _caller(depth: int) -> Any:
    """The frame ``depth`` levels above the one calling this (0: that one), or None when the
    stack is shallower (an event raised by a built-in function called straight from C)."""
    try:
        return sys._getframe(depth + 1)
    except ValueError:
        return None


# -- the hook ------------------------------------------------------------------------------
class Guard:
    """The audit hook of one tool process, and the denials it has yet to report."""

    def __init__(self, reach: Reach, report: Callable[[ActionDenied], None]) -> None:
        self.reach = reach
        self.origins = Origins()
        self.report = report
        self.pid = os.getpid()                       # a fork checks, but cannot report
        self.pending: deque[ActionDenied] = deque()  # sent by the actor loop (flush)
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
        if self.origins.tool_is_asking(_caller(2)):  # (above this and _hook)
            self.checked(check, event, args)

    def checked(self, check: Callable[..., None], *args: Any) -> None:
        try:
            check(*args)
        except ActionDenied as exc:
            self._denied(exc)
            raise

    def _net(self, event: str, args: tuple[Any, ...]) -> None:
        sock, address = args[0], args[1]
        if address is None:  # sendmsg on a connected socket: checked when it connected
            return
        family = getattr(sock, "family", None)
        if family in _IP and isinstance(address, tuple) and len(address) >= 2:
            raw = address[0]
            host = os.fsdecode(bytes(raw)) if isinstance(raw, (bytes, bytearray)) else str(raw)
            if host == "":  # every interface, as the kernel reads it
                host = "::" if family == socket.AF_INET6 else "0.0.0.0"
            elif host == "<broadcast>":
                host = "255.255.255.255"
            self.reach.check_net(host, address[1])
        elif family == socket.AF_UNIX:
            self.reach.check_unix(address)
        else:
            self.reach.check_family(family)

    def _exec(self, event: str, args: tuple[Any, ...]) -> None:
        cwd: Any = None
        path: Any = None
        if event in ("os.fork", "os.forkpty"):
            program: Any = FORK
        elif event == "os.system":
            program = "/bin/sh"
        elif event == "fork_exec":  # (see _checking_fork_exec): the first candidate that exists
            cwd = os.fsdecode(args[4]) if len(args) > 4 and args[4] else os.getcwd()
            argv = args[0] or ["?"]
            candidates = [os.path.join(cwd, os.fsdecode(p)) for p in (args[1] or ())] or \
                [os.path.join(cwd, os.fsdecode(argv[0]))]
            program = next((p for p in candidates if os.access(p, os.X_OK)), candidates[0])
        elif event == "subprocess.Popen":  # (executable, args, cwd, env)
            executable, argv, cwd, env = args[0], args[1], args[2], args[3]
            program = executable if executable is not None else \
                (argv if isinstance(argv, (str, bytes, os.PathLike)) else list(argv)[0])
            if env is not None:
                path = env.get("PATH", env.get(b"PATH", os.defpath))
            cwd = os.fsdecode(cwd) if cwd is not None else None
            path = os.fsdecode(path) if path is not None else None
        elif event == "os.spawn":
            program = args[1]
        else:  # os.exec, os.posix_spawn: (path, argv, env)
            program = args[0]
        if isinstance(program, int):  # os.execve(fd, ...): the file that descriptor opened
            try:
                program = os.readlink(f"/proc/self/fd/{program}")
            except OSError:
                program = f"/proc/self/fd/{program}"
        self.reach.check_exec(os.fsdecode(program), cwd, path)

    def check_listen(self, sock: socket.socket) -> None:
        """``listen`` on a socket never bound: the kernel binds it to every interface."""
        if sock.family in _IP and sock.getsockname()[1] == 0:
            self.checked(self.reach.check_net,
                         "::" if sock.family == socket.AF_INET6 else "0.0.0.0", 0)

    # -- reporting ---------------------------------------------------------------------
    def _denied(self, exc: ActionDenied) -> None:
        if os.getpid() != self.pid:  # a fork of the tool: no actor loop to report with
            return
        if len(self.pending) >= MAX_QUEUED:
            self.unreported += 1
        else:
            exc.__traceback__ = None  # (keep the message, not the frames)
            self.pending.append(exc)
        try:
            os.write(self.bell_w, b"!")
        except OSError:  # the pipe is full: the actor loop is behind and will find them all
            pass

    def flush(self) -> None:
        """Report the denials met since the last flush (called by the actor's loop)."""
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


def install(tool: str, context: Any, report: Callable[[ActionDenied], None]) -> Guard:
    """Hold this process to ``context``'s net and exec permissions, for good (a hook cannot be
    removed). One per process: a second call replaces the rules the hook applies."""
    global _installed
    guard = Guard(Reach(tool, context), report)
    if _installed is None:
        sys.addaudithook(_hook)
        checking = _checking_fork_exec(_posixsubprocess.fork_exec)
        _posixsubprocess.fork_exec = checking
        import subprocess  # (it keeps its own name for fork_exec, bound when it was imported)
        if getattr(subprocess, "_fork_exec", None) is not None:
            subprocess._fork_exec = checking  # type: ignore[attr-defined]
        socket.socket.listen = _checking_listen(socket.socket.listen)  # type: ignore[method-assign]
    else:
        os.close(_installed.bell_r)
        os.close(_installed.bell_w)
    _installed = guard
    return guard


def _hook(event: str, args: tuple[Any, ...]) -> None:
    guard = _installed
    if guard is not None:
        guard.hook(event, args)


def _checking_fork_exec(real: Callable[..., int]) -> Callable[..., int]:
    """``_posixsubprocess.fork_exec`` raises no audit event of its own (multiprocessing's
    ``spawn`` and ``forkserver`` call it directly): check its program here."""

    def fork_exec(*args: Any, **kwargs: Any) -> int:
        guard = _installed
        if guard is not None and guard.origins.tool_is_asking(_caller(1)):
            guard.checked(guard._exec, "fork_exec", args)
        return real(*args, **kwargs)

    return fork_exec


def _checking_listen(real: Callable[..., None]) -> Callable[..., None]:
    def listen(self: socket.socket, *args: Any) -> None:
        guard = _installed
        if guard is not None and guard.origins.tool_is_asking(_caller(1)):
            guard.check_listen(self)
        real(self, *args)

    return listen
