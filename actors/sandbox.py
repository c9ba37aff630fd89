"""What a tool's process does to itself at start so it can be limited and cleaned up.

- its own process group: whatever the tool starts can be ended with one killpg;
- a private temporary directory (``TMPDIR`` too), removed when the tool ends
  (it lives in the system's runtime directory, removed with the system);
- hard limits with ``setrlimit`` where the kernel enforces them well: open files
  (RLIMIT_NOFILE), CPU seconds (RLIMIT_CPU: SIGXCPU becomes CpuLimitExceeded in
  the tool's code, a fatal error; the kernel's SIGKILL follows 5 CPU seconds later)
  and, only on request, address space (RLIMIT_AS, which counts virtual memory
  and so sits on top of what the process already maps).
- spares (descriptors, memory) that the runtime takes back when the tool hits
  a hard limit, so it can still reply and be policed.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

MB = 1024 * 1024
#: File descriptors above the tool's open_files limit that only the runtime may use: the
#: hard limit is open_files + FD_RESERVE, so a tool that leaks files gets an OSError while
#: its process keeps running until the accountant's policing acts on it.
FD_RESERVE = 16
SPARE_FDS = 4
#: Address space above the tool's memory limit that only the runtime may use (see SpareFds).
MEMORY_RESERVE = 16 * MB


def own_process_group() -> None:
    try:
        os.setpgid(0, 0)
    except OSError:  # already a group or session leader
        pass


def tools_tmp_root(runtime_dir: str | None) -> str | None:
    """Where the system wants its tools' temp dirs: the disk directory named in the runtime
    directory's ``tools-tmp`` file (supervisors/processes/runtime_dir.py), else the runtime
    directory itself."""
    if not runtime_dir:
        return None
    try:
        with open(os.path.join(runtime_dir, "tools-tmp")) as f:
            return f.read().strip() or runtime_dir
    except OSError:
        return runtime_dir


def private_tmpdir(name: str, parent: str | None = None) -> str:
    """A fresh directory for this tool (under the system's runtime dir when there is one)."""
    if parent and not os.path.isdir(parent):
        parent = None
    path = tempfile.mkdtemp(prefix=f"{name}-", dir=parent) if parent else \
        tempfile.mkdtemp(prefix=f"toolvisor-{name}-")
    os.environ["TMPDIR"] = path
    tempfile.tempdir = path
    return path


def inherited_fds() -> list[int]:
    """The descriptors this process holds now, before the tool runs.

    A forked process inherits its parent's descriptors (for a tool: pipes its
    supervisor keeps for each earlier child). They are not the tool's doing:
    its open-files figure and limit leave them out.
    """
    try:
        return sorted(int(fd) for fd in os.listdir("/proc/self/fd"))
    except OSError:  # pragma: no cover - no /proc
        return [0, 1, 2]


def apply_hard_limits(limits: dict[str, Any], hard_memory: bool = False,
                      inherited: list[int] | None = None, callers: int = 0) -> dict[str, int]:
    """Set the kernel limits; return what was set (name -> value).

    RLIMIT_NOFILE bounds descriptor *numbers*: the tool gets ``open_files`` (plus
    the runtime's reserve, plus room for ``callers`` connections to its socket) free
    numbers on top of those ``inherited`` below it. Callers' connections are not the
    tool's files: the accountant counts them apart and polices ``open_files`` alone.
    """
    try:
        import resource
    except ImportError:  # pragma: no cover - not on POSIX
        return {}
    applied: dict[str, int] = {}
    if limits.get("open_files"):
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        budget = int(limits["open_files"]) + FD_RESERVE + max(0, int(callers))
        taken = sorted(inherited or [0, 1, 2])
        n = budget + len(taken)
        for _ in range(4):  # inherited descriptors above the limit take no slot below it
            n = budget + sum(1 for fd in taken if fd < n)
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
        n = mapped + int(float(limits["memory_mb"]) * MB) + MEMORY_RESERVE
        resource.setrlimit(resource.RLIMIT_AS, (n, n))
        applied["address_space_bytes"] = n
    return applied


class SpareFds:
    """A few descriptors held back; freed when the tool exhausts its own, so the runtime
    (which needs one for every turn of its event loop) keeps working."""

    def __init__(self, count: int = SPARE_FDS) -> None:
        self.fds = [os.open(os.devnull, os.O_RDONLY) for _ in range(count)]

    def release(self) -> bool:
        freed = bool(self.fds)
        for fd in self.fds:
            try:
                os.close(fd)
            except OSError:
                pass
        self.fds = []
        return freed


class SpareMemory:
    """Memory held back under a hard address-space limit; freed when the tool hits it,
    so the runtime can still read, reply and report."""

    def __init__(self, size: int = MEMORY_RESERVE // 2) -> None:
        self.block: bytearray | None = bytearray(size)

    def release(self) -> bool:
        freed = self.block is not None
        self.block = None
        return freed


class CpuLimitExceeded(Exception):
    """The tool used up its ``cpu_seconds`` (the kernel sent SIGXCPU)."""


def raise_on_sigxcpu(seconds: float) -> None:
    """Turn SIGXCPU into an exception in the tool's code (the framework would only log it).

    The kernel sends SIGKILL 5 CPU seconds later if the tool keeps going.
    """
    import signal

    def handler(signum: int, frame: Any) -> None:
        raise CpuLimitExceeded(f"used its {seconds:g} CPU seconds (cpu_seconds hard limit)")

    signal.signal(signal.SIGXCPU, handler)


#: What a tool with ``security.env`` still sees of the host's environment.
KEPT_ENV = ("PATH", "HOME", "LANG", "TMPDIR")


def apply_security(security: dict[str, Any] | None) -> None:
    """The sandbox options of a tool's security context (``env``, ``workdir``, ``umask``).

    With ``env`` the tool sees only those variables plus PATH, HOME, LANG and
    TMPDIR (its private one); without it the environment is left alone.
    """
    if not security:
        return
    env = security.get("env")
    if env is not None:
        kept = {k: os.environ[k] for k in KEPT_ENV if k in os.environ}
        os.environ.clear()
        os.environ.update(kept)
        os.environ.update({str(k): str(v) for k, v in env.items()})
    workdir = security.get("workdir")
    if workdir:
        try:
            os.chdir(workdir)
        except OSError as exc:
            raise OSError(f"security.workdir={workdir!r} cannot be used: {exc.strerror}") from None
    umask = security.get("umask")
    if umask is not None:
        os.umask(int(umask))
