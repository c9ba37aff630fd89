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
from collections.abc import Callable
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
    ThespianWatch,
    WakeupMessage,
    WatchMessage,
)
from thespian.system.transport import IPBase, TransmitIntent
from thespian.system.transport.IPBase import TCPv4ActorAddress, UDPv4ActorAddress

from actors import addresses, exits, heap, pidwatch, sharing, tcploop, wire_auth
from actors.codec import decode, encode, register_ext
from actors.errors import MalformedMessage, error_to_wire
from actors.fastpath import DEFAULT_MAX_CALLERS, FastPathServer, Peer
from actors.messages import Reply
from actors.pidwatch import PidWatch
from actors.timers import WAKEUP, Timers
from actors.zygote import Zygote, ZygoteGone
from actors.zygote import enabled as zygote_enabled

ADDRESS_EXT = 1
#: The Thespian bases our shells run on (multiprocQueueBase does not report killed children).
BASES = ("multiprocTCPBase", "multiprocUDPBase")
FLUSH_EVERY = 0.005  # seconds between retries of replies a slow reader has not taken yet
TRIM = "__trim__"  # the wakeup after which the heap is trimmed (actors.heap)


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
tcploop.install()  # Thespian's loop: the cost of a pass is what changed, not every socket
wire_auth.install()  # before any actor system forks: every process checks every frame
sharing.install()  # Thespian builds our shells without inspect.signature (memory, issue 10)
exits.install()  # an exit notice costs what changed, not a pass over every child (issue 10)
addresses.install()  # one TCPv4ActorAddress per actor in a process, however many copies arrive


def _pack_address(addr: ActorAddress) -> bytes:
    details = addr.addressDetails
    sockname = getattr(details, "sockname", None)
    if sockname is None:
        raise TypeError(f"address {addr} is not connected yet and cannot be sent")
    kind = "U" if isinstance(details, UDPv4ActorAddress) else "T"
    return msgpack.packb([kind, sockname[0], sockname[1]])


def _unpack_address(data: bytes) -> ActorAddress:
    kind, ip, port = msgpack.unpackb(data)
    if kind != "U":
        shared = addresses.known(ip, port)  # (the copy Thespian holds: actors.addresses)
        if shared is not None:
            return ActorAddress(shared)
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
    _toolvisor_shell: ClassVar[bool] = True  # (actors.sharing: built without inspect.signature)

    def __init__(self, *args: Any, **kw: Any) -> None:
        sharing.freeze_inherited()  # (the root's fork did not: actors.sharing)
        super().__init__(*args, **kw)
        self._forked()
        self._zygote: Zygote | None = None  # forks our tools (actors.zygote); started lazily
        self._zygote_off = False
        self._zygote_losses = 0
        self._old_zygotes: list[Zygote] = []  # ended ones, until reaped
        self.pid = os.getpid()
        self._inner: Any = None
        self._door: FastPathServer | None = None
        self._flush_armed = False
        self._trim_armed = False  # a heap trim is due after a large message (actors.heap)
        self._due: list[Any] = []          # timer payloads ready to run
        self._timers = Timers()            # timer payloads waiting for their time
        self._bell: tuple[int, int] | None = None  # self-pipe that wakes our own loop
        self._peer_fds: set[int] = set()           # the behaviour's own sockets (watch_fds)
        self._pidwatch = PidWatch()  # processes we watch end (watch_process)

    # Context ---------------------------------------------------------------------------
    @property
    def my_address(self) -> Any:
        return self.myAddress

    def send(self, to: Any, msg: Any) -> None:  # type: ignore[override]
        if isinstance(to, Peer):
            to.send(msg)
            return
        super().send(to, msg if isinstance(msg, (bytes, ActorSystemMessage)) else encode(msg))

    def after(self, delay: float, payload: Any) -> None:
        """Deliver ``payload`` to the behaviour's ``wakeup`` after ``delay`` seconds.

        Thespian skips socket I/O whenever one of its timers is already due, so a
        behaviour that keeps re-arming short timers would never see its mailbox.
        Timers therefore only ring a bell (a self-pipe this actor watches); the
        payload runs from the watch, after the framework has done its I/O.
        """
        if delay <= 0 and self._ring():
            self._due.append(payload)
            return
        arm = self._timers.add(delay, payload)
        if arm is not None:
            self.wakeupAfter(timedelta(seconds=arm), WAKEUP)

    def _ring(self) -> bool:
        """Make our loop wake up through the watch; False if the base cannot watch fds."""
        if self._bell is None:
            if not hasattr(getattr(self._myRef, "transport", None), "set_watch"):
                return False
            self._bell = os.pipe()
            os.set_blocking(self._bell[0], False)
            os.set_blocking(self._bell[1], False)
        try:
            os.write(self._bell[1], b"!")
        except BlockingIOError:  # the pipe is full: it is ringing already
            pass
        return True

    def watch_process(self, pid: int) -> bool:
        """Watch ``pid`` with a pidfd in this actor's own loop: ``process_ended(pid)`` runs
        when it ends. Independent of Thespian's ChildActorExited, which can be missed."""
        if not PidWatch.available() or not hasattr(getattr(self._myRef, "transport", None), "set_watch"):
            return False  # (TOOLVISOR_NO_PIDFD=1: use the poll, as where pidfds are missing)
        watching = self._pidwatch.watch(pid)
        if watching is None:  # gone (and reaped) already: report it from the loop
            self.after(0, ("__ended__", pid))
            return True
        return watching

    def _pids_ended(self, ready: list[int], inner: Any) -> list[int]:
        """Report watched processes that ended; return the other ready fds."""
        fd = self._pidwatch.fd()
        if fd is None or fd not in ready:
            return ready
        for pid in self._pidwatch.ended():
            self._ended(inner, pid)
        return [r for r in ready if r != fd]

    def _ended(self, inner: Any, pid: int) -> None:
        try:
            inner.process_ended(pid)
        except Exception as exc:
            logger.opt(exception=exc).error("actor {} failed handling the end of pid {}",
                                            self.pid, pid)
        # Thespian keeps its own list of our children and will not let this actor exit
        # before each has been seen to exit; a missed SIGCHLD would leave a dead one in it.
        try:
            self._thespian_forgets(pid)
        except Exception as exc:  # pragma: no cover - Thespian internals changed
            logger.debug("actor {}: Thespian's child check failed: {}", self.pid, exc)

    def _thespian_forgets(self, pid: int) -> None:
        """Do for the child ``pid`` what Thespian's ``childDied`` does for all: reap it, drop
        it from Thespian's list, and have Thespian's exit notice sent (once). Thespian's
        own version asks every child whether it is alive (a waitpid each): with N children
        that made each exit cost O(N) system calls."""
        m = self._myRef
        procs = getattr(m, "_child_procs", None)
        if not procs:
            return
        # (from the end: a tree stops its children last started first)
        at = next((i for i in range(len(procs) - 1, -1, -1)
                   if getattr(procs[i].childProc, "pid", None) == pid), None)
        if at is None:
            return
        ended = getattr(procs[at].childProc, "ended", None)
        if ended is not None:
            ended()  # (a zygote's child: our witness is the one that knows; actors.zygote)
        elif procs[at].childProc.is_alive():
            return
        self._tell_thespian_ended(procs.pop(at))

    def _tell_thespian_ended(self, info: Any) -> None:
        """Have Thespian's exit notice for the child ``info`` (one of its ``_child_procs``,
        already taken out of that list) sent to this actor, as its own SIGCHLD check would."""
        m = self._myRef
        address = exits.reaped(m, info)
        m.transport.scheduleTransmit(None, TransmitIntent(m.transport.myAddress, ChildActorExited(
            address)))

    def spawn(self, kind: str) -> Any:
        with sharing.forking():  # share what can be shared with the child (actors.sharing)
            zygote = self._zygote_for(kind)
            if zygote is None:
                address = self.createActor(SHELLS[kind])
            else:
                with zygote.serving(self._myRef):
                    address = self.createActor(SHELLS[kind])
                why = zygote.fallback  # (the child was forked here instead: actors.zygote)
                if isinstance(why, ZygoteGone):
                    self._zygote_lost(str(why))
                elif why is not None:
                    logger.warning("actor {}: {}; forked this tool from this process", self.pid, why)
        self._drop_start_pipes()
        return address

    def _zygote_for(self, kind: str) -> Zygote | None:
        """The process that forks our tools (actors.zygote), started before the first."""
        if kind != "tool" or self._zygote_off:
            return None
        self._old_zygotes = [z for z in self._old_zygotes if not z.reap()]
        if self._zygote is not None and (self._zygote.gone or self._zygote.stuck()):
            self._zygote_lost("it has ended" if self._zygote.gone else
                              "a fork request went unanswered for 10 s")
        if self._zygote is None and not self._zygote_off:
            if not zygote_enabled():
                self._zygote_off = True
                return None
            try:
                self._zygote = Zygote.start(self._forked)
            except OSError as exc:
                self._zygote_lost(str(exc))
        return self._zygote

    def _zygote_lost(self, why: str) -> None:
        """The zygote failed (its tools die with it; their supervisor restarts them): start
        another for the next tool; after ZYGOTE_LOSSES, fork tools from this process."""
        self._zygote_losses += 1
        off = self._zygote_losses >= ZYGOTE_LOSSES
        logger.warning("actor {}: zygote lost ({}); {}", self.pid, why,
                       "forking tools from this process from now on" if off else
                       "the next tool starts a new one")
        z, self._zygote, self._zygote_off = self._zygote, None, off
        if z is not None and not z.end(kill=True):
            self._old_zygotes.append(z)  # (reaped later: it is our child)

    def _zygote_answers(self, ready: list[int]) -> list[int]:
        """Read the zygote's answers; a fork it could not make is a child that ended (as
        Thespian reports one). Return the other ready fds."""
        z = self._zygote
        if z is None or z.sock.fileno() not in ready:
            return ready
        fd = z.sock.fileno()
        z.collect()
        self._report_failed_forks(z)
        if z.gone:
            self._zygote_lost("it stopped answering")
        return [r for r in ready if r != fd]

    def _report_failed_forks(self, z: Zygote) -> None:
        """A fork the zygote could not make is a child that ended, told as Thespian tells it."""
        failed = z.take_failed()
        if not failed:
            return
        m = self._myRef
        for info in list(getattr(m, "_child_procs", None) or ()):
            if any(info.childProc is proc for proc in failed):
                m._child_procs.remove(info)
                self._tell_thespian_ended(info)

    @staticmethod
    def _forked() -> None:
        """In a process just forked from an actor's (a child actor, or a zygote): let go of
        what belongs to the parent."""
        bind_to_parent()
        pidwatch.close_inherited()
        tcploop.close_inherited()

    def _drop_start_pipes(self) -> None:
        """Close the two pipe ends ``multiprocessing`` keeps for the child just forked.

        They would tell when the child exits, but nothing here reads them (we watch a
        pidfd, Thespian calls waitpid). Kept, a supervisor would hold two descriptors per
        child, and every later child would inherit all of them.
        """
        procs = getattr(self._myRef, "_child_procs", None)
        popen = getattr(procs[-1].childProc, "_popen", None) if procs else None
        finalizer = getattr(popen, "finalizer", None)
        if finalizer is not None:
            # multiprocessing's own close of (parent_r, parent_w); runs once. Its
            # ``sentinel`` now names a closed (later reused) number: never wait on it
            # (``join(timeout)`` of a live child would); Thespian joins only dead ones.
            finalizer()

    def exit(self) -> None:
        if self._zygote is not None:
            self._zygote.end()  # (our tools are stopped already: it leaves at end-of-file)
            self._zygote = None
        self._forget_dead_children()
        self._close_door()
        super().send(self.myAddress, ActorExitRequest())

    def _forget_dead_children(self) -> None:
        """Drop children whose process has ended from Thespian's own list.

        Thespian does not let an actor exit before it has seen every child exit; a
        notice it lost (its users report ChildActorExited missing) would keep this
        process waiting for a child that is gone. Its live children are the ones in
        ``_child_procs``; any other address in ``_children`` is dead.
        """
        m = self._myRef
        procs = getattr(m, "_child_procs", None)
        children = getattr(m, "_children", None)
        if procs is None or not children:
            return
        live = []
        for info in procs:
            if info.childProc.is_alive():
                live += [info.childAddr, getattr(info, "childRealAddr", None)]
        kept = [c for c in children if any(c == a for a in live if a is not None)]
        if len(kept) != len(children):
            logger.debug("actor {}: forgetting {} dead children", self.pid, len(children) - len(kept))
            m._children = kept

    def open_door(self, max_callers: int = DEFAULT_MAX_CALLERS, label: str | None = None,
                  on_shut: Callable[[bool], None] | None = None) -> str | None:
        if self._door is None:
            label = label or f"actor {self.pid}"
            self._door = FastPathServer(self._inner.receive, self, label=label, max_peers=max_callers,
                                        on_shut=on_shut)
        return self._door.address

    def replies_out(self) -> bool:
        """Has every reply this actor queued on its door left the process? (actors.busy)"""
        door = self._door
        return door is None or not (door.has_output or door.replies_lost)

    # Mailbox (for the fast path's lingering) --------------------------------------------
    def framework_fds(self) -> list[int]:
        """Thespian's own sockets for this actor; [] if they cannot be found."""
        try:
            t = self._myRef.transport
            fds = [t.socket.fileno(), *filter(None, t._incomingSockets)]
            fds += [s.socket.fileno() for s in getattr(t, "_openSockets", {}).values()]
            if self._bell is not None:
                fds.append(self._bell[0])  # a timer is due: stop lingering
            return [fd for fd in fds if isinstance(fd, int) and fd >= 0]
        except Exception:
            return []

    def framework_busy(self) -> bool:
        """True while Thespian has messages of ours to send (do not hold them up)."""
        try:
            t = self._myRef.transport
            return bool(t._transmitIntents) or bool(t._waitingTransmits)
        except Exception:
            return True

    def _close_door(self) -> None:
        if self._door is not None:
            self._door.close()
            self._door = None

    # Thespian entry point -----------------------------------------------------------------
    def receiveMessage(self, msg: Any, sender: Any) -> Any:
        try:
            inner = self._inner or self._make_inner()
            if isinstance(msg, (bytes, bytearray)):
                inner.receive(decode(msg), sender)
            elif isinstance(msg, WatchMessage):
                ready = self._zygote_answers(self._pids_ended(list(msg.ready), inner))
                if self._bell is not None and self._bell[0] in msg.ready:
                    self._run_due(inner)
                mine = self._peer_fds.intersection(msg.ready)
                if mine:  # answers from tools this one sent to (actors.peers)
                    inner.on_ready(list(mine))
                if self._door is not None:
                    self._door.on_ready([fd for fd in ready if (self._bell is None
                                         or fd != self._bell[0]) and fd not in mine])
            elif isinstance(msg, WakeupMessage):
                payload = msg.payload
                if payload == "__flush__":
                    self._flush_armed = False
                    if self._door is not None:
                        self._door.flush()
                elif payload == TRIM:
                    self._trim_armed = False
                    heap.trim()
                elif payload == WAKEUP:
                    due, arm = self._timers.rang()
                    if arm is not None:
                        self.wakeupAfter(timedelta(seconds=arm), WAKEUP)
                    if due and self._ring():
                        self._due.extend(due)
                    else:
                        self._due.extend(due)
                        self._run_due_now(inner)
                else:
                    inner.wakeup(payload)
            elif isinstance(msg, ChildActorExited):
                inner.child_exited(msg.childAddress)
            elif isinstance(msg, ActorExitRequest):
                inner.system_exit()
                self._close_door()
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
                    super().send(sender, encode(Reply(exc.cid or 0, False, error=exc.to_wire())))
                except Exception:  # the sender may be gone
                    pass
        except Exception as exc:  # never let Thespian retry or poison a message
            logger.opt(exception=exc).error("actor {} failed handling {}: {}", self.pid,
                                            type(msg).__name__, error_to_wire(exc)["message"])
        if heap.handled() and not self._trim_armed:  # (its copies are gone by then)
            heap.take()
            self._trim_armed = True
            self.wakeupAfter(timedelta(seconds=heap.TRIM_AFTER), TRIM)
        return self._watch()

    def _run_due(self, inner: Any) -> None:
        try:
            while os.read(self._bell[0], 4096):  # type: ignore[index]
                pass
        except BlockingIOError:
            pass
        self._run_due_now(inner)

    def _run_due_now(self, inner: Any) -> None:
        """Run the due timers here (no bell on this base); one that fails does not stop
        the others."""
        due, self._due = self._due, []
        for payload in due:
            try:
                self._timer(inner, payload)
            except Exception as exc:
                logger.opt(exception=exc).error("actor {} failed running a timer", self.pid)

    def _timer(self, inner: Any, payload: Any) -> None:
        if isinstance(payload, tuple) and payload and payload[0] == "__ended__":
            self._ended(inner, payload[1])
        else:
            inner.wakeup(payload)

    def _watch(self) -> ThespianWatch | None:
        door = self._door
        extra = getattr(self._inner, "watch_fds", None)
        peer_fds: list[int] = []
        if extra is not None:  # first: flushing may ring the bell (an ask's answer is due)
            try:
                peer_fds = extra()
            except Exception as exc:
                logger.opt(exception=exc).error("actor {} failed flushing its messages", self.pid)
            self._peer_fds = set(peer_fds)
        fds = ([self._bell[0]] if self._bell is not None else []) + peer_fds
        pid_fd = self._pidwatch.fd()
        if pid_fd is not None:
            fds.append(pid_fd)
        if self._zygote is not None:
            if self._zygote.failed:  # (found while a pid was read, not from the watch)
                self._report_failed_forks(self._zygote)
            fds.append(self._zygote.sock.fileno())
        if door is None:
            return ThespianWatch(fds) if fds else None
        door.flush()  # replies queued while handling this message (e.g. held calls on resume)
        if door.has_output and not self._flush_armed:
            self._flush_armed = True
            self.wakeupAfter(timedelta(seconds=FLUSH_EVERY), "__flush__")
        return ThespianWatch(door.fds() + fds)

    def _make_inner(self) -> Any:
        from actors.loading import load_object

        self._inner = load_object(self.behaviour)(self)
        return self._inner


class ToolShell(Shell):
    behaviour = "actors.runner:ToolRunner"


#: kind -> shell class; ``supervisors`` registers its own kind on import.
SHELLS: dict[str, type[Shell]] = {"tool": ToolShell}
ZYGOTE_LOSSES = 3  # zygotes an actor may lose before it forks its tools itself
