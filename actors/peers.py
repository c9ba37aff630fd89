"""Tools that talk to tools: ``self.tool(path)`` and its ``call``, ``send`` and ``ask``.

A tool reaches another tool straight over the callee's fast-path socket (the
same ``Call``/``Batch`` frames the host sends), one connection per callee, so
everything one tool sends to another arrives in the order it was sent.

- ``call`` blocks the calling tool until the answer or the deadline. A call made
  while serving a call never outlives that call's deadline. The wait path
  travels with the call, and a long wait is put on the wait board, so a call
  that would close a cycle raises ``DeadlockError`` (``actors.waits``).
- ``send`` and ``ask`` never block: they are queued, and sent as one ``Batch``
  frame per callee at the end of the current message (or when ``BATCH_MAX``
  pile up, or before a ``call``). Their answers are read from the tool's own
  loop: a failed ``send`` is logged and counted, an ``ask``'s result (or error)
  runs its ``on_reply`` like a timer, one message at a time. At most ``window``
  of them may be unanswered per callee; beyond that they raise ``ToolOverloaded``.
  A send or ask to a callee that is restarting is held (in order, ahead of what
  follows) until it serves again, for ``HOLD_FOR`` seconds at most.

Where a callee lives is read from the route directory (``actors.routes``) and
cached until a connection to it fails. ``check_permission`` is the one place a
caller's right to call a callee is decided (the security subsystem hooks in there).
"""

from __future__ import annotations

import itertools
import math
import os
import time
from collections.abc import Callable, Collection
from functools import partial
from typing import TYPE_CHECKING, Any

import msgpack
from loguru import logger

from actors import routes, waits
from actors.busy import call_ids, died_rerunnable, unrun
from actors.codec import decode, encode, pack_value
from actors.errors import (
    CallTimeout,
    DeadlockError,
    Moved,
    NotFound,
    NotServing,
    SpecError,
    ToolError,
    ToolOverloaded,
    ToolUnavailable,
    error_from_wire,
)
from actors.frames import MAX_FRAME, FrameError, pack_frame
from actors.links import Counters, Gone, Link, Within, ready
from actors.messages import Batch, BatchReply, Call, Reply
from actors.reach import tool_code
from actors.retry import with_retries

if TYPE_CHECKING:
    from actors.runner import ToolRunner

DEFAULT_TIMEOUT = 30.0   # seconds, for a call made outside any call (a timer, on_run)
DEFAULT_WINDOW = 4096    # unanswered sends and asks per callee
BATCH_MAX = 256          # queued sends/asks that make a batch go out at once
RESOLVE_EVERY = 0.005    # seconds between looks at the directory while a callee restarts
POOL_FRESH = 0.5         # seconds a listing of a pool's instances is reused
HOLD_FOR = 30.0          # seconds a send or ask waits for a restarting callee to serve again
HOLD_RECHECK = 0.02      # seconds between looks at a restarting callee's route
RECV_BYTES = 65536
_PACK_HEADER = msgpack.Packer()

#: The security subsystem's check, if any: ``fn(caller_path, caller_level, callee)`` raises
#: ``PermissionDenied`` to refuse. Set with ``set_permission_check``.
_permission_check: Callable[[str, str, routes.RouteEntry], None] | None = None


def set_permission_check(fn: Callable[[str, str, routes.RouteEntry], None] | None) -> None:
    """Install the check run before every tool-to-tool call, send and ask (None: allow all)."""
    global _permission_check
    _permission_check = fn


def check_permission(caller: str, caller_level: str, callee: routes.RouteEntry) -> None:
    """The single place where a tool's right to reach another is decided."""
    if _permission_check is not None:
        _permission_check(caller, caller_level, callee)


def _unrun(cid: int) -> Reply:
    """The answer to a call that certainly did not run: 'moved', so it goes to the next
    instance (``actors.busy.unrun``)."""
    return Reply(cid, False, error=Moved("the call did not run").to_wire())


class Peers:
    """All of one tool's connections to other tools, owned by its runner (one thread)."""

    def __init__(self, runner: ToolRunner) -> None:
        self.runner = runner
        self.me = runner.path
        self.runtime_dir: str | None = runner.runtime_dir
        self.level = runner.level
        self.routes: dict[str, routes.RouteEntry] = {}
        self.conns: dict[str, Link] = {}
        self.counters: dict[str, Counters] = {}
        self.cids = call_ids()  # (unique across processes: busy markers name calls by id)
        self.pid = os.getpid()
        self.window = DEFAULT_WINDOW
        self.flush_armed = False
        self._board: waits.WaitBoard | None = None
        self.pools: dict[str, tuple[float, list[routes.RouteEntry]]] = {}  # pool -> (listed, entries)
        self.turns = itertools.count()  # ties between a pool's instances take turns
        self.lost: dict[str, int] = {}  # pool instance -> the pid whose connection broke
        #: sends and asks to a callee that was restarting: (item, kind, on_reply, give up at)
        self.held: dict[str, list[tuple[bytes, str, Any, float]]] = {}
        self.rechecks: set[str] = set()  # callees whose held items have a re-check timer set

    def ref(self, path: str) -> ToolRef:
        if not isinstance(path, str) or not path.strip("/"):
            raise NotFound(f"tool path {path!r} is not a path; name a tool relative to the "
                           "system root, e.g. 'workers/fetch'")
        path = path.strip("/")
        if self.runtime_dir and routes.lookup(self.runtime_dir, path) is None \
                and routes.members(self.runtime_dir, path):
            return PoolRef(self, path)  # type: ignore[return-value]
        return ToolRef(self, path)

    def pick(self, pool: str, avoid: Collection[str] = ()) -> str:
        """The instance of ``pool`` to send the next call to: a running one (else a paused
        one) with the fewest of this tool's calls outstanding, not in ``avoid`` unless no
        other is left (restarting ones are skipped while others serve)."""
        cached = self.pools.get(pool)
        now = time.monotonic()
        if cached is None or now - cached[0] > POOL_FRESH:
            cached = self.pools[pool] = (now, routes.members(self.runtime_dir or "", pool))
        found = cached[1]
        if not found:
            del self.pools[pool]
            raise NotFound(f"no tool or pool at path {pool!r}")
        live = [e for e in found if e.serving and self.lost.get(e.path) != e.pid]
        serving = [e for e in live if e.state == "running"] or live or found
        choice = [e for e in serving if e.path not in avoid] or \
            [e for e in found if e.path not in avoid] or serving
        turn = next(self.turns)
        ranked = sorted(range(len(choice)), key=lambda i: (
            self.conns[choice[i].path].outstanding if choice[i].path in self.conns else 0,
            (i - turn) % len(choice)))
        return choice[ranked[0]].path

    def _count(self, path: str) -> Counters:
        c = self.counters.get(path)
        if c is None:
            c = self.counters[path] = Counters()
        return c

    # -- where the callee is -------------------------------------------------------------
    def resolve(self, path: str, deadline: float, not_pid: int | None = None,
                hold: bool = True) -> routes.RouteEntry:
        """Where ``path`` serves; waits while it starts or restarts, or with ``hold`` False
        raises ``NotServing`` at once (a pool then picks another instance)."""
        cached = self.routes.get(path)
        if cached is not None and cached.pid != not_pid:
            return cached
        if not self.runtime_dir:
            raise ToolUnavailable("this tool was started without a runtime directory, so it "
                                  "cannot find other tools")
        while True:
            entry = routes.lookup(self.runtime_dir, path)
            if entry is None and not hold:
                raise NotServing(f"{path} was removed", tool=path)
            if entry is None:
                raise NotFound(f"no tool at path {path!r}: nothing is supervised there; paths "
                               "are relative to the system root, e.g. 'workers/fetch'")
            if entry.kind != "tool":
                raise ToolError(f"{path} is a supervisor, not a tool; call commands on one of "
                                f"its tools ('{path}/<name>')", type="NotATool")
            if entry.serving and entry.pid != not_pid and waits.alive(int(entry.pid or 0)):
                if not entry.socket:
                    raise ToolUnavailable(f"{path} has no call socket: tool-to-tool calls need "
                                          "the socket call path (ToolSystem(call_path='socket') "
                                          "on the multiprocTCPBase)")
                self.routes[path] = entry
                return entry
            if entry.state in ("stopped", "failed"):
                raise (ToolUnavailable if hold else NotServing)(
                    f"{path} is {entry.state}; start it first", tool=path)
            if not hold:
                raise NotServing(f"{path} is {entry.state}", tool=path)
            if time.time() >= deadline:
                raise CallTimeout(f"{path} was not serving before the deadline (it is starting "
                                  "or restarting)")
            time.sleep(RESOLVE_EVERY)

    def _conn(self, path: str, route: routes.RouteEntry, deadline: float) -> Link:
        conn = self.conns.get(path)
        if conn is not None and conn.route.pid == route.pid and not conn.closed:
            return conn
        if conn is not None:
            self._lost(path, conn, "a new instance took its place")
        conn = Link(route, deadline - time.time())
        self.conns[path] = conn
        return conn

    def _lost(self, path: str, conn: Link, why: str) -> None:
        """The connection broke: the answers the callee wrote before it went are read (they
        may have waited while this tool was busy), then everything still unanswered on it
        fails with ToolUnavailable."""
        self._salvage(path, conn)
        conn.close()
        if "#" in path:  # a pool's instance: picks skip it until its pool is listed again
            self.lost[path] = int(conn.route.pid or 0)
            self.pools.clear()
        if self.conns.get(path) is conn:
            del self.conns[path]
        if self.routes.get(path) is not None and self.routes[path].pid == conn.route.pid:
            del self.routes[path]
        error = ToolUnavailable(f"{path} ended before answering ({why})", tool=path)
        items = [item for batch in conn.pending.values() for item in batch]
        items += [(kind, fn) for _, kind, fn in conn.queued]
        conn.pending.clear()
        conn.queued.clear()
        conn.outstanding = 0
        for kind, fn in items:
            self._answered(path, kind, fn, error)

    def _salvage(self, path: str, conn: Link) -> None:
        """Read and dispatch what ``conn``'s socket still holds (not after a bad frame)."""
        if conn.closed or conn.garbled:
            return
        for _ in range(1024):  # (bounded; a callee that ended wrote a finite amount)
            try:
                if not self._read(path, conn, None):
                    return
            except Gone:
                return

    # -- reading answers -------------------------------------------------------------------
    def _answered(self, path: str, kind: str, fn: Any, result: Any) -> None:
        c = self._count(path)
        c.answered += 1
        if isinstance(result, ToolError):
            c.failed += 1
            if kind == "send":
                logger.warning("tool {}: a send to {} failed: {}", self.me, path, result)
        if kind == "ask":
            self.runner.schedule(0.0, partial(fn, result))

    def _dispatch(self, path: str, conn: Link, msg: Any) -> None:
        if isinstance(msg, BatchReply):
            items = conn.pending.pop(msg.cid, None)
            if items is None:
                return
            conn.outstanding -= len(items)
            for (kind, fn), res in zip(items, msg.results, strict=False):
                ok, value, error = (list(res) + [None, None, None])[:3]
                self._answered(path, kind, fn, value if ok else error_from_wire(error or {}, tool=path))
        elif isinstance(msg, Reply):
            items = conn.pending.pop(msg.cid, None)
            if items is None:
                if msg.cid == conn.awaiting:  # else a late answer to a call given up on
                    conn.answers[msg.cid] = msg
                return
            conn.outstanding -= len(items)  # the whole batch was refused
            error = error_from_wire(msg.error or {}, tool=path)
            if error.code == "moved":
                error = ToolUnavailable(f"{path} was going away and did not run it", tool=path)
            for kind, fn in items:
                self._answered(path, kind, fn, error)

    def _read(self, path: str, conn: Link, timeout: float | None) -> bool:
        """Read what is there (``timeout`` None: without waiting) and dispatch it; False
        if there was nothing."""
        try:
            if timeout is not None and not ready(conn.sock, False, timeout):
                return False
            data = conn.sock.recv(RECV_BYTES)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            data = b""
        if not data:
            raise Gone(True, "its connection closed")
        try:
            frames = conn.reader.feed(data)
        except FrameError as exc:
            conn.garbled = True
            raise Gone(True, str(exc))
        for payload in frames:
            try:
                msg = decode(payload)
            except ToolError as exc:
                logger.warning("tool {}: undecodable answer from {}: {}", self.me, path, exc)
                continue
            self._dispatch(path, conn, msg)
        return True

    def fds(self) -> list[int]:
        """End of a turn: send what is queued; the connections the loop should watch."""
        self.flush()
        return [c.fileno() for c in self.conns.values() if c.pending and not c.closed]

    def on_ready(self, fds: list[int]) -> None:
        for path, conn in list(self.conns.items()):
            if conn.closed or conn.fileno() not in fds:
                continue
            try:
                for _ in range(64):  # bounded: other messages must get their turn
                    before = conn.reader.pending, len(conn.pending)
                    self._read(path, conn, None)
                    if (conn.reader.pending, len(conn.pending)) == before or not conn.pending:
                        break
            except Gone as gone:
                self._lost(path, conn, str(gone))

    # -- writing -------------------------------------------------------------------------
    def flush(self) -> None:
        """Frame queued sends/asks (one batch per callee) and write what the sockets take."""
        for path, conn in list(self.conns.items()):
            if conn.queued:
                self._frame_queued(conn)
            if conn.out:
                try:
                    self._write(conn, None)
                except Gone as gone:
                    self._lost(path, conn, str(gone))
        if any(c.out for c in self.conns.values()) and not self.flush_armed:
            self.flush_armed = True
            self.runner.schedule(0.002, self._retry_flush)

    def _retry_flush(self) -> None:
        self.flush_armed = False
        self.flush()

    def _frame_queued(self, conn: Link) -> None:
        queued, conn.queued = conn.queued, []
        cid = next(self.cids)
        header = _PACK_HEADER.pack_array_header
        payload = b"".join([header(4), pack_value(Batch.TAG), pack_value(cid),
                            header(len(queued)), *[item for item, _, _ in queued],
                            pack_value(0.0)])
        conn.pending[cid] = [(kind, fn) for _, kind, fn in queued]
        conn.out += pack_frame(payload)

    def _write(self, conn: Link, deadline: float | None) -> None:
        """Write ``conn.out``: what the socket takes now (``deadline`` None), or all of it."""
        while conn.out:
            try:
                sent = conn.sock.send(conn.out)
            except (BlockingIOError, InterruptedError):
                if deadline is None:
                    return
                left = deadline - time.time()
                if left <= 0 or not ready(conn.sock, True, left):
                    raise CallTimeout("the callee did not take the call before the deadline")
                continue
            except OSError as exc:
                raise Gone(False, str(exc))
            del conn.out[:sent]

    # -- the three patterns ----------------------------------------------------------------
    def call(self, path: str, command: str, timeout: float | None, args: dict[str, Any],
             hold: bool = True) -> Any:
        serving = self.runner.serving
        chain = list(getattr(serving, "chain", None) or []) + [self.me]
        if path in chain:
            cycle = chain[chain.index(path):] + [path]
            raise DeadlockError(
                f"deadlock: {waits.cycle_text(cycle)}: {self.me} would wait for {path}, which "
                "is already waiting for it; the call was not sent. Use ask() (the reply comes "
                "back as a message) or send() for calls back up a chain", cycle=cycle, tool=path)
        now = time.time()
        limit = DEFAULT_TIMEOUT if timeout is None else float(timeout)
        deadline = now + limit
        outer = getattr(serving, "deadline", 0.0) or 0.0
        capped = bool(outer) and outer < deadline
        if capped:
            deadline = outer
        what = Within(path, command, deadline - now if capped else limit, capped)
        if deadline <= now:
            raise CallTimeout(str(what), tool=path)
        cid = next(self.cids)
        try:
            frame = pack_frame(encode(Call(cid, command, args, deadline, chain, self.pid)))
        except (TypeError, ValueError, OverflowError) as exc:
            raise TypeError(f"the arguments of {command!r} for {path} cannot be sent: {exc}") \
                from None
        except FrameError as exc:
            raise ToolError(f"the call is too large to send: {exc}; pass a file path instead",
                            type="CallTooLarge", tool=path) from None
        not_pid: int | None = None
        while True:
            route = self.resolve(path, deadline, not_pid, hold)
            check_permission(self.me, self.level, route)
            if path in self.held:  # sends and asks that waited for it go first
                self._release_held(path)
            try:
                conn = self._conn(path, route, deadline)
                if conn.queued:
                    self._frame_queued(conn)   # what was sent before goes first
                conn.out += frame
                self._write(conn, deadline)
            except Gone:  # the instance was gone before the call reached it: the next one
                stale = self.conns.get(path)
                if stale is not None and stale.route.pid == route.pid:
                    self._lost(path, stale, "it was gone")
                self.routes.pop(path, None)
                not_pid = route.pid
                continue
            except CallTimeout:
                self._lost(path, conn, "a call could not be written in time")
                raise CallTimeout(str(what), tool=path) from None
            reply = self._await(path, conn, cid, deadline, what, command)
            if not reply.ok and (reply.error or {}).get("code") == "moved":
                self.routes.pop(path, None)
                not_pid = route.pid
                continue
            if reply.ok:
                return reply.value
            raise error_from_wire(reply.error or {}, tool=path)

    def _await(self, path: str, conn: Link, cid: int, deadline: float, what: Within,
               command: str) -> Reply:
        since = time.time()
        on_board = False
        seen: list[str] | None = None
        conn.awaiting = cid
        try:
            while True:
                reply = conn.answers.pop(cid, None)
                if reply is not None:
                    return reply
                now = time.time()
                if now >= deadline:
                    raise CallTimeout(str(what), tool=path)
                if not on_board:
                    wait = since + waits.REGISTER_AFTER - now
                    if wait <= 0 and self.runtime_dir:
                        self._wait_board().enter(path, since, cid)
                        on_board = True
                if on_board:
                    cycle = self._wait_board().closing_cycle(path, since)
                    # a real deadlock lasts: act on a cycle seen in two walks in a row, never on
                    # an entry its tool was about to remove (its answer had just come)
                    cycle, seen = (cycle if cycle == seen else None), cycle
                    if cycle is not None:
                        self._wait_board().abandon(self.pid, cid)
                        raise DeadlockError(
                            f"deadlock: {waits.cycle_text(cycle)}: {self.me} would wait for "
                            f"{path}, which waits (through the others) for {self.me}; this call "
                            "closed the cycle and was withdrawn, unrun. Use ask() or send() "
                            "for one of these calls", cycle=cycle, tool=path)
                    wait = waits.RECHECK if seen is None else waits.CONFIRM
                try:
                    self._read(path, conn, min(max(wait, 0.0001), deadline - now)
                               if wait > 0 else 0.0001)
                except Gone as gone:
                    self._lost(path, conn, str(gone))
                    reply = conn.answers.pop(cid, None)
                    if reply is not None:  # (read from what the socket still held)
                        return reply
                    route = conn.route
                    if unrun(self.runtime_dir, route.pid, cid):
                        return _unrun(cid)  # (a closing door's, or queued behind a crash)
                    lost = ToolUnavailable(f"{path} ended while handling {command!r} for {self.me} "
                                           f"({gone}); it may or may not have run", tool=path)
                    if route.retry and died_rerunnable(self.runtime_dir, route.pid, cid):
                        lost.retry = route.retry  # idempotent: run it once more
                    raise lost from None
        finally:
            conn.awaiting = 0
            conn.answers.clear()
            if on_board:
                self._wait_board().leave()

    def _wait_board(self) -> waits.WaitBoard:
        if self._board is None:
            self._board = waits.WaitBoard(self.runtime_dir or "", self.me)
        return self._board

    def post(self, path: str, kind: str, command: str, args: dict[str, Any],
             on_reply: Any = None) -> None:
        """Queue a send or an ask; it leaves at the end of this message (or in a full batch)."""
        try:
            item = pack_value([command, args])
        except (TypeError, ValueError, OverflowError) as exc:
            raise TypeError(f"the arguments of {command!r} for {path} cannot be sent: {exc}") \
                from None
        if len(item) > MAX_FRAME - 64:
            raise ToolError(f"a {kind} of {len(item)} bytes is over the {MAX_FRAME}-byte message "
                            "limit; pass a file path instead", type="CallTooLarge", tool=path)
        now = time.time()
        if path in self.held:  # behind what waits for the callee already (order is kept)
            self._hold(path, item, kind, on_reply, now)
            return
        known = self.conns.get(path)
        if known is not None and not known.queued and not known.closed and \
                not known.callee_alive():
            # (first of this turn: the instance it talked to died since; what is already
            # out there may have run, what this posts waits for the next instance)
            self._lost(path, known, "it ended")
        try:
            route = self.resolve(path, now)
            check_permission(self.me, self.level, route)
            try:
                conn = self._conn(path, route, now + 1.0)
            except Gone:
                self.routes.pop(path, None)
                route = self.resolve(path, now, route.pid)  # a newer instance, if one is serving
                check_permission(self.me, self.level, route)
                try:
                    conn = self._conn(path, route, now + 1.0)
                except Gone as gone:
                    raise ToolUnavailable(f"{path} is not reachable: {gone}", tool=path) from None
        except CallTimeout:  # restarting: held until it serves again (HOLD_FOR at most)
            self._hold(path, item, kind, on_reply, now)
            return
        if conn.outstanding >= self.window:
            self.flush()
            try:
                self._read(path, conn, None)
            except Gone as gone:
                self._lost(path, conn, str(gone))
                raise ToolUnavailable(f"{path} ended: {gone}", tool=path) from None
            if conn.outstanding >= self.window:
                raise ToolOverloaded(
                    f"{path} has not answered {conn.outstanding} sends/asks from {self.me} yet "
                    f"(the window is {self.window}); slow down, or wait for them with "
                    f"self.tool({path!r}).flush()", tool=path)
        conn.queued.append((item, kind, on_reply))
        conn.outstanding += 1
        self._posted(path, kind)
        if len(conn.queued) >= BATCH_MAX:
            self.flush()

    # -- sends and asks to a restarting callee ------------------------------------------------
    def _hold(self, path: str, item: bytes, kind: str, on_reply: Any, now: float) -> None:
        held = self.held.setdefault(path, [])
        if path not in self.rechecks:
            self._recheck(path)
        if len(held) >= self.window:
            raise ToolOverloaded(f"{path} is restarting and {len(held)} sends/asks from {self.me} "
                                 f"already wait for it (the window is {self.window}); slow down",
                                 tool=path)
        held.append((item, kind, on_reply, now + HOLD_FOR))
        self._posted(path, kind)

    def _posted(self, path: str, kind: str) -> None:
        c = self._count(path)
        if kind == "ask":
            c.asked += 1
        else:
            c.sent += 1

    def _recheck(self, path: str) -> None:
        self.rechecks.add(path)
        self.runner.schedule(HOLD_RECHECK, partial(self._release_held, path, timer=True))

    def _release_held(self, path: str, deadline: float | None = None,
                      timer: bool = False) -> None:
        """Send what was held for ``path`` if it serves now (waiting until ``deadline`` if
        given); fail what waited too long. The re-check timer (``timer``) looks again later
        while some still wait; a call or a drain that found it still restarting leaves that
        to the timer already set."""
        if timer:
            self.rechecks.discard(path)
        held = self.held.get(path)
        if not held:
            self.held.pop(path, None)
            return
        now = time.time()
        try:
            route = self.resolve(path, now if deadline is None else deadline)
            check_permission(self.me, self.level, route)
            conn = self._conn(path, route, now + 1.0)
        except (CallTimeout, Gone):
            self.routes.pop(path, None)
            while held and held[0][3] <= now:
                _, kind, fn, _ = held.pop(0)
                self._answered(path, kind, fn, ToolUnavailable(
                    f"{path} did not serve again within {HOLD_FOR:g} s of this {kind}", tool=path))
            if not held:
                del self.held[path]
            elif timer:
                self._recheck(path)
            return
        except ToolError as exc:  # stopped, failed, removed, or refused: every one gets it
            del self.held[path]
            for _, kind, fn, _ in held:
                self._answered(path, kind, fn, exc)
            return
        del self.held[path]
        conn.queued.extend((item, kind, fn) for item, kind, fn, _ in held)
        conn.outstanding += len(held)
        self.flush()

    def drain(self, path: str, timeout: float) -> bool:
        """Send what is queued for ``path`` and wait until all of it is answered."""
        deadline = time.time() + timeout
        if path in self.held:
            self._release_held(path, deadline)
            if path in self.held:
                return False
        self.flush()
        conn = self.conns.get(path)
        while conn is not None and not conn.closed and conn.outstanding > 0:
            left = deadline - time.time()
            if left <= 0:
                return False
            try:
                if conn.out:
                    self._write(conn, deadline)
                self._read(path, conn, min(left, 0.05))
            except Gone as gone:
                self._lost(path, conn, str(gone))
            except CallTimeout:
                return False
        return True


class ToolRef:
    """A handle, inside a tool, on another tool found by its path (``self.tool(path)``)."""

    __slots__ = ("_peers", "path")

    def __init__(self, peers: Peers, path: str) -> None:
        self._peers = peers
        self.path = path

    def call(self, command: str, /, timeout: float | None = None, **args: Any) -> Any:
        """Run ``command`` in that tool and return its result; this tool waits meanwhile.

        Raises what a host caller gets (``ToolError``, ``UnknownCommand``,
        ``BadArguments``, ``ToolUnavailable``, ``CallTimeout``, ...), ``NotFound``
        for a path with no tool, and ``DeadlockError`` for a call that would close
        a cycle of waiting tools. ``timeout`` (default 30 s) is capped by what is
        left of the deadline of the call this tool is serving. An idempotent command
        that fails with an error the callee's policy calls transient is retried
        (``actors.retry``) within that deadline.
        """
        return self._call(command, timeout, args)

    def _call(self, command: str, timeout: float | None, args: dict[str, Any],
              hold: bool = True) -> Any:
        peers = self._peers
        deadline = time.time() + (DEFAULT_TIMEOUT if timeout is None else float(timeout))
        outer = peers.runner.deadline
        if outer and outer < deadline:
            deadline = outer
        first = [True]

        def attempt() -> Any:
            if first[0]:
                first[0] = False
                return peers.call(self.path, command, timeout, args, hold)
            return peers.call(self.path, command, max(0.0, deadline - time.time()), args, hold)

        return with_retries(attempt, deadline)

    def send(self, command: str, /, **args: Any) -> None:
        """Deliver a call and forget its result (a failure is logged and counted)."""
        self._peers.post(self.path, "send", command, args)

    def ask(self, command: str, /, on_reply: Callable[[Any], Any] | None = None,
            timeout: float | None = None, **args: Any) -> None:
        """Deliver a call; ``on_reply(result)`` runs later in this tool, as a message.

        ``result`` is the command's value, or the exception (a ``ToolError``) if it
        failed or the callee went away. With ``timeout`` (seconds), ``on_reply`` gets
        ``CallTimeout`` if no answer came by then, and a later answer is dropped (the
        callee may still run the command, as with a call that timed out). Without it,
        the answer is awaited for as long as the callee lives.
        """
        if not callable(on_reply):
            raise TypeError(f"ask({command!r}) needs on_reply=<a function taking the result>, "
                            f"got {on_reply!r}")
        if timeout is not None:
            if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or \
                    not math.isfinite(timeout) or timeout <= 0:
                raise SpecError.invalid("timeout", timeout, f"ask({command!r}) needs a number of "
                                        "seconds above 0, or None to wait as long as the callee lives")
            timer = _AskTimer(self._peers, self.path, command, on_reply)
            self._peers.post(self.path, "ask", command, args, timer)
            timer.start(float(timeout))  # (not before: an ask that could not be posted raised)
            return
        self._peers.post(self.path, "ask", command, args, on_reply)

    def flush(self, timeout: float = 10.0) -> bool:
        """Send what is queued and wait (blocking) until every send and ask to this
        tool is answered; False if some are not within ``timeout`` seconds."""
        return self._peers.drain(self.path, timeout)

    def stats(self) -> dict[str, int]:
        """Sends and asks to this tool: ``sent``, ``asked``, ``answered``, ``failed``,
        ``timed_out`` (asks whose timeout passed first), ``outstanding`` (including those
        held while the callee restarts)."""
        c = self._peers._count(self.path)
        conn = self._peers.conns.get(self.path)
        return {"sent": c.sent, "asked": c.asked, "answered": c.answered, "failed": c.failed,
                "timed_out": c.timed_out,
                "outstanding": (conn.outstanding if conn is not None else 0)
                + len(self._peers.held.get(self.path, ()))}

    def __repr__(self) -> str:
        return f"<ToolRef {self.path}>"


class PoolRef:
    """``self.tool("w/fetch")`` when ``w/fetch`` is a pool: each call, send or ask goes to
    one instance (``Peers.pick``)."""

    __slots__ = ("_peers", "path")

    def __init__(self, peers: Peers, path: str) -> None:
        self._peers = peers
        self.path = path

    def _one(self) -> ToolRef:
        return ToolRef(self._peers, self._peers.pick(self.path))

    def call(self, command: str, /, timeout: float | None = None, **args: Any) -> Any:
        """As ``ToolRef.call``, on one instance; an instance found not serving as the call
        goes out (restarting, stopped, removed: it was not sent) is passed over for another,
        and only once every one has refused does the call wait for one."""
        peers, refused = self._peers, []
        while True:
            inst = peers.pick(self.path, refused)
            try:
                return ToolRef(peers, inst)._call(command, timeout, args, hold=inst in refused)
            except NotServing:
                refused.append(inst)
                peers.pools.pop(self.path, None)  # (list the pool again)

    def send(self, command: str, /, **args: Any) -> None:
        self._one().send(command, **args)

    def ask(self, command: str, /, on_reply: Callable[[Any], Any] | None = None,
            timeout: float | None = None, **args: Any) -> None:
        self._one().ask(command, on_reply=on_reply, timeout=timeout, **args)

    def flush(self, timeout: float = 10.0) -> bool:
        return all([ToolRef(self._peers, e.path).flush(timeout)
                    for e in routes.members(self._peers.runtime_dir or "", self.path)])

    def __repr__(self) -> str:
        return f"<PoolRef {self.path}>"


class _AskTimer:
    """An ask's ``on_reply`` that runs once: with the answer, or with ``CallTimeout`` when its
    timeout passes first (a timer of the asking tool); whichever comes second is dropped."""

    def __init__(self, peers: Peers, path: str, command: str, on_reply: Callable[[Any], Any]) -> None:
        self.on_reply: Callable[[Any], Any] | None = on_reply
        self.peers = peers
        self.path = path
        self.command = command
        self.timer: int | None = None
        self.timeout = 0.0

    def start(self, timeout: float) -> None:
        self.timeout = timeout
        self.timer = self.peers.runner.schedule(timeout, self._expired)

    def __call__(self, result: Any) -> Any:
        fn, self.on_reply = self.on_reply, None
        if fn is None:  # it timed out: the answer came too late
            return None
        if self.timer is not None:
            self.peers.runner.cancel(self.timer)
        return tool_code(fn, result)

    def _expired(self) -> None:
        fn, self.on_reply = self.on_reply, None
        if fn is None:
            return
        self.peers._count(self.path).timed_out += 1
        tool_code(fn, CallTimeout(f"ask of {self.command!r} to {self.path} had no answer within "
                       f"{self.timeout:g} s (the callee may still run it; a late answer is "
                       "dropped)", tool=self.path))
