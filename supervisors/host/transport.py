"""The seam to Thespian on the host side: start the actor system, exchange messages.

Everything the host sends goes through ``Transport.exchange``: encode a
message, send it, and wait (until a wall-clock deadline) for the reply that
matches it, discarding late answers to earlier requests. Each thread gets its
own Thespian endpoint, so handles can be used from many threads at once. While
waiting, the transport checks that the peer's process still lives, so a peer
that dies gives an answer at once instead of a timeout.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from loguru import logger
from thespian.actors import ActorSystem

from actors.codec import decode, encode
from actors.errors import CallTimeout, MalformedMessage, ToolError
from actors.frames import MAX_FRAME
from actors.shell import BASES

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
        self._local = threading.local()
        self._endpoints: list[Any] = []

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
        self._endpoints.clear()
        self._local = threading.local()
        self._asys = None

    def _start(self) -> None:
        kind = socket.SOCK_DGRAM if self.base == "multiprocUDPBase" else socket.SOCK_STREAM
        for attempt in range(3):  # a free port can be taken by someone else before we bind it
            self.port = free_port(self.ip, kind)
            try:
                with _default_signals():  # actor processes must not inherit the host's handlers
                    self._asys = ActorSystem(self.base, {"Admin Port": self.port},
                                             transientUnique=True)
                return
            except Exception as exc:
                if attempt == 2:
                    raise RuntimeError(f"could not start the actor system on 127.0.0.1 "
                                       f"(last port tried {self.port}): {exc}") from exc
                logger.warning("actor system did not start on port {} ({}); trying another",
                               self.port, exc)

    def create(self, shell: type) -> Any:
        """Create a top-level actor (the root supervisor) and return its address."""
        return self._asys.createActor(shell)

    def _endpoint(self) -> Any:
        ep = getattr(self._local, "ep", None)
        if ep is None:
            if self._asys is None:
                raise RuntimeError("the actor system is not running")
            cm = self._asys.private()
            ep = cm.__enter__()
            self._local.ep = ep
            self._endpoints.append(cm)
        return ep

    def exchange(self, address: Any, msg: Any, match: Callable[[Any], bool], deadline: float,
                 alive: Callable[[], bool] | None = None) -> Any:
        """Send ``msg`` and return the first reply for which ``match`` is true.

        Raises ``CallTimeout`` at ``deadline`` (wall clock) and ``PeerGone`` as
        soon as ``alive()`` turns false while waiting.
        """
        ep = self._endpoint()
        data = encode(msg)
        if len(data) > MAX_FRAME:  # the same limit as the socket path's frames
            raise ToolError(f"the call is too large to send: {len(data)} bytes, over the "
                            f"{MAX_FRAME}-byte limit; pass a file path instead", type="CallTooLarge")
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
        for cm in self._endpoints:
            try:
                cm.__exit__(None, None, None)
            except Exception:
                pass
        self._endpoints.clear()
        self._local = threading.local()
        if self._asys is not None:
            asys, self._asys = self._asys, None
            asys.shutdown()
