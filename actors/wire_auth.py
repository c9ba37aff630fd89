"""No code from strangers: every Thespian frame is authenticated before it is unpickled.

Thespian pickles every message onto its TCP/UDP sockets and unpickles whatever
arrives, so anyone who can reach a port could make the process run code.
``install()`` replaces the serializer of Thespian's TCP and UDP transports:
each frame carries an HMAC-SHA256 of the pickled bytes under a per-system
secret, and the receiver checks it (``hmac.compare_digest``) over the whole
frame *before* ``pickle.loads``. A frame that fails (no or wrong MAC, random
bytes, a bad or oversized length header) is dropped unread, its connection is
closed, and the drop is logged once per peer (address and uid) and counted.

The secret (``secrets.token_bytes(32)``) lives only in memory: the host makes a
new one when its first actor system starts, and every actor process inherits it
through ``fork`` (Thespian's multiproc bases fork the admin, the logger and every
actor). It is never put in the environment or in a file. A process started any
other way has a different secret and is refused.

``install()`` also stops listening sockets leaking into processes that do not
serve them: after a fork, the child replaces every Thespian socket of its parent
(listening or connected) with /dev/null at the same descriptor number, so the
number stays taken (Thespian closes some of them by number later) but the
socket is no longer held.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import pickle
import secrets
import socket
import weakref
from typing import Any

from loguru import logger

MAC_SIZE = 32
#: Frames above this are refused before they are read in full (our messages are <= 16 MiB).
MAX_WIRE_FRAME = 64 * 1024 * 1024
IDENTIFY_FIRST = 200  # drops whose sender's uid is looked up; later ones are counted by address

_key: bytes = b""
_inner: Any = None  # SHA-256 states after the HMAC key pads (RFC 2104), copied per frame
_outer: Any = None
_live_systems = 0
_installed = False
_transports: weakref.WeakSet[Any] = weakref.WeakSet()
#: (ip, uid) -> frames dropped from that peer; the first drop of each is logged.
DROPS: dict[tuple[str, int | None], int] = {}


class Unauthenticated(Exception):
    """A frame without a valid MAC: it was not read."""


# ----------------------------------------------------------------------------- the secret
def begin_system() -> None:
    """A new actor system starts in this process: a fresh secret unless one is running."""
    global _live_systems
    if _live_systems == 0:
        set_secret(secrets.token_bytes(32))
    _live_systems += 1


def set_secret(key: bytes) -> None:
    """Use ``key`` from now on (also re-seals the acknowledgements Thespian sends as constants)."""
    global _key, _inner, _outer
    if not isinstance(key, bytes) or not 16 <= len(key) <= 64:
        raise ValueError("the wire secret must be 16 to 64 bytes")
    _key = key
    padded = key.ljust(64, b"\0")
    _inner = hashlib.sha256(bytes(b ^ 0x36 for b in padded))
    _outer = hashlib.sha256(bytes(b ^ 0x5C for b in padded))
    if _installed:
        _seal_acks()


def _seal_acks() -> None:
    from thespian.system.transport import TCPTransport as tcp
    from thespian.system.transport.streamBuffer import ackDataErrPacket, ackPacket

    tcp.ackMsg = tcp.toSendBuffer(ackPacket, dumps)
    tcp.ackDataErrMsg = tcp.toSendBuffer(ackDataErrPacket, dumps)


def end_system() -> None:
    global _live_systems
    _live_systems = max(0, _live_systems - 1)


set_secret(secrets.token_bytes(32))  # until a system starts (begin_system makes its own)


# ----------------------------------------------------------------------------- the frames
def mac(data: Any) -> bytes:
    """HMAC-SHA256 of ``data`` under the system's secret (from precomputed key pads)."""
    inner = _inner.copy()
    inner.update(data)
    outer = _outer.copy()
    outer.update(inner.digest())
    return outer.digest()


def seal(payload: bytes) -> bytes:
    """The frame for ``payload``: its MAC, then the payload."""
    return mac(payload) + payload


def authentic(frame: bytes) -> bool:
    """True if ``frame`` carries a valid MAC under this system's secret (constant time)."""
    if not isinstance(frame, (bytes, bytearray)) or len(frame) < MAC_SIZE:
        return False
    return hmac.compare_digest(mac(memoryview(frame)[MAC_SIZE:]), bytes(frame[:MAC_SIZE]))


def dumps(obj: Any) -> bytes:
    return seal(pickle.dumps(obj))


def door_token(address: str) -> bytes:
    """What a caller sends first on a tool's Unix socket (the fast path): proof that it holds
    this system's secret. Bound to the socket's address, so it is good for that door only."""
    return mac(b"toolvisor door " + address.encode("utf-8", "surrogateescape"))


def loads(frame: bytes) -> Any:
    """Unpickle ``frame`` only if it is authentic; raise ``Unauthenticated`` otherwise."""
    if not authentic(frame):
        raise Unauthenticated(f"a {len(frame) if hasattr(frame, '__len__') else '?'}-byte frame "
                              "without a valid MAC")
    return pickle.loads(memoryview(frame)[MAC_SIZE:])


def _loads_checked(frame: bytes) -> Any:
    return pickle.loads(memoryview(frame)[MAC_SIZE:])


class _Serializer:
    """Stands in for the ``pickle`` module that Thespian's TCP transport calls."""

    dumps = staticmethod(dumps)
    loads = staticmethod(loads)


def _udp_loads(frame: bytes) -> Any:
    try:
        return loads(frame)
    except Unauthenticated:
        record_drop(None, "a UDP datagram without a valid MAC", len(frame))
        raise  # Thespian's UDP transport skips a datagram it cannot load


class _UdpSerializer:
    dumps = staticmethod(dumps)
    loads = staticmethod(_udp_loads)


# ----------------------------------------------------------------------------- peers and drops
def peer_uid(ip: str, port: int) -> int | None:
    """The uid owning the TCP socket bound to (ip, port) on this host, from /proc/net/tcp."""
    try:
        want_port = f"{port:04X}"
        packed = socket.inet_aton(ip)
        want_ip = f"{int.from_bytes(packed, 'little'):08X}"
        with open("/proc/net/tcp") as f:
            next(f)
            for line in f:
                parts = line.split()
                if parts[1] == f"{want_ip}:{want_port}":
                    return int(parts[7])
    except (OSError, ValueError, StopIteration):
        pass
    return None


def record_drop(peer: tuple[str, int] | None, why: str, size: int | None = None) -> None:
    """Count a dropped frame; log the first from each (ip, uid) peer."""
    ip, port = (peer[0], peer[1]) if peer else ("?", 0)
    # identifying the peer reads /proc/net/tcp: only for the first drops, not under a flood
    uid = peer_uid(ip, port) if peer and port and sum(DROPS.values()) < IDENTIFY_FIRST else None
    key = (ip, uid)
    DROPS[key] = DROPS.get(key, 0) + 1
    if DROPS[key] == 1:
        logger.warning("process {} dropped an unauthenticated Thespian message from {}:{} (uid {}): "
                       "{}{}; it was not read. Further drops from this peer are counted, not logged",
                       os.getpid(), ip, port, "?" if uid is None else uid, why,
                       f" ({size} bytes)" if size is not None else "")


def _peer_of(inc: Any) -> tuple[str, int] | None:
    try:
        name = inc.socket.getpeername()
        return (str(name[0]), int(name[1]))
    except Exception:
        return None


# ----------------------------------------------------------------------------- the patch
def install() -> None:
    """Patch Thespian's TCP and UDP transports (idempotent). Must run before the admin forks."""
    global _installed
    if _installed:
        return
    from thespian.system.transport import TCPTransport as tcp
    from thespian.system.transport import UDPTransport as udp
    from thespian.system.transport.streamBuffer import ReceiveBuffer

    tcp.serializer = _Serializer
    udp.serializer = _UdpSerializer
    _seal_acks()

    added = tcp.TCPTransport._addedDataToIncoming

    def checked(self: Any, inc: Any, skipFinish: bool = False, has_exclusive_flag: bool = False) -> Any:
        buf = getattr(inc, "_rData", None)
        if isinstance(buf, ReceiveBuffer):
            size = buf._size
            if size is not None and size > MAX_WIRE_FRAME:
                record_drop(_peer_of(inc), f"a frame announcing {size} bytes, over the "
                                           f"{MAX_WIRE_FRAME}-byte limit")
                inc.close()
                return None
            if inc.receivedAllData():
                if size is None:
                    record_drop(_peer_of(inc), "bytes without a frame header", buf._blen)
                    inc.close()
                    return None
                if not authentic(buf._buf):
                    record_drop(_peer_of(inc), "a frame without a valid MAC", size)
                    inc.close()
                    return None
                buf._deserialize = _loads_checked  # just checked these very bytes: do not hash twice
        return added(self, inc, skipFinish, has_exclusive_flag)

    tcp.TCPTransport._addedDataToIncoming = checked

    add_data = tcp.TCPIncoming_Common.addData

    def add_checked(self: Any, data: bytes) -> None:
        try:
            add_data(self, data)
        except Exception:
            record_drop(_peer_of(self), "a malformed frame header")
            raise  # Thespian closes the connection

    tcp.TCPIncoming_Common.addData = add_checked

    for cls in (tcp.TCPTransport, udp.UDPTransport):
        _track_instances(cls)
    os.register_at_fork(after_in_child=_release_inherited_sockets)
    _installed = True


def _track_instances(cls: type) -> None:
    init = cls.__init__

    def tracked(self: Any, *args: Any, **kw: Any) -> None:
        init(self, *args, **kw)
        _transports.add(self)

    cls.__init__ = tracked  # type: ignore[method-assign]


def _sockets_of(transport: Any) -> list[Any]:
    socks = [getattr(transport, "socket", None)]
    for each in list(getattr(transport, "_incomingSockets", {}).values()):
        socks.append(getattr(each, "socket", None))
    for each in list(getattr(transport, "_openSockets", {}).values()):
        socks.append(getattr(each, "socket", None))
    for each in list(getattr(transport, "_transmitIntents", {}).values()):
        socks.append(getattr(each, "socket", None))
    return [s for s in socks if s is not None]


def _release_inherited_sockets() -> None:
    """In a forked child: stop holding the parent's Thespian sockets (see the module docstring)."""
    parents = list(_transports)
    _transports.clear()
    if not parents:
        return
    null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    try:
        for transport in parents:
            for sock in _sockets_of(transport):
                try:
                    fd = sock.fileno()
                    if fd >= 0 and fd != null:
                        os.dup2(null, fd, inheritable=False)
                except (OSError, ValueError, AttributeError):
                    pass
    finally:
        os.close(null)
