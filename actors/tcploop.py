"""Thespian's TCP loop, with the cost of a pass kept to what changed (issue 10).

Thespian's ``TCPTransport._runWithExpiry`` visits every socket it keeps on every
pass of its loop: it lists each idle connection's descriptor, registers each one
with a new epoll object, and afterwards checks each one for expiry. A supervisor
keeps one idle connection per child and passes its loop at least once for every
message, so with N children each message costs O(N) Python work, and spawning N
tools costs O(N²) (profiled with py-spy, spawning 600 tools under one supervisor:
about half of the supervisor's busy time; docs/scaling.md).

``install()`` replaces that method with ``run_with_expiry`` below. It takes the
same steps in the same order, except that:

- the idle connections (``_openSockets``) live in a ``TrackedDict`` that notes which
  keys changed, so their descriptors are looked up only when one changes;
- the idle connections sit in a kept epoll set, told only of changes; the few other
  descriptors are polled with a kept ``select.poll`` object that also watches that
  epoll set (``LoopState`` says why this split keeps reused descriptor numbers right);
- a descriptor that is no longer open is named by the poll itself (``POLLNVAL``), so
  it is cancelled directly instead of probing every descriptor one by one;
- the idle connections that are not ready are checked for expiry (20 minutes in
  Thespian) once per ``HOUSEKEEP_EVERY`` seconds, not on every pass.

Everything else (transmits, incoming sockets in the middle of a message, the
listen socket, timers, watched descriptors) is handled as Thespian does: those
are few. ``TOOLVISOR_LOOP=stock`` leaves Thespian's loop as it is (for comparisons).
"""

from __future__ import annotations

import errno
import math
import os
import select
import threading
import time
import weakref
from typing import Any

from thespian.system.timing import currentTime, timePeriodSeconds
from thespian.system.transport import (
    ReceiveEnvelope,
    Thespian__Run_Expired,
    Thespian__Run_HandlerResult,
    Thespian__Run_Terminated,
    TransmitOnly,
)
from thespian.system.transport import TCPTransport as tcp
from thespian.system.transport.asyncTransportBase import exclusive_processing
from thespian.system.utilis import fmap, partition, thesplog

HOUSEKEEP_EVERY = 5.0  # seconds between expiry checks (Thespian: 20 min) of idle connections
_IN, _OUT, _NVAL = select.POLLIN, select.POLLOUT, select.POLLNVAL


class TrackedDict(dict):  # type: ignore[type-arg]
    """A dict that notes, for each reader, which keys were set or deleted since it last looked."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        # each loop reading this dict (one per thread) -> the keys changed since it looked;
        # weak, so a thread that is gone stops costing every write
        self.readers: weakref.WeakKeyDictionary[Any, set[Any]] = weakref.WeakKeyDictionary()

    def changes(self, reader: Any) -> set[Any]:
        """The keys changed since ``reader`` last asked (everything, the first time)."""
        seen = self.readers.get(reader)
        if seen is None:
            self.readers[reader] = set()
            return set(self)
        self.readers[reader] = set()
        return seen

    def _note(self, key: Any) -> None:
        for seen in self.readers.values():
            seen.add(key)

    def __setitem__(self, key: Any, value: Any) -> None:
        super().__setitem__(key, value)
        self._note(key)

    def __delitem__(self, key: Any) -> None:
        super().__delitem__(key)
        self._note(key)

    def pop(self, key: Any, *default: Any) -> Any:
        self._note(key)
        return super().pop(key, *default)

    def popitem(self) -> tuple[Any, Any]:
        key, value = super().popitem()
        self._note(key)
        return key, value

    def setdefault(self, key: Any, default: Any = None) -> Any:
        if key not in self:
            self[key] = default
        return self[key]

    def update(self, *args: Any, **kw: Any) -> None:  # type: ignore[override]
        for key, value in dict(*args, **kw).items():
            self[key] = value

    def clear(self) -> None:
        for key in list(self):
            self._note(key)
        super().clear()


def _fileno(idle: Any) -> int:
    try:
        return int(idle.socket.fileno())
    except (AttributeError, OSError, ValueError):
        return -1


#: the loop states of this process, weakly (a thread's goes with it, and its epoll set with
#: it); a forked child closes the epoll sets it inherited through their objects, so that
#: nothing closes those numbers again later
_STATES: weakref.WeakSet[LoopState] = weakref.WeakSet()


def close_inherited() -> None:
    """In a freshly forked actor: close the epoll sets its parent's loops kept."""
    me = os.getpid()
    for st in list(_STATES):
        if st.pid != me and st.epoll is not None:
            st.epoll.close()
            st.epoll = None


class LoopState:
    """What one thread's loop over one transport keeps between passes.

    Two sets: the idle connections (many, one per peer; they change only when the
    tracked ``_openSockets`` says so) sit in a kept epoll set, so a pass costs nothing
    for the ones that are quiet; everything else (few, and changing every pass) is
    polled with a kept ``select.poll`` object that also watches the epoll set's own
    descriptor. ``poll`` is stateless in the kernel, so a descriptor number closed and
    reused between two passes is always polled as the file it is now; an idle
    connection leaves the epoll set when it leaves ``_openSockets``, and is registered
    again whenever its entry changes, so the same holds for those.
    """

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.poll = select.poll()
        self.registered: dict[int, int] = {}   # fd -> the mask the poll object has for it
        self.idle: dict[Any, tuple[Any, int]] = {}  # opsKey -> (IdleSocket, its fd)
        self.idle_fds: dict[int, Any] = {}     # fd -> IdleSocket
        self.extra: dict[int, int] = {}        # last pass's other descriptors -> mask
        self.dirty: set[int] = set()           # idle fds added, dropped or replaced
        self.in_epoll: set[int] = set()        # idle fds the epoll set has
        self.epoll: Any = None                 # select.epoll, made when the first idle comes
        self.rebuild = False                   # the epoll set holds a stale entry: make anew
        self.next_housekeep = 0.0

    def refresh_idle(self, opened: TrackedDict) -> None:
        for key in opened.changes(self):
            old = self.idle.pop(key, None)
            if old is not None and self.idle_fds.get(old[1]) is old[0]:
                del self.idle_fds[old[1]]
                self.dirty.add(old[1])
            idle = dict.get(opened, key)
            if idle is not None:
                fd = _fileno(idle)
                if fd >= 0:
                    self.idle[key] = (idle, fd)
                    self.idle_fds[fd] = idle
                    self.dirty.add(fd)

    def forget_fd(self, fd: int) -> None:
        idle = self.idle_fds.pop(fd, None)
        if idle is not None:
            self.idle = {k: v for k, v in self.idle.items() if v[0] is not idle}
        self.dirty.add(fd)

    def _sync_epoll(self) -> None:
        """Tell the epoll set what changed among the idle connections."""
        if self.rebuild:
            self._rebuild_epoll()
            return
        if not self.dirty:
            return
        if self.epoll is None:
            self.epoll = select.epoll()
            _STATES.add(self)
        ep, have = self.epoll, self.in_epoll
        for fd in self.dirty:
            if fd in have:  # dropped, or replaced by another socket: take the old one out first
                have.discard(fd)
                try:
                    ep.unregister(fd)
                except OSError:  # closed already: the kernel dropped it
                    pass
            if fd in self.idle_fds:
                try:
                    ep.register(fd, select.EPOLLIN)
                except FileExistsError:
                    ep.modify(fd, select.EPOLLIN)
                except OSError:  # not open any more: housekeeping drops the entry
                    continue
                have.add(fd)
        self.dirty = set()

    def _rebuild_epoll(self) -> None:
        """A fresh epoll set with exactly the idle connections of now.

        epoll drops an entry only when the last copy of its file closes: a socket we closed
        while a forked process (a tool's worker, a child not yet past its start) still held
        a copy stays in the set, reporting under a number that is no longer that socket,
        possibly ready for ever (a loop that never sleeps). Seen as an event for a number
        that is not an idle connection now, it costs one rebuild (O(idle connections)).
        """
        if self.epoll is not None:
            self.epoll.close()
        self.epoll = select.epoll()
        _STATES.add(self)
        self.in_epoll = set()
        for fd in self.idle_fds:
            try:
                self.epoll.register(fd, select.EPOLLIN)
            except OSError:  # not open any more: housekeeping drops the entry
                continue
            self.in_epoll.add(fd)
        self.dirty = set()
        self.rebuild = False

    def poll_once(self, wrecv: list[int], wsend: list[int],
                  timeout: float | None) -> tuple[list[int], list[int], list[int]]:
        """Poll the idle connections and ``wrecv``/``wsend``: (readable, writable, not open)."""
        extra: dict[int, int] = {}
        bad: list[int] = []
        for fd in wrecv:
            if fd < 0:
                bad.append(fd)
            else:
                extra[fd] = extra.get(fd, 0) | _IN
        for fd in wsend:
            if fd < 0:
                bad.append(fd)
            else:
                extra[fd] = extra.get(fd, 0) | _OUT
        if bad:
            return [], [], bad
        self._sync_epoll()
        for fd in extra:
            if fd in self.idle_fds:  # wanted for a transmit too: poll it here for both
                extra[fd] |= _IN
        ep_fd = self.epoll.fileno() if self.in_epoll else -1
        if ep_fd >= 0:
            extra[ep_fd] = _IN
        poll, registered = self.poll, self.registered
        for fd in set(self.extra).union(extra):
            mask = extra.get(fd, 0)
            if registered.get(fd) == mask:
                continue
            if mask:
                poll.register(fd, mask)
                registered[fd] = mask
            else:
                del registered[fd]
                try:
                    poll.unregister(fd)
                except KeyError:
                    pass
        self.extra = extra
        ms = None if timeout is None else 0 if timeout <= 0 else math.ceil(timeout * 1000.0)
        ready = poll.poll(ms)
        rrecv, rsend, rerr = [], [], []
        for fd, flags in ready:
            if flags & _NVAL:
                rerr.append(fd)
                continue
            if fd == ep_fd:
                for i, _events in self.epoll.poll(0):
                    if i not in self.in_epoll:
                        self.rebuild = True  # a stale entry (see _rebuild_epoll)
                    elif i not in extra:
                        rrecv.append(i)
                continue
            mask = registered.get(fd, 0)
            if mask & _IN and flags & ~_OUT:
                rrecv.append(fd)
            if mask & _OUT and flags & ~_IN:
                rsend.append(fd)
        return rrecv, rsend, rerr


def _state(transport: Any) -> LoopState:
    """This thread's loop state for ``transport`` (gone with the thread)."""
    local = transport.__dict__.get("_tv_loop")
    if local is None:
        local = transport.__dict__["_tv_loop"] = threading.local()
    st = getattr(local, "state", None)
    if st is None or st.pid != os.getpid():
        st = local.state = LoopState()
    opened = getattr(transport, "_openSockets", None)
    if opened is not None and type(opened) is dict:
        transport._openSockets = TrackedDict(opened)
    return st


def _housekeep(transport: Any) -> None:
    """Close idle connections that expired or whose socket is gone (Thespian: every pass)."""
    opened = getattr(transport, "_openSockets", None)
    if not opened:
        return
    for key, idle in list(opened.items()):
        if _fileno(idle) < 0:
            del opened[key]
        elif idle.expired():
            tcp._safeSocketShutdown(idle)
            if key in opened:
                del opened[key]


_GO_ON = object()


def _deliver_queued(transport: Any, handler: Any) -> Any:
    """Hand the envelopes queued on ``transport`` to ``handler``: what the loop must return
    (the envelope itself when there is no handler, or the handler's wish to stop), or
    ``_GO_ON``."""
    while transport._incomingEnvelopes:
        envelope = transport._incomingEnvelopes.pop(0)
        if handler is None:
            return envelope
        result = Thespian__Run_HandlerResult(handler(envelope))
        if not result:
            return result
    return _GO_ON


def run_with_expiry(self: Any, incomingHandler: Any) -> Any:  # noqa: N803 - Thespian's name
    """``TCPTransport._runWithExpiry`` with the per-pass cost of what changed (see above)."""
    T = tcp.TCPTransport
    xmitOnly = incomingHandler == TransmitOnly or isinstance(incomingHandler, TransmitOnly)

    if hasattr(self, '_aborting_run'):
        delattr(self, '_aborting_run')

    st = _state(self)

    while (not hasattr(self, '_aborting_run') or
           (self._aborting_run and
            (len(self._transmitIntents) > 0 or len(self._waitingTransmits) > 0))):

        ct = currentTime()
        if self.run_time.view(ct).expired():
            break

        if xmitOnly:
            if not self._transmitIntents and not self._waitingTransmits:
                return 0
        else:
            out = _deliver_queued(self, incomingHandler)
            if out is not _GO_ON:
                return out

        with exclusive_processing(self):
            wsend, wrecv = fmap(T._socketFile,
                                partition(T._waitForSendable,
                                          filter(lambda t: not t.backoffPause(),
                                                 self._transmitIntents.values())))
            wrecv = [fd for fd in wrecv if fd is not None]
            wsend = [fd for fd in wsend if fd is not None]
            wrecv.extend(fd for fd in self._incomingSockets
                         if fd and not self._incomingSockets[fd].backoffPause())
            opened = getattr(self, '_openSockets', None)
            if opened is not None:
                st.refresh_idle(opened)

            delays = list(filter(None,
                                 [self.run_time.view(ct).remaining()] +
                                 [self._transmitIntents[t].delay(ct) for t in self._transmitIntents] +
                                 [w.delay() for w in self._waitingTransmits] +
                                 [self._incomingSockets[i].delay(ct) for i in self._incomingSockets]))
            delay = max(0, timePeriodSeconds(min(delays))) if delays else None

            if not xmitOnly:
                wrecv.append(self.socket.fileno())
            if self._watches:
                wrecv.extend(self._watches)

        try:
            rrecv, rsend, rerr = st.poll_once(wrecv, wsend, delay)
        except InterruptedError:
            self._check_indicators()
            continue

        with exclusive_processing(self):
            if rerr:
                watches = set(self._watches or ())
                bad_watches = [fd for fd in rerr if fd in watches]
                if bad_watches:
                    for fd in bad_watches:
                        thesplog('watcher %s is bad: %s', fd, errno.errorcode[errno.EBADF])
                    self._watches = [w for w in self._watches if w not in bad_watches]
                    rerr = [fd for fd in rerr if fd not in watches]
                for fd in rerr:
                    if fd in st.idle_fds:
                        idle = st.idle_fds[fd]
                        for key in [k for k, v in st.idle.items() if v[0] is idle]:
                            if opened is not None and dict.get(opened, key) is idle:
                                del opened[key]
                    st.forget_fd(fd)
                for errfileno in rerr:
                    self._cancel_fd_ops(errfileno)

            origPendingSends = len(self._transmitIntents) + len(self._waitingTransmits)

            # The idle connections that are ready, taken before incoming and transmits are
            # handled (those may replace entries of _openSockets), as Thespian does; looked
            # at again first: another thread's transmit may have taken one during the poll.
            if opened is not None:
                st.refresh_idle(opened)
            idle_fds = st.idle_fds
            readyIdle = [idle_fds[fd] for fd in rrecv if fd in idle_fds]
            rrecv_set = set(rrecv)

            for each in rrecv:
                if each == self.socket.fileno() and not xmitOnly:
                    self._acceptNewIncoming()
                    continue
                if each in self._incomingSockets:
                    incoming = self._incomingSockets[each]
                    del self._incomingSockets[each]
                    incoming = self._handlePossibleIncoming(incoming, each, has_exclusive_flag=True)
                    if incoming:
                        self._incomingSockets[incoming.socket.fileno()] = incoming
                    continue
                if self._processIntents(each):
                    continue

            for idle in readyIdle:
                rmtaddr = idle.rmtaddr
                key = tcp.opsKey(rmtaddr)
                curOpen = getattr(self, '_openSockets', {}).get(key, None)
                if curOpen and curOpen is not idle:
                    tcp._safeSocketShutdown(idle)  # a duplicate no longer tracked
                    continue
                fnum = _fileno(idle)
                if fnum < 0 or fnum in rrecv_set:
                    if hasattr(self, '_openSockets') and key in self._openSockets:
                        del self._openSockets[key]
                    if fnum >= 0:
                        incoming = self._handlePossibleIncoming(
                            tcp.TCPIncomingPersistent(rmtaddr, idle.socket), fnum,
                            has_exclusive_flag=True)
                        if incoming:
                            self._incomingSockets[incoming.socket.fileno()] = incoming

            now = time.monotonic()
            if now >= st.next_housekeep:
                st.next_housekeep = now + HOUSEKEEP_EVERY
                _housekeep(self)

            for eachs in rsend:
                self._processIntents(eachs)

            self._processIntentTimeouts()
            rmvIncoming = []
            for i in self._incomingSockets:
                newI = self._handlePossibleIncoming(self._incomingSockets[i], -1,
                                                    has_exclusive_flag=True)
                if newI:
                    self._incomingSockets[i] = newI
                else:
                    rmvIncoming.append(i)
            for i in rmvIncoming:
                del self._incomingSockets[i]

            if self._watches:
                watchready = [w for w in self._watches if w in rrecv_set]
                if watchready:
                    self._incomingEnvelopes.append(
                        ReceiveEnvelope(self.myAddress, tcp.WatchMessage(watchready)))

        senddone = self._finished_intents
        self._finished_intents = []
        for intent, sts in senddone:
            intent.tx_done(sts)

        if not rrecv and not rsend:
            if not rerr and self.run_time.view().expired():
                return Thespian__Run_Expired()
            continue

        if xmitOnly:
            remXmits = len(self._transmitIntents) + len(self._waitingTransmits)
            if origPendingSends > remXmits or remXmits == 0:
                return remXmits

        if not xmitOnly:
            out = _deliver_queued(self, incomingHandler)
            if out is not _GO_ON:
                return out

    return Thespian__Run_Terminated() if hasattr(self, '_aborting_run') else Thespian__Run_Expired()


def install() -> bool:
    """Give Thespian's TCP transport this loop (once per process); False if switched off."""
    if os.environ.get("TOOLVISOR_LOOP", "kept") == "stock" or not hasattr(select, "poll"):
        return False
    if tcp.TCPTransport._runWithExpiry is run_with_expiry:
        return True
    tcp.TCPTransport._runWithExpiry = run_with_expiry
    return True
