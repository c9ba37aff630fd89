"""Specs kept compactly below a supervisor's children (supervisors.tree.kept) and the root's
compact event log (supervisors.tree.eventlog): what is read back is exactly what was kept."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.codec import pack_value, unpack_value
from supervisors import Backoff, Policy, ToolState, ToolSystem
from supervisors.tree.eventlog import EventLog, unpack_events
from supervisors.tree.kept import (
    KeptChildren,
    compact,
    full_spec,
    keep,
    pack_spec,
    same,
    unpack_spec,
)
from supervisors.tree.policy import SECURITY_LEVELS
from supervisors.tree.specs import apply_spec_change, supervisor_spec, tool_spec
from tests.helpers import wait_until
from tests.tools import Counter

pytestmark = pytest.mark.timeout(60)
TOOL = "tests.tools:Counter"


def wire(value: Any) -> Any:
    """``value`` as a supervisor receives it (every spec it keeps came over the wire)."""
    return unpack_value(pack_value(value))


def test_same_tells_types_and_key_order_apart() -> None:
    assert same({"a": 1, "b": [1.0]}, {"a": 1, "b": [1.0]})
    assert not same({"a": 1, "b": 2}, {"b": 2, "a": 1})
    assert not same(5, 5.0) and not same(True, 1) and not same([1], (1,))
    assert same(float("nan"), float("nan")) and not same(float("nan"), 1.0)


@pytest.mark.parametrize("level", sorted(SECURITY_LEVELS))
def test_a_tool_spawned_with_defaults_packs_small_and_comes_back_exactly(level: str) -> None:
    spec = wire(tool_spec(TOOL, "t0001", security_level=level))
    packed = pack_spec(spec)
    assert len(packed) < 80  # only its name and class path: the rest are the level's defaults
    back = unpack_spec(packed)
    assert same(back, spec)
    assert back is not unpack_spec(packed) and back["limits"] is not unpack_spec(packed)["limits"]


def test_a_tool_with_every_field_changed_comes_back_exactly() -> None:
    spec = wire(tool_spec(TOOL, "busy", {"start": 3, "nested": {"x": [1, 2.5, None, b"b"]}},
                          restart="transient", security_level="low", shutdown_timeout="brutal_kill",
                          start_timeout=3, hold_limit=7, limits={"memory_mb": 64},
                          on_limit="stop", adaptive=True, hard_memory=True, max_callers=3,
                          hang_timeout=None, significant=True))
    spec["pool"] = "fetchers"  # a pool's instance carries the pool's name
    assert same(unpack_spec(pack_spec(spec)), spec)


def test_specs_the_template_does_not_fit_are_kept_whole() -> None:
    spec = wire(tool_spec(TOOL, "t"))
    reordered = {"name": spec["name"], **{k: v for k, v in spec.items() if k != "name"}}
    missing = {k: v for k, v in spec.items() if k != "hold_limit"}
    for odd in (reordered, missing, {"name": "bare"}, {**spec, "security_level": "nonesuch"},
                {**spec, "shutdown_timeout": 5}):  # (an int where the default is 5.0)
        back = unpack_spec(pack_spec(odd))
        assert same(back, odd), odd


def test_a_spec_that_msgpack_would_change_is_kept_as_it_is() -> None:
    spec = {"name": "t", "kind": "tool", "config": {"pair": (1, 2)}}  # a tuple comes back a list
    with pytest.raises(ValueError, match="does not come back the same"):
        pack_spec(spec)
    assert keep(spec) is spec


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(
    st.sampled_from(["config", "limits", "restart", "hang_timeout", "extra", "max_callers"]),
    st.recursive(st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1) | st.floats() |
                 st.text(max_size=8) | st.binary(max_size=8),
                 lambda inner: st.lists(inner, max_size=3) |
                 st.dictionaries(st.text(max_size=4), inner, max_size=3), max_leaves=8)))
def test_any_change_to_a_default_tool_comes_back_exactly(changes: dict[str, Any]) -> None:
    spec = wire({**tool_spec(TOOL, "t"), **changes})
    assert same(unpack_spec(pack_spec(spec)), spec)


def _tree() -> dict[str, Any]:
    inner = supervisor_spec("inner", children=[wire(tool_spec(TOOL, n)) for n in ("a", "b")])
    return wire(supervisor_spec("mid", children=[wire(tool_spec(TOOL, "t1", {"k": 1})), inner,
                                                 wire(tool_spec(TOOL, "t2"))]))


def test_a_compact_supervisor_spec_reads_and_goes_on_the_wire_as_the_original() -> None:
    original = _tree()
    kept = compact(original)
    assert same(original, _tree())  # (compact made its own copy)
    assert isinstance(kept["children"], KeptChildren)
    assert kept["children"] == original["children"] and list(kept["children"]) == original["children"]
    assert kept["children"][1] == original["children"][1] and len(kept["children"]) == 3
    assert same(full_spec(kept), original)
    assert same(wire(full_spec(kept)), original)  # what a restart sends
    assert kept["children"].kinds() == [("t1", "tool"), ("inner", "supervisor"), ("t2", "tool")]
    assert compact(kept) is kept


@pytest.mark.parametrize("form", ["list", "kept"])
def test_changes_deep_in_a_kept_spec_match_those_in_a_plain_one(form: str) -> None:
    spec = _tree() if form == "list" else compact(_tree())
    c = wire(tool_spec(TOOL, "c"))
    a2 = wire(tool_spec(TOOL, "a", {"x": 1}))
    assert apply_spec_change(spec, ["inner", "c"], c, False)
    assert apply_spec_change(spec, ["inner", "a"], a2, False)
    assert apply_spec_change(spec, ["t1"], None, True)
    assert apply_spec_change(spec, ["inner", "zzz"], None, True)
    assert not apply_spec_change(spec, ["nope", "x"], c, False)
    whole = full_spec(spec)
    assert [c["name"] for c in whole["children"]] == ["inner", "t2"]
    assert same(whole["children"][0]["children"], [a2, wire(tool_spec(TOOL, "b")), c])


def test_the_event_log_gives_back_each_event_exactly_and_keeps_the_last() -> None:
    log = EventLog(3)
    t = time.time()
    events = [{"time": t + i, "path": "s/t", "event": "started", "detail": f"pid {i}",
               "state": "running"} for i in range(4)]
    odd = {"time": t + 9, "path": "s/t", "event": "x", "detail": None, "state": "running"}
    for e in events + [odd]:
        log.append(e)
    assert len(log) == 3
    assert log.since(0.0) == events[2:] + [odd]
    assert [list(e) for e in log] == [list(events[0])] * 3  # same keys, same order
    assert log.since(t + 2) == [events[3], odd]
    reordered = {"path": "p", "time": t + 10, "event": "e", "detail": "", "state": "s"}
    surrogate = {"time": t + 11, "path": "p", "event": "e", "detail": "bad \udcff", "state": "s"}
    log.append(reordered)
    log.append(surrogate)
    assert [list(e) for e in log.since(t + 9.5)] == [list(reordered), list(surrogate)]
    assert log.since(t + 9.5) == [reordered, surrogate]
    assert unpack_events(log.packed_since(0.0)) == log.since(0.0)  # (what the host reads)


def test_the_root_restarts_a_supervisor_with_every_child_as_it_was_spawned(system: ToolSystem) -> None:
    """The root keeps the specs below its child supervisor compactly: what it reads back,
    and what it starts that supervisor with again, is what that supervisor itself keeps."""
    sup = system.supervise("s", Policy(backoff=Backoff.none()))
    sup.spawn(Counter, name="plain", config={"start": 1})
    sup.spawn(Counter, name="odd", config={"start": 2, "deep": {"k": [1, 2.5]}},
              restart="transient", security_level="low", limits={"memory_mb": 64},
              shutdown_timeout=2, hang_timeout=None, max_callers=3)
    inner = sup.supervise("inner", Policy(backoff=Backoff.none()))
    inner.spawn(Counter, name="deep", config={"start": 3}, security_level="high")

    def kept_by_root() -> dict[str, Any]:
        return system._request("", "child_spec", {"name": "s"}, 5)

    def kept_by_s() -> list[dict[str, Any]]:
        return [system._request("s", "child_spec", {"name": n}, 5) for n in ("plain", "odd", "inner")]

    wait_until(lambda: [c["name"] for c in kept_by_root()["children"]] == ["plain", "odd", "inner"]
               and len(kept_by_root()["children"][2]["children"]) == 1,
               what="the root to learn s's children")
    before = kept_by_s()
    assert same(kept_by_root()["children"], before)
    st = system.tool("s/odd").status()
    pid = sup.status().pid
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: sup.status().restarts == 1 and sup.status().state is ToolState.RUNNING,
               what="s restarted by the root")
    assert [c.name for c in sup.children()] == ["plain", "odd", "inner"]
    assert same(kept_by_s(), before)  # s started again from the root's copy: the same specs
    assert sup.tool("plain").call("get", timeout=10) == 1
    assert sup.tool("odd").call("get", timeout=10) == 2
    assert inner.tool("deep").call("get", timeout=10) == 3
    again = system.tool("s/odd").status()
    assert (again.restart, again.security_level, again.hang_timeout) == \
        (st.restart, st.security_level, st.hang_timeout)


def test_events_read_through_the_host_are_the_root_s_events_as_dicts(system: ToolSystem) -> None:
    system.supervise("s").spawn(Counter, name="c")
    system._request("s", "note_event", {"name": "c", "event": "noted", "detail": "x"}, 5)
    wait_until(lambda: any(e["event"] == "noted" for e in system.events()), what="the event")
    events = system.events()
    assert events == system._request("", "events", {}, 5)  # (the op that answers dicts)
    assert all(list(e) == ["time", "path", "event", "detail", "state"] for e in events)
    assert [e for e in events if e["event"] == "noted"][0]["path"] == "s/c"
    assert system.events(since=events[-1]["time"]) == []
