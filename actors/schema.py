"""JSON Schemas of a tool's commands, derived from their type hints (for MCP and other doors).

``command_schemas(cls)`` reads the class's command table (``actors.commands``)
and each method's signature: a parameter's annotation becomes its JSON type
(``int`` -> integer, ``float`` -> number, ``str``, ``bool``, ``list[X]`` ->
array of X, ``dict`` -> object, ``X | None`` -> X or null, ``Literal[...]`` ->
enum), a parameter without a default is required, and only a ``**kwargs``
parameter lets other names through. ``check_arguments`` checks a mapping
against such a schema and says what is wrong, naming the field and the value.
"""

from __future__ import annotations

import inspect
import types
import typing
from dataclasses import dataclass
from typing import Any

from actors.commands import command_table

_SIMPLE: dict[Any, dict[str, Any]] = {
    int: {"type": "integer"}, float: {"type": "number"}, str: {"type": "string"},
    bool: {"type": "boolean"}, list: {"type": "array"}, tuple: {"type": "array"},
    dict: {"type": "object"}, bytes: {"type": "string"}, type(None): {"type": "null"},
}


@dataclass(frozen=True)
class CommandSchema:
    """One command: its name, a one-paragraph description and the JSON Schema of its arguments."""

    name: str
    description: str
    input_schema: dict[str, Any]


def type_schema(hint: Any) -> dict[str, Any]:
    """The JSON Schema of one type hint ({} when it says nothing checkable)."""
    if hint in _SIMPLE:
        return dict(_SIMPLE[hint])
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        parts = [type_schema(a) for a in args]
        return {} if any(p == {} for p in parts) else {"anyOf": parts}
    if origin is typing.Literal:
        return {"enum": list(args)}
    if origin in (list, tuple, set, frozenset) or origin is getattr(typing, "Sequence", None):
        schema: dict[str, Any] = {"type": "array"}
        if args and origin is not tuple:
            schema["items"] = type_schema(args[0])
        return schema
    if origin is dict:
        return {"type": "object"}
    return {}


def command_schemas(cls: type) -> list[CommandSchema]:
    """Every command of ``cls`` with its description (the docstring) and argument schema."""
    out = []
    for cname, attr in sorted(command_table(cls).items()):
        fn = getattr(cls, attr)
        doc = inspect.getdoc(fn) or f"The {cname!r} command of {cls.__name__}."
        out.append(CommandSchema(cname, doc.split("\n\n")[0].strip(), input_schema(fn)))
    return out


def input_schema(fn: Any) -> dict[str, Any]:
    """``{"type": "object", "properties": ..., "required": [...]}`` for a command method."""
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # an annotation that does not resolve: say nothing about its type
        hints = {}
    props: dict[str, Any] = {}
    required: list[str] = []
    extra = False
    params = list(inspect.signature(fn).parameters.values())
    if params and params[0].name == "self":
        params = params[1:]
    for p in params:
        if p.kind is p.VAR_KEYWORD:
            extra = True
            continue
        if p.kind in (p.VAR_POSITIONAL, p.POSITIONAL_ONLY):
            continue
        schema = type_schema(hints.get(p.name, Any))
        if p.default is inspect.Parameter.empty:
            required.append(p.name)
        elif _jsonable(p.default):
            schema["default"] = p.default
        props[p.name] = schema
    result: dict[str, Any] = {"type": "object", "properties": props, "additionalProperties": extra}
    if required:
        result["required"] = required
    return result


def _jsonable(value: Any) -> bool:
    return value is None or isinstance(value, (bool, int, float, str))


def check_arguments(schema: dict[str, Any], args: Any) -> list[str]:
    """What is wrong with ``args`` for ``schema`` (an empty list when nothing is)."""
    if not isinstance(args, dict):
        return [f"arguments must be an object, not {type(args).__name__}"]
    problems = []
    props = schema.get("properties", {})
    for name in schema.get("required", []):
        if name not in args:
            problems.append(f"argument {name!r} is required")
    for name, value in args.items():
        if name not in props:
            if not schema.get("additionalProperties", True):
                problems.append(f"argument {name!r} is not accepted (accepted: {', '.join(props) or 'none'})")
            continue
        if not _matches(props[name], value):
            problems.append(f"argument {name}={_short(value)} is not {_describe(props[name])}")
    return problems


def _matches(schema: dict[str, Any], value: Any) -> bool:
    if "anyOf" in schema:
        return any(_matches(s, value) for s in schema["anyOf"])
    if "enum" in schema:
        return value in schema["enum"]
    kind = schema.get("type")
    if kind is None:
        return True
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "string":
        return isinstance(value, str)
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "null":
        return value is None
    if kind == "object":
        return isinstance(value, dict)
    if kind == "array":
        items = schema.get("items")
        return isinstance(value, list) and (not items or all(_matches(items, v) for v in value))
    return True


def _describe(schema: dict[str, Any]) -> str:
    if "anyOf" in schema:
        return " or ".join(_describe(s) for s in schema["anyOf"])
    if "enum" in schema:
        return f"one of {schema['enum']!r}"
    kind = schema.get("type", "any value")
    if kind == "array" and schema.get("items"):
        return f"an array of {_describe(schema['items'])}"
    return {"integer": "an integer", "array": "an array", "object": "an object"}.get(kind, f"a {kind}")


def _short(value: Any, width: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= width else text[:width - 3] + "..."
