"""Logging set-up shared by every toolvisor process: loguru to stderr, one format."""

from __future__ import annotations

import os
import sys
import threading
import time

from loguru import logger

FORMAT = ("<green>{time:HH:mm:ss.SSS}</green> <level>{level: <7}</level> "
          "<cyan>{process}</cyan> {message}")
#: A line logged through a tool's ``self.log`` (bound with ``tool=path``) names the tool.
TOOL_FORMAT = FORMAT.replace("{process}", "{extra[tool]}")


def _format(record: dict) -> str:
    return (TOOL_FORMAT if record["extra"].get("tool") else FORMAT) + "\n{exception}"
_configured: str | None = None
#: Set by ``setup``: the number of each of loguru's levels, and the threshold, while lines
#: are written plain (stderr not a terminal); None while colorized (``relayed`` then
#: hands its lines to loguru).
_plain_levels: dict[str, int] | None = None
_threshold = 0


def setup(level: str | None = None) -> None:
    """Send loguru output to stderr at ``level`` (default: $TOOLVISOR_LOG_LEVEL or INFO)."""
    global _configured
    level = (level or os.environ.get("TOOLVISOR_LOG_LEVEL") or "INFO").upper()
    if _configured == level:
        return
    logger.remove()
    # Resolve sys.stderr at each write: whoever replaced it (pytest, a CLI) gets the output.
    colorize = _isatty()
    logger.add(_to_stderr, level=level, format=_format, colorize=colorize, enqueue=False,
               backtrace=False, diagnose=False)
    _configured = level
    global _plain_levels, _threshold
    _plain_levels = None if colorize else {
        name: logger.level(name).no
        for name in ("TRACE", "DEBUG", "INFO", "SUCCESS", "WARNING", "ERROR", "CRITICAL")}
    _threshold = logger.level(level).no
    _warm(level)


#: Set in the thread writing ``_warm``'s lines: the sink drops them (other threads' go out).
_muted = threading.local()


def _warm(level: str) -> None:
    """Log a line of each format at ``level`` and at WARNING and ERROR (those ``setup``'s
    threshold lets through) into nowhere. What loguru builds and caches the first time a handler writes
    (the format parsed and memoized, the time's format compiled) is then built before
    this process forks its actor system, and shared. The root supervisor's first line (a
    tool's crash) copied 0.33 MiB of pages it shared, 0.2 since (issue 10: ten restarts
    at 1,000 tools left the root 0.42-0.46 MiB larger before, 0.25-0.28 after).
    ``logger.remove()`` came first: no sink but ours sees these lines."""
    levels = dict.fromkeys(lv for lv in (level, "WARNING", "ERROR") if logger.level(lv).no >= _threshold)
    _muted.on = True
    try:
        for lv in levels:
            logger.log(lv, "{}", "warm")
            logger.bind(tool="warm").log(lv, "{}", "warm")
    finally:
        _muted.on = False


def relayed(level: str, text: str) -> None:
    """Write a line another process handed up (``LogLine``: the tree's crash lines, which
    the root writes), exactly as ``logger.log(level, "{}", text)`` would, without loguru
    when the line is plain: in the root, the first line through loguru's pipeline copied
    about 0.18 MiB of pages it shared with its parent (issue 10: its first restart at 100
    tools took it +0.25 MiB through loguru, +0.07 written plain; docs/benchmarks.md,
    scale, eighth pass). Colorized (stderr a terminal) or at a level of its own making,
    the line goes through loguru."""
    no = _plain_levels.get(level) if _plain_levels is not None else None
    if no is None:
        logger.log(level, "{}", text)
        return
    if no < _threshold:
        return
    now = time.time()
    t = time.localtime(now)
    _to_stderr(f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}.{int(now % 1 * 1000):03d} "
               f"{level: <7} {os.getpid()} {text}\n")


def _to_stderr(message: str) -> None:
    if getattr(_muted, "on", False):
        return
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
