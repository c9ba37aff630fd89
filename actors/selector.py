"""A selector for Thespian's TCP loop that does not start from nothing on every pass.

Thespian's ``TCPTransport._runWithExpiry`` builds a new ``selectors.DefaultSelector``
(an epoll object), registers every socket it has, selects once and closes it again,
on every pass of its loop. A supervisor with N children holds O(N) sockets and
takes O(N) messages per second, so the cost grows as N squared; profiled with
py-spy while spawning 200 tools under one supervisor, creating, filling and
closing those selectors was about 40 % of the supervisor's busy time
(docs/scaling.md).

``install()`` makes that module's ``selectors.DefaultSelector`` a shim over one
``select.poll`` object per thread that is kept between passes: ``register`` only
notes what is wanted (a dict store), ``select`` sends the kernel the changes since
the last pass, then polls once. ``poll`` keeps no state in the kernel, so a closed
and reused descriptor number cannot go stale as it could with a kept epoll set.
A descriptor that is no longer valid raises ``OSError(EBADF)`` from ``select``, as
registering it with epoll would, so Thespian's own recovery path still runs.
``TOOLVISOR_SELECTOR=stock`` leaves Thespian as it is (for comparisons).
"""

from __future__ import annotations

import errno
import math
import os
import select
import selectors
import threading
import types
from typing import Any

EVENT_READ = selectors.EVENT_READ
EVENT_WRITE = selectors.EVENT_WRITE
_IN, _OUT, _NVAL = select.POLLIN, select.POLLOUT, select.POLLNVAL


class _Kept(threading.local):
    def __init__(self) -> None:
        self.poll = select.poll()
        self.masks: dict[int, int] = {}
        self.pid = os.getpid()


_kept = _Kept()


class KeptPoll:
    """The ``DefaultSelector`` Thespian's TCP loop gets once ``install()`` ran."""

    __slots__ = ("wanted",)

    def __init__(self) -> None:
        self.wanted: dict[int, int] = {}

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        fd = fileobj if isinstance(fileobj, int) else int(fileobj.fileno())
        if fd < 0:
            raise ValueError(f"invalid file descriptor {fd}")
        self.wanted[fd] = self.wanted.get(fd, 0) | events
        return selectors.SelectorKey(fileobj, fd, events, data)

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        kept = _kept
        if kept.pid != os.getpid():  # forked: start this process's own set
            kept.poll, kept.masks, kept.pid = select.poll(), {}, os.getpid()
        poll, masks, wanted = kept.poll, kept.masks, self.wanted
        for fd in [fd for fd in masks if fd not in wanted]:
            del masks[fd]
            try:
                poll.unregister(fd)
            except KeyError:
                pass
        for fd, events in wanted.items():
            if masks.get(fd) != events:
                poll.register(fd, (_IN if events & EVENT_READ else 0) | (_OUT if events & EVENT_WRITE else 0))
                masks[fd] = events
        ms = None if timeout is None else 0 if timeout <= 0 else math.ceil(timeout * 1000.0)
        try:
            ready = poll.poll(ms)
        except InterruptedError:
            return []
        out = []
        for fd, flags in ready:
            if flags & _NVAL:
                raise OSError(errno.EBADF, f"file descriptor {fd} is not open")
            events = 0
            if flags & ~_IN:
                events |= EVENT_WRITE
            if flags & ~_OUT:
                events |= EVENT_READ
            want = wanted.get(fd, 0)
            out.append((selectors.SelectorKey(fd, fd, want, None), events & want))
        return out

    def close(self) -> None:
        self.wanted = {}

    def __enter__(self) -> KeptPoll:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def install() -> bool:
    """Give Thespian's TCP transport the kept selector (once per process); False if off."""
    if os.environ.get("TOOLVISOR_SELECTOR", "kept") == "stock" or not hasattr(select, "poll"):
        return False
    from thespian.system.transport import TCPTransport as tcp

    if getattr(tcp.selectors, "DefaultSelector", None) is KeptPoll:
        return True
    tcp.selectors = types.SimpleNamespace(DefaultSelector=KeptPoll, EVENT_READ=EVENT_READ,  # type: ignore[attr-defined]
                                          EVENT_WRITE=EVENT_WRITE)
    return True
