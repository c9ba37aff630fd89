"""Everything that manages tools: the supervision tree, policies, hooks and the ToolSystem."""

from actors.errors import (
    BadArguments,
    CallTimeout,
    InvalidTransition,
    NotFound,
    PermissionDenied,
    ToolError,
    ToolOverloaded,
    ToolUnavailable,
    UnknownCommand,
)
from actors.state import ToolState
from supervisors.config import ConfigError
from supervisors.handles import SupervisorHandle, ToolHandle, ToolStatus
from supervisors.hooks import LifecycleHook
from supervisors.policy import Backoff, Policy, SpecError
from supervisors.system import ToolSystem

__all__ = [
    "Backoff", "BadArguments", "CallTimeout", "ConfigError", "InvalidTransition",
    "LifecycleHook", "NotFound", "PermissionDenied", "Policy", "SpecError",
    "SupervisorHandle", "ToolError", "ToolHandle", "ToolOverloaded", "ToolStatus",
    "ToolState", "ToolSystem", "ToolUnavailable", "UnknownCommand",
]
