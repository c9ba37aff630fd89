"""Kill a test host during its start and report what it left behind.

``python -m tests.subreaper SIGNAL DELAY_MS`` makes itself a child subreaper
(PR_SET_CHILD_SUBREAPER), so every process the host starts, even one that
daemonizes, stays its descendant after the host dies. It starts
``tests.start_host``, waits until the host is inside ``ToolSystem.start()``,
sends SIGNAL after DELAY_MS, and prints one JSON line: how long the host took to
exit, and which of its processes were still alive 5 s after it died (those are
then killed, so nothing outlives the test).
"""

from __future__ import annotations

import ctypes
import json
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any

import psutil

from actors.zygote import reap_children
from benchmarks.leftovers import live_children

PR_SET_CHILD_SUBREAPER = 36


def _dump(errors: Any, within: float) -> str:
    """The host's stderr once faulthandler has written its threads there (or at the deadline)."""
    deadline = time.monotonic() + within
    while True:
        errors.seek(0)
        text = errors.read().decode(errors="replace")
        if "most recent call first" in text or time.monotonic() > deadline:
            return text[-4000:]
        time.sleep(0.05)


def main() -> int:
    sig, delay_ms = int(sys.argv[1]), float(sys.argv[2])
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    errors = tempfile.TemporaryFile()
    host = subprocess.Popen([sys.executable, "-m", "tests.start_host", "30"],
                            stdout=subprocess.PIPE, stderr=errors)
    assert host.stdout is not None
    if host.stdout.readline() != b"starting\n":
        print(json.dumps({"error": "the host did not start"}), flush=True)
        return 1
    time.sleep(delay_ms / 1000)
    t0 = time.monotonic()
    host.send_signal(sig)
    stack = ""
    try:
        host.wait(15)
    except subprocess.TimeoutExpired:  # hung: where? (start_host dumps its threads on SIGUSR1)
        host.send_signal(signal.SIGUSR1)
        stack = _dump(errors, within=2.0)
        host.kill()
        host.wait()
    exit_s = time.monotonic() - t0
    died = time.monotonic()
    left: list[psutil.Process] = []
    while time.monotonic() - died < 5.0:
        reap_children()
        left = live_children()
        if not left:
            break
        time.sleep(0.05)
    names = []
    for p in left:
        try:
            names.append(f"{p.pid} {' '.join(p.cmdline())[:60]}")
            p.kill()
        except psutil.Error:
            pass
    reap_children()
    out = {"host_exit_s": round(exit_s, 3), "left": names}
    if stack:
        out["stack"] = stack
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
