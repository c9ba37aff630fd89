"""Resources: usage figures, quotas per level, policing actions, hard limits, clean-up."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from actors.sandbox import tools_tmp_root
from supervisors import Backoff, Policy, SpecError, ToolError, ToolState, ToolSystem
from supervisors.processes.procs import pid_alive
from tests.helpers import find, wait_dead, wait_until
from tests.tools import Counter, Hog

pytestmark = pytest.mark.timeout(90)
NOW = Policy(max_restarts=10, period=10.0, backoff=Backoff.none())
KEYS = {"memory_mb", "rss_mb", "cpu_percent", "cpu_seconds", "open_files", "threads",
        "connections", "children", "sampled_at"}


@pytest.fixture
def system() -> ToolSystem:
    with ToolSystem(policy=NOW, sample_every=0.1) as s:
        yield s


def sampled(t) -> dict:
    return wait_until(lambda: (u := t.status().usage).get("sampled_at") and u, what="a usage sample")


def events(system: ToolSystem, path: str, kind: str) -> list[dict]:
    return [e for e in system.events() if e["path"] == path and e["event"] == kind]


def test_status_tree_and_usage_show_live_figures(system: ToolSystem) -> None:
    t = system.spawn(Hog, name="h")
    usage = sampled(t)
    assert KEYS <= set(usage)
    assert 0 < usage["memory_mb"] <= usage["rss_mb"]
    assert usage["threads"] >= 1 and usage["open_files"] > 0
    assert usage["limits"]["memory_mb"] == 256  # the standard level's default
    t.call("leak", mb=30)
    wait_until(lambda: (t.status().usage.get("memory_mb") or 0) > usage["memory_mb"] + 25,
               what="the leak to show")
    node = find(system.tree(), "h")
    assert node["usage"]["memory_mb"] > 25
    stats = system.accounting_stats(sweep_now=True)
    assert stats["tracked"] == 1 and stats["sweeps"] > 0
    # what a sweep cost the accountant's CPU, apart from its wall time (which includes
    # waiting for a core on a busy machine)
    assert 0 < stats["last_sweep_cpu_ms"] <= stats["last_sweep_ms"] + 1.0


def test_limits_come_from_the_level_and_cannot_exceed_it(system: ToolSystem) -> None:
    with pytest.raises(SpecError, match=r"limits.memory_mb=4096 is invalid: security level "
                                        r"'standard' allows at most 1024"):
        system.spawn(Hog, name="h", limits={"memory_mb": 4096})
    with pytest.raises(SpecError, match=r"limits.memory_mb=300 .* 'critical' allows at most 256"):
        system.spawn(Hog, name="h", security_level="critical", limits={"memory_mb": 300})
    with pytest.raises(SpecError, match="limits.disk_mb=1 is invalid: unknown limit"):
        system.spawn(Hog, name="h", limits={"disk_mb": 1})
    with pytest.raises(SpecError, match="on_limit='explode' is invalid"):
        system.spawn(Hog, name="h", on_limit="explode")
    from supervisors.resources.quotas import LEVELS

    order = ["low", "standard", "high", "critical"]
    for a, b in zip(order, order[1:], strict=False):  # stricter levels are tighter everywhere
        assert all(x >= y for x, y in zip(LEVELS[a][1].to_dict().values(),
                                          LEVELS[b][1].to_dict().values(), strict=True))
    t = system.spawn(Hog, name="ok", security_level="high", limits={"memory_mb": 100})
    assert sampled(t)["limits"]["memory_mb"] == 100


def test_a_memory_leak_past_its_quota_restarts_the_tool(system: ToolSystem) -> None:
    t = system.spawn(Hog, name="h", limits={"memory_mb": 60}, on_limit="restart")
    pid = t.call("pid")
    t.call("leak", mb=80)
    wait_until(lambda: t.status().restarts == 1 and t.status().state is ToolState.RUNNING,
               what="restart at the quota")
    assert t.call("pid") != pid
    err = t.status().last_error or ""
    assert "memory_mb" in err and "over its limit 60" in err
    assert [e["event"] for e in system.events() if e["path"] == "h"].count("limit exceeded") == 1


def test_stop_at_the_quota_leaves_the_tool_down_with_the_figure(system: ToolSystem) -> None:
    t = system.spawn(Hog, name="h", limits={"memory_mb": 60}, on_limit="stop")
    t.call("leak", mb=80)
    wait_until(lambda: t.status().state is ToolState.STOPPED, what="stopped at the quota")
    assert "LimitExceeded: memory_mb" in (t.status().last_error or "")
    assert events(system, "h", "stopped at its limit")


def test_alert_only_warns_in_steps_and_keeps_running(system: ToolSystem) -> None:
    t = system.spawn(Hog, name="h", limits={"memory_mb": 100}, on_limit="alert")
    base = sampled(t)["memory_mb"]
    for target in (0.85, 0.97, 1.1):  # warning, critical, action
        t.call("leak", mb=max(1, int(100 * target - base) - len_kept(t)))
        wait_until(lambda target=target: (t.status().usage.get("memory_mb") or 0) >= 100 * target - 2)
    wait_until(lambda: events(system, "h", "limit exceeded"), what="the alert")
    # (memory's steps only: a slow machine may also see the leaking command's CPU cross 80 %)
    kinds = [e["event"] for e in system.events() if e["path"] == "h"
             and e["event"].startswith("limit") and e["detail"].startswith("memory_mb ")]
    assert kinds == ["limit warning", "limit critical", "limit exceeded"]
    assert t.status().state is ToolState.RUNNING and t.status().restarts == 0
    assert "on_limit=alert" in (t.status().last_error or "")


def len_kept(t) -> int:
    return t.call("leak", mb=0)


def test_leaking_file_handles_hits_the_hard_limit_then_policing_acts(system: ToolSystem) -> None:
    # the kernel's limit is open_files + room for max_callers callers + the runtime's reserve
    t = system.spawn(Hog, name="h", limits={"open_files": 48}, on_limit="restart", max_callers=8)
    with pytest.raises(ToolError) as info:
        t.call("leak_files", n=100)
    assert info.value.type == "OSError" and "Too many open files" in info.value.message
    wait_until(lambda: t.status().restarts == 1, what="restart for open files")
    assert "open_files" in (t.status().last_error or "")


def test_burning_cpu_over_its_quota_pauses_the_tool(system: ToolSystem) -> None:
    t = system.spawn(Hog, name="h", limits={"cpu_percent": 40}, on_limit="pause")
    t.call("burn")
    wait_until(lambda: t.status().state is ToolState.PAUSED, timeout=20, what="paused for CPU")
    assert "cpu_percent" in (t.status().last_error or "")


def test_a_tool_that_forks_children_and_crashes_leaves_nothing_behind(system: ToolSystem) -> None:
    t = system.spawn(Hog, name="h")
    kids = t.call("sleepers", n=3)
    tmp = t.call("tmp")
    assert all(pid_alive(k) for k in kids) and os.path.isdir(tmp)
    wait_until(lambda: t.status().usage.get("children") == 3, what="children counted")
    try:
        t.call("crash")
    except ToolError:
        pass
    wait_dead(*kids, timeout=5)
    wait_until(lambda: not os.path.exists(tmp), what="temp dir removed")
    assert t.call("pid", timeout=10)  # and it came back


def test_stop_ends_the_tools_children_and_removes_its_temp_dir(system: ToolSystem) -> None:
    t = system.spawn(Hog, name="h")
    kids = t.call("sleepers", n=2)
    tmp = t.call("tmp")
    t.stop()
    wait_dead(*kids, timeout=5)
    assert not os.path.exists(tmp)


def test_leaving_the_system_ends_tools_children_too() -> None:
    with ToolSystem() as system:
        kids = system.spawn(Hog, name="h").call("sleepers", n=2)
    wait_dead(*kids, timeout=5)


def test_a_pid_that_vanishes_between_samples_is_a_normal_event(system: ToolSystem) -> None:
    t = system.spawn(Hog, name="h")
    sampled(t)
    for _ in range(3):
        pid = t.call("pid", timeout=10)
        os.kill(pid, 9)
        wait_dead(pid)
        stats = system.accounting_stats(sweep_now=True)  # before its supervisor restarts it
        assert stats["tracked"] <= 1
    wait_until(lambda: t.status().restarts == 3 and t.status().state is ToolState.RUNNING)
    assert sampled(t)["pid"] == t.call("pid")
    assert system.accounting_stats()["tracked"] == 1


def test_adaptive_limits_follow_usage_and_catch_a_spike(system: ToolSystem) -> None:
    t = system.spawn(Hog, name="h", limits={"memory_mb": 200}, on_limit="alert", adaptive=True)
    wait_until(lambda: events(system, "h", "limit adjusted"), timeout=20, what="an adjustment")
    adjusted = t.status().usage["limits"]["memory_mb"]
    assert 50 <= adjusted < 200  # tightened towards the forecast, not below the floor
    t.call("leak", mb=int(adjusted) + 10)
    wait_until(lambda: events(system, "h", "anomaly"), timeout=10, what="the spike flagged")
    wait_until(lambda: events(system, "h", "limit exceeded"), timeout=10, what="caught early")
    assert t.status().usage["configured"]["memory_mb"] == 200


def test_the_accountant_is_restarted_if_it_dies(system: ToolSystem) -> None:
    t = system.spawn(Counter, name="c")
    sampled(t)
    pid = system.accounting_stats()["pid"]
    os.kill(pid, 9)
    wait_dead(pid)
    wait_until(lambda: _stats(system).get("tracked") == 1 and _stats(system)["pid"] != pid,
               what="a new accountant tracking the tool")


def _stats(system: ToolSystem) -> dict:
    try:
        return system.accounting_stats()
    except ToolError:
        return {}


def test_a_killed_supervisor_does_not_orphan_what_its_tools_started(system: ToolSystem) -> None:
    inner = system.supervise("w")
    t = inner.spawn(Hog, name="h")
    kids = t.call("sleepers", n=2)
    sampled(t)
    os.kill(inner.status().pid, 9)  # the tool dies with it (PDEATHSIG); its children do not...
    wait_dead(*kids, timeout=10)  # ...until the accountant sees the tool gone and ends its group


def test_hard_memory_caps_the_address_space(system: ToolSystem) -> None:
    t = system.spawn(Hog, name="h", limits={"memory_mb": 64}, hard_memory=True, on_limit="alert")
    with pytest.raises(ToolError) as info:
        t.call("leak", mb=200)
    assert info.value.type == "MemoryError"
    assert t.call("pid")  # the tool itself survives the refused allocation


def test_cpu_seconds_is_a_hard_limit(system: ToolSystem) -> None:
    t = system.spawn(Hog, name="h", limits={"cpu_seconds": 1}, on_limit="alert")
    pid = t.call("pid")
    t.call("burn")
    wait_dead(pid, timeout=20)  # SIGXCPU after one CPU second: a fatal CpuLimitExceeded
    wait_until(lambda: t.status().restarts >= 1, timeout=10, what="restart after SIGXCPU")
    assert "CpuLimitExceeded" in (t.status().last_error or "")
    assert "cpu_seconds hard limit" in (t.status().last_error or "")


def test_pause_at_the_limit_applies_again_after_a_resume(system: ToolSystem) -> None:
    t = system.spawn(Hog, name="h", limits={"cpu_percent": 40}, on_limit="pause")
    for _ in range(2):
        t.call("burn")
        wait_until(lambda: t.status().state is ToolState.PAUSED, timeout=20, what="paused for CPU")
        wait_until(lambda: t.status().usage.get("cpu_percent", 100) < 10, what="idle while paused")
        t.resume()  # held timers run again: the burn goes on...
        t.call("pid")


def test_tools_temp_dirs_live_on_disk_and_go_with_the_system() -> None:
    with ToolSystem() as system:
        tmp = system.spawn(Hog, name="h").call("tmp")
        runtime = system.runtime_dir
        root = tools_tmp_root(runtime)
        assert runtime and root and tmp.startswith(root + os.sep)
        if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):
            assert runtime.startswith("/dev/shm/")       # the churning state: in RAM
            assert not root.startswith("/dev/shm/")      # what tools write: on disk
    assert not os.path.exists(runtime) and not os.path.exists(root)


def test_a_crashed_tools_temp_dir_goes_whether_it_is_empty_or_not(system: ToolSystem) -> None:
    for write in (False, True):
        t = system.spawn(Hog, name=f"h{int(write)}")
        tmp = t.call("tmp", write=write)
        assert os.path.isdir(tmp) and bool(os.listdir(tmp)) is write
        pid = t.call("pid")
        os.kill(pid, 9)
        wait_dead(pid)
        wait_until(lambda tmp=tmp: not os.path.exists(tmp), timeout=10, what=f"{tmp} removed")
        assert t.call("tmp", write=False) != tmp  # the new process has its own


def test_memory_of_the_tools_children_counts_against_its_limit(system: ToolSystem) -> None:
    t = system.spawn(Hog, name="h", limits={"memory_mb": 60}, on_limit="restart")
    kid = t.call("hungry_child", mb=100)
    wait_until(lambda: t.status().restarts == 1, timeout=20, what="restart for the child's memory")
    assert "memory_mb" in (t.status().last_error or "")
    wait_dead(kid)  # and the child went with it


def test_the_process_table_reads_only_new_processes_and_all_now_and_then() -> None:
    from supervisors.resources import usage

    table = usage.ProcessTable()
    reads: list[int] = []
    real = usage.parent_pid

    def counting(pid: int) -> int | None:
        reads.append(pid)
        return real(pid)

    usage.parent_pid = counting  # type: ignore[assignment]
    try:
        first = table.children()  # a full read
        assert os.getpid() in first.get(os.getppid(), [])
        everyone = len(reads)
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
        try:
            reads.clear()
            second = table.children()
            assert child.pid in second.get(os.getpid(), [])
            assert child.pid in reads and len(reads) < everyone  # the new ones only
        finally:
            child.kill()
            child.wait()
        assert child.pid not in table.children().get(os.getpid(), [])  # gone, and forgotten
        most = 0
        for _ in range(table.FULL_EVERY):
            reads.clear()
            table.children()
            most = max(most, len(reads))
        assert most >= everyone - 5  # one full read again (give or take processes that ended)
    finally:
        usage.parent_pid = real  # type: ignore[assignment]
