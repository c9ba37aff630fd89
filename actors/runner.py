"""ToolRunner: the behaviour of a tool's process.

It owns the tool instance and its state, serves ``Call`` messages one at a
time, holds calls (in order, bounded) while the tool is not yet running or is
paused, and reports failures to its supervisor, which decides what happens.
"""

from __future__ import annotations

import errno
import time
from collections import deque
from collections.abc import Callable
from time import perf_counter
from typing import Any

from loguru import logger

from actors import isolation, logs, sandbox, waits
from actors.codec import encode
from actors.commands import bind, command_table
from actors.context import Context
from actors.errors import (
    BadArguments,
    CallTimeout,
    Moved,
    ToolError,
    ToolOverloaded,
    UnknownCommand,
    error_to_wire,
)
from actors.fastpath import DEFAULT_MAX_CALLERS
from actors.frames import MAX_FRAME
from actors.loading import load_object
from actors.messages import Ack, Alive, Batch, BatchReply, Call, Exiting, Lifecycle, Reply, Start, Stop
from actors.peers import Peers, ToolRef
from actors.state import StateMachine, ToolState
from actors.timings import TIMINGS_COMMAND, CommandTimings
from actors.tool import ToolActor

S = ToolState
DEFAULT_HOLD_LIMIT = 10_000


class ToolRunner:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.sm = StateMachine(S.CREATED)
        self.tool: ToolActor | None = None
        self.commands: dict[str, Callable[..., Any]] = {}
        self.supervisor: Any = None
        self.path = "?"
        self.fatal: tuple[str, ...] = ()
        self.hold_limit = DEFAULT_HOLD_LIMIT
        self.max_callers = DEFAULT_MAX_CALLERS
        self.held: deque[tuple[str, Any, Any]] = deque()
        self.timers: dict[int, Callable[[], Any]] = {}
        self.next_timer = 0
        self.exiting = False
        self.stopped = False
        self.tmpdir: str | None = None
        self.spare_fds: sandbox.SpareFds | None = None
        self.spare_memory: sandbox.SpareMemory | None = None
        self.memory_limit: float | None = None  # memory_mb, when hard_memory caps it
        self.inherited: list[int] = [2]
        self.log = logger
        self.runtime_dir: str | None = None
        self.level = "standard"
        self.serving: Call | Batch | None = None   # the call being served now
        self.peers: Peers | None = None            # connections to other tools (actors.peers)
        self.timings = CommandTimings()            # per-command times, drained by the host's metrics

    # -- Behaviour -------------------------------------------------------------------
    def receive(self, msg: Any, sender: Any) -> None:
        if isinstance(msg, Call | Batch):
            self._on_call(msg, sender)
        elif isinstance(msg, Start):
            self._on_start(msg, sender)
        elif isinstance(msg, Lifecycle):
            self._on_lifecycle(msg, sender)
        elif isinstance(msg, Stop):
            self._on_stop(msg, sender)
        else:
            self.log.warning("tool {} ignores a {} message", self.path, type(msg).__name__)

    def wakeup(self, payload: Any) -> None:
        if isinstance(payload, tuple) and payload and payload[0] == "timer":
            fn = self.timers.pop(payload[1], None)
            if fn is None:
                return
            if self.sm.state is S.RUNNING and not self.exiting:
                self._run_timer(fn)
            elif self.sm.state in (S.READY, S.PAUSED, S.INITIALIZING) and not self.exiting:
                self.held.append(("timer", fn, None))

    def child_exited(self, address: Any) -> None:
        """Tools have no child actors."""

    def system_exit(self) -> None:
        """The actor system is ending this process: release what the tool holds."""
        self._release()

    # -- runtime services for the ToolActor ------------------------------------------
    def request_exit(self, normal: bool, error: BaseException | str | None) -> None:
        if self.exiting:
            return
        self.exiting = True
        wire = None
        if error is not None:
            wire = error_to_wire(error) if isinstance(error, BaseException) else \
                {"code": "error", "type": "ToolExit", "message": str(error), "traceback": None}
        level = "INFO" if normal else "WARNING"
        self.log.log(level, "tool {} is exiting ({})", self.path,
                     "normal" if normal else f"error: {wire and wire['message']}")
        self._bounce_held()
        if self.supervisor is not None:
            self.ctx.send(self.supervisor, Exiting(normal=normal, error=wire))

    def schedule(self, delay: float, fn: Callable[[], Any]) -> int:
        self.next_timer += 1
        self.timers[self.next_timer] = fn
        self.ctx.after(max(0.0, float(delay)), ("timer", self.next_timer))
        return self.next_timer

    def cancel(self, token: int) -> None:
        self.timers.pop(token, None)

    def peer(self, path: str) -> ToolRef:
        if self.peers is None:
            self.peers = Peers(self)
        return self.peers.ref(path)

    @property
    def deadline(self) -> float | None:
        return (self.serving.deadline or None) if self.serving is not None else None

    def watch_fds(self) -> list[int]:
        """End of a turn (asked by the shell): send queued messages; fds to watch for answers."""
        return self.peers.fds() if self.peers is not None else []

    def on_ready(self, fds: list[int]) -> None:
        if self.peers is not None:
            self.peers.on_ready(fds)

    def _abandoned(self, call: Call, sender: Any) -> bool:
        """A tool's queued call whose caller died or withdrew it (deadlock): do not run it."""
        if not self.runtime_dir or not waits.abandoned(self.runtime_dir, call.caller, call.cid,
                                                       getattr(sender, "sock", None)):
            return False
        self.log.debug("tool {} dropped call {} of pid {}: its caller is gone or withdrew it",
                       self.path, call.cid, call.caller)
        return True

    # -- start ------------------------------------------------------------------------
    def _on_start(self, msg: Start, sender: Any) -> None:
        if self.supervisor is not None:
            self.ctx.send(sender, Ack(msg.ref, False, error=ToolError(
                "this tool process was already started").to_wire()))
            return
        self.supervisor = sender
        spec = msg.spec
        self.path = spec.get("path", spec.get("name", "?"))
        self.fatal = tuple(spec.get("fatal", ()))
        self.hold_limit = int(spec.get("hold_limit", DEFAULT_HOLD_LIMIT))
        self.runtime_dir = spec.get("runtime_dir")
        self.level = str(spec.get("security_level") or "standard")
        logs.setup(spec.get("log_level"))
        logs.set_title(f"toolvisor tool {self.path}")
        self.log = logger.bind(tool=self.path)
        self.ctx.send(sender, Alive(msg.ref, self.ctx.pid, self.ctx.my_address))
        try:
            sandbox.own_process_group()
            self.tmpdir = sandbox.private_tmpdir(spec.get("name") or "tool", spec.get("runtime_dir"))
            self.spare_fds = sandbox.SpareFds()
            self.inherited = sandbox.inherited_fds()
            limits = spec.get("limits") or {}
            self.max_callers = int(spec.get("max_callers") or DEFAULT_MAX_CALLERS)
            sandbox.apply_hard_limits(limits, bool(spec.get("hard_memory")), self.inherited,
                                      callers=self.max_callers)
            sandbox.apply_security(spec.get("security"))  # env, workdir, umask (security issue)
            isolation.install(self, spec)                  # level isolation on tool-to-tool calls
            if spec.get("hard_memory"):
                self.spare_memory = sandbox.SpareMemory()
                self.memory_limit = limits.get("memory_mb")
            if limits.get("cpu_seconds"):
                sandbox.raise_on_sigxcpu(limits["cpu_seconds"])
            cls = _load_tool_class(spec["actor"], spec.get("main"))
            if not (isinstance(cls, type) and issubclass(cls, ToolActor)):
                raise TypeError(f"{spec['actor']} is not a ToolActor subclass")
            tool = cls()
            tool.name = spec.get("name", "")
            tool.path = self.path
            tool.config = dict(spec.get("config") or {})
            tool.log = self.log
            tool.tmpdir = self.tmpdir
            tool._runtime = self
            self.tool = tool
            self.commands = {c: getattr(tool, m) for c, m in command_table(cls).items()}
            self.sm.go(S.INITIALIZING)
            tool.on_init(dict(tool.config))
            self.sm.go(S.READY)
            tool.on_run()
            self.sm.go(S.RUNNING)
        except Exception as exc:
            self.sm.force(S.FAILED)
            # (its supervisor logs the failure: one line per event)
            self.log.debug("tool {} failed to start: {}: {}", self.path, type(exc).__name__, exc)
            self._bounce_held()
            self.ctx.send(sender, Ack(msg.ref, False, error=error_to_wire(exc)))
            return
        door = self.ctx.open_door(self.max_callers, f"tool {self.path}") \
            if spec.get("call_path") == "socket" else None
        self.ctx.send(sender, Ack(msg.ref, True, {"pid": self.ctx.pid, "socket": door,
                                                  "tmpdir": self.tmpdir,
                                                  "inherited_fds": self.inherited}))
        self._drain()

    # -- lifecycle ----------------------------------------------------------------------
    def _on_lifecycle(self, msg: Lifecycle, sender: Any) -> None:
        target = {"pause": S.PAUSED, "resume": S.RUNNING}.get(msg.op)
        if target is None or self.tool is None:
            self.ctx.send(sender, Ack(msg.ref, False, error=ToolError(
                f"unknown lifecycle step {msg.op!r} (or tool not started)").to_wire()))
            return
        try:
            self.sm.go(target, self.path)
        except ToolError as exc:
            self.ctx.send(sender, Ack(msg.ref, False, error=exc.to_wire()))
            return
        try:
            (self.tool.on_pause if msg.op == "pause" else self.tool.on_resume)()
        except Exception as exc:
            self.sm.force(S.FAILED)
            self._bounce_held()
            self.exiting = True
            self.ctx.send(sender, Ack(msg.ref, False, error=error_to_wire(exc)))
            return
        self.ctx.send(sender, Ack(msg.ref, True, {"state": self.sm.state.value}))
        if target is S.RUNNING:
            self._drain()

    def _on_stop(self, msg: Stop, sender: Any) -> None:
        error = self._release()
        self.ctx.send(sender, Ack(msg.ref, error is None, error=error))
        self.ctx.exit()

    def _release(self) -> dict[str, Any] | None:
        """Run ``on_stop`` once; answer every held call so nothing is lost."""
        self.exiting = True
        self._bounce_held()
        self.timers.clear()
        if self.stopped:
            return None
        self.stopped = True
        error = None
        if self.tool is not None and self.sm.state is not S.FAILED:
            self.sm.force(S.STOPPING)
            try:
                self.tool.on_stop()
            except Exception as exc:
                error = error_to_wire(exc)
                self.log.warning("tool {} on_stop raised {}: {}", self.path, type(exc).__name__, exc)
        self.sm.force(S.STOPPED)
        return error

    # -- calls ------------------------------------------------------------------------
    def _on_call(self, call: Call | Batch, sender: Any) -> None:
        if type(call) is Call and call.command == TIMINGS_COMMAND:  # the host's metrics, any state
            self._reply(sender, call.cid, self.timings.drain())
            return
        state = self.sm.state
        if self.exiting or state in (S.STOPPING, S.STOPPED, S.FAILED):
            self._refuse(call, sender, Moved(f"tool {self.path} is going away"))
        elif state is S.RUNNING:
            self._serve(call, sender)
        elif len(self.held) >= self.hold_limit:
            self._refuse(call, sender, ToolOverloaded(
                f"tool {self.path} is {state.value} and its hold queue is full "
                f"({self.hold_limit} calls); resume it or raise hold_limit"))
        else:
            self.held.append(("call", call, sender))

    def _serve(self, call: Call | Batch, sender: Any) -> None:
        if call.deadline and time.time() > call.deadline:
            self.log.debug("tool {} dropped call {}: its caller stopped waiting", self.path, call.cid)
            return
        if isinstance(call, Call) and call.caller and self._abandoned(call, sender):
            return
        outer, self.serving = self.serving, call  # its chain and deadline bind nested calls
        try:
            if isinstance(call, Batch):
                self._serve_batch(call, sender)
                return
            ok, value, error = self._execute(call.command, call.args)
            self._reply(sender, call.cid, value, None if ok else error)
            if error is not None and self._is_fatal(error):
                self.request_exit(False, error)
        finally:
            self.serving = outer
            if self.peers is not None:
                self.peers.flush()  # what the command sent leaves now, ahead of its reply's effects

    def _serve_batch(self, batch: Batch, sender: Any) -> None:
        results: list[list[Any]] = []
        fatal: BaseException | None = None
        for item in batch.calls:
            try:
                command, args = item
            except (TypeError, ValueError):
                results.append([False, None, ToolError("a batch item must be [command, args]",
                                                       type="BadBatch").to_wire()])
                continue
            ok, value, error = self._execute(command, args)
            if ok:
                results.append([True, value, None])
            else:
                results.append([False, None, error_to_wire(error)])  # type: ignore[arg-type]
                if fatal is None and self._is_fatal(error):  # type: ignore[arg-type]
                    fatal = error
        try:
            data = encode(BatchReply(batch.cid, results))
        except (TypeError, ValueError, OverflowError):
            data = encode(BatchReply(batch.cid, [self._sendable(r) for r in results]))
        if len(data) > MAX_FRAME:
            data = encode(Reply(batch.cid, False, error=self._too_large(len(data)).to_wire()))
        self.ctx.send(sender, data)
        if fatal is not None:
            self.request_exit(False, fatal)

    def _sendable(self, result: list[Any]) -> list[Any]:
        try:
            encode(Reply(0, True, result[1]))
            return result
        except (TypeError, ValueError, OverflowError) as exc:
            return [False, None, self._unsendable(exc).to_wire()]

    def _execute(self, command: Any, args: Any) -> tuple[bool, Any, BaseException | None]:
        started = perf_counter()
        result = self._run_command(command, args)
        if result[0] or command in self.commands:  # (no label per unknown name)
            self.timings.record(command, perf_counter() - started, result[0])
        return result

    def _run_command(self, command: Any, args: Any) -> tuple[bool, Any, BaseException | None]:
        fn = self.commands.get(command) if isinstance(command, str) else None
        if fn is None:
            names = ", ".join(sorted(self.commands)) or "none"
            return False, None, UnknownCommand(
                f"tool {self.path} has no command {command!r}; its commands: {names}")
        if not isinstance(args, dict):
            return False, None, BadArguments(f"arguments of {command!r} must be a map of names")
        try:
            return True, fn(**args), None
        except TypeError as exc:
            try:  # a bad call, or a TypeError raised inside the command?
                bind(fn, command, args)
            except BadArguments as bad:
                return False, None, bad
            return False, None, exc
        except (Exception, SystemExit) as exc:
            return False, None, self._check_exhaustion(exc)

    def _check_exhaustion(self, exc: BaseException) -> BaseException:
        """The tool ran out of descriptors or memory: give the runtime its spares back.

        Returns the error to report: a bare ``MemoryError`` under ``hard_memory`` is
        given a message naming the limit.
        """
        if isinstance(exc, OSError) and exc.errno == errno.EMFILE and self.spare_fds is not None:
            if self.spare_fds.release():
                self.log.warning("tool {} hit its open-files hard limit; runtime spares released",
                                 self.path)
        elif isinstance(exc, MemoryError) and self.spare_memory is not None:
            if self.spare_memory.release():
                self.log.warning("tool {} hit its memory hard limit; runtime spare released",
                                 self.path)
            if not str(exc) and self.memory_limit is not None:
                named = MemoryError(f"the tool hit its hard memory limit (hard_memory with "
                                    f"memory_mb={self.memory_limit:g}: its address space may grow "
                                    f"by {self.memory_limit:g} MB); use less or raise memory_mb")
                named.__traceback__ = exc.__traceback__
                return named
        return exc

    def _refuse(self, call: Call | Batch, to: Any, error: ToolError) -> None:
        """Answer a call (or a whole batch) that will not run here."""
        self._reply(to, call.cid, error=error)

    def _reply(self, to: Any, cid: int, value: Any = None, error: BaseException | None = None) -> None:
        if error is not None:
            self.ctx.send(to, encode(Reply(cid, False, error=error_to_wire(error))))
            return
        try:
            data = encode(Reply(cid, True, value))
        except (TypeError, ValueError, OverflowError) as exc:
            data = encode(Reply(cid, False, error=self._unsendable(exc).to_wire()))
        if len(data) > MAX_FRAME:
            data = encode(Reply(cid, False, error=self._too_large(len(data)).to_wire()))
        self.ctx.send(to, data)

    @staticmethod
    def _too_large(size: int) -> ToolError:
        return ToolError(f"the result is {size} bytes, over the {MAX_FRAME}-byte message limit; "
                         "return less, or write it to a file and return the path",
                         type="ResultTooLarge")

    @staticmethod
    def _unsendable(exc: BaseException) -> ToolError:
        return ToolError(f"the command returned a value that cannot be sent ({exc})",
                         type="UnsendableResult")

    def _is_fatal(self, exc: BaseException) -> bool:
        if isinstance(exc, SystemExit | sandbox.CpuLimitExceeded):
            return True
        names = {k.__name__ for k in type(exc).__mro__}
        return bool(names.intersection(self.fatal))

    def _run_timer(self, fn: Callable[[], Any]) -> None:
        try:
            fn()
            if self.peers is not None:
                self.peers.flush()
        except Exception as exc:
            exc = self._check_exhaustion(exc)  # type: ignore[assignment]
            self.log.warning("tool {}: a timer raised {}: {}", self.path, type(exc).__name__, exc)
            self.request_exit(False, exc)

    def _drain(self) -> None:
        """Serve held work in arrival order while the tool is running."""
        while self.held and self.sm.state is S.RUNNING and not self.exiting:
            kind, item, sender = self.held.popleft()
            if kind == "call":
                self._serve(item, sender)
            else:
                self._run_timer(item)

    def _bounce_held(self) -> None:
        """Answer held calls with Moved: their callers resend them to the next instance."""
        while self.held:
            kind, item, sender = self.held.popleft()
            if kind == "call":
                if item.deadline and time.time() > item.deadline:
                    self._refuse(item, sender, CallTimeout("call timed out while held"))
                else:
                    self._refuse(item, sender, Moved(f"tool {self.path} is going away"))



def _load_tool_class(path: str, main: str | None) -> Any:
    """Load the tool's class; explain the one case a script's author cannot guess."""
    try:
        return load_object(path, main)
    except ImportError as exc:
        if path.startswith("__main__:"):
            raise ImportError(f"{exc}: tool classes must be importable ('module:Class') or defined "
                              "in the script before the ToolSystem starts (its processes are "
                              "forked at start and do not see classes defined later)") from None
        raise
