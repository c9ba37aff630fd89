"""ToolActor: the base class a tool subclasses.

A tool is plain Python: lifecycle callbacks plus ``@command`` methods. The
runtime creates it inside its own process and calls it one message at a time,
so a tool never needs a lock.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from loguru import logger

from actors.toolcontext import ToolContext


class _Runtime(Protocol):
    def request_exit(self, normal: bool, error: BaseException | str | None) -> None: ...
    def schedule(self, delay: float, fn: Callable[[], Any]) -> int: ...
    def cancel(self, token: int) -> None: ...
    def peer(self, path: str) -> Any: ...
    def checkpoint(self, expires_in: float | None) -> None: ...
    @property
    def deadline(self) -> float | None: ...


class ToolActor:
    """Subclass this; override the callbacks you need and mark commands with ``@command``.

    Attributes set by the runtime before ``on_init``: ``name`` (``"counter"``),
    ``path`` (``"workers/counter"``), ``config`` (the spawn config), ``log``
    (a loguru logger bound to the tool's path) and ``tmpdir`` (a private
    temporary directory, also ``$TMPDIR``, removed when the tool ends).
    """

    name: str = ""
    path: str = ""
    tmpdir: str = ""
    config: dict[str, Any]
    log: Any = logger
    _runtime: _Runtime | None = None
    _context: ToolContext | None = None

    # -- lifecycle callbacks: raise to report a failure ---------------------------
    def on_init(self, config: dict[str, Any]) -> None:
        """INIT: validate the config and allocate; raising fails the start."""

    def on_run(self) -> None:
        """RUN: the tool is about to serve calls."""

    def on_pause(self) -> None:
        """PAUSE: incoming calls are held (in order) until resume."""

    def on_resume(self) -> None:
        """RESUME: held calls are served next, in the order they came."""

    def on_stop(self) -> None:
        """STOP: release what the tool holds; called once before the process ends."""

    # -- things a tool can do ---------------------------------------------------------
    def exit(self, error: BaseException | str | None = None) -> None:
        """End this tool after the current message.

        Without ``error`` it is a normal exit (a transient or temporary tool stays
        down, a permanent one is restarted); with ``error`` an abnormal one.
        """
        self._require_runtime().request_exit(error is None, error)

    def after(self, delay: float, fn: Callable[[], Any]) -> int:
        """Run ``fn()`` in this tool after ``delay`` seconds (held while paused).

        Returns a token for ``cancel``. An exception in ``fn`` is a failure of the tool.
        """
        return self._require_runtime().schedule(delay, fn)

    def cancel(self, token: int) -> None:
        """Forget a timer set with ``after``."""
        self._require_runtime().cancel(token)

    def tool(self, path: str) -> Any:
        """A handle on another tool by its path from the system root (``"workers/fetch"``).

        ``.call(command, timeout=None, **args)`` blocks this tool until the answer;
        ``.send(command, **args)`` and ``.ask(command, on_reply=fn, **args)`` never
        block. See ``actors.peers.ToolRef`` and docs/messaging.md.
        """
        return self._require_runtime().peer(path)

    @property
    def context(self) -> ToolContext:
        """This tool's context: a mapping whose reads fall back to its supervisors' and the
        system's keys, and whose writes are the tool's own. Restored from the last
        ``checkpoint()`` when the tool starts."""
        if self._context is None:
            self._context = ToolContext()
        return self._context

    def checkpoint(self, expires_in: float | None = None) -> None:
        """Persist this tool's own context keys; returns once the store has them on disk.

        A value that cannot be stored raises ``CheckpointError`` here (nothing is
        written). ``expires_in`` (seconds) makes the checkpoint forgotten after that long.
        """
        self._require_runtime().checkpoint(expires_in)

    @property
    def call_deadline(self) -> float | None:
        """Wall-clock deadline (``time.time()``) of the call being served, or None."""
        return self._runtime.deadline if self._runtime is not None else None

    def _require_runtime(self) -> _Runtime:
        if self._runtime is None:
            raise RuntimeError("this ToolActor is not running under toolvisor; "
                               "spawn it with a supervisor (supervisor.spawn(...))")
        return self._runtime
