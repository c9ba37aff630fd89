"""The orphan reaper: a tiny watcher process that outlives a host that dies.

Started by ``ToolSystem`` in its own session, it polls the host's pid; if the
host disappears without shutting its actor system down (SIGKILL, a crash), it
ends every process of the actor system's session (actors, and whatever tools
started) and removes the system's runtime directory (the tools' temp dirs).
It exits by itself once that session is empty. It runs as a plain
script (``python reaper.py HOST_PID SID``)
so it starts fast and imports nothing but ``procs``.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

try:
    from supervisors.processes.procs import end_session, pid_alive, session_pids
except ImportError:  # run as a script: this file's folder is on sys.path
    from procs import end_session, pid_alive, session_pids  # type: ignore[no-redef]

POLL = 0.2


def watch(host_pid: int, sid: int, runtime_dir: str | None = None) -> int:
    while session_pids(sid):
        if not pid_alive(host_pid):
            end_session(sid)
            break
        time.sleep(POLL)
    if pid_alive(host_pid):
        return 0  # an orderly end: the host cleans up after itself
    if runtime_dir:  # the host died (the root may have ended the session first)
        shutil.rmtree(runtime_dir, ignore_errors=True)
    return 1


def launch(sid: int, runtime_dir: str | None = None) -> subprocess.Popen[bytes]:
    """Start a reaper for this host process, the actor system's session ``sid`` and the
    system's runtime directory (tools' temp dirs)."""
    args = [sys.executable, "-S", os.path.abspath(__file__), str(os.getpid()), str(sid)]
    if runtime_dir:
        args.append(runtime_dir)
    return subprocess.Popen(args, stdin=subprocess.DEVNULL, start_new_session=True, close_fds=True)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) not in (2, 3):
        print("usage: reaper.py HOST_PID SID [RUNTIME_DIR]", file=sys.stderr)
        return 2
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    return watch(int(args[0]), int(args[1]), args[2] if len(args) == 3 else None)


if __name__ == "__main__":
    sys.exit(main())
