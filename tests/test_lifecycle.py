"""Lifecycle: states, pause holds calls in order, stop/start/restart, exit, timers."""

from __future__ import annotations

import threading
import time

import pytest

from actors.codec import decode, encode
from actors.messages import Call
from supervisors import (
    InvalidTransition,
    SpecError,
    ToolError,
    ToolOverloaded,
    ToolState,
    ToolSystem,
    ToolUnavailable,
)
from supervisors.processes.procs import pid_alive
from tests.conftest import read_lines
from tests.helpers import wait_dead, wait_until
from tests.tools import BadPause, Counter, FailingInit, Ticker

pytestmark = pytest.mark.timeout(60)


def test_spawned_tool_runs_and_reports_status(system: ToolSystem) -> None:
    t = system.supervise("w").spawn(Counter, name="c")
    st = t.status()
    assert st.name == "c" and st.path == "w/c" and st.kind == "tool"
    assert st.state is ToolState.RUNNING
    assert st.pid == t.call("pid")
    assert st.restarts == 0 and st.last_error is None
    assert isinstance(st.usage, dict)


def test_pause_holds_calls_in_order_and_resume_serves_them(system: ToolSystem, log: str) -> None:
    t = system.spawn(Counter, name="c", config={"log": log})
    assert t.pause().state is ToolState.PAUSED
    results: list[int] = []
    errors: list[BaseException] = []

    def caller() -> None:
        try:
            for _ in range(5):
                results.append(t.call("add", k=1, timeout=20))
        except BaseException as exc:  # pragma: no cover
            errors.append(exc)

    # calls from one thread are sent one after another; several threads queue up
    threads = [threading.Thread(target=caller) for _ in range(3)]
    for th in threads:
        th.start()
    wait_until(lambda: all(th.is_alive() for th in threads), what="callers blocked")
    time.sleep(0.2)  # give held calls time to be (wrongly) answered, if they were
    assert results == []  # nothing served while paused
    assert t.status().state is ToolState.PAUSED
    t.resume()
    for th in threads:
        th.join(20)
    assert not errors
    assert sorted(results) == list(range(1, 16))  # none lost, none duplicated
    assert read_lines(log)[-2:] == ["c pause", "c resume"]


def test_held_calls_are_served_in_arrival_order(system: ToolSystem) -> None:
    t = system.spawn(Counter, name="c")
    t.call("get")
    t.pause()
    route = system._routes["c"]
    ep = system.transport._endpoint()
    deadline = time.time() + 20
    for i in range(5):  # sent in this order over one connection
        ep.tell(route.address, encode(Call(1000 + i, "add", {"k": 10 ** i}, deadline)))
    assert ep.listen(0.2) is None  # held: no answer while paused
    resumer = threading.Thread(target=t.resume)  # its own endpoint: our replies stay ours
    resumer.start()
    replies = [decode(ep.listen(10)) for _ in range(5)]
    assert [(r.cid, r.value) for r in replies] == [
        (1000, 1), (1001, 11), (1002, 111), (1003, 1111), (1004, 11111)]
    resumer.join(10)


def test_hold_queue_full_is_a_clear_error(system: ToolSystem) -> None:
    t = system.spawn(Counter, name="c", hold_limit=1)
    t.call("get")
    t.pause()
    ep = system.transport._endpoint()
    ep.tell(system._routes["c"].address, encode(Call(77, "add", {"k": 1}, time.time() + 20)))
    with pytest.raises(ToolOverloaded, match="paused and its hold queue is full"):
        t.call("add", timeout=5)  # same connection: arrives after the held one
    resumer = threading.Thread(target=t.resume)
    resumer.start()
    reply = decode(ep.listen(10))
    resumer.join(10)
    assert (reply.cid, reply.value) == (77, 1)  # the held call was served, the extra one refused
    assert t.call("get") == 1


def test_forbidden_transitions_raise_and_change_nothing(system: ToolSystem) -> None:
    t = system.spawn(Counter, name="c")
    with pytest.raises(InvalidTransition, match="running to running"):
        t.resume()
    assert t.status().state is ToolState.RUNNING
    t.pause()
    with pytest.raises(InvalidTransition):
        t.pause()
    assert t.status().state is ToolState.PAUSED
    t.stop()
    with pytest.raises(InvalidTransition):
        t.stop()
    with pytest.raises(InvalidTransition):
        t.pause()
    assert t.status().state is ToolState.STOPPED


def test_stop_start_restart(system: ToolSystem, log: str) -> None:
    t = system.supervise("w").spawn(Counter, name="c", config={"start": 3, "log": log})
    pid = t.call("pid")
    st = t.stop()
    assert st.state is ToolState.STOPPED and st.pid is None
    wait_dead(pid)
    assert "c stop c" in read_lines(log)  # on_stop ran
    with pytest.raises(ToolUnavailable):
        t.call("get", timeout=5)
    assert t.start().state is ToolState.RUNNING
    assert t.call("get") == 3  # fresh instance from the spec's config
    pid2 = t.call("pid")
    t.restart()
    assert t.call("pid") not in (pid, pid2)
    assert t.status().restarts == 0  # operator restarts are not failures


def test_on_init_failure_at_spawn_raises_and_tool_is_not_kept(system: ToolSystem) -> None:
    w = system.supervise("w")
    with pytest.raises(ToolError, match="cannot connect to the database") as info:
        w.spawn(FailingInit, name="db")
    assert info.value.type == "RuntimeError"
    assert "raise RuntimeError" in (info.value.remote_traceback or "")
    assert [c.name for c in w.children()] == []


def test_bad_spawn_values_raise_at_once_naming_field_and_value(system: ToolSystem) -> None:
    w = system.supervise("w")
    cases = [
        (dict(restart="sometimes"), "restart='sometimes'"),
        (dict(security_level="ultra"), "security_level='ultra'"),
        (dict(shutdown_timeout=-1), "shutdown_timeout=-1"),
    ]
    for kwargs, text in cases:
        with pytest.raises(SpecError, match=text):
            w.spawn(Counter, name="c", **kwargs)
    with pytest.raises(SpecError, match="name='bad/name'"):
        w.spawn(Counter, name="bad/name")
    with pytest.raises(SpecError, match="cannot be loaded"):
        w.spawn("tests.tools:Nope", name="c")
    with pytest.raises(SpecError, match="not a ToolActor"):
        w.spawn("tests.helpers:wait_until", name="c")
    with pytest.raises(SpecError, match="config"):
        w.spawn(Counter, name="c", config={"x": object()})
    assert w.children() == []


def test_duplicate_names_are_refused(system: ToolSystem) -> None:
    w = system.supervise("w")
    w.spawn(Counter, name="c")
    with pytest.raises(ToolError, match="already exists"):
        w.spawn(Counter, name="c")


def test_exit_normal_transient_stays_down_permanent_restarts(system: ToolSystem) -> None:
    w = system.supervise("w")
    trans = w.spawn(Counter, name="t", restart="transient")
    perm = w.spawn(Counter, name="p", restart="permanent")
    assert trans.call("leave") == "bye"
    wait_until(lambda: trans.status().state is ToolState.STOPPED, what="transient stopped")
    assert trans.status().last_error is None
    with pytest.raises(ToolUnavailable):
        trans.call("get", timeout=5)
    old = perm.call("pid")
    perm.call("leave")
    wait_until(lambda: perm.status().restarts == 1, what="permanent restarted")
    assert perm.call("pid", timeout=10) != old


def test_exit_with_error_restarts_transient(system: ToolSystem) -> None:
    t = system.spawn(Counter, name="t", restart="transient")
    old = t.call("pid")
    t.call("leave", error="lost my socket")
    wait_until(lambda: t.status().restarts == 1, what="restart")
    assert t.call("pid", timeout=10) != old
    assert "lost my socket" in (t.status().last_error or "")


def test_restart_waits_until_the_old_process_has_ended(system: ToolSystem) -> None:
    """The actor says goodbye before its process ends; OTP restarts only after the old
    process is gone, so two instances never overlap (and a call never reaches the old)."""
    t = system.spawn(Counter, name="t", restart="transient")
    old = t.call("pid")
    t.call("leave_slowly", linger=1.5, error="lost my socket")
    wait_until(lambda: t.status().restarts == 1, what="restart")
    assert not pid_alive(old), "restarted while the old process was still running"
    assert t.call("pid", timeout=10) != old


def test_a_process_that_outlives_its_goodbye_is_killed(system: ToolSystem) -> None:
    """The actor has finished: LINGER (1 s) later its process is killed, even with a
    shutdown_timeout of 'infinity' (which would otherwise hold the restart, and every job
    of the supervisor queued behind it, for ever)."""
    t = system.spawn(Counter, name="t", shutdown_timeout="infinity")
    old = t.call("pid")
    t.call("leave_slowly", linger=3600, error="stuck thread")
    wait_until(lambda: t.status().restarts == 1, what="restart", timeout=15)
    assert not pid_alive(old)
    assert t.call("pid", timeout=10) != old
    killed = [e for e in system.events() if e["event"] == "killed" and e["path"] == "t"]
    assert killed and "outlived its actor" in killed[0]["detail"], killed
    system.spawn(Counter, name="after")  # the supervisor serves other jobs again


def test_raising_lifecycle_callback_is_a_failure(system: ToolSystem) -> None:
    t = system.spawn(BadPause, name="b")
    old = t.call("pid")
    with pytest.raises(ToolError, match="pause is not supported"):
        t.pause()
    wait_until(lambda: t.status().restarts == 1 and t.status().state is ToolState.RUNNING)
    assert t.call("pid", timeout=10) != old
    assert "pause is not supported" in (t.status().last_error or "")


def test_timers_run_in_the_tool_and_a_raising_timer_is_a_failure(system: ToolSystem) -> None:
    t = system.spawn(Ticker, name="tick", config={"fail_at": 20}, restart="transient")
    wait_until(lambda: t.status().restarts >= 1, what="timer failure restart")
    assert "tick 20 failed" in (t.status().last_error or "")
    ok = system.spawn(Ticker, name="ok")
    wait_until(lambda: ok.call("ticks_so_far") >= 5, what="ticks")


def test_timers_are_held_while_paused(system: ToolSystem) -> None:
    t = system.spawn(Ticker, name="tick")
    wait_until(lambda: t.call("ticks_so_far") >= 1)
    before = t.call("ticks_so_far")
    t.pause()
    time.sleep(0.3)  # 30 ticks would run in this time if timers were not held
    t.resume()
    assert t.call("ticks_so_far") - before <= 5
