"""The fast path: bursts with backpressure, batches, async calls, and bad peers on the socket."""

from __future__ import annotations

import asyncio
import os
import socket
import struct
import time

import pytest

from actors.codec import encode
from actors.frames import pack_frame
from actors.messages import Call
from actors.wire_auth import door_token
from supervisors import CallTimeout, ToolError, ToolOverloaded, ToolSystem, UnknownCommand
from tests.tools import Counter

pytestmark = pytest.mark.timeout(120)


def tool_socket(system: ToolSystem, path: str) -> str:
    system.tool(path).call("get")
    route = system._routes[path]
    assert route.socket, "the fast path is not in use"
    return route.socket


@pytest.fixture
def fast() -> ToolSystem:
    with ToolSystem(call_path="socket") as s:
        yield s


def test_a_burst_of_20000_async_calls_gets_exactly_one_answer_each(fast: ToolSystem) -> None:
    t = fast.spawn(Counter, name="c")

    async def burst() -> list[int]:
        return list(await asyncio.gather(*(t.acall("add", k=1, timeout=60) for _ in range(20_000))))

    results = asyncio.run(burst())
    assert sorted(results) == list(range(1, 20_001))  # each call ran once and was answered once
    assert t.call("get") == 20_000


def test_async_calls_spread_over_several_tools(fast: ToolSystem) -> None:
    tools = [fast.spawn(Counter, name=f"c{i}") for i in range(4)]

    async def run() -> list[int]:
        return list(await asyncio.gather(*(tools[i % 4].acall("add", k=1) for i in range(4000))))

    results = asyncio.run(run())
    assert sorted(results) == sorted(list(range(1, 1001)) * 4)


def test_full_windows_answer_overloaded_never_drop() -> None:
    with ToolSystem(call_path="socket", window_per_caller=10, window_per_tool=10) as system:
        t = system.spawn(Counter, name="c")
        t.call("get")
        t.pause()

        async def run() -> list[object]:
            # the deadline is long enough that no window frees up while the 100 are handed out,
            # even on a loaded machine (at 0.5 s, held calls sometimes timed out first)
            calls = (t.acall("add", k=1, timeout=2.0) for _ in range(100))
            return list(await asyncio.gather(*calls, return_exceptions=True))

        started = time.monotonic()
        results = asyncio.run(run())
        assert time.monotonic() - started < 15  # answered at their deadline, never left hanging
        assert len(results) == 100
        overloaded = sum(isinstance(r, ToolOverloaded) for r in results)
        timed_out = sum(isinstance(r, CallTimeout) for r in results)
        # 10 calls fill the windows and are held; the other 90 wait for a window until the
        # deadline. The held ones time out at that same deadline and free their windows: a
        # waiter whose own timer has not fired yet takes one, and its call times out too.
        # Either way every call is answered at its deadline, none is dropped.
        assert overloaded + timed_out == 100
        assert timed_out >= 10 and overloaded >= 80
        t.resume()
        assert t.call("get") == 0  # calls that timed out while held never ran later


def test_batches_keep_order_and_per_item_errors(fast: ToolSystem) -> None:
    t = fast.spawn(Counter, name="c")
    out = t.call_many([("add", {"k": 1})] * 500 + [("nope", {}), ("fail", {"message": "x"})]
                      + [("add", {"k": 1})] * 499)
    assert out[:500] == list(range(1, 501))
    assert isinstance(out[500], UnknownCommand)
    assert isinstance(out[501], ToolError) and out[501].type == "ValueError"
    assert out[502:] == list(range(501, 1000))


def test_a_batch_to_a_paused_tool_is_held_as_a_whole(fast: ToolSystem) -> None:
    import threading

    t = fast.spawn(Counter, name="c")
    t.pause()
    box: list[list[object]] = []
    th = threading.Thread(target=lambda: box.append(t.call_many([("add", {"k": 1})] * 3, timeout=20)))
    th.start()
    th.join(0.3)
    assert th.is_alive() and not box
    t.resume()
    th.join(10)
    assert box == [[1, 2, 3]]


def bad_peer(system: ToolSystem, payload: bytes, close: bool = True) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    address = tool_socket(system, "c")
    s.connect(address)
    s.sendall(door_token(address) + payload)  # a peer of the system, sending bad frames
    if close:
        s.close()
    return s


def dropped(sock: socket.socket, timeout: float = 5.0) -> bool:
    """True once the tool closed our connection (EOF after any queued replies)."""
    sock.settimeout(timeout)
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        return False
    except OSError:
        return True
    return True


@pytest.mark.parametrize(("name", "payload", "log"), [
    ("cut short", struct.pack(">I", 100) + b"0123456789", "hung up in the middle of a frame"),
    # the rest of the message is then read as the next frame's length: far over the limit
    ("lying length", struct.pack(">I", 3) + encode(Call(1, "get", {}, time.time() + 9)),
     "over the"),
    ("over the limit", struct.pack(">I", 0xFFFFFFF0) + b"x" * 10, "over the"),
    ("garbage", b"\x00\x00\x00\x05\xc1\xc1\xc1\xc1\xc1", "bad frame"),
])
def test_bad_frames_drop_only_the_offender(capfd, name: str, payload: bytes, log: str) -> None:
    with ToolSystem(call_path="socket") as system:
        t = system.spawn(Counter, name="c")
        t.call("add")
        sock = bad_peer(system, payload, close=(name == "cut short"))
        if name != "cut short":
            assert dropped(sock), f"{name}: the offender was not dropped"
            sock.close()
        assert t.call("add") == 2  # everyone else is still served
        deadline = time.monotonic() + 5
        err = ""
        while log not in err and time.monotonic() < deadline:
            err += capfd.readouterr().err
            time.sleep(0.02)
        assert "dropped a caller because" in err and log in err


def test_a_caller_that_never_reads_is_dropped(capfd) -> None:
    with ToolSystem(call_path="socket") as system:
        t = system.spawn(Counter, name="c")
        frames = b"".join(pack_frame(encode(Call(i, "blob", {"size": 1_000_000}, time.time() + 30)))
                          for i in range(30))
        sock = bad_peer(system, frames, close=False)
        deadline = time.monotonic() + 10
        err = ""
        while "left" not in err and time.monotonic() < deadline:
            assert t.call("get") == 0  # served while the offender hogs its buffer
            err += capfd.readouterr().err
        assert "dropped a caller because it left" in err
        sock.close()


def test_socket_and_thespian_paths_give_the_same_answers() -> None:
    for path in ("socket", "thespian"):
        with ToolSystem(call_path=path) as system:
            t = system.spawn(Counter, name="c")
            assert t.call("add", k=2) == 2
            assert t.call_many([("add", {}), ("get", {})]) == [3, 3]
            assert asyncio.run(t.acall("add")) == 4
            assert (system._routes["c"].socket is not None) == (path == "socket")


def test_only_calls_are_taken_on_the_socket(capfd) -> None:
    from actors.messages import Lifecycle

    with ToolSystem(call_path="socket") as system:
        t = system.spawn(Counter, name="c")
        sock = bad_peer(system, pack_frame(encode(Lifecycle(1, "pause"))), close=False)
        assert dropped(sock)
        sock.close()
        assert t.call("add") == 1 and t.status().state.value == "running"
        wait = time.monotonic() + 5
        err = ""
        while "only calls come this way" not in err and time.monotonic() < wait:
            err += capfd.readouterr().err
        assert "only calls come this way" in err


def test_a_batch_refused_as_a_whole_raises(fast: ToolSystem) -> None:
    t = fast.spawn(Counter, name="c", hold_limit=0)
    t.pause()
    with pytest.raises(ToolOverloaded, match="hold queue is full"):
        t.call_many([("add", {})] * 3, timeout=5)
    t.resume()
    assert t.call("get") == 0


def test_callers_of_another_user_are_refused(fast: ToolSystem) -> None:
    import shutil
    import subprocess

    if os.getuid() != 0:
        pytest.skip("needs root to run a client as another user")
    python = shutil.which("python3", path="/usr/bin:/bin")  # one 'nobody' may execute
    if python is None:
        pytest.skip("no system python3 for the other user")
    fast.spawn(Counter, name="c")
    address = tool_socket(fast, "c")
    assert address.startswith("\0")  # abstract: passed without its leading NUL
    client = ("import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect('\\0' + sys.argv[1]); "
              "s.settimeout(5); print(repr(s.recv(10)))")
    out = subprocess.run([python, "-c", client, address[1:]], user="nobody", cwd="/",
                         capture_output=True, text=True, timeout=30)
    assert out.stdout.strip() == "b''"  # connected, then closed at once without an answer
