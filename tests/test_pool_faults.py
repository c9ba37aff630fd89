"""Pools under faults: calls go around instances that are restarting, paused, stopped or
being removed; scale() calls do not collide; names and autoscalers stay consistent."""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from pathlib import Path

import pytest

from actors.errors import CallTimeout, NotFound, SpecError, ToolError
from supervisors import Backoff, Policy, ToolSystem
from supervisors.host.pools import PoolHandle
from supervisors.tree.config import ConfigError
from tests.conftest import FAST
from tests.test_pools import _parallel, _wait

WORKER = "tests.pool_tools:Worker"
SLOW_BACK = Policy(max_restarts=10, period=5.0, backoff=Backoff(initial=8.0, maximum=8.0, jitter=0.0))

pytestmark = pytest.mark.timeout(90)


def _fetch_config(tmp_path: Path, *extras: str) -> Path:
    """A config with supervisor ``w`` and one tool ``fetch`` per extra (its extra lines)."""
    tools = "".join(f'[[supervisor.tool]]\nname = "fetch"\nactor = "{WORKER}"\n{extra}\n'
                    for extra in extras)
    cfg = tmp_path / "tree.toml"
    cfg.write_text(f'[[supervisor]]\nname = "w"\n{tools}')
    return cfg


def _state(pool: PoolHandle, k: int) -> str:
    return pool.status().instances[k - 1].state.value


def test_calls_go_around_an_instance_that_is_restarting() -> None:
    with ToolSystem(policy=FAST) as system:
        pool = system.supervise("w", policy=SLOW_BACK).spawn(WORKER, name="fetch", replicas=3)
        pids = [i.pid for i in pool.status().instances]
        os.kill(pids[1], signal.SIGKILL)
        _wait(lambda: _state(pool, 2) == "restarting", what="#2 restarting")
        served = [pool.call("work", timeout=20) for _ in range(6)]
        assert set(served) == {pids[0], pids[2]}
        # all six were served by the others while #2 still waited out its 8 s backoff
        assert _state(pool, 2) == "restarting"
        caller = system.supervise("r", policy=FAST).spawn("tests.pool_tools:Caller", name="c")
        assert set(caller.call("spread", path="w/fetch", n=4)) == {pids[0], pids[2]}
        assert _state(pool, 2) == "restarting"


def test_calls_go_around_a_paused_instance(system: ToolSystem) -> None:
    pool = system.supervise("w", policy=FAST).spawn(WORKER, name="fetch", replicas=3)
    pids = [i.pid for i in pool.status().instances]
    system.tool("w/fetch#3").pause()
    served = [pool.call("work", timeout=5) for _ in range(6)]
    assert set(served) == {pids[0], pids[1]}
    caller = system.supervise("r", policy=FAST).spawn("tests.pool_tools:Caller", name="c")
    assert set(caller.call("spread", path="w/fetch", n=4)) == {pids[0], pids[1]}


def test_a_call_right_after_an_instance_stops_goes_to_another(system: ToolSystem) -> None:
    pool = system.supervise("w", policy=FAST).spawn(WORKER, name="fetch", replicas=2)
    pids = [i.pid for i in pool.status().instances]
    pool.call("work")  # (the host has listed the pool)
    system.tool("w/fetch#2").stop()
    assert [pool.call("work", timeout=5) for _ in range(4)] == [pids[0]] * 4
    system.tool("w/fetch#1").stop()
    with pytest.raises(ToolError, match="stopped"):  # no instance serves: the error as before
        pool.call("work", timeout=5)


def test_a_tool_spreads_its_calls_over_every_instance(system: ToolSystem) -> None:
    pool = system.supervise("w", policy=FAST).spawn(WORKER, name="fetch", replicas=2)
    caller = system.supervise("r", policy=FAST).spawn("tests.pool_tools:Caller", name="c")
    served = caller.call("spread", path="w/fetch", n=8)
    assert set(served) == {i.pid for i in pool.status().instances}


@pytest.mark.timeout(120)
def test_scaling_down_under_load_loses_no_call_and_runs_none_twice(
        system: ToolSystem, tmp_path: Path) -> None:
    """A pool shrinks and grows under host and tool load: no call fails, and calls resent
    after a scale-down ('moved', or no answer from a shut door) do not run twice (each
    call appends its own token to a file)."""
    out = str(tmp_path / "notes.txt")
    pool = system.supervise("w", policy=FAST).spawn(WORKER, name="fetch", replicas=4)
    caller = system.supervise("r", policy=FAST).spawn("tests.pool_tools:Caller", name="c")
    stop = threading.Event()
    ok: list[str] = []
    errors: list[str] = []

    def load(k: int) -> None:
        i = 0
        while not stop.is_set():
            token = f"h{k}-{i}"
            i += 1
            try:
                pool.call("note", path=out, token=token, seconds=0.003, timeout=10)
                ok.append(token)
            except ToolError as exc:
                errors.append(f"{token}: {type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=load, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    from_tool: dict = {}
    tool_thread = threading.Thread(target=lambda: from_tool.update(
        caller.call("notes", path="w/fetch", file=out, prefix="t", seconds=6.0, timeout=40)))
    tool_thread.start()
    try:
        end = time.monotonic() + 6.0
        while time.monotonic() < end:
            pool.scale(1)
            pool.scale(4)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
        tool_thread.join(40)
    assert errors == [] and from_tool["failed"] == 0, (errors[:3], from_tool["errors"])
    with open(out) as f:
        ran = f.read().splitlines()
    succeeded = ok + from_tool["ok"]
    assert len(succeeded) > 100 and len(from_tool["ok"]) > 50
    twice = sorted({t for t in ran if ran.count(t) > 1}) if len(ran) != len(set(ran)) else []
    assert twice == [], f"{len(twice)} calls ran twice: {twice[:5]}"
    assert sorted(ran) == sorted(succeeded)  # nothing ran that was not answered, nothing lost


def test_concurrent_scale_calls_take_turns(system: ToolSystem) -> None:
    pool = system.supervise("w", policy=FAST).spawn(WORKER, name="fetch", replicas=2)
    for a, b in ((4, 6), (1, 3)):
        out = _parallel(lambda i, a=a, b=b: pool.scale((a, b)[i]).replicas, 2)
        assert all(isinstance(r, int) for r in out), out
        final = pool.status().replicas
        assert final in (a, b)
        scaled = [e["detail"] for e in system.events() if e["path"] == "w/fetch"
                  and e["event"] == "scaled"]
        assert scaled[-1].split(":")[0].endswith(f"-> {final}"), scaled
        assert len(pool.status().instances) == final == len(system.supervisor("w").children())


def test_an_instance_that_fails_to_start_in_scale_leaves_nothing_behind(
        system: ToolSystem, tmp_path: Path) -> None:
    flag = tmp_path / "refuse"
    w = system.supervise("w", policy=FAST)
    pool = w.spawn("tests.pool_tools:Flaky", name="fl", replicas=2, config={"refuse_if": str(flag)})
    flag.touch()
    with pytest.raises(ToolError, match="init refused"):
        pool.scale(3)
    with pytest.raises(NotFound) as err:
        system.tool("w/fl#3")
    assert "fl#1, fl#2" in str(err.value)
    assert pool.status().replicas == 2
    assert pool.stop().state.value == "stopped"


def test_a_pool_and_a_plain_tool_cannot_share_a_name(system: ToolSystem, tmp_path: Path) -> None:
    w = system.supervise("w", policy=FAST)
    w.spawn(WORKER, name="fetch", replicas=2)
    with pytest.raises(ToolError, match=r"w/fetch is a pool .*already exists"):
        w.spawn(WORKER, name="fetch")
    w.spawn(WORKER, name="single")
    with pytest.raises(ToolError, match=r"w/single already exists"):
        w.spawn(WORKER, name="single", replicas=2)
    with pytest.raises(ToolError, match=r"w/fetch already exists \(a pool of 2: fetch#1, fetch#2\)"):
        w.spawn(WORKER, name="fetch", replicas=3)
    assert [c.name for c in w.children()] == ["fetch#1", "fetch#2", "single"]
    assert isinstance(system.tool("w/fetch"), PoolHandle)
    with pytest.raises(ConfigError, match=r"a pool and a single tool both named 'fetch'"):
        ToolSystem.from_config(_fetch_config(tmp_path, "replicas = 2", ""))


def test_an_autoscaler_ends_with_its_supervisor(system: ToolSystem) -> None:
    w = system.supervise("w", policy=FAST)
    w.spawn(WORKER, name="fetch", replicas={"min": 1, "max": 3, "interval": 0.2, "quiet": 1.0,
                                            "window": 1.0})
    assert any(t.name == "autoscale w/fetch" for t in threading.enumerate())
    system.root.remove("w")
    _wait(lambda: not any(t.name == "autoscale w/fetch" for t in threading.enumerate()),
          what="the autoscaler to end")
    pool = system.supervise("w", policy=FAST).spawn(WORKER, name="fetch", replicas=3)
    assert pool.status().autoscale is None and pool.status().replicas == 3


def test_scale_checks_n_against_an_autoscaled_pools_bounds(system: ToolSystem) -> None:
    pool = system.root.spawn(WORKER, name="auto", replicas={"min": 1, "max": 3, "quiet": 60})
    with pytest.raises(SpecError) as err:
        pool.scale(5)
    assert "n=5" in str(err.value) and "replicas.max = 3" in str(err.value)
    assert pool.scale(2).replicas == 2
    with pytest.raises(SpecError) as err:
        pool.scale(2.5)
    assert str(err.value).startswith("n=2.5") and "table" not in str(err.value)


@pytest.mark.parametrize("value", [{}, {"min": 2}, {"min": 10}, {"target_busy": 0.5}])
def test_an_autoscaling_table_needs_its_max(value) -> None:
    from supervisors.tree.pools import check_replicas

    with pytest.raises(SpecError) as err:
        check_replicas(value)
    assert str(err.value).startswith("replicas.max") and "missing" in str(err.value)


@pytest.mark.parametrize("name", ["w/fetch#", "w/fetch#-1", "w/fetch#abc"])
def test_a_malformed_instance_name_is_refused_at_once(system: ToolSystem, name: str) -> None:
    system.supervise("w", policy=FAST).spawn(WORKER, name="fetch", replicas=2)
    with pytest.raises(NotFound) as err:
        system.tool(name)
    assert name in str(err.value) and "fetch#1, fetch#2" in str(err.value)


def test_instance_k_checks_k(system: ToolSystem) -> None:
    pool = system.supervise("w", policy=FAST).spawn(WORKER, name="fetch", replicas=2)
    assert pool.instance(2).call("work") == pool.status().instances[1].pid
    for k in (-1, 0, "x", True, 2.0):
        with pytest.raises(SpecError) as err:
            pool.instance(k)
        assert str(err.value).startswith(f"k={k!r}")
    with pytest.raises(NotFound, match="fetch#1, fetch#2"):
        pool.instance(3)


def test_a_size_that_cannot_fit_is_refused_before_anything_starts(system: ToolSystem) -> None:
    pool = system.supervise("w", policy=FAST).spawn(WORKER, name="fetch", replicas=2)
    with pytest.raises(SpecError) as err:
        pool.scale(10**9)
    assert str(err.value).startswith("n=1000000000") and "GiB available" in str(err.value)
    with pytest.raises(SpecError, match=r"^replicas=1000000000 .*GiB available"):
        system.supervisor("w").spawn(WORKER, name="huge", replicas=10**9)
    assert pool.status().replicas == 2 and len(system.supervisor("w").children()) == 2


def test_a_config_pool_that_cannot_fit_is_refused_as_it_loads(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"replicas = 1000000000 is invalid: would start"):
        ToolSystem.from_config(_fetch_config(tmp_path, "replicas = 1000000000"))


def test_in_flight_counts_a_batchs_calls(system: ToolSystem) -> None:
    pool = system.supervise("w", policy=FAST).spawn(WORKER, name="fetch", replicas=3)
    out: list = []
    t = threading.Thread(target=lambda: out.extend(pool.call_many([("work", {"seconds": 1.0})] * 9)))
    t.start()
    _wait(lambda: pool.status().in_flight == 9, 10, "the batch's 9 calls in flight (3 chunks of 3)")
    t.join(30)
    assert len(out) == 9 and pool.status().in_flight == 0


def test_a_stopped_pool_is_not_scaled_up_behind_its_operators_back(system: ToolSystem) -> None:
    """Scaling up a pool whose every instance is stopped would start instances that serve
    while the operator believes the pool stopped: it is refused, saying what to do."""
    pool = system.supervise("w", policy=FAST).spawn(WORKER, name="fetch", replicas=2)
    pool.stop()
    with pytest.raises(ToolError, match=r"w/fetch is stopped \(both instances\); scale\(4\) "
                                        r"would start 2 running instances beside them: "
                                        r"start the pool first \(pool.start\(\)\)"):
        pool.scale(4)
    assert [i.state.value for i in pool.status().instances] == ["stopped", "stopped"]
    assert pool.scale(1).replicas == 1  # scaling down a stopped pool is fine
    pool.start()
    assert pool.scale(3).replicas == 3
    assert {i.state.value for i in pool.status().instances} == {"running"}


def test_a_chunk_that_fails_as_a_whole_names_its_calls(system: ToolSystem) -> None:
    """call_many spreads a batch in chunks; a chunk that fails as a whole (here, its
    timeout) gives each of its calls an error of its own that says which calls went
    where."""
    pool = system.supervise("w", policy=FAST).spawn(WORKER, name="fetch", replicas=2)
    calls = [("work", {})] * 3 + [("work", {"seconds": 1.5})] * 3
    results = pool.call_many(calls, timeout=1.0)
    assert all(isinstance(r, int) for r in results[:3]), results
    late = results[3:]
    assert all(isinstance(e, CallTimeout) for e in late) and len({id(e) for e in late}) == 3
    for i, e in enumerate(late, 3):
        assert re.fullmatch(rf"\[w/fetch#\d\] call {i} of the 6 \(counting from 0\): calls 3-5 "
                            r"went to w/fetch#\d as one batch, which failed as a whole: no answer "
                            r"from w/fetch#\d to a batch of 3 calls within 1s", str(e)), str(e)


def test_a_chunks_errors_keep_the_class_and_details_of_the_error() -> None:
    from actors.errors import CheckpointError
    from supervisors.host.pools import _chunk_errors

    exc = CheckpointError("the store could not keep it", tool="w/fetch#2")
    exc.retry = {"attempts": 2}
    errors = _chunk_errors(exc, 3, 2, 6)
    assert [type(e) for e in errors] == [CheckpointError, CheckpointError]
    assert errors[0] is not errors[1] and all(e.retry == {"attempts": 2} for e in errors)
    assert str(errors[1]) == ("[w/fetch#2] call 4 of the 6 (counting from 0): calls 3-4 went to "
                              "w/fetch#2 as one batch, which failed as a whole: the store could "
                              "not keep it")
