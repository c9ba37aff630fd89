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
ends, or leaves a request unanswered for ``ANSWER_WITHIN`` seconds, is logged, killed
and replaced for the next tool (its tools die with it and are restarted by their
supervisor); after three, the supervisor forks its tools itself. A start the zygote
cannot take is forked by the supervisor directly, inside Thespian's own start.
"""

from __future__ import annotations

import gc
import importlib
import multiprocessing
import multiprocessing.process
import multiprocessing.util as mp_util
import os
import pickle
import select
import signal
import socket
import struct
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from loguru import logger

from actors import logs, sharing

_LEN = struct.Struct("<I")
ANSWER_WITHIN = 10.0  # seconds the zygote has to answer a fork request


def enabled() -> bool:
    """On unless ``TOOLVISOR_ZYGOTE=off`` (Linux only: PR_SET_PDEATHSIG and /proc)."""
    return sys.platform.startswith("linux") and \
        os.environ.get("TOOLVISOR_ZYGOTE", "on").lower() not in ("off", "0", "no", "false")


class ZygoteGone(Exception):
    """The zygote cannot take requests any more (it ended, or it stopped reading)."""


class CannotFork(Exception):
    """This one child cannot be forked by the zygote (fork it directly)."""


#: the supervisors' ends of their zygotes' sockets: a process forked later (a child
#: supervisor, a zygote, a tool) closes its copies at once (``_drop_supervisor_ends``), so
#: that no other process can send a zygote requests or read its answers, and so that a
#: closed end gives the zygote its end-of-file
_SOCKETS: weakref.WeakSet[socket.socket] = weakref.WeakSet()


def _drop_supervisor_ends() -> None:
    for sock in list(_SOCKETS):
        try:
            sock.close()
        except OSError:
            pass
    _SOCKETS.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_drop_supervisor_ends)


class Zygote:
    """The supervisor's side. Requests go out at once; answers are read when they arrive
    (``collect``, when the socket is readable), never waited for: an actor does not block."""

    def __init__(self, sock: socket.socket, pid: int) -> None:
        self.sock = sock
        self.pid = pid
        self.asked = 0                                 # tickets handed out
        self.pending: dict[int, _Process] = {}          # ticket -> process waiting for its pid
        self.gone = False
        self.fallback: Exception | None = None          # why the last start was forked directly
        self.failed: list[_Process] = []                # failed forks not yet taken
        _SOCKETS.add(sock)

    @classmethod
    def start(cls, before_serving: Callable[[], None]) -> Zygote:
        """Fork the zygote now. ``before_serving`` runs in it first (the caller's own
        clean-up of what a forked actor process must not keep)."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:  # the zygote
            code = 0
            try:
                ours.close()
                _die_with(parent)
                before_serving()
                _serve(theirs)
            except BaseException:  # noqa: BLE001 - nothing above us in this process
                code = 1
            os._exit(code)
        theirs.close()
        ours.settimeout(ANSWER_WITHIN)  # (a send into a full socket: the zygote is stuck)
        return cls(ours, pid)

    def fork(self, proc: _Process) -> None:
        """Ask for ``proc``'s fork; its pid arrives later (``collect``)."""
        if self.gone:
            raise ZygoteGone(f"zygote pid {self.pid} has ended")
        request = (proc.target, proc.args, proc.name, sharing.preloaded_tools())
        try:
            data = pickle.dumps(request, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:  # noqa: BLE001 - whatever pickling raises
            raise CannotFork(f"the start arguments cannot be sent to the zygote: {exc}") from exc
        try:
            _send(self.sock, data)
        except OSError as exc:
            self.gone = True
            raise ZygoteGone(f"zygote pid {self.pid} did not take the request: {exc}") from exc
        self.asked += 1
        self.pending[self.asked] = proc
        proc.asked_at = time.monotonic()

    def take_failed(self) -> list[_Process]:
        """The processes whose fork failed since the last call (``collect`` finds them)."""
        failed, self.failed = self.failed, []
        return failed

    def collect(self) -> None:
        """Read the answers that have arrived (never waits for one); give each process its
        pid. A fork that failed (all those still waiting, once the zygote is gone) goes to
        ``take_failed``."""
        failed = self.failed
        while not self.gone:
            if not _readable(self.sock):
                break
            self._read_one(failed)
        if self.gone:
            for proc in self.pending.values():
                proc.failed = proc.failed or f"zygote pid {self.pid} ended before forking it"
                failed.append(proc)
            self.pending.clear()

    def _read_one(self, failed: list[_Process]) -> None:
        try:
            answer = pickle.loads(_recv(self.sock))
        except (OSError, EOFError, pickle.PickleError, ValueError) as exc:
            if self.pending:
                logger.error("zygote pid {} stopped answering ({}); {} fork(s) lost", self.pid,
                             exc, len(self.pending))
            self.gone = True
            return
        ticket = min(self.pending) if self.pending else None  # answers come in ticket order
        proc = self.pending.pop(ticket) if ticket is not None else None
        if proc is None:
            return
        if isinstance(answer, str):
            logger.error("zygote pid {} could not fork: {}", self.pid, answer)
            proc.failed = answer
            failed.append(proc)
        else:
            proc._pid = int(answer)

    def stuck(self) -> bool:
        """Has a request waited longer than ANSWER_WITHIN for its answer?"""
        oldest = min(self.pending) if self.pending else None
        return oldest is not None and \
            time.monotonic() - self.pending[oldest].asked_at > ANSWER_WITHIN

    def end(self, kill: bool = False) -> bool:
        """Close our end (the zygote leaves at end-of-file, and its tools die with it:
        PR_SET_PDEATHSIG); ``kill``: SIGKILL it first. True once it has been reaped."""
        self.gone = True
        if kill:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except OSError:
                pass
        try:
            self.sock.close()
        except OSError:
            pass
        return self.reap()

    def reap(self) -> bool:
        """Collect the ended zygote's exit status (it is our child); True once done."""
        try:
            done, _ = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            return True
        return done != 0

    @contextmanager
    def serving(self, manager: Any) -> Iterator[None]:
        """While inside: Thespian's ``manager`` creates its child actors through us."""
        real = getattr(manager, "mpcontext", None)
        manager.mpcontext = _Context(self, real)
        self.fallback = None
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
        return _Process(self.zygote, self.real or multiprocessing, target, args, name or "actor")


class _Process:
    """What Thespian keeps of a child: its pid, ``is_alive()`` and ``join()``.

    Thespian catches whatever ``start()`` raises and carries on as if the child had
    started, so a fork the zygote cannot take is made here, directly, instead (and
    ``zygote.fallback`` says why); nothing here raises into Thespian.
    """

    exitcode = None
    # (a supervisor keeps one per child for as long as it runs: slots, and no name, target or
    # arguments once it is started; issue 10)
    __slots__ = ("zygote", "real", "target", "args", "name", "_pid", "_ended", "failed", "direct",
                 "asked_at")

    def __init__(self, zygote: Zygote, real: Any, target: Callable[..., Any],
                 args: tuple[Any, ...], name: str) -> None:
        self.zygote, self.real, self.target, self.args, self.name = zygote, real, target, args, name
        self._pid: int | None = None
        self._ended = False
        self.failed: str | None = None   # why the zygote could not fork it
        self.direct: Any = None          # the multiprocessing Process of a direct fork
        self.asked_at = 0.0

    def start(self) -> None:
        try:
            self.zygote.fork(self)
        except (ZygoteGone, CannotFork) as exc:
            self.zygote.fallback = exc
            direct = self.real.Process(target=self.target, args=self.args, name=self.name)
            direct.start()
            multiprocessing.process._children.discard(direct)  # (never joined at our exit)
            self.direct, self._pid = direct, direct.pid
        self.target = self.args = self.name = None  # type: ignore[assignment]
        multiprocessing.process._children.add(self)  # Thespian's detach_child removes it

    @property
    def _popen(self) -> Any:  # (actors.shell._drop_start_pipes: a direct fork's pipes)
        return getattr(self.direct, "_popen", None)

    @property
    def pid(self) -> int | None:
        """None until the zygote's answer has been read (never waits for it)."""
        if self._pid is None and self.failed is None and not self.zygote.gone:
            try:
                self.zygote.collect()
            except Exception:  # noqa: BLE001 - never into Thespian
                pass
        return self._pid

    def is_alive(self) -> bool:
        """One system call: Thespian asks every child this each time one of them ends."""
        if self._ended or self.failed is not None:
            return False
        if self.direct is not None:
            return bool(self.direct.is_alive())
        pid = self.pid
        if pid is None:
            return not self.zygote.gone  # not answered yet: starting
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
        if self.direct is not None and not self.direct.is_alive():
            self.direct.join(0)

    def poll(self) -> int | None:  # (multiprocessing.process._cleanup)
        return None if self.is_alive() else 0


def _readable(sock: socket.socket) -> bool:
    """Is there something to read (or an end-of-file)? Never waits."""
    try:
        waiting = select.poll()
        waiting.register(sock, select.POLLIN)
        return bool(waiting.poll(0))
    except (OSError, ValueError):  # closed: reading it says so
        return True


def _die_with(parent: int) -> None:
    """SIGKILL this process when ``parent`` (the process that forked it) ends."""
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # pragma: no cover - non-glibc systems
        return
    if os.getppid() != parent:  # it ended before we asked (we may have a subreaper now)
        os._exit(1)


# ----------------------------------------------------------------------- the zygote's side
def _serve(ctl: socket.socket) -> None:
    """The zygote's loop: fork on request, reap what ends, leave when the supervisor does."""
    logs.set_title(logs.get_title().replace("supervisor", "zygote of supervisor", 1))
    gc.disable()  # (a collection would write to all it holds; the tools turn theirs on)
    if sharing.enabled():
        gc.freeze()
    for sig in signal.valid_signals():  # the supervisor's handlers (Thespian's) are not ours;
        try:                             # what it ignores (SIGPIPE) stays ignored
            if callable(signal.getsignal(sig)):
                signal.signal(sig, signal.SIG_DFL)
        except (OSError, ValueError, RuntimeError):
            pass
    wake_r, wake_w = os.pipe()
    for fd in (wake_r, wake_w):
        os.set_blocking(fd, False)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.set_wakeup_fd(wake_w)
    ctl.setblocking(True)
    mine = (ctl, wake_r, wake_w)
    waiting = select.poll()  # (not select.select: numbers over 1023 are common here)
    waiting.register(ctl, select.POLLIN)
    waiting.register(wake_r, select.POLLIN)
    reap = True
    while True:
        # Only after a SIGCHLD (its handler wrote to wake_w): a waitpid(-1) has the kernel
        # look at every child of the zygote, and one per request made each spawn cost
        # O(tools) (``wait_consider_task``: about 0.15 ms per spawn at 1,000 tools, perf).
        # A child that ends after the reap below wakes the poll; one that ends during it
        # too (its byte is still in the pipe).
        if reap:
            reap_children()
        try:
            ready = {fd for fd, _ in waiting.poll()}
        except InterruptedError:
            continue
        reap = wake_r in ready
        if reap:
            try:
                while os.read(wake_r, 512):
                    pass
            except BlockingIOError:
                pass
        if ctl.fileno() in ready:
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
    """Fork one tool and return its pid. A plain ``os.fork``: multiprocessing's ``Process``
    around it cost each idle tool about 0.1 MiB of private memory (its start-up code run
    in the child; docs/scaling.md, Memory), and the zygote reaps with ``waitpid`` anyway."""
    mp_util._flush_std_streams()  # (or the child would write the zygote's buffered output again)
    zygote = os.getpid()  # (read after the fork, a zygote that just died would be init's pid)
    with sharing.forking():
        pid = os.fork()
        if pid == 0:
            _child(zygote, mine, target, args, name)  # never returns
    return pid


def _child(zygote: int, mine: tuple[Any, ...], target: Callable[..., Any],
           args: tuple[Any, ...], name: str) -> None:
    """The tool's process, from its first instant to ``os._exit``: die with the zygote,
    drop its descriptors and signal set-up, then run Thespian's start function the way
    multiprocessing's ``Process._bootstrap`` runs a target: what a tool relies on of it
    (stdin, children, finalizers, exit code, threads joined), not the cosmetics."""
    code = 1
    try:
        _die_with(zygote)
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        ctl, *pipe = mine
        ctl.close()  # (through its object, which so never closes that number again)
        for fd in pipe:
            try:
                os.close(fd)
            except OSError:
                pass
        # What Process._bootstrap does for its child: no children yet, none of the zygote's
        # finalizers, multiprocessing's after-fork handlers run, stdin from /dev/null, a name.
        multiprocessing.process._children = set()  # type: ignore[attr-defined]
        mp_util._finalizer_registry.clear()
        mp_util._run_after_forkers()
        mp_util._close_stdin()
        multiprocessing.process.current_process().name = name
        gc.enable()
        try:
            target(*args)
            code = 0
        finally:  # the tool's multiprocessing finalizers, its mp children joined or ended
            mp_util._exit_function()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if not isinstance(exc.code, int | None):
            print(exc.code, file=sys.stderr)
    except BaseException:  # noqa: BLE001 - nothing above us in this process
        import traceback

        traceback.print_exc()
    finally:
        try:
            threading._shutdown()  # type: ignore[attr-defined]  # (joins non-daemon threads)
        finally:
            mp_util._flush_std_streams()
            os._exit(code)


def reap_children() -> None:
    """Collect the exit status of every child of this process that has ended (never waits)."""
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

