"""A supervisor's crash line is written by the root (actors.messages.LogLine).

The first line a process formats through loguru copies about 0.3 MiB of pages it
shared with its parent; a tool's crash is the line every supervisor meets, so a
supervisor below the root hands it up and the root writes it (issue 10's memory).
The line must still appear once, with the same text, however deep the tool is.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parent.parent

SCRIPT = textwrap.dedent('''
    import os, signal, sys, time
    from supervisors import ToolSystem
    from supervisors.processes.procs import pid_alive
    with ToolSystem(log_level="INFO", data_dir=False) as system:
        top = system.supervise("top")
        inner = top.supervise("inner")
        tool = inner.spawn("examples.counter:Counter", name="c")
        direct = system.spawn("examples.counter:Counter", name="d")
        for handle in (tool, direct):
            pid = handle.status().pid
            os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 30
            while pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.01)
            handle.call("get", timeout=30)
        print("pids", system.root_route.pid, top.status().pid, inner.status().pid, flush=True)
        deadline = time.monotonic() + 20  # the root writes the lines a moment after
        while time.monotonic() < deadline:
            with open(os.environ["LOGLINE_STDERR"]) as f:
                if f.read().count(" crashed: ") >= 2:
                    break
            time.sleep(0.05)
''')


def test_a_crash_below_the_root_is_written_once_by_the_root(tmp_path):
    errors = tmp_path / "stderr.txt"
    with open(errors, "w") as sink:
        done = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=sink, text=True, timeout=100,
                              env={**os.environ, "LOGLINE_STDERR": str(errors)})
    stderr = errors.read_text()
    assert done.returncode == 0, stderr[-3000:]
    root, top, inner = (int(x) for x in done.stdout.split("pids", 1)[1].split()[:3])
    lines = [line for line in stderr.splitlines() if " crashed: " in line]
    deep = [line for line in lines if "top/inner/c crashed: process" in line]
    direct = [line for line in lines if re.search(r" d crashed: process", line)]
    assert len(deep) == 1 and len(direct) == 1, lines
    for line in deep + direct:
        fields = line.split()
        assert fields[1] == "WARNING" and int(fields[2]) == root, (line, root, top, inner)
        assert "ended unexpectedly (killed or crashed)" in line
