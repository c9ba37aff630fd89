"""One ``TCPv4ActorAddress`` per actor address in a process, shared by every copy of it.

A supervisor holds each child's address three times over: in Thespian's list of its
children (unpickled from the child's EndpointConnected), in the idle connection it keeps
to the child (unpickled from the sender of the child's first message), and in its own
child record (msgpack, from the child's ``Alive``). Each was its own TCPv4ActorAddress
with its own dict, tuples and strings: about 0.35 KiB each, 0.7 KiB of a supervisor's
memory per child beyond the first copy (issue 10); every message's sender was one more,
made and dropped.

Thespian never changes a TCPv4ActorAddress once it is made (its ``str()`` is cached on
it, which is the same for every copy), so ``install()`` has one pickled rebuilt through
``_shared``, which hands out the one this process already holds for the same fields (a
weak table: an address nobody holds any more is gone from it). Only a plain
TCPv4ActorAddress with exactly Thespian's fields is pickled that way; any other (its
routed and admin subclasses, one with other attributes) pickles as before. Both ends of
every frame are toolvisor processes (``actors.wire_auth``), so every reader has this
module. ``known`` gives the shared one for a msgpack address (``actors.shell``).

Thespian's address manager also gave every address it handles two bound methods of its
own (``eqOverride`` and ``__getstate__``, 64 bytes each, and a reference cycle): a
supervisor keeps three such addresses per child (Thespian's local one, the child's real
one, the idle connection's), and every message's sender was given two more. ``install()``
has it change the address's class instead (``_Imported``, ``_Local``: the same two
methods, on the class, reading the manager from one attribute); pickled or copied, such an
address is a plain ``ActorAddress`` with the state Thespian's ``__getstate__`` gives.
"""

from __future__ import annotations

import copyreg
import sys
import weakref
from typing import Any

from thespian.actors import ActorAddress
from thespian.system import addressManager
from thespian.system.transport.IPBase import TCPv4ActorAddress

_FIELDS = ("af", "socktype", "proto", "sockname", "bindname")
_CACHED = "_str_form"  # (Thespian's cached str(); never pickled)

_shared: weakref.WeakValueDictionary[tuple[Any, ...], TCPv4ActorAddress] = \
    weakref.WeakValueDictionary()
_by_sockname: weakref.WeakValueDictionary[Any, TCPv4ActorAddress] = weakref.WeakValueDictionary()
_installed = False


def _shared_address(af: Any, socktype: Any, proto: Any, sockname: Any,
                    bindname: Any) -> TCPv4ActorAddress:
    """The TCPv4ActorAddress with these fields: the one this process holds, or a new one."""
    key = (af, socktype, proto, sockname, bindname)
    try:
        addr = _shared.get(key)
    except TypeError:  # (an unhashable field: not one Thespian makes)
        addr = None
        key = None  # type: ignore[assignment]
    if addr is not None:
        return addr
    if isinstance(sockname, tuple) and sockname and isinstance(sockname[0], str):
        sockname = (sys.intern(sockname[0]), *sockname[1:])  # (one '127.0.0.1' for all)
    addr = TCPv4ActorAddress.__new__(TCPv4ActorAddress)
    addr.af, addr.socktype, addr.proto = af, socktype, proto
    addr.sockname = sockname
    addr.bindname = sockname if bindname == sockname else bindname
    if key is not None:
        _shared[key] = addr
        _by_sockname[sockname] = addr
    return addr


def _reduce_ex(self: Any, protocol: Any) -> Any:
    state = self.__dict__
    if type(self) is not TCPv4ActorAddress or len(state) - (_CACHED in state) != len(_FIELDS) \
            or any(name not in state for name in _FIELDS):
        return object.__reduce_ex__(self, protocol)  # (as Thespian pickles it)
    return _shared_address, tuple(state[name] for name in _FIELDS)


def known(ip: str, port: int) -> TCPv4ActorAddress | None:
    """The TCPv4ActorAddress this process holds for the actor at ``ip:port``, if any. (Its
    ``bindname`` may differ from one made here; it is only used by the actor it names, to
    bind its own socket.)"""
    try:
        return _by_sockname.get((ip, port))
    except TypeError:
        return None


class _Managed(ActorAddress):
    """An address Thespian's manager ``_am`` has seen (not made directly: see install)."""

    _am: Any
    _state: Any  # Thespian's __getstate__ for it

    def eqOverride(self, other: Any) -> bool:  # noqa: N802 - Thespian's name
        return bool(self._am.compareAddressEq(self, other))

    def __getstate__(self) -> Any:  # type: ignore[override]
        state = type(self)._state(self)
        if isinstance(state, dict) and "_am" in state:
            state = {k: v for k, v in state.items() if k != "_am"}
        return state

    def __reduce_ex__(self, protocol: Any) -> Any:  # (a plain ActorAddress on the other end)
        return copyreg._reconstructor, (ActorAddress, object, None), self.__getstate__()


class _Imported(_Managed):
    """A directly useable address (Thespian's ``importAddr``)."""

    _state = staticmethod(addressManager._pickle_clean)


class _Local(_Managed):
    """An address of a child still being created (Thespian's ``getLocalAddress``)."""

    _state = staticmethod(addressManager._pickle_if_translation)


def _import_addr(self: Any, addr: Any) -> None:
    if type(addr) is ActorAddress or isinstance(addr, _Managed):
        addr.__class__ = _Imported
        addr._am = self
    else:  # (a subclass of Thespian's or another's: as Thespian does it)
        _thespian_import(self, addr)
        return
    if addr in self._deadAddrs:
        del self._deadAddrs[self._deadAddrs.index(addr)]


def _get_local_address(self: Any, instance: int) -> Any:
    addr = _Local(addressManager.ActorLocalAddress(self._thisActorAddr, instance, self))
    addr._am = self
    return addr


_thespian_import = addressManager.ActorAddressManager.importAddr


def install() -> None:
    """Pickle a TCPv4ActorAddress as its fields, rebuilt as this process's shared one.
    Call before the actor system forks anything (every process then has it)."""
    global _installed
    if _installed:
        return
    TCPv4ActorAddress.__reduce_ex__ = _reduce_ex  # type: ignore[method-assign,assignment]
    addressManager.ActorAddressManager.importAddr = _import_addr  # type: ignore[method-assign]
    addressManager.ActorAddressManager.getLocalAddress = _get_local_address  # type: ignore[method-assign]
    _installed = True
