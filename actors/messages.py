"""The messages that cross process boundaries, as small dataclasses.

Each message class has a one-byte tag; on the wire a message is the msgpack
array ``[tag, field1, field2, ...]`` (see ``actors.codec``). Requests carry a
correlation id (``cid`` from a caller, ``ref`` from a supervisor) and replies
echo it, so a late answer is never mistaken for the current one.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

#: tag -> message class
REGISTRY: dict[int, type] = {}


def message(tag: int):
    """Register a dataclass as a wire message with ``tag``."""

    def register(cls: type) -> type:
        if tag in REGISTRY:
            raise ValueError(f"message tag {tag} used twice ({REGISTRY[tag].__name__}, {cls.__name__})")
        cls = dataclass(slots=True)(cls)
        cls.TAG = tag
        cls.FIELDS = tuple(f.name for f in fields(cls))
        REGISTRY[tag] = cls
        return cls

    return register


# -- caller -> tool ---------------------------------------------------------------

@message(1)
class Call:
    """Run ``command`` with keyword ``args``; answer with ``Reply`` before ``deadline``."""
    TAG: ClassVar[int]
    cid: int
    command: str
    args: dict[str, Any]
    deadline: float  # wall-clock seconds (time.time()), same host
    #: Tool-to-tool calls only: the paths of the tools blocked waiting on this call, the
    #: caller last (the wait path, for deadlock checks), and the caller's pid (0: the host).
    chain: list[str] = field(default_factory=list)
    caller: int = 0


@message(2)
class Reply:
    """Answer to a ``Call`` or a ``Request``: a value, or an error in wire form."""
    TAG: ClassVar[int]
    cid: int
    ok: bool
    value: Any = None
    error: dict[str, Any] | None = None


@message(4)
class Batch:
    """Several calls in one frame, run in order; answered by one ``BatchReply``."""
    TAG: ClassVar[int]
    cid: int
    calls: list[Any]  # [[command, args], ...]
    deadline: float


@message(5)
class BatchReply:
    """Results of a ``Batch`` in order: ``[ok, value, error]`` per call."""
    TAG: ClassVar[int]
    cid: int
    results: list[Any]


# -- caller -> supervisor -----------------------------------------------------------

@message(3)
class Request:
    """An operation on a supervisor (``op``: spawn, control, resolve, inspect, ...)."""
    TAG: ClassVar[int]
    cid: int
    op: str
    args: dict[str, Any] = field(default_factory=dict)
    deadline: float = 0.0


# -- supervisor <-> child ----------------------------------------------------------

@message(10)
class Start:
    """Become the child described by ``spec``; answer ``Alive`` at once, ``Ack`` when started."""
    TAG: ClassVar[int]
    ref: int
    spec: dict[str, Any]


@message(11)
class Alive:
    """The child's process exists: its pid and its own address."""
    TAG: ClassVar[int]
    ref: int
    pid: int
    address: Any


@message(12)
class Ack:
    """Answer to ``Start``, ``Lifecycle`` or ``Stop`` (same ``ref``)."""
    TAG: ClassVar[int]
    ref: int
    ok: bool
    value: Any = None
    error: dict[str, Any] | None = None


@message(13)
class Lifecycle:
    """Run a lifecycle step in the child: ``pause`` or ``resume``.

    ``deadline`` (``time.time()``, 0 = none): a step that reaches the tool later (it was
    busy) is refused, not run, so a caller that gave up leaves the tool as it was.
    """
    TAG: ClassVar[int]
    ref: int
    op: str
    deadline: float = 0.0


@message(14)
class Stop:
    """Release everything (``on_stop`` or stop own children), ``Ack``, then exit."""
    TAG: ClassVar[int]
    ref: int


@message(15)
class Exiting:
    """A child tells its supervisor it is ending: ``normal`` or with ``error``.

    Sent by a tool that called ``self.exit()``, by a tool whose lifecycle
    callback or timer raised, and by a supervisor that gave up (escalation).
    The child then waits for its supervisor to stop it.
    """
    TAG: ClassVar[int]
    normal: bool
    error: dict[str, Any] | None = None
    escalation: bool = False
    children: list[dict[str, Any]] | None = None  # a supervisor's last view of its children


@message(16)
class SpecChanged:
    """A child supervisor's subtree changed; its parent keeps the spec for restarts.

    Either the whole spec (``path`` None), or one change deep in it: the child at
    ``path`` (names below ``name``) now has spec ``child``, or is ``gone``. A
    supervisor adding its thousandth child sends that child, not all thousand."""
    TAG: ClassVar[int]
    name: str
    spec: dict[str, Any]
    path: list[str] | None = None
    child: dict[str, Any] | None = None
    gone: bool = False


@message(17)
class Event:
    """A lifecycle event travelling up to the root, which keeps the system's event log."""
    TAG: ClassVar[int]
    event: dict[str, Any]


@message(18)
class LogLine:
    """A supervisor's routine log line travelling up to the root, which writes it: the
    first line a process formats through loguru copies about 0.3 MiB of pages it shared
    (docs/scaling.md, Memory), and a tool's crash is the line every supervisor meets.
    The line travels as messages do: a supervisor on the way that dies before passing it
    on loses it (the crash itself is in the failure records and the event log)."""
    TAG: ClassVar[int]
    level: str
    text: str


# -- accounting -----------------------------------------------------------------------

@message(20)
class Track:
    """Supervisor -> accountant: sample this tool's process against these limits."""
    TAG: ClassVar[int]
    path: str
    pid: int
    limits: dict[str, Any]
    on_limit: str
    adaptive: bool
    level: str
    inherited_fds: list[int] = field(default_factory=list)  # not counted as its own files
    marker: str = ""  # its busy marker file: work counters for the usage history (actors.busy)


@message(21)
class Untrack:
    """Supervisor -> accountant: that process has ended; forget it."""
    TAG: ClassVar[int]
    path: str
    pid: int


@message(22)
class Breach:
    """Accountant -> supervisor: a tool reached a limit; run ``action`` on it."""
    TAG: ClassVar[int]
    path: str
    pid: int
    metric: str
    value: float
    limit: float
    action: str


@message(23)
class AccountantMoved:
    """The accountant was restarted at ``address``: send it your tools again."""
    TAG: ClassVar[int]
    address: Any


# -- shapes ------------------------------------------------------------------------------

_NUMBER = "number"   # int or float, not bool, finite
_INT = "int"         # int, not bool
#: The field types of the messages that may come from outside the tree (callers on a
#: tool's socket or on Thespian): a message of another shape is refused as malformed.
SHAPES: dict[type, dict[str, Any]] = {
    Call: {"cid": _INT, "command": str, "args": dict, "deadline": _NUMBER, "chain": list, "caller": _INT},
    Batch: {"cid": _INT, "calls": list, "deadline": _NUMBER},
    Reply: {"cid": _INT, "ok": bool, "error": (dict, type(None))},
    BatchReply: {"cid": _INT, "results": list},
    Request: {"cid": _INT, "op": str, "args": dict, "deadline": _NUMBER},
}


def _fits(value: Any, kind: Any) -> bool:
    if kind == _INT:
        return type(value) is int
    if kind == _NUMBER:
        return type(value) in (int, float) and value == value and abs(value) != float("inf")
    return isinstance(value, kind)


def shape_problem(msg: Any) -> str | None:
    """What is wrong with the field types of ``msg`` (None: nothing)."""
    shape = SHAPES.get(type(msg))
    if shape is None:
        return None
    for name, kind in shape.items():
        value = getattr(msg, name)
        if not _fits(value, kind):
            want = {_INT: "an integer", _NUMBER: "a finite number"}.get(kind) or \
                " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
            return f"{name}={value!r:.60} should be {want}"
    return None


# -- recovery (tags 60-69) ---------------------------------------------------------------

@message(60)
class ToolReport:
    """Tool -> its supervisor: a failure ``record`` (a command error, a timeout, context not
    restored) and/or the tool's ``breaker`` snapshot after it changed."""
    TAG: ClassVar[int]
    record: dict[str, Any] | None = None
    breaker: dict[str, Any] | None = None


@message(61)
class FailureNote:
    """Supervisor -> parent, up to the root: a failure record for the context store."""
    TAG: ClassVar[int]
    record: dict[str, Any]
