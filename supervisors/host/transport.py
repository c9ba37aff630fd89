"""The seam to Thespian on the host side: start the actor system, exchange messages.

Everything the host sends goes through ``Transport.exchange``: encode a
message, send it, and wait (until a wall-clock deadline) for the reply that
matches it, discarding late answers to earlier requests. Each exchange takes a
Thespian endpoint of its own from a small pool and gives it back after, so handles
can be used from many threads at once and a thread that ends leaves no listening
socket behind (an endpoint is a TCP listener in Thespian). While
waiting, the transport checks that the peer's process still lives, so a peer
that dies gives an answer at once instead of a timeout.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psutil
from loguru import logger
from thespian.actors import ActorSystem

from actors import sharing, wire_auth
from actors.codec import decode, encode
from actors.errors import CallTimeout, MalformedMessage, ToolError
from actors.frames import MAX_FRAME
from actors.shell import BASES
from supervisors.processes.procs import end_session

#: How often a waiting caller checks that the peer process still lives (seconds).
LIVENESS_POLL = 0.05


@contextmanager
def _default_signals() -> Iterator[None]:
    """SIGINT/SIGTERM at their defaults while the actor system forks its admin."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig in saved:
        signal.signal(sig, signal.SIG_DFL)
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


#: Idle Thespian endpoints kept for reuse (each is a listening socket in this process).
POOL_IDLE = 8


def _close_endpoint(cm: Any) -> None:
    try:
        cm.__exit__(None, None, None)
    except Exception:
        pass


def _children() -> set[int]:
    try:
        return {p.pid for p in psutil.Process().children()}
    except psutil.Error:
        return set()


def _reap(pids: set[int], within: float = 2.0) -> None:
    """Collect the exit status of the launchers Thespian forked and never waits for.

    Thespian starts its admin through a process that forks the admin and exits at
    once, then detaches it from multiprocessing: without this it stays <defunct>
    for as long as the host runs.
    """
    deadline = time.monotonic() + within
    left = set(pids)
    while left and time.monotonic() < deadline:
        for pid in list(left):
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:  # reaped elsewhere, or not our child
                done = pid
            if done:
                left.discard(pid)
        if left:
            time.sleep(0.005)
ADMIN_PIDFILE_ENV = "TOOLVISOR_ADMIN_PIDFILE"


def _note_admin_pid() -> None:
    """Make Thespian's admin write its pid to a file as the first thing it does.

    The admin daemonizes into a session of its own; if the host dies while the
    actor system is still starting, nothing else would know that process. The
    reaper (started before the actor system) reads the file and ends that session.
    """
    from thespian.system import multiprocCommon

    original = multiprocCommon.startAdmin
    if getattr(original, "_toolvisor", False):
        return

    def start_admin(*args: Any, **kw: Any) -> Any:
        path = os.environ.get(ADMIN_PIDFILE_ENV)
        if path:
            try:
                with open(path + ".tmp", "w") as f:
                    f.write(str(os.getpid()))
                os.replace(path + ".tmp", path)
            except OSError:
                pass
        return original(*args, **kw)

    start_admin._toolvisor = True  # type: ignore[attr-defined]
    multiprocCommon.startAdmin = start_admin


class PeerGone(Exception):
    """The process we sent to ended before it answered."""


def free_port(ip: str = "127.0.0.1", kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((ip, 0))
        return int(s.getsockname()[1])


class Transport:
    """One Thespian actor system, bound to loopback unless told otherwise."""

    def __init__(self, base: str = "multiprocTCPBase", ip: str = "127.0.0.1") -> None:
        if base not in BASES:
            raise ValueError(f"base={base!r} is not supported; use one of {', '.join(BASES)} "
                             "(multiprocQueueBase does not report killed children)")
        self.base = base
        self.ip = ip
        self.port = 0
        self._asys: Any = None
        self._idle: deque[tuple[Any, Any]] = deque()  # (context manager, endpoint)
        self._closed = False
        self._lent: list[tuple[Any, Any]] = []
        self._auth_live = False

    def start(self, admin_pidfile: str | None = None) -> None:
        """Start the actor system; its admin writes its pid to ``admin_pidfile`` at once."""
        # Thespian reads this when it creates addresses; all our processes inherit it.
        os.environ.setdefault("THESPIAN_BASE_IPADDR", self.ip)
        _note_admin_pid()
        if admin_pidfile:
            os.environ[ADMIN_PIDFILE_ENV] = admin_pidfile
        try:
            self._start()
        finally:
            os.environ.pop(ADMIN_PIDFILE_ENV, None)

    def abandon(self) -> None:
        """Forget the actor system without asking its admin (it was ended by force)."""
        self._closed = True
        self._idle.clear()
        self._lent.clear()
        self._asys = None
        self._release_auth()

    def _start(self) -> None:
        kind = socket.SOCK_DGRAM if self.base == "multiprocUDPBase" else socket.SOCK_STREAM
        self._closed = False
        wire_auth.begin_system()  # the secret every process of this system inherits (memory only)
        self._auth_live = True
        for attempt in range(3):  # a free port can be taken by someone else before we bind it
            self.port = free_port(self.ip, kind)
            try:
                before = _children()
                # actor processes must not inherit the host's handlers; forking() preloads
                # what every actor process shares and has the admin freeze what it
                # inherits (actors.sharing), as the actors do
                with _default_signals(), sharing.forking():
                    self._asys = ActorSystem(self.base, {"Admin Port": self.port},
                                             transientUnique=True)
                _reap(_children() - before)
                return
            except Exception as exc:
                self._end_failed_admin()
                if attempt == 2:
                    self._release_auth()
                    raise RuntimeError(f"could not start the actor system on 127.0.0.1 "
                                       f"(last port tried {self.port}): {exc}") from exc
                logger.warning("actor system did not start on port {} ({}); trying another",
                               self.port, exc)

    @staticmethod
    def _end_failed_admin() -> None:
        """A start attempt failed, perhaps after its admin started (a host that cannot talk
        to it): end that admin's session, as the reaper would, before trying again."""
        path = os.environ.get(ADMIN_PIDFILE_ENV)
        if not path:
            return
        try:
            with open(path) as f:
                sid = int(f.read().strip() or 0)
            os.unlink(path)
        except (OSError, ValueError):
            return
        if sid:
            end_session(sid, grace=0.5)

    def create(self, shell: type) -> Any:
        """Create a top-level actor (the root supervisor) and return its address."""
        return self._asys.createActor(shell)

    def _take(self) -> tuple[Any, Any]:
        try:
            return self._idle.pop()
        except IndexError:
            pass
        if self._asys is None:
            raise RuntimeError("the actor system is not running")
        cm = self._asys.private()
        return cm, cm.__enter__()

    def _give_back(self, pair: tuple[Any, Any]) -> None:
        if self._closed or len(self._idle) >= POOL_IDLE:
            _close_endpoint(pair[0])
        else:
            self._idle.append(pair)

    def _endpoint(self) -> Any:
        """An endpoint of one's own until the system closes (tests that talk raw Thespian)."""
        pair = self._take()
        self._lent.append(pair)
        return pair[1]

    def exchange(self, address: Any, msg: Any, match: Callable[[Any], bool], deadline: float,
                 alive: Callable[[], bool] | None = None) -> Any:
        """Send ``msg`` and return the first reply for which ``match`` is true.

        Raises ``CallTimeout`` at ``deadline`` (wall clock) and ``PeerGone`` as
        soon as ``alive()`` turns false while waiting.
        """
        data = encode(msg)
        if len(data) > MAX_FRAME:  # the same limit as the socket path's frames
            raise ToolError(f"the call is too large to send: {len(data)} bytes, over the "
                            f"{MAX_FRAME}-byte limit; pass a file path instead", type="CallTooLarge")
        pair = self._take()
        settled = False
        try:
            reply = self._exchange(pair[1], address, data, match, deadline, alive)
            settled = True
            return reply
        except (CallTimeout, PeerGone):
            settled = True  # raised between two of the endpoint's steps: it is in order
            raise
        finally:
            if settled:
                self._give_back(pair)  # a late reply left in it is told apart by its cid
            else:
                # Interrupted inside one of Thespian's steps (Ctrl-C, SystemExit, an error of
                # its own): a send may be half done. Given back, that endpoint lost the next
                # request sent through it, which then waited out its whole deadline (a host
                # stopped by Ctrl-C while starting hung in its shutdown). Dropped instead.
                _close_endpoint(pair[0])

    def _exchange(self, ep: Any, address: Any, data: bytes, match: Callable[[Any], bool],
                  deadline: float, alive: Callable[[], bool] | None) -> Any:
        sent = False
        while True:
            remaining = deadline - time.time()
            if remaining <= 0:
                raise CallTimeout("no answer before the deadline")
            wait = min(remaining, LIVENESS_POLL)
            raw = ep.listen(wait) if sent else ep.ask(address, data, wait)
            sent = True
            if raw is None:
                if alive is not None and not alive():
                    raise PeerGone()
                continue
            try:
                reply = decode(raw)
            except MalformedMessage as exc:
                logger.warning("dropped an undecodable message: {}", exc)
                continue
            if match(reply):
                return reply

    def close(self) -> None:
        self._closed = True
        for cm, _ in self._lent:
            _close_endpoint(cm)
        self._lent.clear()
        while self._idle:
            try:
                _close_endpoint(self._idle.pop()[0])
            except IndexError:
                break
        if self._asys is not None:
            asys, self._asys = self._asys, None
            try:
                asys.shutdown()
            finally:
                self._release_auth()
        self._release_auth()

    def _release_auth(self) -> None:
        if self._auth_live:
            self._auth_live = False
            wire_auth.end_system()
