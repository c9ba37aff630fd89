"""One connection from a tool to another tool's call socket (used by ``actors.peers``).

A ``Link`` is non-blocking; waits go through ``ready`` (``select``, exact below a
millisecond). It keeps the frames not written yet, the sends and asks queued for
the next batch, the batches awaiting answers, and the answer to the one blocking
call in flight.
"""

from __future__ import annotations

import os
import select
import socket
from typing import Any

from actors import routes, waits
from actors.frames import FrameReader
from actors.wire_auth import door_token


def ready(sock: socket.socket, write: bool, timeout: float) -> bool:
    """Wait up to ``timeout`` seconds for ``sock`` to be readable (or writable).

    ``select`` keeps sub-millisecond waits exact (``poll`` rounds them up to a whole
    millisecond, which the wait board's short checks would feel); ``poll`` beyond its
    descriptor limit.
    """
    fd = sock.fileno()
    if fd < 1024:
        r, w, _ = select.select(() if write else (fd,), (fd,) if write else (), (), max(0.0, timeout))
        return bool(w if write else r)
    poller = select.poll()
    poller.register(fd, select.POLLOUT if write else select.POLLIN)
    return bool(poller.poll(max(0.0, timeout) * 1000.0))


class Gone(Exception):
    """The connection to the callee broke; ``delivered`` says whether the message may have run."""

    def __init__(self, delivered: bool, why: str) -> None:
        super().__init__(why)
        self.delivered = delivered


class Link:
    """One connection from this tool to one instance of another tool."""

    def __init__(self, route: routes.RouteEntry, timeout: float) -> None:
        self.route = route
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(max(0.001, timeout))
        try:
            self.sock.connect(route.socket or "")
            self.sock.sendall(door_token(route.socket or ""))  # the callee reads nothing before it
        except OSError as exc:
            self.sock.close()
            raise Gone(False, str(exc))
        self.sock.setblocking(False)                # waits go through _ready (µs precision)
        self.reader = FrameReader()
        self.out = bytearray()                      # framed bytes not written yet
        self.queued: list[tuple[bytes, str, Any]] = []   # packed [command, args], kind, on_reply
        self.pending: dict[int, list[tuple[str, Any]]] = {}  # batch cid -> (kind, on_reply) each
        self.outstanding = 0
        self.answers: dict[int, Any] = {}           # the reply to the blocking call, by cid
        self.awaiting = 0                           # cid of the blocking call (0: none)
        self.closed = False
        self.garbled = False                        # it sent a bad frame: read no more of it
        self._exit: select.poll | None = None       # readable once the callee has ended
        self._pidfd = -1
        try:
            self._pidfd = os.pidfd_open(int(route.pid or 0))
            self._exit = select.poll()
            self._exit.register(self._pidfd, select.POLLIN)
        except (AttributeError, OSError, ValueError):  # no pidfds here, or it has ended
            pass

    def fileno(self) -> int:
        return self.sock.fileno()

    def callee_alive(self) -> bool:
        """Whether the instance this link talks to still runs (an ended one not yet reaped
        is not): a poll of its pidfd, about 0.5 us, where reading ``/proc`` took 13."""
        if self._exit is None:
            return waits.alive(int(self.route.pid or 0))
        return not self._exit.poll(0)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            try:
                self.sock.close()
            except OSError:
                pass
            if self._pidfd >= 0:
                os.close(self._pidfd)
                self._pidfd, self._exit = -1, None


class Within:
    """The text of a call's timeout, built only if it times out."""

    __slots__ = ("path", "command", "seconds", "capped")

    def __init__(self, path: str, command: str, seconds: float, capped: bool) -> None:
        self.path, self.command, self.seconds, self.capped = path, command, seconds, capped

    def __str__(self) -> str:
        return (f"no answer from {self.path} to {self.command!r} within {max(0.0, self.seconds):.3g}s"
                + (" (what was left of the deadline of the call being served)" if self.capped else ""))


class Counters:
    def __init__(self) -> None:
        self.sent = 0
        self.asked = 0
        self.answered = 0
        self.failed = 0
        self.timed_out = 0  # asks whose timeout passed first (their late answers are dropped)
