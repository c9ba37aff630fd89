"""A call that certainly did not run goes to the next instance, whoever calls; a call
that may have run is never sent again, and a reply that reached its caller is read.

Two cases that used to end in "it may or may not have run":
- the call reached a tool's door as it closed, after the door's last read (a
  scale-down, a stop): the door now marks the tool's busy marker "shut" before it
  hangs up, and a caller that lost its connection reads that mark;
- a tool called a tool that died while busy with another call (the host already
  resent such calls; a tool calling a tool now does too).

And the other side of it: a reply already in the caller's socket when the connection
ends is read (the async client, a tool's connections to other tools), and a call that
waited for room in a tool's backlog is judged by its reply, within its deadline.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
from pathlib import Path

import pytest

from actors.busy import BusyMarker, marker_path, never_started
from actors.codec import decode, encode
from actors.fastpath import FastPathServer, Peer
from actors.frames import FrameReader, pack_frame
from actors.messages import Call, Reply
from actors.wire_auth import door_token
from supervisors import Backoff, Policy, ToolSystem
from supervisors.host.system import never_ran
from tests.helpers import wait_until

pytestmark = pytest.mark.timeout(120)


class Mailbox:
    def framework_fds(self) -> list[int]:
        return []

    def framework_busy(self) -> bool:
        return False


def _call(cid: int) -> bytes:
    return pack_frame(encode(Call(cid, "echo", {}, time.time() + 30)))


def _replies(sock: socket.socket) -> list[Reply]:
    """Every reply the caller gets until its connection ends."""
    sock.settimeout(5)
    reader, out = FrameReader(), []
    while True:
        try:
            data = sock.recv(65536)
        except ConnectionResetError:
            data = b""
        if not data:
            return out
        out += [decode(frame) for frame in reader.feed(data)]


class LateCallerDoor(FastPathServer):
    """A door at which one caller's call arrives just after the door last read from it
    as it closed: the moment a scale-down or a stop can meet a caller's next call."""

    closing = False
    late: socket.socket | None = None
    late_cid = 0

    def _read(self, peer: Peer) -> bool:
        got = super()._read(peer)
        if self.closing and not got and self.late is not None:
            self.late.sendall(_call(self.late_cid))
            self.late = None
        return got


def _door(tmp_path: Path, reply: bytes = b"") -> tuple[LateCallerDoor, BusyMarker, str]:
    path = marker_path(str(tmp_path), 4242)
    marker = BusyMarker(path)
    door: LateCallerDoor

    def serve(msg: Call, peer: Peer) -> None:
        marker.enter("c", msg.command, msg.cid)
        if door.closing:
            peer.send(Reply(msg.cid, False, error={"code": "moved", "message": "going away"}))
        else:
            peer.send(Reply(msg.cid, True, reply or msg.cid))
        marker.leave()

    door = LateCallerDoor(serve, Mailbox(), label="tool t", on_shut=marker.shut)
    marker.replies_out = lambda: not (door.has_output or door.replies_lost)
    return door, marker, path


def _connect(door: FastPathServer) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(door.address)
    sock.sendall(door_token(door.address))
    door.on_ready([door.listen_fd])
    return sock


def test_a_call_after_the_doors_last_read_is_known_not_to_have_run(tmp_path: Path) -> None:
    door, _, path = _door(tmp_path)
    caller = _connect(door)
    caller.sendall(_call(1))
    door.on_ready(list(door.peers))
    door.late, door.late_cid, door.closing = caller, 2, True
    door.close()
    replies = _replies(caller)
    assert [(r.cid, r.ok) for r in replies] == [(1, True)], replies  # call 2 got no answer
    assert door.late is None                                          # (it was sent)
    assert never_started(path, 2)  # the marker says so: the caller may send it elsewhere
    assert never_started(path, 3)


def test_a_call_read_as_the_door_closes_is_answered_moved(tmp_path: Path) -> None:
    door, _, path = _door(tmp_path)
    caller = _connect(door)
    caller.sendall(_call(1) + _call(2))
    door.closing = True
    door.close()
    assert [(r.cid, r.ok, (r.error or {}).get("code")) for r in _replies(caller)] == \
        [(1, False, "moved"), (2, False, "moved")]
    assert never_started(path, 3)


def test_a_door_that_closes_with_a_reply_still_inside_says_nothing(tmp_path: Path) -> None:
    """A reply that cannot leave (its caller does not read) is lost as the door closes:
    then no unanswered call is known not to have run."""
    door, _, path = _door(tmp_path, reply=b"x" * (4 << 20))
    slow = _connect(door)
    slow.sendall(_call(1))
    door.on_ready(list(door.peers))
    assert door.has_output  # more than the socket takes, and nobody reads it
    other = _connect(door)
    door.late, door.late_cid, door.closing = other, 7, True
    door.close()
    assert not never_started(path, 7)
    assert not never_started(path, 1)
    slow.close()
    other.close()


def test_the_shut_mark_holds_while_the_process_lives(tmp_path: Path) -> None:
    """A caller need not wait for the process to end: once the door is shut no call
    starts in it, so the mark is read at once (this process is the tool here)."""
    pid = os.getpid()
    marker = BusyMarker(marker_path(str(tmp_path), pid))
    marker.replies_out = lambda: True
    marker.enter("c", "other", 99)
    marker.leave()
    assert not never_ran(str(tmp_path), pid, 7)  # alive and open: it may have dropped us
    marker.shut(True)
    assert never_ran(str(tmp_path), pid, 7)
    marker.enter("l", "on_stop")                 # (nothing after the shut clears the mark)
    marker.leave()
    assert never_ran(str(tmp_path), pid, 7)
    lossy = BusyMarker(marker_path(str(tmp_path), pid))
    lossy.replies_out = lambda: True
    lossy.shut(False)                            # a reply was lost as it closed
    lossy.enter("l", "on_stop")
    assert not never_ran(str(tmp_path), pid, 7)


FAST = Policy(max_restarts=10, period=5.0, backoff=Backoff.none())


def test_a_tools_call_queued_behind_a_crash_goes_to_the_next_instance(tmp_path: Path) -> None:
    """The host resent such calls; a tool calling a tool now does too, and the call runs
    exactly once."""
    out = str(tmp_path / "lines.txt")
    with ToolSystem(policy=FAST, log_level="WARNING") as system:
        w = system.supervise("w", policy=FAST)
        target = w.spawn("tests.tools:Appender", name="app")
        caller = w.spawn("tests.pool_tools:Caller", name="c")
        target.call("pid")
        result: dict = {}
        dying = threading.Thread(target=lambda: result.update(
            died=_error_of(lambda: target.call("die_after", seconds=1.0, timeout=30))))
        dying.start()
        wait_until(lambda: (target.status().busy or {}).get("command") == "die_after", 10,
                   what="die_after to start")
        line = caller.call("call_one", path="w/app", command="append",
                           args={"path": out, "line": "once"}, timeout=30)
        dying.join(30)
        assert line == {"ok": "once"}, line
        assert "may or may not" in result["died"]
        with open(out) as f:
            assert f.read().splitlines() == ["once"]


def _error_of(fn) -> str:
    try:
        fn()
    except Exception as exc:  # noqa: BLE001 - the test reads it
        return f"{type(exc).__name__}: {exc}"
    return "no error"


def test_a_reply_that_reached_an_async_caller_is_read_as_its_tool_goes(tmp_path: Path) -> None:
    """A reply in the host's socket, unread when the tool restarted, is still read: the
    call ran once and its caller gets its result. (The next call, written into the closed
    connection, used to make the async client drop that reply unread; the call then got
    "may or may not have run", and, once a shut door meant "resend", ran twice.)"""
    out = str(tmp_path / "notes.txt")
    with ToolSystem(policy=FAST, log_level="WARNING") as system:
        t = system.supervise("w", policy=FAST).spawn("tests.pool_tools:Worker", name="x")

        async def main() -> tuple[int, object, object]:
            first = await t.acall("work")
            a = asyncio.ensure_future(t.acall("note", path=out, token="A", seconds=0.3, timeout=30))
            give_up = time.monotonic() + 10
            while not os.path.exists(out):             # A is running in the tool
                assert time.monotonic() < give_up, "the call never started"
                await asyncio.sleep(0.005)
            restarting = threading.Thread(target=t.restart)
            restarting.start()
            restarting.join(30)  # (the loop is blocked: A's reply waits unread in the socket)
            b = await t.acall("work", timeout=30)      # written into the closed connection
            return first, await a, b

        first, a, b = asyncio.run(main())
        assert a == first, a
        assert isinstance(b, int) and b != first
        with open(out) as f:
            assert f.read().splitlines() == ["A"]


def test_a_tools_ask_answered_before_its_callee_went_is_not_lost(tmp_path: Path) -> None:
    """An answer that reached a tool while it was busy, from a callee that then restarted,
    is read when the tool next uses that callee; it used to be failed unread with
    "ended before answering"."""
    out = str(tmp_path / "notes.txt")
    with ToolSystem(policy=FAST, log_level="WARNING") as system:
        w = system.supervise("w", policy=FAST)
        b = w.spawn("tests.pool_tools:Worker", name="b")
        caller = w.spawn("tests.pool_tools:Caller", name="c")
        first = b.call("work")
        caller.call("ask_note", path="w/b", file=out, token="A", seconds=0.3)
        result: dict = {}
        flag = str(tmp_path / "go")
        busy = threading.Thread(target=lambda: result.update(
            pid=caller.call("work_when", path="w/b", flag=flag, timeout=30)))
        busy.start()
        wait_until(lambda: os.path.exists(out), 10, what="the ask to reach w/b")
        b.restart()  # (after 'note' has answered: the answer waits in w/c's socket)
        open(flag, "w").close()
        busy.join(30)
        assert isinstance(result.get("pid"), int) and result["pid"] != first, result
        answers = wait_until(lambda: caller.call("asked"), 10, what="the ask's answer")
        assert answers == [first], answers
        with open(out) as f:
            assert f.read().splitlines() == ["A"]


def _listening() -> tuple[str, socket.socket]:
    """A Unix socket listening where a tool's door would (it stands in for a slow tool)."""
    address = f"\0toolvisor-test-{os.getpid()}-{time.monotonic_ns()}"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(address)
    server.listen(1)
    return address, server


async def _backlog_over_the_mark(calls, address: str) -> None:
    """Until the connection to ``address`` holds more unsent bytes than the high-water mark
    (the next call waits for room), 10 s at most."""
    from supervisors.host.aio import HIGH_WATER

    give_up = time.monotonic() + 10
    while True:
        conn = calls.state().ready.get(address)
        if conn is not None and conn.transport.get_write_buffer_size() > HIGH_WATER:
            return
        assert time.monotonic() < give_up, "the backlog never grew past the mark"
        await asyncio.sleep(0.005)


def test_an_async_call_that_waited_for_room_gets_its_reply_when_the_connection_ends() -> None:
    """A call that waited for the tool to take in its backlog (backpressure) and whose
    reply came before the connection ended gets that reply; it used to be told
    "not delivered", and its caller would have sent it again."""
    from actors.wire_auth import MAC_SIZE
    from supervisors.host.aio import AsyncCalls

    address, server = _listening()
    big = b"x" * (2 << 20)
    queued = threading.Event()

    def slow_tool() -> None:
        """Reads nothing until all three calls wait, answers the first two, then hangs up."""
        conn, _ = server.accept()
        queued.wait(20)
        reader, frames, hello = FrameReader(), [], b""
        while len(hello) < MAC_SIZE:
            hello += conn.recv(MAC_SIZE - len(hello))
        while len(frames) < 2:
            frames += reader.feed(conn.recv(65536))
        for frame in frames[:2]:
            call = decode(frame)
            conn.sendall(pack_frame(encode(Reply(call.cid, True, call.cid))))
        conn.close()  # (the third call is still coming in: the caller gets a reset)

    tool = threading.Thread(target=slow_tool)
    tool.start()

    async def main() -> list:
        calls = AsyncCalls()
        deadline = time.time() + 20

        def call(cid: int, args: dict) -> asyncio.Future:
            return asyncio.ensure_future(
                calls.exchange("t", address, cid, Call(cid, "x", args, deadline), deadline))

        first = call(1, {"blob": big})
        await _backlog_over_the_mark(calls, address)  # written in part; the rest waits
        second = call(2, {})              # waits for room: the backlog is over the mark
        third = call(3, {"blob": big})
        await asyncio.sleep(0)            # (both are queued)
        queued.set()
        try:
            return await asyncio.gather(first, second, third, return_exceptions=True)
        finally:
            calls.close()

    try:
        results = asyncio.run(main())
    finally:
        tool.join(20)
        server.close()
    assert [(r.cid, r.ok, r.value) for r in results[:2]] == [(1, True, 1), (2, True, 2)], results


def test_an_async_call_waiting_for_room_keeps_its_deadline() -> None:
    """A tool that takes in nothing: a call that waits for room in its backlog times out
    at its own deadline, not when the tool reads again."""
    from supervisors import CallTimeout
    from supervisors.host.aio import AsyncCalls

    address, server = _listening()
    held: list[socket.socket] = []
    accepting = threading.Thread(target=lambda: held.append(server.accept()[0]))
    accepting.start()

    async def main() -> tuple[object, float]:
        calls = AsyncCalls()
        far = time.time() + 30
        first = asyncio.ensure_future(calls.exchange(
            "t", address, 1, Call(1, "x", {"blob": b"x" * (2 << 20)}, far), far))
        await _backlog_over_the_mark(calls, address)  # the next call waits for room
        near = time.time() + 0.5
        started = time.monotonic()
        try:
            await calls.exchange("t", address, 2, Call(2, "x", {}, near), near)
        except CallTimeout as exc:
            return exc, time.monotonic() - started
        finally:
            first.cancel()
            calls.close()
        return None, time.monotonic() - started

    try:
        error, took = asyncio.run(main())
    finally:
        accepting.join(10)
        for sock in held:
            sock.close()
        server.close()
    assert isinstance(error, CallTimeout) and took < 2.0, (error, took)
