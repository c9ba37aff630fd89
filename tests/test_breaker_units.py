"""The breaker state machine, retry delays and the tool context mapping, without processes."""

from __future__ import annotations

import pytest

from actors.breaker import CLOSED, HALF_OPEN, OPEN, Breaker, Breakers, BreakerState, summary
from actors.errors import CheckpointError, SpecError, ToolError, ToolUnavailable
from actors.retry import delay, with_retries
from actors.toolcontext import ToolContext
from supervisors import Policy


def test_time_window_forgets_old_failures() -> None:
    b = BreakerState(Breaker(threshold=3, window=10.0), "t")
    b.record(0.0, True, False)
    b.record(1.0, True, False)
    assert b.record(12.0, True, False) is None  # the first two are out of the window
    assert b.state == CLOSED and b.failures() == 1


def test_count_window_counts_the_last_calls() -> None:
    b = BreakerState(Breaker(threshold=2, window=3, count_based=True), "t")
    for t, failed in enumerate([True, False, False, True]):
        b.record(float(t), failed, False)
    assert b.state == CLOSED  # the first failure left the 3-call window
    assert b.record(5.0, True, False) == OPEN


def test_half_open_admits_only_its_trials_and_a_failed_trial_reopens() -> None:
    b = BreakerState(Breaker(threshold=1, open_for=5.0, successes=2, half_open_calls=1), "t")
    b.record(0.0, True, False)
    refusal = b.admit(1.0)
    assert isinstance(refusal, ToolUnavailable) and refusal.type == "BreakerOpen"
    assert "in 4.0s" in refusal.message
    assert b.admit(5.0) is None and b.state == HALF_OPEN
    assert isinstance(b.admit(5.1), ToolUnavailable)  # one trial at a time
    b.record(5.2, False, True)
    assert b.admit(5.3) is None
    assert b.record(5.4, False, True) == CLOSED
    b2 = BreakerState(Breaker(threshold=1, open_for=5.0), "t")
    b2.record(0.0, True, False)
    assert b2.admit(6.0) is None
    assert b2.record(6.1, True, True) == OPEN and b2.retry_at == pytest.approx(11.1)


def test_snapshots_carry_the_state_to_the_next_instance_and_crashes_count() -> None:
    cfg = Breaker(threshold=2, open_for=30.0)
    one = Breakers(cfg, "w/t")
    one.get("x").record(100.0, True, False)
    two = Breakers(cfg, "w/t", one.snapshot())
    assert two.crash(101.0) == [("*", OPEN)]
    s = summary(two.snapshot())
    assert s["state"] == OPEN and s["retry_at"] == pytest.approx(131.0)


def test_per_command_breakers_are_separate() -> None:
    bs = Breakers(Breaker(threshold=1, per_command=True), "w/t")
    bs.get("a").record(0.0, True, False)
    assert bs.get("a").state == OPEN and bs.get("b").state == CLOSED
    assert summary(bs.snapshot())["commands"]["a"]["state"] == OPEN


def test_breaker_from_a_dict_refuses_unknown_keys_and_policy_round_trips() -> None:
    with pytest.raises(SpecError, match="breaker.treshold"):
        Breaker.from_dict({"treshold": 3})
    p = Policy(breaker=Breaker(threshold=2), transient=["OSError"])
    assert Policy.from_dict(p.to_dict()) == p
    with pytest.raises(SpecError, match="retry.attempts"):
        Policy.from_dict({"retry": {"attempts": -1}})


def test_retry_delays_grow_to_the_maximum_and_stop_at_the_deadline() -> None:
    settings = {"attempts": 5, "initial": 0.1, "maximum": 0.3, "multiplier": 2.0, "jitter": 0.0}
    assert [delay(settings, n) for n in range(4)] == pytest.approx([0.1, 0.2, 0.3, 0.3])
    calls = []

    def flaky():
        calls.append(1)
        err = ToolError("down", type="ConnectionError")
        err.retry = {**settings, "initial": 0.01, "maximum": 0.01}
        raise err
    with pytest.raises(ToolError):
        with_retries(flaky, 0.0)
    assert len(calls) == 6  # the first try and 5 retries


def test_context_reads_fall_back_and_writes_stay_own() -> None:
    ctx = ToolContext({"a": 1}, [{"b": 2, "a": 0}, {"c": 3}])
    assert (ctx["a"], ctx["b"], ctx["c"]) == (1, 2, 3)
    assert sorted(ctx) == ["a", "b", "c"] and len(ctx) == 3
    ctx["b"] = 20
    assert ctx.own == {"a": 1, "b": 20} and ctx.ancestors[0]["b"] == 2
    with pytest.raises(KeyError):
        del ctx["c"]  # an ancestor's key
    ctx["bad"] = object()
    with pytest.raises(CheckpointError, match="'bad' holds a value of type object"):
        ctx.packed()
