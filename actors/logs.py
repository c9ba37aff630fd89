"""Logging set-up shared by every toolvisor process: loguru to stderr, one format."""

from __future__ import annotations

import os
import sys

from loguru import logger

FORMAT = ("<green>{time:HH:mm:ss.SSS}</green> <level>{level: <7}</level> "
          "<cyan>{process}</cyan> {message}")
#: A line logged through a tool's ``self.log`` (bound with ``tool=path``) names the tool.
TOOL_FORMAT = FORMAT.replace("{process}", "{extra[tool]}")


def _format(record: dict) -> str:
    return (TOOL_FORMAT if record["extra"].get("tool") else FORMAT) + "\n{exception}"
_configured: str | None = None


def setup(level: str | None = None) -> None:
    """Send loguru output to stderr at ``level`` (default: $TOOLVISOR_LOG_LEVEL or INFO)."""
    global _configured
    level = (level or os.environ.get("TOOLVISOR_LOG_LEVEL") or "INFO").upper()
    if _configured == level:
        return
    logger.remove()
    # Resolve sys.stderr at each write: whoever replaced it (pytest, a CLI) gets the output.
    logger.add(_to_stderr, level=level, format=_format, colorize=_isatty(), enqueue=False,
               backtrace=False, diagnose=False)
    _configured = level


def _to_stderr(message: str) -> None:
    try:
        sys.stderr.write(message)
    except (OSError, ValueError):  # stderr closed while a process ends
        pass


def _isatty() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def get_title() -> str:
    """This process's name in ``ps`` ('' if unknown)."""
    try:
        from setproctitle import getproctitle
    except ImportError:  # pragma: no cover - setproctitle is a dependency
        return ""
    return getproctitle()


def set_title(title: str) -> None:
    """Name this process in ``ps`` (best effort)."""
    try:
        from setproctitle import setproctitle
    except ImportError:  # pragma: no cover - setproctitle is a dependency
        return
    setproctitle(title)
