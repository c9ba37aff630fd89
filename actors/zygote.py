"""The zygote: a small, quiet process that forks a supervisor's tools for it.

A supervisor forks each of its tools (Thespian's multiproc bases). A fork costs
in proportion to the forking process's memory (page tables, reverse maps, then a
copy-on-write fault for every page either side writes), and a supervisor's memory
grows with its children: under one supervisor the 1,000th tool took 4.5 times as
long to start as the first. Every page the supervisor writes after a fork also
becomes private to the tools forked before the write, which is part of an idle
tool's memory (issue 10; docs/scaling.md).

So a supervisor forks, before its first tool, one process that does nothing but
fork: the zygote (Android's name for the same trick). The zygote's memory stays
what the supervisor's was then, it writes almost nothing, and each tool is its
fork. Thespian is none the wiser: while a tool is created the supervisor's
multiprocessing context is swapped for one whose ``Process.start()`` asks the
zygote (``serving``), and the tool runs Thespian's own start function as before.

What follows from the tool being the zygote's child, not the supervisor's:
- The zygote reaps its children; the supervisor learns of a tool's end from the
  tool's own goodbye and from its pidfd (``actors.pidwatch``), as before.
- A tool dies with its zygote (``PR_SET_PDEATHSIG``), and the zygote with its
  supervisor: a killed supervisor still leaves no tool behind.
- The zygote ends when its supervisor closes the socket between them.

``TOOLVISOR_ZYGOTE=off`` forks tools from the supervisor as before. A zygote that
cannot start, or stops answering, is logged and replaced by direct forks.
"""

from __future__ import annotations

import gc
import importlib
import multiprocessing
import multiprocessing.process
import os
import pickle
import select
import signal
import socket
import struct
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from loguru import logger

_LEN = struct.Struct("<I")
ANSWER_WITHIN = 10.0  # seconds the zygote has to answer a fork request


def enabled() -> bool:
    """On unless ``TOOLVISOR_ZYGOTE=off`` (Linux only: PR_SET_PDEATHSIG and /proc)."""
    return sys.platform.startswith("linux") and \
        os.environ.get("TOOLVISOR_ZYGOTE", "on").lower() not in ("off", "0", "no", "false")


class ZygoteGone(Exception):
    """The zygote did not take the request (it ended)."""


class CannotFork(Exception):
    """This one child cannot be forked by the zygote (fork it directly)."""


class Zygote:
    """The supervisor's side: ``fork(target, args, name)`` returns the new process's pid."""

    def __init__(self, sock: socket.socket, pid: int) -> None:
        self.sock = sock
        self.pid = pid
        self.asked = 0       # tickets handed out
        self.answered = 0    # answers read (they come in ticket order)
        self.answers: dict[int, int | None] = {}  # ticket -> pid (None: failed), until taken
        self.gone = False

    @classmethod
    def start(cls, before_serving: Callable[[], None]) -> Zygote:
        """Fork the zygote now. ``before_serving`` runs in it first (the caller's own
        clean-up of what a forked actor process must not keep)."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        pid = os.fork()
        if pid == 0:  # the zygote
            code = 0
            try:
                ours.close()
                before_serving()
                _serve(theirs)
            except BaseException:  # noqa: BLE001 - nothing above us in this process
                code = 1
            os._exit(code)
        theirs.close()
        ours.settimeout(ANSWER_WITHIN)
        return cls(ours, pid)

    def fork(self, target: Callable[..., Any], args: tuple[Any, ...], name: str) -> int:
        """Ask for a fork; return its ticket at once (``pid_of(ticket)`` waits for the answer).

        The answers come back in order; the supervisor reads them when it needs a pid,
        so the fork costs it one send, not a round trip."""
        from actors import sharing
        request = (target, args, name, sharing.preloaded_tools())
        try:
            data = pickle.dumps(request, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:  # noqa: BLE001 - whatever pickling raises
            raise CannotFork(f"the start arguments cannot be sent to the zygote: {exc}") from exc
        try:
            _send(self.sock, data)
        except OSError as exc:
            raise ZygoteGone(f"zygote pid {self.pid} did not take the request: {exc}") from exc
        self.asked += 1
        return self.asked

    def pid_of(self, ticket: int) -> int | None:
        """The pid of fork ``ticket``; None if it failed (the reason is logged)."""
        while self.answered < ticket and not self.gone:
            self._read_answer(block=True)
        return self.answers.pop(ticket, None)

    def collect(self) -> list[int]:
        """Read the answers that have arrived (never blocks); return the failed tickets."""
        failed = []
        while not self.gone and self._read_answer(block=False):  # (end-of-file: gone)
            if self.answers.get(self.answered, 0) is None:
                failed.append(self.answered)
        return failed

    def _read_answer(self, block: bool) -> bool:
        if not block:
            ready, _, _ = select.select([self.sock], [], [], 0)
            if not ready:
                return False
        try:
            answer = pickle.loads(_recv(self.sock))
        except (OSError, EOFError, pickle.PickleError) as exc:
            logger.error("zygote pid {} stopped answering ({}); {} fork(s) lost", self.pid, exc,
                         self.asked - self.answered)
            self.gone = True
            return False
        self.answered += 1
        if isinstance(answer, str):
            logger.error("zygote pid {} could not fork: {}", self.pid, answer)
            self.answers[self.answered] = None
        else:
            self.answers[self.answered] = int(answer)
        return True

    def close(self) -> None:
        """End the zygote (it reads end-of-file; its tools are not touched); reap it if it
        has ended already."""
        try:
            self.sock.close()
        except OSError:
            pass
        try:
            os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            pass

    @contextmanager
    def serving(self, manager: Any) -> Iterator[None]:
        """While inside: Thespian's ``manager`` creates its child actors through us."""
        real = getattr(manager, "mpcontext", None)
        manager.mpcontext = _Context(self, real)
        # Thespian lists our open sockets (O(children)) for the child to close: a child of
        # the zygote never had them
        transport = manager.transport
        transport.childResetFileNumList = _none
        try:
            yield
        finally:
            manager.mpcontext = real
            del transport.childResetFileNumList


def _none() -> list[int]:
    return []


class _Context:
    """Stands in for Thespian's multiprocessing context while a tool is created."""

    def __init__(self, zygote: Zygote, real: Any) -> None:
        self.zygote = zygote
        self.real = real

    def Process(self, target: Callable[..., Any], args: tuple[Any, ...] = (),  # noqa: N802
                name: str | None = None) -> _Process:
        # Thespian hands the child its creator's context (for the child's own children):
        # the real one, not this stand-in
        args = tuple(self.real if a is self else a for a in args)
        return _Process(self.zygote, target, args, name or "actor")


class _Process:
    """What Thespian keeps of a child: its pid, ``is_alive()`` and ``join()``."""

    _popen = None  # (actors.shell._drop_start_pipes: no pipes to close)
    exitcode = None

    def __init__(self, zygote: Zygote, target: Callable[..., Any], args: tuple[Any, ...],
                 name: str) -> None:
        self.zygote, self.target, self.args, self.name = zygote, target, args, name
        self.ticket = 0
        self._pid: int | None = None
        self._ended = False

    def start(self) -> None:
        self.ticket = self.zygote.fork(self.target, self.args, self.name)
        self.target = self.args = None  # type: ignore[assignment]
        multiprocessing.process._children.add(self)  # Thespian's detach_child removes it

    @property
    def pid(self) -> int | None:
        if self.ticket:
            self._pid, self.ticket = self.zygote.pid_of(self.ticket), 0
        return self._pid

    def is_alive(self) -> bool:
        """One system call: Thespian asks every child this each time one of them ends."""
        if self._ended:
            return False
        pid = self.pid
        if pid is None:
            self._ended = True
            return False
        try:
            os.kill(pid, 0)  # (a zombie passes for alive until the zygote reaps it: moments)
        except ProcessLookupError:
            self._ended = True
            return False
        except PermissionError:
            pass
        return True

    def ended(self) -> None:
        """The actor's own witness (a pidfd) saw this process end."""
        self._ended = True

    def join(self, timeout: float | None = None) -> None:
        """Thespian joins only children it has seen end; the zygote reaps them."""

    def poll(self) -> int | None:  # (multiprocessing.process._cleanup)
        return None if self.is_alive() else 0


# ----------------------------------------------------------------------- the zygote's side
def _serve(ctl: socket.socket) -> None:
    """The zygote's loop: fork on request, reap what ends, leave when the supervisor does."""
    from actors import logs
    logs.set_title(logs.get_title().replace("supervisor", "zygote of supervisor", 1))
    from actors import sharing
    gc.disable()  # (a collection would write to all it holds; the tools turn theirs on)
    if sharing.enabled():
        gc.freeze()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(sig, signal.SIG_DFL)
    wake_r, wake_w = os.pipe()
    for fd in (wake_r, wake_w):
        os.set_blocking(fd, False)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.set_wakeup_fd(wake_w)
    ctl.setblocking(True)
    mine = (ctl, wake_r, wake_w)
    while True:
        _reap()
        try:
            ready, _, _ = select.select([ctl, wake_r], [], [])
        except InterruptedError:
            continue
        if wake_r in ready:
            try:
                while os.read(wake_r, 512):
                    pass
            except BlockingIOError:
                pass
        if ctl in ready:
            try:
                request = _recv(ctl)
            except (EOFError, OSError):
                return  # the supervisor closed its end, or ended
            try:
                target, args, name, modules = pickle.loads(request)
                for module in modules:  # (opt-in preloading, actors.sharing.preload_tool)
                    if module not in sys.modules:
                        try:
                            importlib.import_module(module)
                        except BaseException:  # noqa: BLE001 - the tool reports it
                            pass
                answer: Any = _fork_one(target, args, name, mine)
            except Exception as exc:  # noqa: BLE001 - told to the supervisor
                answer = f"{type(exc).__name__}: {exc}"
            _send(ctl, pickle.dumps(answer))


def _fork_one(target: Callable[..., Any], args: tuple[Any, ...], name: str,
              mine: tuple[Any, ...]) -> int:
    from actors import sharing  # (the tool shares what the zygote holds, as it would ours)
    ctx = multiprocessing.get_context("fork")
    with sharing.forking():
        proc = ctx.Process(target=_child, args=(mine, target, args), name=name)
        proc.start()
    popen = getattr(proc, "_popen", None)
    finalizer = getattr(popen, "finalizer", None)
    if finalizer is not None:
        finalizer()  # close our end of its start pipe (we reap with waitpid instead)
    multiprocessing.process._children.discard(proc)
    assert proc.pid is not None
    return proc.pid


def _child(mine: tuple[Any, ...], target: Callable[..., Any], args: tuple[Any, ...]) -> None:
    """The tool's first instant: drop the zygote's own descriptors and signal set-up."""
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    ctl, *pipe = mine
    ctl.close()  # (through its object, which so never closes that number again)
    for fd in pipe:
        try:
            os.close(fd)
        except OSError:
            pass
    gc.enable()
    target(*args)


def _reap() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _send(sock: socket.socket, data: bytes) -> None:
    sock.sendall(_LEN.pack(len(data)) + data)


def _recv(sock: socket.socket) -> bytes:
    head = _exactly(sock, _LEN.size)
    return _exactly(sock, _LEN.unpack(head)[0])


def _exactly(sock: socket.socket, n: int) -> bytes:
    parts, got = [], 0
    while got < n:
        part = sock.recv(n - got)
        if not part:
            raise EOFError("the other side closed the socket")
        parts.append(part)
        got += len(part)
    return b"".join(parts)

