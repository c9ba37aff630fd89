"""msgpack form of the messages in ``actors.messages``.

A message is packed as ``[tag, field, field, ...]`` (positional, no keys).
Values the transport needs that msgpack cannot carry (actor addresses) are
packed as msgpack extension types registered by the transport seam.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import msgpack

from actors.errors import MalformedMessage
from actors.messages import REGISTRY, shape_problem

_EXT_PACK: list[tuple[type, int, Callable[[Any], bytes]]] = []
_EXT_UNPACK: dict[int, Callable[[bytes], Any]] = {}


def register_ext(kind: type, code: int, pack: Callable[[Any], bytes],
                 unpack: Callable[[bytes], Any]) -> None:
    """Teach the codec to carry objects of ``kind`` as extension ``code``."""
    if code not in _EXT_UNPACK:
        _EXT_PACK.append((kind, code, pack))
        _EXT_UNPACK[code] = unpack


def _default(obj: Any) -> Any:
    for kind, code, pack in _EXT_PACK:
        if isinstance(obj, kind):
            return msgpack.ExtType(code, pack(obj))
    if isinstance(obj, (set, frozenset)):
        return list(obj)
    if isinstance(obj, int):  # msgpack calls us for integers out of its range
        raise OverflowError(f"the integer {obj} is too large for the wire: integers from -2**63 to "
                            "2**64-1 can be sent; send a larger one as a string")
    raise TypeError(f"cannot send a value of type {type(obj).__name__}; "
                    "send plain data (dict, list, str, bytes, int, float, bool, None)")


def _ext_hook(code: int, data: bytes) -> Any:
    unpack = _EXT_UNPACK.get(code)
    if unpack is None:
        return msgpack.ExtType(code, data)
    return unpack(data)


_local = threading.local()


def _packer() -> msgpack.Packer:
    packer = getattr(_local, "packer", None)
    if packer is None:  # one per thread: a Packer is not safe to share
        packer = _local.packer = msgpack.Packer(default=_default, use_bin_type=True)
    return packer


def pack_value(value: Any) -> bytes:
    packer = _packer()
    try:
        return packer.pack(value)
    except BaseException:
        packer.reset()  # drop whatever a failed pack left in its buffer
        raise


def unpack_value(data: bytes) -> Any:
    return msgpack.unpackb(data, ext_hook=_ext_hook, raw=False, strict_map_key=False)


def encode(msg: Any) -> bytes:
    """Pack a registered message; raises ``TypeError`` naming an unsendable value
    (``OverflowError`` for an integer out of msgpack's range)."""
    cls = type(msg)
    return pack_value([cls.TAG, *[getattr(msg, f) for f in cls.FIELDS]])


def decode(data: Any) -> Any:
    """Unpack bytes into a message; raises ``MalformedMessage`` saying why not."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise MalformedMessage(f"expected msgpack bytes, got {type(data).__name__}")
    try:
        items = unpack_value(data)
    except Exception as exc:  # msgpack raises several unrelated types
        raise MalformedMessage(f"undecodable message ({len(data)} bytes): {exc}")
    if not isinstance(items, list) or not items or not isinstance(items[0], int):
        raise MalformedMessage("a message must be a msgpack array starting with its tag")
    cls = REGISTRY.get(items[0])
    if cls is None:
        raise MalformedMessage(f"unknown message tag {items[0]}")
    try:
        msg = cls(*items[1:])
    except TypeError as exc:
        raise _malformed(f"bad fields for {cls.__name__}: {exc}", items)
    problem = shape_problem(msg)
    if problem is not None:
        raise _malformed(f"bad fields for {cls.__name__}: {problem}", items)
    return msg


def _malformed(text: str, items: list[Any]) -> MalformedMessage:
    """The error, carrying the message's correlation id when it has a usable one."""
    exc = MalformedMessage(text)
    exc.cid = items[1] if len(items) > 1 and type(items[1]) is int and items[1] > 0 else None
    return exc
