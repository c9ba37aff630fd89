"""Caller-side retries of transient errors, with backoff and jitter, within the call's deadline.

The callee decides whether a failed call may be retried: its runner marks the
error (``ToolError.retry``, the policy's ``Retry`` settings as a dict) only when
the command was declared ``@command(idempotent=True)`` and the error's type is
one the tool's policy lists as ``transient``. The caller (a host handle, the
asyncio front, or a tool calling a tool) then sends the call again after
``initial * multiplier**n`` seconds (at most ``maximum``, plus up to ``jitter``
of that at random), up to ``attempts`` more times, and never past the call's
deadline. A command that is not idempotent is never retried.

A tool that dies while running a call is a ``ToolUnavailable`` to its caller. When the
policy names that class as transient, an idempotent command in flight when its tool
died is run once more, on the next instance: the tool marks such a call in its busy
marker as it starts it (``actors.busy.may_rerun``; call ids are unique across
processes, ``actors.busy.call_ids``), and its route carries the ``Retry`` settings
(``rerun_settings``), since the tool can no longer mark the error.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from actors.errors import ToolError, ToolUnavailable

T = TypeVar("T")
CRASH = ToolUnavailable.__name__  # named in a policy's transient: rerun after a crash


def rerun_settings(transient: Any, retry: dict[str, Any] | None) -> dict[str, Any] | None:
    """The ``Retry`` settings a caller uses for a call whose tool died in it, or None.

    Only a policy whose ``transient`` names ``ToolUnavailable`` itself reruns (a base such
    as ``Exception`` does not turn it on: a rerun is a second run of a command, asked for
    by name), and one more run at most (a command that kills its tool twice is not having
    a transient problem, and every death is a restart that counts against the
    supervisor's intensity)."""
    if not retry or not int(retry.get("attempts", 0)) or CRASH not in (transient or ()):
        return None
    return {**retry, "attempts": 1}


def delay(settings: dict[str, Any], attempt: int, rand: float | None = None) -> float:
    """Seconds before retry number ``attempt`` (0 = the first)."""
    initial = float(settings.get("initial", 0.05))
    base = min(float(settings.get("maximum", 1.0)),
               initial * float(settings.get("multiplier", 2.0)) ** min(attempt, 32))
    r = random.random() if rand is None else rand
    return base * (1.0 + float(settings.get("jitter", 0.5)) * r)


def _next(exc: ToolError, attempt: int, deadline: float) -> float | None:
    """The wait before the next attempt, or None if this error is final."""
    settings = exc.retry
    if not settings or attempt >= int(settings.get("attempts", 0)):
        return None
    wait = delay(settings, attempt)
    if deadline and time.time() + wait >= deadline:
        return None
    return wait


def with_retries(fn: Callable[[], T], deadline: float) -> T:
    """Run ``fn`` (one call attempt); retry it while its error says it may be retried."""
    attempt = 0
    while True:
        try:
            return fn()
        except ToolError as exc:
            wait = _next(exc, attempt, deadline)
            if wait is None:
                raise
        time.sleep(wait)
        attempt += 1


async def with_retries_async(fn: Callable[[], Awaitable[T]], deadline: float) -> T:
    attempt = 0
    while True:
        try:
            return await fn()
        except ToolError as exc:
            wait = _next(exc, attempt, deadline)
            if wait is None:
                raise
        await asyncio.sleep(wait)
        attempt += 1
