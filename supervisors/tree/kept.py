"""How a supervisor keeps the specs of the children below its child supervisors, compactly.

A supervisor keeps the spec of each child so it can start it again; a child supervisor's
spec holds the specs of that supervisor's own children, and so on down, so the root
keeps the spec of every tool in the tree (to restart a supervisor with all its children).
As plain dicts that is about 1.3 KiB per tool, most of it fields left at their defaults
(the limits of the security level, the timeouts, the flags), and it made the root grow
with the tree (issue 10).

Below a supervisor's direct children, specs are kept in a ``KeptChildren``: each tool's
spec as msgpack bytes holding only the fields that differ from what ``tool_spec`` gives
by default for its security level (about 60 bytes for a tool spawned with defaults); a
supervisor's spec stays a dict, its own children kept the same way. Reading a kept spec
gives back exactly the original (same keys, order, values and types): ``keep`` checks
each packed form against the spec it came from, and keeps a spec whole (still packed)
when its delta would not give it back.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from functools import lru_cache
from typing import Any, overload

from actors.codec import pack_value, unpack_value

_WHOLE = None  # the first item of a packed spec kept whole (no template)


@lru_cache(maxsize=8)
def _template(level: str) -> bytes | None:
    """The spec ``tool_spec`` gives a tool at security level ``level`` with every field left
    at its default, as it arrives over the wire (packed; unpacked afresh for each use, so
    no caller shares its dicts). None for a level ``tool_spec`` refuses."""
    from actors.tool import ToolActor
    from supervisors.tree.policy import SpecError
    from supervisors.tree.specs import tool_spec

    try:
        return pack_value(tool_spec(ToolActor, "x", security_level=level))
    except SpecError:
        return None


def warm() -> None:
    """Build every security level's template now. The host calls this before the actor
    system starts, so every supervisor inherits them: built in the root as it kept its
    first spec, they left it about 0.2 MiB larger (the pages it copied running
    ``tool_spec`` for the first time; 25 tools under one supervisor: 6.0 MiB against 5.8)."""
    from supervisors.tree.policy import SECURITY_LEVELS

    for level in SECURITY_LEVELS:
        _defaults(level)


@lru_cache(maxsize=8)
def _defaults(level: str) -> dict[str, Any] | None:
    """``_template(level)`` unpacked once, to compare with (never handed out)."""
    template = _template(level)
    return None if template is None else unpack_value(template)


def same(a: Any, b: Any) -> bool:
    """``a == b`` with the same types and, for dicts, the same key order, all the way down
    (``5 == 5.0`` and ``{"a": 1, "b": 2} == {"b": 2, "a": 1}``, but a kept spec must give
    back exactly what it kept); NaN is the same as NaN."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return len(a) == len(b) and all(ka == kb and same(va, vb) for (ka, va), (kb, vb)
                                        in zip(a.items(), b.items(), strict=True))
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and a != a:
        return b != b  # NaN, packed and unpacked, is still NaN
    return bool(a == b)


def pack_spec(spec: dict[str, Any]) -> bytes:
    """``spec`` (a child without children of its own) as compact bytes; ``unpack_spec``
    gives it back exactly. Raises ValueError if it would not (a tuple comes back a list),
    TypeError or OverflowError if a value cannot be packed at all."""
    level = spec.get("security_level")
    base = _defaults(level) if spec.get("kind") == "tool" and isinstance(level, str) else None
    if base is not None:
        delta = {k: v for k, v in spec.items() if k not in base or not same(v, base[k])}
        packed = pack_value([level, delta])
        if same(unpack_spec(packed), spec):
            return packed
    packed = pack_value([_WHOLE, spec])
    if not same(unpack_spec(packed), spec):
        raise ValueError(f"the spec of {spec.get('name')!r} does not come back the same from msgpack")
    return packed


def unpack_spec(packed: bytes) -> dict[str, Any]:
    """The spec ``pack_spec`` packed: a new dict, the caller's to change."""
    level, delta = unpack_value(packed)
    if level is _WHOLE:
        return delta
    template = _template(level)
    if template is None:
        raise ValueError(f"a kept spec names security level {level!r}, which has no defaults")
    base = unpack_value(template)
    spec = {k: delta.pop(k) if k in delta else v for k, v in base.items()}
    spec.update(delta)  # fields the template does not have, in their order
    return spec


class KeptChildren(Sequence[dict[str, Any]]):
    """The children in a kept supervisor spec, in order, by name. Reads as a sequence of
    the children's specs (each a new dict, exactly as kept: changing it changes nothing
    here); ``put`` and ``drop`` change it. A child supervisor stays a dict whose own
    ``children`` are a KeptChildren; any other child is packed (``pack_spec``)."""

    __slots__ = ("_kept",)

    def __init__(self, specs: Iterable[dict[str, Any]] = ()) -> None:
        self._kept: dict[str, bytes | dict[str, Any]] = {}
        for spec in specs:
            self.put(spec)

    def put(self, spec: dict[str, Any]) -> None:
        """Keep ``spec``: in place of the child of that name, or last if there is none."""
        self._kept[spec["name"]] = keep(spec)

    def drop(self, name: str) -> None:
        """Forget the child ``name`` (nothing if there is none)."""
        self._kept.pop(name, None)

    def node(self, name: str) -> dict[str, Any] | None:
        """The kept spec of the child supervisor ``name`` (changes to its ``children`` are
        kept), or None if there is no such child or it is kept packed (a tool)."""
        entry = self._kept.get(name)
        return entry if isinstance(entry, dict) else None

    def names(self) -> list[str]:
        return list(self._kept)

    def kinds(self) -> list[tuple[str, str]]:
        """(name, kind) of each child, kind ``"tool"`` where its spec has none; without
        unpacking every spec whole (a status lists them)."""
        out = []
        for name, entry in self._kept.items():
            if isinstance(entry, dict):
                out.append((name, entry.get("kind", "tool")))
                continue
            level, fields = unpack_value(entry)
            default = "tool" if level is _WHOLE else (_defaults(level) or {}).get("kind", "tool")
            out.append((name, fields.get("kind", default)))
        return out

    def full(self) -> list[dict[str, Any]]:
        """Every child's spec, whole, as the list a Start message carries."""
        return [_full(entry) for entry in self._kept.values()]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return (_full(entry) for entry in self._kept.values())

    def __len__(self) -> int:
        return len(self._kept)

    @overload
    def __getitem__(self, index: int) -> dict[str, Any]: ...
    @overload
    def __getitem__(self, index: slice) -> list[dict[str, Any]]: ...

    def __getitem__(self, index: int | slice) -> dict[str, Any] | list[dict[str, Any]]:
        if isinstance(index, slice):
            return self.full()[index]
        return _full(list(self._kept.values())[index])

    def __eq__(self, other: object) -> bool:
        if isinstance(other, KeptChildren):
            return self.full() == other.full()
        if isinstance(other, list):
            return self.full() == other
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"KeptChildren({self.names()!r})"


def keep(spec: dict[str, Any]) -> bytes | dict[str, Any]:
    """How a spec is kept below a supervisor's direct children: a supervisor (a spec with
    ``children``) as a new dict with its children kept; anything else packed, or as it is
    if packing would not give it back (specs from the wire always pack)."""
    if "children" in spec:
        return compact(spec)
    try:
        return pack_spec(spec)
    except (TypeError, ValueError, OverflowError):
        return spec


def compact(spec: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``spec`` whose ``children`` (if it has them) are kept compactly; ``spec``
    itself is not changed. A spec already compact is returned as it is."""
    children = spec.get("children")
    if children is None or isinstance(children, KeptChildren):
        return spec
    return {**spec, "children": KeptChildren(children)}


def full_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """``spec`` with its kept children made whole again (for the wire); a copy."""
    children = spec.get("children")
    if isinstance(children, KeptChildren):
        return {**spec, "children": children.full()}
    return dict(spec)


def _full(entry: bytes | dict[str, Any]) -> dict[str, Any]:
    if isinstance(entry, dict):
        return full_spec(entry)
    return unpack_spec(entry)
