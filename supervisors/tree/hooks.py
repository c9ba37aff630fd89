"""LifecycleHook: code that runs around every tool's lifecycle steps.

Hooks are registered on the system or on a supervisor and run, inside the
supervisor's process, for every tool beneath it. A hook that raises is logged
and recorded as an event; it never takes the supervisor down and never stops
the lifecycle step it was called for.
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from typing import Any

from loguru import logger

from actors.errors import ToolError


class LifecycleHook:
    """Override any of these; ``tool`` is the tool's path, e.g. ``"workers/counter"``."""

    def pre_start(self, tool: str) -> None:
        """Before the tool's process is started (also before each restart)."""

    def post_start(self, tool: str) -> None:
        """After the tool ran ``on_init`` and ``on_run`` and serves calls."""

    def pre_stop(self, tool: str) -> None:
        """Before the tool is asked to stop."""

    def post_stop(self, tool: str) -> None:
        """After the tool's process has ended."""

    def on_error(self, tool: str, error: ToolError) -> None:
        """The tool failed (crash, raising callback, fatal command error, failed start)."""


def pack_hooks(hooks: Sequence[LifecycleHook]) -> bytes:
    """Hooks travel to supervisor processes pickled: define them at module level."""
    for h in hooks:
        if not isinstance(h, LifecycleHook):
            raise TypeError(f"hooks must be LifecycleHook instances, got {type(h).__name__}")
    try:
        return pickle.dumps(list(hooks))
    except Exception as exc:
        raise TypeError(f"hooks must be picklable (define the class at module level): {exc}")


def unpack_hooks(data: bytes | None) -> list[LifecycleHook]:
    if not data:
        return []
    try:
        return list(pickle.loads(data))
    except Exception as exc:
        logger.error("could not load lifecycle hooks ({}); running without them", exc)
        return []


def run_hooks(hooks: Sequence[LifecycleHook], event: str, tool: str, *args: Any) -> list[str]:
    """Call ``event`` on each hook; return a line for each hook that raised."""
    problems = []
    for hook in hooks:
        try:
            getattr(hook, event)(tool, *args)
        except Exception as exc:
            line = f"hook {type(hook).__name__}.{event}({tool}) raised {type(exc).__name__}: {exc}"
            logger.warning(line)
            problems.append(line)
    return problems
