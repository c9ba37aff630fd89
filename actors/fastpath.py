"""The fast call path, tool side: a Unix socket served from the actor's own receive loop.

The tool's Thespian shell asks its receive loop to also watch this server's
sockets (``ThespianWatch``); ready sockets arrive as ``on_ready`` calls, so the
tool still handles one message at a time and needs no thread or lock. Callers
send length-prefixed msgpack frames (``actors.frames``) carrying the same
``Call``/``Batch`` messages as the slow path and get ``Reply`` frames back.

A peer that breaks the protocol (cut or lying frames, garbage, a frame over the
size limit, a message of the wrong shape) or that stops reading its replies is
dropped with a log line; the server keeps serving everyone else.

Callers are capped (``max_peers``, a tool's ``max_callers``): a connection over
the cap gets one ``Reply`` with cid 0 saying why, and is closed. Running out of
descriptors on accept is survived the same way: a spare descriptor is released
to take the connection, answer and close it.
"""

from __future__ import annotations

import errno
import hmac
import os
import select
import socket
import struct
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

from loguru import logger

from actors import wire_auth
from actors.busy import BACKLOG
from actors.codec import decode, encode
from actors.errors import MalformedMessage, ToolOverloaded
from actors.frames import MAX_FRAME, FrameError, FrameReader, pack_frame
from actors.messages import Batch, Call, Reply

REFUSAL_LINGER = 0.5            # seconds a refused connection stays open after its refusal
MAX_REFUSING = 64               # refused connections kept open at most
READ_CHUNK = 64 * 1024         # bytes read from one peer per turn (fairness; 256 KiB reads
                               # made malloc mmap a fresh buffer for every call)
MAX_PENDING_OUT = MAX_FRAME + 8 * 1024 * 1024  # unread reply bytes before a peer is dropped
#                                                (at least one largest frame)
#: Callers connected at once (``max_callers`` of a tool); one more is refused with an error.
DEFAULT_MAX_CALLERS = 512
MAX_PEERS = DEFAULT_MAX_CALLERS
#: After serving, keep listening this long for the caller's next frame before
#: handing control back to the actor's mailbox (seconds, per quiet gap) ...
LINGER_IDLE = 0.001
#: ... and never longer than this in one turn. Lingering also ends as soon as the
#: framework has a message for the actor or something to send.
LINGER_TOTAL = 0.050


class Mailbox(Protocol):
    """What the server needs to know about the actor framework to linger politely."""

    def framework_fds(self) -> list[int]: ...
    def framework_busy(self) -> bool: ...


def _same_user(sock: socket.socket) -> bool:
    """Only processes of our own user may call (abstract sockets have no file permissions)."""
    if not hasattr(socket, "SO_PEERCRED"):  # pragma: no cover - not Linux
        return True
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return False
    _, uid, _ = struct.unpack("3i", creds)
    return uid == os.getuid()


def _spare() -> int | None:
    try:
        return os.open(os.devnull, os.O_RDONLY)
    except OSError:
        return None


class Peer:
    """One connected caller."""

    def __init__(self, sock: socket.socket, server: FastPathServer) -> None:
        self.sock = sock
        self.server = server
        self.reader = FrameReader(server.max_frame)
        self.out = bytearray()
        self.closed = False
        self.hello = bytearray()  # the door token, until it is complete (security issue)
        self.authed = False

    def send(self, msg: Any) -> None:
        """Queue a reply; the server writes queued replies once per turn (``flush``)."""
        if self.closed:
            return
        self.out += pack_frame(msg if isinstance(msg, bytes) else encode(msg))
        self.server.unsent.add(self)

    def flush(self) -> None:
        if not self.out or self.closed:
            self.server.unsent.discard(self)
            return
        try:
            sent = self.sock.send(self.out)
        except BlockingIOError:
            sent = 0
        except OSError:
            self.server.drop(self, None)
            return
        if sent:
            del self.out[:sent]
            if not self.out:
                self.server.unsent.discard(self)
        if len(self.out) > self.server.max_out:
            self.server.drop(self, f"it left {len(self.out)} bytes of replies unread")

    def __repr__(self) -> str:
        return f"<peer fd {self.sock.fileno() if not self.closed else '-'}>"


class FastPathServer:
    def __init__(self, deliver: Callable[[Any, Peer], None], mailbox: Mailbox, label: str = "tool",
                 max_frame: int = MAX_FRAME, max_out: int = MAX_PENDING_OUT,
                 max_peers: int = MAX_PEERS, on_shut: Callable[[bool], None] | None = None) -> None:
        self.deliver = deliver
        #: told as the door closes, before it hangs up on anyone: whether every reply got
        #: out (the tool's busy marker records it: actors.busy, ``shut``)
        self.on_shut = on_shut
        self.mailbox = mailbox
        self.label = label
        self.max_frame = max_frame
        self.max_out = max_out
        self.max_peers = max_peers
        self.peers: dict[int, Peer] = {}
        self.unsent: set[Peer] = set()  # peers with replies not yet written out (has_output)
        #: a peer was dropped with replies unsent: from then on this process cannot say that
        #: every finished call's reply left it (actors.busy, ``never_started``)
        self.replies_lost = False
        self._others = 0  # ready callers after the one being read (actors.busy.BACKLOG)
        self.refused = 0
        self.refused_logged = 0.0
        #: Refused connections kept open a moment after their refusal (see ``_refuse``).
        self.refusing: deque[tuple[float, socket.socket]] = deque()
        self.spare: int | None = _spare()
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.address = self._bind()
        self.listener.listen(128)
        self.listener.setblocking(False)
        self.listen_fd = self.listener.fileno()
        self.token = wire_auth.door_token(self.address)  # a caller must send this first

    def _bind(self) -> str:
        unique = f"toolvisor-{os.getpid()}-{os.urandom(4).hex()}"
        if sys.platform.startswith("linux"):
            name = "\0" + unique  # abstract namespace: nothing to clean up on disk
        else:  # pragma: no cover - non-Linux hosts
            name = os.path.join(tempfile.gettempdir(), unique + ".sock")
        self.listener.bind(name)
        return name

    def fds(self) -> list[int]:
        return [self.listen_fd, *self.peers]

    @property
    def has_output(self) -> bool:
        return bool(self.unsent)

    def on_ready(self, ready: list[int]) -> None:
        """Serve the ready sockets, then linger briefly for follow-up frames.

        A caller making calls back to back sends its next frame a few
        microseconds after reading a reply; catching it here saves a trip
        through the actor framework's loop. Lingering is bounded by
        ``LINGER_TOTAL``, so the actor's own messages are never held up long.
        """
        end = time.monotonic() + LINGER_TOTAL
        if self.refusing:
            self._close_refused(end - LINGER_TOTAL)
        framework = self.mailbox.framework_fds()
        while True:
            for i, fd in enumerate(ready):
                if fd == self.listen_fd:
                    self._accept()
                else:
                    peer = self.peers.get(fd)
                    if peer is not None:
                        self._others = len(ready) - i - 1  # callers with frames still to read
                        self._read(peer)
            self.flush()
            wait = min(LINGER_IDLE, end - time.monotonic())
            if wait <= 0 or not self.peers or not framework or self.mailbox.framework_busy():
                return
            try:  # poll, not select: a tool with many callers has descriptors above 1023
                poller = select.poll()
                for fd in self.fds() + framework:
                    poller.register(fd, select.POLLIN)
                ready = [fd for fd, _ in poller.poll(wait * 1000)]
            except (OSError, ValueError):
                return
            if not ready or any(fd in framework for fd in ready):
                return

    def flush(self) -> None:
        for peer in list(self.unsent):
            peer.flush()

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE):
                    self._refuse_without_descriptors()
                else:
                    self._note_refusal(f"accept failed: {exc}")
                return
            sock.setblocking(False)
            if not _same_user(sock):
                logger.warning("{}: refused a caller running as another user", self.label)
                sock.close()
                continue
            if len(self.peers) >= self.max_peers:
                self._refuse(sock, f"{self.label} has {len(self.peers)} callers connected, its "
                             f"max_callers ({self.max_peers} caller{'s' if self.max_peers != 1 else ''}); "
                             "retry later, share connections, or raise max_callers")
                continue
            self.peers[sock.fileno()] = Peer(sock, self)

    def _refuse(self, sock: socket.socket, why: str, linger: bool = True) -> None:
        """Tell the caller why in a ``Reply`` with cid 0, then hang up.

        The socket stays open (write side shut) for ``REFUSAL_LINGER`` seconds: a caller
        whose token or call is still on its way would otherwise find a reset connection,
        and an asyncio transport drops the refusal unread when its write fails.
        """
        try:
            sock.send(pack_frame(encode(Reply(0, False, error=ToolOverloaded(why).to_wire()))))
            if linger:
                sock.shutdown(socket.SHUT_WR)
        except OSError:
            linger = False
        if linger:
            self.refusing.append((time.monotonic(), sock))
        else:
            sock.close()
        self._note_refusal(why)

    def _close_refused(self, now: float) -> None:
        while self.refusing and (now - self.refusing[0][0] > REFUSAL_LINGER
                                 or len(self.refusing) > MAX_REFUSING):
            self.refusing.popleft()[1].close()

    def _refuse_without_descriptors(self) -> None:
        """Out of descriptors: free the spare to take the connection, answer it, close it."""
        if self.spare is not None:
            os.close(self.spare)
            self.spare = None
        try:
            sock, _ = self.listener.accept()
        except OSError as exc:
            self._note_refusal(f"accept failed: {exc}")
        else:
            self._refuse(sock, f"{self.label} is out of file descriptors; retry later", linger=False)
        self.spare = _spare()

    def _note_refusal(self, why: str) -> None:
        """Log refusals at most once a second (a crowd of callers must not flood the log)."""
        self.refused += 1
        now = time.monotonic()
        if now - self.refused_logged > 1.0:
            logger.warning("{}: refused {} caller(s): {}", self.label, self.refused, why)
            self.refused, self.refused_logged = 0, now

    def _read(self, peer: Peer) -> bool:
        """Read what ``peer`` sent and deliver its frames; False when there was nothing."""
        try:
            data = peer.sock.recv(READ_CHUNK)
        except (BlockingIOError, InterruptedError):
            return False
        except MemoryError:
            self.drop(peer, "the tool is out of memory")
            return False
        except OSError as exc:
            self.drop(peer, f"read failed: {exc}")
            return False
        if not data:
            if peer.reader.pending:
                self.drop(peer, f"it hung up in the middle of a frame ({peer.reader.pending} bytes)")
            else:
                self.drop(peer, None)
            return False
        if not peer.authed:
            need = wire_auth.MAC_SIZE - len(peer.hello)
            peer.hello += data[:need]
            data = data[need:]
            if len(peer.hello) < wire_auth.MAC_SIZE:
                return False
            if not hmac.compare_digest(bytes(peer.hello), self.token):
                self.drop(peer, "it did not present this system's key (a process outside the "
                                "toolvisor system); nothing it sent was read")
                return False
            peer.authed = True
            if not data:
                return False
        try:
            frames = peer.reader.feed(data)
        except FrameError as exc:
            self.drop(peer, str(exc))
            return False
        waiting = len(frames) + self._others
        for payload in frames:
            waiting -= 1
            try:
                msg = decode(payload)
            except MalformedMessage as exc:
                if exc.cid is not None:  # tell it which call was refused, then hang up
                    peer.send(Reply(exc.cid, False, error=exc.to_wire()))
                    peer.flush()
                self.drop(peer, f"it sent a bad frame: {exc}")
                return False
            if not isinstance(msg, Call | Batch):
                self.drop(peer, f"it sent a {type(msg).__name__}; only calls come this way")
                return False
            if self.has_output:  # replies of calls that finished go out before the next
                self.flush()        # call runs: a call that ends the process loses no others
                if peer.closed:     # (this caller was dropped by it: run nothing more of its)
                    return False
            BACKLOG.waiting = waiting  # (for the work counters, actors.busy)
            try:
                self.deliver(msg, peer)
            except Exception as exc:  # a shape the checks let through: never keep such a peer
                logger.opt(exception=exc).debug("{}: serving a {} raised", self.label, type(msg).__name__)
                self.drop(peer, f"handling its {type(msg).__name__} raised {type(exc).__name__}: {exc}")
                return False
            if peer.closed:
                return False
        return True

    def drop(self, peer: Peer, why: str | None) -> None:
        """Close a peer; ``why`` is logged (None: an ordinary hang-up)."""
        if peer.closed:
            return
        if why:
            logger.warning("{}: dropped a caller because {}", self.label, why)
        peer.closed = True
        if peer.out:
            self.replies_lost = True
        self.unsent.discard(peer)
        self.peers.pop(peer.sock.fileno(), None)
        try:
            peer.sock.close()
        except OSError:
            pass

    def close(self) -> None:
        """Close the door. Calls that reached it since its last read are read first: the
        tool is going away, so each is answered 'moved' (not run) and its caller sends it
        to another instance, instead of seeing the connection close under it. New callers
        are refused first (a Unix listener shut for reading refuses connects), then those
        already queued to connect are taken in and read too.

        A call that arrives after those reads is not read at all. Before hanging up, the
        door tells ``on_shut`` whether every reply got out: the tool's busy marker then
        says that no call starts here any more, and a caller left without an answer
        knows its call did not run and sends it to the next instance."""
        try:
            self.listener.shutdown(socket.SHUT_RD)
        except OSError:
            pass
        self._accept()
        for peer in list(self.peers.values()):
            for _ in range(64):  # (what a caller had sent; not a caller that keeps sending)
                if peer.closed or not self._read(peer):
                    break
        if self.has_output:
            self.flush()
        if self.on_shut is not None:  # (a reply still inside is lost with its caller's drop)
            self.on_shut(not (self.replies_lost or self.has_output))
            self.on_shut = None
        while self.refusing:
            self.refusing.popleft()[1].close()
        if self.spare is not None:
            os.close(self.spare)
            self.spare = None
        for peer in list(self.peers.values()):
            self.drop(peer, None)
        try:
            self.listener.close()
        except OSError:
            pass
