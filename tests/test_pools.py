"""Pools: one name, N instances, least-busy routing, per-instance restarts, scale(), autoscaling."""

from __future__ import annotations

import asyncio
import math
import threading
import time
from pathlib import Path

import pytest

from actors.errors import NotFound, SpecError, ToolError, ToolUnavailable
from supervisors import Policy, ToolSystem
from supervisors.host.pools import PoolHandle, PoolStatus
from supervisors.tree.config import ConfigError
from supervisors.tree.pools import Autoscale, Sample, check_replicas, decide, is_quiet
from tests.conftest import FAST
from tests.pool_tools import Worker

WORKER = "tests.pool_tools:Worker"


def _wait(pred, seconds: float = 20.0, what: str = "condition"):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _parallel(fn, n: int) -> list:
    out: list = [None] * n

    def run(i: int) -> None:
        try:
            out[i] = fn(i)
        except Exception as exc:  # noqa: BLE001 - kept for the assertion
            out[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return out


# ------------------------------------------------------------------ bad input (no system)
@pytest.mark.parametrize("value", [0, -1, math.nan, 2.5, "4", True, None, math.inf])
def test_bad_replicas_name_field_and_value(value) -> None:
    with pytest.raises(SpecError) as err:
        check_replicas(value)
    assert "replicas=" in str(err.value) and repr(value) in str(err.value)


@pytest.mark.parametrize("value,field", [
    ({"min": 3, "max": 2}, "replicas.min"),
    ({"min": 1, "max": 4, "target_busy": 0}, "replicas.target_busy"),
    ({"min": 1, "max": 4, "target_busy": 1.5}, "replicas.target_busy"),
    ({"min": 1, "max": 4, "target_busy": math.nan}, "replicas.target_busy"),
    ({"min": 0, "max": 4}, "replicas.min"),
    ({"min": 1, "max": 4, "speed": 2}, "replicas.speed"),
])
def test_bad_autoscale_names_field_and_value(value, field) -> None:
    with pytest.raises(SpecError) as err:
        check_replicas(value)
    assert str(err.value).startswith(f"{field}=")


def test_autoscale_accepts_one_as_target() -> None:
    rule = check_replicas({"min": 1, "max": 8, "target_busy": 1})
    assert rule == Autoscale(1, 8, 1.0)


# ------------------------------------------------------------------ the autoscaling rule
RULE = Autoscale(min=1, max=8, target_busy=0.5, interval=0.5, quiet=5.0, window=4.0)


def test_decide_scales_up_when_busy_now() -> None:
    d = decide([Sample(0.0, 2, 0.9)], RULE, None)
    assert d is not None and d.size == 4 and "scale up 2 -> 4" in d.reason and "busy" in d.reason


def test_decide_scales_up_ahead_of_a_rising_trend() -> None:
    # work grows 0.2 busy instances per second; now 0.9 (needs 2 at 50 %): the trend says 3 soon
    history = [Sample(t * 0.5, 2, (0.5 + 0.1 * t) / 2) for t in range(5)]
    assert history[-1].busy * 2 < 1.0  # the pool is not saturated now
    d = decide(history, RULE, None)
    assert d is not None and d.size == 3 and "trend" in d.reason


def test_decide_waits_for_a_sustained_quiet_period_before_scaling_down() -> None:
    quiet = [Sample(t, 4, 0.05) for t in range(10)]
    assert all(is_quiet(s, RULE) for s in quiet)
    assert decide(quiet, RULE, quiet_since=8.0) is None          # quiet for 1 s only
    d = decide(quiet, RULE, quiet_since=3.0)                     # quiet for 6 s >= 5 s
    assert d is not None and d.size == 3 and "scale down 4 -> 3" in d.reason
    assert decide([Sample(0, 1, 0.0)], RULE, quiet_since=-100) is None  # never under min


def test_decide_keeps_a_steady_pool() -> None:
    assert decide([Sample(t, 2, 0.45) for t in range(6)], RULE, None) is None


# ------------------------------------------------------------------ pools, live
def test_pool_spawn_status_and_lookup(system: ToolSystem) -> None:
    w = system.supervise("w", policy=FAST)
    pool = w.spawn(Worker, name="fetch", replicas=4)
    assert isinstance(pool, PoolHandle)
    st = pool.status()
    assert isinstance(st, PoolStatus)
    assert st.name == "fetch" and st.path == "w/fetch" and st.kind == "pool" and st.replicas == 4
    assert [i.name for i in st.instances] == ["fetch#1", "fetch#2", "fetch#3", "fetch#4"]
    assert len({i.pid for i in st.instances}) == 4 and st.state.value == "running"
    found = system.tool("w/fetch")
    assert isinstance(found, PoolHandle)
    assert w.tool("fetch").path == "w/fetch" and isinstance(w.tool("fetch"), PoolHandle)
    two = system.tool("w/fetch#2")
    assert not isinstance(two, PoolHandle)
    assert two.call("work") == st.instances[1].pid
    with pytest.raises(NotFound) as err:
        system.tool("w/fetch#9")
    assert "w/fetch#9" in str(err.value) and "fetch#4" in str(err.value)
    names = [c["name"] for c in system.tree()["children"][0]["children"]]
    assert names == ["fetch#1", "fetch#2", "fetch#3", "fetch#4"]


def test_calls_go_to_the_instance_with_fewest_in_flight(system: ToolSystem) -> None:
    pool = system.root.spawn(Worker, name="fetch", replicas=4)
    pids = _parallel(lambda i: pool.call("work", seconds=1.0), 4)
    assert len(set(pids)) == 4, pids

    async def many() -> list[int]:
        return await asyncio.gather(*(pool.acall("work", seconds=1.0) for _ in range(4)))

    assert len(set(asyncio.run(many()))) == 4


def test_call_many_is_spread_and_gathered_in_order(system: ToolSystem) -> None:
    pool = system.root.spawn(Worker, name="fetch", replicas=3)
    items = [("work", {"seconds": 0.2})] * 5 + [("fail", {})] + [("work", {})] * 3
    out = pool.call_many(items)
    assert len(out) == 9
    assert isinstance(out[5], ToolError) and "worker failed" in str(out[5])
    pids = [p for k, p in enumerate(out) if k != 5]
    assert all(isinstance(p, int) for p in pids) and len(set(pids)) == 3
    served = sum(system.tool(f"fetch#{k}").call("served") for k in (1, 2, 3))
    assert served == 8


def test_failed_instance_restarts_alone_and_callers_go_elsewhere() -> None:
    policy = Policy(strategy="one_for_all", max_restarts=10, period=5.0, backoff=FAST.backoff)
    with ToolSystem(policy=FAST) as system:
        w = system.supervise("w", policy=policy)
        other = w.spawn(Worker, name="single")
        pool = w.spawn(Worker, name="fetch", replicas=3)
        before = {i.name: i.pid for i in pool.status().instances}
        single_pid = other.call("work")
        with pytest.raises(ToolUnavailable):
            system.tool("w/fetch#1").call("crash")
        # callers that arrive while #1 restarts are served by the others
        pids = [pool.call("work") for _ in range(6)]
        assert before["fetch#1"] not in pids
        st = _wait(lambda: (s := pool.status()).instances[0].pid not in (None, before["fetch#1"])
                   and s.instances[0].state.value == "running" and s, what="#1 back")
        assert st.instances[0].restarts == 1 and st.restarts == 1
        assert {i.name: i.pid for i in st.instances[1:]} == {k: v for k, v in before.items()
                                                              if k != "fetch#1"}
        assert other.call("work") == single_pid  # one_for_all did not touch the sibling


def test_scale_up_and_down_lets_calls_finish(system: ToolSystem) -> None:
    pool = system.root.spawn(Worker, name="fetch", replicas=2)
    st = pool.scale(4)
    assert st.replicas == 4 and len({i.pid for i in st.instances}) == 4
    results: list = []
    t = threading.Thread(target=lambda: results.extend(
        _parallel(lambda i: pool.call("work", seconds=1.0), 4)))
    t.start()
    _wait(lambda: pool.status().in_flight >= 4, what="4 calls in flight")
    st = pool.scale(1)
    t.join(30)
    assert len(results) == 4 and all(isinstance(r, int) for r in results), results
    assert st.replicas == 1 and [i.name for i in st.instances] == ["fetch#1"]
    assert isinstance(pool.call("work"), int)
    with pytest.raises(NotFound):
        system.tool("fetch#2")
    events = [e for e in system.events() if e["path"] == "fetch" and e["event"] == "scaled"]
    assert [e["detail"].split(":")[0] for e in events] == ["2 -> 4", "4 -> 1"]


def test_scale_bad_input(system: ToolSystem) -> None:
    pool = system.root.spawn(Worker, name="fetch", replicas=2)
    for n in (0, -1, 1.5, math.nan):
        with pytest.raises(SpecError, match=r"^n="):  # (scale's own argument, named as such)
            pool.scale(n)
    plain = system.root.spawn(Worker, name="plain")
    with pytest.raises(ToolError) as err:
        plain.scale(3)
    assert "plain" in str(err.value) and "not a pool" in str(err.value)
    with pytest.raises(SpecError, match=r"replicas=0"):
        system.root.spawn(Worker, name="zero", replicas=0)


def test_a_tool_calls_a_pool(system: ToolSystem) -> None:
    w = system.supervise("w", policy=FAST)
    pool = w.spawn(Worker, name="fetch", replicas=2)
    relay = w.spawn("tests.messaging_tools:Relay", name="relay")
    pids = {i.pid for i in pool.status().instances}
    assert relay.call("call", path="w/fetch", cmd="work") in pids
    assert relay.call("call", path="w/fetch#2", cmd="work") == pool.status().instances[1].pid


def test_pool_from_config(tmp_path: Path) -> None:
    cfg = tmp_path / "tree.toml"
    cfg.write_text(f"""
[[supervisor]]
name = "w"
[[supervisor.tool]]
name = "fetch"
actor = "{WORKER}"
replicas = 3
""")
    with ToolSystem.from_config(cfg) as system:
        pool = system.tool("w/fetch")
        assert isinstance(pool, PoolHandle) and pool.status().replicas == 3
        assert len(set(_parallel(lambda i: pool.call("work", seconds=0.8), 3))) == 3
    bad = tmp_path / "bad.toml"
    bad.write_text(cfg.read_text().replace("replicas = 3", "replicas = 0"))
    with pytest.raises(ConfigError, match=r"replicas = 0 is invalid"):
        ToolSystem.from_config(bad)
    bad.write_text(cfg.read_text().replace("replicas = 3", "replicas = {min = 4, max = 2}"))
    with pytest.raises(ConfigError, match=r"replicas.min = 4 is invalid"):
        ToolSystem.from_config(bad)


@pytest.mark.timeout(120)
def test_autoscaled_pool_grows_under_load_and_returns_to_min(system: ToolSystem) -> None:
    pool = system.root.spawn(Worker, name="auto", replicas={"min": 1, "max": 3, "target_busy": 0.5,
                                                           "interval": 0.2, "quiet": 1.5,
                                                           "window": 2.0})
    assert pool.status().replicas == 1
    stop = threading.Event()

    def load(i: int) -> None:
        while not stop.is_set():
            pool.call("work", seconds=0.1)

    threads = [threading.Thread(target=load, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    try:
        _wait(lambda: pool.status().replicas >= 2, 30, "the pool to grow")
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    _wait(lambda: pool.status().replicas == 1, 60, "the pool to shrink back to min")
    events = [e for e in system.events() if e["path"] == "auto" and e["event"] == "scaled"]
    assert any("scale up" in e["detail"] for e in events)
    assert any("scale down" in e["detail"] for e in events)


def test_intensity_counts_the_pools_restarts() -> None:
    strict = Policy(max_restarts=2, period=30.0, backoff=FAST.backoff)
    with ToolSystem(policy=FAST) as system:
        w = system.supervise("w", policy=strict)
        pool = w.spawn(Worker, name="fetch", replicas=3)
        for k in (1, 2):  # two restarts: within intensity
            pid = pool.status().instances[k - 1].pid
            with pytest.raises(ToolUnavailable):
                system.tool(f"w/fetch#{k}").call("crash")
            _wait(lambda k=k, pid=pid: (i := pool.status().instances[k - 1]).pid not in (None, pid)
                  and i.state.value == "running", what=f"#{k} back")
        with pytest.raises(ToolUnavailable):  # the third, on another instance: w gives up
            system.tool("w/fetch#3").call("crash")
        _wait(lambda: w.status().state.value in ("failed", "restarting", "stopped")
              or w.status().restarts >= 1, what="w to give up")
        assert any("gave up" in (e["detail"] or "") for e in system.events() if e["path"] == "w")


def test_removing_a_pool_removes_every_instance(system: ToolSystem) -> None:
    w = system.supervise("w", policy=FAST)
    w.spawn(Worker, name="fetch", replicas={"min": 2, "max": 4, "target_busy": 0.5})
    assert [c.name for c in w.children()] == ["fetch#1", "fetch#2"]
    w.remove("fetch")
    assert w.children() == []
    assert not isinstance(system.tool("w/fetch"), PoolHandle)
    assert system.pools.pools.get("w/fetch") is None


def test_autoscaled_pool_from_config(tmp_path: Path) -> None:
    cfg = tmp_path / "tree.toml"
    cfg.write_text(f"""
[[supervisor]]
name = "w"
[[supervisor.tool]]
name = "auto"
actor = "{WORKER}"
replicas = {{ min = 2, max = 5, target_busy = 0.6, quiet = 60 }}
""")
    with ToolSystem.from_config(cfg) as system:
        st = system.tool("w/auto").status()
        assert st.replicas == 2
        assert st.autoscale is not None and st.autoscale["max"] == 5
        assert st.autoscale["target_busy"] == 0.6 and st.autoscale["quiet"] == 60.0


@pytest.mark.timeout(60)
def test_a_principal_calls_a_pool_through_its_routing() -> None:
    """The checked view (dashboard, MCP, as_principal) reaches a pool like the trusted handle."""
    with ToolSystem(policy=FAST) as system:
        system.security.add_principal("agent", roles=["operator"])
        system.supervise("w", policy=FAST).spawn(WORKER, name="fetch", replicas=2)
        pool = system.as_principal("agent").tool("w/fetch")
        pids = {pool.call("work") for _ in range(20)}
        assert len(pids) == 2  # both instances served (least in flight, ties take turns)
        assert set(pool.call_many([("work", {})] * 4)) <= pids
        assert asyncio.run(pool.acall("work")) in pids
