"""Record which functions the actor processes run: ``actors/hotcode.txt`` (``make hotcode``).

``actors.hotcode`` copies the code objects of the functions listed there next to
each other before the actor system forks, so a forked process that runs them
copies a few dense pages instead of one page per function (issue 10). This script
records the list: it starts a ToolSystem with a profiler that every actor process
inherits through its fork (``sys.setprofile``), spawns a supervisor of tools, calls
them, restarts one, pauses, resumes and stops some, and writes the functions each
kind of process ran, the tools' first (every tool runs them), then the
supervisors', then the zygotes' and the root's. It also asks what a program asks of
a running tree (a tool by path, the tree, the events, the usage, a status).

    python -m benchmarks.hotcode [--out actors/hotcode.txt]

Run it again after a change to what a tool or a supervisor runs; a stale list is
not wrong, it only saves less (``python -m benchmarks --only memory`` shows it).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

TOOL = "examples.counter:Counter"
#: modules whose functions are not the runtime's (the recording's own, the tool's, tests)
SKIP_PREFIXES = ("__main__", "benchmarks", "examples", "tests", "_pytest", "pytest", "pluggy")
HEADER = ("# module<TAB>qualified name of the code objects actor processes run, tools' first.\n"
          "# Recorded by `python -m benchmarks.hotcode` (make hotcode); read by actors/hotcode.py.\n")


def _profiler(directory: str) -> Callable[..., None]:
    """A profile function writing each new (module, qualified name) a process calls to
    ``directory/<pid>.keys``; it follows the process through forks."""
    state: dict[str, Any] = {"pid": None, "seen": set(), "out": None}

    def profile(frame: Any, event: str, arg: Any) -> None:
        if event != "call":
            return
        pid = os.getpid()
        if state["pid"] != pid:
            state["pid"], state["seen"] = pid, set()
            state["out"] = open(os.path.join(directory, f"{pid}.keys"), "a", buffering=1)
        key = (frame.f_globals.get("__name__"), frame.f_code.co_qualname)
        if key not in state["seen"]:
            state["seen"].add(key)
            state["out"].write(f"{key[0]}\t{key[1]}\n")

    return profile


def _keys(directory: str, pid: int) -> list[tuple[str, str]]:
    try:
        text = Path(directory, f"{pid}.keys").read_text(encoding="utf-8")
    except OSError:
        return []
    out = []
    for line in text.splitlines():
        module, _, qualname = line.partition("\t")
        if module and module != "None" and qualname and qualname != "<module>" and \
                not module.startswith(SKIP_PREFIXES):
            out.append((module, qualname))
    return out


def _exercise(directory: str, tools: int, restarts: int) -> dict[str, set[int]]:
    """Run a small tree under the profiler; the pids of each kind of process."""
    import psutil

    from supervisors import Backoff, Policy, ToolSystem

    roles: dict[str, set[int]] = {"tool": set(), "supervisor": set(), "zygote": set(),
                                  "root": set()}
    policy = Policy(max_restarts=100, period=1.0, backoff=Backoff.none())
    profile = _profiler(directory)
    sys.setprofile(profile)
    threading.setprofile(profile)
    try:
        with ToolSystem(policy=policy, data_dir=False, sample_every=1.0) as system:
            sup = system.supervise("s000", policy=policy)
            handles = [sup.spawn(TOOL, name=f"t{i:03d}") for i in range(tools)]
            for handle in handles:
                handle.call("get")
            first = handles[0]
            for _ in range(restarts):
                pid = first.status().pid
                roles["tool"].add(pid)
                os.kill(pid, signal.SIGKILL)
                deadline = time.monotonic() + 60
                while psutil.pid_exists(pid) and time.monotonic() < deadline:
                    time.sleep(0.01)
                first.call("get", timeout=60)
            # what a program asks of a running tree (each a path through the supervisors)
            system.tool("s000/t001").call("get")
            system.tree()
            system.events()
            system.usage()
            sup.status()
            handles[1].pause()
            handles[1].resume()
            handles[1].call("get")
            handles[2].stop()
            for handle in handles[3:]:
                pid = handle.status().pid
                roles["tool"].add(pid)
                roles["zygote"].add(psutil.Process(pid).ppid())
            roles["supervisor"].add(sup.status().pid)
            roles["root"].add(system.root_route.pid)
            time.sleep(1.0)  # (idle: the timers and the accountant's samples run too)
    finally:
        sys.setprofile(None)
        threading.setprofile(None)  # type: ignore[arg-type]
    return roles


def record(out: Path, tools: int = 8, restarts: int = 3) -> int:
    """Record the list into ``out``; how many names it holds."""
    with tempfile.TemporaryDirectory(prefix="toolvisor-hotcode-") as directory:
        roles = _exercise(directory, tools, restarts)
        order: dict[tuple[str, str], None] = {}
        for role in ("tool", "supervisor", "zygote", "root"):
            seen: dict[tuple[str, str], None] = {}
            for pid in sorted(roles[role]):
                seen.update(dict.fromkeys(_keys(directory, pid)))
            for key in sorted(seen):
                order.setdefault(key)
            print(f"{role}: {len(roles[role])} process(es), {len(seen)} functions",
                  file=sys.stderr)
    out.write_text(HEADER + "".join(f"{m}\t{q}\n" for m, q in order), encoding="utf-8")
    print(f"wrote {len(order)} names to {out}", file=sys.stderr)
    return len(order)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path,
                        default=Path(__file__).resolve().parent.parent / "actors" / "hotcode.txt")
    args = parser.parse_args(argv)
    os.environ["TOOLVISOR_HOTCODE"] = "off"  # (record where the functions run, not copies)
    return 0 if record(args.out) else 1


if __name__ == "__main__":
    sys.exit(main())
