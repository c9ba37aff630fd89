"""The orphan reaper: a tiny watcher process that outlives a host that dies.

Started by ``ToolSystem`` in its own session, it polls the host's pid; if the
host disappears without shutting its actor system down (SIGKILL, a crash), it
ends every process of the actor system's session (actors, and whatever tools
started) and removes the system's runtime directory (the tools' temp dirs).
It is started before the actor system (SID 0 then: the admin writes its pid,
which is its session id, to ``admin.pid`` in the runtime directory as it
starts), so a host killed at any moment of start-up leaves nothing behind. The
host kills it after an orderly shutdown. It runs as a plain script
(``python reaper.py HOST_PID SID RUNTIME_DIR``)
so it starts fast and imports nothing but ``procs``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

try:
    from supervisors.processes import runtime_dir as runtime_dirs
    from supervisors.processes.procs import end_session, pid_alive, session_pids
except ImportError:  # run as a script: this file's folder is on sys.path
    import runtime_dir as runtime_dirs  # type: ignore[no-redef]
    from procs import end_session, pid_alive, session_pids  # type: ignore[no-redef]

POLL = 0.1
SETTLE = 3.0  # after the host died: how long to wait for a starting admin to say who it is
ADMIN_PIDFILE = "admin.pid"


def admin_pid(runtime_dir: str | None) -> int | None:
    """The actor system's admin pid (its session id), as the admin wrote it at its start."""
    if not runtime_dir:
        return None
    try:
        with open(os.path.join(runtime_dir, ADMIN_PIDFILE)) as f:
            return int(f.read().strip() or 0) or None
    except (OSError, ValueError):
        return None


def watch(host_pid: int, sid: int, runtime_dir: str | None = None) -> int:
    while pid_alive(host_pid):
        time.sleep(POLL)
    # The host is gone without shutting down. Its actor system may still be starting:
    # wait a little for the admin to say who it is, and end its session.
    deadline = time.monotonic() + SETTLE
    while True:
        admin = admin_pid(runtime_dir)
        sessions = {s for s in (sid, admin) if s}
        for s in sessions:
            end_session(s, grace=0.5)
        if admin:
            try:
                os.kill(admin, signal.SIGKILL)  # before its setsid it is not in its session yet
            except OSError:
                pass
        settled = admin is not None or time.monotonic() > deadline
        if settled and not any(session_pids(s) for s in sessions) and not pid_alive(admin):
            break
        time.sleep(0.05)
    runtime_dirs.remove(runtime_dir)
    return 1


def launch(sid: int = 0, runtime_dir: str | None = None) -> subprocess.Popen[bytes]:
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
