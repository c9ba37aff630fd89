"""Watching processes end through pidfds, all behind one descriptor.

A supervisor watches every child's pid with a pidfd (a second witness besides
Thespian's ``ChildActorExited``, which can be missed). Handing Thespian's loop one
descriptor per child made each pass of that loop cost O(children); the pidfds are
kept in one epoll set instead and the loop watches that set's descriptor only.
Each pidfd is taken out of the set before it is closed, so the set never holds
a stale entry. A forked child closes the copies it inherited (``close_inherited``).
"""

from __future__ import annotations

import os
import select

#: pidfds of this module's making in this process, and its epoll sets (a forked child
#: closes its copies; the sets through their objects, so nothing closes them twice)
_OURS: set[int] = set()
_SETS: list[select.epoll] = []


def close_inherited() -> None:
    """In a freshly forked actor: close the parent's pidfds and epoll set (they are not ours)."""
    for fd in list(_OURS):
        try:
            os.close(fd)
        except OSError:
            pass
    _OURS.clear()
    for ep in _SETS:
        ep.close()
    _SETS.clear()


class PidWatch:
    """pidfds of the processes one actor watches, readable as one descriptor."""

    def __init__(self) -> None:
        self.pids: dict[int, int] = {}  # pidfd -> pid
        self.fds: dict[int, int] = {}   # pid -> pidfd (a look-up, not a pass over ``pids``)
        self._set: select.epoll | None = None

    @staticmethod
    def available() -> bool:
        return hasattr(os, "pidfd_open") and hasattr(select, "epoll") \
            and not os.environ.get("TOOLVISOR_NO_PIDFD")

    def fd(self) -> int | None:
        """The descriptor to watch, or None while nothing is watched."""
        return self._set.fileno() if self._set is not None and self.pids else None

    def watch(self, pid: int) -> bool | None:
        """Watch ``pid``: True; None if it has ended (and was reaped) already; False if it cannot."""
        if pid in self.fds:
            return True
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            return None
        except OSError:
            return False
        if self._set is None:
            self._set = select.epoll()
            _SETS.append(self._set)
        self._set.register(fd, select.EPOLLIN)
        self.pids[fd] = pid
        self.fds[pid] = fd
        _OURS.add(fd)
        return True

    def ended(self) -> list[int]:
        """The watched pids whose process has ended since the last look (they are dropped)."""
        if self._set is None:
            return []
        out = []
        for fd, _events in self._set.poll(0):
            pid = self.pids.pop(fd, None)
            if pid is not None and self.fds.get(pid) == fd:
                del self.fds[pid]
            try:
                self._set.unregister(fd)
            except OSError:
                pass
            _OURS.discard(fd)
            try:
                os.close(fd)
            except OSError:
                pass
            if pid is not None:
                out.append(pid)
        return out
