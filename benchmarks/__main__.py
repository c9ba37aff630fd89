"""``python -m benchmarks``: run the whole suite once, print the table, write the JSON (and the plot).

Sections run one after another, each in a fresh Python process of its own
(``--in-process`` runs them all in this one), so no section's processes or
leftover heap disturb another's: round trip (pipe, bare ask, slow and
fast path, pykka, Ray), the thespian path over host stack depths, throughput
(batch, async, burst), frame sizes, spawn (plus memory), restart,
start/shutdown, resource accounting, tools talking to tools, callers (a thread
per call, a crowd of idle connections), security, monitoring, faults and chaos (SIGKILLs
under load), and the memory of an idle tool and a supervisor (sharing on and off).
A section that fails is reported as an error in the table and the JSON, the others
still run, and the exit status is 1. ``--quick`` runs short versions of everything
(under a minute on 2 cores).
"""

from __future__ import annotations

import argparse
import importlib
import json
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from benchmarks import leftovers, machine, plot, report

UNITS = {"_ms": "milliseconds", "_s": "seconds", "_mib / _mb": "MiB (2**20 bytes)",
         "_bytes": "bytes", "calls_per_s": "calls per second",
         "ratio_*": "dimensionless (first figure / second figure)"}
PLOT = "docs/bench-latency.png"
SCALE_PLOT = "docs/bench-scale.png"
POOL_PLOT = "docs/bench-pool.png"
LONG_MEMORY_S = 600.0
SECTION_TIMEOUT_S = 1500.0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a short run of every section (< 60 s)")
    p.add_argument("--long", action="store_true",
                   help=f"accountant memory over {LONG_MEMORY_S:.0f} s at the default 1 s cadence "
                        "(the issue's 10-minute run)")
    p.add_argument("--out", default="bench-results.json", help="where to write the JSON")
    p.add_argument("--plot", help=f"where to draw the latency PNG (default {PLOT} on a full run, "
                                  "none on a quick run)")
    p.add_argument("--no-plot", action="store_true",
                   help="draw no PNG (neither the latency plot nor the scale and pool plots)")
    p.add_argument("--samples", type=int, help="round-trip samples per peer (3000; quick 300)")
    p.add_argument("--tools", type=int, help="tools to spawn in the spawn section (100; quick 25)")
    p.add_argument("--restarts", type=int, help="kill/restart repetitions (30; quick 8)")
    p.add_argument("--memory-seconds", type=float,
                   help="accountant memory run length (90; quick 5; --long 600)")
    p.add_argument("--duration", type=float,
                   help="chaos run length in seconds (60; quick 15)")
    p.add_argument("--sizes", help="tree sizes (tools) for the memory and scale sections, "
                                   "comma-separated (memory 25,250, quick 25; scale 25,250,1000, "
                                   "quick 25,100, the largest also under one supervisor)")
    p.add_argument("--only", action="append", choices=list(report.BUILDERS),
                   help="run only this section (repeatable)")
    p.add_argument("--log-level", default="WARNING",
                   help="toolvisor log level inside the benchmark (default WARNING)")
    p.add_argument("--in-process", action="store_true",
                   help="run every section in this process instead of one fresh process each")
    # child mode: no table, no latency plot (the parent draws it from every section's figures)
    p.add_argument("--quiet", action="store_true", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def _forwarded(args: argparse.Namespace) -> list[str]:
    """The options a section's child process needs (everything that shapes a section)."""
    out = ["--log-level", args.log_level]
    for flag in ("quick", "long", "no_plot"):
        if getattr(args, flag):
            out.append(f"--{flag.replace('_', '-')}")
    for name in ("samples", "tools", "restarts", "memory_seconds", "duration", "sizes"):
        value = getattr(args, name)
        if value is not None:
            out += [f"--{name.replace('_', '-')}", str(value)]
    return out


def _in_child(name: str, args: argparse.Namespace) -> tuple[dict[str, Any], list[Any]]:
    """Run one section in a fresh ``python -m benchmarks``; its figures and its stray processes."""
    with tempfile.TemporaryDirectory(prefix="toolvisor-bench-") as tmp:
        out = f"{tmp}/section.json"
        cmd = [sys.executable, "-m", "benchmarks", *_forwarded(args), "--only", name, "--out", out,
               "--in-process", "--quiet"]
        try:
            done = subprocess.run(cmd, timeout=SECTION_TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired:
            return {"error": f"the section's process ran over {SECTION_TIMEOUT_S:.0f} s and was killed"}, []
        try:
            data = json.loads(open(out).read())
        except (OSError, ValueError) as exc:
            return {"error": f"the section's process exited {done.returncode} with no results ({exc})"}, []
    return data.get(name, {"error": "no figures"}), data["meta"].get("stray_processes_killed", [])


def _section(module: str) -> Any:
    """A section's module, imported only when its section runs: a section's process then
    holds only the modules that section needs, so the tools and supervisors it forks do not
    inherit (and pay for) the others' (aiohttp and prometheus_client alone add 0.15-0.3 MiB
    to every process of a tree; docs/benchmarks.md, scale, eighth pass)."""
    return importlib.import_module(f"benchmarks.{module}")


def _sections(args: argparse.Namespace) -> dict[str, Callable[[], dict[str, Any]]]:
    q = args.quick
    samples = args.samples or (300 if q else 3000)
    level = args.log_level
    memory_s = args.memory_seconds or (LONG_MEMORY_S if args.long else 5.0 if q else 90.0)
    cadence = 1.0 if args.long else 0.05  # long: the default cadence; else fill the history ring quickly
    depths = [0, 40, 80] if q else list(range(0, 200, 10))  # ~1 KiB of frame stack per 10 frames

    def roundtrip() -> dict[str, Any]:
        mod = _section("roundtrip")
        return mod.run(mod.RoundTripSettings(samples=samples, warmup=50 if q else 200,
                                             block=min(50, samples)), level)

    def scale() -> dict[str, Any]:
        mod = _section("scale")
        sizes = _sizes(args.sizes) or ((25, 100) if q else mod.SIZES)
        return _plotted(mod.run(sizes, restarts=5 if q else 10,
                                calls=100 if q else 300, log_level=level,
                                one_supervisor=(max(sizes),)),
                        mod.plot, None if q or args.no_plot else SCALE_PLOT)

    def pool() -> dict[str, Any]:
        mod = _section("pools")
        return _plotted(mod.run(q, level), mod.plot, None if q or args.no_plot else POOL_PLOT)

    def memory() -> dict[str, Any]:
        mod = _section("idle_memory")
        return mod.run(_sizes(args.sizes) or ((25,) if q else mod.SIZES), log_level=level)

    return {
        "roundtrip": roundtrip,
        "stackdepth": lambda: _section("stackdepth").run(depths, 100 if q else 200, level),
        "throughput": lambda: _section("throughput").run(1000, 10 if q else 100, 256, 20 if q else 200,
                                                         20_000, level),
        "frames": lambda: _section("frames").run(),
        "spawn": lambda: _section("spawning").run(args.tools or (25 if q else 100), level),
        "restart": lambda: _section("restart").run(args.restarts or (8 if q else 30), level),
        "lifecycle": lambda: _section("lifecycle").run(2 if q else 5, level),
        "faults": lambda: _section("faults").run(tries=args.restarts or (50 if q else 1000),
                                                 hang_repeats=1 if q else 3, queries=150 if q else 600,
                                                 sweep_step_ms=50 if q else 10, log_level=level),
        "accounting": lambda: _section("accounting").run(tools=100, sweeps=5 if q else 30,
                                                         duration=memory_s, cadence=cadence,
                                                         periods=[0.25] if q else [0.25, 1.0],
                                                         repeats=3 if q else 6, log_level=level),
        "messaging": lambda: _section("messaging").run(samples=samples, block=min(100, samples),
                                                       sends=20_000 if q else 200_000,
                                                       cycles=5 if q else 30, log_level=level),
        "callers": lambda: _section("callers").run(500 if q else 10_000, 200 if q else 2_000,
                                                   200 if q else 1_000, 200 if q else 2_000, level),
        "security": lambda: _section("security").run(q),
        "chaos": lambda: _section("chaos").run(duration=args.duration or (15.0 if q else 60.0),
                                               log_level=level),
        "mcp": lambda: _section("mcp").run(q),
        "monitoring": lambda: _section("monitoring").run(q),
        "scale": scale,
        "pool": pool,
        "memory": memory,
    }


def _sizes(text: str | None) -> tuple[int, ...]:
    """``--sizes 25,250`` as a tuple of positive ints (empty if not given)."""
    if not text:
        return ()
    try:
        sizes = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise SystemExit(f"--sizes={text!r} is invalid: give tool counts separated by commas, "
                         "e.g. --sizes 25,250") from None
    if not sizes or min(sizes) < 1:
        raise SystemExit(f"--sizes={text!r} is invalid: each size must be at least 1")
    return sizes


def _plotted(result: dict[str, Any], draw: Callable[[dict[str, Any], str], str],
             path: str | None) -> dict[str, Any]:
    """A section's figures, with its plot drawn to ``path`` (full runs only)."""
    if path:
        try:
            result["plot"] = draw(result, path)
        except Exception as exc:  # e.g. matplotlib missing: the figures still count
            result["plot_error"] = f"{type(exc).__name__}: {exc}"
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results: dict[str, Any] = {"meta": {
        "command": "python -m benchmarks " + " ".join(sys.argv[1:] if argv is None else argv),
        "started_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "quick": args.quick, "machine": machine.describe(), "source": machine.source_state(),
        "units": UNITS}}
    results["meta"]["sections_in"] = "this process" if args.in_process else "one fresh process each"
    failed = False
    stray: list[Any] = []
    t0 = time.perf_counter()
    for name, run in _sections(args).items():
        if args.only and name not in args.only:
            continue
        if not args.quiet:
            print(f"running {name} ...", file=sys.stderr, flush=True)
        ts = time.perf_counter()
        if not args.in_process:
            results[name], found = _in_child(name, args)
            stray += found
        else:
            try:
                results[name] = run()
            except Exception as exc:  # report it and go on with the other sections
                traceback.print_exc()
                results[name] = {"error": f"{type(exc).__name__}: {exc}"}
        failed = failed or "error" in results[name]
        results[name]["section_s"] = round(time.perf_counter() - ts, 2)
    results["meta"]["duration_s"] = round(time.perf_counter() - t0, 2)
    results["meta"]["loadavg_at_end"] = machine.loadavg()
    stray += leftovers.sweep()
    results["meta"]["stray_processes_killed"] = stray
    if stray:
        failed = True
        print(f"warning: {len(stray)} process(es) outlived their ToolSystem: {stray}", file=sys.stderr)
    target = None if args.no_plot or args.quiet else args.plot or (None if args.quick else PLOT)
    if target:
        results["meta"]["plot"] = plot.latency_png(results, target)
    report.write_json(results, args.out)
    if not args.quiet:
        print(report.table(results))
        print(f"\nJSON written to {args.out}" + (f"; plot: {results['meta']['plot']}" if target else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
