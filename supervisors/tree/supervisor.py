"""The Supervisor behaviour: one actor process that starts, watches and restarts children.

It follows Erlang/OTP's supervisor: strategies one_for_one, one_for_all and
rest_for_one; restart intensity (``max_restarts`` in ``period``), past which
it stops its children and escalates to its parent; restart types permanent,
transient and temporary; children start in order and stop in reverse order,
each within its ``shutdown_timeout`` and then killed. Restarts wait per
``Backoff``. The root supervisor never dies: a subtree that gives up under it
is marked FAILED and left down until an operator starts it again.

Multi-step work (start, stop, restart a group) runs as *jobs*: generators that
yield a ``Wait`` and are resumed by the matching event (an ``Ack``, a child's
exit, or its timeout). A backoff delay is a plain timer between two jobs.
Jobs run one at a time, so a supervisor never handles two starts or stops at
once and never blocks its process. A restart is a message to itself (as in
OTP), so operations asked for meanwhile run between the steps of a restart
loop; queries (status, tree, count) never wait for a job, and neither do pause
and resume, which wait for a busy tool's answer on the side.

It learns that a child's process ended from two witnesses (a pidfd per child in
its own loop, and Thespian's exit notice), and its watchdog (``watchdog.py``)
kills tools that hang or are stopped for longer than their ``hang_timeout``.
"""

from __future__ import annotations

import gc
import os
import signal
import time
from collections.abc import Generator, Sequence
from typing import Any

from loguru import logger

from actors import logs, sharing
from actors.codec import LazyList
from actors.context import Context
from actors.errors import (
    CallTimeout,
    InvalidTransition,
    NotFound,
    ToolError,
    ToolUnavailable,
    error_from_wire,
    error_to_wire,
)
from actors.messages import (
    AccountantMoved,
    Ack,
    Alive,
    Breach,
    Event,
    Exiting,
    FailureNote,
    Lifecycle,
    LogLine,
    Reply,
    Request,
    SpecChanged,
    Start,
    Stop,
    ToolReport,
)
from actors.permissions import SYSTEM_TOOLS
from actors.shell import SHELLS, Shell
from actors.state import StateMachine, ToolState, check
from supervisors.processes.procs import kill_tree, pid_alive, session_pids
from supervisors.resources import accountant as _accountant  # noqa: F401  (registers its shell)
from supervisors.tree.children import Child, LiveIndex, describe, restart_type
from supervisors.tree.diagnosing import Diagnosing
from supervisors.tree.directory import publish_child
from supervisors.tree.eventlog import EventLog
from supervisors.tree.hooks import run_hooks, unpack_hooks
from supervisors.tree.jobs import TIMEOUT, Job, JobQueue, Wait
from supervisors.tree.kept import KeptChildren, full_spec
from supervisors.tree.policing import Policing
from supervisors.tree.policy import Intensity, Policy, should_restart
from supervisors.tree.pools import split_instance
from supervisors.tree.specs import apply_spec_change
from supervisors.tree.watchdog import Watchdog

S = ToolState
KILL_GRACE = 3.0          # after SIGKILL, how long to wait for the exit notice
WATCH_HOST_EVERY = 0.5    # root: how often to check that the host process lives
LINGER = 1.0              # how long a child's process may outlive its goodbye
LIVENESS_EVERY = 0.1      # where pidfds are missing: how often to check every child's pid
EVENTS_KEPT = 2000

class SupervisorShell(Shell):
    behaviour = "supervisors.tree.supervisor:Supervisor"


SHELLS["supervisor"] = SupervisorShell


class Supervisor(Policing, Watchdog, Diagnosing):
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.parent: Any = None
        self.name = ""
        self.path = ""
        self.is_root = False
        self.spec: dict[str, Any] = {}
        self.policy = Policy()
        self.intensity = Intensity(3, 5.0)
        self.hooks: list[Any] = []
        self.children: list[Child] = []
        self.named: dict[str, Child] = {}  # the same children by name (``_find``, ``_has``)
        self.pool_sizes: dict[str, int] = {}  # pool name -> its instances here (names clash)
        self.live = LiveIndex()  # live children (and the accountant) by pid and address
        self.sm = StateMachine(S.CREATED)
        self.last_error: str | None = None
        self.host_pid: int | None = None
        self.accountant: Child | None = None      # root only: the accountant it keeps alive
        self.accountant_address: Any = None
        self.jobs = JobQueue(self._job_done, self._arm, self._new_token)
        self.refs: dict[int, Child] = {}
        self.backoffs: dict[int, tuple[Child, list[Child]]] = {}
        self.next_ref = 0
        self._polling = False
        self.steps: dict[int, tuple[Child, int, str, int | None, Any]] = {}  # pending pause/resume
        self.events = EventLog(EVENTS_KEPT)  # root only: the whole tree's recent events
        self.log = logger
        self.usage_wanted: dict[int, dict[str, Any]] = {}  # diagnosing: cid -> record

    # ================================================================== Behaviour
    def receive(self, msg: Any, sender: Any) -> None:
        if isinstance(msg, Request):
            self._on_request(msg, sender)
        elif isinstance(msg, Ack):
            self._on_ack(msg)
        elif isinstance(msg, Alive):
            child = self.refs.get(msg.ref)
            if child is not None and child.alive:
                child.pid = msg.pid
                child.address = msg.address
                self._watch_pid(child)
        elif isinstance(msg, Exiting):
            self._on_exiting(msg, sender)
        elif isinstance(msg, SpecChanged):
            self._on_spec_changed(msg, sender)
        elif isinstance(msg, Event):
            self._publish(msg.event)
        elif isinstance(msg, LogLine):
            self._log_up(msg.level, msg.text)
        elif isinstance(msg, Breach):
            self._on_breach(msg)
        elif isinstance(msg, AccountantMoved):
            self._accountant_moved(msg.address)
        elif isinstance(msg, ToolReport):
            self._on_report(msg, sender)
        elif isinstance(msg, FailureNote):
            self._pass_up(msg.record)
        elif isinstance(msg, Reply):
            self._on_reply(msg)
        elif isinstance(msg, Start):
            self._on_start(msg, sender)
        elif isinstance(msg, Stop):
            self._preempt("the supervisor is stopping")
            self.jobs.add(self._stop_self(msg.ref, sender))
        else:
            self.log.warning("supervisor {} ignores a {} message", self.path or "root",
                             type(msg).__name__)

    def wakeup(self, payload: Any) -> None:
        kind = payload[0] if isinstance(payload, tuple) else payload
        if kind == "job":
            self.jobs.timed_out(payload[1])
        elif kind == "resolve":
            self._expire_waiter(payload[1])
        elif kind == "backoff":
            pending = self.backoffs.pop(payload[1], None)
            if pending is not None and self.sm.state not in (S.FAILED, S.STOPPING, S.STOPPED):
                self.jobs.add(self._restart_group(*pending))
        elif kind == "host":
            self._watch_host()
        elif kind == "liveness":
            self._check_liveness()
        elif kind == "linger":
            self._lingering(*payload[1:])
        elif kind == "watchdog":
            self._watchdog_tick()
        elif kind == "step":
            self._step_done(payload[1], TIMEOUT)
        elif kind == "unlink":
            try:
                os.unlink(payload[1])
            except OSError:
                pass

    # ============================================================ a child's process ended
    # Two independent witnesses: Thespian's ChildActorExited (by address; it can be
    # missed) and a pidfd per child watched in our own loop (by pid), backed by a poll of
    # every child's pid. Whichever comes first wins; the others find no live child.
    #
    # Thespian's notice is often the child's own goodbye, sent when its actor loop ends and
    # before its process has: the process still drains its sends and joins its threads.
    # Before a restart, as in OTP (an 'EXIT' comes from a dead process), the child counts
    # as ended only once its process is gone, so the new instance never overlaps the old
    # one and a caller never reaches the old one. A process that outlives its goodbye by
    # LINGER seconds is killed: its actor has finished, whatever its shutdown_timeout
    # allowed for the stop. A child stopped for good ends at its goodbye (what is left of a
    # tool's process is killed with its process group): a shutdown does not wait for
    # each process's teardown in turn.
    def child_exited(self, address: Any) -> None:
        child = self._at(address)
        if child is None:
            return
        if child.pid and child.stopping_to not in (S.STOPPED, S.FAILED) and pid_alive(child.pid):
            self.ctx.after(LINGER, ("linger", child.pid))
            return
        self._witnessed(child)

    def process_ended(self, pid: int) -> None:
        child = self._with_pid(pid)
        if child is not None:
            self._witnessed(child)

    def _held(self, child: Child) -> Child:
        child.index = self.live
        return child

    def _with_pid(self, pid: int) -> Child | None:
        """The live child (or the accountant) whose process is ``pid``."""
        child = self.live.by_pid.get(pid)
        return child if child is not None and child.alive else None

    def _at(self, address: Any, accountant: bool = True) -> Child | None:
        """The live child (or, unless told not to, the accountant) at ``address``. Looked up
        by its text (Thespian's comparison takes 0.75 us, and a scan of 1,000 children made
        each exit notice cost 0.75 ms), then with Thespian's comparison among the children
        still starting, whose address may still be the placeholder Thespian gave them."""
        child = self.live.by_key.get(str(address))
        if child is None or not child.alive:
            child = next((c for c in self.live.starting.values() if c.address == address), None)
        if child is not None and child is self.accountant and not accountant:
            return None
        return child

    def _witnessed(self, child: Child) -> None:
        """A witness saw the child's process end: handle it once."""
        if child is self.accountant:
            self._accountant_exited(child)
        else:
            self._ended(child)

    def _lingering(self, pid: int, killed: bool = False) -> None:
        """LINGER seconds after a goodbye (or KILL_GRACE after our SIGKILL): is that process
        gone yet?"""
        child = self._with_pid(pid)
        if child is None:
            return  # a witness has seen it end
        if not pid_alive(pid):
            self._witnessed(child)  # (the process witness missed it)
            return
        if not killed:
            self.log.warning("{} {}: pid {} still runs {:g}s after its actor ended (a "
                             "non-daemon thread?); killing it", child.kind, self._path(child),
                             pid, LINGER)
            self._event(child, "killed", f"its process outlived its actor by {LINGER:g}s")
            kill_tree(pid)
        self.ctx.after(KILL_GRACE, ("linger", pid, True))  # (SIGKILLed: look again, quietly)

    def _watch_pid(self, child: Child) -> None:
        if child.pid and not self.ctx.watch_process(child.pid) and not self._polling:
            self._polling = True  # no pidfds here: poll every child's pid instead
            self.ctx.after(LIVENESS_EVERY, "liveness")

    def _check_liveness(self) -> None:
        everyone = self.children + ([self.accountant] if self.accountant is not None else [])
        for child in everyone:
            if child.alive and child.pid and not pid_alive(child.pid):
                self.process_ended(child.pid)
        self.ctx.after(LIVENESS_EVERY, "liveness")

    def _ended(self, child: Child) -> None:
        for ref in [r for r, st in self.steps.items() if st[0] is child]:
            self._step_done(ref, None)  # "the process ended during pause"
        pid = child.pid
        self._note_exit(child, pid)  # recovery: a crash record and a breaker failure, if unexpected
        child.address = None
        child.pid = None
        self._cleanup(child, pid)
        if self.jobs.exited(child):
            return
        if child.exit_report is not None:
            return  # the job handling its report will see that it is gone
        error = child.hung or {"code": "error", "type": "ProcessExited",
                               "message": f"process {pid} ended unexpectedly (killed or crashed)",
                               "traceback": None}
        self._log_up("WARNING", f"{child.kind} {self._path(child)} crashed: {error['message']}")
        if self._will_restart(child, normal=False):
            child.sm.force(S.RESTARTING)
        self.jobs.add(self._failure(child, child.generation, error, normal=False))

    def system_exit(self) -> None:
        """The actor system is shutting down; Thespian ends our children for us."""

    # ================================================================ start / stop self
    def _on_start(self, msg: Start, sender: Any) -> None:
        spec = msg.spec
        self.parent = sender
        self.spec = spec
        self.name = spec.get("name", "")
        self.path = spec.get("path", self.name)
        self.is_root = bool(spec.get("root"))
        self.policy = Policy.from_dict(spec.get("policy") or {})
        self.intensity = Intensity(self.policy.max_restarts, self.policy.period)
        self.hooks = unpack_hooks(spec.get("inherited_hooks")) + unpack_hooks(spec.get("hooks"))
        logs.setup(spec.get("log_level"))
        logs.set_title(f"toolvisor supervisor {self.path or '(root)'}")
        self.log = logger.bind(supervisor=self.path)
        self.ctx.send(sender, Alive(msg.ref, self.ctx.pid, self.ctx.my_address))
        if self.is_root and spec.get("host_pid"):
            self.host_pid = int(spec["host_pid"])
            self.ctx.after(WATCH_HOST_EVERY, "host")
        self.accountant_address = spec.get("accountant")
        self.children = [self._held(Child(c)) for c in spec.get("children", [])]
        self.named = {}
        self.pool_sizes = {}
        for c in self.children:
            if self.named.setdefault(c.name, c) is c:  # (the first of a name, as a search found it)
                self._count_instance(c.name, +1)
        self.sm.go(S.INITIALIZING)
        if self.is_root:
            self.accountant = self._held(Child({
                "name": "accountant", "kind": "accountant",
                "cadence": spec.get("sample_every", 1.0), "start_timeout": 30.0}))
        self.jobs.add(self._boot(msg.ref, sender))

    def _boot(self, ref: int, reply_to: Any) -> Job:
        if self.accountant is not None:
            error = yield from self._start(self.accountant)
            if error is None:
                self.accountant_address = self.accountant.address
            else:
                self.log.error("the accountant did not start ({}); running without resource "
                               "accounting", describe(error))
        started: list[Child] = []
        for child in self.children:
            error = yield from self._start(child)
            if error is not None:
                for c in reversed(started):
                    yield from self._stop_process(c, S.STOPPED)
                self.sm.force(S.FAILED)
                self.last_error = f"child {child.name} failed to start: {describe(error)}"
                self.ctx.send(reply_to, Ack(ref, False, error={**error, "message": self.last_error}))
                return
            started.append(child)
        self.sm.go(S.READY)
        self.sm.go(S.RUNNING)
        self.ctx.send(reply_to, Ack(ref, True, {"pid": self.ctx.pid}))

    def _stop_self(self, ref: int, reply_to: Any) -> Job:
        if self.sm.state in (S.RUNNING, S.INITIALIZING, S.READY, S.PAUSED):
            self.sm.go(S.STOPPING)
        for child in reversed(self.children):
            if child.alive or child.state not in (S.STOPPED, S.FAILED):  # keep how it ended
                yield from self._stop_process(child, S.STOPPED)
        self.sm.force(S.STOPPED)
        self._notify_all()
        self.ctx.send(reply_to, Ack(ref, True, {"children": self._snapshot()}))
        self.ctx.exit()

    def _watch_host(self) -> None:
        if self.host_pid and not pid_alive(self.host_pid):
            self.log.error("the host process {} is gone; ending the whole actor system",
                           self.host_pid)
            me = os.getpid()
            for pid in session_pids(os.getsid(0)):  # actors and whatever tools started
                if pid != me:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except OSError:
                        pass
            os.kill(me, signal.SIGKILL)
        self.ctx.after(WATCH_HOST_EVERY, "host")

    # ================================================================= requests
    def _on_request(self, req: Request, sender: Any) -> None:
        handler = getattr(self, f"_op_{req.op}", None)
        if handler is None:
            self._reply(sender, req.cid, error=ToolError(f"unknown supervisor operation {req.op!r}"))
            return
        try:
            result = handler(req, sender)
        except ToolError as exc:
            self._reply(sender, req.cid, error=exc)
            return
        except Exception as exc:
            self.log.opt(exception=exc).error("operation {} failed", req.op)
            self._reply(sender, req.cid, error=exc)
            return
        if isinstance(result, Generator):
            self.jobs.add(result, req.cid, sender)
        elif result is not _DEFERRED:
            self._reply(sender, req.cid, value=result)

    def _reply(self, to: Any, cid: int, value: Any = None, error: BaseException | None = None) -> None:
        if error is None:
            try:
                self.ctx.send(to, Reply(cid, True, value))
                return
            except (TypeError, ValueError) as exc:  # never leave a caller without an answer
                self.log.error("could not send a reply: {}", exc)
                error = exc
        self.ctx.send(to, Reply(cid, False, error=error_to_wire(error)))

    def _usable(self) -> None:
        if self.sm.state in (S.FAILED, S.STOPPING, S.STOPPED):
            raise ToolUnavailable(f"supervisor {self.path or '(root)'} is {self.sm.state.value}"
                                  + (f": {self.last_error}" if self.last_error else ""))

    def _op_ping(self, req: Request, sender: Any) -> Any:
        acc = self.accountant
        ready = acc is not None and acc.alive and acc.state is S.RUNNING
        return {"pid": self.ctx.pid, "pgid": os.getpgrp(), "sid": os.getsid(0),
                "state": self.sm.state.value,
                "gc_frozen": gc.get_freeze_count(),  # (inherited objects set aside: actors.sharing)
                "frozen_here": sharing.frozen_here(),
                "accountant": acc.address if ready else None,  # type: ignore[union-attr]
                "accountant_pid": acc.pid if ready else None}  # type: ignore[union-attr]

    def _op_spawn(self, req: Request, sender: Any) -> Job:
        self._usable()
        spec = dict(req.args["spec"])
        return self._add_child(spec)

    def _add_child(self, spec: dict[str, Any]) -> Job:
        self._usable()
        self._name_free(spec)
        child = self._held(Child(spec))
        self.children.append(child)
        self.named[child.name] = child
        self._count_instance(child.name, +1)
        error = yield from self._start(child)
        if error is not None:
            self._drop(child)
            self._notify(child)  # (its route entry goes too: no instance left half there)
            raise error_from_wire(error, tool=self._path(child))
        self._spec_changed([child.name], full_spec(child.spec))
        return self._info(child, kinds=False)  # (the host makes a handle of it)

    def _name_free(self, spec: dict[str, Any]) -> None:
        """Refuse a name taken here: by a child, or a pool's name by a single tool and the
        reverse (``w/fetch`` must name one thing: the pool or the tool)."""
        name = spec["name"]
        parts = split_instance(name)
        pool = parts[0] if parts is not None else None
        if pool and parts[1] == 1 and self.pool_sizes.get(pool):  # (only a new pool starts
            have = sorted((k, n) for n in self.named  # at #1: scale() adds above the top)
                          if (k := split_instance(n)) is not None and k[0] == pool)
            raise ToolError(f"{self._join(pool)} already exists (a pool of {len(have)}: "
                            f"{', '.join(n for _, n in have)}); pick another name, or scale() "
                            "or remove it", type="DuplicateName")
        if self._find(name) is not None:
            raise ToolError(f"{self._join(name)} already exists; pick another name "
                            "or stop and remove the existing one", type="DuplicateName")
        if pool and self._find(pool) is not None:
            raise ToolError(f"{self._join(pool)} already exists (a single tool), so a pool "
                            "cannot take its name; pick another name or remove that tool",
                            type="DuplicateName")
        if not pool and self.pool_sizes.get(name):
            raise ToolError(f"{self._join(name)} is a pool ({name}#1..) and already exists; "
                            "pick another name or remove the pool", type="DuplicateName")

    def _op_remove(self, req: Request, sender: Any) -> Job:
        child = self._child(req.args["name"])
        if child.alive:
            child.operator_stopped = True
            yield from self._stop_process(child, S.STOPPED)
        self._drop(child)
        self._notify(child)
        self._spec_changed([child.name], gone=True)
        return {"removed": child.name}

    def _op_control(self, req: Request, sender: Any) -> Job:
        self._usable()
        child = self._child(req.args["name"])
        op = req.args["op"]
        if op not in ("pause", "resume", "stop", "start", "restart"):
            raise ToolError(f"unknown lifecycle operation {op!r}; use pause, resume, stop, "
                            "start or restart")
        if op in ("pause", "resume"):
            self._step(child, op, req.deadline, req.cid, sender)
            return _DEFERRED
        return self._control(child, op)

    # ------------------------------------------------------------ pause and resume
    # Not jobs: a busy tool takes the step only when its command returns, and the
    # supervisor must not wait for that with its other work queued behind it.
    def _step(self, child: Child, op: str, deadline: float, cid: int | None, reply_to: Any) -> None:
        """Send ``pause``/``resume``; the answer comes in ``_step_done`` (ack, death or timer).

        The tool refuses a step that reaches it after ``cutoff``; we wait a little longer
        for its answer. No answer by the caller's deadline: CallTimeout, and the tool is
        left as it is (only the watchdog ends a busy tool).
        """
        path = self._path(child)
        if child.kind != "tool":
            raise ToolError(f"{path} is a supervisor; pause and resume apply to tools")
        target = S.PAUSED if op == "pause" else S.RUNNING
        if not child.alive:
            raise InvalidTransition(f"{path}: cannot {op} while {child.state.value}")
        check(child.state, target, path)
        if not deadline:
            deadline = time.time() + (child.shutdown_timeout or 5.0)
        cutoff = deadline - min(0.25, max(0.0, deadline - time.time()) / 4)
        ref = self._ref(child)
        self.steps[ref] = (child, child.generation, op, cid, reply_to)
        self.ctx.send(child.address, Lifecycle(ref, op, cutoff))
        self.ctx.after(max(0.0, deadline - 0.02 - time.time()), ("step", ref))

    def _step_done(self, ref: int, r: Any) -> None:
        step = self.steps.pop(ref, None)
        if step is None:
            return
        child, gen, op, cid, reply_to = step
        path = self._path(child)
        same = child.generation == gen and child.alive and self._has(child)
        error: BaseException | None = None
        if r is TIMEOUT or (isinstance(r, Ack) and (r.error or {}).get("code") == "timeout"):
            error = CallTimeout(f"{path} did not {op} before the deadline: it is busy in a "
                                f"command; it was left {child.state.value}, untouched", tool=path)
        elif isinstance(r, Ack) and r.ok:
            if same and child.state in (S.RUNNING, S.PAUSED):
                child.sm.force(S.PAUSED if op == "pause" else S.RUNNING)
                self._event(child, op + "d")
                self._notify(child)
        elif isinstance(r, Ack) and (r.error or {}).get("code") == "invalid_transition":
            error = error_from_wire(r.error, tool=path)
        else:
            wire = r.error if isinstance(r, Ack) and r.error else child.hung or {
                "type": "ProcessExited", "message": "the process ended during " + op}
            wire = {"code": "error", **wire}
            # a callback that raised is the tool's error; a process that ended (killed as
            # hung, or crashed) leaves the caller with ToolUnavailable saying why
            error = error_from_wire(wire, tool=path) if isinstance(r, Ack) else \
                ToolUnavailable(describe(wire), tool=path)
            if same and isinstance(r, Ack):  # the callback raised: a failure
                if self._will_restart(child, normal=False):
                    child.sm.force(S.RESTARTING)
                self.jobs.add(self._failure(child, gen, wire, normal=False))
        if cid is not None:
            if error is None:
                self._reply(reply_to, cid, value=self._info(child, kinds=False))
            else:
                self._reply(reply_to, cid, error=error)
        elif error is not None:
            self.log.info("{} of {} not applied: {}", op, path, error)

    def _control(self, child: Child, op: str) -> Job:
        path = self._path(child)
        if op == "stop":
            if child.state is S.STOPPED:
                raise InvalidTransition(f"{path} is already stopped")
            child.operator_stopped = True
            yield from self._stop_process(child, S.STOPPED)
            self._event(child, "stopped by operator")
            return self._info(child, kinds=False)
        if op == "start":
            if child.state not in (S.STOPPED, S.FAILED, S.CREATED):
                raise InvalidTransition(f"{path}: cannot start while {child.state.value}; "
                                        "start needs a stopped or failed child")
            child.operator_stopped = False
            child.backoff.reset()
            error = yield from self._start(child)
            if error is not None:
                raise error_from_wire(error, tool=path)
            return self._info(child, kinds=False)
        # restart
        child.operator_stopped = False
        if child.alive:
            yield from self._stop_process(child, S.RESTARTING)
        child.sm.force(S.RESTARTING)
        error = yield from self._start(child)
        if error is not None:
            raise error_from_wire(error, tool=path)
        self._event(child, "restarted by operator")
        return self._info(child, kinds=False)

    def _op_resolve(self, req: Request, sender: Any) -> Any:
        child = self._child(req.args["name"])
        not_pid = req.args.get("not_pid")
        answer = self._route(child, not_pid)
        if answer is not None:
            if isinstance(answer, ToolError):
                raise answer
            return answer
        if not req.args.get("wait"):
            raise ToolUnavailable(f"{self._path(child)} is {child.state.value}")
        if not isinstance(child.waiters, list):
            child.waiters = []  # (() until the first)
        child.waiters.append((req.cid, sender, not_pid))
        self.ctx.after(max(0.0, req.deadline - time.time()), ("resolve", req.cid))
        return _DEFERRED

    def _route(self, child: Child, not_pid: int | None) -> dict[str, Any] | ToolError | None:
        """A route to the child (other than the instance ``not_pid``), an error saying why
        none will come, or None (wait)."""
        if self.sm.state in (S.FAILED, S.STOPPED):
            return ToolUnavailable(f"supervisor {self.path} is {self.sm.state.value}")
        state = child.state
        if child.alive and state in (S.RUNNING, S.PAUSED) and child.pid != not_pid:
            return {"address": child.address, "pid": child.pid, "generation": child.generation,
                    "kind": child.kind, "state": state.value, "socket": child.socket,
                    "retry": self._rerun_settings(child)}
        if child.operator_stopped or state in (S.STOPPED, S.FAILED):
            why = f": {child.last_error}" if child.last_error and state is S.FAILED else ""
            return ToolUnavailable(f"{self._path(child)} is {state.value}{why}")
        return None

    def _notify(self, child: Child) -> None:
        """Answer parked resolves once the child is serving or settled down."""
        publish_child(self.spec.get("runtime_dir"), self._path(child), child, self._has(child),
                      self._rerun_settings(child))
        keep = []
        for cid, sender, not_pid in child.waiters:
            answer = self._route(child, not_pid) if self._has(child) else \
                NotFound(f"{self._path(child)} was removed")
            if answer is None:
                keep.append((cid, sender, not_pid))
            elif isinstance(answer, ToolError):
                self._reply(sender, cid, error=answer)
            else:
                self._reply(sender, cid, value=answer)
        child.waiters = keep or ()

    def _notify_all(self) -> None:
        for child in self.children:
            self._notify(child)

    def _expire_waiter(self, cid: int) -> None:
        for child in self.children:
            for w in child.waiters:
                if w[0] == cid:
                    child.waiters.remove(w)
                    self._reply(w[1], cid, error=ToolUnavailable(
                        f"{self._path(child)} did not come back in time ({child.state.value})"))
                    return

    def _op_inspect(self, req: Request, sender: Any) -> Any:
        return {"name": self.name, "path": self.path, "pid": self.ctx.pid,
                "state": self.sm.state.value, "last_error": self.last_error,
                "policy": self.policy.to_dict(), "root": self.is_root,
                "busy": self.jobs.busy, "queued_jobs": self.jobs.queued,
                "children": LazyList(self.children, self._listed)}

    def _listed(self, child: Child) -> dict[str, Any]:
        """A child as ``inspect`` lists it: a running child supervisor without the names of
        its own children (the host asks it for them; 1,000 of them cost its parent a
        reply of 22 KB and 0.3 MiB that it kept), any other with them (its spec's)."""
        return self._info(child, kinds=child.kind != "supervisor"
                          or child.state not in (S.RUNNING, S.PAUSED))

    def _snapshot(self) -> LazyList:
        """Our children as we last saw them, for our parent to answer for them once we are gone
        (made one by one as the message is packed)."""
        def seen(c: Child) -> dict[str, Any]:
            info = self._info(c)
            if c.kind == "supervisor":
                info["snapshot"] = c.snapshot
            return info

        return LazyList(self.children, seen)

    def _op_status_below(self, req: Request, sender: Any) -> Any:
        """Status of ``rest`` (a path) under our child supervisor ``name`` that is not running.

        The host asks this when the child's own supervisor is down (failed or stopped):
        the answer comes from the last view that supervisor sent us as it ended.
        """
        top = self._child(req.args["name"])
        rest: list[str] = list(req.args["rest"])
        if top.alive and top.state in (S.RUNNING, S.PAUSED):
            raise ToolUnavailable(f"{self._path(top)} is running; ask it")
        down = S.FAILED if top.state is S.FAILED else S.STOPPED
        why = top.last_error or f"{self._path(top)} is {top.state.value}"
        nodes: list[dict[str, Any]] | None = top.snapshot
        if nodes is None:  # it died without a word: its spec is all we have
            nodes = [{"name": c["name"], "kind": c.get("kind", "tool"), "restarts": 0,
                      "state": down.value, "last_error": None, "generation": 0,
                      "restart": c.get("restart", "permanent"), "snapshot": None,
                      "security_level": c.get("security_level"), "actor": c.get("actor")}
                     for c in top.spec.get("children", [])]
        path = self._path(top)
        info: dict[str, Any] | None = None
        for name in rest:
            info = next((n for n in nodes or [] if n["name"] == name), None)
            path = f"{path}/{name}"
            if info is None:
                raise NotFound(f"{path} does not exist (under {self._path(top)}, which is "
                               f"{top.state.value})")
            nodes = info.get("snapshot")
        assert info is not None
        own = info.get("last_error")
        state = S(info["state"])
        if state not in (S.STOPPED, S.FAILED):
            state = down
        return {**info, "path": path, "pid": None, "state": state.value, "snapshot": None,
                "last_error": own if own and state is S.FAILED else
                f"under {self._path(top)}, which is {top.state.value}: {why}"}

    def _op_count(self, req: Request, sender: Any) -> Any:
        """OTP's count_children: specs, active (a live process), supervisors, workers.

        The root leaves out the system's own tools (``SYSTEM_TOOLS``), as
        ``children()`` and ``tree()`` list them apart."""
        mine = [c for c in self.children if not (self.is_root and c.name in SYSTEM_TOOLS)]
        return {"specs": len(mine), "active": sum(c.alive for c in mine),
                "supervisors": sum(c.kind == "supervisor" for c in mine),
                "workers": sum(c.kind == "tool" for c in mine)}

    def _op_status(self, req: Request, sender: Any) -> Any:
        """A child's status; ``children`` False leaves out the names and kinds of a child
        supervisor's children (a handle's ``status()`` does not show them)."""
        return self._info(self._child(req.args["name"]), kinds=bool(req.args.get("children", True)))

    def _op_child_spec(self, req: Request, sender: Any) -> Any:
        """The spec a child was started from (a pool copies it to start more instances)."""
        return full_spec(self._child(req.args["name"]).spec)

    def _op_note_event(self, req: Request, sender: Any) -> Any:
        """Record an event about a path under this supervisor (e.g. a pool was scaled)."""
        self._publish({"time": time.time(), "path": self._join(str(req.args["name"])),
                       "event": str(req.args["event"]), "detail": str(req.args.get("detail", "")),
                       "state": str(req.args.get("state", self.sm.state.value))})
        return True

    def _op_events(self, req: Request, sender: Any) -> Any:
        since = float(req.args.get("since", 0.0))
        return self.events.since(since)

    def _op_events_packed(self, req: Request, sender: Any) -> Any:
        """``events`` as they are kept: the host unpacks them (``eventlog.unpack_events``)."""
        return self.events.packed_since(float(req.args.get("since", 0.0)))

    def _op_set_policy(self, req: Request, sender: Any) -> Any:
        policy = Policy.from_dict(req.args["policy"])
        self.policy = policy
        self.intensity.max_restarts = policy.max_restarts
        self.intensity.period = policy.period
        self.spec = {**self.spec, "policy": policy.to_dict()}
        self._spec_changed()
        self._publish({"time": time.time(), "path": self.path, "event": "policy changed",
                       "detail": str(policy.to_dict()), "state": self.sm.state.value})
        return policy.to_dict()

    def _op_shutdown(self, req: Request, sender: Any) -> Job:
        self._preempt("the system is shutting down")
        return self._shutdown_job()

    def _shutdown_job(self) -> Job:
        self.sm.force(S.STOPPING)
        for child in reversed(self.children):
            yield from self._stop_process(child, S.STOPPED)
        self.sm.force(S.STOPPED)
        self._notify_all()
        return {"stopped": [c.name for c in self.children]}

    # ================================================================= child events
    def _on_ack(self, msg: Ack) -> None:
        if msg.ref in self.steps:
            self._step_done(msg.ref, msg)
            return
        child = self.refs.get(msg.ref)
        if child is not None and msg.ok and isinstance(msg.value, dict) and "children" in msg.value:
            child.snapshot = msg.value["children"]  # a supervisor's last view, as it stopped
        if self.jobs.acked(msg):
            return
        if child is not None and not msg.ok:
            child.last_error = describe(msg.error)

    def _on_exiting(self, msg: Exiting, sender: Any) -> None:
        child = self._at(sender, accountant=False)
        if child is None or child.exit_report is not None:
            return
        child.exit_report = msg
        if msg.children is not None:
            child.snapshot = msg.children
        if not msg.normal:
            self._diagnose(child, "exit", msg.error, "restarted" if self._will_restart(
                child, False) else "left failed")
        if msg.escalation and self.is_root:
            pass  # stays as it is until the failure job marks it FAILED
        elif self._will_restart(child, msg.normal):
            child.sm.force(S.RESTARTING)
        self.jobs.add(self._failure(child, child.generation, msg.error, normal=msg.normal,
                                    escalation=msg.escalation))

    def _will_restart(self, child: Child, normal: bool) -> bool:
        return not child.operator_stopped and should_restart(child.restart_type, normal)

    # ================================================================= failure handling
    def _failure(self, child: Child, generation: int, error: dict[str, Any] | None,
                 normal: bool, escalation: bool = False) -> Job:
        if child.generation != generation or not self._has(child):
            return  # a restart already replaced that instance
        if child.alive:
            if escalation and self.is_root:
                final = S.FAILED
            elif self._will_restart(child, normal):
                final = S.RESTARTING
            else:
                final = S.STOPPED if normal else S.FAILED
            yield from self._stop_process(child, final, hooks=not escalation)
        if child.operator_stopped:
            return
        path = self._path(child)
        if not normal:
            child.last_error = describe(error)
            self._event(child, "escalated" if escalation else "failed", child.last_error)
            if child.kind == "tool":
                self._hooks("on_error", child, error_from_wire(error or {}, tool=path))
        else:
            self._event(child, "exited normally")
        if escalation and self.is_root:
            child.sm.force(S.FAILED)
            self.log.error("subtree {} gave up and is left down: {}", path, child.last_error)
            self._notify(child)
            return
        if not self._will_restart(child, normal):
            child.sm.force(S.STOPPED if normal else S.FAILED)
            self._notify(child)
            if normal and child.spec.get("significant"):
                yield from self._auto_shutdown(child)
            return
        yield from self._recover(child, error)

    def _auto_shutdown(self, ended: Child) -> Job:
        """OTP 24 auto_shutdown: a significant child ended normally; maybe stop ourselves."""
        mode = self.policy.auto_shutdown
        if mode == "never" or self.is_root or self.sm.state is not S.RUNNING:
            return
        significant = [c for c in self.children if c.spec.get("significant")]
        if mode == "all_significant" and any(c.alive for c in significant):
            return
        why = (f"auto_shutdown={mode}: significant child {ended.name} ended normally"
               + ("" if mode == "any_significant" else ", the last of them"))
        self.log.info("supervisor {} stops itself: {}", self.path, why)
        self._publish({"time": time.time(), "path": self.path, "event": "auto shutdown",
                       "detail": why, "state": "stopping"})
        self.sm.force(S.STOPPING)
        for child in reversed(self.children):
            if child.alive:
                yield from self._stop_process(child, S.STOPPED)
        self.sm.force(S.STOPPED)
        self.last_error = None
        self._notify_all()
        self.ctx.send(self.parent, Exiting(normal=True, children=self._snapshot()))

    def _recover(self, failed: Child, error: dict[str, Any] | None) -> Job:
        """Count a restart, stop the rest of the group, then restart it now or after backoff.

        A backoff wait is a timer, not part of the job: the supervisor serves
        other requests (and other children's failures) while it waits.
        """
        if not self.intensity.allow(time.monotonic()):
            yield from self._give_up(failed, error)
            return
        group = self._group(failed)
        for sib in reversed(group):
            if sib is not failed and sib.alive:
                yield from self._stop_process(sib, S.RESTARTING)
        for sib in group:
            if self._restartable_in_group(sib, failed):
                sib.sm.force(S.RESTARTING)
                self._notify(sib)  # (callers of a pool go to the other instances meanwhile)
            elif sib.state is not S.STOPPED and not sib.alive:
                sib.sm.force(S.STOPPED)
                self._notify(sib)
        ran_for = time.monotonic() - failed.started_at if failed.started_at else None
        delay = failed.backoff.next_delay(self.policy.backoff, ran_for)
        if delay > 0:
            self._event(failed, "backoff", f"{delay:.3f}s before restart")
        # The restart is a message to ourselves (as in OTP), even with no delay: jobs queued
        # meanwhile (an operator's stop, a spawn) run before it, so a restart loop never
        # holds the supervisor.
        token = self._new_token()
        self.backoffs[token] = (failed, group)
        self.ctx.after(delay, ("backoff", token))

    def _restart_group(self, failed: Child, group: list[Child]) -> Job:
        for i, sib in enumerate(group):
            if self._has(sib) and sib.operator_stopped and self.policy.strategy == "rest_for_one":
                self._leave_down(group[i + 1:], sib)
                return
            if not self._has(sib) or sib.alive or not self._restartable_in_group(sib, failed):
                continue  # removed, or an operator started or stopped it meanwhile
            sib.restarts += 1
            err = yield from self._start(sib, fail_state=S.RESTARTING)
            if err is not None:
                sib.last_error = describe(err)
                self._event(sib, "restart failed", sib.last_error)
                if sib.kind == "tool":
                    self._hooks("on_error", sib, error_from_wire(err, tool=self._path(sib)))
                yield from self._recover(sib, err)
                return
            self._event(sib, "restarted")

    def _leave_down(self, later: list[Child], stopped: Child) -> None:
        """rest_for_one: the children after one an operator stopped depend on it; they stay down."""
        for sib in later:
            if self._has(sib) and not sib.alive and sib.state is S.RESTARTING:
                sib.sm.force(S.STOPPED)
                self._event(sib, "left down", f"{stopped.name} before it was stopped by an operator")
                self._notify(sib)

    def _restartable_in_group(self, sib: Child, failed: Child) -> bool:
        if sib.operator_stopped:
            return False
        return sib is failed or sib.restart_type != "temporary"

    def _group(self, failed: Child) -> list[Child]:
        if failed.spec.get("pool"):
            return [failed]  # a pool's instance is restarted alone (one_for_one inside the pool)
        strategy = self.policy.strategy
        if strategy == "one_for_all":
            return list(self.children)
        if strategy == "rest_for_one":
            return self.children[self.children.index(failed):]
        return [failed]

    def _give_up(self, failed: Child, error: dict[str, Any] | None) -> Job:
        p = self.policy
        reason = (f"gave up: more than {p.max_restarts} restarts in {p.period:g}s; "
                  f"last failure in {failed.name}: {describe(error)}")
        self.log.error("supervisor {} {}", self.path or "(root)", reason)
        self._publish({"time": time.time(), "path": self.path, "event": "gave up",
                       "detail": reason, "state": "failed"})
        if self.is_root:
            if failed.alive:
                yield from self._stop_process(failed, S.FAILED)
            failed.sm.force(S.FAILED)
            failed.last_error = reason
            self._notify(failed)
            return
        self.sm.force(S.FAILED)
        self.last_error = reason
        for child in reversed(self.children):
            yield from self._stop_process(child, S.STOPPED)
        if self._has(failed):
            failed.sm.force(S.FAILED)  # the one that made us give up, as its status shows
            failed.last_error = describe(error)
        self._notify_all()
        self.ctx.send(self.parent, Exiting(normal=False, escalation=True, error={
            "code": "error", "type": "SupervisorGaveUp", "message": reason, "traceback": None},
            children=self._snapshot()))

    # ================================================================= start / stop one child
    def _start(self, child: Child, fail_state: ToolState = S.FAILED) -> Job:
        """Start ``child``; return None on success or the error (wire form)."""
        path = self._path(child)
        if child.kind == "tool":
            self._hooks("pre_start", child)
        child.sm.force(S.INITIALIZING)
        child.generation += 1
        child.exit_report = None
        publish_child(self.spec.get("runtime_dir"), path, child, self._has(child),
                      self._rerun_settings(child))
        child.snapshot = None
        ref = self._ref(child)
        if child.kind == "tool":
            sharing.preload_tool(child.spec)  # opt-in: TOOLVISOR_PRELOAD_TOOLS=1 (actors/sharing.py)
        child.address = self.ctx.spawn(child.kind)
        self.ctx.send(child.address, Start(ref, self._start_spec(child)))
        r = yield Wait("ack", child, ref, child.start_timeout)
        if isinstance(r, Ack) and r.ok:
            child.pid = (r.value or {}).get("pid", child.pid)
            self._watch_pid(child)
            child.hung = None
            child.stopped_since = None
            self._arm_watchdog(child)
            child.socket = (r.value or {}).get("socket")
            child.tmpdir = (r.value or {}).get("tmpdir")
            child.inherited_fds = list((r.value or {}).get("inherited_fds") or [])
            self._track(child)
            child.sm.go(S.READY)
            child.sm.go(S.RUNNING)
            child.started_at = time.monotonic()
            self._event(child, "started", f"pid {child.pid}")
            if child.kind == "tool":
                self._hooks("post_start", child)
            self._notify(child)
            return None
        if isinstance(r, Ack):
            error = r.error or {"message": "start refused"}
        elif r is TIMEOUT:
            error = {"code": "error", "type": "StartTimeout", "traceback": None,
                     "message": f"did not start within {child.start_timeout:g}s"}
        else:
            error = {"code": "error", "type": "ProcessExited", "traceback": None,
                     "message": "the process ended while starting"}
        error.setdefault("code", "error")
        self.log.warning("{} {} failed to start: {}", child.kind, path, describe(error))
        self._diagnose(child, "init_failure", error, "will retry the start (restart policy)"
                       if fail_state is S.RESTARTING else "not started (left failed)")
        if child.alive:
            yield from self._stop_process(child, fail_state, hooks=False)
        child.sm.force(fail_state)
        child.last_error = describe(error)
        child.started_at = None  # it did not run: backoff keeps growing
        if fail_state is S.FAILED:
            self._notify(child)
        return error

    def _stop_process(self, child: Child, final: ToolState, hooks: bool = True) -> Job:
        """End the child's process (politely, then by SIGKILL) and set ``final``."""
        path = self._path(child)
        if child.alive:
            run = hooks and child.kind == "tool"
            if run:
                self._hooks("pre_stop", child)
            child.sm.force(S.STOPPING)
            child.stopping_to = final
            limit = child.shutdown_timeout  # None: 'infinity'; 0: 'brutal_kill'
            r = TIMEOUT
            if limit != 0.0:
                self.ctx.send(child.address, Stop(self._ref(child)))
                r = yield Wait("exit", child, timeout=limit)
            if r is TIMEOUT:
                why = "shutdown_timeout='brutal_kill'" if limit == 0.0 else f"no stop within {limit:g}s"
                if limit != 0.0:
                    self.log.warning("{} did not stop within {:g}s; killing pid {}", path, limit,
                                     child.pid)
                self._event(child, "killed", why)
                if limit != 0.0:
                    self._diagnose(child, "killed", {
                        "type": "StopTimeout",
                        "message": f"did not stop within {limit:g}s (pid {child.pid})"},
                        "killed with SIGKILL")
                kill_tree(child.pid)
                r = yield Wait("exit", child, timeout=KILL_GRACE)
                if r is TIMEOUT:
                    self.log.error("{}: no exit notice after SIGKILL; forgetting it", path)
                    child.address = None
                    child.pid = None
            child.stopping_to = None
            if run:
                self._hooks("post_stop", child)
        child.sm.force(final)
        if final in (S.STOPPED, S.FAILED):
            self._notify(child)

    def _start_spec(self, child: Child) -> dict[str, Any]:
        spec = full_spec(child.spec)
        spec["path"] = self._path(child)
        spec.setdefault("log_level", self.spec.get("log_level"))
        spec["call_path"] = self.spec.get("call_path", "thespian")
        spec["runtime_dir"] = self.spec.get("runtime_dir")
        self._recovery_spec(child, spec)
        if child.kind == "supervisor":
            inherited = self.spec.get("inherited_hooks")
            own = self.spec.get("hooks")
            spec["inherited_hooks"] = _merge_hooks(inherited, own)
            spec["accountant"] = self.accountant_address
        else:
            spec["fatal"] = list(self.policy.fatal_errors)
        return spec

    # ================================================================= jobs
    def _job_done(self, cid: int | None, reply_to: Any, value: Any = None,
                  error: BaseException | None = None) -> None:
        if error is not None and not isinstance(error, ToolError):
            self.log.opt(exception=error).error("supervisor {} job failed", self.path)
        if cid is not None:
            self._reply(reply_to, cid, value=value, error=error)

    def _arm(self, delay: float, token: int) -> None:
        self.ctx.after(delay, ("job", token))

    def _new_token(self) -> int:
        self.next_ref += 1
        return self.next_ref

    def _preempt(self, why: str) -> None:
        """Drop the running and queued jobs (answering their callers) to stop at once."""
        self.backoffs.clear()
        for cid, reply_to in self.jobs.drop():
            if cid is not None:
                self._reply(reply_to, cid, error=ToolUnavailable(f"cancelled: {why}"))

    # ================================================================= helpers
    def _ref(self, child: Child) -> int:
        token = self._new_token()
        self.refs[token] = child
        if len(self.refs) > 4096:
            for k in list(self.refs)[:2048]:
                del self.refs[k]
        return token

    def _find(self, name: str) -> Child | None:
        return self.named.get(name)

    def _has(self, child: Child) -> bool:
        """``child in self.children``, without a pass over them (names are unique)."""
        return self.named.get(child.name) is child

    def _drop(self, child: Child) -> None:
        self.children.remove(child)
        if self.named.get(child.name) is child:
            del self.named[child.name]
            self._count_instance(child.name, -1)
        self.live.forget(child)

    def _count_instance(self, name: str, step: int) -> None:
        """Keep ``pool_sizes`` (a name with ``#`` is always a pool's instance)."""
        parts = split_instance(name)
        if parts is not None:
            left = self.pool_sizes.get(parts[0], 0) + step
            if left > 0:
                self.pool_sizes[parts[0]] = left
            else:
                self.pool_sizes.pop(parts[0], None)

    def _child(self, name: str) -> Child:
        child = self._find(name)
        if child is None:
            names = ", ".join(c.name for c in self.children) or "none"
            raise NotFound(f"{self._join(name)} does not exist; children of "
                           f"{self.path or '(root)'}: {names}")
        return child

    def _join(self, name: str) -> str:
        return f"{self.path}/{name}" if self.path else name

    def _path(self, child: Child) -> str:
        return self._join(child.name)

    def _info(self, child: Child, kinds: bool = True) -> dict[str, Any]:
        """A child's status; with ``kinds``, the name and kind of each of its own children
        (from the spec we keep for it: a tool's list is empty). The replies to lifecycle
        operations leave them out: the host makes a ``ToolStatus`` or a handle of them."""
        spec = child.spec  # (a tool's is unpacked: once here)
        info = {"name": child.name, "path": self._path(child), "kind": child.kind,
                "state": child.state.value, "pid": child.pid if child.alive else None,
                "restarts": child.restarts, "last_error": child.last_error,
                "generation": child.generation, "restart": restart_type(spec),
                "security_level": spec.get("security_level"),
                "actor": spec.get("actor"),
                "pool": spec.get("pool"),  # the pool it is an instance of, if any
                "since": child.sm.since,
                "busy": self._busy(child),
                "hang_timeout": child.hang_timeout,
                "breaker": self._breaker_info(child)}
        if kinds:
            info["children"] = _kinds(spec.get("children", []))
        return info

    def _event(self, child: Child, what: str, detail: str = "") -> None:
        self._publish({"time": time.time(), "path": self._path(child), "event": what,
                       "detail": detail, "state": child.state.value})

    def _publish(self, event: dict[str, Any]) -> None:
        """The root owns the event log; every other supervisor passes events up."""
        if self.is_root or self.parent is None:
            self.events.append(event)
        else:
            self.ctx.send(self.parent, Event(event))

    def _log_up(self, level: str, text: str) -> None:
        """Have the root write this line (``LogLine``); the root writes its own."""
        if self.is_root or self.parent is None:
            logs.relayed(level, text)
        else:
            self.ctx.send(self.parent, LogLine(level, text))

    def _hooks(self, event: str, child: Child, *args: Any) -> None:
        if self._system_tool(child):
            return
        for line in run_hooks(self.hooks, event, self._path(child), *args):
            self._event(child, "hook error", line)

    def _spec_changed(self, path: list[str] | None = None, child: dict[str, Any] | None = None,
                      gone: bool = False) -> None:
        """Tell the parent what changed in this subtree: the child at ``path`` (a delta), or
        everything (``path`` None: this supervisor's own spec changed)."""
        if self.is_root or self.parent is None:
            return
        if path is not None:
            self.ctx.send(self.parent, SpecChanged(self.name, {}, path, child, gone))
            return
        spec = {**self.spec, "children": [full_spec(c.spec) for c in self.children]}
        for key in ("path", "inherited_hooks", "log_level", "call_path", "runtime_dir", "accountant",
                    "context_store"):
            spec.pop(key, None)
        self.ctx.send(self.parent, SpecChanged(self.name, spec))

    def _on_spec_changed(self, msg: SpecChanged, sender: Any) -> None:
        """A child supervisor's subtree changed: keep its spec current, and pass it up.
        Only from the live instance: a change a dead one sent before it died would be
        applied to the spec its replacement started from, and stay there."""
        child = self._find(msg.name)
        if child is None or child.kind != "supervisor" or child.address is None or \
                sender != child.address:
            return
        if msg.path is None:
            child.spec = msg.spec
            self._spec_changed()
            return
        if not apply_spec_change(child.spec, msg.path, msg.child, msg.gone):
            logger.warning("{}: a change to {} does not fit the spec kept for {}; it will be "
                           "current again after that supervisor's next restart", self.path,
                           "/".join(msg.path), self._path(child))
            return
        self._spec_changed([msg.name, *msg.path], msg.child, msg.gone)


class _Deferred:
    """Marker: the operation will answer later (a parked resolve)."""


_DEFERRED = _Deferred()


def _kinds(children: list[dict[str, Any]] | KeptChildren) -> Sequence[dict[str, Any]]:
    """Name and kind of each child in a spec's ``children``."""
    if isinstance(children, KeptChildren):  # (made as packed: a supervisor may have 1,000)
        return LazyList(children.kinds(), lambda pair: {"name": pair[0], "kind": pair[1]})
    return [{"name": c["name"], "kind": c.get("kind", "tool")} for c in children]


def _merge_hooks(a: bytes | None, b: bytes | None) -> bytes | None:
    if not a:
        return b
    if not b:
        return a
    import pickle

    return pickle.dumps(pickle.loads(a) + pickle.loads(b))
