"""Tools are forked by a small process of their supervisor's, the zygote (actors/zygote.py)."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import psutil
import pytest

from actors.zygote import CannotFork, Zygote
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


def test_a_killed_supervisor_leaves_neither_its_zygote_nor_its_tools(system: ToolSystem) -> None:
    w = system.supervise("w", policy=FAST)
    tools = [w.spawn(Counter, name=f"c{i}") for i in range(3)]
    pids = {t.call("pid") for t in tools}
    sup = w.status().pid
    (zygote,) = _zygotes(sup)
    os.kill(sup, signal.SIGKILL)
    wait_dead(sup, zygote.pid, *pids)
    for t in tools:  # the supervisor was restarted, and its tools with it
        wait_until(lambda t=t: _new_pid(t, pids), timeout=20, what="the tool back")


def test_a_killed_zygote_takes_its_tools_and_they_are_restarted(system: ToolSystem) -> None:
    w = system.supervise("w", policy=FAST)
    tools = [w.spawn(Counter, name=f"c{i}") for i in range(3)]
    pids = {t.call("pid") for t in tools}
    sup = w.status().pid
    (zygote,) = _zygotes(sup)
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


def test_a_fork_the_zygote_cannot_make_is_answered_and_it_serves_the_next(tmp_path: Path) -> None:
    zygote = Zygote.start(lambda: None)
    try:
        bad = zygote.fork(_touch, (_Unloadable(),), "bad")
        good = zygote.fork(_touch, (str(tmp_path / "ran"),), "good")
        assert zygote.pid_of(bad) is None
        pid = zygote.pid_of(good)
        assert pid is not None
        wait_until(lambda: (tmp_path / "ran").exists() and (tmp_path / "ran").read_text(),
                   what="the forked function to run")
        assert (tmp_path / "ran").read_text() == str(pid)
        with pytest.raises(CannotFork, match="cannot be sent"):
            zygote.fork(lambda: None, (), "a lambda")  # refused before anything is sent
        assert zygote.collect() == []
    finally:
        zygote.close()
        os.waitpid(zygote.pid, 0)  # it leaves when its socket closes


def test_a_zygote_that_ended_is_seen_gone(tmp_path: Path) -> None:
    zygote = Zygote.start(lambda: None)
    os.kill(zygote.pid, signal.SIGKILL)
    os.waitpid(zygote.pid, 0)
    wait_until(lambda: zygote.collect() == [] and zygote.gone, what="end-of-file read")
