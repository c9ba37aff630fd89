"""The wait board: which tool is blocked in a ``call`` on which, to catch deadlocks.

Two checks together catch every cycle of tools blocked in ``call``:

1. **Along the call chain, at once.** A tool-to-tool ``Call`` carries the paths
   of the tools waiting for it (its wait path). A tool that serves such a call
   and calls a tool already on that path would wait for itself: it is refused
   before anything is sent (``a -> b -> a``; ``a -> a`` for a tool calling itself).
2. **On the board, within milliseconds.** Cycles of *independent* calls (a, busy
   with one call, calls b while b, busy with another, calls a) are not on any
   one chain. A caller whose answer has not come within ``REGISTER_AFTER`` writes
   one entry, ``<runtime dir>/waits/<its path>``: whom it waits for and since
   when. Every entry has one writer (the waiting tool) and is replaced
   atomically; no locks. While it waits, the caller follows the entries from its
   callee every ``RECHECK`` seconds; if they lead back to itself in two walks in
   a row, the edge that was added last (the youngest call) closed the cycle, and
   its caller refuses it with ``DeadlockError``. That call is still queued at its callee, unrun:
   the caller marks it abandoned, and the callee drops it instead of running it.

Fast calls (answered within ``REGISTER_AFTER``, 3 ms) never touch the board.
"""

from __future__ import annotations

import json
import os
import socket
import time
from urllib.parse import quote

WAITS = "waits"
#: Seconds a call may wait before it goes on the board. Not shorter: on Linux a wait of 1 ms
#: or less for the answer made every fast call ~14 µs slower (measured; 2 ms sometimes, 3 ms not).
REGISTER_AFTER = 0.003
RECHECK = 0.002          # seconds between walks of the board while waiting
CONFIRM = 0.0005         # ... and before the second walk that confirms a cycle
MAX_HOPS = 256


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie, dead but not yet reaped by its parent, is not)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except FileNotFoundError:
        return False
    except OSError:  # no /proc: ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    end = stat.rfind(b")")
    return stat[end + 2:end + 3] not in (b"Z", b"X")


def cycle_text(cycle: list[str]) -> str:
    return " -> ".join(cycle)


class WaitBoard:
    """One tool's view of the board: its own entry, and walks over the others'."""

    def __init__(self, runtime_dir: str, me: str) -> None:
        self.dir = os.path.join(runtime_dir, WAITS)
        self.me = me
        self.mine = self._file(me)
        os.makedirs(self.dir, exist_ok=True)

    def _file(self, path: str) -> str:
        return os.path.join(self.dir, quote(path, safe="") or "%root")

    def enter(self, target: str, since: float, cid: int) -> None:
        """I am blocked in a call to ``target`` since ``since`` (wall clock)."""
        tmp = self.mine + ".tmp"
        with open(tmp, "w") as f:
            json.dump([target, since, os.getpid(), cid], f)
        os.replace(tmp, self.mine)

    def leave(self) -> None:
        try:
            os.unlink(self.mine)
        except FileNotFoundError:
            pass

    def _read(self, path: str) -> tuple[str, float] | None:
        try:
            with open(self._file(path)) as f:
                target, since, pid, _cid = json.load(f)
        except (OSError, ValueError, TypeError):
            return None
        if not alive(int(pid)):  # left behind by a tool that died while waiting
            return None
        return str(target), float(since)

    def closing_cycle(self, target: str, since: float) -> list[str] | None:
        """The cycle my call to ``target`` (made at ``since``) closes, if it is the youngest
        edge of a cycle through me; else None (no cycle, or an older member refuses)."""
        cycle = [self.me, target]
        youngest = since
        node = target
        for _ in range(MAX_HOPS):
            edge = self._read(node)
            if edge is None:
                return None
            node, when = edge
            if when > youngest:
                return None  # another call in the cycle is younger: its caller refuses it
            cycle.append(node)
            if node == self.me:
                return cycle
            if node in cycle[:-1]:
                return None  # a cycle that does not pass through me: its members catch it
        return None

    def abandon(self, pid: int, cid: int) -> None:
        """Mark call ``cid`` of process ``pid`` as given up: its callee must not run it."""
        with open(os.path.join(self.dir, f"abandoned-{pid}-{cid}"), "w"):
            pass


def abandoned(runtime_dir: str, caller: int, cid: int, sock: socket.socket | None = None) -> bool:
    """Should a queued tool-to-tool call be dropped: its caller is gone, or withdrew it.

    With the caller's connection (``sock``) at hand, a hang-up waiting behind the call
    says the caller is gone (a caller blocked in ``call`` sends nothing after it; one
    system call); without it, the caller's pid is looked up.
    """
    if sock is not None:
        try:
            behind = sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            behind = None   # connection open, nothing behind the call: the caller waits
        except OSError:
            return True
        if behind == b"" or (behind and caller and not alive(caller)):
            return True     # hung up (or more bytes behind it, e.g. a long frame: ask the pid)
    elif caller and not alive(caller):
        return True
    marker = os.path.join(runtime_dir, WAITS, f"abandoned-{caller}-{cid}")
    try:
        os.unlink(marker)
    except OSError:
        return False
    return True


def now() -> float:
    return time.time()
