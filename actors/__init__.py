"""What runs inside a tool's process: the ToolActor base class, commands, states, messages."""

from actors.commands import command
from actors.errors import (
    BadArguments,
    CallTimeout,
    DeadlockError,
    InvalidTransition,
    NotFound,
    PermissionDenied,
    ToolError,
    ToolOverloaded,
    ToolUnavailable,
    UnknownCommand,
)
from actors.state import ToolState
from actors.tool import ToolActor

__all__ = [
    "BadArguments", "CallTimeout", "DeadlockError", "InvalidTransition", "NotFound", "PermissionDenied",
    "ToolActor", "ToolError", "ToolOverloaded", "ToolState", "ToolUnavailable",
    "UnknownCommand", "command",
]
