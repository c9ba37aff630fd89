"""The ``toolvisor`` command line.

``toolvisor run CONFIG`` starts the tree that a TOML file describes and shows
it live: one row per supervisor and tool (path, kind, state, pid, restarts,
memory, last error), then the newest lifecycle events. On a terminal the table
is redrawn in place; otherwise each refresh is printed as a block that starts
with a timestamp line. It runs until Ctrl-C, SIGTERM or ``--duration``, then
stops every tool and exits 0. A bad config is reported in one line on stderr
with exit status 2.

Tool classes are named ``module:Class``; the current directory is put on the
import path so ``examples.counter:Counter`` works from the repository root.

Subcommands are registered in ``COMMANDS``; each adds its own parser and
returns an exit status.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Any, TextIO

import psutil
from loguru import logger

from actors import logs
from actors.errors import ToolError
from supervisors.frontends.audit_cli import add_audit_command
from supervisors.frontends.dashboard import Dashboard, parse_address
from supervisors.frontends.errorscli import add_errors_command
from supervisors.frontends.mcp_cli import add_mcp_command, add_plugins_command
from supervisors.host.system import ToolSystem
from supervisors.processes.procs import pid_alive

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2
LOG_LEVELS = ("TRACE", "DEBUG", "INFO", "SUCCESS", "WARNING", "ERROR", "CRITICAL")
DEFAULT_LOG_LEVEL = "WARNING"  # the table already shows lifecycle events
CLEAR = "\x1b[H\x1b[2J"
RECENT_EVENTS = 12
ERROR_WIDTH = 60
COLUMNS = ("PATH", "KIND", "STATE", "PID", "RESTARTS", "MEM MB", "CPU %", "LAST ERROR")


# ====================================================================== arguments
def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with one subparser per command in ``COMMANDS``."""
    parser = argparse.ArgumentParser(
        prog="toolvisor", description="Run tools as supervised actors and watch them live.")
    subs = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in COMMANDS:
        add(subs)
    return parser


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number")
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} must be a number of seconds > 0")
    return value


def _level(text: str) -> str:
    level = text.upper()
    if level not in LOG_LEVELS:
        raise argparse.ArgumentTypeError(f"{text!r} is not one of {', '.join(LOG_LEVELS)}")
    return level


def add_run_command(subs: Any) -> None:
    run = subs.add_parser("run", help="start the tree a config file describes and show it live",
                          description="Start the tree CONFIG describes and show it until "
                                      "Ctrl-C, SIGTERM or --duration.")
    run.add_argument("config", metavar="CONFIG", help="TOML file ([[supervisor]] tables)")
    run.add_argument("--duration", type=_positive, default=None, metavar="S",
                     help="stop after S seconds (default: run until Ctrl-C or SIGTERM)")
    run.add_argument("--interval", type=_positive, default=1.0, metavar="S",
                     help="seconds between refreshes (default: 1.0)")
    run.add_argument("--log-level", type=_level, default=None, metavar="LEVEL",
                     help="log level on stderr (default: the config's, $TOOLVISOR_LOG_LEVEL "
                          f"or {DEFAULT_LOG_LEVEL})")
    run.add_argument("--as", dest="principal", default=None, metavar="PRINCIPAL",
                     help="show only what PRINCIPAL (a [[principal]] of the config) may read; "
                          "its token comes from $TOOLVISOR_TOKEN")
    run.add_argument("--dashboard", default=None, metavar="HOST:PORT", type=_address,
                     help="serve the web dashboard, /metrics and the JSON API there "
                          "(default: the config's [system] dashboard, if any)")
    run.set_defaults(handler=cmd_run)


def _address(text: str) -> str:
    try:
        parse_address(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc))
    return text


COMMANDS: list[Callable[[Any], None]] = [add_run_command, add_audit_command, add_errors_command,
                                          add_mcp_command, add_plugins_command]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``toolvisor`` console script and ``python -m supervisors``."""
    args = build_parser().parse_args(argv)
    return int(args.handler(args))


# ====================================================================== signals
class StopSignals:
    """SIGINT / SIGTERM handling in three phases.

    While the system starts, a signal interrupts the start (``KeyboardInterrupt``;
    ``ToolSystem.start`` cleans up after itself). While the table runs, it only
    sets ``requested`` so the loop ends between refreshes. Once stopping, one
    more signal is only acknowledged (the orderly shutdown goes on); a third one
    quits at once and leaves the clean-up to the system's reaper. Processes
    forked from this one (the actor system's admin) get the default behaviour.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.phase = "starting"
        self.requested: str | None = None
        self.owner = os.getpid()
        self.extra = 0
        self._old: dict[int, Any] = {}

    def install(self) -> None:
        for sig in self.SIGNALS:
            self._old[sig] = signal.signal(sig, self._handle)

    def restore(self) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if os.getpid() != self.owner:  # a forked child inherited this handler
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        name = signal.Signals(signum).name
        if self.phase == "starting":
            self.phase, self.requested = "stopping", name
            raise KeyboardInterrupt(name)
        if self.phase == "running":
            self.requested = name
            self.phase = "stopping"
            return
        self.extra += 1
        if self.extra == 1:  # os.write: print() is not safe inside a signal handler
            os.write(2, b"toolvisor: stopping every tool; send the signal again to quit at once\n")
        else:
            os.write(2, b"toolvisor: quitting now; the reaper ends what is left\n")
            os._exit(EXIT_FAILED)


# ====================================================================== the table
@dataclass(frozen=True)
class Row:
    depth: int
    path: str
    kind: str
    state: str
    pid: int | None
    restarts: int
    last_error: str | None
    usage: dict[str, Any] | None = None


def flatten(node: dict[str, Any], depth: int = 0) -> list[Row]:
    """The tree from ``ToolSystem.tree()`` as rows, parents before their children."""
    rows = [Row(depth, node.get("path") or "(root)", node.get("kind", "?"),
                str(node.get("state", "?")), node.get("pid"), int(node.get("restarts") or 0),
                node.get("last_error"), node.get("usage"))]
    for child in node.get("children", []):
        rows += flatten(child, depth + 1)
    return rows


def memory_mb(pid: int | None) -> str:
    """USS of ``pid`` in MB (RSS if USS is not allowed); blank if there is no such process."""
    if not pid:
        return ""
    try:
        proc = psutil.Process(pid)
        try:
            size = proc.memory_full_info().uss
        except psutil.AccessDenied:
            size = proc.memory_info().rss
    except psutil.Error:  # gone (restarts happen) or not ours to read
        return ""
    return f"{size / 2**20:.1f}"


def truncate(text: str | None, width: int) -> str:
    """One line of at most ``width`` characters ('...' marks a cut)."""
    line = " ".join((text or "").split())
    if len(line) <= width:
        return line
    return line[:max(0, width - 3)] + "..."


def cells(row: Row) -> list[str]:
    """The row as text; the error is still whole (``render_table`` cuts it)."""
    usage = row.usage or {}
    memory = f"{usage['memory_mb']:.1f}" if usage.get("memory_mb") is not None else memory_mb(row.pid)
    cpu = f"{usage['cpu_percent']:.0f}" if usage.get("cpu_percent") is not None else ""
    return ["  " * row.depth + row.path, row.kind, row.state,
            str(row.pid) if row.pid else "", str(row.restarts), memory, cpu,
            " ".join((row.last_error or "").split())]


def render_table(rows: Sequence[Row], width: int | None = None) -> str:
    """Aligned columns; the last one (the error) is cut to fit ``width`` characters."""
    table = [list(COLUMNS)] + [cells(r) for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(COLUMNS) - 1)]
    room = ERROR_WIDTH if width is None else max(20, width - sum(widths) - 2 * len(widths))
    lines = ["  ".join(c.ljust(w) for c, w in zip(line, widths, strict=False))
             + "  " + truncate(line[-1], room) for line in table]
    return "\n".join(line.rstrip() for line in lines)


def summary(rows: Sequence[Row]) -> str:
    tools = [r for r in rows if r.kind == "tool"]
    running = sum(r.state == "running" for r in tools)
    restarts = sum(r.restarts for r in rows)
    return f"{running}/{len(tools)} tools running, {restarts} restarts"


def format_event(event: dict[str, Any]) -> str:
    """``12:00:01 workers/flaky restarted (detail)``."""
    stamp = time.strftime("%H:%M:%S", time.localtime(float(event.get("time", 0.0))))
    detail = truncate(str(event.get("detail") or ""), 100)
    text = f"{stamp} {event.get('path') or '(root)'} {event.get('event', '?')}"
    return f"{text} ({detail})" if detail else text


# ====================================================================== the live view
class LiveView:
    """Polls the system each refresh and writes the table and new events to ``out``."""

    def __init__(self, system: ToolSystem, source: str, out: TextIO, interval: float) -> None:
        self.system = system
        self.source = source
        self.out = out
        self.tty = out.isatty()
        self.timeout = max(5.0, interval * 2)
        self.last_seen = 0.0
        self.recent: deque[str] = deque(maxlen=RECENT_EVENTS)
        self.reader: Any = system  # or system.as_principal(...): the same checks as every door

    def refresh(self) -> None:
        """Draw one table with the events that came since the last one."""
        body = self._table()
        new = self._new_events()
        self.recent.extend(new)
        events = list(self.recent) if self.tty else new
        header = (f"toolvisor {self.source}  {time.strftime('%Y-%m-%d %H:%M:%S')}"
                  + ("  (Ctrl-C to stop)" if self.tty else ""))
        parts = [header, body] + (["", "events:", *events] if events else [])
        self.out.write((CLEAR if self.tty else "") + "\n".join(parts) + "\n\n")
        self.out.flush()

    def _table(self) -> str:
        try:
            rows = flatten(self.reader.tree(timeout=self.timeout))
        except ToolError as exc:
            return f"(the tree cannot be read right now: {exc})"
        width = shutil.get_terminal_size().columns if self.tty else None
        return render_table(rows, width) + "\n" + summary(rows)

    def _new_events(self) -> list[str]:
        try:
            events = self.reader.events(since=self.last_seen, timeout=self.timeout)
        except ToolError as exc:
            logger.warning("cannot read events: {}", exc)
            return []
        if events:
            self.last_seen = max(float(e.get("time", 0.0)) for e in events)
        return [format_event(e) for e in events]


def root_alive(system: ToolSystem) -> bool:
    route = system.root_route
    return route is not None and pid_alive(route.pid)


def watch(view: LiveView, stop: StopSignals, interval: float, duration: float | None) -> int:
    """Refresh every ``interval`` s until a signal, ``duration`` or the root's death."""
    end = None if duration is None else time.monotonic() + duration
    while True:
        view.refresh()
        if not root_alive(view.system):
            logger.error("the root supervisor's process is gone; stopping")
            return EXIT_FAILED
        next_at = time.monotonic() + interval
        if end is not None:
            next_at = min(next_at, end)
        if not _sleep_until(next_at, stop):
            return EXIT_OK
        if end is not None and time.monotonic() >= end:
            view.refresh()
            return EXIT_OK


def _sleep_until(when: float, stop: StopSignals) -> bool:
    """Sleep in short slices until ``when``; False as soon as a stop was asked for."""
    while stop.requested is None:
        left = when - time.monotonic()
        if left <= 0:
            return True
        time.sleep(min(left, 0.05))
    return False


# ====================================================================== run
def _env_level() -> str | None:
    """$TOOLVISOR_LOG_LEVEL if it names a level (a bad value is reported and ignored)."""
    value = os.environ.get("TOOLVISOR_LOG_LEVEL")
    if value and value.upper() in LOG_LEVELS:
        return value.upper()
    if value:
        print(f"toolvisor: ignoring TOOLVISOR_LOG_LEVEL={value!r}: not one of "
              f"{', '.join(LOG_LEVELS)}", file=sys.stderr)
    return None


def _config_level(requested: str | None) -> dict[str, Any]:
    """``log_level`` override for ``from_config``: only what the user asked for."""
    return {"log_level": requested} if requested else {}


def _load(path: str, level: str | None, env_level: str | None) -> ToolSystem:
    """The system the config describes; signals are ours (``StopSignals``), not the system's."""
    if os.getcwd() not in sys.path:  # 'module:Class' is found relative to where we run
        sys.path.insert(0, os.getcwd())
    system = ToolSystem.from_config(path, handle_signals=False, **_config_level(level))
    if system.log_level is None:
        system.log_level = env_level or DEFAULT_LOG_LEVEL
    level = system.log_level
    if not isinstance(level, str) or level.upper() not in LOG_LEVELS:
        raise ValueError(f"{path}: system.log_level={level!r} is invalid: must be one of "
                         f"{', '.join(LOG_LEVELS)}")
    return system


def cmd_run(args: argparse.Namespace) -> int:
    """``toolvisor run CONFIG``: start, watch, stop; the exit status."""
    env_level = _env_level()
    logs.setup(args.log_level or env_level or DEFAULT_LOG_LEVEL)
    try:
        system = _load(args.config, args.log_level, env_level)
    except ValueError as exc:  # ConfigError, SpecError, a bad [system] value
        print(f"toolvisor: {truncate(str(exc), 10_000)}", file=sys.stderr)
        return EXIT_CONFIG
    logs.setup(system.log_level)
    if args.principal:
        try:
            system.security.principal(args.principal, os.environ.get("TOOLVISOR_TOKEN"))
        except ToolError as exc:
            print(f"toolvisor: --as {args.principal}: {exc}", file=sys.stderr)
            return EXIT_CONFIG
    stop = StopSignals()
    stop.install()
    try:
        return _run(system, args, stop)
    except KeyboardInterrupt:  # a signal while starting; start() has cleaned up
        logger.warning("interrupted ({}) while starting", stop.requested or "SIGINT")
        return EXIT_OK
    finally:
        stop.phase = "stopping"
        system.shutdown()
        stop.restore()


def _run(system: ToolSystem, args: argparse.Namespace, stop: StopSignals) -> int:
    try:
        system.start()
    except ToolError as exc:
        print(f"toolvisor: the tree did not start: {truncate(str(exc), 10_000)}", file=sys.stderr)
        return EXIT_FAILED
    if stop.requested is not None:  # a signal came just as the start finished
        return EXIT_OK
    stop.phase = "running"
    address = args.dashboard or system.dashboard
    dashboard = None
    if address:
        try:
            dashboard = Dashboard(system, address).start()
        except (RuntimeError, ValueError) as exc:
            print(f"toolvisor: {exc}", file=sys.stderr)
            return EXIT_FAILED
        print(f"toolvisor: dashboard on {dashboard.url}", file=sys.stderr, flush=True)
    try:
        return _watch(system, args, stop)
    finally:
        if dashboard is not None:
            dashboard.stop()


def _watch(system: ToolSystem, args: argparse.Namespace, stop: StopSignals) -> int:
    view = LiveView(system, args.config, sys.stdout, args.interval)
    if args.principal:
        view.reader = system.as_principal(args.principal, os.environ.get("TOOLVISOR_TOKEN"))
    try:
        code = watch(view, stop, args.interval, args.duration)
    except BrokenPipeError:  # the reader of our output went away
        _silence_stdout()
        return EXIT_OK
    if stop.requested:
        logger.info("{} received; stopping every tool", stop.requested)
    return code


def _silence_stdout() -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


if __name__ == "__main__":
    sys.exit(main())
