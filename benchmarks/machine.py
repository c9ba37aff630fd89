"""What the figures were measured on: CPUs, Python, library versions, load, source commit."""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata
from typing import Any


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def describe() -> dict[str, Any]:
    """A plain-data description of this machine and interpreter."""
    return {
        "nproc": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "thespian": _version("thespian"),
        "psutil": _version("psutil"),
        "msgpack": _version("msgpack"),
        "pykka": _version("pykka"),
        "ray": _version("ray"),
        "matplotlib": _version("matplotlib"),
        "loadavg_at_start": loadavg(),
    }


def cpu_ticks() -> tuple[int, int, int] | None:
    """(busy, steal, total) clock ticks of all CPUs since boot, from /proc/stat; steal is
    time the hypervisor gave this VM's CPUs to someone else."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    steal = fields[7] if len(fields) > 7 else 0
    total = sum(fields[:8])
    return total - idle - steal, steal, total


def cpu_shares(before: tuple[int, int, int] | None,
               after: tuple[int, int, int] | None) -> dict[str, float] | None:
    """Busy and stolen shares of all CPUs between two ``cpu_ticks()``."""
    if before is None or after is None or after[2] <= before[2]:
        return None
    total = after[2] - before[2]
    return {"busy": round((after[0] - before[0]) / total, 3),
            "steal": round((after[1] - before[1]) / total, 3)}


def loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def source_state(repo: str = ".") -> dict[str, Any]:
    """The commit measured and which tracked files differ from it (read-only git plumbing)."""
    import subprocess

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", "-C", repo, *args], capture_output=True, text=True,
                                 timeout=10, check=True)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip()

    changed = git("diff-index", "--name-only", "HEAD", "--")
    untracked = git("ls-files", "--others", "--exclude-standard")
    return {"commit": git("rev-parse", "HEAD"),
            "modified_tracked_files": changed.splitlines() if changed else [],
            "untracked_files": untracked.splitlines() if untracked else []}
