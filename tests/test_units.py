"""Pure units: the state graph, the wire codec, policy checks, commands."""

from __future__ import annotations

import pickle

import pytest

from actors import ToolActor, command
from actors.codec import decode, encode
from actors.commands import bind, command_table
from actors.errors import (
    BadArguments,
    CallTimeout,
    InvalidTransition,
    MalformedMessage,
    ToolUnavailable,
    error_from_wire,
    error_to_wire,
)
from actors.messages import REGISTRY, Call, Reply
from actors.state import TRANSITIONS, StateMachine, ToolState
from supervisors import Backoff, Policy, SpecError
from supervisors.tree.policy import Intensity, should_restart

S = ToolState


def test_state_graph_covers_every_state_and_rejects_without_change() -> None:
    assert set(TRANSITIONS) == set(ToolState)
    sm = StateMachine(S.RUNNING)
    with pytest.raises(InvalidTransition, match="from running to initializing"):
        sm.go(S.INITIALIZING)
    assert sm.state is S.RUNNING and not sm.history
    sm.go(S.PAUSED)
    sm.go(S.RUNNING)
    assert [h[1:] for h in sm.history] == [("running", "paused"), ("paused", "running")]


def test_codec_round_trips_every_message_kind() -> None:
    msg = Call(7, "add", {"k": 2, "nested": [1, b"x", None]}, 123.5)
    assert decode(encode(msg)) == msg
    assert decode(encode(Reply(7, False, error={"code": "error"}))).error == {"code": "error"}
    assert all(isinstance(tag, int) and 0 < tag < 128 for tag in REGISTRY)


def test_codec_is_compact_compared_to_pickle() -> None:
    msg = Call(123456, "add", {"k": 1}, 1790000000.123)
    assert len(encode(msg)) < len(pickle.dumps(msg)) / 2


@pytest.mark.parametrize("data", [b"", b"\xc1", b"\x92\x01", b"\x91\xcc\xff", b"\x81\x01\x02", "text"])
def test_codec_rejects_malformed_input_clearly(data) -> None:
    with pytest.raises(MalformedMessage):
        decode(data)


def test_codec_names_an_unsendable_value() -> None:
    with pytest.raises(TypeError, match="cannot send a value of type object"):
        encode(Call(1, "x", {"v": object()}, 0))


def test_a_lazy_list_is_packed_one_item_at_a_time_and_arrives_as_a_list() -> None:
    # A supervisor's status of 1,000 children made every item at once; the allocator kept
    # what they took. Packed lazily, no more than one item is alive at a time.
    from actors.codec import LazyList

    live = {"now": 0, "most": 0}

    class Item(dict):
        def __init__(self, n: int) -> None:
            super().__init__(name=f"t{n:04d}", kind="tool")
            live["now"] += 1
            live["most"] = max(live["most"], live["now"])

        def __del__(self) -> None:
            live["now"] -= 1

    names = LazyList(range(500), Item)
    reply = decode(encode(Reply(7, True, {"children": names, "inner": LazyList([1, 2], str)})))
    assert live["most"] == 1 and live["now"] == 0
    assert reply.value["children"] == [{"name": f"t{n:04d}", "kind": "tool"} for n in range(500)]
    assert type(reply.value["children"]) is list and reply.value["inner"] == ["1", "2"]
    # read in its own process, it is a sequence like any other
    assert len(names) == 500 and names[3] == {"name": "t0003", "kind": "tool"}
    assert names[1:3] == [{"name": "t0001", "kind": "tool"}, {"name": "t0002", "kind": "tool"}]
    assert LazyList([], str) == [] and list(LazyList("ab", str.upper)) == ["A", "B"]


def test_errors_round_trip_through_the_wire() -> None:
    err = error_from_wire(error_to_wire(CallTimeout("slow")), tool="a/b")
    assert isinstance(err, CallTimeout) and isinstance(err, ToolUnavailable)
    assert isinstance(err, TimeoutError) and err.tool == "a/b"
    try:
        raise KeyError("k")
    except KeyError as exc:
        wire = error_to_wire(exc)
    assert wire["type"] == "KeyError" and "raise KeyError" in wire["traceback"]


def test_policy_and_backoff_checks_name_the_field() -> None:
    with pytest.raises(SpecError, match="strategy='one_for_some'"):
        Policy(strategy="one_for_some")
    with pytest.raises(SpecError, match="max_restarts=-1"):
        Policy(max_restarts=-1)
    with pytest.raises(SpecError, match="period=0"):
        Policy(period=0)
    with pytest.raises(SpecError, match="backoff.jitter=2"):
        Backoff(jitter=2)
    with pytest.raises(SpecError, match="backoff.maximum=0.1"):
        Backoff(initial=1, maximum=0.1)
    p = Policy(backoff=Backoff(initial=0.5))
    assert Policy.from_dict(p.to_dict()) == p


def test_backoff_sequence_caps_and_jitters_within_bounds() -> None:
    b = Backoff(initial=0.1, maximum=1.0, multiplier=3.0, jitter=0.5)
    assert [round(b.delay(n, 0.0), 3) for n in range(4)] == [0.1, 0.3, 0.9, 1.0]
    assert b.delay(1, 1.0) == pytest.approx(0.45)
    assert Backoff.none().delay(5) == 0.0


def test_intensity_window() -> None:
    i = Intensity(2, 10.0)
    assert i.allow(0.0) and i.allow(1.0) and not i.allow(2.0)
    j = Intensity(2, 10.0)
    assert j.allow(0.0) and j.allow(1.0) and j.allow(10.5)  # the first fell out of the window


def test_restart_types() -> None:
    assert should_restart("permanent", True) and should_restart("permanent", False)
    assert not should_restart("transient", True) and should_restart("transient", False)
    assert not should_restart("temporary", True) and not should_restart("temporary", False)


def test_command_table_and_argument_binding() -> None:
    class T(ToolActor):
        @command
        def a(self, x: int, y: int = 2) -> int:
            return x + y

        @command(name="bee")
        def b(self) -> None: ...

        def not_a_command(self) -> None: ...

    assert command_table(T) == {"a": "a", "bee": "b"}
    t = T()
    assert bind(t.a, "a", {"x": 1}).args == (1,)
    with pytest.raises(BadArguments, match=r"takes \(x, y=2\)"):
        bind(t.a, "a", {"z": 1})
    with pytest.raises(RuntimeError, match="not running under toolvisor"):
        t.exit()


def test_state_history_keeps_the_last_moves_only() -> None:
    sm = StateMachine(S.RUNNING, history=3)
    for _ in range(3):
        sm.go(S.PAUSED)
        sm.go(S.RUNNING)
    sm.force(S.FAILED)
    assert [h[1:] for h in sm.history] == [("running", "paused"), ("paused", "running"),
                                            ("running", "failed")]


def test_child_record_keeps_a_tools_spec_packed_and_gives_it_back_whole() -> None:
    from actors.codec import pack_value, unpack_value
    from supervisors.tree.children import Child
    from supervisors.tree.specs import supervisor_spec, tool_spec

    spec = unpack_value(pack_value(tool_spec("examples.counter:Counter", "c", config={"start": 2},
                                             hang_timeout=7, limits={"memory_mb": 64})))  # (as from the wire)
    child = Child(spec)
    assert isinstance(child._spec, bytes)
    assert child.spec == spec and list(child.spec) == list(spec)
    assert child.spec is not child.spec  # a new dict each time: changing it changes nothing kept
    child.spec["restart"] = "temporary"
    child.spec["limits"]["memory_mb"] = 1
    assert child.spec == spec and child.restart_type == "permanent"
    assert child.hang_timeout == 7.0 and child.name == "c" and child.kind == "tool"
    child.spec = {**spec, "hang_timeout": None, "restart": "transient"}
    assert child.hang_timeout is None and child.restart_type == "transient"
    sup = Child(supervisor_spec("w", children=[spec]))
    assert isinstance(sup._spec, dict) and sup.hang_timeout is None
    assert sup.spec is sup.spec  # a supervisor's is changed in place below it
    assert [c["name"] for c in sup.spec["children"]] == ["c"]


def test_child_record_keeps_inherited_descriptors_as_runs() -> None:
    from supervisors.tree.children import Child

    child = Child({"name": "x"})
    assert child.inherited_fds == [] and child.waiters == () and child.records == ()
    child.inherited_fds = [*range(29), 251, 40, 41]
    assert child._inherited_fds == (0, 29, 40, 42, 251, 252)
    assert child.inherited_fds == [*range(29), 40, 41, 251]
    child.inherited_fds = []
    assert child.inherited_fds == []
