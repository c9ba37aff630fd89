"""The asyncio front: many calls in flight from one host thread, with backpressure.

For each event loop there is one connection per tool instance; calls are
written as frames without waiting for earlier answers, and the connection's
protocol hands each reply to the waiting call by its correlation id as it
arrives. Two bounded windows keep a burst from swamping anything: at most
``per_caller`` calls in flight on one connection and ``per_tool`` to one tool
from this process. A call that cannot get a slot before its deadline fails with
``ToolOverloaded``; nothing is ever dropped silently.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
import weakref
from collections import deque
from typing import Any

from actors.codec import decode
from actors.errors import CallTimeout, ToolOverloaded
from actors.frames import FrameReader
from actors.wire_auth import door_token
from supervisors.host.fastclient import NotDelivered, frame_of
from supervisors.host.transport import PeerGone

PER_CALLER = 1024   # calls in flight on one connection
PER_TOOL = 4096     # calls in flight to one tool from this process and loop
HIGH_WATER = 1 << 20  # unsent bytes on a connection before callers wait for the tool
SWEEP_EVERY = 0.02    # seconds between checks for calls past their deadline


class _Wire(asyncio.Protocol):
    """The connection's protocol: hands each chunk to its ``AsyncConn`` as it arrives,
    tells it when the connection ends, and keeps asyncio's flow control (``drained``)."""

    def __init__(self) -> None:
        self.conn: AsyncConn | None = None
        self.paused = False
        self.waiter: asyncio.Future[None] | None = None
        self.gone: BaseException | None = None
        self.ended: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        if self.conn is not None:
            self.conn.received(data)

    def eof_received(self) -> bool:
        return False  # (the transport closes; connection_lost follows)

    def connection_lost(self, exc: BaseException | None) -> None:
        self.gone = exc or ConnectionResetError("connection closed")
        if self.conn is not None:
            self.conn.lost(exc)
        self.resume_writing()
        if not self.ended.done():
            self.ended.set_result(None)

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)  # (no exception: every waiter may have been cancelled)

    async def drained(self) -> None:
        """Wait while the tool is behind (asyncio paused our writing); ``BrokenPipeError``
        if the connection ended."""
        if self.paused and self.gone is None:
            if self.waiter is None:
                self.waiter = asyncio.get_running_loop().create_future()
            await asyncio.shield(self.waiter)
        if self.gone is not None:
            raise BrokenPipeError(str(self.gone))


class AsyncConn:
    """One connection to one tool instance, shared by every call on one event loop.

    Replies are handed to their calls as they arrive (no buffer in between). When the
    connection ends, whatever the tool wrote before it went is read first: a write that
    fails (the tool went away as a call was sent) makes asyncio stop reading, and a
    reply already in this process's socket must not be taken for lost. Its call ran,
    and a caller told otherwise might send it again (actors.busy, the shut door)."""

    def __init__(self, transport: asyncio.Transport, wire: _Wire, per_caller: int) -> None:
        self.transport = transport
        self.wire = wire
        self.frames = FrameReader()
        self.window = Window(per_caller)
        self.pending: dict[int, asyncio.Future[Any]] = {}
        self.outbox: list[tuple[int, bytes]] = []  # (cid, frame) not written yet
        self.deadlines: dict[int, float] = {}
        self.sweeper: asyncio.TimerHandle | None = None
        self.closed = False
        self.broken = False  # the tool sent something that is not a frame: read no more
        self.refusal: Any = None  # the tool's Reply(cid=0) if it refused this connection
        wire.conn = self
        #: lives as long as the connection; cancelled as its loop ends (``asyncio.run``
        #: cancels what is left), it closes the connection, which would otherwise count
        #: against the tool's max_callers until the system stops
        self.task = asyncio.get_running_loop().create_task(self._keep())

    async def _keep(self) -> None:
        try:
            await self.wire.ended
        finally:
            self.transport.close()

    @classmethod
    async def open(cls, address: str, per_caller: int) -> AsyncConn:
        loop = asyncio.get_running_loop()
        try:
            transport, wire = await loop.create_unix_connection(_Wire, address)
        except OSError as exc:
            raise NotDelivered(str(exc))
        transport.write(door_token(address))  # the tool reads nothing before it (docs/security.md)
        return cls(transport, wire, per_caller)

    def received(self, data: bytes) -> None:
        if self.broken:
            return
        try:
            payloads = self.frames.feed(data)
            for payload in payloads:
                self._dispatch(decode(payload))
        except Exception:  # a frame or message that is not the protocol: end the connection
            self.broken = True
            self.transport.abort()

    def _dispatch(self, msg: Any) -> None:
        if getattr(msg, "cid", -1) == 0 and getattr(msg, "ok", True) is False:
            self.refusal = msg  # the tool refused this connection (too many callers)
            for fut in self.pending.values():
                if not fut.done():
                    fut.set_result(msg)
            self.pending.clear()
            return
        fut = self.pending.pop(getattr(msg, "cid", -1), None)
        if fut is not None and not fut.done():
            fut.set_result(msg)

    def lost(self, exc: BaseException | None) -> None:
        """The connection ended: read what the socket still holds, then fail the calls left
        (``NotDelivered`` those never written, ``PeerGone`` the others: they may have run)."""
        if exc is not None and not self.broken:
            self._drain()
        self.closed = True
        if self.sweeper is not None:
            self.sweeper.cancel()
            self.sweeper = None
        unsent = {cid for cid, _ in self.outbox}
        self.outbox.clear()
        for cid, fut in self.pending.items():
            if fut.done():
                continue
            if self.refusal is not None:
                fut.set_result(self.refusal)
            else:
                fut.set_exception(NotDelivered("connection closed") if cid in unsent else PeerGone())
        self.pending.clear()

    def _drain(self) -> None:
        """Read the replies the tool wrote before it went (its socket is still open here:
        asyncio closes it after ``connection_lost``)."""
        sock = self.transport.get_extra_info("socket")
        fd = sock.fileno() if sock is not None else -1
        while fd >= 0 and not self.broken:
            try:
                data = os.read(fd, 65536)
            except OSError:  # (nothing more now, or the reset that follows the last byte)
                return
            if not data:
                return
            self.received(data)

    def _sweep(self) -> None:
        """Fail calls whose deadline passed (one timer per connection, not one per call)."""
        self.sweeper = None
        now = time.time()
        for cid, deadline in list(self.deadlines.items()):
            if deadline <= now:
                fut = self.pending.get(cid)
                if fut is not None:
                    _expire(fut)
        if self.pending and not self.closed:
            self.sweeper = asyncio.get_running_loop().call_later(SWEEP_EVERY, self._sweep)

    def queue(self, cid: int, frame: bytes, loop: asyncio.AbstractEventLoop) -> None:
        """Collect frames written in one loop turn and send them with one write."""
        self.outbox.append((cid, frame))
        if len(self.outbox) == 1:
            loop.call_soon(self._flush)

    def _flush(self) -> None:
        if not self.outbox:
            return
        if self.transport.is_closing():  # never written: their calls were not delivered
            for cid, _ in self.outbox:
                fut = self.pending.get(cid)
                if fut is not None and not fut.done():
                    fut.set_exception(NotDelivered("connection closed"))
        else:
            self.transport.write(b"".join([frame for _, frame in self.outbox]))
        self.outbox.clear()

    def close(self) -> None:
        if self.sweeper is not None:
            self.sweeper.cancel()
            self.sweeper = None
        self.task.cancel()
        self.transport.close()


def _left(deadline: float, loop: asyncio.AbstractEventLoop) -> float:
    return max(0.0, deadline - time.time())


def _expire(fut: asyncio.Future[Any]) -> None:
    if not fut.done():
        fut.set_exception(CallTimeout("no answer before the deadline"))


class Window:
    """A bounded count of calls in flight; waiters are served first come, first served.

    (asyncio.Semaphore's wake-up scans every waiter, which turns a burst of
    thousands of calls quadratic.)
    """

    def __init__(self, size: int) -> None:
        self.free = size
        self.waiters: deque[asyncio.Future[None]] = deque()

    def take(self) -> bool:
        """Take a slot at once if one is free (no coroutine, no timer)."""
        if self.free > 0 and not self.waiters:
            self.free -= 1
            return True
        return False

    async def wait(self, deadline: float, loop: asyncio.AbstractEventLoop, why: str) -> None:
        """Wait for a slot until ``deadline`` at most (then ``ToolOverloaded``)."""
        fut: asyncio.Future[None] = loop.create_future()
        self.waiters.append(fut)
        timer = loop.call_at(loop.time() + _left(deadline, loop), _overloaded, fut, why)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                self.release()  # the slot was handed to us as we were cancelled
            raise
        finally:
            timer.cancel()

    def release(self) -> None:
        while self.waiters:
            fut = self.waiters.popleft()
            if not fut.done():
                fut.set_result(None)  # hand the slot over
                return
        self.free += 1


def _overloaded(fut: asyncio.Future[None], why: str) -> None:
    if not fut.done():
        fut.set_exception(ToolOverloaded(why))


class AsyncCalls:
    """Connections and windows, kept per event loop (``asyncio.run`` makes a new one each time)."""

    def __init__(self, per_caller: int = PER_CALLER, per_tool: int = PER_TOOL) -> None:
        self.per_caller = per_caller
        self.per_tool = per_tool
        self._loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopState] = \
            weakref.WeakKeyDictionary()
        self._last: tuple[Any, _LoopState] = (None, _LoopState())  # loop used last, its state
        self._new_loop = threading.Lock()  # (loops of several threads may come at once)

    def state(self) -> _LoopState:
        loop = asyncio.get_running_loop()
        state = self._loops.get(loop)
        if state is None:
            with self._new_loop:
                # A loop's state holds its tasks, which hold the loop: the weak table alone
                # would keep every loop ``asyncio.run`` ever made. Their connections closed
                # as they ended; forget them as a new loop comes.
                for ended in [old for old in list(self._loops) if old.is_closed()]:
                    self._loops.pop(ended, None)
                state = self._loops.setdefault(loop, _LoopState())
        self._last = (loop, state)  # one assignment: safe with loops in other threads
        return state

    async def exchange(self, path: str, address: str, cid: int, msg: Any, deadline: float) -> Any:
        """Send one call and await its reply, within the tool's and the connection's windows."""
        loop = asyncio.get_running_loop()
        last_loop, state = self._last
        if last_loop is not loop:
            state = self.state()
        tool_window = state.tool_windows.get(path)
        if tool_window is None:
            tool_window = state.tool_windows[path] = Window(self.per_tool)
        if not tool_window.take():
            await tool_window.wait(deadline, loop, f"{self.per_tool} calls to {path} already in "
                                   "flight from this process; none finished before the deadline")
        try:
            conn = state.ready.get(address)
            if conn is None or conn.closed:
                conn = await self._conn(state, address)
            window = conn.window
            if not window.take():
                await window.wait(deadline, loop, "too many calls in flight on this connection; "
                                  "the caller's window stayed full until the deadline")
            try:
                if conn.closed:
                    if conn.refusal is not None:
                        state.ready.pop(address, None)
                        state.conns.pop(address, None)
                        return conn.refusal
                    raise NotDelivered("connection closed")
                fut: asyncio.Future[Any] = loop.create_future()
                conn.pending[cid] = fut
                conn.deadlines[cid] = deadline
                conn.queue(cid, frame_of(msg), loop)
                if conn.sweeper is None:
                    conn.sweeper = loop.call_later(SWEEP_EVERY, conn._sweep)
                if conn.transport.get_write_buffer_size() > HIGH_WATER:
                    try:  # the tool is behind: wait (backpressure), until the deadline at most
                        await asyncio.wait_for(conn.wire.drained(), _left(deadline, loop))
                    except (TimeoutError, BrokenPipeError, ConnectionResetError):
                        pass  # what became of this call is in ``fut`` (the sweeper ends it)
                return await fut
            except (NotDelivered, PeerGone):
                state.ready.pop(address, None)
                state.conns.pop(address, None)
                raise
            finally:
                conn.pending.pop(cid, None)
                conn.deadlines.pop(cid, None)
                window.release()
        finally:
            tool_window.release()

    async def _conn(self, state: _LoopState, address: str) -> AsyncConn:
        """Open the loop's connection to ``address``; concurrent callers share one opening."""
        opening = state.conns.get(address)
        if opening is not None and opening.done() and (
                opening.exception() is not None or opening.result().closed):
            state.conns.pop(address, None)
            opening = None
        if opening is None:
            opening = asyncio.ensure_future(AsyncConn.open(address, self.per_caller))
            state.conns[address] = opening
        conn = await asyncio.shield(opening)
        state.ready[address] = conn
        return conn

    async def coalesce(self, key: Any, make: Any) -> Any:
        """Run ``make()`` once for concurrent callers with the same ``key``; all get its result."""
        state = self.state()
        fut = state.shared.get(key)
        if fut is None:
            fut = asyncio.ensure_future(make())
            state.shared[key] = fut
            fut.add_done_callback(lambda f: state.shared.pop(key, None))
        return await asyncio.shield(fut)

    def close(self) -> None:
        for state in list(self._loops.values()):
            for opening in state.conns.values():
                try:
                    if opening.done() and opening.exception() is None:
                        opening.result().close()
                    else:
                        opening.cancel()
                except (RuntimeError, asyncio.CancelledError):  # its loop is closed already
                    pass
        self._loops.clear()
        self._last = (None, _LoopState())


class _LoopState:
    def __init__(self) -> None:
        self.conns: dict[str, asyncio.Future[AsyncConn]] = {}
        self.ready: dict[str, AsyncConn] = {}
        self.tool_windows: dict[str, Window] = {}
        self.shared: dict[Any, asyncio.Future[Any]] = {}
