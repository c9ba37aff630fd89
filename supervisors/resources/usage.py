"""Measure what a tool's process (and the processes it started) uses.

On Linux the figures come straight from /proc, reading each file once per
sample (what psutil's ``oneshot()`` does, without psutil's per-call cost):
a sweep over 100 tools must stay within a few milliseconds. Elsewhere psutil
is used. USS (memory only this process holds; forked pages are shared) is
exact every ``USS_EVERY`` samples, and whenever RSS moved by ``USS_DRIFT`` since the
last exact reading (a leak shows at once); in between it is carried forward by the
change in RSS, because reading ``smaps_rollup`` costs ~0.2 ms per process (at 1,000
tools, every 10th sample, it was half of the accountant's sweep; every 30th, still a
fifth at 500 tools on a slow day: it is every 120th now, two minutes at the default
cadence, while any move of 1 MiB in RSS still calls for an exact reading at once).

``open_files`` counts the descriptors the tool opened itself: those it
inherited from its supervisor when it was forked are left out, and so are the
connections its callers opened to its socket: those are ``callers``, counted
apart (a tool's quota is for what it opens, not for who calls it).

The tool's child processes are sampled too: ``children`` (how many),
``children_memory_mb`` (their RSS) and ``children_cpu_percent``; the
accountant polices memory and CPU on the tool and its children together.

A pid that vanished is a normal event: ``sample`` returns None.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

from supervisors.processes.procs import parent_pid
from supervisors.resources.work import WORK_FIGURES

PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
MB = 1024 * 1024
USS_EVERY = 120
USS_DRIFT = 1024 * 1024  # bytes of RSS change that call for an exact USS reading
LIST_EVERY = 10  # samples between full listings of a tool's descriptors (sockets, callers)
LINUX = os.path.isdir("/proc/self/fd")
#: How a tool's socket is named in /proc/net/unix (see actors.fastpath); connections
#: accepted on it carry the same name.
CALLER_PREFIX = b"@toolvisor-"
#: Every figure ``sample`` gives; a tool not sampled yet reports each as None.
FIGURES = ("memory_mb", "rss_mb", "cpu_percent", "cpu_seconds", "open_files", "callers", "threads",
           "connections", "children", "children_memory_mb", "children_cpu_percent",
           "io_read_bytes", "io_write_bytes", "sampled_at")


def blank() -> dict[str, Any]:
    """Usage of a tool not sampled yet: every figure present, each None."""
    return dict.fromkeys(FIGURES + WORK_FIGURES)


@dataclass
class Tracker:
    """What the sampler remembers about one process between samples."""

    pid: int
    inherited: frozenset[str] = frozenset()     # descriptors it inherited: not its own files
    samples: int = 0
    cpu_at: tuple[float, float] | None = None   # (cpu seconds, wall time) of the last sample
    uss_base: float = 0.0                       # USS (bytes) at the last exact read
    rss_base: float = 0.0                       # RSS at that read
    last: dict[str, Any] = field(default_factory=dict)
    sockets: dict[str, str] = field(default_factory=dict)  # inode -> "inet", "caller" or "" (cache)
    kids_cpu: dict[int, tuple[float, float]] = field(default_factory=dict)  # child pid -> (cpu, t)


class ProcessTable:
    """Every process's parent, kept from one sweep to the next.

    A sweep needs to know who is whose child. Reading ``/proc/PID/stat`` of every
    process on the machine at each sweep was a quarter of the accountant's CPU with
    500 tools (py-spy). A process's parent changes only when that parent ends, and
    then the process goes to init or to the nearest subreaper, outside every tool's
    subtree unless a tool runs a subreaper of its own; so a sweep lists ``/proc`` and
    reads only the processes it has not seen before. Every ``FULL_EVERY`` sweeps it
    reads them all again: that catches a process adopted by a subreaper inside a
    tool, and a pid used again between two sweeps (pids are handed out in turn, so
    that needs a whole turn of the pid space within one sweep).
    """

    FULL_EVERY = 10

    def __init__(self) -> None:
        self.parents: dict[int, int] = {}
        self.scans = 0

    def children(self) -> dict[int, list[int]]:
        """parent pid -> its children's pids, as of now."""
        full = self.scans % self.FULL_EVERY == 0
        self.scans += 1
        known, parents = ({} if full else self.parents), {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            pid = int(entry)
            parent = known.get(pid)
            if parent is None:
                parent = parent_pid(pid)
                if parent is None:
                    continue
            parents[pid] = parent
        self.parents = parents
        out: dict[int, list[int]] = {}
        for pid, parent in parents.items():
            out.setdefault(parent, []).append(pid)
        return out


class Sweep:
    """Facts shared by every sample of one sweep: who is whose child, which sockets are inet.

    The socket tables are read only if some tool holds a socket not classified
    before (reading them costs ~15 ms with a few hundred actors). ``table`` keeps
    the process tree from one sweep to the next (a fresh one reads it all).
    """

    def __init__(self, table: ProcessTable | None = None) -> None:
        self.children: dict[int, list[int]] = {}
        self._inet: set[str] | None = None
        self._callers: set[str] | None = None
        if LINUX:
            self.children = (table or ProcessTable()).children()

    @property
    def inet_inodes(self) -> set[str]:
        if self._inet is None:
            self._inet = set()
            self._scan_sockets()
        return self._inet

    @property
    def caller_inodes(self) -> set[str]:
        """Inodes of connections accepted on a tool's socket (they carry its name)."""
        if self._callers is None:
            self._callers = set()
            try:
                with open("/proc/net/unix", "rb") as f:
                    next(f)
                    for line in f:
                        parts = line.split()
                        # Num RefCount Protocol Flags Type St Inode Path; St 03 = connected
                        if len(parts) > 7 and parts[5] == b"03" and parts[7].startswith(CALLER_PREFIX):
                            self._callers.add(parts[6].decode())
            except OSError:
                pass
        return self._callers

    def kind_of(self, inode: str) -> str:
        if inode in self.caller_inodes:
            return "caller"
        return "inet" if inode in self.inet_inodes else ""

    def _scan_sockets(self) -> None:
        for table in ("tcp", "tcp6", "udp", "udp6"):
            try:
                with open(f"/proc/net/{table}", "rb") as f:
                    next(f)
                    for line in f:
                        parts = line.split()
                        if len(parts) > 9:
                            self._inet.add(parts[9].decode())  # type: ignore[union-attr]
            except OSError:
                continue

    def descendants(self, pid: int) -> list[int]:
        out, todo = [], list(self.children.get(pid, ()))
        while todo:
            p = todo.pop()
            out.append(p)
            todo.extend(self.children.get(p, ()))
        return out


def sample(tracker: Tracker, sweep: Sweep) -> dict[str, Any] | None:
    """The tool's usage now, or None if its process is gone."""
    try:
        figures = _sample_proc(tracker, sweep) if LINUX else _sample_psutil(tracker)
    except (FileNotFoundError, ProcessLookupError):
        return None
    except Exception as exc:  # psutil.NoSuchProcess and friends
        if type(exc).__name__ in ("NoSuchProcess", "ZombieProcess"):
            return None
        raise
    if figures is not None:
        tracker.samples += 1
        tracker.last = figures
    return figures


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _sample_proc(t: Tracker, sweep: Sweep) -> dict[str, Any] | None:
    pid = t.pid
    stat = _read(f"/proc/{pid}/stat")
    fields = stat[stat.rindex(b")") + 2:].split()
    if fields[0] in (b"Z", b"X"):
        return None
    now = time.time()
    cpu = (int(fields[11]) + int(fields[12])) / TICKS
    rss = int(fields[21]) * PAGE
    cpu_percent = 0.0
    if t.cpu_at is not None and now > t.cpu_at[1]:
        cpu_percent = max(0.0, 100.0 * (cpu - t.cpu_at[0]) / (now - t.cpu_at[1]))
    t.cpu_at = (cpu, now)
    if (t.samples + pid) % USS_EVERY == 0 or t.samples == 0 or \
            abs(rss - t.rss_base) >= USS_DRIFT:  # (the first: staggered across tools)
        t.uss_base, t.rss_base = _uss(pid), rss
    uss = max(0.0, t.uss_base + (rss - t.rss_base))
    fds, sockets, callers = _descriptors(t, sweep)
    read_bytes = write_bytes = 0
    try:
        for line in _read(f"/proc/{pid}/io").split(b"\n"):
            if line.startswith(b"rchar:"):
                read_bytes = int(line.split()[1])
            elif line.startswith(b"wchar:"):
                write_bytes = int(line.split()[1])
    except PermissionError:
        pass
    kids, kids_rss, kids_cpu = _children(t, sweep.descendants(pid), now)
    return {"memory_mb": round(uss / MB, 2), "rss_mb": round(rss / MB, 2),
            "cpu_percent": round(cpu_percent, 1), "cpu_seconds": round(cpu, 2),
            "open_files": fds, "callers": callers, "threads": int(fields[17]),
            "connections": sockets,
            "children": kids, "children_memory_mb": round(kids_rss / MB, 2),
            "children_cpu_percent": round(kids_cpu, 1), "io_read_bytes": read_bytes,
            "io_write_bytes": write_bytes, "sampled_at": now}


def _children(t: Tracker, kids: list[int], now: float) -> tuple[int, float, float]:
    """How many processes the tool started are running (zombies left out), their RSS
    (bytes) and their CPU percent."""
    rss = cpu_percent = 0.0
    seen: dict[int, tuple[float, float]] = {}
    for kid in kids:
        try:
            stat = _read(f"/proc/{kid}/stat")
        except OSError:
            continue
        f = stat[stat.rindex(b")") + 2:].split()
        if f[0] in (b"Z", b"X"):
            continue
        rss += int(f[21]) * PAGE
        cpu = (int(f[11]) + int(f[12])) / TICKS
        seen[kid] = (cpu, now)
        before = t.kids_cpu.get(kid)
        if before is not None and now > before[1]:
            cpu_percent += max(0.0, 100.0 * (cpu - before[0]) / (now - before[1]))
    t.kids_cpu = seen
    return len(seen), rss, cpu_percent


def _descriptors(t: Tracker, sweep: Sweep) -> tuple[int, int, int]:
    """(own open descriptors, own inet sockets, callers' connections) of the tracked process.

    Linux >= 6.2 gives the count of open descriptors as the size of /proc/PID/fd,
    which costs one stat instead of listing hundreds of inherited entries; the
    descriptors are listed (to find sockets) only when the count changed, and
    every ``LIST_EVERY`` samples anyway.
    """
    fd_dir = f"/proc/{t.pid}/fd"
    total = os.stat(fd_dir).st_size
    inherited = t.inherited
    last = t.last
    if total and last:
        own = max(0, total - len(inherited))
        if own == last.get("open_files", 0) + last.get("callers", 0) and (t.samples + t.pid) % LIST_EVERY:
            return last["open_files"], last.get("connections", 0), last.get("callers", 0)
    fds = sockets = callers = 0
    known = t.sockets
    seen: dict[str, str] = {}
    for fd in os.listdir(fd_dir):
        if fd in inherited:
            continue
        fds += 1
        try:
            link = os.readlink(f"{fd_dir}/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            inode = link[8:-1]
            kind = known.get(inode)
            if kind is None:
                kind = sweep.kind_of(inode)
            seen[inode] = kind
            sockets += kind == "inet"
            callers += kind == "caller"
    t.sockets = seen
    return fds - callers, sockets, callers


def _uss(pid: int) -> float:
    uss = 0
    for line in _read(f"/proc/{pid}/smaps_rollup").split(b"\n"):
        if line.startswith((b"Private_Clean:", b"Private_Dirty:", b"Private_Hugetlb:")):
            uss += int(line.split()[1]) * 1024
    return float(uss)


def _sample_psutil(t: Tracker) -> dict[str, Any] | None:  # pragma: no cover - non-Linux
    import psutil

    p = psutil.Process(t.pid)
    now = time.time()
    with p.oneshot():
        mem = p.memory_full_info()
        times = p.cpu_times()
        cpu = times.user + times.system
        fds = p.num_fds() if hasattr(p, "num_fds") else len(p.open_files())
        threads = p.num_threads()
        conns = len(p.net_connections("inet"))
        kids = len(p.children(recursive=True))
        try:
            io = p.io_counters()
            rb, wb = io.read_bytes, io.write_bytes
        except (AttributeError, psutil.AccessDenied):
            rb = wb = 0
    pct = 0.0 if t.cpu_at is None else max(0.0, 100.0 * (cpu - t.cpu_at[0]) / max(1e-9, now - t.cpu_at[1]))
    t.cpu_at = (cpu, now)
    return {"memory_mb": round(mem.uss / MB, 2), "rss_mb": round(mem.rss / MB, 2),
            "cpu_percent": round(pct, 1), "cpu_seconds": round(cpu, 2), "open_files": fds, "callers": 0,
            "threads": threads, "connections": conns, "children": kids,
            "children_memory_mb": 0.0, "children_cpu_percent": 0.0, "io_read_bytes": rb,
            "io_write_bytes": wb, "sampled_at": now}
