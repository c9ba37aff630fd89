"""What the figures were measured on: CPUs, Python, library versions, load, source commit."""

from __future__ import annotations

import os
import platform
import sys
import time
from dataclasses import dataclass
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
        "free_page_reporting": page_reporting(),
    }


@dataclass(frozen=True)
class CpuTicks:
    """Clock ticks of all CPUs since boot (``/proc/stat``), split by who used them.

    ``steal`` is time the hypervisor gave this VM's CPUs to someone else; ``system`` the
    time spent in the kernel (system calls, interrupts, its own threads); ``kthreads`` the
    part of it that the kernel's own threads used (``kdamond``, ``kswapd``, ``kworker``: the
    children of ``kthreadd``), which no process of ours asked for."""

    busy: int
    steal: int
    total: int
    system: int
    kthreads: int


def cpu_ticks() -> CpuTicks | None:
    """The CPU time used so far, machine-wide (see ``CpuTicks``); None off Linux."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    fields += [0] * (8 - len(fields))
    idle = fields[3] + fields[4]
    steal = fields[7]
    total = sum(fields[:8])
    return CpuTicks(busy=total - idle - steal, steal=steal, total=total,
                    system=fields[2] + fields[5] + fields[6], kthreads=_kernel_thread_ticks())


def _kernel_thread_ticks() -> int:
    """User and system ticks of the kernel's threads (``kthreadd``'s children) so far."""
    try:
        with open("/proc/2/task/2/children") as f:
            pids = f.read().split()
    except OSError:  # no CONFIG_PROC_CHILDREN: not measured
        return 0
    out = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:  # ended since
            continue
        out += int(fields[11]) + int(fields[12])
    return out


def cpu_shares(before: CpuTicks | None, after: CpuTicks | None) -> dict[str, float] | None:
    """Shares of all CPUs between two ``cpu_ticks()``: busy (anyone), stolen by the
    hypervisor, in the kernel, and in the kernel's own threads."""
    if before is None or after is None or after.total <= before.total:
        return None
    total = after.total - before.total
    return {"busy": round((after.busy - before.busy) / total, 3),
            "steal": round((after.steal - before.steal) / total, 3),
            "system": round((after.system - before.system) / total, 3),
            # (threads that ended in between take their ticks with them: at least 0)
            "kernel_threads": round(max(0, after.kthreads - before.kthreads) / total, 3)}


def cpu_probe(rounds: int = 5, work: int = 20_000) -> float:
    """How fast this machine's CPU runs Python right now: the CPU time (this thread's, so
    another process taking the CPU does not count) of a fixed loop, the least of ``rounds``
    runs, in ms. Taken between steps of a benchmark, it tells a slower step of ours from a
    slower machine: on a VM whose host gives its CPU to others without reporting steal,
    the loop's CPU time grows too."""
    best = float("inf")
    for _ in range(rounds):
        t0 = time.thread_time()
        x = 0
        for i in range(work):
            x += i * i % 7
        best = min(best, time.thread_time() - t0)
    return round(best * 1000, 3)


def memory_used_gib() -> float | None:
    """Memory in use on the whole machine (MemTotal - MemAvailable), in GiB."""
    try:
        with open("/proc/meminfo") as f:
            info = {line.split(":")[0]: int(line.split()[1]) for line in f}
        return round((info["MemTotal"] - info["MemAvailable"]) / 2**20, 2)
    except (OSError, KeyError, ValueError, IndexError):
        return None


_REPORTING = "/sys/module/page_reporting/parameters"


def page_reporting() -> dict[str, Any] | None:
    """Whether this (virtual) machine hands its free memory back to its host, and how much
    it has handed back since boot; None where the kernel has no free page reporting.

    A guest with virtio-balloon free page reporting tells its host which free blocks of
    ``2**order`` pages it has not used for ``min_free_ms``; the host drops them, and the
    guest's next first write to each of their pages is a fault the host serves again (9-12
    us a page on the development VM, against about 3 us for a page it still backs: python
    -m benchmarks.fresh_memory). ``active`` is False when ``order`` is above the largest
    block the kernel keeps (the columns of /proc/buddyinfo): then nothing is reported."""
    try:
        values = {name: open(os.path.join(_REPORTING, name)).read().strip()
                  for name in ("page_reporting_order", "min_free_ms", "max_waiting_mib",
                               "reported_kib")}
    except OSError:
        return None
    try:
        with open("/proc/buddyinfo") as f:
            orders = max(len(line.split()) - 4 for line in f)
    except (OSError, ValueError):
        orders = 11
    try:
        order = int(values["page_reporting_order"])
        return {"active": order < orders, "order": order,
                "min_free_ms": int(values["min_free_ms"]),
                "max_waiting_mib": int(values["max_waiting_mib"]),
                "reported_gib": round(int(values["reported_kib"]) / 2**20, 2)}
    except ValueError:
        return None


def reported_gib() -> float | None:
    """GiB of free memory this machine has handed back to its host since boot (see
    ``page_reporting``); None where it does not."""
    state = page_reporting()
    return state["reported_gib"] if state else None


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
