"""The orphan reaper: a tiny watcher process that outlives a host that dies.

Started by ``ToolSystem`` in its own session, it polls the host's pid; if the
host disappears without shutting its actor system down (SIGKILL, a crash), it
ends the actor system's whole process group. It exits by itself once that
group is empty. It runs as a plain script (``python reaper.py HOST_PID PGID``)
so it starts fast and imports nothing but ``procs``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

try:
    from supervisors.procs import end_group, group_pids, pid_alive
except ImportError:  # run as a script: this file's folder is on sys.path
    from procs import end_group, group_pids, pid_alive  # type: ignore[no-redef]

POLL = 0.2


def watch(host_pid: int, pgid: int) -> int:
    while group_pids(pgid):
        if not pid_alive(host_pid):
            end_group(pgid)
            return 1
        time.sleep(POLL)
    return 0


def launch(pgid: int) -> subprocess.Popen[bytes]:
    """Start a reaper for this host process and the actor system's group ``pgid``."""
    return subprocess.Popen([sys.executable, "-S", os.path.abspath(__file__), str(os.getpid()),
                             str(pgid)], stdin=subprocess.DEVNULL, start_new_session=True,
                            close_fds=True)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: reaper.py HOST_PID PGID", file=sys.stderr)
        return 2
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    return watch(int(args[0]), int(args[1]))


if __name__ == "__main__":
    sys.exit(main())
