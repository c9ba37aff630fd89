"""The seam to Thespian inside actor processes.

``Shell`` is the only Thespian ``Actor`` we define. It decodes msgpack bytes
into our messages, hands them to a behaviour (``ToolRunner`` or
``Supervisor``), and implements ``actors.context.Context`` on top of
Thespian's send, wakeupAfter and createActor. It never lets an exception reach
Thespian, and it ties the process's life to its parent's (PR_SET_PDEATHSIG)
so no actor outlives the supervisor that started it.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from datetime import timedelta
from typing import Any, ClassVar

import msgpack
from loguru import logger
from thespian.actors import (
    Actor,
    ActorAddress,
    ActorExitRequest,
    ActorSystemMessage,
    ChildActorExited,
    PoisonMessage,
    WakeupMessage,
)
from thespian.system.transport import IPBase
from thespian.system.transport.IPBase import TCPv4ActorAddress, UDPv4ActorAddress

from actors.codec import decode, encode, register_ext
from actors.errors import MalformedMessage, error_to_wire
from actors.messages import Reply

ADDRESS_EXT = 1


def _listen_on_loopback_only() -> None:
    """Make Thespian bind its sockets to THESPIAN_BASE_IPADDR when that is a loopback address.

    Thespian binds every listening socket to all interfaces and unpickles what
    arrives; on one host nothing outside it should be able to connect.
    """
    original = IPBase.IPActorAddress.__init__
    if getattr(original, "_toolvisor", False):
        return

    def init(self: Any, *args: Any, **kw: Any) -> None:
        original(self, *args, **kw)
        ip = os.environ.get("THESPIAN_BASE_IPADDR", "")
        if ip.startswith("127.") and self.bindname and self.bindname[0] in ("", "0.0.0.0"):
            self.bindname = (ip, self.bindname[1])

    init._toolvisor = True  # type: ignore[attr-defined]
    IPBase.IPActorAddress.__init__ = init  # type: ignore[method-assign]


_listen_on_loopback_only()


def _pack_address(addr: ActorAddress) -> bytes:
    details = addr.addressDetails
    sockname = getattr(details, "sockname", None)
    if sockname is None:
        raise TypeError(f"address {addr} is not connected yet and cannot be sent")
    kind = "U" if isinstance(details, UDPv4ActorAddress) else "T"
    return msgpack.packb([kind, sockname[0], sockname[1]])


def _unpack_address(data: bytes) -> ActorAddress:
    kind, ip, port = msgpack.unpackb(data)
    cls = UDPv4ActorAddress if kind == "U" else TCPv4ActorAddress
    return ActorAddress(cls(ip, port, external=True))


register_ext(ActorAddress, ADDRESS_EXT, _pack_address, _unpack_address)


def bind_to_parent() -> None:
    """Ask Linux to SIGKILL this process when the process that forked it dies."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # pragma: no cover - non-glibc systems
        return
    if os.getppid() == 1:  # the parent died before we asked
        os._exit(1)


class Shell(Actor):
    """Hosts one behaviour; subclasses name which one (``behaviour`` = 'module:Class')."""

    behaviour: ClassVar[str] = ""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        bind_to_parent()
        self.pid = os.getpid()
        self._inner: Any = None

    # Context ---------------------------------------------------------------------------
    @property
    def my_address(self) -> Any:
        return self.myAddress

    def send(self, to: Any, msg: Any) -> None:  # type: ignore[override]
        super().send(to, msg if isinstance(msg, (bytes, ActorSystemMessage)) else encode(msg))

    def after(self, delay: float, payload: Any) -> None:
        self.wakeupAfter(timedelta(seconds=max(0.0, delay)), payload)

    def spawn(self, kind: str) -> Any:
        return self.createActor(SHELLS[kind])

    def exit(self) -> None:
        super().send(self.myAddress, ActorExitRequest())

    # Thespian entry point -----------------------------------------------------------------
    def receiveMessage(self, msg: Any, sender: Any) -> None:
        try:
            inner = self._inner or self._make_inner()
            if isinstance(msg, (bytes, bytearray)):
                inner.receive(decode(msg), sender)
            elif isinstance(msg, WakeupMessage):
                inner.wakeup(msg.payload)
            elif isinstance(msg, ChildActorExited):
                inner.child_exited(msg.childAddress)
            elif isinstance(msg, ActorExitRequest):
                inner.system_exit()
            elif isinstance(msg, PoisonMessage):
                logger.warning("actor {} got back a message it could not deliver: {}",
                               self.pid, msg.details or msg.poisonMessage)
            elif isinstance(msg, ActorSystemMessage):
                pass
            else:
                raise MalformedMessage(f"expected msgpack bytes, got {type(msg).__name__}")
        except MalformedMessage as exc:
            logger.warning("actor {} dropped a malformed message from {}: {}", self.pid, sender, exc)
            if sender is not None and sender != self.myAddress:
                try:
                    super().send(sender, encode(Reply(0, False, error=exc.to_wire())))
                except Exception:  # the sender may be gone
                    pass
        except Exception as exc:  # never let Thespian retry or poison a message
            logger.opt(exception=exc).error("actor {} failed handling {}: {}", self.pid,
                                            type(msg).__name__, error_to_wire(exc)["message"])

    def _make_inner(self) -> Any:
        from actors.loading import load_object

        self._inner = load_object(self.behaviour)(self)
        return self._inner


class ToolShell(Shell):
    behaviour = "actors.runner:ToolRunner"


#: kind -> shell class; ``supervisors`` registers its own kind on import.
SHELLS: dict[str, type[Shell]] = {"tool": ToolShell}
