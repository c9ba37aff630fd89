"""ToolRunner: the behaviour of a tool's process.

It owns the tool instance and its state, serves ``Call`` messages one at a
time, holds calls (in order, bounded) while the tool is not yet running or is
paused, and reports failures to its supervisor, which decides what happens.
"""

from __future__ import annotations

import errno
import os
import time
from collections import deque
from collections.abc import Callable
from time import perf_counter
from typing import Any

from loguru import logger

from actors import isolation, logs, reach, sandbox, sharing, waits
from actors.breaker import HALF_OPEN, Breaker, Breakers
from actors.busy import BusyMarker, marker_path
from actors.codec import encode, pack_value
from actors.commands import bind, command_table, idempotent_commands
from actors.context import Context
from actors.errors import (
    BadArguments,
    CallTimeout,
    CheckpointError,
    Moved,
    ToolError,
    ToolOverloaded,
    ToolUnavailable,
    UnknownCommand,
    error_to_wire,
)
from actors.fastpath import DEFAULT_MAX_CALLERS
from actors.frames import MAX_FRAME
from actors.loading import load_object
from actors.messages import (
    Ack,
    Alive,
    Batch,
    BatchReply,
    Call,
    Exiting,
    Lifecycle,
    Reply,
    Start,
    Stop,
    ToolReport,
)
from actors.peers import Peers, ToolRef
from actors.retry import rerun_settings
from actors.state import StateMachine, ToolState
from actors.timings import TIMINGS_COMMAND, CommandTimings
from actors.tool import ToolActor
from actors.toolcontext import ToolContext

S = ToolState
DEFAULT_HOLD_LIMIT = 10_000
CONTEXT_LOAD_TIMEOUT = 5.0     # seconds to read the tool's context from the store at start
CHECKPOINT_TIMEOUT = 10.0      # seconds for a checkpoint made outside any call
REPORTS_PER_SECOND = 500       # failure records sent to the supervisor; more are counted
CALLERS_FAULT = (BadArguments, UnknownCommand)  # not failures of the tool, for the breaker


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
        self.busy = BusyMarker(None)
        self.log = logger
        self.runtime_dir: str | None = None
        self.level = "standard"
        self.serving: Call | Batch | None = None   # the call being served now
        self.peers: Peers | None = None            # connections to other tools (actors.peers)
        self.guard: reach.Guard | None = None      # net and exec permissions (actors.reach)
        self.breakers: Breakers | None = None      # circuit breaker(s), if the policy has one
        self.idempotent: set[str] = set()
        self.transient: tuple[str, ...] = ()
        self.retry: dict[str, Any] | None = None
        self.rerun: set[str] = set()               # commands a caller may rerun if this process dies
        self.store: str | None = None              # path of the context store tool
        self.report_window = (0.0, 0)              # (second, records sent in it)
        self.suppressed = 0
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

    def process_ended(self, pid: int) -> None:
        """Tools watch no processes."""

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

    # -- context and checkpoints ----------------------------------------------------
    def _load_context(self) -> ToolContext:
        """The tool's last checkpoint and its ancestors' contexts, from the store."""
        if not self.store or self.path == self.store:
            return ToolContext(restored=None)
        try:
            got = self.peer(self.store).call("load", timeout=CONTEXT_LOAD_TIMEOUT, path=self.path)
        except ToolError as exc:
            problem = f"started without its saved context: {exc}"
            self.log.warning("tool {} {}", self.path, problem)
            self._report("context", exc, action="started without restored state", message=problem)
            return ToolContext(restored=False, problem=problem)
        return ToolContext(got.get("own"), got.get("ancestors"), restored=True)

    def checkpoint(self, expires_in: float | None) -> None:
        tool = self.tool
        if tool is None:
            raise CheckpointError("the tool is not started", type="CheckpointError")
        values = tool.context.packed()  # refuses what cannot be stored, before anything is sent
        if expires_in is not None and not (isinstance(expires_in, (int, float))
                                           and not isinstance(expires_in, bool) and expires_in > 0):
            raise CheckpointError(f"expires_in={expires_in!r} is invalid: give seconds > 0 or None",
                                  type="CheckpointError")
        if not self.store:
            raise CheckpointError("this system keeps no context store (ToolSystem(data_dir=False)); "
                                  "give it a data_dir to checkpoint", type="CheckpointError")
        until = self.deadline or time.time() + CHECKPOINT_TIMEOUT
        ref = self.peer(self.store)
        while True:  # "put" replaces the whole context: safe to send again if the store died
            try:
                ref.call("put", timeout=max(0.05, until - time.time()), path=self.path,
                         values=values, expires_in=expires_in)
                return
            except ToolUnavailable as exc:
                if exc.type == "BreakerOpen" or time.time() + 0.05 >= until \
                        or isinstance(exc, CallTimeout):
                    raise CheckpointError(f"checkpoint of {self.path} was not stored: {exc}",
                                          type="CheckpointError")
                time.sleep(0.02)
            except ToolError as exc:
                raise CheckpointError(f"checkpoint of {self.path} was not stored: {exc.message}",
                                      type="CheckpointError")

    # -- failure records ------------------------------------------------------------
    def _report(self, kind: str, error: BaseException | None, *, command: str | None = None,
                action: str = "answered the caller with the error", message: str | None = None,
                breaker: bool = False) -> None:
        """Tell the supervisor about a failure (bounded per second) and/or a breaker change."""
        if self.supervisor is None:
            return
        record = None
        if kind:
            second = int(time.time())
            if self.report_window[0] != second:
                self.report_window = (second, 0)
            if self.report_window[1] >= REPORTS_PER_SECOND:
                self.suppressed += 1
                if not breaker:
                    return
            else:
                self.report_window = (second, self.report_window[1] + 1)
                wire = error_to_wire(error) if error is not None else {}
                text = message or wire.get("message", "")
                if self.suppressed:
                    text += f" (and {self.suppressed} more failures not recorded: over "\
                            f"{REPORTS_PER_SECOND} per second)"
                    self.suppressed = 0
                record = {"time": time.time(), "tool": self.path, "kind": kind,
                          "state": self.sm.state.value, "error_type": wire.get("type"),
                          "message": text, "traceback": wire.get("traceback"), "command": command,
                          "usage": _own_usage(), "pid": self.ctx.pid, "action": action}
        snap = self.breakers.snapshot() if breaker and self.breakers is not None else None
        if record is not None or snap is not None:
            self.ctx.send(self.supervisor, ToolReport(record, snap))

    @property
    def deadline(self) -> float | None:
        return (self.serving.deadline or None) if self.serving is not None else None

    def watch_fds(self) -> list[int]:
        """End of a turn (asked by the shell): send queued messages; fds to watch for answers
        (and the bell of denials met in the tool's other threads)."""
        fds = self.peers.fds() if self.peers is not None else []
        return fds + [self.guard.bell_r] if self.guard is not None else fds

    def on_ready(self, fds: list[int]) -> None:
        if self.guard is not None and self.guard.bell_r in fds:
            self.guard.flush()
        if self.peers is not None:  # (it reads only its own connections)
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
        self.transient = tuple(spec.get("transient") or ())
        self.retry = spec.get("retry") or None
        self.store = spec.get("context_store") or None
        logs.setup(spec.get("log_level"))
        logs.set_title(f"toolvisor tool {self.path}")
        self.log = logger.bind(tool=self.path)
        if spec.get("runtime_dir"):
            self.busy = BusyMarker(marker_path(spec["runtime_dir"], self.ctx.pid))
            self.busy.replies_out = self.ctx.replies_out
        self.ctx.send(sender, Alive(msg.ref, self.ctx.pid, self.ctx.my_address))
        try:
            sandbox.own_process_group()
            self.tmpdir = sandbox.private_tmpdir(spec.get("name") or "tool",
                                                 sandbox.tools_tmp_root(spec.get("runtime_dir")))
            self.spare_fds = sandbox.SpareFds()
            self.inherited = sandbox.inherited_fds()
            limits = spec.get("limits") or {}
            self.max_callers = int(spec.get("max_callers") or DEFAULT_MAX_CALLERS)
            sandbox.apply_hard_limits(limits, bool(spec.get("hard_memory")), self.inherited,
                                      callers=self.max_callers)
            sandbox.apply_security(spec.get("security"))  # env, workdir, umask (security issue)
            isolation.install(self, spec)   # level isolation on tool-to-tool calls; net and exec
            if spec.get("hard_memory"):
                self.spare_memory = sandbox.SpareMemory()
                self.memory_limit = limits.get("memory_mb")
            if limits.get("cpu_seconds"):
                sandbox.raise_on_sigxcpu(limits["cpu_seconds"])
            if spec.get("security") is not None:
                sharing.import_afresh(spec["actor"])  # (not a sibling's preloaded module)
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
            self.idempotent = idempotent_commands(cls)
            if rerun_settings(self.transient, self.retry):
                self.rerun = self.idempotent
            breaker = Breaker.from_dict(spec.get("breaker"))
            if breaker is not None:
                self.breakers = Breakers(breaker, self.path, spec.get("breaker_state"))
            tool._context = self._load_context()
            self.sm.go(S.INITIALIZING)
            self._callback("on_init", dict(tool.config))
            self.sm.go(S.READY)
            self._callback("on_run")
            self.sm.go(S.RUNNING)
        except Exception as exc:
            self.sm.force(S.FAILED)
            # (its supervisor logs the failure: one line per event)
            self.log.debug("tool {} failed to start: {}: {}", self.path, type(exc).__name__, exc)
            self._bounce_held()
            if self.guard is not None:  # a refusal that failed the start is reported too
                self.guard.flush()
                if self.peers is not None:
                    self.peers.flush()
            self.ctx.send(sender, Ack(msg.ref, False, error=error_to_wire(exc)))
            return
        door = self.ctx.open_door(self.max_callers, f"tool {self.path}", self.busy.shut) \
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
        if msg.deadline and time.time() > msg.deadline:
            self.ctx.send(sender, Ack(msg.ref, False, error=CallTimeout(
                f"{msg.op} of {self.path} came after its deadline (the tool was busy); "
                "not applied").to_wire()))
            return
        try:
            self.sm.go(target, self.path)
        except ToolError as exc:
            self.ctx.send(sender, Ack(msg.ref, False, error=exc.to_wire()))
            return
        try:
            self._callback("on_pause" if msg.op == "pause" else "on_resume")
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
                self._callback("on_stop")
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
            command = call.command if isinstance(call, Call) else "(batch)"
            changed = False
            if self.breakers is not None and command in self.commands:
                changed = bool(self.breakers.get(command).record(time.time(), True, trial=False))
            self._report("timeout", CallTimeout(
                f"call of {command!r} waited past its caller's deadline and was not run"),
                command=command, action="dropped the call (its caller had stopped waiting)",
                breaker=changed)
            return
        if isinstance(call, Call) and call.caller and self._abandoned(call, sender):
            return
        outer, self.serving = self.serving, call  # its chain and deadline bind nested calls
        try:
            if isinstance(call, Batch):
                self._serve_batch(call, sender)
                return
            ok, value, error = self._execute(call.command, call.args, call.deadline)
            self._reply(sender, call.cid, value, None if ok else error)
            if error is not None and self._is_fatal(error):
                self.request_exit(False, error)
        finally:
            self.serving = outer
            if self.guard is not None and self.guard.pending:
                self.guard.flush()  # refusals the command met (actors.reach), reported first
            if self.peers is not None:
                self.peers.flush()  # what the command sent leaves now, ahead of its reply's effects

    def _serve_batch(self, batch: Batch, sender: Any) -> None:
        results: list[list[Any]] = []
        self.busy.batch_begin(batch.cid)
        fatal: BaseException | None = None
        for item in batch.calls:
            try:
                command, args = item
            except (TypeError, ValueError):
                results.append([False, None, ToolError("a batch item must be [command, args]",
                                                       type="BadBatch").to_wire()])
                continue
            ok, value, error = self._execute(command, args, batch.deadline)
            if ok:
                results.append([True, value, None])
            else:
                results.append([False, None, error_to_wire(error)])  # type: ignore[arg-type]
                if fatal is None and self._is_fatal(error):  # type: ignore[arg-type]
                    fatal = error
            try:  # kept in shared memory: a crash in a later item does not lose it
                self.busy.batch_item(pack_value(results[-1]))
            except (TypeError, ValueError, OverflowError):
                self.busy.batch_item(None)
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

    def _execute(self, command: Any, args: Any,
                 deadline: float = 0.0) -> tuple[bool, Any, BaseException | None]:
        """Run one command under its breaker; count and report the outcome."""
        breaker = None
        before = ""
        if self.breakers is not None and isinstance(command, str) and command in self.commands:
            breaker = self.breakers.get(command)
            before = breaker.state
            refusal = breaker.admit(time.time())
            if refusal is not None:
                return False, None, refusal
        trial = breaker is not None and breaker.state == HALF_OPEN
        started = time.time()
        clock = perf_counter()
        ok, value, error = self._run_command(command, args)
        if ok or (isinstance(command, str) and command in self.commands):  # (no label per unknown name)
            self.timings.record(command, perf_counter() - clock, ok)
        now = time.time()
        late = bool(deadline) and now > deadline
        failed = (not ok and not isinstance(error, CALLERS_FAULT)) or late
        changed = breaker is not None and (bool(breaker.record(now, failed, trial))
                                           or breaker.state != before)
        if not ok and not isinstance(error, CALLERS_FAULT):
            self._mark_retry(command, error)  # type: ignore[arg-type]
            action = "ended the tool (a fatal error)" if self._is_fatal(error) \
                else "answered the caller with the error"  # type: ignore[arg-type]
            self._report("command_error", error, command=command, action=action, breaker=changed)
        elif late:
            self._report("timeout", CallTimeout(
                f"command {command!r} took {now - started:.3f}s and finished "
                f"{now - deadline:.3f}s after its caller's deadline"), command=command,
                action="the caller had stopped waiting; the result was sent anyway",
                breaker=changed)
        elif changed:
            self._report("", None, breaker=True)
        return ok, value, error

    def _mark_retry(self, command: str, error: BaseException) -> None:
        """An idempotent command failed with a transient error: the caller may retry it."""
        if not self.retry or not self.transient or command not in self.idempotent:
            return
        names = {k.__name__ for k in type(error).__mro__}
        if names.intersection(self.transient):
            try:
                error._toolvisor_retry = self.retry  # type: ignore[attr-defined]
            except AttributeError:
                pass

    def _run_command(self, command: Any, args: Any) -> tuple[bool, Any, BaseException | None]:
        fn = self.commands.get(command) if isinstance(command, str) else None
        if fn is None:
            names = ", ".join(sorted(self.commands)) or "none"
            return False, None, UnknownCommand(
                f"tool {self.path} has no command {command!r}; its commands: {names}")
        if not isinstance(args, dict):
            return False, None, BadArguments(f"arguments of {command!r} must be a map of names")
        serving = self.serving
        self.busy.enter("c", command, serving.cid if serving is not None else 0,
                        type(serving) is Call and command in self.rerun)  # (not a batch's item)
        try:
            return True, reach.tool_code(fn, **args), None
        except TypeError as exc:
            try:  # a bad call, or a TypeError raised inside the command?
                bind(fn, command, args)
            except BadArguments as bad:
                return False, None, bad
            return False, None, exc
        except (Exception, SystemExit) as exc:
            return False, None, self._check_exhaustion(exc)
        finally:
            self.busy.leave()

    def _callback(self, name: str, *args: Any) -> None:
        """Run a lifecycle callback of the tool, marked busy while it runs."""
        self.busy.enter("l", name)
        try:
            reach.tool_code(getattr(self.tool, name), *args)
        finally:
            self.busy.leave()

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
        self.busy.enter("t", getattr(fn, "__name__", "timer"))
        try:
            reach.tool_code(fn)
            if self.peers is not None:
                self.peers.flush()
        except Exception as exc:
            exc = self._check_exhaustion(exc)  # type: ignore[assignment]
            self.log.warning("tool {}: a timer raised {}: {}", self.path, type(exc).__name__, exc)
            self.request_exit(False, exc)
        finally:
            self.busy.leave()

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


def _own_usage() -> dict[str, Any]:
    """This process's own figures for a failure record (cheap: /proc/self and os.times)."""
    out: dict[str, Any] = {}
    try:
        with open("/proc/self/statm") as f:
            out["memory_mb"] = round(int(f.read().split()[1]) * PAGE / 2**20, 2)
    except (OSError, ValueError, IndexError):
        pass
    t = os.times()
    out["cpu_seconds"] = round(t.user + t.system, 3)
    try:
        out["open_files"] = len(os.listdir("/proc/self/fd"))
    except OSError:
        pass
    return out


PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
