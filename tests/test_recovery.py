"""Recovery: circuit breakers, transient retries, failure records, persisted context (issue 13)."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys

import pytest

from supervisors import (
    Backoff,
    BadArguments,
    Breaker,
    ConfigError,
    Policy,
    Retry,
    SpecError,
    ToolError,
    ToolState,
    ToolSystem,
    ToolUnavailable,
)
from tests.helpers import wait_dead, wait_until
from tests.recovery_tools import Flaky, InitOnce, Keeper, Relay

pytestmark = pytest.mark.timeout(90)
NOW = Backoff.none()


def sigkill(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
    wait_dead(pid)


def running(handle, restarts: int | None = None) -> bool:
    st = handle.status()
    return st.state is ToolState.RUNNING and (restarts is None or st.restarts >= restarts)


# ------------------------------------------------------------------ breaker: config
@pytest.mark.parametrize("field,value", [("threshold", 0), ("window", -1.0), ("open_for", float("nan")),
                                         ("successes", 0), ("half_open_calls", "one"),
                                         ("window", 2.5)])
def test_breaker_with_nonsense_values_is_refused_naming_the_field(field, value) -> None:
    kwargs = {field: value}
    if field == "window" and value == 2.5:
        kwargs["count_based"] = True  # a count window must be a whole number of calls
    with pytest.raises(SpecError, match=f"breaker.{field}"):
        Breaker(**kwargs)


def test_breaker_in_a_config_file_is_checked(tmp_path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[[supervisor]]\nname = "w"\nbreaker = { threshold = -3 }\n')
    with pytest.raises(ConfigError, match="threshold"):
        ToolSystem.from_config(bad)
    good = tmp_path / "good.toml"
    good.write_text('[[supervisor]]\nname = "w"\nbreaker = { threshold = 2, open_for = 1.5 }\n'
                    'transient = ["ConnectionError"]\nretry = { attempts = 4 }\n')
    system = ToolSystem.from_config(good)
    policy = Policy.from_dict(system.config_specs[0]["policy"])
    assert policy.breaker == Breaker(threshold=2, open_for=1.5)
    assert policy.transient == ("ConnectionError",) and policy.retry.attempts == 4


def test_data_dir_in_a_config_file_and_bad_values(tmp_path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[system]\ndata_dir = "{tmp_path / "state"}"\n')
    assert ToolSystem.from_config(cfg).data_dir == str(tmp_path / "state")
    cfg.write_text("[system]\ndata_dir = 5\n")
    with pytest.raises(ConfigError, match="data_dir = 5 is invalid"):
        ToolSystem.from_config(cfg)
    with pytest.raises(ValueError, match="data_dir=3"):
        ToolSystem(data_dir=3)
    assert ToolSystem(data_dir=False).data_dir is None


# ------------------------------------------------------------------ breaker: behaviour
def test_breaker_opens_rejects_at_once_half_opens_and_closes(tmp_path) -> None:
    breaker = Breaker(threshold=3, window=30.0, open_for=0.6, successes=2, half_open_calls=1)
    with ToolSystem(data_dir=tmp_path) as system:
        w = system.supervise("w", Policy(backoff=NOW, breaker=breaker))
        t = w.spawn(Flaky, name="flaky")
        for _ in range(5):  # the caller's own mistakes do not count
            with pytest.raises(BadArguments):
                t.call("ok", nonsense=1)
        assert t.status().breaker["state"] == "closed"
        for _ in range(3):
            with pytest.raises(ToolError, match="boom"):
                t.call("fail")
        with pytest.raises(ToolUnavailable, match=r"breaker .*w/flaky.* open.*again") as info:
            t.call("ok")
        assert info.value.type == "BreakerOpen"
        st = wait_until(lambda: _breaker_is(t, "open"), what="the breaker open in status()")
        assert st.breaker["retry_at"] > 0
        node = next(c for c in system.tree()["children"] if c["name"] == "w")["children"][0]
        assert node["breaker"]["state"] == "open"
        wait_until(lambda: any(e["event"] == "breaker open" and e["path"] == "w/flaky"
                               for e in system.events()), what="a breaker event")
        # after open_for, one trial goes through; two successes close it
        assert wait_until(lambda: _try(t, "ok"), timeout=10, what="a trial call") == "ok"
        wait_until(lambda: _breaker_is(t, "half_open"), what="half-open in status()")
        assert t.call("ok") == "ok"
        wait_until(lambda: _breaker_is(t, "closed"), what="closed in status()")


def _breaker_is(t, state):
    st = t.status()
    return st if st.breaker["state"] == state else None


def _try(t, cmd):
    try:
        return t.call(cmd)
    except ToolUnavailable:
        return None


def test_a_failed_trial_opens_the_breaker_again(tmp_path) -> None:
    breaker = Breaker(threshold=2, open_for=0.4, successes=1)
    with ToolSystem(data_dir=tmp_path) as system:
        t = system.supervise("w", Policy(backoff=NOW, breaker=breaker)).spawn(Flaky, name="f")
        for _ in range(2):
            with pytest.raises(ToolError):
                t.call("fail")

        def trial_failed():
            try:
                t.call("fail")
            except ToolUnavailable:
                return False
            except ToolError:
                return True
        wait_until(trial_failed, timeout=10, what="a trial")
        with pytest.raises(ToolUnavailable, match="breaker"):
            t.call("ok")


def test_crashes_count_for_the_breaker_and_it_stays_open_across_restarts(tmp_path) -> None:
    breaker = Breaker(threshold=2, window=60.0, open_for=60.0)
    with ToolSystem(data_dir=tmp_path) as system:
        t = system.supervise("w", Policy(max_restarts=10, backoff=NOW, breaker=breaker)).spawn(
            Flaky, name="f")
        for n in (1, 2):
            sigkill(t.call("pid"))
            wait_until(lambda n=n: running(t, n), what="the restart")
        with pytest.raises(ToolUnavailable, match="breaker"):
            t.call("ok")
        wait_until(lambda: _breaker_is(t, "open"), what="open in status()")


def test_the_breaker_shields_a_tool_from_other_tools_too(tmp_path) -> None:
    breaker = Breaker(threshold=2, open_for=60.0)
    with ToolSystem(data_dir=tmp_path) as system:
        w = system.supervise("w", Policy(backoff=NOW, breaker=breaker))
        w.spawn(Flaky, name="f")
        relay = w.spawn(Relay, name="r")
        for _ in range(2):
            got = relay.call("relay", path="w/f", cmd="fail")
            assert got["class"] == "ToolError" and "boom" in got["message"]
        got = relay.call("relay", path="w/f", cmd="ok")
        assert got["class"] == "ToolUnavailable" and got["type"] == "BreakerOpen", got


def test_per_command_breakers_keep_other_commands_open(tmp_path) -> None:
    breaker = Breaker(threshold=2, open_for=60.0, per_command=True)
    with ToolSystem(data_dir=tmp_path) as system:
        t = system.supervise("w", Policy(backoff=NOW, breaker=breaker)).spawn(Flaky, name="f")
        for _ in range(2):
            with pytest.raises(ToolError):
                t.call("fail")
        with pytest.raises(ToolUnavailable, match="breaker"):
            t.call("fail")
        assert t.call("ok") == "ok"
        wait_until(lambda: t.status().breaker.get("commands", {}).get("fail", {}).get("state") == "open",
                   what="the command's breaker in status()")


# ------------------------------------------------------------------ transient retries
RETRY = Policy(backoff=NOW, transient=("ConnectionError",),
               retry=Retry(attempts=4, initial=0.01, maximum=0.05, jitter=0.5))


def test_idempotent_commands_are_retried_for_transient_errors(tmp_path) -> None:
    with ToolSystem(data_dir=tmp_path) as system:
        t = system.supervise("w", RETRY).spawn(Flaky, name="f")
        assert t.call("lookup", fail_times=2) == 3
        assert t.call("ran_count", name="lookup") == 3
        with pytest.raises(ToolError, match="attempt 8"):  # 4 more attempts, then it gives up
            t.call("lookup", fail_times=10)
        assert t.call("ran_count", name="lookup") == 8


def test_non_idempotent_commands_are_never_retried(tmp_path) -> None:
    with ToolSystem(data_dir=tmp_path) as system:
        t = system.supervise("w", RETRY).spawn(Flaky, name="f")
        with pytest.raises(ToolError, match="ConnectionError"):
            t.call("charge", fail_times=1)
        assert t.call("ran_count", name="charge") == 1
        with pytest.raises(ToolError, match="boom"):
            t.call("fail")  # not a transient type
        assert t.call("ran_count", name="fail") == 1


def test_retries_on_the_asyncio_path_and_between_tools(tmp_path) -> None:
    with ToolSystem(data_dir=tmp_path) as system:
        w = system.supervise("w", RETRY)
        t = w.spawn(Flaky, name="f")
        relay = w.spawn(Relay, name="r")
        assert asyncio.run(t.acall("lookup", fail_times=1)) == 2
        got = relay.call("relay", path="w/f", cmd="lookup", args={"fail_times": 4})
        assert got == {"ok": True, "value": 5}  # runs 3 and 4 failed, run 5 answered


CRASH_RETRY = Policy(max_restarts=20, period=5.0, backoff=NOW, transient=("ToolUnavailable",),
                    retry=Retry(attempts=3, initial=0.01, maximum=0.05, jitter=0.5))


def runs(mark) -> int:
    return int(mark.read_text())


def test_an_idempotent_call_its_tool_died_in_runs_again_on_the_next_instance(tmp_path) -> None:
    """With ToolUnavailable transient: the host's call and acall, and a tool's call, each get
    the answer of the restarted instance; a command that is not idempotent never runs twice."""
    with ToolSystem(data_dir=tmp_path / "data") as system:
        w = system.supervise("w", CRASH_RETRY)
        t = w.spawn(Flaky, name="f")
        relay = w.spawn(Relay, name="r")
        mark = tmp_path / "lookup"
        assert t.call("die_in_lookup", mark=str(mark), timeout=20) == 2
        assert t.status().restarts == 1
        mark2 = tmp_path / "lookup-async"
        assert asyncio.run(t.acall("die_in_lookup", mark=str(mark2), timeout=20)) == 2
        mark3 = tmp_path / "lookup-relay"
        got = relay.call("relay", path="w/f", cmd="die_in_lookup", args={"mark": str(mark3)})
        assert got == {"ok": True, "value": 2}
        charge = tmp_path / "charge"
        with pytest.raises(ToolUnavailable, match="may or may not have run"):
            t.call("die_in_charge", mark=str(charge), timeout=20)
        wait_until(lambda: running(t), 20, what="the restart after die_in_charge")
        assert runs(charge) == 1
        gone = tmp_path / "always"     # every run dies: run once more, then the error
        with pytest.raises(ToolUnavailable, match="may or may not have run"):
            t.call("die_in_lookup", mark=str(gone), deaths=99, timeout=30)
        assert runs(gone) == 2


def test_a_call_its_tool_died_in_is_not_run_again_unless_the_policy_says_so(tmp_path) -> None:
    """Only a policy naming ToolUnavailable reruns: not ConnectionError alone, and not a base
    class such as Exception (a rerun is asked for by name)."""
    broad = Policy(max_restarts=20, period=5.0, backoff=NOW, transient=("Exception",),
                   retry=Retry(attempts=3, initial=0.01, maximum=0.05, jitter=0.5))
    with ToolSystem(data_dir=tmp_path / "data") as system:
        for policy, name in ((RETRY, "w"), (broad, "b")):
            t = system.supervise(name, policy).spawn(Flaky, name="f")
            mark = tmp_path / f"lookup-{name}"
            with pytest.raises(ToolUnavailable, match="may or may not have run"):
                t.call("die_in_lookup", mark=str(mark), timeout=20)
            assert runs(mark) == 1


def test_call_ids_differ_between_processes() -> None:
    """A busy marker names the call it runs by id alone: two callers must never share one."""
    from actors.busy import call_ids

    first = next(call_ids())
    assert first >> 32 == os.getpid() and first & 0xFFFFFFFF == 1
    child = subprocess.run([sys.executable, "-c", "from actors.busy import call_ids; "
                            "import os; print(next(call_ids()) >> 32 == os.getpid())"],
                           capture_output=True, text=True, timeout=30,
                           cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert child.stdout.strip() == "True", child.stderr


# ------------------------------------------------------------------ diagnostics
def test_every_failure_becomes_a_record(tmp_path) -> None:
    marker = tmp_path / "marker"
    with ToolSystem(data_dir=tmp_path) as system:
        w = system.supervise("w", Policy(max_restarts=10, backoff=NOW))
        t = w.spawn(Flaky, name="f")
        with pytest.raises(ToolError):
            t.call("fail", message="disk full")
        with pytest.raises(ToolUnavailable):
            t.call("slow", seconds=1.0, timeout=0.2)
        # (a record the tool sends in the instant before a SIGKILL may be lost with it)
        wait_until(lambda: "timeout" in [r.kind for r in t.errors()], what="the timeout record")
        sigkill(t.call("pid"))
        wait_until(lambda: running(t, 1), what="the restart")
        slow = system.supervise("o", Policy(max_restarts=5, backoff=Backoff(initial=0.5, jitter=0.0)))
        once = slow.spawn(InitOnce, name="once", config={"marker": str(marker)})
        with pytest.raises(ToolUnavailable):
            once.call("crash")

        def kinds(h):
            return [r.kind for r in h.errors()]
        try:
            wait_until(lambda: {"command_error", "timeout", "crash"} <= set(kinds(t)),
                       what="records of f")
        except AssertionError:
            raise AssertionError(f"records of f: {t.errors()}")
        records = {r.kind: r for r in t.errors()}
        err = records["command_error"]
        assert (err.error_type, err.message) == ("ValueError", "disk full")
        assert "raise ValueError" in err.traceback and err.tool == "w/f"
        assert err.action and err.time > 0 and err.usage.get("memory_mb", 0) > 0
        assert records["timeout"].error_type == "CallTimeout"
        crash = records["crash"]
        assert crash.error_type == "ProcessExited" and crash.action == "restarted"
        assert crash.restarts == 0
        wait_until(lambda: "init_failure" in kinds(once), what="the init failure record")
        init = next(r for r in once.errors() if r.kind == "init_failure")
        assert "license server" in init.message and "RuntimeError" == init.error_type
        assert init.traceback and init.action


def test_a_quota_action_is_recorded_with_the_figures(tmp_path) -> None:
    from tests.tools import Hog

    with ToolSystem(policy=Policy(backoff=NOW), sample_every=0.1, data_dir=tmp_path) as system:
        t = system.spawn(Hog, name="h", limits={"memory_mb": 60}, on_limit="restart")
        t.call("leak", mb=80)
        wait_until(lambda: any(r.kind == "quota" for r in t.errors()), what="the quota record")
        rec = next(r for r in t.errors() if r.kind == "quota")
        assert rec.error_type == "LimitExceeded" and "memory_mb" in rec.message
        assert rec.action == "restarted"
        wait_until(lambda: next(r for r in t.errors() if r.kind == "quota").usage.get(
            "memory_mb", 0) > 60, what="the figures in the record")


def test_records_survive_a_restart_of_the_whole_system(tmp_path) -> None:
    with ToolSystem(data_dir=tmp_path) as system:
        t = system.supervise("w", Policy(backoff=NOW)).spawn(Flaky, name="f")
        with pytest.raises(ToolError):
            t.call("fail", message="remember me")
        wait_until(lambda: _stored_errors(tmp_path), what="the record in the store")
    with ToolSystem(data_dir=tmp_path) as system:
        t = system.supervise("w", Policy(backoff=NOW)).spawn(Flaky, name="f")
        assert [r.message for r in t.errors()] == ["remember me"]


def test_records_are_bounded_per_tool(tmp_path) -> None:
    with ToolSystem(data_dir=tmp_path) as system:
        t = system.supervise("w", Policy(backoff=NOW)).spawn(Flaky, name="f")
        for i in range(120):
            with pytest.raises(ToolError):
                t.call("fail", message=f"n{i}")
        wait_until(lambda: t.errors() and t.errors()[-1].message == "n119", what="the last record")
        records = t.errors()
        assert len(records) == 100 and records[0].message == "n20"


def test_errors_command_line(tmp_path) -> None:
    with ToolSystem(data_dir=tmp_path) as system:
        t = system.supervise("w", Policy(backoff=NOW)).spawn(Flaky, name="f")
        with pytest.raises(ToolError):
            t.call("fail", message="printer on fire")
        wait_until(lambda: _stored_errors(tmp_path), what="the record in the store")
    out = subprocess.run([sys.executable, "-m", "supervisors", "errors", "w/f",
                          "--data-dir", str(tmp_path)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert "printer on fire" in out.stdout and "command_error" in out.stdout
    none = subprocess.run([sys.executable, "-m", "supervisors", "errors", "w/nope",
                           "--data-dir", str(tmp_path)], capture_output=True, text=True, timeout=30)
    assert none.returncode == 0 and "no failures recorded" in none.stdout


def _stored_errors(data_dir) -> int:
    db = sqlite3.connect(os.path.join(data_dir, "toolvisor.db"))
    try:
        return db.execute("select count(*) from failures").fetchone()[0]
    except sqlite3.Error:
        return 0
    finally:
        db.close()


# ------------------------------------------------------------------ context and checkpoints
def test_context_reads_fall_back_to_ancestors_and_writes_are_the_tools_own(tmp_path) -> None:
    with ToolSystem(data_dir=tmp_path) as system:
        system.set_context(region="eu", team="all")
        w = system.supervise("w", Policy(backoff=NOW))
        w.set_context(team="search")
        t = w.spawn(Keeper, name="k")
        assert t.call("get", key="region") == "eu"
        assert t.call("get", key="team") == "search"
        t.call("put", key="team", value="mine")
        assert t.call("get", key="team") == "mine"
        assert t.call("own") == {"team": "mine"}
        assert system.context_of("w") == {"team": "search"}


def test_an_acknowledged_checkpoint_survives_sigkill_of_tool_and_store(tmp_path) -> None:
    with ToolSystem(data_dir=tmp_path) as system:
        t = system.supervise("w", Policy(backoff=NOW)).spawn(Keeper, name="k")
        t.call("put", key="done", value=41)
        t.call("put", key="done", value=42)
        store = system.tool("_store")
        sigkill(store.status().pid)  # right after the acknowledgement
        t.call("put_unsaved", key="scratch", value=1)
        sigkill(t.call("pid"))
        wait_until(lambda: running(t, 1), what="the restart")
        assert t.call("get", key="done") == 42
        assert t.call("get", key="scratch") is None  # never checkpointed
        assert t.call("restored") is True


def test_state_survives_a_whole_system_restart_with_the_same_data_dir(tmp_path) -> None:
    script = ("import sys; sys.path.insert(0, '.');"
              "from supervisors import ToolSystem;"
              "from tests.recovery_tools import Keeper;"
              "s = ToolSystem(data_dir=sys.argv[1]).start();"
              "t = s.supervise('w').spawn(Keeper, name='k');"
              "t.call('put', key='orders', value=[1, 2, 3]);"
              "print('acked', flush=True);"
              "import time; time.sleep(60)")
    host = subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], stdout=subprocess.PIPE,
                            text=True, cwd=os.path.dirname(os.path.dirname(__file__)))
    try:
        assert host.stdout.readline().strip() == "acked"
        host.kill()  # SIGKILL of the whole host right after the ack
        host.wait(10)
    finally:
        if host.poll() is None:
            host.kill()
            host.wait(10)
    with ToolSystem(data_dir=tmp_path) as system:
        t = system.supervise("w").spawn(Keeper, name="k")
        assert t.call("get", key="orders") == [1, 2, 3]


def test_a_checkpoint_with_an_unsendable_value_is_refused_at_checkpoint(tmp_path) -> None:
    with ToolSystem(data_dir=tmp_path) as system:
        t = system.supervise("w", Policy(backoff=NOW)).spawn(Keeper, name="k")
        t.call("put", key="fine", value=1)
        with pytest.raises(ToolError, match="bad") as info:
            t.call("put_object")
        assert info.value.type == "CheckpointError"
        assert system.context_of("w/k") == {"fine": 1}


def test_snapshots_expiry_and_cleanup_of_a_removed_tool(tmp_path) -> None:
    with ToolSystem(data_dir=tmp_path) as system:
        w = system.supervise("w", Policy(backoff=NOW))
        t = w.spawn(Keeper, name="k")
        t.call("put", key="v", value=1)
        system.snapshot("before")
        t.call("put", key="v", value=2)
        assert "before" in system.snapshots()
        system.restore_snapshot("before")
        t.restart()
        assert t.call("get", key="v") == 1
        t.call("put", key="short", value="x", expires_in=0.3)
        wait_until(lambda: "short" not in system.context_of("w/k"), what="expiry")
        w.remove("k")
        assert system.context_of("w/k") == {}


def test_a_corrupted_store_file_is_reported_and_tools_start_without_state(tmp_path) -> None:
    (tmp_path / "toolvisor.db").write_bytes(b"this is not a database at all" * 100)
    with ToolSystem(data_dir=tmp_path) as system:
        assert "toolvisor.db" in system.store_error and "not a database" in system.store_error
        t = system.supervise("w", Policy(backoff=NOW)).spawn(Keeper, name="k")
        assert t.call("get", key="x", default="none") == "none"
        assert t.call("restored") is False
        with pytest.raises(ToolError, match="not a database") as info:
            t.call("put", key="x", value=1)
        assert info.value.type == "CheckpointError"
        wait_until(lambda: any(r.kind == "context" for r in t.errors()), what="a context record")


def test_a_locked_store_file_is_reported_and_tools_start_without_state(tmp_path) -> None:
    path = tmp_path / "toolvisor.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("create table x (a)")
    holder.execute("begin exclusive")
    try:
        with ToolSystem(data_dir=tmp_path) as system:
            assert "locked" in system.store_error
            t = system.supervise("w", Policy(backoff=NOW)).spawn(Keeper, name="k")
            assert t.call("restored") is False
    finally:
        holder.execute("rollback")
        holder.close()


@pytest.mark.parametrize("call_path", ["thespian"], indirect=True)
def test_breaker_retry_and_checkpoint_on_the_thespian_call_path(tmp_path, call_path) -> None:
    policy = Policy(backoff=NOW, breaker=Breaker(threshold=3, open_for=60.0),
                    transient=("ConnectionError",), retry=Retry(attempts=3, initial=0.01))
    with ToolSystem(data_dir=tmp_path) as system:
        assert system.call_path == "thespian"
        w = system.supervise("w", policy)
        t = w.spawn(Flaky, name="f")
        assert t.call("lookup", fail_times=2) == 3  # retried; its 2 failures count for the breaker
        k = w.spawn(Keeper, name="k")
        k.call("put", key="x", value="kept")
        sigkill(k.call("pid"))
        wait_until(lambda: running(k, 1), what="the restart")
        assert k.call("get", key="x") == "kept"
        with pytest.raises(ToolError, match="boom"):
            t.call("fail")
        with pytest.raises(ToolUnavailable, match="breaker"):
            t.call("ok")
