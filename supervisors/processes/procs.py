"""Facts about OS processes: is a pid alive, who is in a process group, end them.

Standard library only (psutil is imported lazily by ``kill_tree``), because
the reaper script imports this module too and must start fast.
"""

from __future__ import annotations

import os
import signal
import time


def _stat(pid: int | str) -> bytes | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read()
    except OSError:
        return None


def _fields(stat: bytes) -> list[bytes]:
    """Fields after the command name: [state, ppid, pgrp, ...]."""
    return stat[stat.rindex(b")") + 2:].split()


def parent_pid(pid: int | str) -> int | None:
    """The parent of ``pid`` (from /proc), or None if it cannot be read."""
    stat = _stat(pid)
    return None if stat is None else int(_fields(stat)[1])


def pid_alive(pid: int | None) -> bool:
    """True while ``pid`` runs; a zombie (dead, not yet reaped) counts as dead."""
    if not pid:
        return False
    stat = _stat(pid)
    if stat is None:
        if os.path.isdir("/proc/self"):
            return False
        try:  # no /proc (not Linux): ask the kernel directly
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return _fields(stat)[0] not in (b"Z", b"X")


def session_pids(sid: int) -> list[int]:
    """Live (non-zombie) processes in session ``sid``.

    The actor system's admin starts a session; every actor, and whatever tools
    start (in their own process groups), stays in it.
    """
    if not os.path.isdir("/proc/self"):
        try:
            os.killpg(sid, 0)
        except ProcessLookupError:
            return []
        return [sid]
    out = []
    key = str(sid).encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        stat = _stat(entry)
        if stat is None:
            continue
        fields = _fields(stat)
        if fields[3] == key and fields[0] not in (b"Z", b"X"):
            out.append(int(entry))
    return out


def reap(pid: int) -> None:
    """Collect a child of this process that has ended (no-op if it is not ours)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def end_session(sid: int, grace: float = 1.0) -> bool:
    """SIGTERM every process of session ``sid``, SIGKILL what is left after ``grace``.

    Returns True once the session is empty.
    """
    reap(sid)
    if not session_pids(sid):
        return True
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in session_pids(sid):
            try:
                os.kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            reap(sid)
            if not session_pids(sid):
                return True
            time.sleep(0.02)
    return not session_pids(sid)


def kill_tree(pid: int | None, sig: int = signal.SIGKILL) -> list[int]:
    """Send ``sig`` to ``pid`` and all its descendants; return the pids signalled."""
    if not pid:
        return []
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [*root.children(recursive=True), root]
    except psutil.Error:
        return []
    hit = []
    for p in procs:
        try:
            os.kill(p.pid, sig)
            hit.append(p.pid)
        except OSError:
            pass
    return hit
