"""OTP features (issue 8): shutdown brutal_kill / infinity, significant children and
auto_shutdown, count(), and the bad input around them (in code and in config)."""

from __future__ import annotations

import math
import time

import pytest

from supervisors import Backoff, ConfigError, Policy, SpecError, ToolState, ToolSystem
from supervisors.tree.config import load_config
from tests.conftest import read_lines
from tests.helpers import wait_dead, wait_until
from tests.tools import Counter, SlowStop

pytestmark = pytest.mark.timeout(90)
NOW = Backoff.none()


def test_brutal_kill_ends_the_tool_at_once_without_on_stop(system: ToolSystem, log: str) -> None:
    t = system.spawn(SlowStop, name="s", config={"log": log, "stop_s": 30}, shutdown_timeout="brutal_kill")
    pid = t.call("pid")
    started = time.monotonic()
    st = t.stop(timeout=10)
    assert st.state is ToolState.STOPPED
    wait_dead(pid)
    assert time.monotonic() - started < 10
    assert read_lines(log) == []  # on_stop never ran
    assert any(e["event"] == "killed" and "brutal_kill" in e["detail"] for e in system.events())


@pytest.mark.timeout(60)
def test_infinity_waits_for_a_slow_stop(system: ToolSystem, log: str) -> None:
    t = system.spawn(SlowStop, name="s", config={"log": log, "stop_s": 6.0}, shutdown_timeout="infinity")
    t.stop(timeout=30)  # the default 5 s would have killed it
    assert read_lines(log) == ["stopped"]


def test_count_children(system: ToolSystem) -> None:
    w = system.supervise("w", Policy(backoff=NOW))
    w.spawn(Counter, name="a")
    b = w.spawn(Counter, name="b")
    w.supervise("sub")
    assert w.count() == {"specs": 3, "active": 3, "supervisors": 1, "workers": 2}
    b.stop()
    assert w.count() == {"specs": 3, "active": 2, "supervisors": 1, "workers": 2}


def test_any_significant_child_ending_normally_stops_its_supervisor(system: ToolSystem) -> None:
    job = system.supervise("job", Policy(auto_shutdown="any_significant", backoff=NOW),
                           restart="transient")
    main = job.spawn(Counter, name="main", restart="transient", significant=True)
    helper = job.spawn(Counter, name="helper")
    main.call("leave")  # a normal exit
    wait_until(lambda: job.status().state is ToolState.STOPPED, what="job stopped itself")
    assert job.status().restarts == 0  # a normal exit of a transient supervisor: stays down
    assert helper.status().state is ToolState.STOPPED
    wait_until(lambda: any(e["event"] == "auto shutdown" for e in system.events()), what="event")


def test_all_significant_waits_for_the_last_one(system: ToolSystem) -> None:
    job = system.supervise("job", Policy(auto_shutdown="all_significant", backoff=NOW),
                           restart="temporary")
    a = job.spawn(Counter, name="a", restart="temporary", significant=True)
    b = job.spawn(Counter, name="b", restart="transient", significant=True)
    a.call("leave")
    wait_until(lambda: a.status().state is ToolState.STOPPED, what="a ended")
    assert job.status().state is ToolState.RUNNING
    b.call("leave")
    wait_until(lambda: job.status().state is ToolState.STOPPED, what="job stopped itself")


def test_a_failing_significant_child_does_not_trigger_auto_shutdown(system: ToolSystem) -> None:
    job = system.supervise("job", Policy(auto_shutdown="any_significant", backoff=NOW))
    a = job.spawn(Counter, name="a", restart="transient", significant=True)
    a.call("leave", error="bad")  # abnormal: a transient child is restarted
    wait_until(lambda: a.status().restarts == 1 and a.status().state is ToolState.RUNNING)
    assert job.status().state is ToolState.RUNNING


@pytest.mark.parametrize("value", [0, -1, math.nan, "soon", True])
def test_bad_hang_timeout_is_refused(system: ToolSystem, value) -> None:
    with pytest.raises(SpecError, match=r"hang_timeout=") as err:
        system.spawn(Counter, name="c", hang_timeout=value)
    assert repr(value) in str(err.value)


def test_bad_auto_shutdown_and_significant_are_refused(system: ToolSystem) -> None:
    with pytest.raises(SpecError, match=r"auto_shutdown='sometimes'"):
        Policy(auto_shutdown="sometimes")
    with pytest.raises(SpecError, match=r"significant=True.*permanent"):
        system.spawn(Counter, name="c", significant=True)
    with pytest.raises(SpecError, match=r"significant=True.*permanent"):
        system.supervise("s", significant=True)
    with pytest.raises(SpecError, match=r"shutdown_timeout='never'"):
        system.spawn(Counter, name="c", shutdown_timeout="never")


@pytest.mark.parametrize(("line", "needle"), [
    ('hang_timeout = 0', "hang_timeout = 0 is invalid"),
    ('hang_timeout = -5.0', "hang_timeout = -5.0 is invalid"),
    ('hang_timeout = "slow"', 'hang_timeout = "slow" is invalid'),
    ('significant = true', "significant = true is invalid"),
])
def test_bad_tool_keys_in_config(tmp_path, line: str, needle: str) -> None:
    path = tmp_path / "tree.toml"
    path.write_text(f'[[supervisor]]\nname = "w"\n[[supervisor.tool]]\nname = "c"\n'
                    f'actor = "tests.tools:Counter"\n{line}\n')
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(")) as err:
        load_config(path)
    assert "supervisor[0]" in str(err.value)
    assert isinstance(err.value, SpecError)  # a SpecError in config too, with its place


def test_bad_auto_shutdown_in_config(tmp_path) -> None:
    path = tmp_path / "tree.toml"
    path.write_text('[[supervisor]]\nname = "w"\nauto_shutdown = "whenever"\n')
    with pytest.raises(ConfigError, match='auto_shutdown = "whenever" is invalid'):
        load_config(path)


def test_otp_keys_in_config(tmp_path) -> None:
    path = tmp_path / "tree.toml"
    path.write_text('[[supervisor]]\nname = "w"\nauto_shutdown = "any_significant"\n'
                    'restart = "transient"\nshutdown_timeout = "infinity"\n'
                    '[[supervisor.tool]]\nname = "c"\nactor = "tests.tools:Counter"\n'
                    'restart = "transient"\nsignificant = true\nhang_timeout = 30\n'
                    'shutdown_timeout = "brutal_kill"\n'
                    '[[supervisor.tool]]\nname = "d"\nactor = "tests.tools:Counter"\n'
                    'hang_timeout = false\n')
    spec = load_config(path).supervisors[0]
    assert spec["policy"]["auto_shutdown"] == "any_significant"
    assert spec["shutdown_timeout"] == "infinity"
    c, d = spec["children"]
    assert (c["significant"], c["hang_timeout"], c["shutdown_timeout"]) == (True, 30.0, "brutal_kill")
    assert d["hang_timeout"] is None
