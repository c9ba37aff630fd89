"""Lifecycle hooks: where they run, in which order, and that a raising hook harms nothing."""

from __future__ import annotations

import os
import signal

import pytest

from supervisors import Backoff, LifecycleHook, Policy, ToolState, ToolSystem
from tests.conftest import read_lines
from tests.helpers import wait_dead, wait_until
from tests.tools import Counter, ExplodingHook, FailingInit, RecordingHook

pytestmark = pytest.mark.timeout(60)


def test_system_and_supervisor_hooks_run_for_tools_beneath(log: str) -> None:
    with ToolSystem(hooks=[RecordingHook(log, "sys")], policy=Policy(backoff=Backoff.none())) as system:
        io = system.supervise("io", hooks=[RecordingHook(log, "io")])
        t = io.spawn(Counter, name="c")
        other = system.supervise("other").spawn(Counter, name="d")
        t.stop()
        pid = other.call("pid")
        os.kill(pid, signal.SIGKILL)
        wait_dead(pid)
        wait_until(lambda: other.status().restarts == 1)
        wait_until(lambda: any("on_error other/d" in ln for ln in read_lines(log)))
    lines = read_lines(log)
    c_lines = [ln for ln in lines if ln.endswith(" io/c")]
    assert c_lines == ["sys pre_start io/c", "io pre_start io/c", "sys post_start io/c",
                       "io post_start io/c", "sys pre_stop io/c", "io pre_stop io/c",
                       "sys post_stop io/c", "io post_stop io/c"]
    assert not any(ln.startswith("io ") and "other/d" in ln for ln in lines)  # subtree only
    err = next(ln for ln in lines if "on_error other/d" in ln)
    assert "ended unexpectedly" in err


def test_on_error_sees_init_failures(log: str) -> None:
    with ToolSystem(hooks=[RecordingHook(log)]) as system:
        with pytest.raises(Exception, match="database"):
            system.spawn(FailingInit, name="db")
    lines = read_lines(log)
    assert "hook pre_start db" in lines
    assert "hook post_start db" not in lines


def test_a_raising_hook_is_reported_and_harms_nothing() -> None:
    with ToolSystem(hooks=[ExplodingHook()], policy=Policy(backoff=Backoff.none())) as system:
        t = system.supervise("w").spawn(Counter, name="c")
        assert t.call("add") == 1
        pid = t.call("pid")
        os.kill(pid, signal.SIGKILL)
        wait_dead(pid)
        wait_until(lambda: t.status().restarts == 1 and t.status().state is ToolState.RUNNING)
        assert t.call("add") == 1
        errors = [e for e in system.events() if e["event"] == "hook error"]
        assert errors and "ExplodingHook.pre_start(w/c) raised RuntimeError: hook bug" in errors[0]["detail"]


class LocalHook(LifecycleHook):
    pass


def test_hooks_must_be_hook_instances_and_picklable() -> None:
    with pytest.raises(TypeError, match="LifecycleHook"):
        ToolSystem(hooks=[object()])  # type: ignore[list-item]

    class Inner(LifecycleHook):
        pass

    with pytest.raises(TypeError, match="picklable"):
        ToolSystem(hooks=[Inner()])
    ToolSystem(hooks=[LocalHook()])  # module level: fine (not started)
