"""Zero orphans: however the host ends, every process the system started ends too."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from supervisors import ToolSystem
from tests.helpers import session_members, tree_pids, wait_dead, wait_until
from tests.tools import Counter

pytestmark = pytest.mark.timeout(60)
ROOT = Path(__file__).resolve().parent.parent


def start_host(mode: str = "wait") -> tuple[subprocess.Popen[str], dict]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "tests.orphan_host", mode], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    info = json.loads(proc.stdout.readline())
    assert len(info["pids"]) >= 5  # root, w, a, inner, b
    return proc, info


def assert_all_gone(info: dict) -> None:
    wait_dead(*info["pids"], timeout=10)
    wait_until(lambda: not session_members(info["sid"]), timeout=10, what="actor system session empty")
    if info.get("runtime_dir"):  # the tools' temp dirs go too
        wait_until(lambda: not os.path.exists(info["runtime_dir"]), timeout=10, what="runtime dir gone")
    if info.get("tools_tmp"):
        wait_until(lambda: not os.path.exists(info["tools_tmp"]), timeout=10, what="tools' temp dirs gone")


def test_leaving_the_with_block_ends_every_process() -> None:
    with ToolSystem() as system:
        system.supervise("w").spawn(Counter, name="a")
        pids = tree_pids(system.tree())
        sid = system.sid
        assert sid is not None and session_members(sid)
    assert_all_gone({"pids": pids, "sid": sid})


def test_an_exception_in_the_block_ends_every_process() -> None:
    proc, info = start_host("raise")
    assert proc.wait(30) == 1
    assert_all_gone(info)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT])
def test_the_host_ending_by_signal_ends_every_process(sig: int) -> None:
    proc, info = start_host()
    os.kill(proc.pid, sig)
    proc.wait(30)
    assert_all_gone(info)


def test_a_killed_supervisor_takes_its_tools_with_it() -> None:
    with ToolSystem() as system:
        inner = system.supervise("w").supervise("inner")
        t = inner.spawn(Counter, name="b")
        tool_pid = t.call("pid")
        os.kill(inner.status().pid, signal.SIGKILL)
        wait_dead(tool_pid, timeout=5)  # PR_SET_PDEATHSIG: no orphaned tool
        assert t.call("get", timeout=10) == 0  # and the subtree came back


@pytest.mark.timeout(90)
def test_an_attempt_that_failed_after_its_admin_started_leaves_nothing(monkeypatch) -> None:
    """The admin of a start attempt that then failed (its host could not talk to it) is
    ended before the next attempt: no admin of a failed attempt lives on."""
    from supervisors.host import transport as tr

    real = tr.ActorSystem
    failed_admins: list[int] = []

    def once_unreachable(*args, **kw):
        asys = real(*args, **kw)
        if not failed_admins:
            path = os.environ[tr.ADMIN_PIDFILE_ENV]
            failed_admins.append(int(Path(path).read_text()))
            raise RuntimeError("ActorAddr-(T|:1) is not a valid ActorSystem admin")  # as seen
        return asys

    monkeypatch.setattr(tr, "ActorSystem", once_unreachable)
    with ToolSystem(data_dir=False) as system:
        assert system.spawn(Counter, name="c").call("get") == 0
        wait_dead(failed_admins[0], timeout=10)
        assert not session_members(failed_admins[0])
