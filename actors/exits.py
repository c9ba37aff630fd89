"""Thespian's bookkeeping of a child's exit, without a pass over every other child.

On each exit notice Thespian's actor (1) rebuilds its list of child addresses,
comparing each with the dead one through ``ActorAddress.__ne__`` (an address
manager lookup and an IP-tuple compare, about 2 us each), and (2) asks every
child process it has whether it is still alive. With 1,000 children that made
each exit O(N) and the shutdown of one supervisor's 1,000 tools quadratic: the
two took 38 % of that supervisor's CPU while it stopped them (issue 10, py-spy).

``install()`` replaces both, in every process forked after it:

- the list is filtered with a pre-check: two TCP addresses whose ports differ
  (neither 0) are different, which is what Thespian's comparison would find;
  any other pair is still compared by Thespian;
- only the child the notice names is checked for liveness, and none when our
  process witness (or Thespian's SIGCHLD pass) sent the notice after taking
  that child out of the list itself (``reaped``). The full pass still runs
  when a notice names no child Thespian knows of, but at most once every
  ``SWEEP_EVERY`` seconds: it is only a safety net for a missed SIGCHLD, and
  the process witness is the first one;
- a child found dead, whichever way, has its real address let go of
  (``_let_go``): Thespian kept every child's address forever.

It also replaces the search on a child's first word (``EndpointConnected``): Thespian
looked for the child's record from the oldest child on, reading the message's
``childInstance`` through two properties at each, so the N-th spawn of one supervisor
cost N steps (about 0.1 us each: 0.1 ms per spawn at 1,000 children; cProfile, issue
10). The child that connects is almost always the newest, so the search now starts
from the end (``_connected``); the answer is the same record.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from thespian.actors import ActorAddress
from thespian.system.addressManager import ActorLocalAddress
from thespian.system.multiprocCommon import MultiProcReplicator
from thespian.system.systemCommon import systemCommonBase
from thespian.system.transport.IPBase import IPActorAddress, TCPv4ActorAddress
from thespian.system.utilis import thesplog

SWEEP_EVERY = 1.0  # seconds between two full liveness passes on unmatched exit notices
_PORT = "_toolvisor_port"  # an address's port, kept on it once known (it never changes)

_installed = False


def port_of(address: Any) -> int | None:
    """The TCP port an actor address stands for (a placeholder's once known), else None."""
    port = getattr(address, _PORT, None)
    if port is not None:
        return port
    details = getattr(address, "addressDetails", None)
    placeholder = isinstance(details, ActorLocalAddress)
    if placeholder:  # (its real address may still change: never kept on it)
        try:
            real = details.addressManager._managed[details.addressInstanceNum]
        except (AttributeError, IndexError, TypeError):
            return None
        details = getattr(real, "addressDetails", None)
    if not isinstance(details, IPActorAddress):
        return None
    try:
        port = details.sockname[1] or None
    except (AttributeError, IndexError, TypeError):
        return None
    if port is not None and not placeholder:
        try:
            setattr(address, _PORT, port)
        except AttributeError:
            pass
    return port


def without(children: list[Any], gone: Any) -> list[Any]:
    """``[c for c in children if c != gone]``, comparing by port first."""
    port = port_of(gone)
    if port is None:
        return [c for c in children if c != gone]
    kept = []
    for c in children:
        other = getattr(c, _PORT, None) or port_of(c)
        if (other is not None and other != port) or c != gone:
            kept.append(c)
    return kept


def _instance(info: Any) -> int | None:
    """The number of the placeholder Thespian gave the child ``info`` at its creation."""
    return getattr(getattr(info.childAddr, "addressDetails", None), "addressInstanceNum", None)


def reaped(manager: Any, info: Any) -> Any:
    """The actor ``manager`` took the child ``info`` (one of its ``_child_procs``) out of
    that list itself and is about to send itself the exit notice: when the notice comes
    there is nothing left to look for. Returns the address the notice is to carry."""
    address = getattr(info, "childRealAddr", None) or info.childAddr
    port = port_of(address)
    if port is not None:
        manager.__dict__.setdefault("_toolvisor_reaped", {})[port] = _instance(info)
    return address


_dead: Any = None


def _dead_address() -> Any:
    """Where a dead child's placeholder leads once its real address is let go: a port
    nothing listens on (TCP port 1), so a late send fails as one to a dead actor does."""
    global _dead
    if _dead is None:
        _dead = ActorAddress(TCPv4ActorAddress("127.0.0.1", 1))
    return _dead


def _let_go(manager: Any, instance: int | None) -> None:
    """Thespian keeps the real address of every child an actor ever created, by the
    number of its placeholder, with two bound methods on it: about 1.4 KiB per child
    ever started (a supervisor restarting a tool once a minute grew by 2 MiB a day).
    Once the child's exit is handled its slot is pointed at ``_dead_address()``."""
    managed = getattr(getattr(manager, "_addrManager", None), "_managed", None)
    if instance is not None and managed is not None and 0 <= instance < len(managed):
        managed[instance] = _dead_address()


def _named(procs: list[Any], gone: Any) -> int | None:
    """Where in Thespian's ``_child_procs`` the child at address ``gone`` is, if there
    (searched from the end: a tree stops its children last started first)."""
    port = port_of(gone)
    for i in range(len(procs) - 1, -1, -1):
        info = procs[i]
        addr = getattr(info, "childRealAddr", None) or info.childAddr  # (placeholder: not connected)
        if port is not None:
            other = getattr(addr, _PORT, None) or port_of(addr)
            if other is not None and other != port:
                continue
        if addr == gone or (addr is not info.childAddr and info.childAddr == gone):
            return i
    return None


def _connected(procs: list[Any], instance: Any) -> Any:
    """The record in Thespian's ``_child_procs`` of the child whose ``childNum`` is
    ``instance``, or None; searched from the end (the newest child connects first)."""
    for i in range(len(procs) - 1, -1, -1):
        if procs[i].childNum == instance:
            return procs[i]
    return None


def install() -> None:
    """Patch Thespian's exit handling (once per process; inherited by forked actors)."""
    global _installed
    if _installed:
        return
    original_sweep = MultiProcReplicator._childExited

    def _handleChildExited(self: Any, childAddress: Any) -> bool:
        # Thespian 4.0.1's systemCommonBase._handleChildExited, with ``without``.
        self._sCBStats.inc('Common.Message Received.Child Actor Exited')
        self.transport.deadAddress(self._addrManager, childAddress)
        mine = self.__dict__.get("_toolvisor_reaped")
        port = port_of(childAddress) if mine else None
        reaped_here = port is not None and port in mine
        if not reaped_here:  # (otherwise it was taken out of _child_procs already)
            self._childExited(childAddress)
        self._children = without(self._children, childAddress)
        if reaped_here:
            _let_go(self, mine.pop(port))
        if hasattr(self, '_exiting') and not self._children:
            if not hasattr(self, '_exitedAlready'):
                self._exitedAlready = True
                self._sayGoodbye()
                self.transport.abort_run(drain=True)
            return False
        return True

    def _childExited(self: Any, childAddr: Any) -> None:
        procs = getattr(self, '_child_procs', None)
        if not procs:
            return
        at = _named(procs, childAddr)
        if at is not None:
            if not self._checkChildLiveness(procs[at]):
                _let_go(self, _instance(procs.pop(at)))
            return
        now = time.monotonic()
        if now - getattr(self, '_toolvisor_swept', float("-inf")) >= SWEEP_EVERY:
            self._toolvisor_swept = now
            original_sweep(self, childAddr)

    original_child_died = MultiProcReplicator.childDied

    def childDied(self: Any) -> bool:
        # Thespian's SIGCHLD pass: the children it finds dead get their exit notices
        # now, and are let go of as our witness's are when those are handled.
        before = list(getattr(self, '_child_procs', None) or ())
        result = original_child_died(self)
        if before:
            left = {id(info) for info in getattr(self, '_child_procs', None) or ()}
            for info in before:
                if id(info) not in left:
                    reaped(self, info)
        return result

    def h_EndpointConnected(self: Any, envelope: Any) -> bool:  # noqa: N802 - Thespian's name
        # Thespian 4.0.1's MultiProcReplicator.h_EndpointConnected, with ``_connected``.
        instance = envelope.message.childInstance
        info = _connected(getattr(self, '_child_procs', None) or [], instance)
        if info is not None:
            info.childRealAddr = envelope.sender
        else:
            thesplog('Unknown child process endpoint connected: %s', envelope,
                     level=logging.WARNING)
        self._pendingActorReady(instance, envelope.sender)
        return True

    systemCommonBase._handleChildExited = _handleChildExited  # type: ignore[method-assign]
    MultiProcReplicator._childExited = _childExited  # type: ignore[method-assign]
    MultiProcReplicator.childDied = childDied  # type: ignore[method-assign]
    MultiProcReplicator.h_EndpointConnected = h_EndpointConnected  # type: ignore[method-assign]
    _installed = True
