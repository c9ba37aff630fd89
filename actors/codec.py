"""msgpack form of the messages in ``actors.messages``.

A message is packed as ``[tag, field, field, ...]`` (positional, no keys).
Values the transport needs that msgpack cannot carry (actor addresses) are
packed as msgpack extension types registered by the transport seam. A ``LazyList``
is packed one item at a time and arrives as a plain list.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import msgpack

from actors import heap
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


_local = threading.local()
#: A packer's first buffer. msgpack's default is 256 KiB, which the process then kept in
#: every thread that packed (one buffer for messages, one for ``LazyList`` items), up to
#: the largest message it ever packed: a 1,000-child supervisor's ``inspect`` (240 KB)
#: left it 0.25 MiB larger, for good (issue 10). The buffer grows as a message needs; the
#: reused packer of ``pack_value`` is dropped after a large message (``heap.LARGE``), so
#: what it grew to goes back to the allocator (a new packer costs about 0.15 us). One kept
#: may still hold up to about twice that (msgpack doubles a buffer it grows), and one whose
#: pack failed is kept whatever it grew to.
PACKER_BUFFER = 16 * 1024
LAZY_LIST_EXT = 2  # (1 is an actor address, actors.shell)


class LazyList(Sequence[Any]):
    """A list of ``make(x)`` for each ``x`` of ``source``, each item made only as it is
    packed (and dropped before the next); it arrives as a plain list.

    A supervisor answers a status with the name and kind of each of a child supervisor's
    children, and ``inspect`` with the status of each of its own: as a list of dicts made
    at once, 1,000 children took the root 0.4 MiB (and their supervisor about 1 MiB) that
    the allocator then kept, its pools pinned by the objects made in between (issue 10,
    docs/benchmarks.md, scale, eighth pass). Read in the same process, it is a sequence like
    any other (the items made again on each use)."""

    __slots__ = ("_source", "_make")

    def __init__(self, source: Sequence[Any], make: Callable[[Any], Any]) -> None:
        self._source = source
        self._make = make

    def __iter__(self) -> Iterator[Any]:
        return map(self._make, self._source)

    def __len__(self) -> int:
        return len(self._source)

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return [self._make(x) for x in self._source[index]]
        return self._make(self._source[index])

    def __eq__(self, other: object) -> bool:
        if isinstance(other, LazyList | list | tuple):
            return list(self) == list(other)
        return NotImplemented

    def __repr__(self) -> str:
        return f"LazyList({list(self)!r})"


def _pack_lazy(value: LazyList) -> bytes:
    source = list(value._source)  # (its length is written first: fixed now)
    # Packed apart from the message holding it (whose packer is in the middle of it), by a
    # packer of its own, let go with its buffer once done.
    packer = msgpack.Packer(default=_default, use_bin_type=True, autoreset=False,
                            buf_size=PACKER_BUFFER)
    packer.pack_array_header(len(source))
    for x in source:
        packer.pack(value._make(x))
    data = packer.bytes()
    heap.note(len(data))
    return data


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


register_ext(LazyList, LAZY_LIST_EXT, _pack_lazy, lambda data: unpack_value(data))


def _ext_hook(code: int, data: bytes) -> Any:
    unpack = _EXT_UNPACK.get(code)
    if unpack is None:
        return msgpack.ExtType(code, data)
    return unpack(data)


def _packer() -> msgpack.Packer:
    packer = getattr(_local, "packer", None)
    if packer is None:  # one per thread: a Packer is not safe to share
        packer = _local.packer = msgpack.Packer(default=_default, use_bin_type=True,
                                                buf_size=PACKER_BUFFER)
    return packer


def pack_value(value: Any) -> bytes:
    packer = _packer()
    try:
        data = packer.pack(value)
    except BaseException:
        packer.reset()  # drop whatever a failed pack left in its buffer
        raise
    if len(data) >= heap.LARGE:
        heap.note(len(data))
        _local.packer = None  # (its buffer grew: let it go)
    return data


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
    if len(data) >= heap.LARGE:
        heap.note(len(data))
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
