"""The kept selector Thespian's TCP loop uses (actors/selector.py): same answers as a fresh one."""

from __future__ import annotations

import errno
import socket

import pytest

from actors.selector import EVENT_READ, EVENT_WRITE, KeptPoll, install


def _select(fds_read: list[int], fds_write: list[int], timeout: float = 0.0) -> tuple[set, set]:
    sel = KeptPoll()
    for fd in fds_read:
        sel.register(fd, EVENT_READ)
    for fd in fds_write:
        sel.register(fd, EVENT_WRITE)
    got = sel.select(timeout)
    sel.close()
    return ({k.fd for k, e in got if e & EVENT_READ}, {k.fd for k, e in got if e & EVENT_WRITE})


def test_reports_readable_and_writable_across_passes() -> None:
    a, b = socket.socketpair()
    c, d = socket.socketpair()
    try:
        assert _select([a.fileno(), c.fileno()], []) == (set(), set())
        b.send(b"x")
        assert _select([a.fileno(), c.fileno()], [])[0] == {a.fileno()}
        assert _select([c.fileno()], [])[0] == set()      # a is no longer asked about
        assert _select([], [d.fileno()])[1] == {d.fileno()}
        assert _select([a.fileno()], [], 0.01)[0] == {a.fileno()}  # asked again: still readable
    finally:
        for s in (a, b, c, d):
            s.close()


def test_a_reused_descriptor_number_is_watched_afresh() -> None:
    a, b = socket.socketpair()
    fd = a.fileno()
    assert _select([fd], []) == (set(), set())
    a.close()
    b.close()
    e, f = socket.socketpair()  # likely gets the same numbers back
    try:
        f.send(b"y")
        assert e.fileno() in _select([e.fileno(), f.fileno()], [])[0]
    finally:
        e.close()
        f.close()


def test_a_closed_descriptor_raises_ebadf_like_epoll() -> None:
    a, b = socket.socketpair()
    fd = a.fileno()
    a.close()
    b.close()
    with pytest.raises(OSError) as err:
        _select([fd], [])
    assert err.value.errno == errno.EBADF


def test_installed_in_thespian() -> None:
    from thespian.system.transport import TCPTransport

    assert install()
    assert TCPTransport.selectors.DefaultSelector is KeptPoll
