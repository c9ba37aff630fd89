"""Supervision: strategies, restart types, intensity and escalation, backoff, ordered shutdown."""

from __future__ import annotations

import os
import signal
import time

import pytest

from supervisors import Backoff, Policy, ToolState, ToolSystem, ToolUnavailable
from tests.conftest import read_lines
from tests.helpers import find, wait_dead, wait_until
from tests.tools import Counter, FailAfterFirst, RecordingHook, StubbornStop

pytestmark = pytest.mark.timeout(90)
NOW = Backoff.none()


def kill(handle) -> int:
    pid = handle.call("pid")
    os.kill(pid, signal.SIGKILL)
    wait_dead(pid)
    return pid


def pids(handles) -> list[int]:
    return [h.call("pid", timeout=10) for h in handles]


def settled(handle, restarts: int) -> bool:
    st = handle.status()
    return st.restarts == restarts and st.state is ToolState.RUNNING


def test_one_for_one_restarts_only_the_failed_child(system: ToolSystem) -> None:
    w = system.supervise("w", Policy("one_for_one", backoff=NOW))
    a, b, c = (w.spawn(Counter, name=n) for n in "abc")
    before = pids([a, b, c])
    kill(b)
    wait_until(lambda: settled(b, 1), what="b restarted")
    after = pids([a, b, c])
    assert after[0] == before[0] and after[2] == before[2] and after[1] != before[1]
    assert [a.status().restarts, c.status().restarts] == [0, 0]


def test_one_for_all_restarts_every_child(system: ToolSystem, log: str) -> None:
    w = system.supervise("w", Policy("one_for_all", backoff=NOW), hooks=[RecordingHook(log)])
    a, b, c = (w.spawn(Counter, name=n) for n in "abc")
    before = pids([a, b, c])
    open(log, "w").close()
    kill(b)
    wait_until(lambda: all(settled(h, 1) for h in (a, b, c)), what="all restarted")
    after = pids([a, b, c])
    assert all(x != y for x, y in zip(before, after, strict=True))
    lines = read_lines(log)
    stops = [ln.split()[2] for ln in lines if ln.startswith("hook pre_stop")]
    starts = [ln.split()[2] for ln in lines if ln.startswith("hook post_start")]
    assert stops == ["w/c", "w/a"]  # survivors stopped in reverse order
    assert starts == ["w/a", "w/b", "w/c"]  # all started again in order


def test_rest_for_one_restarts_the_failed_child_and_later_ones(system: ToolSystem) -> None:
    w = system.supervise("w", Policy("rest_for_one", backoff=NOW))
    a, b, c = (w.spawn(Counter, name=n) for n in "abc")
    before = pids([a, b, c])
    kill(b)
    wait_until(lambda: settled(b, 1) and settled(c, 1), what="b and c restarted")
    after = pids([a, b, c])
    assert after[0] == before[0]
    assert after[1] != before[1] and after[2] != before[2]
    assert a.status().restarts == 0


def test_temporary_sibling_is_not_restarted_by_a_group_restart(system: ToolSystem) -> None:
    w = system.supervise("w", Policy("one_for_all", backoff=NOW))
    a = w.spawn(Counter, name="a")
    tmp = w.spawn(Counter, name="tmp", restart="temporary")
    kill(a)
    wait_until(lambda: settled(a, 1), what="a restarted")
    wait_until(lambda: tmp.status().state is ToolState.STOPPED, what="temporary left down")


def test_restart_types_after_a_crash(system: ToolSystem) -> None:
    w = system.supervise("w", Policy(backoff=NOW))
    perm = w.spawn(Counter, name="perm")
    trans = w.spawn(Counter, name="trans", restart="transient")
    temp = w.spawn(Counter, name="temp", restart="temporary")
    for h in (perm, trans, temp):
        kill(h)
    wait_until(lambda: settled(perm, 1) and settled(trans, 1), what="restarts")
    wait_until(lambda: temp.status().state is ToolState.FAILED, what="temporary failed")
    assert temp.status().restarts == 0
    assert "ended unexpectedly" in (temp.status().last_error or "")
    with pytest.raises(ToolUnavailable, match="failed"):
        temp.call("get", timeout=5)


def test_one_kill_gives_exactly_one_restart(system: ToolSystem) -> None:
    t = system.spawn(Counter, name="c")
    kill(t)
    wait_until(lambda: settled(t, 1))
    time.sleep(0.3)  # repeated exit notices from Thespian would show up as extra restarts here
    assert t.status().restarts == 1


def test_intensity_exceeded_under_root_marks_the_subtree_failed(system: ToolSystem) -> None:
    w = system.supervise("w", Policy(max_restarts=2, period=10.0, backoff=NOW))
    t = w.spawn(Counter, name="c")
    other = system.spawn(Counter, name="bystander")
    for n in (1, 2):
        kill(t)
        wait_until(lambda n=n: settled(t, n), what=f"restart {n}")
    kill(t)  # the third restart within the period is one too many
    wait_until(lambda: w.status().state is ToolState.FAILED, what="subtree failed")
    st = w.status()
    assert "gave up" in (st.last_error or "") and "more than 2 restarts" in st.last_error
    with pytest.raises(ToolUnavailable):
        t.call("get", timeout=5)
    assert other.call("add") == 1  # the root and the rest of the tree are fine
    node = find(system.tree(), "w")
    assert node["state"] == "failed"
    # an operator can bring the subtree back
    w.start()
    assert t.call("get", timeout=10) == 0
    assert w.status().state is ToolState.RUNNING


def test_nested_supervisor_escalates_and_the_parent_restarts_it(system: ToolSystem) -> None:
    outer = system.supervise("outer", Policy(max_restarts=5, period=10.0, backoff=NOW))
    inner = outer.supervise("inner", Policy(max_restarts=0, period=10.0, backoff=NOW))
    t = inner.spawn(Counter, name="c", config={"start": 7})
    sibling = outer.spawn(Counter, name="sib")
    inner_pid = inner.status().pid
    kill(t)  # inner may not restart anything: it gives up and escalates
    wait_until(lambda: inner.status().restarts == 1 and inner.status().state is ToolState.RUNNING,
               what="inner restarted by outer")
    assert inner.status().pid != inner_pid
    assert t.call("get", timeout=10) == 7  # the subtree came back from its spec
    assert sibling.status().restarts == 0  # one_for_one in outer
    escalated = [e for e in system.events() if e["event"] == "escalated"]
    assert len(escalated) == 1 and "gave up" in escalated[0]["detail"]


def test_dynamic_children_survive_a_supervisor_restart(system: ToolSystem) -> None:
    outer = system.supervise("outer", Policy(backoff=NOW))
    inner = outer.supervise("inner", Policy(backoff=NOW))
    inner.spawn(Counter, name="x", config={"start": 1})
    inner.spawn(Counter, name="y", config={"start": 2})
    wait_until(lambda: [c["name"] for c in system._request("outer", "status", {"name": "inner"}, 5)
                        ["children"]] == ["x", "y"], what="outer to learn inner's children")
    os.kill(inner.status().pid, signal.SIGKILL)
    wait_until(lambda: inner.status().restarts == 1 and inner.status().state is ToolState.RUNNING)
    assert inner.tool("x").call("get", timeout=10) == 1
    assert inner.tool("y").call("get", timeout=10) == 2


def test_changes_two_levels_down_reach_the_spec_each_ancestor_keeps(system: ToolSystem) -> None:
    outer = system.supervise("outer", Policy(backoff=NOW))
    mid = outer.supervise("mid", Policy(backoff=NOW))
    inner = mid.supervise("inner", Policy(backoff=NOW))
    for name, start in (("a", 1), ("b", 2), ("c", 3)):
        inner.spawn(Counter, name=name, config={"start": start})
    inner.remove("b")

    def kept_by_outer() -> list[str]:
        mid_spec = system._request("outer", "child_spec", {"name": "mid"}, 5)
        inner_spec = next(c for c in mid_spec["children"] if c["name"] == "inner")
        return [c["name"] for c in inner_spec["children"]]

    wait_until(lambda: kept_by_outer() == ["a", "c"], what="outer to learn inner's children")
    os.kill(mid.status().pid, signal.SIGKILL)  # mid and inner come back from outer's copy
    wait_until(lambda: mid.status().restarts == 1 and mid.status().state is ToolState.RUNNING)
    assert inner.tool("a").call("get", timeout=10) == 1
    assert inner.tool("c").call("get", timeout=10) == 3
    assert [c.name for c in inner.children()] == ["a", "c"]
    # changes made by the restarted instances reach outer too (they come from new addresses)
    inner.spawn(Counter, name="d", config={"start": 4})
    wait_until(lambda: kept_by_outer() == ["a", "c", "d"], what="outer to learn of d")
    os.kill(mid.status().pid, signal.SIGKILL)
    wait_until(lambda: mid.status().restarts == 2 and mid.status().state is ToolState.RUNNING)
    assert inner.tool("d").call("get", timeout=10) == 4


def test_init_failure_during_restart_counts_against_intensity(system: ToolSystem, tmp_path) -> None:
    w = system.supervise("w", Policy(max_restarts=3, period=30.0, backoff=NOW))
    t = w.spawn(FailAfterFirst, name="f", config={"marker": str(tmp_path / "m")})
    kill_by_command(t)
    wait_until(lambda: w.status().state is ToolState.FAILED, what="gave up on failing restarts")
    assert "second start refused" in (w.status().last_error or "")
    events = [e for e in system.events() if e["path"] == "w/f"]
    assert sum(e["event"] == "restart failed" for e in events) == 3


def kill_by_command(handle) -> None:
    try:
        handle.call("crash", timeout=10)
    except ToolUnavailable:
        pass


def test_backoff_delays_grow_between_restarts(system: ToolSystem) -> None:
    policy = Policy(max_restarts=10, period=60.0,
                    backoff=Backoff(initial=0.1, maximum=0.4, multiplier=2.0, jitter=0.0))
    t = system.supervise("w", policy).spawn(Counter, name="c")
    gaps = []
    for n in range(1, 5):
        kill(t)
        died = time.monotonic()
        wait_until(lambda n=n: settled(t, n), every=0.005, what=f"restart {n}")
        gaps.append(time.monotonic() - died)
    backoffs = [e["detail"] for e in system.events() if e["event"] == "backoff"]
    assert backoffs == ["0.100s before restart", "0.200s before restart",
                        "0.400s before restart", "0.400s before restart"]
    assert gaps[0] >= 0.1 and gaps[1] >= 0.2 and gaps[2] >= 0.4 and gaps[3] >= 0.4


def test_backoff_resets_after_a_good_run() -> None:
    from supervisors.tree.policy import BackoffState

    b = Backoff(initial=1.0, maximum=8.0, multiplier=2.0, jitter=0.0, reset_after=5.0)
    s = BackoffState()
    assert [s.next_delay(b, 0.1) for _ in range(5)] == [1.0, 2.0, 4.0, 8.0, 8.0]
    assert s.next_delay(b, 6.0) == 1.0  # it ran longer than reset_after


def test_children_stop_in_reverse_order_on_shutdown(log: str) -> None:
    with ToolSystem(hooks=[RecordingHook(log)]) as system:
        w = system.supervise("w")
        for n in "abc":
            w.spawn(Counter, name=n)
        system.supervise("v").spawn(Counter, name="d")
    lines = read_lines(log)
    starts = [ln.split()[2] for ln in lines if " post_start " in ln]
    stops = [ln.split()[2] for ln in lines if " pre_stop " in ln]
    assert starts == ["w/a", "w/b", "w/c", "v/d"]
    assert stops == ["v/d", "w/c", "w/b", "w/a"]


def test_tool_that_ignores_stop_is_killed_after_its_timeout(system: ToolSystem) -> None:
    t = system.spawn(StubbornStop, name="s", shutdown_timeout=0.5)
    pid = t.call("pid")
    started = time.monotonic()
    st = t.stop(timeout=10)
    took = time.monotonic() - started
    assert st.state is ToolState.STOPPED
    assert 0.5 <= took < 5.0
    wait_dead(pid, timeout=2)
    assert any(e["event"] == "killed" for e in system.events())


def test_set_policy_at_run_time(system: ToolSystem) -> None:
    w = system.supervise("w", Policy(max_restarts=0, backoff=NOW))
    t = w.spawn(Counter, name="c")
    w.set_policy(Policy(max_restarts=5, period=10.0, backoff=NOW))
    kill(t)
    wait_until(lambda: settled(t, 1), what="restart under the new policy")
    assert w.status().state is ToolState.RUNNING
    assert find(system.tree(), "w")["policy"]["max_restarts"] == 5


def test_tree_shows_the_whole_hierarchy(system: ToolSystem) -> None:
    outer = system.supervise("outer")
    outer.spawn(Counter, name="a")
    outer.supervise("inner").spawn(Counter, name="b")
    tree = system.tree()
    assert tree["kind"] == "supervisor" and tree["name"] == "root"
    outer_node = find(tree, "outer")
    assert [c["name"] for c in outer_node["children"]] == ["a", "inner"]
    b = find(tree, "outer/inner/b")
    assert b["kind"] == "tool" and b["state"] == "running" and b["pid"] > 0
    assert system.tool("outer/inner/b").call("add") == 1


def test_a_backoff_wait_does_not_block_the_supervisor(system: ToolSystem) -> None:
    w = system.supervise("w", Policy(backoff=Backoff(initial=3.0, maximum=3.0, jitter=0.0)))
    slow = w.spawn(Counter, name="slow")
    other = w.spawn(Counter, name="other")
    kill(slow)
    wait_until(lambda: any(e["event"] == "backoff" for e in system.events()), what="backoff")
    started = time.monotonic()
    assert other.pause().state is ToolState.PAUSED  # served during the 3 s wait
    other.resume()
    assert time.monotonic() - started < 1.5
    assert slow.status().state is ToolState.RESTARTING
    assert slow.call("get", timeout=10) == 0  # held until the restart, then served


def test_backoff_keeps_growing_while_restarts_fail(system: ToolSystem, tmp_path) -> None:
    policy = Policy(max_restarts=4, period=60.0,
                    backoff=Backoff(initial=0.05, maximum=1.0, jitter=0.0, reset_after=0.01))
    t = system.supervise("w", policy).spawn(FailAfterFirst, name="f",
                                             config={"marker": str(tmp_path / "m")})
    time.sleep(0.05)  # it ran longer than reset_after before its first failure
    kill_by_command(t)
    wait_until(lambda: system.supervisor("w").status().state is ToolState.FAILED, timeout=20)
    delays = [e["detail"] for e in system.events() if e["event"] == "backoff"]
    assert delays == ["0.050s before restart", "0.100s before restart", "0.200s before restart",
                      "0.400s before restart"]


def test_tree_lists_the_children_of_a_stopped_supervisor(system: ToolSystem) -> None:
    outer = system.supervise("outer")
    inner = outer.supervise("inner")
    inner.spawn(Counter, name="b")
    inner.spawn(Counter, name="c")
    assert inner.stop().state is ToolState.STOPPED
    node = find(system.tree(), "outer/inner")
    assert node["state"] == "stopped"
    assert [(c["name"], c["state"], c["pid"]) for c in node["children"]] == [
        ("b", "stopped", None), ("c", "stopped", None)]


def test_tree_lists_the_children_of_a_supervisor_that_went_down_while_it_was_read(
        system: ToolSystem, monkeypatch: pytest.MonkeyPatch) -> None:
    """The root said outer/inner runs, then inner could not answer (it died in between):
    the tree still lists inner's children, from the spec its parent keeps."""
    outer = system.supervise("outer")
    inner = outer.supervise("inner")
    inner.spawn(Counter, name="b")
    wait_until(lambda: [c["name"] for c in system._request("outer", "status", {"name": "inner"}, 5)
                        ["children"]] == ["b"], what="outer to learn inner's children")
    real = system._request

    def inner_gone(path, op, args, timeout):
        if path == "outer/inner" and op == "inspect":
            raise ToolUnavailable("outer/inner is not running")
        return real(path, op, args, timeout)

    monkeypatch.setattr(system, "_request", inner_gone)
    node = find(system.tree(), "outer/inner")
    assert [(c["name"], c["state"]) for c in node["children"]] == [("b", "stopped")]

    def outer_too(path, op, args, timeout):
        if path == "outer" and op == "status":
            assert timeout is not None and timeout <= 2.0  # (a tree() waits little longer)
            raise ToolUnavailable("outer is not running")
        return inner_gone(path, op, args, timeout)

    monkeypatch.setattr(system, "_request", outer_too)
    node = find(system.tree(), "outer/inner")  # shown, without children (and a warning)
    assert node["state"] == "running" and node["children"] == []


def test_a_supervisors_status_lists_its_children_only_when_asked(system: ToolSystem) -> None:
    """A status (``handle.status()``) does not need the names of a supervisor's children:
    its parent leaves them out unless asked (with 1,000 children that list cost the root
    0.3 MiB, issue 10)."""
    w = system.supervise("w")
    w.spawn(Counter, name="a")
    wait_until(lambda: [c["name"] for c in system._request("", "status", {"name": "w"}, 5)
                        ["children"]] == ["a"], what="the root to learn w's children")
    brief = system._request("", "status", {"name": "w", "children": False}, 5)
    assert "children" not in brief and brief["state"] == "running"
    assert w.status().state is ToolState.RUNNING
    running = [c for c in system._request("", "inspect", {}, 5)["children"] if c["name"] == "w"]
    assert running and "children" not in running[0]  # the host asks w itself
    restarted = system._request("", "control", {"name": "w", "op": "restart"}, 20)
    assert "children" not in restarted and restarted["state"] == "running"  # a ToolStatus's
    assert w.tool("a").call("get", timeout=10) == 0  # (restarted with its child)
