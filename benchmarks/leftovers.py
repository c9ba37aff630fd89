"""After the run: find child processes of the benchmark that are still alive, report and end them.

Every section leaves its ``with ToolSystem()`` block, so nothing should be
left; anything found here is a clean-up bug worth reporting, not hiding.
"""

from __future__ import annotations

import time

import psutil


def live_children() -> list[psutil.Process]:
    """This process's descendants that have not ended (zombies left out)."""
    out = []
    for p in psutil.Process().children(recursive=True):
        try:
            if p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.Error:
            pass
    return out


def sweep(grace: float = 5.0) -> list[dict[str, object]]:
    """Wait up to ``grace`` s for our children to end; kill and describe the ones that do not."""
    deadline = time.monotonic() + grace
    left = live_children()
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = live_children()
    found = []
    for p in left:
        try:
            found.append({"pid": p.pid, "cmdline": " ".join(p.cmdline())[:160]})
            p.kill()
        except psutil.Error:
            pass
    return found
