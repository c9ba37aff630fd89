"""Callers (issue 9): a thread per call leaks nothing, and callers' sockets are not the tool's files."""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

import pytest

from supervisors import ToolError, ToolSystem
from supervisors.host.fastclient import POOL_IDLE
from tests.helpers import wait_until
from tests.tools import Counter

pytestmark = pytest.mark.timeout(180)


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def in_new_threads(n: int, fn, width: int = 8) -> list[BaseException]:
    """Run ``fn`` ``n`` times, each time in a new thread (``width`` alive at once)."""
    errors: list[BaseException] = []

    def one() -> None:
        try:
            fn()
        except BaseException as exc:  # noqa: BLE001 - collected and asserted on
            errors.append(exc)

    done = 0
    while done < n:
        batch = [threading.Thread(target=one) for _ in range(min(width, n - done))]
        for th in batch:
            th.start()
        for th in batch:
            th.join(30)
        done += len(batch)
    return errors


@pytest.mark.parametrize("call_path", ["socket", "thespian"], indirect=True)
def test_a_thread_per_call_leaves_no_descriptors_behind(call_path: str) -> None:
    with ToolSystem() as system:
        t = system.spawn(Counter, name="c")
        pid = t.call("pid")
        # warm up: the pools fill up to the number of calls in flight at once (8 here)
        assert in_new_threads(40, lambda: t.call("add")) == [] and in_new_threads(40, t.status) == []
        host_before, tool_before = fds(os.getpid()), fds(pid)
        errors = in_new_threads(400, lambda: t.call("add"))
        errors += in_new_threads(100, t.status)
        assert errors == []
        assert t.call("get") == 440
        # the tool notices hung-up callers on its next turn
        # (the host keeps up to POOL_IDLE idle connections: a bound, not a leak)
        wait_until(lambda: fds(pid) <= tool_before + POOL_IDLE, 10, what="tool descriptors back")
        # (pooled Thespian endpoints keep a connection or two each to the actors they spoke to)
        assert fds(os.getpid()) <= host_before + 12, (host_before, fds(os.getpid()))


def test_each_asyncio_run_closes_its_connections_as_its_loop_ends() -> None:
    """``asyncio.run`` makes a new loop each time: the connections of a loop that ended
    must not stay open, or they fill the tool's max_callers and lock callers out."""
    import asyncio
    import gc

    with ToolSystem() as system:
        t = system.spawn(Counter, name="c", max_callers=3)
        pid = t.call("pid")
        before = fds(pid)
        for _ in range(6):
            asyncio.run(t.acall("add", timeout=5))
        assert t.call("get") == 6
        wait_until(lambda: fds(pid) <= before, 10, what="the tool's descriptors back")
        gc.collect()  # ...and nothing of the ended loops is kept (at most the last one)
        assert sum(isinstance(o, asyncio.AbstractEventLoop) and o.is_closed()
                   for o in gc.get_objects()) <= 1


@pytest.mark.parametrize("on_limit", ["restart", "alert"])
def test_idle_callers_are_counted_apart_from_the_tools_own_files(on_limit: str) -> None:
    # (before: ~130 idle callers restarted a standard tool for open_files; 200 crashed it)
    with ToolSystem(call_path="socket", sample_every=0.2) as system:
        t = system.spawn(Counter, name="c", on_limit=on_limit)
        t.call("add")
        address = system._routes["c"].socket
        socks = []
        try:
            for _ in range(200):
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.connect(address)
                socks.append(s)
            assert t.call("add") == 2  # a turn of the loop accepts them all
            usage = wait_until(lambda: ((u := t.status().usage).get("callers") or 0) >= 200 and u, 15,
                               what="200 callers counted")
            assert usage["open_files"] < 64, usage
            assert t.status().state.value == "running" and t.status().restarts == 0
        finally:
            for s in socks:
                s.close()


def test_callers_beyond_max_callers_are_refused_clearly() -> None:
    with ToolSystem(call_path="socket") as system:
        t = system.spawn(Counter, name="c", max_callers=1)
        address = system._route("c", time.time() + 10).socket
        holder = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        holder.connect(address)  # takes the one place
        try:
            with pytest.raises(ToolError, match="max_callers") as info:
                t.call("add", timeout=10)
            assert "1 caller" in str(info.value), info.value
        finally:
            holder.close()
        wait_until(lambda: _calls(t), 10, what="a call once the place is free")
        assert t.status().restarts == 0


def test_an_async_caller_over_max_callers_is_refused_clearly() -> None:
    import asyncio

    with ToolSystem(call_path="socket") as system:
        t = system.spawn(Counter, name="c", max_callers=1)
        address = system._route("c", time.time() + 10).socket
        holder = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        holder.connect(address)
        try:
            with pytest.raises(ToolError, match="max_callers"):
                asyncio.run(t.acall("add", timeout=10))
        finally:
            holder.close()


def _calls(t) -> bool:
    try:
        return t.call("add", timeout=5) >= 1
    except ToolError:
        return False


def test_max_callers_is_checked() -> None:
    from supervisors import SpecError
    from supervisors.tree.specs import tool_spec

    for bad in (0, -1, 1.5, True, "10", float("nan")):
        with pytest.raises(SpecError, match="max_callers"):
            tool_spec(Counter, "c", max_callers=bad)


EMFILE_SCRIPT = """
import os, resource, socket, sys, time
from actors.codec import decode, encode
from actors.fastpath import FastPathServer
from actors.frames import FrameReader, pack_frame
from actors.messages import Call, Reply
from actors.wire_auth import door_token

class Mailbox:
    def framework_fds(self): return []
    def framework_busy(self): return False

served = []
server = FastPathServer(lambda msg, peer: (served.append(msg.cid), peer.send(Reply(msg.cid, True, 1))),
                        Mailbox(), label="tool t")
callers = [socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) for _ in range(2)]
n = len(os.listdir("/proc/self/fd")) + 8
resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))
files = []
try:
    while True:
        files.append(os.open(os.devnull, os.O_RDONLY))
except OSError:
    pass
callers[0].connect(server.address)
callers[0].sendall(door_token(server.address) + pack_frame(encode(Call(1, "x", {}, time.time() + 9))))
server.on_ready([server.listen_fd])          # accept fails with EMFILE: must not raise
callers[0].settimeout(5)
reply = decode(FrameReader().feed(callers[0].recv(65536))[0])
assert (reply.cid, reply.ok) == (0, False), reply
print("REFUSED:", reply.error["message"])
for fd in files:
    os.close(fd)
callers[1].connect(server.address)
callers[1].sendall(door_token(server.address) + pack_frame(encode(Call(2, "x", {}, time.time() + 9))))
server.on_ready([server.listen_fd])
for fd in list(server.peers):
    server.on_ready([fd])
callers[1].settimeout(5)
reply = decode(FrameReader().feed(callers[1].recv(65536))[0])
assert (reply.cid, reply.ok) == (2, True) and served == [2], (reply, served)
print("SERVED AFTER")
"""


def test_a_tool_out_of_descriptors_refuses_new_callers_and_lives(tmp_path) -> None:
    import subprocess
    import sys

    script = tmp_path / "emfile.py"
    script.write_text(EMFILE_SCRIPT)
    root = str(Path(__file__).resolve().parents[1])
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=50,
                          cwd=root, env={**os.environ, "PYTHONPATH": root})
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    assert "REFUSED: tool t is out of file descriptors; retry later" in done.stdout
    assert "SERVED AFTER" in done.stdout
