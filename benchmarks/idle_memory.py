"""Memory of an idle tool and of a supervisor (issue 10): USS and PSS, sharing on and off.

For each size N (25 and 250 tools, 25 per supervisor, as in the scale section)
and each variant, a fresh Python process starts a ToolSystem, spawns N
``examples.counter:Counter`` tools by name, waits until they are idle, and
measures:

- ``idle_tool``: the last tool spawned under the first supervisor (the one the
  scale section measures), ``first_tool`` the first one, and the median USS/PSS
  of up to 10 tools spread over the tree;
- ``supervisor``: the first supervisor (25 tools).

Variants (each its own process, so no import of one run helps the next):

- ``off``: ``TOOLVISOR_SHARING=off``, as before issue 10's memory work;
- ``on``: the default (actors/sharing.py);
- ``on_imported``: the default, and the host imports the tool's module before the
  system starts, as a program does that imports its tool classes (or loads a
  config file) before ``with ToolSystem()``;
- ``on_preload``: the default plus ``TOOLVISOR_PRELOAD_TOOLS=1`` (opt-in: each
  supervisor imports the tool's module before it forks the tool);
- ``imported_no_hotcode``: ``on_imported`` with ``TOOLVISOR_HOTCODE=off``: the
  functions the actor processes run left where their modules' import put them
  (actors/hotcode.py);
- ``imported_no_zygote``: ``on_imported`` with ``TOOLVISOR_ZYGOTE=off``: each tool
  forked by its supervisor itself, not by the supervisor's zygote (actors/zygote.py).

Each run also gives the footprint of the first supervisor's zygote (the process
that forked its tools) and ``tree_pss_mib``: the PSS of every process of the
system added up (admin, logger, root, accountant, supervisors, zygotes, tools),
the figure to compare when one variant moves memory from tools to supervisors.

USS counts the pages only this process maps; PSS shares each page among the
processes that map it. The load average is recorded: the machine is shared.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any

TOOL = "examples.counter:Counter"
PER_SUPERVISOR = 25
SIZES = (25, 250)
VARIANTS = ("off", "on", "on_imported", "on_preload", "imported_no_hotcode",
            "imported_no_zygote")
TARGETS = {"tool_uss_mib_max": 6.0, "supervisor_uss_mib_max": 6.0}
CHILD_TIMEOUT_S = 600.0


def measure(n: int, log_level: str | None = None) -> dict[str, Any]:
    """In this process: a tree of ``n`` idle tools, and the memory of its processes."""
    if os.environ.get("TOOLVISOR_BENCH_IMPORT_TOOL"):
        import examples.counter  # noqa: F401  (before the actor system forks)
    from benchmarks import machine
    from benchmarks.memory import footprint, forker_footprint
    from benchmarks.stats import median_of
    from supervisors import Backoff, Policy, ToolSystem
    from supervisors.processes.procs import session_pids

    policy = Policy(max_restarts=1000, period=1.0, backoff=Backoff.none())
    load = machine.loadavg()
    with ToolSystem(policy=policy, log_level=log_level, data_dir=False) as system:
        sups = [system.supervise(f"s{j:03d}", policy=policy)
                for j in range((n + PER_SUPERVISOR - 1) // PER_SUPERVISOR)]
        for i in range(n):
            sups[i // PER_SUPERVISOR].spawn(TOOL, name=f"t{i:04d}")
        last = min(n, PER_SUPERVISOR) - 1
        system.tool(f"s000/t{last:04d}").call("get")
        time.sleep(1.0)  # idle: nothing left to answer, no start still settling
        step = max(1, n // 10)
        sample = [footprint(system.tool(f"s{i // PER_SUPERVISOR:03d}/t{i:04d}").status().pid)
                  for i in range(0, n, step)]
        sup_pid = sups[0].status().pid
        idle_pid = system.tool(f"s000/t{last:04d}").status().pid
        tree = [footprint(pid) for pid in session_pids(system.sid)] if system.sid else []
        out = {"tools": n, "supervisors": len(sups),
               "zygote": forker_footprint(idle_pid, sup_pid),
               "tree_pss_mib": round(sum(f.get("pss_mib", 0.0) for f in tree), 1),
               "tree_processes": len(tree),
               "idle_tool": footprint(system.tool(f"s000/t{last:04d}").status().pid),
               "first_tool": footprint(system.tool("s000/t0000").status().pid),
               "median_tool": {"uss_mib": median_of(sample, "uss_mib"),
                               "pss_mib": median_of(sample, "pss_mib"), "sampled": len(sample)},
               "supervisor": footprint(sup_pid),
               "loadavg_start": load, "loadavg_end": machine.loadavg()}
    return out


def _child(n: int, variant: str, log_level: str | None) -> dict[str, Any]:
    env = dict(os.environ)
    env["TOOLVISOR_SHARING"] = "off" if variant == "off" else "on"
    env.pop("TOOLVISOR_BENCH_IMPORT_TOOL", None)
    env["TOOLVISOR_PRELOAD_TOOLS"] = "1" if variant == "on_preload" else ""
    env["TOOLVISOR_ZYGOTE"] = "off" if variant == "imported_no_zygote" else "on"
    env["TOOLVISOR_HOTCODE"] = "off" if variant == "imported_no_hotcode" else "on"
    if variant in ("on_imported", "imported_no_hotcode", "imported_no_zygote"):
        env["TOOLVISOR_BENCH_IMPORT_TOOL"] = "1"
    cmd = [sys.executable, "-m", "benchmarks.idle_memory", str(n), log_level or "WARNING"]
    try:
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=CHILD_TIMEOUT_S,
                              check=False)
    except subprocess.TimeoutExpired:
        return {"error": f"ran over {CHILD_TIMEOUT_S:.0f} s"}
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        return {"error": f"exited {done.returncode}: {done.stderr.strip()[-300:]}"}
    return json.loads(lines[-1])


def run(sizes: tuple[int, ...] = SIZES, variants: tuple[str, ...] = VARIANTS,
        log_level: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"target": dict(TARGETS), "per_supervisor": PER_SUPERVISOR, "tool": TOOL,
                           "sizes": {}}
    for n in sizes:
        out["sizes"][str(n)] = {v: _child(n, v, log_level) for v in variants}
    return out


def rows(section: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    from benchmarks.report import _f, at_most

    t = section["target"]
    out = []

    def pair(fig: dict[str, Any]) -> str:
        return f"{_f(fig.get('uss_mib'))} / {_f(fig.get('pss_mib'))}"

    for key, variants in section["sizes"].items():
        for v, fig in variants.items():
            load = fig.get("loadavg_start", "?")
            if "error" in fig:
                out.append((f"memory {key} tools, sharing {v}", "ERROR: " + fig["error"][:60], "-", "-"))
                continue
            judged = v != "off"
            out += [
                (f"memory {key} tools, sharing {v} (load {load}): idle tool USS / PSS MiB",
                 pair(fig["idle_tool"]), f"USS <= {t['tool_uss_mib_max']}" if judged else "-",
                 at_most(fig["idle_tool"].get("uss_mib"), t["tool_uss_mib_max"]) if judged else "ref"),
                ("  first tool / median tool USS / PSS", f"{pair(fig['first_tool'])}; "
                 f"{pair(fig['median_tool'])}", "-", "ref"),
                ("  supervisor (25 tools) USS / PSS MiB", pair(fig["supervisor"]),
                 f"USS <= {t['supervisor_uss_mib_max']}" if judged else "-",
                 at_most(fig["supervisor"].get("uss_mib"), t["supervisor_uss_mib_max"]) if judged else "ref"),
                ("  its zygote USS / PSS MiB; whole tree PSS MiB (processes)",
                 f"{pair(fig.get('zygote') or {})}; {_f(fig.get('tree_pss_mib'))} "
                 f"({fig.get('tree_processes', '?')})", "-", "ref"),
            ]
    return out


if __name__ == "__main__":  # one measurement, as JSON on stdout (run() starts these)
    print(json.dumps(measure(int(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else None)))
