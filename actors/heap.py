"""Give the C allocator's free pages back to the system after a large message.

A message larger than ``LARGE`` is copied several times on its way (packed, pickled into
Thespian's envelope, sealed, buffered for the socket), each copy a block from glibc's
heap. Freed, those blocks stay in the process: glibc returns memory only from the top of
its heap, and only above a threshold that grows with the largest block it has handed out.
A supervisor of 1,000 tools answering one ``inspect`` (240 KB) kept 1.0-1.2 MiB that way;
``malloc_trim(0)`` gave it all back, and more (issue 10, docs/benchmarks.md, scale, ninth
pass).

So every actor notes the large messages it packs or reads (``note``, from
``actors.codec``) and, ``TRIM_AFTER`` seconds after one (when the copies are gone), trims
its heap once (``trim``: about 0.1 ms at 10 MiB; 30 ms the first time for 400 MB of freed
blocks, 1 ms after). A copy still waiting for a slow reader then is not given back until
a later trim. Every ``BUSY`` deliveries of the actor's loop (messages, timers, socket
events) count as one large message: the same supervisor kept another 0.2-0.3 MiB from
spawning its tools. Nothing happens where there is no glibc.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable

LARGE = 64 * 1024   # bytes: a message this large or larger is followed by a trim
TRIM_AFTER = 0.5    # seconds from the first large message to the trim
BUSY = 1000         # deliveries handled (``handled``): as many as one large message

_large = 0    # large messages since the last ``take``
_handled = 0  # deliveries handled since the last ``BUSY`` counted as a large message


def _find_trim() -> Callable[[int], int] | None:
    try:
        fn = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to trim with
        return None
    fn.argtypes = [ctypes.c_size_t]
    fn.restype = ctypes.c_int
    return fn


_malloc_trim = _find_trim()


def note(size: int) -> None:
    """A message of ``size`` bytes was packed or read in this process."""
    global _large
    if size >= LARGE:
        _large += 1


def handled() -> bool:
    """This actor's loop handled a delivery (a message of any size, a timer, a socket event);
    True if a trim is due (a large message, or ``BUSY`` deliveries, since the last ``take``)."""
    global _handled, _large
    _handled += 1
    if _handled >= BUSY:
        _handled = 0
        _large += 1
    return _large > 0


def take() -> int:
    """How many large messages there were since the last call (and start counting again)."""
    global _large
    n, _large = _large, 0
    return n


def trim() -> bool:
    """Return the heap's free pages to the system; False if this platform cannot."""
    if _malloc_trim is None:
        return False
    _malloc_trim(0)
    return True
