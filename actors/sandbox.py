"""What a tool's process does to itself at start so it can be limited and cleaned up.

- its own process group: whatever the tool starts can be ended with one killpg;
- a private temporary directory (``TMPDIR`` too), removed when the tool ends;
- hard limits with ``setrlimit`` where the kernel enforces them well: open files
  (RLIMIT_NOFILE), CPU seconds (RLIMIT_CPU: SIGXCPU, then SIGKILL 5 s later)
  and, only on request, address space (RLIMIT_AS, which counts virtual memory
  and so sits on top of what the process already maps).
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

MB = 1024 * 1024


def own_process_group() -> None:
    try:
        os.setpgid(0, 0)
    except OSError:  # already a group or session leader
        pass


def private_tmpdir(name: str) -> str:
    path = tempfile.mkdtemp(prefix=f"toolvisor-{name}-")
    os.environ["TMPDIR"] = path
    tempfile.tempdir = path
    return path


def apply_hard_limits(limits: dict[str, Any], hard_memory: bool = False) -> dict[str, int]:
    """Set the kernel limits; return what was set (name -> value)."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not on POSIX
        return {}
    applied: dict[str, int] = {}
    if limits.get("open_files"):
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        n = int(limits["open_files"])
        n = n if hard == resource.RLIM_INFINITY else min(n, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))
        applied["open_files"] = n
    if limits.get("cpu_seconds"):
        n = max(1, int(limits["cpu_seconds"]))
        resource.setrlimit(resource.RLIMIT_CPU, (n, n + 5))
        applied["cpu_seconds"] = n
    if hard_memory and limits.get("memory_mb"):
        with open("/proc/self/statm") as f:
            mapped = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        n = mapped + int(float(limits["memory_mb"]) * MB)
        resource.setrlimit(resource.RLIMIT_AS, (n, n))
        applied["address_space_bytes"] = n
    return applied
