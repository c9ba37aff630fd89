"""What is shared before a fork, so each actor process owns as few pages as it can.

Every actor process is forked from its parent (Thespian's multiproc bases):
tools from their supervisor, supervisors from theirs. The child shares its
parent's pages copy-on-write until one of them writes to a page, and CPython
writes to every object it touches (reference counts, the cyclic GC's links),
so whatever a child does after the fork turns shared pages into its own. This
module does these things about it (issue 10, "share what can be shared before
forking"; see docs/scaling.md):

- ``preload()`` imports, in the parent, every module a tool's process imports
  after its fork (the runner and what it pulls in). Imported in the child
  instead, their code objects, functions and dicts were new private pages in
  every tool (about 3 MiB each). The host calls it before it starts the
  actor system, so every process of the tree shares one copy.
- ``preload()`` then copies the code objects of the functions the actor
  processes run next to each other (``actors.hotcode``), so each process copies a
  few dense pages of them instead of one page per function.
- ``forking()`` wraps the call that forks a child actor: the parent's GC is
  off across the fork (no collection rewrites object links between the fork
  and the child's first instruction), and the child freezes everything it
  inherited (``gc.freeze()``) as the very first thing it does, so its
  collections never walk (and so never copy) the parent's objects. Those
  objects stay alive in the child anyway: the forking call's frames hold them
  until the process ends. The parent's GC is left as it was.
- ``freeze_inherited()``, called first by every shell, freezes what a process
  inherited when its fork was not wrapped in ``forking()`` (the root: Thespian's
  admin forks it).
- ``install()`` spares the child Thespian's ``inspect.signature`` of the actor
  class at start (it only decides which keyword arguments to pass, and our
  shells take none), which touched a few hundred KiB of inherited objects.

``TOOLVISOR_SHARING=off`` turns all of it off (to measure the difference:
``python -m benchmarks --only memory``).

Opt-in, ``TOOLVISOR_PRELOAD_TOOLS=1``: ``preload_tool(spec)`` imports the tool's own
module in its supervisor before the fork (gunicorn's ``--preload``), so every instance
shares it. Off by default because the module's import-time code then runs in the
supervisor: it blocks the supervisor for as long as the import takes, and what the
import starts (threads, a GPU context, open files) lives in the supervisor and is
forked into every tool. Tools whose class is in ``__main__`` and tools with a security
context (their module must see its environment, working directory and umask, and is
held to its net and exec permissions as it is imported) are never preloaded, and one
whose module a sibling's preload brought into the supervisor imports it again
(``import_afresh``). A module the host imported before ``with ToolSystem()`` is shared
without it.
"""

from __future__ import annotations

import gc
import importlib
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from loguru import logger

from actors import hotcode

#: Modules a tool's process needs after its fork (``actors.shell`` loads the runner by name).
TOOL_MODULES = ("actors.runner", "actors.peers", "actors.links", "actors.isolation",
                "actors.sandbox", "actors.waits", "actors.toolcontext", "actors.breaker",
                "actors.timings", "actors.busy", "actors.fastpath", "resource")


def enabled() -> bool:
    return os.environ.get("TOOLVISOR_SHARING", "on").lower() not in ("off", "0", "no", "false")


_preloaded = False


def preload() -> None:
    """Import what a tool's process would import after its fork (once per process)."""
    global _preloaded
    if _preloaded or not enabled():
        return
    for name in TOOL_MODULES:
        try:
            importlib.import_module(name)
        except ImportError:  # pragma: no cover - e.g. no ``resource`` off POSIX
            pass
    try:
        hotcode.relocate()
    except Exception as exc:  # (only memory is at stake: say so and go on)
        logger.warning("hot code not relocated ({}: {}); each actor process will own a few "
                       "hundred KiB more", type(exc).__name__, exc)
    _preloaded = True


_refused: set[str] = set()
_tools_loaded: set[str] = set()


def preloaded_tools() -> list[str]:
    """The tool modules ``preload_tool`` loaded here (a zygote loads them too)."""
    return sorted(_tools_loaded)


def preload_tool(spec: dict[str, Any]) -> bool:
    """With ``TOOLVISOR_PRELOAD_TOOLS=1``: import the module of the tool ``spec`` names, here,
    before its process is forked. True if the module is loaded now; never raises."""
    if not enabled() or os.environ.get("TOOLVISOR_PRELOAD_TOOLS", "").lower() not in ("1", "on", "yes",
                                                                                      "true"):
        return False
    module = str(spec.get("actor") or "").partition(":")[0]
    if not module or module == "__main__" or spec.get("main") or module in _refused or \
            spec.get("security") is not None:  # (see the docstring)
        return False
    if module not in sys.modules:
        try:
            importlib.import_module(module)
        except BaseException:  # the tool's own process imports it again and reports the failure
            _refused.add(module)
            return False
    _tools_loaded.add(module)
    return True


def import_afresh(actor: str) -> None:
    """In a tool with a security context, before it loads its class: if its module came
    preloaded from its supervisor (for a sibling without one), drop it, so the tool
    imports it again under its own environment, working directory, umask and
    permissions. (Modules that one imports stay as they came.)"""
    module = str(actor or "").partition(":")[0]
    if module in _tools_loaded:
        sys.modules.pop(module, None)
        _tools_loaded.discard(module)


class _Fork:
    """State the child reads in its first instant (module level: the child inherits it)."""

    active = False      # a ``forking()`` block is forking a child actor now
    gc_was_on = True    # the parent's GC setting before the block
    frozen_in = 0       # the pid of the process that froze what it inherited


def _in_child() -> None:
    """Runs in every forked child before any Python code of its own (os.register_at_fork)."""
    if not _Fork.active:
        _Fork.frozen_in = 0  # (its parent's pid, freed soon, could be this process's later)
        return
    _Fork.active = False
    gc.freeze()
    _Fork.frozen_in = os.getpid()
    if _Fork.gc_was_on:
        gc.enable()


def frozen_here() -> bool:
    """Whether this process froze what it inherited (at its fork or at its shell's start)."""
    return _Fork.frozen_in == os.getpid()


def freeze_inherited() -> None:
    """Freeze what this actor process inherited if its fork did not (every shell calls it
    first): the root supervisor is forked by Thespian's admin, outside ``forking()``, and
    without it the root's first full collection walked, so copied, every inherited
    object (about 7 MiB, after some 800 restarts in the tree)."""
    if enabled() and _Fork.frozen_in != os.getpid():
        gc.freeze()
        _Fork.frozen_in = os.getpid()


_hooked = False


def _hook() -> None:
    global _hooked
    if not _hooked and hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=_in_child)
        _hooked = True


@contextmanager
def forking() -> Iterator[None]:
    """Wrap the call that forks a child actor (see the module docstring)."""
    if not enabled():
        yield
        return
    preload()
    _hook()
    was_on = gc.isenabled()
    gc.disable()
    _Fork.active, _Fork.gc_was_on = True, was_on
    try:
        yield
    finally:
        _Fork.active = False
        if was_on:
            gc.enable()


_installed = False


def install() -> None:
    """Let Thespian build our shells without ``inspect.signature`` (once per process)."""
    global _installed
    if _installed or not enabled():
        return
    from thespian.system import utilis

    original = utilis.withPossibleInitArgs.create

    def create(self: Any, klass: Any) -> Any:
        # A Shell's __init__ takes (*args, **kw) and Thespian passes it only the keywords
        # named in the signature: none. The result is the same as klass().
        if getattr(klass, "_toolvisor_shell", False):
            return klass()
        return original(self, klass)

    utilis.withPossibleInitArgs.create = create  # type: ignore[method-assign]
    _installed = True
