"""The errors a caller can get back, and their wire form.

Every failure that crosses a process boundary travels as a small dict
(``code``, ``type``, ``message``, ``traceback``) and is rebuilt on the other
side as the matching exception class, so ``except ToolUnavailable`` works the
same whether the tool is in this process or another one.
"""

from __future__ import annotations

import traceback as _tb
from typing import Any, ClassVar


class SpecError(ValueError):
    """A bad value in a policy or spec; the message names the field and the value.

    Defined here, at the bottom of the layers, because both the tree (policies,
    child specs) and the resources subsystem (quotas) raise it. ``field``, ``value``
    and ``reason`` are kept apart (when known) so a config file reader can show the
    value as the user wrote it.
    """

    field: str | None = None
    value: Any = None
    reason: str | None = None

    @classmethod
    def invalid(cls, field: str, value: Any, reason: str) -> SpecError:
        """``field=value is invalid: reason``, with the parts kept as attributes."""
        exc = cls(f"{field}={value!r} is invalid: {reason}")
        exc.field, exc.value, exc.reason = field, value, reason
        return exc


class ToolError(Exception):
    """A call or lifecycle operation failed.

    ``type`` is the class name of the original exception (``"ValueError"``),
    ``message`` its text and ``remote_traceback`` the traceback formatted in the
    process where it was raised.
    """

    code: ClassVar[str] = "error"

    def __init__(self, message: str, *, type: str | None = None,
                 traceback: str | None = None, tool: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.type = type or self.__class__.__name__
        self.remote_traceback = traceback
        self.tool = tool
        #: Set by the callee when the caller may retry this call (an idempotent command
        #: failed with an error its policy calls transient): the retry settings.
        self.retry: dict[str, Any] | None = None

    def __str__(self) -> str:
        where = f"[{self.tool}] " if self.tool else ""
        if self.type in (self.__class__.__name__, "ToolError"):
            return f"{where}{self.message}"
        return f"{where}{self.type}: {self.message}"

    def to_wire(self) -> dict[str, Any]:
        wire = {"code": self.code, "type": self.type, "message": self.message,
                "traceback": self.remote_traceback}
        if self.retry:
            wire["retry"] = self.retry
        return wire


class ToolUnavailable(ToolError):
    """The tool cannot take the call now: stopped, failed, gone or busy."""

    code = "unavailable"


class CallTimeout(ToolUnavailable, TimeoutError):
    """No answer within the call's timeout."""

    code = "timeout"


class ToolOverloaded(ToolUnavailable):
    """The tool's queue is full (for example paused with its hold queue full)."""

    code = "overloaded"


class UnknownCommand(ToolError):
    """The tool has no command of that name."""

    code = "unknown_command"


class BadArguments(ToolError):
    """The arguments do not fit the command's signature."""

    code = "bad_arguments"


class PermissionDenied(ToolError):
    """The caller may not do this."""

    code = "permission_denied"


class InvalidTransition(ToolError):
    """The lifecycle graph forbids this transition; nothing was changed."""

    code = "invalid_transition"


class NotFound(ToolError, LookupError):
    """No tool or supervisor at that path."""

    code = "not_found"


class DeadlockError(ToolError):
    """A tool-to-tool ``call`` would close a cycle of tools waiting on each other.

    ``cycle`` lists the tool paths in order, the first repeated at the end
    (``["a", "b", "a"]``); the message names it as ``a -> b -> a``. The refused
    call did not run.
    """

    code = "deadlock"

    def __init__(self, message: str, *, cycle: list[str] | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        if cycle is None and message.startswith("deadlock: "):  # rebuilt from its wire form
            cycle = message[len("deadlock: "):].split(": ", 1)[0].split(" -> ")
        self.cycle = list(cycle or [])


class CheckpointError(ToolError):
    """``checkpoint()`` refused a value (it cannot be stored) or the store could not keep it."""


class MalformedMessage(ToolError):
    """A message could not be decoded, has an unknown kind, or fields of the wrong type.

    ``cid`` is the message's correlation id when it had a usable one, so the sender
    can be told which of its messages was refused.
    """

    code = "malformed"
    cid: int | None = None


class Moved(ToolError):
    """Internal: the call reached an instance that is going away and was not run.

    The caller's handle resends it to the next instance; users never see it.
    """

    code = "moved"


class NotServing(ToolUnavailable):
    """Internal: the instance a pool picked was not serving (restarting, stopped, removed)
    and the call was not sent; the pool sends it to another instance. It reaches a caller
    only if no instance of the pool is left to try, and then says which one refused and why.
    """


_BY_CODE: dict[str, type[ToolError]] = {
    cls.code: cls for cls in (ToolError, ToolUnavailable, CallTimeout, ToolOverloaded,
                              UnknownCommand, BadArguments, PermissionDenied,
                              InvalidTransition, NotFound, MalformedMessage, Moved, DeadlockError)
}


def error_to_wire(exc: BaseException) -> dict[str, Any]:
    """The wire form of any exception, with its formatted traceback."""
    if isinstance(exc, ToolError):
        wire = exc.to_wire()
        if wire["traceback"] is None and exc.__traceback__ is not None:
            wire["traceback"] = "".join(_tb.format_exception(exc))
    else:
        wire = {"code": "error", "type": type(exc).__name__, "message": str(exc),
                "traceback": "".join(_tb.format_exception(exc))}
    retry = getattr(exc, "_toolvisor_retry", None)  # set by the callee's runner (recovery)
    if retry:
        wire["retry"] = retry
    return wire


def error_from_wire(wire: dict[str, Any], tool: str | None = None) -> ToolError:
    """Rebuild the exception a peer sent as ``error_to_wire`` output."""
    cls = _BY_CODE.get(str(wire.get("code", "error")), ToolError)
    exc = cls(str(wire.get("message", "")), type=wire.get("type"),
              traceback=wire.get("traceback"), tool=tool)
    retry = wire.get("retry")
    if isinstance(retry, dict):
        exc.retry = retry
    return exc
