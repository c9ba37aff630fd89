"""Hot code kept together before the fork, so each actor process copies fewer pages.

CPython 3.11 writes to every code object it runs (its reference count, then its
quickened bytecode), so the first time a forked process runs a function, the whole
page holding that function's code object becomes the process's own. Imported code
objects lie in import order, each next to its module's cold functions, strings and
tuples: the 340 code objects an idle tool runs lay on about 300 of its 1,400
private pages, and a supervisor's likewise (issue 10; docs/scaling.md, Memory).
Copied together they lie on about 150 (the copies still fill holes in the
allocator's pools), and an idle tool is 0.5 MiB smaller, a supervisor 0.6-0.8.

``relocate()`` runs once in the host, before the actor system forks its first
process: it gives each function named in ``hotcode.txt`` a fresh copy of its code
object, allocated one after the other, tools' functions first. A copy is equal to
the original in every respect Python can see except identity (same bytecode,
constants, names, line table); the originals are kept alive so the holes they would
leave are not refilled by the actor processes' own objects.

``hotcode.txt`` lists ``module<TAB>qualified name`` of the code objects the actor
processes run, most shared first. It is recorded by ``python -m benchmarks.hotcode``
(``make hotcode``); a name that no longer exists is skipped, so a stale list only
costs memory. ``TOOLVISOR_HOTCODE=off`` (or ``TOOLVISOR_SHARING=off``) turns it off.
"""

from __future__ import annotations

import gc
import os
import sys
import types
from pathlib import Path
from typing import Any

LIST = Path(__file__).with_name("hotcode.txt")

#: the code objects replaced, kept alive (see the module docstring)
_originals: list[types.CodeType] = []
_done = False


def enabled() -> bool:
    return os.environ.get("TOOLVISOR_HOTCODE", "on").lower() not in ("off", "0", "no", "false")


def read_list(path: Path = LIST) -> list[tuple[str, str]]:
    """The ``(module, qualified name)`` pairs of ``path``, in its order ([] if unreadable)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return []
    out = []
    for line in text.splitlines():
        if line and not line.startswith("#"):
            module, _, qualname = line.partition("\t")
            if qualname:
                out.append((module, qualname))
    return out


def relocate() -> int:
    """Copy the code objects ``hotcode.txt`` names together (once per process, in the
    host before its first fork); how many functions now run a copy."""
    global _done
    if _done or not enabled():
        return 0
    _done = True
    return move(read_list())


def move(keys: list[tuple[str, str]]) -> int:
    """Give each loaded function whose code object (or a code object nested in it) is
    named in ``keys`` a fresh copy, allocated in the order of ``keys``; how many
    functions now run a copy. Names of nothing loaded are skipped."""
    rank: dict[tuple[str, str], int] = {}
    for key in keys:
        rank.setdefault(key, len(rank))
    if not rank:
        return 0
    modules = {module for module, _ in rank}
    found: list[tuple[int, types.FunctionType]] = []
    for function in _functions(modules):
        best = _best_rank(function.__globals__["__name__"], function.__code__, rank, set())
        if best is not None:
            found.append((best, function))
    found.sort(key=lambda pair: pair[0])
    copies: dict[int, types.CodeType] = {}
    moved = 0
    for _, function in found:
        code = function.__code__
        new = _copy(function.__globals__["__name__"], code, rank, copies)
        if new is not code:
            function.__code__ = new
            moved += 1
    return moved


def unknown(keys: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The names in ``keys`` that no loaded function's code (or code nested in it) has:
    what a stale list holds."""
    have: set[tuple[str, str]] = set()
    for function in _functions({module for module, _ in keys}):
        _names(function.__globals__["__name__"], function.__code__, have)
    return [key for key in keys if key not in have]


def _functions(modules: set[str]) -> list[types.FunctionType]:
    """The loaded functions of ``modules``: those the cyclic GC lists, and those reached
    from the modules themselves (functions, methods, properties, wrapped functions),
    which covers a host that froze its objects (``gc.freeze()`` hides them from
    ``gc.get_objects``). Each once."""
    out: dict[int, types.FunctionType] = {}

    def take(obj: object) -> None:
        if type(obj) is types.FunctionType and id(obj) not in out and \
                obj.__globals__.get("__name__") in modules:
            out[id(obj)] = obj
            take(getattr(obj, "__wrapped__", None))

    for obj in gc.get_objects():
        take(obj)
    classes: set[int] = set()
    for name in modules:
        module = sys.modules.get(name)
        if module is None:
            continue
        for value in list(vars(module).values()):
            take(value)
            if isinstance(value, type) and value.__module__ == name:
                _from_class(value, take, classes)
    return list(out.values())


def _from_class(cls: type, take: Any, seen: set[int]) -> None:
    if id(cls) in seen:
        return
    seen.add(id(cls))
    for value in list(vars(cls).values()):
        if isinstance(value, (staticmethod, classmethod)):
            take(value.__func__)
        elif isinstance(value, property):
            for part in (value.fget, value.fset, value.fdel):
                take(part)
        elif isinstance(value, type) and value.__module__ == cls.__module__:
            _from_class(value, take, seen)
        else:
            take(value)


def _names(module: str | None, code: types.CodeType, out: set[tuple[str, str]]) -> None:
    out.add((str(module), code.co_qualname))
    for const in code.co_consts:
        if type(const) is types.CodeType:
            _names(module, const, out)


def _best_rank(module: str, code: types.CodeType, rank: dict[tuple[str, str], int],
               seen: set[int]) -> int | None:
    """The lowest rank of ``code`` or of a code object nested in it (None: none listed)."""
    seen.add(id(code))
    best = rank.get((module, code.co_qualname))
    for const in code.co_consts:
        if type(const) is types.CodeType and id(const) not in seen:
            inner = _best_rank(module, const, rank, seen)
            if inner is not None and (best is None or inner < best):
                best = inner
    return best


def _copy(module: str, code: types.CodeType, rank: dict[tuple[str, str], int],
          copies: dict[int, types.CodeType]) -> types.CodeType:
    """A fresh copy of ``code`` if it or a code object nested in it is listed, else
    ``code``. Nested code objects are constants of their function's code: a listed one
    is copied inside a copy of its parent. Each original is copied once."""
    if id(code) in copies:
        return copies[id(code)]
    consts = tuple(_copy(module, c, rank, copies) if type(c) is types.CodeType else c
                   for c in code.co_consts)
    inner_moved = any(a is not b for a, b in zip(consts, code.co_consts, strict=True))
    if not inner_moved and (module, code.co_qualname) not in rank:
        return code
    new = code.replace(co_consts=consts if inner_moved else code.co_consts)
    copies[id(code)] = new
    _originals.append(code)
    return new


def in_use() -> int:
    """How many code objects were replaced in this process (0: not relocated)."""
    return len(_originals)
