"""``@command``: how a tool says which methods callers may invoke, and argument checks."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, TypeVar

from actors.errors import BadArguments

F = TypeVar("F", bound=Callable[..., Any])

_MARK = "__toolvisor_command__"
_IDEMPOTENT = "__toolvisor_idempotent__"


def command(fn: F | None = None, *, name: str | None = None, idempotent: bool = False) -> Any:
    """Mark a ToolActor method as a command callers may invoke by name.

    ``@command`` uses the method's name; ``@command(name="x")`` another one.
    ``@command(idempotent=True)`` says running it twice does no harm, so a caller
    may retry it after an error its policy calls transient (see docs/recovery.md).
    """

    def mark(f: F) -> F:
        setattr(f, _MARK, name or f.__name__)
        setattr(f, _IDEMPOTENT, bool(idempotent))
        return f

    return mark(fn) if fn is not None else mark


def command_table(cls: type) -> dict[str, str]:
    """Command name -> method name, for a ToolActor class and its bases."""
    table: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        for attr, value in vars(klass).items():
            target = value.__func__ if isinstance(value, (staticmethod, classmethod)) else value
            cname = getattr(target, _MARK, None)
            if cname:
                table[cname] = attr
    return table


def idempotent_commands(cls: type) -> set[str]:
    """The command names of ``cls`` declared ``idempotent=True``."""
    names = set()
    for cname, attr in command_table(cls).items():
        value = getattr(cls, attr, None)
        target = getattr(value, "__func__", value)
        if getattr(target, _IDEMPOTENT, False):
            names.add(cname)
    return names


def bind(fn: Callable[..., Any], command_name: str, args: dict[str, Any]) -> inspect.BoundArguments:
    """Check ``args`` against ``fn``'s signature; raise ``BadArguments`` saying what is wrong."""
    sig = inspect.signature(fn)
    try:
        bound = sig.bind(**args)
    except TypeError as exc:
        raise BadArguments(f"command {command_name!r} takes ({_describe(sig)}): {exc}")
    return bound


def _describe(sig: inspect.Signature) -> str:
    parts = []
    for p in sig.parameters.values():
        parts.append(p.name if p.default is inspect.Parameter.empty else f"{p.name}={p.default!r}")
    return ", ".join(parts)
