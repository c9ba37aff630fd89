"""The busy marker: what a tool is doing right now, readable without asking the tool.

A tool's process maps a 128-byte file, ``busy-<pid>`` in the system's runtime
directory, and writes into that memory (no system call) when it enters and
leaves a command, a lifecycle callback or a timer. Its supervisor reads the
file to show ``status().busy`` and to judge a hang (the watchdog): a tool stuck
in C code, or stopped with SIGSTOP, cannot answer a ping, but its marker still
says since when it has been busy.

Layout: ``since`` (float64, ``time.time()``, 0 = idle), ``kind`` (1 byte: ``c``
command, ``l`` lifecycle callback, ``t`` timer), ``name`` (up to 119 bytes UTF-8,
NUL-padded). The writer sets ``since`` last on entry and first on exit, so a
reader never sees a stale name with a fresh ``since``.
"""

from __future__ import annotations

import mmap
import os
import struct
import time
from typing import Any

SIZE = 128
_HEAD = struct.Struct("<dc")
KINDS = {b"c": "command", b"l": "callback", b"t": "timer"}


def marker_path(runtime_dir: str, pid: int) -> str:
    return os.path.join(runtime_dir, f"busy-{pid}")


def verdict_path(runtime_dir: str, pid: int) -> str:
    """Where a supervisor notes why it killed ``pid`` (read by callers that lost it)."""
    return os.path.join(runtime_dir, f"verdict-{pid}")


class BusyMarker:
    """The tool's side: ``enter(kind, name)`` / ``leave()``; does nothing if it has no file."""

    def __init__(self, path: str | None) -> None:
        self.map: mmap.mmap | None = None
        if not path:
            return
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.ftruncate(fd, SIZE)
                self.map = mmap.mmap(fd, SIZE)
            finally:
                os.close(fd)
        except OSError:
            self.map = None

    def enter(self, kind: str, name: str) -> None:
        m = self.map
        if m is None:
            return
        raw = name.encode("utf-8", "replace")[: SIZE - _HEAD.size]
        m[_HEAD.size:] = raw.ljust(SIZE - _HEAD.size, b"\0")
        _HEAD.pack_into(m, 0, time.time(), kind[:1].encode())

    def leave(self) -> None:
        if self.map is not None:
            struct.pack_into("<d", self.map, 0, 0.0)


def read_marker(path: str) -> dict[str, Any] | None:
    """``{"command": name, "kind": ..., "since": t}`` while busy; None when idle or unknown."""
    try:
        with open(path, "rb") as f:
            data = f.read(SIZE)
    except OSError:
        return None
    if len(data) < SIZE:
        return None
    since, kind = _HEAD.unpack_from(data, 0)
    if not since:
        return None
    name = data[_HEAD.size:].rstrip(b"\0").decode("utf-8", "replace")
    return {"command": name, "kind": KINDS.get(kind, "command"), "since": since}
