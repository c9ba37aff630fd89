"""Tools are forked by a small process of their supervisor's, the zygote (actors/zygote.py)."""

from __future__ import annotations

import multiprocessing
import multiprocessing.process
import multiprocessing.util
import os
import resource
import signal
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from actors.zygote import CannotFork, Zygote, ZygoteGone, _Context, _Process
from supervisors import ToolSystem
from supervisors.processes.procs import pid_alive
from tests.conftest import FAST
from tests.helpers import wait_dead, wait_until
from tests.tools import Counter

pytestmark = pytest.mark.timeout(60)


def _zygotes(supervisor_pid: int) -> list[psutil.Process]:
    return [p for p in psutil.Process(supervisor_pid).children()
            if "zygote" in " ".join(p.cmdline())]


def _new_pid(tool: Any, old: set[int]) -> int | None:
    try:
        pid = tool.call("pid", timeout=5)
    except Exception:
        return None
    return pid if pid not in old else None


def test_tools_are_the_children_of_their_supervisors_zygote(system: ToolSystem) -> None:
    w = system.supervise("w")
    pids = [w.spawn(Counter, name=f"c{i}").call("pid") for i in range(3)]
    sup = w.status().pid
    zygotes = _zygotes(sup)
    assert len(zygotes) == 1, "one zygote per supervisor"
    assert all(psutil.Process(p).ppid() == zygotes[0].pid for p in pids)
    # the tool holds none of the zygote's own descriptors (its socket, its signal pipe)
    zygote_own = _open_files(zygotes[0].pid) - _open_files(sup)
    assert zygote_own, "the zygote has a socket and a pipe of its own"
    for pid in pids:
        assert not zygote_own & _open_files(pid)


def _open_files(pid: int) -> set[str]:
    out = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            out.add(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:
            pass
    return out


def _three_tools(system: ToolSystem) -> tuple[Any, list[Any], set[int], int, psutil.Process]:
    """A supervisor with three tools: (its handle, the tools, their pids, its pid, its zygote)."""
    w = system.supervise("w", policy=FAST)
    tools = [w.spawn(Counter, name=f"c{i}") for i in range(3)]
    sup = w.status().pid
    (zygote,) = _zygotes(sup)
    return w, tools, {t.call("pid") for t in tools}, sup, zygote


def test_a_killed_supervisor_leaves_neither_its_zygote_nor_its_tools(system: ToolSystem) -> None:
    w, tools, pids, sup, zygote = _three_tools(system)
    os.kill(sup, signal.SIGKILL)
    wait_dead(sup, zygote.pid, *pids)
    for t in tools:  # the supervisor was restarted, and its tools with it
        wait_until(lambda t=t: _new_pid(t, pids), timeout=20, what="the tool back")


def test_a_killed_zygote_takes_its_tools_and_they_are_restarted(system: ToolSystem) -> None:
    w, tools, pids, sup, zygote = _three_tools(system)
    os.kill(zygote.pid, signal.SIGKILL)
    wait_dead(*pids)  # PR_SET_PDEATHSIG: a tool never outlives the process that forked it
    fresh = [wait_until(lambda t=t: _new_pid(t, pids), timeout=20, what="the tool back")
             for t in tools]
    assert w.status().pid == sup, "the supervisor itself was not touched"
    assert all(s.restarts == 1 for s in (t.status() for t in tools))
    wait_until(lambda: len(_zygotes(sup)) == 1, what="a new zygote")
    assert not pid_alive(zygote.pid)
    later = w.spawn(Counter, name="later").call("pid")
    assert psutil.Process(later).ppid() == _zygotes(sup)[0].pid
    assert all(pid_alive(p) for p in fresh)


def test_with_the_zygote_off_the_supervisor_forks_its_tools(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOOLVISOR_ZYGOTE", "off")
    with ToolSystem(policy=FAST, data_dir=False) as system:
        w = system.supervise("w")
        pid = w.spawn(Counter, name="c").call("pid")
        sup = w.status().pid
        assert psutil.Process(pid).ppid() == sup
        assert _zygotes(sup) == []


class _Unloadable:
    """Pickles in the supervisor; its unpickling fails in the zygote."""

    def __reduce__(self) -> Any:
        return (_refuse, ())


def _refuse() -> None:
    raise RuntimeError("cannot be rebuilt here")


def _touch(path: str) -> None:
    Path(path).write_text(str(os.getpid()))


def _touch_second(_: Any, path: str) -> None:
    _touch(path)


def _forked(zygote: Zygote, target: Any, *args: Any) -> _Process:
    proc = _Context(zygote, multiprocessing.get_context("fork")).Process(target=target, args=args,
                                                                         name="test")
    proc.start()
    multiprocessing.process._children.discard(proc)
    return proc


def _answered(zygote: Zygote, proc: _Process) -> bool:
    zygote.collect()
    return proc.pid is not None or proc.failed is not None


def _end(zygote: Zygote) -> None:
    zygote.end()
    wait_until(zygote.reap, what="the zygote to leave at end-of-file")


def test_a_fork_the_zygote_cannot_make_is_answered_and_it_serves_the_next(tmp_path: Path) -> None:
    zygote = Zygote.start(lambda: None)
    try:
        bad = _forked(zygote, _touch, _Unloadable())
        good = _forked(zygote, _touch, str(tmp_path / "ran"))
        wait_until(lambda: _answered(zygote, bad) and _answered(zygote, good), what="answers")
        assert bad.pid is None and "cannot be rebuilt here" in (bad.failed or "")
        assert not bad.is_alive()
        assert zygote.take_failed() == [bad] and zygote.take_failed() == []
        wait_until(lambda: (tmp_path / "ran").exists() and (tmp_path / "ran").read_text(),
                   what="the forked function to run")
        assert (tmp_path / "ran").read_text() == str(good.pid)
        assert not zygote.gone
    finally:
        _end(zygote)


def test_what_the_zygote_cannot_take_is_forked_directly(tmp_path: Path) -> None:
    """Thespian swallows whatever a start raises, so the fallback happens inside it."""
    zygote = Zygote.start(lambda: None)
    try:
        lam = _forked(zygote, lambda path: Path(path).write_text("direct"), str(tmp_path / "a"))
        assert isinstance(zygote.fallback, CannotFork) and not zygote.gone
        assert lam.pid == lam.direct.pid  # forked here, by multiprocessing
        wait_until(lambda: (tmp_path / "a").exists(), what="the direct fork to run")
        os.kill(zygote.pid, signal.SIGKILL)
        wait_until(zygote.reap, what="the zygote to end")
        after = _forked(zygote, _touch, str(tmp_path / "b"))
        assert isinstance(zygote.fallback, ZygoteGone) and zygote.gone
        wait_until(lambda: (tmp_path / "b").exists(), what="the direct fork to run")
        assert (tmp_path / "b").read_text() == str(after.pid)
        after.direct.join(10)
        lam.direct.join(10)
    finally:
        zygote.end()


def _report_start(path: str) -> None:
    """A tool's start, as the zygote's child sees it: written down for the test."""
    import sys
    import threading

    facts = {"stdin": sys.stdin.read(), "children": len(multiprocessing.process._children),
             "name": multiprocessing.current_process().name}

    def late() -> None:  # a non-daemon thread still running when the start function returns
        time.sleep(0.3)
        Path(path).write_text(repr(facts) + " thread done")

    def finalized() -> None:  # a multiprocessing finalizer runs as the process ends
        Path(path + ".finalized").write_text("yes")

    Path(path).write_text(repr(facts))
    multiprocessing.util.Finalize(None, finalized, exitpriority=0)
    threading.Thread(target=late).start()


def test_a_forked_tool_starts_as_multiprocessing_would_start_it(tmp_path: Path) -> None:
    """The zygote forks with os.fork, not multiprocessing.Process (0.1 MiB less per tool),
    and keeps what a tool relies on from Process._bootstrap: stdin from /dev/null, no
    inherited children, its own name, its finalizers run and its non-daemon threads
    joined before the process ends."""
    zygote = Zygote.start(lambda: None)
    try:
        out = tmp_path / "start"
        proc = _forked(zygote, _report_start, str(out))
        wait_until(lambda: _answered(zygote, proc), what="the fork's answer")
        wait_until(lambda: proc.pid and not pid_alive(proc.pid), what="the child to end")
        text = out.read_text()
        assert text.endswith(" thread done"), f"the process ended before its thread: {text!r}"
        assert "'stdin': ''" in text and "'children': 0" in text and "'name': 'test'" in text
        assert (tmp_path / "start.finalized").exists(), "its multiprocessing finalizers did not run"
    finally:
        _end(zygote)


def test_a_slow_answer_never_blocks_and_is_not_taken_for_an_end(tmp_path: Path) -> None:
    zygote = Zygote.start(lambda: None)
    try:
        slow = _forked(zygote, _touch_second, _Slow(), str(tmp_path / "x"))
        started = time.monotonic()
        assert slow.pid is None and slow.is_alive()  # starting: no answer read yet
        assert time.monotonic() - started < 0.2, "reading a pid waited for the zygote"
        wait_until(lambda: _answered(zygote, slow), what="the late answer")
        assert slow.pid and not zygote.gone and not zygote.stuck()
    finally:
        _end(zygote)


def test_processes_forked_later_do_not_hold_the_supervisors_end() -> None:
    zygote = Zygote.start(lambda: None)
    try:
        inode = os.fstat(zygote.sock.fileno()).st_ino
        child = os.fork()
        if child == 0:  # (a child supervisor, another zygote, a tool)
            held = any(os.readlink(f"/proc/self/fd/{fd}") == f"socket:[{inode}]"
                       for fd in os.listdir("/proc/self/fd") if _readable_link(fd))
            os._exit(3 if held else 0)
        _, status = os.waitpid(child, 0)
        assert os.waitstatus_to_exitcode(status) == 0, "the forked child kept the socket"
        assert zygote.sock.fileno() >= 0  # (ours is still open)
    finally:
        _end(zygote)


def _readable_link(fd: str) -> bool:
    try:
        os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return False
    return True


class _Slow:
    """Its unpickling in the zygote takes 0.5 s."""

    def __reduce__(self) -> Any:
        return (time.sleep, (0.5,))


def test_a_zygote_started_with_descriptor_numbers_over_1023_works(tmp_path: Path) -> None:
    """A replacement zygote starts from a supervisor that holds a socket per child."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1200:
        pytest.skip(f"the descriptor limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1200), hard))
    filler = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    try:
        zygote = Zygote.start(lambda: None)
        assert zygote.sock.fileno() > 1023
        proc = _forked(zygote, _touch, str(tmp_path / "ran"))
        wait_until(lambda: _answered(zygote, proc), what="the answer")
        assert proc.pid and not zygote.gone
        wait_until(lambda: (tmp_path / "ran").exists(), what="the forked function to run")
        _end(zygote)
    finally:
        for fd in filler:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_a_zygote_that_ended_is_seen_gone() -> None:
    zygote = Zygote.start(lambda: None)
    os.kill(zygote.pid, signal.SIGKILL)
    wait_until(zygote.reap, what="the zygote to end")
    wait_until(lambda: zygote.collect() or zygote.gone, what="end-of-file read")
    zygote.end()


def _count_waits(path: str) -> None:
    """In the zygote (before it serves): note each os.waitpid(-1, ...) in ``path``."""
    real = os.waitpid

    def waitpid(pid: int, options: int) -> tuple[int, int]:
        if pid == -1:
            with open(path, "a") as f:
                f.write("w")
        return real(pid, options)

    os.waitpid = waitpid  # type: ignore[assignment]  # (the zygote's own os module)


def _sleep_long() -> None:
    time.sleep(60)


def test_the_zygote_asks_the_kernel_for_ended_children_only_after_a_sigchld(tmp_path: Path) -> None:
    """A waitpid(-1) walks every child of the zygote in the kernel; one per request made
    each spawn cost O(tools) (issue 10). Forks alone reap nothing; an end is still reaped."""
    waits = tmp_path / "waits"
    zygote = Zygote.start(lambda: _count_waits(str(waits)))
    procs: list[_Process] = []
    try:
        for _ in range(6):
            procs.append(_forked(zygote, _sleep_long))
            wait_until(lambda: _answered(zygote, procs[-1]), what="the fork's answer")
        before = len(waits.read_text()) if waits.exists() else 0
        assert before <= 2, f"{before} waitpid(-1) calls for 6 forks and no end"
        os.kill(procs[2].pid, signal.SIGKILL)  # type: ignore[arg-type]
        wait_until(lambda: not psutil.pid_exists(procs[2].pid), what="the ended tool reaped")
        assert len(waits.read_text()) > before
        procs.append(_forked(zygote, _sleep_long))  # and it still serves
        wait_until(lambda: _answered(zygote, procs[-1]), what="the next fork's answer")
        assert procs[-1].pid
    finally:
        for proc in procs:
            if proc.pid:
                try:
                    os.kill(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        _end(zygote)
