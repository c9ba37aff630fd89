"""The two trivial echo peers the call path is compared with.

``Echo`` is a bare Thespian actor that sends back any bytes it gets (no
decoding, no state machine). ``pipe_echo`` is the body of a child process that
echoes bytes over a ``multiprocessing`` Pipe until it reads an empty message.
"""

from __future__ import annotations

from multiprocessing.connection import Connection
from typing import Any

from thespian.actors import Actor


class Echo(Actor):
    """Reply to every bytes message with the same bytes."""

    def receiveMessage(self, msg: Any, sender: Any) -> None:
        if isinstance(msg, (bytes, bytearray)):
            self.send(sender, msg)


def pipe_echo(conn: Connection) -> None:
    """Echo every message on ``conn`` until an empty one (or end of file) arrives."""
    try:
        while True:
            data = conn.recv_bytes()
            if not data:
                return
            conn.send_bytes(data)
    except (EOFError, OSError):
        return
    finally:
        conn.close()
