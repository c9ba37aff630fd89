"""The fast call path, caller side: length-prefixed msgpack frames over Unix sockets.

Each thread keeps its own connection per tool instance, so handles stay safe to
share between threads and need no lock. A connection to an instance that has
died fails *before* the call is delivered (connect refused, broken pipe): that
call is resent to the next instance. A connection that closes *after* the
call was sent means the tool died while serving it.
"""

from __future__ import annotations

import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from actors.codec import decode, encode
from actors.errors import CallTimeout, ToolError
from actors.frames import FrameError, FrameReader, pack_frame
from actors.wire_auth import door_token
from supervisors.host.transport import PeerGone


def frame_of(msg: Any) -> bytes:
    """The framed message, or ``ToolError`` if it is over the frame size limit."""
    try:
        return pack_frame(encode(msg))
    except FrameError as exc:
        raise ToolError(f"the call is too large to send: {exc}; pass a file path instead",
                        type="CallTooLarge")


#: Read size: 64 KiB stays inside malloc's heap; 256 KiB made every recv mmap a new buffer.
RECV_BYTES = 65536


class NotDelivered(Exception):
    """The message certainly did not reach the tool (it is gone); safe to resend."""


class _Conn:
    def __init__(self, address: str, timeout: float) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(address)
            self.sock.sendall(door_token(address))  # the tool reads nothing before it
        except OSError:
            self.sock.close()
            raise
        self.reader = FrameReader()
        self.backlog: deque[Any] = deque()

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


class SocketCalls:
    """Per-thread connections to tools' sockets, and one request/reply exchange on them."""

    def __init__(self) -> None:
        self._local = threading.local()
        self._all: list[_Conn] = []

    def _conns(self) -> dict[str, _Conn]:
        conns = getattr(self._local, "conns", None)
        if conns is None:
            conns = self._local.conns = {}
        return conns

    def _connect(self, address: str, deadline: float) -> _Conn:
        conns = self._conns()
        conn = conns.get(address)
        if conn is None:
            try:
                conn = _Conn(address, max(0.001, deadline - time.time()))
            except OSError as exc:
                raise NotDelivered(str(exc))
            conns[address] = conn
            self._all.append(conn)
        return conn

    def forget(self, address: str) -> None:
        conn = self._conns().pop(address, None)
        if conn is not None:
            conn.close()

    def exchange(self, address: str, msg: Any, match: Callable[[Any], bool], deadline: float) -> Any:
        """Send ``msg`` and return the first reply that ``match`` accepts.

        Raises ``NotDelivered`` if the tool is gone before the call reached it,
        ``PeerGone`` if it went away after, ``CallTimeout`` at ``deadline``.
        """
        frame = frame_of(msg)
        conn = self._connect(address, deadline)
        sock = conn.sock
        remaining = deadline - time.time()
        try:
            sock.settimeout(remaining if remaining > 0.001 else 0.001)
            sock.sendall(frame)
        except (BrokenPipeError, ConnectionResetError, ConnectionRefusedError) as exc:
            self.forget(address)
            raise NotDelivered(str(exc))
        except TimeoutError:
            self.forget(address)  # part of a frame may be out: this stream is unusable
            raise CallTimeout("the tool did not take the call before the deadline")
        backlog = conn.backlog
        while backlog:
            reply = backlog.popleft()
            if match(reply):
                return reply
        feed = conn.reader.feed
        while True:
            try:
                data = sock.recv(RECV_BYTES)
            except TimeoutError:
                raise CallTimeout("no answer before the deadline")
            except OSError:
                data = b""
            if not data:
                self.forget(address)
                raise PeerGone()
            try:
                frames = feed(data)
            except FrameError:
                self.forget(address)
                raise PeerGone()
            found = None
            for payload in frames:
                reply = decode(payload)
                if found is None and match(reply):
                    found = reply
                elif found is not None:
                    backlog.append(reply)
            if found is not None:
                return found
            remaining = deadline - time.time()
            if remaining <= 0:
                raise CallTimeout("no answer before the deadline")
            sock.settimeout(remaining)

    def close(self) -> None:
        for conn in self._all:
            conn.close()
        self._all.clear()
        self._local = threading.local()
