"""The fast call path, caller side: length-prefixed msgpack frames over Unix sockets.

Connections are pooled per tool instance: a call takes one for its exchange and
gives it back, so threads share them and a thread that ends leaks nothing. A
connection to an instance that has died fails *before* the call is delivered
(connect refused, broken pipe): that call is resent to the next instance. A
connection that closes *after* the call was sent means the tool died while
serving it.
"""

from __future__ import annotations

import socket
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from actors.codec import decode, encode
from actors.errors import CallTimeout, MalformedMessage, ToolError
from actors.frames import FrameError, FrameReader, pack_frame
from actors.messages import Reply
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
        except OSError:
            self.sock.close()
            raise
        try:
            self.sock.sendall(door_token(address))  # the tool reads nothing before it
        except (BrokenPipeError, ConnectionResetError):
            pass  # it hung up at once (too many callers): the first exchange reads its refusal
        self.reader = FrameReader()

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def refusal(self) -> Any:
        """The tool's refusal frame, if it wrote one before closing this connection."""
        try:
            self.sock.settimeout(0.2)
            data = self.sock.recv(RECV_BYTES)
            for payload in self.reader.feed(data) if data else ():
                reply = decode(payload)
                if _is_refusal(reply):
                    return reply
        except (OSError, FrameError, MalformedMessage):
            pass
        return None


def _is_refusal(reply: Any) -> bool:
    """A tool that cannot take a connection answers ``Reply(cid=0)`` with the reason."""
    return isinstance(reply, Reply) and reply.cid == 0 and not reply.ok


#: Idle connections kept per tool instance. A connection is taken for one exchange and
#: given back after it, so the number open is the number of calls in flight at once (plus
#: this many idle), whichever threads make them: a thread that ends leaves nothing behind.
POOL_IDLE = 16


class SocketCalls:
    """A pool of connections to tools' sockets, and one request/reply exchange on them.

    Each exchange takes a connection of its own from the pool (or opens one) and gives
    it back when the reply came; a connection whose exchange failed or timed out is
    closed, so a late reply is never read as the answer to another call. Handles stay
    safe to share between threads and need no lock (deque appends and pops are atomic).
    """

    def __init__(self, idle: int = POOL_IDLE) -> None:
        self.idle = idle
        self._pools: dict[str, deque[_Conn]] = {}
        self._closed = False

    def _take(self, address: str, deadline: float) -> _Conn:
        pool = self._pools.get(address)
        if pool:
            try:
                return pool.pop()
            except IndexError:
                pass
        try:
            return _Conn(address, max(0.001, deadline - time.time()))
        except OSError as exc:
            raise NotDelivered(str(exc))

    def _give_back(self, address: str, conn: _Conn) -> None:
        pool = self._pools.setdefault(address, deque())
        if self._closed or len(pool) >= self.idle:
            conn.close()
        else:
            pool.append(conn)
            if self._closed:  # close() ran meanwhile
                self.forget(address)

    def forget(self, address: str) -> None:
        """Close the idle connections to an instance that has gone."""
        pool = self._pools.pop(address, None)
        while pool:
            try:
                pool.pop().close()
            except IndexError:
                break

    def exchange(self, address: str, msg: Any, match: Callable[[Any], bool], deadline: float) -> Any:
        """Send ``msg`` and return the first reply that ``match`` accepts.

        Raises ``NotDelivered`` if the tool is gone before the call reached it,
        ``PeerGone`` if it went away after, ``CallTimeout`` at ``deadline``. A tool
        that refused the connection (too many callers) answers with a ``Reply`` of
        cid 0, which is returned as the reply.
        """
        frame = frame_of(msg)
        try:
            conn = self._take(address, deadline)
        except NotDelivered:
            self.forget(address)
            raise
        try:
            reply = self._exchange(conn, frame, match, deadline)
        except BaseException as exc:
            conn.close()
            if isinstance(exc, NotDelivered | PeerGone):
                self.forget(address)  # its idle connections lead to the same dead instance
            raise
        if _is_refusal(reply):
            conn.close()
        else:
            self._give_back(address, conn)
        return reply

    def _exchange(self, conn: _Conn, frame: bytes, match: Callable[[Any], bool], deadline: float) -> Any:
        sock = conn.sock
        remaining = deadline - time.time()
        try:
            sock.settimeout(remaining if remaining > 0.001 else 0.001)
            sock.sendall(frame)
        except (BrokenPipeError, ConnectionResetError, ConnectionRefusedError) as exc:
            refusal = conn.refusal()
            if refusal is not None:
                return refusal
            raise NotDelivered(str(exc))
        except TimeoutError:  # part of a frame may be out: this stream is unusable
            raise CallTimeout("the tool did not take the call before the deadline")
        feed = conn.reader.feed
        while True:
            try:
                data = sock.recv(RECV_BYTES)
            except TimeoutError:
                raise CallTimeout("no answer before the deadline")
            except OSError:
                data = b""
            if not data:
                raise PeerGone()
            try:
                frames = feed(data)
            except FrameError:
                raise PeerGone()
            for payload in frames:
                reply = decode(payload)
                if match(reply) or _is_refusal(reply):
                    return reply  # (anything after it on this stream is stale)
            remaining = deadline - time.time()
            if remaining <= 0:
                raise CallTimeout("no answer before the deadline")
            sock.settimeout(remaining)

    def close(self) -> None:
        self._closed = True
        for address in list(self._pools):
            self.forget(address)
