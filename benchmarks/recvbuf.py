"""Diagnostic: what a large per-call ``recv`` buffer costs (``python -m benchmarks.recvbuf``).

The fast path reads each reply with ``sock.recv(262144)`` (host) and each
request with ``recv(READ_CHUNK)`` = 256 KiB (tool). CPython allocates the full
256 KiB for every call and shrinks it afterwards; glibc serves a block that
size with ``mmap`` (or grows and trims the heap), so each call pays system
calls and page faults whether or not the message is 30 bytes. Whether it
happens depends on glibc's malloc history in that process (its mmap threshold
moves), which is why the fast-path p50 flips between ~0.055 and ~0.1 ms from
one process layout to the next. This script shows the cost on a socketpair,
without toolvisor; run it also with ``MALLOC_MMAP_THRESHOLD_=131072``.
"""

from __future__ import annotations

import socket
import time

MESSAGE = b"x" * 30


def per_message_us(size: int, n: int = 20_000) -> float:
    """Mean microseconds for one send of 30 bytes plus one ``recv(size)``."""
    a, b = socket.socketpair()
    try:
        t0 = time.perf_counter()
        for _ in range(n):
            a.send(MESSAGE)
            b.recv(size)
        return (time.perf_counter() - t0) / n * 1e6
    finally:
        a.close()
        b.close()


def main() -> None:
    for size in (262_144, 65_536, 262_144, 65_536):
        print(f"recv({size:7d}) per 30-byte message: {per_message_us(size):6.2f} us")


if __name__ == "__main__":
    main()
