"""The busy marker: what a tool is doing right now, readable without asking the tool.

A tool's process maps a 128-byte file, ``busy-<pid>`` in the system's runtime
directory, and writes into that memory (no system call) when it enters and
leaves a command, a lifecycle callback or a timer. Its supervisor reads the
file to show ``status().busy`` and to judge a hang (the watchdog): a tool stuck
in C code, or stopped with SIGSTOP, cannot answer a ping, but its marker still
says since when it has been busy.

Layout: ``since`` (float64, ``time.time()``, 0 = idle), the *work counters* (below),
``kind`` (1 byte: ``c`` command, ``l`` lifecycle callback, ``t`` timer), ``name``
(up to 86 bytes UTF-8, NUL-padded), then the *call* (9 bytes): the correlation id of
the call being served (int64, 0 for none) and a byte of flags: 1, every reply to a call
that finished before it had left the process; 2, the command may run again if the
process dies in it (it is idempotent and its policy retries a crash: ``may_rerun``);
4, the tool's door is *shut* (below).
The writer sets ``since`` last on entry and first on exit, so a reader never sees a
stale name with a fresh ``since``.

The call is how a caller whose tool died learns that its own call certainly never
started (``never_started``): the tool was busy with something else, and no reply was
still waiting in the process, so a call of this caller that had finished would have
been answered. Such a call is sent again to the next instance (issue 8, item 5).

A door that closes (the tool stops, or a pool shrinks) reads and answers 'moved' every
call that reached it, then marks the file *shut* before it hangs up: no call starts in
this process any more, and flag 1 says whether every reply got out. A call that
reached the door after its last read got no answer and certainly never ran; its caller
reads the mark (``never_started``, ``shut_clean``) and sends the call to the next
instance, at once, without waiting for the process to end. The mark stays through
whatever the process does after (its exit callbacks enter and leave as before).

After those 128 bytes comes the *batch record*: the correlation id of the batch
being served, how many of its items finished, and the encoded results of the
first of them (as many as fit in 64 KiB). The pages of a shared file outlive the
process, so a caller whose tool died in item k of a batch reads the results of
the items before k from here (memory stores again: no system call per item).

The work counters, for the accountant's usage history (``read_counters``), sit
right after ``since`` so that exit writes both with one ``pack_into``, as it wrote
``since`` alone (no system call, no new store, the same cache line; entry writes
``kind`` and ``name`` in one slice and ``since`` as before):
``busy`` (float64 seconds spent in finished commands, callbacks and timers), ``calls``
(commands finished, batch items included) and ``waiting`` (calls the tool has seen
arrive but not started, as its fast path last saw them, while it works: a lower
bound, since calls still in the socket's buffer are not counted; 0 when it is idle).
The work in progress is ``since``: a reader adds ``time.time() - since`` itself.
"""

from __future__ import annotations

import itertools
import mmap
import os
import struct
import time
from collections.abc import Callable, Iterator
from typing import Any

from actors.waits import alive

SIZE = 128
BATCH_AREA = 65536
TOTAL = SIZE + BATCH_AREA
_HEAD = struct.Struct("<ddQQc")   # since, busy seconds, calls, waiting, kind
_LEAVE = struct.Struct("<ddQQ")   # the same without kind
_BATCH = struct.Struct("<qII")   # cid, items done, bytes of results recorded
_ITEM = struct.Struct("<I")
_CALL = struct.Struct("<qB")      # the call being served, flags (below)
REPLIES_OUT = 1                   # every reply to an earlier call had left the process
RERUN = 2                         # the command may run again if the process dies in it
SHUT = 4                          # the door is shut: no call starts in this process any more
_KIND_AT = _LEAVE.size
_CALL_AT = SIZE - _CALL.size
_enter = struct.Struct("<d").pack_into
_leave = _LEAVE.pack_into
_time = time.time
KINDS = {b"c": "command", b"l": "callback", b"t": "timer"}


class Backlog:
    """Calls this process has seen arrive and not started yet (the fast path sets ``waiting``
    as it serves; the marker copies it into the counters on the next exit)."""

    __slots__ = ("waiting",)

    def __init__(self) -> None:
        self.waiting = 0


#: The one backlog of this process (a tool process has one door and one marker).
BACKLOG = Backlog()


def _unknown() -> bool:
    return False


def call_ids() -> Iterator[int]:
    """Correlation ids for the calls one process makes: ``pid << 32`` plus a count, so no two
    callers of a tool share one (a busy marker names the call it runs by its id alone)."""
    return itertools.count((os.getpid() << 32) + 1)


def marker_path(runtime_dir: str, pid: int) -> str:
    return os.path.join(runtime_dir, f"busy-{pid}")


def verdict_path(runtime_dir: str, pid: int) -> str:
    """Where a supervisor notes why it killed ``pid`` (read by callers that lost it)."""
    return os.path.join(runtime_dir, f"verdict-{pid}")


class BusyMarker:
    """The tool's side: ``enter(kind, name)`` / ``leave()``; does nothing if it has no file."""

    def __init__(self, path: str | None) -> None:
        self.map: mmap.mmap | None = None
        self._done = self._used = 0
        self._recording = False
        self.busy = self.entered = 0.0
        self.calls = 0
        self._command = False
        self._shut = 0  # SHUT once the door is shut (kept through every later entry)
        self._path = path
        self._batch_room: bool | None = None  # the batch area's pages reserved (None: not yet)
        #: Are all replies to finished calls out of this process? (the tool's door says;
        #: unknown counts as no, so that no caller resends on a guess)
        self.replies_out: Callable[[], bool] = _unknown
        if not path:
            return
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.ftruncate(fd, TOTAL)
                # The file is sparse: a write to a page a full file system (tmpfs) cannot
                # give is a SIGBUS. Reserve the first page now (no marker if it cannot be
                # had), the batch area when a batch first needs it.
                os.posix_fallocate(fd, 0, mmap.PAGESIZE)
                self.map = mmap.mmap(fd, TOTAL)
            finally:
                os.close(fd)
        except OSError:
            self.map = None

    def _reserve_batch_area(self) -> bool:
        if self._batch_room is None:
            try:
                fd = os.open(self._path or "", os.O_RDWR)
                try:
                    os.posix_fallocate(fd, 0, TOTAL)
                finally:
                    os.close(fd)
                self._batch_room = True
            except OSError:  # no room: batches are counted, their results not recorded
                self._batch_room = False
        return self._batch_room

    def enter(self, kind: str, name: str, cid: int = 0, rerun: bool = False) -> None:
        """Entering a command (of call ``cid``; ``rerun``: it may run again should this process
        die in it), a lifecycle callback or a timer."""
        m = self.map
        if m is None:
            return
        # kind and name, then the call, then since (last: see the module's docstring)
        raw = (kind[:1].encode() + name.encode("utf-8", "replace"))[: _CALL_AT - _KIND_AT]
        m[_KIND_AT:_CALL_AT] = raw.ljust(_CALL_AT - _KIND_AT, b"\0")
        _CALL.pack_into(m, _CALL_AT, cid if 0 < cid < 1 << 63 else 0,
                        (REPLIES_OUT if self.replies_out() else 0) | (RERUN if rerun else 0)
                        | self._shut)
        self.entered = now = _time()
        self._command = kind == "c"
        _enter(m, 0, now)

    def leave(self) -> None:
        m = self.map
        if m is not None:
            took = _time() - self.entered
            if took > 0:  # (a wall clock stepped back counts nothing)
                self.busy += took
            if self._command:
                self.calls += 1
                self._command = False
            _leave(m, 0, 0.0, self.busy, self.calls, BACKLOG.waiting)

    def shut(self, replies_out: bool) -> None:
        """The door is shut: no call starts in this process from now on. ``replies_out``:
        every reply it queued got out (then a call left unanswered certainly never ran)."""
        self._shut = SHUT
        self.replies_out = (lambda: True) if replies_out else _unknown
        m = self.map
        if m is not None:
            _CALL.pack_into(m, _CALL_AT, 0, SHUT | (REPLIES_OUT if replies_out else 0))

    def batch_begin(self, cid: int) -> None:
        if self.map is not None:
            self._done = self._used = 0
            self._recording = self._reserve_batch_area()
            _BATCH.pack_into(self.map, SIZE, cid, 0, 0)

    def batch_item(self, encoded: bytes | None) -> None:
        """Record one finished item. Results are a prefix: once one cannot be recorded
        (``encoded`` None, or no room left), the later ones are only counted."""
        m = self.map
        if m is None:
            return
        self._done += 1
        if self._recording:
            at = SIZE + _BATCH.size + self._used
            if encoded is None or at + _ITEM.size + len(encoded) > TOTAL:
                self._recording = False
            else:
                _ITEM.pack_into(m, at, len(encoded))
                m[at + _ITEM.size: at + _ITEM.size + len(encoded)] = encoded
                self._used += _ITEM.size + len(encoded)
        struct.pack_into("<II", m, SIZE + 8, self._done, self._used)


def read_batch(path: str, cid: int) -> tuple[int, list[bytes]] | None:
    """(items of batch ``cid`` that finished, the encoded results recorded for the first of
    them, in order); None if this file does not hold that batch."""
    try:
        with open(path, "rb") as f:
            data = f.read(TOTAL)
    except OSError:
        return None
    if len(data) < SIZE + _BATCH.size:
        return None
    got, done, used = _BATCH.unpack_from(data, SIZE)
    if got != cid:
        return None
    out, at, end = [], SIZE + _BATCH.size, min(len(data), SIZE + _BATCH.size + used)
    while at + _ITEM.size <= end:
        (size,) = _ITEM.unpack_from(data, at)
        at += _ITEM.size
        if at + size > end:
            break
        out.append(data[at:at + size])
        at += size
    return done, out


def _head(path: str) -> bytes | None:
    """The marker's first ``SIZE`` bytes; None when unreadable or too short."""
    try:
        with open(path, "rb") as f:
            data = f.read(SIZE)
    except OSError:
        return None
    return data if len(data) == SIZE else None


def _busy_head(path: str) -> tuple[bytes, float, bytes] | None:
    """The marker's first ``SIZE`` bytes, its ``since`` and ``kind``, while the tool is busy;
    None when idle, unreadable or too short."""
    data = _head(path)
    if data is None:
        return None
    since, _, _, _, kind = _HEAD.unpack_from(data, 0)
    return (data, since, kind) if since else None


def shut_clean(path: str) -> bool:
    """Is the door of the tool whose marker is at ``path`` shut with every reply out? Then
    a call of anyone's that it did not answer certainly never ran, whether or not its
    process has ended yet (no call starts after the shut)."""
    data = _head(path)
    if data is None:
        return False
    _, flags = _CALL.unpack_from(data, _CALL_AT)
    return flags & (SHUT | REPLIES_OUT) == SHUT | REPLIES_OUT


def read_marker(path: str) -> dict[str, Any] | None:
    """``{"command": name, "kind": ..., "since": t}`` while busy; None when idle or unknown."""
    head = _busy_head(path)
    if head is None:
        return None
    data, since, kind = head
    name = data[_HEAD.size:_CALL_AT].rstrip(b"\0").decode("utf-8", "replace")
    return {"command": name, "kind": KINDS.get(kind, "command"), "since": since}


def never_started(path: str, cid: int) -> bool:
    """Did the tool whose marker is at ``path`` (its process ended) certainly never start
    the call ``cid`` it did not answer? Yes only if it was busy with something else and
    every reply to a call that finished before had left the process, or if its door was
    shut with every reply out (``shut_clean``). Idle, unreadable, serving ``cid`` itself,
    or a reply still inside: no (it may have run)."""
    if cid and shut_clean(path):
        return True
    head = _busy_head(path) if cid else None
    if head is None:
        return False
    data, _, kind = head
    running, flags = _CALL.unpack_from(data, _CALL_AT)
    return bool(flags & REPLIES_OUT) and not (kind == b"c" and running == cid)


def ended(pid: int | None, within: float = 0.05) -> bool:
    """Has process ``pid`` ended? A caller's connection closes a little before the process
    is seen to end: it is looked for during ``within`` seconds at most."""
    if not pid:
        return False
    give_up = time.monotonic() + within
    while alive(pid):
        if time.monotonic() >= give_up:
            return False
        time.sleep(0.001)
    return True


def unrun(runtime_dir: str | None, pid: int | None, cid: int, within: float = 0.05) -> bool:
    """Call ``cid`` to the tool process ``pid`` got no answer and its connection closed: did
    it certainly never start? Yes if the tool's door was shut with every reply out (known at
    once, alive or not), or if the process ended (looked for during ``within`` seconds) while
    busy with something else, every earlier reply out. A live tool with its door open that
    dropped its caller may have run the call, its reply gone with the connection: no."""
    if not (runtime_dir and pid and cid):
        return False
    path = marker_path(runtime_dir, int(pid))
    return shut_clean(path) or (ended(pid, within) and never_started(path, cid))


def died_rerunnable(runtime_dir: str | None, pid: int | None, cid: int) -> bool:
    """Has process ``pid`` ended (now: ask after ``unrun``, which looked for its end) while
    running call ``cid``, a command it marked as safe to run again (``may_rerun``)?"""
    return bool(runtime_dir and pid and cid) and ended(pid, 0.0) and \
        may_rerun(marker_path(runtime_dir or "", int(pid or 0)), cid)


def may_rerun(path: str, cid: int) -> bool:
    """Did the tool whose marker is at ``path`` (its process ended) die while running call
    ``cid``, a command it marked as safe to run again (idempotent, and its policy retries a
    crash)? Then its caller may send the call to the next instance (``actors.retry``)."""
    head = _busy_head(path) if cid else None
    if head is None:
        return False
    data, _, kind = head
    running, flags = _CALL.unpack_from(data, _CALL_AT)
    return kind == b"c" and running == cid and bool(flags & RERUN)


def read_counters(fd: int) -> tuple[float, int, int] | None:
    """``(busy seconds, calls, waiting)`` from an open marker file (one ``pread``); the busy
    time includes the work in progress up to now. None if the file is too short (yet)."""
    try:
        data = os.pread(fd, _LEAVE.size, 0)
    except OSError:
        return None
    if len(data) < _LEAVE.size:
        return None
    since, busy, calls, waiting = _LEAVE.unpack(data)
    if since:
        busy += max(0.0, time.time() - since)
    else:
        waiting = 0  # an idle tool has nothing waiting that it read (the figure is from its last call)
    return busy, calls, waiting
