"""MCP names and input schemas, derived on the host from the tree and the tool classes."""

from __future__ import annotations

import re
from typing import Any, Literal

from actors import ToolActor, command
from actors.schema import check_arguments, command_schemas
from supervisors.frontends.mcp_catalog import Catalog, safe_name

NAME_RE = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


class Typed(ToolActor):
    @command
    def go(self, a: int, b: float = 1.5, c: str | None = None, d: list[int] | None = None,
           e: Literal["x", "y"] = "x", f: bool = False, g: dict[str, Any] | None = None) -> None:
        """Go somewhere.

        Longer text that is not part of the description."""

    @command(name="with.dot")
    def dotted(self, **rest: Any) -> None:
        pass


def tree(*tools: tuple[str, str]) -> dict[str, Any]:
    return {"kind": "supervisor", "path": "", "children": [
        {"kind": "tool", "path": p, "actor": a, "state": "running"} for p, a in tools]}


def test_schema_from_type_hints() -> None:
    (go, dotted) = command_schemas(Typed)
    assert go.description == "Go somewhere."
    s = go.input_schema
    assert s["required"] == ["a"] and s["additionalProperties"] is False
    p = s["properties"]
    assert p["a"] == {"type": "integer"} and p["b"]["type"] == "number" and p["b"]["default"] == 1.5
    assert p["c"]["anyOf"] == [{"type": "string"}, {"type": "null"}]
    assert p["d"]["anyOf"][0] == {"type": "array", "items": {"type": "integer"}}
    assert p["e"]["enum"] == ["x", "y"] and p["f"]["type"] == "boolean"
    assert dotted.input_schema["additionalProperties"] is True


def test_argument_checks_name_the_field_and_value() -> None:
    s = command_schemas(Typed)[0].input_schema
    assert check_arguments(s, {"a": 1}) == []
    assert check_arguments(s, {"a": True}) == ["argument a=True is not an integer"]
    assert check_arguments(s, {}) == ["argument 'a' is required"]
    assert "argument e='z' is not one of ['x', 'y']" in check_arguments(s, {"a": 1, "e": "z"})
    assert "argument d=[1, 'x']" in check_arguments(s, {"a": 1, "d": [1, "x"]})[0]
    assert "'zz' is not accepted" in check_arguments(s, {"a": 1, "zz": 0})[0]
    assert check_arguments(s, [1]) == ["arguments must be an object, not list"]


def test_names_are_safe_unique_and_stable() -> None:
    long_path = "a" * 40 + "/" + "b" * 40
    actor = "tests.test_mcp_names:Typed"
    cat = Catalog()
    assert cat.update(tree(("w/t1", actor), ("p/t1", actor), ("solo", actor), (long_path, actor)))
    names = set(cat.entries)
    assert all(NAME_RE.match(n) for n in names), names
    assert {"w-t1_go", "p-t1_go", "solo_go", "solo_with_dot"} <= names
    longs = [n for n in names if n.startswith("b")]
    assert len(longs) == 2 and all(len(n) <= 64 for n in longs)
    again = Catalog()
    again.update(tree(("w/t1", actor), ("p/t1", actor), ("solo", actor), (long_path, actor)))
    assert set(again.entries) == names  # a stable suffix, not a random one
    assert not cat.update(tree(("w/t1", actor), ("p/t1", actor), ("solo", actor), (long_path, actor)))
    assert safe_name("x" * 100) != safe_name("x" * 101)


def test_stopped_failed_and_own_tools_are_not_offered() -> None:
    actor = "tests.test_mcp_names:Typed"
    t = tree(("w/a", actor), ("_audit", actor))
    t["children"].append({"kind": "tool", "path": "w/b", "actor": actor, "state": "failed"})
    t["children"].append({"kind": "tool", "path": "w/c", "actor": actor, "state": "restarting"})
    cat = Catalog()
    cat.update(t)
    assert {e.path for e in cat.entries.values()} == {"w/a", "w/c"}


def test_a_paused_tool_is_an_error_result_that_says_so() -> None:
    """In process: McpFront's tools/call handler against a real tree with a paused tool."""
    import asyncio

    import pytest

    pytest.importorskip("mcp")
    import mcp_types as types

    from supervisors import ToolSystem
    from supervisors.frontends.mcp_server import McpFront

    with ToolSystem() as system:
        counter = system.spawn("examples.counter:Counter", name="counter")
        front = McpFront(system, call_timeout=0.5)
        call = types.CallToolRequestParams(name="counter_add", arguments={"k": 2})
        assert asyncio.run(front._call_tool(None, call)).content[0].text == "2"
        counter.pause()
        result = asyncio.run(front._call_tool(None, call))
        assert result.is_error and "paused" in result.content[0].text
        counter.resume()


def test_a_pool_is_offered_once_under_its_own_path() -> None:
    actor = "tests.test_mcp_names:Typed"
    t = {"kind": "supervisor", "path": "", "children": [
        {"kind": "tool", "path": f"w/fetch#{k}", "pool": "fetch", "actor": actor, "state": "running"}
        for k in (1, 2, 3)]}
    cat = Catalog()
    cat.update(t)
    assert {e.path for e in cat.entries.values()} == {"w/fetch"}
    assert "fetch_go" in cat.entries and all(NAME_RE.match(n) for n in cat.entries)
