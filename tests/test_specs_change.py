"""One change deep in a kept supervisor spec (supervisors.tree.specs.apply_spec_change)."""

from __future__ import annotations

from supervisors.tree.specs import apply_spec_change


def _spec() -> dict:
    return {"name": "mid", "children": [
        {"name": "t1"},
        {"name": "inner", "children": [{"name": "a"}, {"name": "b"}]},
        {"name": "t2"}]}


def test_a_new_child_is_added_last_and_a_known_one_replaced_in_place() -> None:
    spec = _spec()
    assert apply_spec_change(spec, ["inner", "c"], {"name": "c"}, False)
    assert apply_spec_change(spec, ["inner", "a"], {"name": "a", "config": {"x": 1}}, False)
    assert spec["children"][1]["children"] == [{"name": "a", "config": {"x": 1}}, {"name": "b"},
                                               {"name": "c"}]


def test_a_gone_child_leaves_and_order_is_kept() -> None:
    spec = _spec()
    assert apply_spec_change(spec, ["t1"], None, True)
    assert apply_spec_change(spec, ["inner", "zzz"], None, True)  # not there: nothing to do
    assert [c["name"] for c in spec["children"]] == ["inner", "t2"]


def test_a_path_through_an_unknown_supervisor_does_not_fit() -> None:
    spec = _spec()
    assert not apply_spec_change(spec, ["nope", "x"], {"name": "x"}, False)
    assert spec == _spec()


def test_a_supervisor_without_children_gets_a_list() -> None:
    spec = {"name": "s"}
    assert apply_spec_change(spec, ["t"], {"name": "t"}, False)
    assert spec["children"] == [{"name": "t"}]
