"""One descriptor tells when any of the watched processes ends (actors/pidwatch.py)."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time

import pytest

from actors.pidwatch import PidWatch

pytestmark = pytest.mark.skipif(not PidWatch.available(), reason="no pidfds here")


def _wait_ready(fd: int, timeout: float) -> bool:
    p = select.poll()  # (select.select refuses descriptor numbers over 1023)
    p.register(fd, select.POLLIN)
    return bool(p.poll(timeout * 1000))


def test_one_descriptor_names_the_process_that_ended() -> None:
    w = PidWatch()
    assert w.fd() is None
    procs = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) for _ in range(3)]
    try:
        for p in procs:
            assert w.watch(p.pid) is True
        assert w.watch(procs[0].pid) is True              # twice is once
        fd = w.fd()
        assert fd is not None and not _wait_ready(fd, 0.05)
        procs[1].kill()
        assert _wait_ready(fd, 10)
        deadline = time.monotonic() + 10
        ended: list[int] = []
        while not ended and time.monotonic() < deadline:
            ended = w.ended()
        assert ended == [procs[1].pid]
        assert sorted(w.pids.values()) == sorted([procs[0].pid, procs[2].pid])
        assert w.fds == {pid: fd for fd, pid in w.pids.items()}
        assert not _wait_ready(fd, 0.05)                  # the ended one is out of the set
    finally:
        for p in procs:
            p.kill()
            p.wait()
    deadline = time.monotonic() + 10
    rest: list[int] = []
    while len(rest) < 2 and time.monotonic() < deadline:
        rest += w.ended()
    assert sorted(rest) == sorted([procs[0].pid, procs[2].pid])
    assert w.fd() is None and w.fds == {}


class _NoPass(dict):  # type: ignore[type-arg]
    def values(self):  # type: ignore[no-untyped-def]
        raise AssertionError("a pass over every watched pid")


def test_watching_one_more_pid_looks_at_none_of_the_others() -> None:
    w = PidWatch()
    procs = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) for _ in range(3)]
    try:
        w.pids = _NoPass()
        for p in procs:
            assert w.watch(p.pid) is True
        assert w.watch(procs[1].pid) is True  # twice is once, found by its pid
        assert len(w.pids) == 3 and sorted(w.fds) == sorted(p.pid for p in procs)
    finally:
        for p in procs:
            p.kill()
            p.wait()


def test_a_process_already_reaped_is_reported_gone() -> None:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    assert PidWatch().watch(p.pid) is None


def test_a_forked_child_closes_the_copies_it_inherited() -> None:
    w = PidWatch()
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        w.watch(p.pid)
        fds = list(w.pids) + [w.fd()]
        r, wr = os.pipe()
        child = os.fork()
        if child == 0:  # pragma: no cover - runs in the child
            from actors import pidwatch
            pidwatch.close_inherited()
            still = []
            for fd in fds:
                try:
                    os.fstat(fd)
                    still.append(fd)
                except OSError:
                    pass
            os.write(wr, repr(still).encode())
            os._exit(0)
        os.close(wr)
        os.waitpid(child, 0)
        assert os.read(r, 1000) == b"[]"
        os.close(r)
        assert w.fd() is not None and all(os.fstat(fd) for fd in w.pids)  # ours are untouched
    finally:
        p.kill()
        p.wait()
