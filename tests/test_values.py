"""Odd numbers and careless values (issue 9): refused at once, naming the field and the value."""

from __future__ import annotations

import pytest

from actors.codec import pack_value
from supervisors import Backoff, Policy, SpecError, ToolSystem
from supervisors.resources.quotas import effective_limits
from supervisors.tree.config import ConfigError, parse_config
from supervisors.tree.specs import tool_spec
from tests.tools import Counter

NAN, INF = float("nan"), float("inf")
ODD = [NAN, INF, -INF, True, "5", None]


@pytest.mark.parametrize("name", ["memory_mb", "open_files", "cpu_percent", "cpu_seconds", "threads"])
@pytest.mark.parametrize("value", ODD)
def test_limits_refuse_nan_infinities_booleans_and_strings(name: str, value: object) -> None:
    with pytest.raises(SpecError, match=f"limits.{name}="):
        effective_limits("standard", {name: value})
    with pytest.raises(SpecError, match=f"limits.{name}="):
        tool_spec(Counter, "c", limits={name: value})


@pytest.mark.parametrize("text", ["memory_mb = nan", "memory_mb = inf", "open_files = nan",
                                  "memory_mb = true", 'memory_mb = "64"'])
def test_toml_limits_refuse_odd_numbers(text: str) -> None:
    toml = f"""
[[supervisor]]
name = "w"
[[supervisor.tool]]
name = "c"
actor = "tests.tools:Counter"
limits = {{ {text} }}
"""
    with pytest.raises(ConfigError, match="limits"):
        parse_config(toml)


@pytest.mark.parametrize("key", ["call_timeout", "op_timeout", "sample_every", "period"])
@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "true", '"5"'])
def test_toml_system_numbers_refuse_odd_values(key: str, value: str) -> None:
    with pytest.raises(ConfigError, match=key):
        parse_config(f"[system]\n{key} = {value}\n")


@pytest.mark.parametrize("option", ["sample_every", "call_timeout", "op_timeout",
                                    "window_per_caller", "window_per_tool"])
@pytest.mark.parametrize("value", [NAN, INF, True, "1", 0, -1])
def test_system_options_refuse_odd_numbers(option: str, value: object) -> None:
    with pytest.raises(ValueError, match=option):
        ToolSystem(**{option: value})


@pytest.mark.parametrize(("build", "field"), [
    (lambda v: Policy(period=v), "period"),
    (lambda v: Policy(max_restarts=v), "max_restarts"),
    (lambda v: Backoff(initial=v), "backoff.initial"),
    (lambda v: Backoff(maximum=v), "backoff.maximum"),
    (lambda v: Backoff(multiplier=v), "backoff.multiplier"),
    (lambda v: Backoff(jitter=v), "backoff.jitter"),
    (lambda v: Backoff(reset_after=v), "backoff.reset_after"),
    (lambda v: tool_spec(Counter, "c", shutdown_timeout=v), "shutdown_timeout"),
    (lambda v: tool_spec(Counter, "c", start_timeout=v), "start_timeout"),
    (lambda v: tool_spec(Counter, "c", hold_limit=v), "hold_limit"),
])
@pytest.mark.parametrize("value", [NAN, INF, True, "1"])
def test_policy_and_spec_numbers_refuse_odd_values(build, field: str, value: object) -> None:
    with pytest.raises(SpecError, match=field.replace(".", r"\.")):
        build(value)


@pytest.mark.timeout(60)
def test_call_timeouts_and_arguments() -> None:
    with ToolSystem() as system:
        t = system.spawn(Counter, name="c")
        assert t.call("add", timeout=None) == 1  # None: the default
        for bad in (NAN, INF, -INF, 0, -1, True, "5"):
            with pytest.raises(ValueError, match=r"timeout=") as info:
                t.call("add", timeout=bad)
            assert "within" not in str(info.value)
            with pytest.raises(ValueError, match=r"timeout="):
                t.call_many([("add", {})], timeout=bad)
            with pytest.raises(ValueError, match=r"timeout="):
                t.status(timeout=bad)
        with pytest.raises(OverflowError, match="too large for the wire"):
            t.call("add", k=2**70)
        assert t.call("get") == 1


def test_a_huge_integer_says_it_is_too_large() -> None:
    for big in (2**64, -(2**63) - 1, 2**70):
        with pytest.raises(OverflowError, match=f"integer {big} is too large for the wire"):
            pack_value({"k": big})


def test_a_config_with_several_mistakes_reports_them_all_in_file_order() -> None:
    text = """
[system]
call_timout = 5

[[supervisor]]
name = "w"
stratgey = "one_for_all"
period = true

[[supervisor.tool]]
name = "c"
actor = "tests.tools:Counter"
retsart = "permanent"
limits = { memory_mb = nan }
"""
    with pytest.raises(ConfigError) as info:
        parse_config(text, "tree.toml")
    problems = info.value.problems
    assert len(problems) == 5, problems
    assert "system.call_timout: unknown key" in problems[0]
    assert "stratgey: unknown key" in problems[1]
    assert "period = true is invalid" in problems[2] and "True" not in problems[2]
    assert "retsart: unknown key" in problems[3]
    assert "limits.memory_mb = nan is invalid" in problems[4]
    assert str(info.value).startswith("tree.toml: 5 problems:")


def test_values_are_shown_as_toml_spells_them() -> None:
    from supervisors.tree.config import toml_value

    assert [toml_value(v) for v in (True, False, "x", NAN, INF, -INF, 1, 1.5, [1, "a"], {"a": True})] == \
        ["true", "false", '"x"', "nan", "inf", "-inf", "1", "1.5", '[1, "a"]', "{ a = true }"]


@pytest.mark.timeout(60)
def test_call_many_says_what_an_item_is(system: ToolSystem) -> None:
    t = system.spawn(Counter, name="c")
    for bad, index in ((["add"], 0), ([("add", "x")], 0), ([("add", {}), ("add",)], 1),
                       ([("add", {}), 5], 1)):
        with pytest.raises(TypeError, match=rf"call_many item {index} is .*each item is \(command, "):
            t.call_many(bad)
    assert t.call_many([("add", {}), ("add", None)]) == [1, 2]


def test_spawn_config_must_be_a_mapping() -> None:
    with pytest.raises(SpecError, match="config must be a mapping"):
        tool_spec(Counter, "c", config=[1, 2])


@pytest.mark.timeout(60)
def test_a_hard_memory_breach_names_the_limit(system: ToolSystem) -> None:
    from supervisors import ToolError

    t = system.spawn("tests.tools:Hog", name="h", limits={"memory_mb": 64}, hard_memory=True,
                     on_limit="alert")
    with pytest.raises(ToolError) as info:
        t.call("leak", mb=200)
    assert info.value.type == "MemoryError"
    assert "memory_mb=64" in info.value.message and "hard memory limit" in info.value.message


LATE_SCRIPT = """
from actors import ToolActor, command
from supervisors import ToolSystem, ToolError

with ToolSystem() as system:
    class Late(ToolActor):
        @command
        def hi(self) -> str:
            return "hi"

    try:
        system.spawn(Late, name="late")
    except ToolError as exc:
        print("ERROR:", exc)
"""


@pytest.mark.timeout(60)
def test_a_tool_class_defined_after_start_is_explained(tmp_path) -> None:
    import subprocess
    import sys

    script = tmp_path / "late.py"
    script.write_text(LATE_SCRIPT)
    root = str(__import__("pathlib").Path(__file__).resolve().parents[1])
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=50,
                         cwd=root, env={**__import__("os").environ, "PYTHONPATH": root})
    assert "ERROR:" in out.stdout, out.stderr[-2000:]
    assert "defined in the script before the ToolSystem starts" in out.stdout, out.stdout
