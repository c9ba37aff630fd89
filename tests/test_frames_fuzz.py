"""Frames of the wrong shape (issue 9): each gets an error reply for its id or its peer dropped.

The frame decoder and the tool's serve loop are fuzzed with hypothesis over shapes,
types and sizes, in process (a real ToolRunner behind a real FastPathServer, real
Unix sockets); two frames found by hand are also sent to a real tool process.
"""

from __future__ import annotations

import socket
import time
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actors.codec import decode, pack_value
from actors.commands import command_table
from actors.errors import MalformedMessage
from actors.fastpath import FastPathServer, Peer
from actors.frames import MAX_FRAME, FrameError, FrameReader, pack_frame
from actors.messages import REGISTRY, Batch, BatchReply, Call, Reply
from actors.runner import ToolRunner
from actors.state import ToolState
from actors.wire_auth import door_token
from supervisors import ToolSystem
from tests.tools import Counter

scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**63, 2**64 - 1),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20),
                    st.binary(max_size=20))
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12)
commands = st.sampled_from(["add", "get", "fail", "unsendable", "nope", ""])
odd_keys = st.one_of(st.text(max_size=4), st.integers(-5, 5), st.none(), st.booleans(), st.binary(max_size=3))
fields = st.one_of(values, commands, st.dictionaries(st.sampled_from(["k", "x"]), values, max_size=2),
                   st.dictionaries(odd_keys, values, max_size=3),
                   st.lists(st.tuples(commands, st.dictionaries(st.sampled_from(["k"]), values,
                                                                 max_size=1)).map(list), max_size=3),
                   st.floats(time.time() + 60, time.time() + 120))
frames_items = st.tuples(st.sampled_from([1, 4, 2, 5, 3, 99, 0, -1]),
                         st.lists(fields, min_size=0, max_size=6)).map(lambda t: [t[0], *t[1]])


class _Ctx:
    """The little of a process that the serve loop needs: sending to a socket peer."""

    pid = 0
    my_address = None

    def send(self, to: Any, msg: Any) -> None:
        to.send(msg)

    def after(self, delay: float, payload: Any) -> None:
        pass

    def exit(self) -> None:
        pass


class _Mailbox:
    def framework_fds(self) -> list[int]:
        return []

    def framework_busy(self) -> bool:
        return False


def _serving() -> tuple[FastPathServer, ToolRunner]:
    runner = ToolRunner(_Ctx())  # type: ignore[arg-type]
    tool = Counter()
    tool.on_init({})
    runner.tool, runner.path = tool, "fuzz"
    runner.commands = {c: getattr(tool, m) for c, m in command_table(Counter).items()}
    runner.sm.force(ToolState.RUNNING)
    server = FastPathServer(runner.receive, _Mailbox(), label="fuzz")
    return server, runner


SERVER, RUNNER = _serving()


def _serve_one(payload: bytes) -> tuple[bool, list[Any]]:
    """Send one frame on a fresh connection; (was the peer dropped, the replies)."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    theirs.setblocking(False)
    peer = Peer(theirs, SERVER)
    SERVER.peers[theirs.fileno()] = peer
    try:
        ours.sendall(door_token(SERVER.address) + pack_frame(payload))  # a peer of the system
        SERVER.on_ready([theirs.fileno()])  # must never raise
        SERVER.flush()
        ours.setblocking(False)
        data = b""
        try:
            while chunk := ours.recv(1 << 20):
                data += chunk
        except BlockingIOError:
            pass
        replies = [decode(p) for p in FrameReader().feed(data)]
        return peer.closed, replies
    finally:
        SERVER.drop(peer, None)
        ours.close()


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=64))
def test_the_decoder_takes_any_bytes(data: bytes) -> None:
    try:
        msg = decode(data)
    except MalformedMessage:
        return
    assert type(msg) in REGISTRY.values()


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_the_frame_reader_takes_any_stream(data: bytes) -> None:
    reader = FrameReader(max_size=32)
    try:
        for cut in range(0, len(data), 7):
            for payload in reader.feed(data[cut:cut + 7]):
                assert len(payload) <= 32
    except FrameError:
        pass


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frames_items)
def test_every_frame_of_the_wrong_shape_is_answered_or_its_peer_dropped(items: list[Any]) -> None:
    try:
        payload = pack_value(items)
    except (TypeError, ValueError, OverflowError):
        return
    try:
        msg = decode(payload)
    except MalformedMessage:
        msg = None
    dropped, replies = _serve_one(payload)
    if isinstance(msg, Call | Batch):
        # well formed: answered with its id (a call whose deadline passed gets nothing)
        assert dropped or [r.cid for r in replies] == [msg.cid] or \
            (msg.deadline and msg.deadline < time.time()), (items, replies)
        for r in replies:
            assert isinstance(r, Reply | BatchReply)
    else:
        assert dropped, (items, replies)  # not a call: dropped (perhaps after an error reply)
        cid = items[1] if len(items) > 1 and type(items[1]) is int else None
        assert all(isinstance(r, Reply) and not r.ok and r.cid == cid for r in replies), replies


def test_decoded_calls_have_the_documented_types() -> None:
    now = time.time() + 30
    for items in ([1, 7, "add", {}, "tomorrow"], [4, 8, 5, now], [1, True, "add", {}, now],
                  [1, 7, 5, {}, now], [1, 7, "add", [], now], [1, 7, "add", {}, float("nan")],
                  [4, 8, [["add", {}]], None], [2, "x", True]):
        with pytest.raises(MalformedMessage, match="bad fields"):
            decode(msgpack.packb(items))
    assert decode(msgpack.packb([1, 7, "add", {}, 0])) == Call(7, "add", {}, 0)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("items", [[1, 7, "add", {}, "tomorrow"], [4, 8, 5, "now"]])
def test_the_two_frames_from_the_issue_get_an_error_and_the_peer_goes(capfd, items: list[Any]) -> None:
    items = [time.time() + 30 if v == "now" else v for v in items]
    with ToolSystem(call_path="socket") as system:
        t = system.spawn(Counter, name="c")
        t.call("add")
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(system._routes["c"].socket)
        s.sendall(door_token(system._routes["c"].socket) + pack_frame(msgpack.packb(items)))
        s.settimeout(10)
        data = b""
        while chunk := s.recv(65536):
            data += chunk  # ends when the tool hangs up
        s.close()
        (reply,) = [decode(p) for p in FrameReader().feed(data)]
        assert (reply.cid, reply.ok) == (items[1], False) and "bad fields" in reply.error["message"]
        assert t.call("add") == 2
        time.sleep(0.2)
        err = capfd.readouterr().err
        assert "ERROR" not in err and "dropped a caller because" in err


def test_frames_over_the_size_limit_are_refused_by_the_sender() -> None:
    with pytest.raises(FrameError):
        pack_frame(b"x" * (MAX_FRAME + 1))

