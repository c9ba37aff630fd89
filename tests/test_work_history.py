"""Work history (issue 10): the tools' work counters, the accountant's history of them, and
the autoscaler deciding from that history (with its fallback when the accountant is away)."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time

import pytest

from actors.busy import marker_path, read_counters
from supervisors import ToolSystem
from tests.conftest import FAST
from tests.helpers import wait_until
from tests.pool_tools import Worker

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def system() -> ToolSystem:
    with ToolSystem(policy=FAST, sample_every=0.2) as s:
        yield s


def _counters(system: ToolSystem, pid: int) -> tuple[float, int, int] | None:
    fd = os.open(marker_path(system.runtime_dir, pid), os.O_RDONLY)
    try:
        return read_counters(fd)
    finally:
        os.close(fd)


def _busy_for(tool, seconds: float, work: float = 0.02) -> int:
    """Keep ``tool`` busy with back-to-back calls for ``seconds``; the calls made."""
    end, n = time.monotonic() + seconds, 0
    while time.monotonic() < end:
        tool.call("work", seconds=work)
        n += 1
    return n


def test_counters_move_when_a_tool_works(system: ToolSystem) -> None:
    t = system.root.spawn(Worker, name="w")
    pid = t.status().pid
    before = _counters(system, pid)
    assert before is not None
    busy0, calls0, _ = before
    for _ in range(5):
        t.call("work", seconds=0.05)
    busy, calls, waiting = _counters(system, pid)  # type: ignore[misc]
    assert calls - calls0 == 5
    assert busy - busy0 >= 0.25 * 0.95  # five calls of 50 ms
    assert waiting == 0
    t.call("served")  # a command that returns at once still counts as a call
    assert _counters(system, pid)[1] == calls + 1  # type: ignore[index]


def test_counters_include_the_work_in_progress(system: ToolSystem) -> None:
    t = system.root.spawn(Worker, name="w")
    pid = t.status().pid
    busy0 = _counters(system, pid)[0]  # type: ignore[index]
    caller = threading.Thread(target=t.call, args=("work",), kwargs={"seconds": 1.5})
    caller.start()
    try:  # while the one long call runs, the busy time grows anyway
        wait_until(lambda: _counters(system, pid)[0] - busy0 > 0.5, timeout=10,  # type: ignore[index]
                   what="busy time to grow during a long call")
    finally:
        caller.join(30)


def test_history_shows_busy_near_one_under_load_and_near_zero_idle(system: ToolSystem) -> None:
    t = system.root.spawn(Worker, name="w")
    wait_until(lambda: system.usage_history(["w"]).get("w", {}).get("points"), timeout=10,
               what="a first point in the history")
    started = time.time()
    n = _busy_for(t, 2.0)
    elapsed = time.time() - started
    h = wait_until(lambda: (got := system.usage_history(["w"], since=started)["w"])["calls"] >= n
                   and got, timeout=10, what="the history to count every call")
    loaded = [p for p in h["points"] if p["time"] <= started + elapsed and p["time"] - p["span"] >= started]
    assert loaded, h["points"]
    assert max(p["busy_fraction"] for p in loaded) > 0.8
    span = sum(p["span"] for p in loaded)
    rate = sum(p["call_rate"] * p["span"] for p in loaded) / span
    made = n / elapsed
    assert 0.5 * made <= rate <= 1.5 * made, (rate, made)
    # idle: the newest figures fall to about nothing, in the history and in usage()
    wait_until(lambda: (b := system.usage_history(["w"])["w"]["busy_fraction"]) is not None and b < 0.1,
               timeout=10, what="the busy fraction to fall when idle")
    usage = wait_until(lambda: (u := t.status().usage)["call_rate"] == 0 and u, timeout=10,
                       what="usage to show no calls")
    assert usage["busy_fraction"] < 0.1 and usage["queue"] == 0
    assert {"busy_fraction", "call_rate", "queue"} <= set(system.usage()["w"])


def test_history_counts_calls_waiting(system: ToolSystem) -> None:
    t = system.root.spawn(Worker, name="w")

    async def burst() -> None:
        await asyncio.gather(*(t.acall("work", seconds=0.05) for _ in range(40)))

    runner = threading.Thread(target=asyncio.run, args=(burst(),))
    runner.start()
    seen = []
    try:
        deadline = time.monotonic() + 10
        while runner.is_alive() and time.monotonic() < deadline:
            seen.append(system.usage_history(["w"], refresh=0.05)["w"]["queue"] or 0)
            time.sleep(0.05)
    finally:
        runner.join(30)
    assert max(seen) >= 3, seen  # 40 calls sent at once to a tool that serves one at a time
    # once they are served the tool is idle: nothing waits (no figure left over from the burst)
    wait_until(lambda: system.usage_history(["w"], refresh=0.05)["w"]["queue"] == 0, timeout=10,
               every=0.1, what="the queue to read 0 when idle")


def test_history_of_unknown_paths_is_empty_and_refresh_reads_now() -> None:
    with ToolSystem(policy=FAST, sample_every=30.0) as system:  # the sweep will not come
        t = system.root.spawn(Worker, name="w")
        assert system.usage_history(["nope"]) == {}
        system.usage_history(["w"], refresh=0.01)  # a first reading
        t.call("work", seconds=0.3)
        h = wait_until(lambda: (g := system.usage_history(["w"], refresh=0.01)["w"])["calls"] and g,
                       timeout=10, what="a refreshed reading")
        assert h["calls"] == 1 and h["busy_seconds"] >= 0.28
        assert h["points"] and h["points"][-1]["busy_fraction"] > 0


# ------------------------------------------------------------------ the autoscaler
def _load(pool, threads: int, stop: threading.Event) -> list[threading.Thread]:
    def run() -> None:
        while not stop.is_set():
            try:
                pool.call("work", seconds=0.1)
            except Exception:  # noqa: BLE001 - an instance drained away: call again
                pass

    out = [threading.Thread(target=run) for _ in range(threads)]
    for th in out:
        th.start()
    return out


def _scaled(system: ToolSystem, path: str) -> list[str]:
    return [e["detail"] for e in system.events() if e["path"] == path and e["event"] == "scaled"]


@pytest.mark.timeout(150)
def test_autoscaler_decides_from_the_accountant_history() -> None:
    # interval 0.2 s is shorter than the sweep (1 s): the autoscaler has its instances read
    with ToolSystem(policy=FAST, sample_every=1.0) as system:
        pool = system.root.spawn(Worker, name="auto", replicas={
            "min": 1, "max": 3, "target_busy": 0.5, "interval": 0.2, "quiet": 1.5, "window": 2.0})
        stop = threading.Event()
        threads = _load(pool, 3, stop)
        try:
            wait_until(lambda: pool.status().replicas >= 2, timeout=30, every=0.1,
                       what="the pool to grow")
            usage = wait_until(lambda: (u := pool.status().usage).get("call_rate") and u, timeout=15,
                               every=0.1, what="the pool's call rate in its usage")
            assert 0 < usage["busy_fraction"] <= 1  # the mean per instance, not a sum
        finally:
            stop.set()
            for th in threads:
                th.join(30)
        wait_until(lambda: pool.status().replicas == 1, timeout=60, every=0.1,
                   what="the pool to shrink back to min")
        details = wait_until(lambda: (d := _scaled(system, "auto")) and any("scale down" in x for x in d)
                             and d, timeout=10, every=0.1, what="the scaling events")
        up = [d for d in details if "scale up" in d]
        down = [d for d in details if "scale down" in d]
        assert up and down, details
        assert "accountant history: busy" in up[0] and "calls/s" in up[0], up[0]
        assert "accountant history" in down[-1], down[-1]
        assert system.pools.pools["auto"].autoscaler.source == "accountant"
        history = pool.usage_history()  # the handle's view: one entry per instance
        assert list(history) == ["auto#1"] and history["auto#1"]["calls"] > 0
        assert pool.instance(1).usage_history()["calls"] == history["auto#1"]["calls"]


def test_autoscaler_goes_on_when_the_wall_clock_steps_back() -> None:
    """The accountant times its points by the wall clock; after a step back, every new point
    is older than the newest one seen, and a filter on it alone would see nothing new."""
    with ToolSystem(policy=FAST, sample_every=1.0) as system:
        pool = system.root.spawn(Worker, name="auto", replicas={
            "min": 1, "max": 3, "target_busy": 0.5, "interval": 0.2, "quiet": 60.0, "window": 2.0})
        scaler = system.pools.pools["auto"].autoscaler
        scaler._since = time.time() + 3600  # as if the clock had been an hour ahead until now
        stop = threading.Event()
        threads = _load(pool, 3, stop)
        try:
            wait_until(lambda: pool.status().replicas >= 2, timeout=30, every=0.1,
                       what="the pool to grow")
        finally:
            stop.set()
            for th in threads:
                th.join(30)
        assert scaler._since < time.time() + 1
        assert scaler.source == "accountant"


@pytest.mark.timeout(150)
def test_autoscaler_falls_back_when_the_accountant_does_not_answer() -> None:
    with ToolSystem(policy=FAST, sample_every=1.0) as system:
        pool = system.root.spawn(Worker, name="auto", replicas={
            "min": 1, "max": 3, "target_busy": 0.5, "interval": 0.2, "quiet": 60.0, "window": 2.0})
        accountant = int(system._request("", "ping", {}, None)["accountant_pid"])
        os.kill(accountant, signal.SIGSTOP)  # alive, but it answers nobody
        stop = threading.Event()
        threads: list[threading.Thread] = []
        try:
            threads = _load(pool, 3, stop)
            # (not status(): it asks the stopped accountant for usage, and waits for it)
            wait_until(lambda: len(system.pools.members("auto", fresh=True)) >= 2, timeout=60,
                       every=0.1, what="the pool to grow on the fallback")
            up = wait_until(lambda: [d for d in _scaled(system, "auto") if "scale up" in d],
                            timeout=10, every=0.1, what="the scaling event")
            assert "host fallback (busy markers, host calls): busy" in up[0], up
        finally:
            stop.set()
            os.kill(accountant, signal.SIGCONT)
            for th in threads:
                th.join(30)
        scaler = system.pools.pools["auto"].autoscaler
        wait_until(lambda: scaler.source == "accountant", timeout=30, every=0.1,
                   what="the autoscaler to use the accountant again")


def test_work_figures_are_gauges_and_alert_figures() -> None:
    from prometheus_client.parser import text_string_to_metric_families

    from supervisors.frontends.dashboard import slim
    from supervisors.monitoring import KNOWN_METRICS, Metrics

    node = slim({"name": "w", "path": "w", "kind": "tool", "state": "running", "pid": None,
                 "usage": {"busy_fraction": 0.75, "call_rate": 40.0, "queue": 3}}, time.time())
    m = Metrics()
    m.observe_tree([node])
    samples = {f.name: f.samples[0].value
               for f in text_string_to_metric_families(m.render().decode()) if f.samples}
    assert samples["toolvisor_tool_busy_fraction"] == 0.75
    assert samples["toolvisor_tool_call_rate"] == 40.0 and samples["toolvisor_tool_queue"] == 3
    assert {"busy_fraction", "call_rate", "queue"} <= set(KNOWN_METRICS)  # alert rules may name them
