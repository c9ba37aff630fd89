"""Thespian's TCP loop as toolvisor runs it (actors/tcploop.py): the kept poll set and the
tracked idle connections answer as a fresh selector would, pass after pass."""

from __future__ import annotations

import socket

from actors.tcploop import LoopState, TrackedDict, install, run_with_expiry


class _Idle:
    """Stands in for Thespian's IdleSocket: a socket and the address it leads to."""

    def __init__(self, sock: socket.socket) -> None:
        self.socket = sock
        self.rmtaddr = None


def _watching(sock: socket.socket) -> tuple[TrackedDict, LoopState]:
    """A loop state that holds ``sock`` as the idle connection to "peer"."""
    opened, st = TrackedDict(), LoopState()
    opened["peer"] = _Idle(sock)
    st.refresh_idle(opened)
    return opened, st


def test_tracked_dict_tells_each_reader_what_changed() -> None:
    class Reader:
        pass

    r, other = Reader(), Reader()
    d = TrackedDict({"a": 1})
    assert d.changes(r) == {"a"}          # everything is new to a first reader
    assert d.changes(r) == set()
    d["b"] = 2
    del d["a"]
    d.pop("b")
    d.setdefault("c", 3)
    assert d.changes(r) == {"a", "b", "c"}
    assert d.changes(other) == {"c"}      # a second reader starts from the contents
    d.update(e=5)
    d.clear()
    assert d.changes(r) == {"c", "e"} and d.changes(other) == {"c", "e"}
    assert isinstance(d, dict) and d == {}
    del other                                # a reader that is gone is forgotten
    d["f"] = 6
    assert len(d.readers) == 1


def test_reports_readable_and_writable_across_passes() -> None:
    a, b = socket.socketpair()
    c, d = socket.socketpair()
    st = LoopState()
    try:
        assert st.poll_once([a.fileno(), c.fileno()], [], 0) == ([], [], [])
        b.send(b"x")
        assert st.poll_once([a.fileno(), c.fileno()], [], 0)[0] == [a.fileno()]
        assert st.poll_once([c.fileno()], [], 0)[0] == []        # a is no longer asked about
        assert st.poll_once([], [d.fileno()], 0)[1] == [d.fileno()]
        assert st.poll_once([a.fileno()], [], 0.01)[0] == [a.fileno()]  # asked again: readable
    finally:
        for s in (a, b, c, d):
            s.close()


def test_idle_connections_are_watched_until_they_leave_the_dict() -> None:
    a, b = socket.socketpair()
    opened, st = _watching(a)
    try:
        assert st.poll_once([], [], 0) == ([], [], [])
        b.send(b"x")
        assert st.poll_once([], [], 0)[0] == [a.fileno()]         # without being listed again
        del opened["peer"]
        st.refresh_idle(opened)
        assert st.poll_once([], [], 0)[0] == []
        assert a.fileno() not in st.registered
    finally:
        a.close()
        b.close()


def test_a_closed_descriptor_is_named_not_raised() -> None:
    a, b = socket.socketpair()
    st = LoopState()
    fd = a.fileno()
    st.poll_once([fd], [], 0)
    a.close()
    b.close()
    assert st.poll_once([fd], [], 0) == ([], [], [fd])
    assert st.poll_once([-1], [], 0) == ([], [], [-1])  # what a closed socket's fileno() gives


def test_a_reused_descriptor_number_is_watched_afresh() -> None:
    a, b = socket.socketpair()
    st = LoopState()
    st.poll_once([a.fileno()], [], 0)
    a.close()
    b.close()
    e, f = socket.socketpair()  # likely gets the same numbers back
    try:
        f.send(b"y")
        assert e.fileno() in st.poll_once([e.fileno(), f.fileno()], [], 0)[0]
    finally:
        e.close()
        f.close()


def test_installed_in_thespian() -> None:
    from thespian.system.transport import TCPTransport

    assert install()
    assert TCPTransport.TCPTransport._runWithExpiry is run_with_expiry


def test_an_idle_entry_replaced_by_a_socket_with_the_same_number_is_watched_afresh() -> None:
    a, b = socket.socketpair()
    opened, st = _watching(a)
    assert st.poll_once([], [], 0) == ([], [], [])
    fd = a.fileno()
    del opened["peer"]
    a.close()
    b.close()
    c, d = socket.socketpair()
    try:
        opened["other"] = _Idle(c if c.fileno() == fd else d)
        st.refresh_idle(opened)
        (d if c.fileno() == fd else c).send(b"z")
        assert st.poll_once([], [], 0.05)[0] == [fd]
    finally:
        c.close()
        d.close()


def test_an_idle_socket_also_wanted_for_a_transmit_is_reported_for_both() -> None:
    a, b = socket.socketpair()
    _opened, st = _watching(a)
    try:
        b.send(b"x")
        rrecv, rsend, _ = st.poll_once([], [a.fileno()], 0)
        assert rrecv == [a.fileno()] and rsend == [a.fileno()]
    finally:
        a.close()
        b.close()


def test_a_thread_that_ends_takes_its_epoll_set_with_it() -> None:
    import gc
    import os
    import threading

    def fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    a, b = socket.socketpair()

    def one_loop() -> None:
        _opened, st = _watching(a)
        st.poll_once([], [], 0)
        assert st.epoll is not None

    try:
        before = fds()
        for _ in range(20):
            t = threading.Thread(target=one_loop)
            t.start()
            t.join()
        gc.collect()
        assert fds() <= before + 2
    finally:
        a.close()
        b.close()


def test_a_stale_epoll_entry_left_by_a_forked_copy_is_cleared_not_spun_on() -> None:
    """A socket closed here while a forked process still holds a copy stays in a kept epoll
    set, ready for ever under a number that is no longer it: the set is made anew."""
    import os
    import time

    other, other_peer = socket.socketpair()  # an idle connection that stays (keeps epoll polled)
    opened, st = _watching(other)
    a, peer = socket.socketpair()
    opened["supervisor"] = _Idle(a)
    st.refresh_idle(opened)
    st.poll_once([], [], 0)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - a worker that lives on, holding copies
        peer.close()
        time.sleep(10)
        os._exit(0)
    try:
        peer.close()  # the far end closes (here and in the child): the idle socket reads EOF
        deadline = time.monotonic() + 5
        while a.fileno() not in st.poll_once([], [], 0.1)[0]:
            assert time.monotonic() < deadline
        del opened["supervisor"]
        a.close()     # as Thespian does after reading EOF; the child still holds a copy
        b, peer2 = socket.socketpair()
        opened["supervisor"] = _Idle(b)
        slept = []
        for _ in range(3):
            st.refresh_idle(opened)
            t0 = time.monotonic()
            ready = st.poll_once([], [], 0.2)[0]
            slept.append(time.monotonic() - t0)
            if ready:  # the loop would move it to incoming
                del opened["supervisor"]
        assert slept[-1] >= 0.15, slept  # the last pass waited: no stale entry left
        for s in (b, peer2, other, other_peer):
            s.close()
    finally:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
