"""Everything that manages tools: the supervision tree, policies, hooks and the ToolSystem."""

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
from supervisors.host.handles import SupervisorHandle, ToolHandle, ToolStatus
from supervisors.host.system import ToolSystem
from supervisors.recovery import Breaker, FailureRecord, Retry
from supervisors.tree.config import ConfigError
from supervisors.tree.hooks import LifecycleHook
from supervisors.tree.policy import Backoff, Policy, SpecError

__all__ = [
    "Backoff", "BadArguments", "Breaker", "CallTimeout", "DeadlockError", "ConfigError",
    "FailureRecord", "InvalidTransition", "Retry",
    "LifecycleHook", "NotFound", "PermissionDenied", "Policy", "SpecError",
    "SupervisorHandle", "ToolError", "ToolHandle", "ToolOverloaded", "ToolStatus",
    "ToolState", "ToolSystem", "ToolUnavailable", "UnknownCommand",
]
