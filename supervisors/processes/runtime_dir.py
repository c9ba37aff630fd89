"""Where a ToolSystem keeps its runtime state, and the tools their temp files.

The runtime directory holds small files that change all the time: the route
directory (one JSON file per child, rewritten at each change), the tools' busy
markers (shared pages), verdicts, the admin's pid. On a disk file system each
create, rename and unlink is journalled metadata work: profiling a supervisor
with 1,000 children, ext4's inode allocation (``recently_deleted``) and the
removal of the tools' temp dirs were a fifth of its time while spawning and
stopping. So it goes to RAM (``/dev/shm``) when that is there and writable.

The tools' private temp dirs (``TMPDIR`` of each tool) hold whatever a tool writes,
possibly large, so they stay on disk, in a sibling directory named in the file
``tools-tmp`` inside the runtime directory; ``remove`` deletes both.
``TOOLVISOR_RUNTIME_BASE`` picks another base for the runtime directory.
"""

from __future__ import annotations

import os
import shutil
import tempfile

TOOLS_TMP_FILE = "tools-tmp"


def _base() -> str | None:
    base = os.environ.get("TOOLVISOR_RUNTIME_BASE") or "/dev/shm"
    return base if os.path.isdir(base) and os.access(base, os.W_OK | os.X_OK) else None


def make() -> str:
    """A fresh runtime directory (in RAM where possible) with its tools' temp root on disk."""
    runtime = tempfile.mkdtemp(prefix="toolvisor-", dir=_base())
    try:
        tools_tmp = tempfile.mkdtemp(prefix="toolvisor-tools-")
        with open(os.path.join(runtime, TOOLS_TMP_FILE), "w") as f:
            f.write(tools_tmp)
    except BaseException:
        remove(runtime)
        raise
    return runtime


def tools_tmp(runtime: str | None) -> str | None:
    """The directory the tools' private temp dirs go in (None: the system default)."""
    if not runtime:
        return None
    try:
        with open(os.path.join(runtime, TOOLS_TMP_FILE)) as f:
            path = f.read().strip()
    except OSError:
        return runtime
    return path if os.path.isdir(path) else None


def remove(runtime: str | None) -> None:
    """Delete the runtime directory and the tools' temp root it names."""
    if not runtime:
        return
    other = tools_tmp(runtime)
    if other and other != runtime:
        shutil.rmtree(other, ignore_errors=True)
    shutil.rmtree(runtime, ignore_errors=True)
