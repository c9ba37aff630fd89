"""Tools that talk to tools: call, send, ask; deadlines; deadlocks caught; supervision across calls."""

from __future__ import annotations

import os
import signal
import threading
from typing import Any

import pytest

from actors import DeadlockError as ActorsDeadlock
from supervisors import DeadlockError, NotFound, ToolError, ToolSystem, ToolUnavailable
from tests.conftest import FAST
from tests.helpers import wait_until

RELAY = "tests.messaging_tools:Relay"


def test_deadlock_error_is_one_class_in_both_faces() -> None:
    from actors.errors import error_from_wire

    assert DeadlockError is ActorsDeadlock
    assert issubclass(DeadlockError, ToolError)
    err = error_from_wire(DeadlockError("deadlock: a -> b -> a: refused", cycle=["a", "b", "a"]).to_wire())
    assert isinstance(err, DeadlockError) and err.cycle == ["a", "b", "a"]


@pytest.mark.timeout(60)
def test_an_uncaught_deadlock_reaches_the_host_as_deadlock_error(trio) -> None:
    system, a, b, c = trio
    with pytest.raises(DeadlockError) as caught:
        a.call("call", path="workers/b", cmd="call", args={"path": "workers/a", "cmd": "get"})
    assert caught.value.cycle == ["workers/a", "workers/b", "workers/a"]
    assert a.call("get") == "workers/a"


@pytest.fixture
def trio():
    with ToolSystem(policy=FAST) as system:
        w = system.supervise("workers", policy=FAST)
        io = system.supervise("io", policy=FAST)
        a = w.spawn(RELAY, name="a")
        b = w.spawn(RELAY, name="b")
        c = io.spawn(RELAY, name="c")
        yield system, a, b, c


@pytest.mark.timeout(60)
def test_call_from_a_tool_reaches_another_tool_across_supervisors(trio) -> None:
    system, a, b, c = trio
    assert a.call("call", path="io/c", cmd="get") == "io/c"
    assert a.call("call", path="workers/b", cmd="record", args={"item": "x"}) == 1
    assert b.call("seen_items") == ["x"]
    # errors come back as the host would get them
    err = a.call("call_error", path="workers/b", cmd="fail")
    assert err["type"] == "ToolError" and "failing on purpose" in err["message"]
    err = a.call("call_error", path="workers/b", cmd="nope")
    assert err["type"] == "UnknownCommand"
    err = a.call("call_error", path="workers/b", cmd="slow", args={"seconds": 2}, within=0.2)
    assert err["type"] == "CallTimeout" and err["seconds"] < 1.9  # the 0.2 s timeout, not the 2 s


@pytest.mark.timeout(60)
def test_deadline_of_a_nested_call_never_outlives_the_outer_call(trio) -> None:
    system, a, b, c = trio
    left = a.call("call", path="workers/b", cmd="deadline_left", timeout=2.0, args={})
    assert 0 < left <= 2.0
    # a timeout asked for inside is capped by the outer deadline too
    left = a.call("call", path="workers/b", cmd="deadline_left", timeout=2.0)
    assert left <= 2.0


@pytest.mark.timeout(60)
def test_bad_input_is_a_clear_error_and_the_tool_keeps_serving(trio) -> None:
    system, a, b, c = trio
    err = a.call("call_error", path="workers/nobody", cmd="get")
    assert err["type"] == "NotFound" and "workers/nobody" in err["message"]
    err = a.call("call_error", path="workers", cmd="get")
    assert err["type"] == "ToolError" and "supervisor" in err["message"]
    assert "on_reply" in a.call("bad_ask", path="workers/b")
    out = a.call("bad_args", path="workers/b")
    assert out.startswith("TypeError") and "object" in out
    assert a.call("get") == "workers/a"
    with pytest.raises(NotFound):
        a.call("call", path="nowhere/x", cmd="get")


@pytest.mark.timeout(60)
def test_the_permission_check_sees_caller_and_callee_and_can_refuse(trio) -> None:
    system, a, b, c = trio
    out = a.call("guarded_call", path="io/c", cmd="get")
    assert out == "PermissionDenied: workers/a (standard) may not call io/c (standard)"
    assert a.call("call", path="io/c", cmd="get") == "io/c"  # lifted again


@pytest.mark.timeout(60)
def test_a_tool_calling_itself_is_refused_at_once(trio) -> None:
    system, a, b, c = trio
    err = a.call("call_error", path="workers/a", cmd="get", within=20)
    assert err["type"] == "DeadlockError"
    assert "workers/a -> workers/a" in err["message"]
    assert err["seconds"] < 5  # at once, not at the 20 s deadline


@pytest.mark.timeout(60)
def test_a_cycle_through_nested_calls_is_named(trio) -> None:
    system, a, b, c = trio
    # a -> b -> c -> a: c's call back to a would close the cycle
    err = a.call("call", path="workers/b", cmd="call_error",
                 args={"path": "io/c", "cmd": "call_error",
                       "args": {"path": "workers/a", "cmd": "get", "within": 20}})
    inner = err["value"]
    assert inner["type"] == "DeadlockError", inner
    assert "workers/a -> workers/b -> io/c -> workers/a" in inner["message"]
    assert inner["seconds"] < 5  # at once, not at the 20 s deadline
    assert a.call("get") == "workers/a"  # nobody is stuck


@pytest.mark.timeout(60)
def test_a_cycle_of_independent_calls_is_caught_long_before_the_deadline(trio) -> None:
    system, a, b, c = trio
    # b, from a timer, calls a, which is busy for 0.5 s and then calls b: a waits on b, b on a.
    # a's call is the younger one: it closes the cycle, is refused, and never runs in b.
    assert b.call("later", path="workers/a", cmd="get", delay=0.1)
    out = a.call("slow_then_call", seconds=0.5, path="workers/b", cmd="record", timeout=30)
    assert out["type"] == "DeadlockError", out
    assert "workers/a -> workers/b -> workers/a" in out["message"]
    assert out["seconds"] < 5  # long before the 30 s deadline
    got = wait_until(lambda: b.call("got"), timeout=20, what="b's timer call to end")
    assert got == ["workers/a"]  # b's call was served once a was free
    assert b.call("seen_items") == []  # the refused call was withdrawn, unrun


@pytest.mark.timeout(60)
def test_a_longer_cycle_of_independent_calls_across_supervisors_is_named(trio) -> None:
    system, a, b, c = trio
    # c (timer, t=0.1) waits on a; b (t=0.3) waits on c; a (t=0.6) calls b and closes the cycle
    assert c.call("later", path="workers/a", cmd="get", delay=0.1)
    outs: dict[str, Any] = {}
    t = threading.Thread(target=lambda: outs.update(
        b=b.call("slow_then_call", seconds=0.3, path="io/c", cmd="record", timeout=30)))
    t.start()
    out = a.call("slow_then_call", seconds=0.6, path="workers/b", cmd="record", timeout=30)
    t.join(30)
    assert out["type"] == "DeadlockError", out
    assert "workers/a -> workers/b -> io/c -> workers/a" in out["message"]
    assert outs["b"]["type"] is None, outs  # the older calls all went through
    assert wait_until(lambda: c.call("got"), timeout=20) == ["workers/a"]
    assert c.call("seen_items") == [None]   # b's call ran
    assert b.call("seen_items") == []       # a's withdrawn call did not


@pytest.mark.timeout(60)
def test_send_keeps_order_and_counts_errors(trio) -> None:
    system, a, b, c = trio
    assert a.call("send", path="workers/b", cmd="record", n=500) == 500
    wait_until(lambda: len(b.call("seen_items")) == 500, timeout=20, what="500 sends")
    assert b.call("seen_items") == list(range(500))
    a.call("send", path="workers/b", cmd="fail", n=3)
    wait_until(lambda: a.call("stats", path="workers/b")["failed"] == 3, timeout=20,
               what="3 failed sends counted")


@pytest.mark.timeout(60)
def test_a_tool_may_send_to_and_ask_itself(trio) -> None:
    system, a, b, c = trio
    a.call("send", path="workers/a", cmd="record", n=3)   # served after the current command
    wait_until(lambda: a.call("seen_items") == [0, 1, 2], timeout=20, what="a's own sends")
    a.call("ask", path="workers/a", cmd="get")
    assert wait_until(lambda: a.call("got"), timeout=20) == ["workers/a"]


@pytest.mark.timeout(60)
def test_ask_replies_come_back_as_callbacks_in_order(trio) -> None:
    system, a, b, c = trio
    a.call("ask", path="workers/b", cmd="record", n=50)
    got = wait_until(lambda: len(a.call("got")) == 50 and a.call("got"), timeout=20, what="50 replies")
    assert got == list(range(1, 51))
    a.call("ask", path="workers/b", cmd="fail")
    got = wait_until(lambda: len(a.call("got")) == 51 and a.call("got"), timeout=20, what="the error")
    assert got[-1]["error"] == "ToolError" and "failing on purpose" in got[-1]["message"]


@pytest.mark.timeout(60)
def test_a_full_window_refuses_with_overloaded_and_drops_nothing() -> None:
    with ToolSystem(policy=FAST) as system:
        a = system.spawn(RELAY, name="a")
        b = system.spawn(RELAY, name="b")
        b.pause()
        out = a.call("send_error", path="b", cmd="record", n=20_000)
        assert out["type"] == "ToolOverloaded", out
        assert "window" in out["message"]
        b.resume()
        wait_until(lambda: len(b.call("seen_items")) == out["sent"], timeout=30,
                   what="every accepted send to arrive")
        assert b.call("seen_items") == list(range(out["sent"]))


@pytest.mark.timeout(60)
def test_a_callee_that_dies_answers_unavailable_at_once_and_its_successor_serves(trio) -> None:
    system, a, b, c = trio
    pid = b.call("pid")
    threading.Timer(0.3, os.kill, (pid, signal.SIGKILL)).start()  # b dies while a waits on it
    out = a.call("call_error", path="workers/b", cmd="slow", args={"seconds": 10}, timeout=20)
    assert out["type"] == "ToolUnavailable", out
    assert out["seconds"] < 5
    wait_until(lambda: b.status().pid not in (None, pid), timeout=20, what="b restarted")
    assert a.call("call", path="workers/b", cmd="pid") != pid


@pytest.mark.timeout(60)
def test_a_call_made_while_the_callee_restarts_waits_for_the_new_instance(trio) -> None:
    system, a, b, c = trio
    pid = a.call("call", path="workers/b", cmd="pid")   # a now knows where b lives
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not os.path.exists(f"/proc/{pid}"), timeout=10, what="b's process gone")
    new = a.call("call", path="workers/b", cmd="pid", within=20)  # not an error: it waits
    assert new != pid
    assert b.status().restarts == 1


@pytest.mark.timeout(60)
def test_ask_to_a_callee_that_dies_gets_unavailable(trio) -> None:
    system, a, b, c = trio
    a.call("ask", path="workers/b", cmd="crash")
    got = wait_until(lambda: a.call("got"), timeout=20, what="the ask's error")
    assert got[0]["error"] == "ToolUnavailable"


@pytest.mark.timeout(60)
def test_a_caller_that_dies_leaves_no_queued_work_behind(trio) -> None:
    system, a, b, c = trio
    b.call("send", path="io/c", cmd="slow", args={"seconds": 1.5})  # keeps c busy
    a_pid = a.call("pid")
    board = os.path.join(system.runtime_dir, "waits", "workers%2Fa")

    def kill_a_once_it_waits() -> None:  # a's entry on the wait board: its call is queued at c
        wait_until(lambda: os.path.exists(board), timeout=10, every=0.002, what="a waiting on c")
        os.kill(a_pid, signal.SIGKILL)

    threading.Thread(target=kill_a_once_it_waits, daemon=True).start()
    with pytest.raises(ToolUnavailable):  # a dies while its call waits in c's queue
        a.call("call", path="io/c", cmd="record", args={"item": "orphan"}, timeout=20)
    assert c.call("seen_items", timeout=20) == []


# -- the wait board and the route directory, without processes ---------------------------

def test_wait_board_refuses_only_the_youngest_call_of_a_cycle(tmp_path) -> None:
    from actors.waits import WaitBoard

    a, b, c = (WaitBoard(str(tmp_path), p) for p in ("a", "w/b", "io/c"))
    a.enter("w/b", since=1.0, cid=1)
    assert a.closing_cycle("w/b", 1.0) is None          # b waits on nobody
    b.enter("io/c", since=2.0, cid=1)
    c.enter("a", since=3.0, cid=1)                      # c's call is the youngest
    assert c.closing_cycle("a", 3.0) == ["io/c", "a", "w/b", "io/c"]
    assert a.closing_cycle("w/b", 1.0) is None          # a older: c refuses, not a
    assert b.closing_cycle("io/c", 2.0) is None
    c.leave()
    assert a.closing_cycle("w/b", 1.0) is None


def test_wait_board_ignores_entries_of_dead_tools(tmp_path) -> None:
    import json
    import subprocess
    import sys

    from actors.waits import WaitBoard

    a = WaitBoard(str(tmp_path), "a")
    a.enter("b", since=1.0, cid=1)
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    dead_pid = int(gone.stdout)
    (tmp_path / "waits" / "b").write_text(json.dumps(["a", 2.0, dead_pid, 1]))
    assert a.closing_cycle("b", 3.0) is None            # b's entry is a dead process's
    (tmp_path / "waits" / "b").write_text(json.dumps(["a", 2.0, os.getpid(), 1]))
    assert a.closing_cycle("b", 3.0) == ["a", "b", "a"]  # the same entry, alive


def test_abandoned_calls_are_dropped_once(tmp_path) -> None:
    from actors.waits import WaitBoard, abandoned

    board = WaitBoard(str(tmp_path), "a")
    me = os.getpid()
    assert not abandoned(str(tmp_path), me, 7)
    board.abandon(me, 7)
    assert abandoned(str(tmp_path), me, 7)
    assert not abandoned(str(tmp_path), me, 7)          # the marker is used up


def test_route_directory_round_trip(tmp_path) -> None:
    from actors import routes

    entry = routes.RouteEntry("workers/fetch", "tool", "running", 123, "\0sock", "standard", 2)
    routes.publish(str(tmp_path), entry)
    assert routes.lookup(str(tmp_path), "workers/fetch") == entry
    assert routes.lookup(str(tmp_path), "workers/none") is None
    routes.withdraw(str(tmp_path), "workers/fetch")
    assert routes.lookup(str(tmp_path), "workers/fetch") is None


@pytest.mark.timeout(60)
def test_a_call_after_sends_runs_after_them() -> None:
    with ToolSystem(policy=FAST) as system:
        a = system.spawn(RELAY, name="a")
        system.spawn(RELAY, name="b")
        assert a.call("send_then_call", path="b", n=300) == list(range(300))


@pytest.mark.timeout(60)
def test_tool_calls_on_the_thespian_path_say_they_need_the_socket_path() -> None:
    with ToolSystem(policy=FAST, call_path="thespian") as system:
        a = system.spawn(RELAY, name="a")
        system.spawn(RELAY, name="b")
        err = a.call("call_error", path="b", cmd="get")
        assert err["type"] == "ToolUnavailable" and "socket call path" in err["message"]


@pytest.mark.timeout(60)
def test_an_ask_with_a_timeout_gets_call_timeout_once_and_drops_the_late_answer(trio) -> None:
    system, a, b, c = trio
    assert a.call("ask_within", path="workers/b", cmd="slow", within=0.3,
                  args={"seconds": 1.2}) == "asked"
    got = wait_until(lambda: a.call("got"), timeout=10, what="the ask's timeout")
    assert got[0]["error"] == "CallTimeout"
    assert "ask of 'slow' to workers/b had no answer within 0.3 s" in got[0]["message"]
    wait_until(lambda: a.call("stats", path="workers/b")["outstanding"] == 0, timeout=10,
               what="b's late answer")
    assert a.call("got") == got                      # the late answer ran nothing
    stats = a.call("stats", path="workers/b")
    assert stats["timed_out"] == 1 and stats["answered"] == 1
    assert a.call("ask_within", path="workers/b", cmd="get", within=5) == "asked"
    wait_until(lambda: len(a.call("got")) == 2, timeout=10, what="an answer within the timeout")
    assert a.call("got")[1] == "workers/b"
    assert a.call("stats", path="workers/b")["timed_out"] == 1   # its timer did not fire later


@pytest.mark.timeout(30)
@pytest.mark.parametrize("bad", [0, -1, float("nan"), float("inf"), True, "5"])
def test_an_ask_timeout_must_be_a_positive_number(trio, bad) -> None:
    system, a, b, c = trio
    out = a.call("ask_within", path="workers/b", cmd="get", within=bad)
    assert out.startswith("SpecError: timeout=") and "needs a number of seconds above 0" in out
    assert a.call("got") == []


@pytest.mark.timeout(60)
def test_sends_and_asks_to_a_restarting_tool_wait_for_it_in_order() -> None:
    """Nothing is refused or lost while the callee restarts: held, then delivered in order,
    ahead of a call made after them."""
    from supervisors import Backoff, Policy
    from tests.helpers import wait_dead

    slow = Policy(max_restarts=20, period=5.0, backoff=Backoff(initial=0.6, maximum=0.6, jitter=0.0))
    with ToolSystem(policy=slow) as system:
        w = system.supervise("w", policy=slow)
        a = w.spawn(RELAY, name="a")
        b = w.spawn(RELAY, name="b")
        assert a.call("call", path="w/b", cmd="get") == "w/b"      # a knows where b was
        pid = b.call("pid")
        os.kill(pid, signal.SIGKILL)
        wait_dead(pid)
        assert a.call("send", path="w/b", cmd="record", n=3) == 3   # not refused
        assert a.call("ask", path="w/b", cmd="get") == 1
        assert a.call("stats", path="w/b")["outstanding"] == 4       # held
        assert a.call("call", path="w/b", cmd="seen_items", within=20) == [0, 1, 2]
        wait_until(lambda: a.call("got") == ["w/b"], what="the held ask's answer")
        stats = a.call("stats", path="w/b")
        assert (stats["sent"], stats["asked"], stats["failed"], stats["outstanding"]) == (3, 1, 0, 0)
        assert b.status().restarts == 1


@pytest.mark.timeout(60)
def test_sends_and_asks_to_a_stopped_tool_still_fail_at_once(trio) -> None:
    system, a, b, c = trio
    b.stop()
    err = a.call("send_error", path="workers/b", cmd="record")
    assert err["type"] == "ToolUnavailable" and "stopped" in err["message"]


@pytest.mark.timeout(30)
def test_what_waited_too_long_for_a_restarting_tool_fails_with_the_reason(tmp_path) -> None:
    """Held sends and asks give up after HOLD_FOR: an ask's on_reply gets ToolUnavailable."""
    from actors import peers as peers_mod
    from actors import routes

    class Runner:
        path, runtime_dir, level = "w/a", str(tmp_path), "standard"
        timers: list[Any] = []

        def schedule(self, delay: float, fn: Any) -> int:
            self.timers.append(fn)
            return len(self.timers)

    routes.publish(str(tmp_path), routes.RouteEntry("w/b", "tool", "restarting", None, None))
    runner = Runner()
    p = peers_mod.Peers(runner)  # type: ignore[arg-type]
    got: list[Any] = []
    p.post("w/b", "send", "record", {})
    p.post("w/b", "ask", "get", {}, got.append)
    assert [kind for _, kind, _, _ in p.held["w/b"]] == ["send", "ask"]
    p.held["w/b"] = [(item, kind, fn, 0.0) for item, kind, fn, _ in p.held["w/b"]]  # expired
    runner.timers.pop(0)()           # the recheck: still restarting
    assert "w/b" not in p.held
    for fn in runner.timers:         # the ask's on_reply, as the tool's loop would run it
        fn()
    assert isinstance(got[0], ToolUnavailable) and "did not serve again within 30 s" in str(got[0])
    assert p._count("w/b").failed == 2
