"""Turn the results into the stdout table (figure, measured, target, verdict) and the JSON file.

A verdict says by how much: ``met, 38% under`` / ``MISSED, 25% over`` for an
upper bound, ``met, 8.7x`` / ``MISSED, 40% short`` for a lower bound; ``ref``
marks a figure with no target.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

Row = tuple[str, str, str, str]
PEERS = (("pipe", "raw multiprocessing Pipe"), ("bare_ask", "bare Thespian ask (Echo)"),
         ("slow_path", "toolvisor slow path (thespian)"), ("fast_path", "toolvisor fast path (socket)"),
         ("pykka", "pykka ThreadingActor ask"), ("ray", "Ray actor call"))


def _f(x: Any, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    if isinstance(x, float):
        return f"{x:,.0f}" if abs(x) >= 10_000 else f"{x:.{digits}g}"
    return f"{x:,}" if isinstance(x, int) and abs(x) >= 10_000 else str(x)


def _trio(s: dict[str, Any]) -> str:
    return " / ".join(_f(s.get(k)) for k in ("p50_ms", "p99_ms", "mean_ms"))


def at_most(value: float | None, limit: float) -> str:
    if value is None or math.isnan(value):
        return "n/a"
    if value <= limit:
        return f"met, {(1 - value / limit):.0%} under" if limit else "met"
    return f"MISSED, {(value / limit - 1):.0%} over"


def at_least(value: float | None, limit: float) -> str:
    if value is None or math.isnan(value):
        return "n/a"
    if value >= limit:
        return f"met, {value / limit:.1f}x"
    return f"MISSED, {(1 - value / limit):.0%} short"


def _roundtrip_rows(r: dict[str, Any]) -> list[Row]:
    t = r["target"]
    rows: list[Row] = [("round trip p50 / p99 / mean ms", "", "", "")]
    for key, label in PEERS:
        if key in r:
            rows.append((f"  {label}", _trio(r[key]), "-", "ref"))
        elif key in r.get("peers", {}):
            rows.append((f"  {label}", r["peers"][key][:60], "-", "-"))
    fp, sb = r["ratio_fast_over_pipe"], r["ratio_slow_over_bare_ask"]
    fb = r["ratio_fast_over_bare_ask"]
    rows += [
        ("  fast p50 / pipe p50", f"{_f(fp['p50'])}x", f"<= {_f(t['fast_p50_over_pipe_p50_max'])}x",
         at_most(fp["p50"], t["fast_p50_over_pipe_p50_max"])),
        ("  fast p99 / pipe p99 (the verdict)", f"{_f(fp['p99'])}x",
         f"<= {_f(t['fast_p99_over_pipe_p99_max'])}x", at_most(fp["p99"], t["fast_p99_over_pipe_p99_max"])),
        ("  fast p99 / pipe p50 (stricter reading)", f"{_f(fp['p99_over_pipe_p50'])}x",
         f"<= {_f(t['fast_p99_over_pipe_p99_max'])}x",
         at_most(fp["p99_over_pipe_p50"], t["fast_p99_over_pipe_p99_max"])),
        ("  slow / bare ask, p50; mean (this layout)", f"{_f(sb['p50'])}x; {_f(sb['mean'])}x",
         f"<= {_f(t['slow_over_bare_ask_max'])}x",
         at_most(max(sb["p50"], sb["mean"]), t["slow_over_bare_ask_max"])),
        ("  fast / bare ask, p50", f"{_f(fb['p50'])}x", "-", "ref"),
    ]
    return rows


def _depth_rows(s: dict[str, Any]) -> list[Row]:
    def trio(d: dict[str, float], unit: str = "") -> str:
        return " / ".join(f"{_f(d[k])}{unit}" for k in ("min", "median", "max"))

    n = len(s["depths"])
    limit = s["target"]["slow_over_bare_ask_max"]
    return [
        (f"thespian path over {n} host stack depths", "min / median / max", "", ""),
        ("  slow path p50 ms", trio(s["slow_path_p50_ms"]), "-", "ref"),
        ("  bare ask p50 ms", trio(s["bare_ask_p50_ms"]), "-", "ref"),
        ("  slow / bare ask p50, paired per depth", trio(s["ratio_slow_over_bare"], "x"),
         f"<= {_f(limit)}x", at_most(s["ratio_slow_over_bare"]["median"], limit) + " (median)"),
    ]


def _throughput_rows(s: dict[str, Any]) -> list[Row]:
    t, b, a, u = s["target"], s["batch"], s["async"], s["burst"]
    ok = u["exactly_once"] and u["final_count_ok"] and u["errors"] == 0
    return [
        (f"batched call_many({b['batch_size']}) x {b['batches']}, calls/s", _f(b["calls_per_s"]),
         f">= {_f(t['batch_calls_per_s_min'])}", at_least(b["calls_per_s"], t["batch_calls_per_s_min"])
         + ("" if b["answers_ok"] else " (WRONG ANSWERS)")),
        (f"async {a['workers']} workers over {a['tools']} tools, calls/s", _f(a["calls_per_s"]),
         f">= {_f(t['async_calls_per_s_min'])}", at_least(a["calls_per_s"], t["async_calls_per_s_min"])
         + ("" if a["answers_ok"] else " (WRONG COUNTS)")),
        (f"burst: gather of {_f(u['calls'])} acalls to one tool",
         f"{_f(u['seconds'])} s, {_f(u['answers'])} answers, {_f(u['distinct_answers'])} distinct",
         "each exactly once", "met" if ok else f"MISSED ({u['errors']} errors {u['error_types']})"),
    ]


def _frames_rows(s: dict[str, Any]) -> list[Row]:
    rows: list[Row] = [("bytes per message: frame (msgpack+4) vs pickle dict / dataclass", "", "", "")]
    for m in s["messages"]:
        rows.append((f"  {m['message']}", f"{m['frame_bytes']} vs {m['pickle_dict_bytes']} / "
                     f"{m['pickle_dataclass_bytes']} B = {_f(m['ratio_frame_over_pickle_dict'], 2)}x / "
                     f"{_f(m['ratio_frame_over_pickle_dataclass'], 2)}x", "-", "ref"))
    return rows


def _spawn_rows(s: dict[str, Any]) -> list[Row]:
    t = s["target"]
    rows: list[Row] = []
    failed = s.get("with_defaults")
    if failed is not None:
        why = failed["error"].rpartition("last failure in ")[2] or failed["error"]
        rows.append(("spawn tools with default options", f"FAILED at tool #{failed['failed_at_tool']} "
                     f"after {_f(failed['seconds_until_failure'])} s", "-", "MISSED"))
        rows.append(("  cause", why.split(" (on_limit")[0][:64], "-", "-"))
    if "error" in s:
        return rows + [("spawn", "ERROR: " + s["error"][:60], "-", "-")]
    scaled = t["total_s_max"] * s["tools"] / t["tools"]
    opts = ", ".join(f"{k}={v!r}" for k, v in s["spawn_options"].items()) or "defaults"
    mem = s["memory"]
    return rows + [
        (f"spawn {s['tools']} tools ({opts}), total s", _f(s["total_s"]), f"< {_f(scaled)} s",
         at_most(s["total_s"], scaled) + ("" if failed is None else " w/ alert")),
        ("  per tool p50 / p99 / mean ms", _trio(s["per_tool"]), "-", "ref"),
        (f"  shutdown with {s['tools']} tools, s", _f(s["shutdown_with_tools_s"]), "-", "ref"),
        ("memory USS MiB: idle tool", _f(mem["idle_tool"].get("uss_mib")), "-", "ref"),
        ("  supervisor (of those tools)", _f(mem["supervisor"].get("uss_mib")), "-", "ref"),
        ("  root supervisor", _f(mem["root_supervisor"].get("uss_mib")), "-", "ref"),
    ]


def _restart_rows(r: dict[str, Any]) -> list[Row]:
    limit = r["target"]["from_dead_p50_ms_max"]
    d, k = r["from_dead"], r["from_kill"]
    return [
        (f"restart ({r['repeats']}x) dead->call ok p50 / p99 ms", f"{_f(d['p50_ms'])} / {_f(d['p99_ms'])}",
         f"p50 < {_f(limit)}", at_most(d["p50_ms"], limit)),
        ("  kill->call ok p50 / p99 ms", f"{_f(k['p50_ms'])} / {_f(k['p99_ms'])}", "-", "ref"),
    ]


def _lifecycle_rows(s: dict[str, Any]) -> list[Row]:
    return [
        ("ToolSystem start p50 ms (empty tree)", _f(s["start"]["p50_ms"]), "-", "ref"),
        ("ToolSystem shutdown p50 ms (empty tree)", _f(s["shutdown"]["p50_ms"]), "-", "ref"),
    ]


def _accounting_rows(s: dict[str, Any]) -> list[Row]:
    t, f = s["target"], s["fleet"]
    o, m, sp = f["overhead"], f["memory"], f["spawn"]
    n = o["tools_swept"]
    scaled = t["sweep_100_tools_ms_max"] * n / 100
    rows: list[Row] = []
    if sp.get("with_defaults"):
        rows.append((f"accounting fleet: default spawn failed at #{sp['with_defaults']['failed_at_tool']}",
                     sp["with_defaults"]["error"][:60], "-", "-"))
    later = f.get("overhead_after_memory_run")
    steady, early = (later, o) if later else (o, None)
    rows += [
        (f"sweep of {n} tools, steady state: p50 / max ms (forced x{steady['forced_sweeps']})",
         f"{_f(steady['sweep_ms']['p50_ms'])} / {_f(steady['sweep_ms']['max_ms'])}", f"< {_f(scaled)}",
         at_most(steady["sweep_ms"]["p50_ms"], scaled) + " (p50)"),
        ("  per tool p50 / max ms", f"{_f(steady['ms_per_tool_p50'])} / {_f(steady['ms_per_tool_max'])}",
         f"<= {_f(t['ms_per_tool_max'])}",
         at_most(steady["ms_per_tool_p50"], t["ms_per_tool_max"]) + " (p50)"),
    ]
    if early is not None:
        rows.append(("  right after spawn (short histories): p50 / max ms; per tool",
                     f"{_f(early['sweep_ms']['p50_ms'])} / {_f(early['sweep_ms']['max_ms'])}; "
                     f"{_f(early['ms_per_tool_p50'])}", "-", "ref"))
    bg = o["background"]
    rows.append(("  background sweeps during spawn, mean / max ms",
                 f"{_f(bg['mean_sweep_ms'])} / {_f(bg['max_sweep_ms'])}", "-", "ref"))
    for b in s["breach"]:
        rows.append((f"breach->restart, period {_f(b['period_s'])} s: p50 / max periods",
                     f"{_f(b['periods_p50'])} / {_f(b['periods_max'])} ({b['repeats']}x)",
                     f"< {_f(t['breach_periods_max'])}", at_most(b["periods_max"], t["breach_periods_max"])
                     + " (max)"))
        ret, start = b["breach_to_restart"], b["call_start_to_restart"]
        rows.append(("  ms p50 / max: from leak return; from leak start",
                     f"{_f(ret['p50_ms'])} / {_f(ret['max_ms'])}; "
                     f"{_f(start['p50_ms'])} / {_f(start['max_ms'])}",
                     "-", "ref"))
    ring, full = m["history_ring"], m["after_ring_full"]
    rows.append((f"accountant RSS MiB over {_f(m['duration_s'])} s (sweep every {_f(m['sweep_period_s'])} s)",
                 f"{_f(m['rss_mb_start'])} -> {_f(m['rss_mb_end'])} ({m['growth_mib']:+.2f}; "
                 f"{_f(m['slope_mib_per_min'])} MiB/min)", "-", "ref"))
    rows.append((f"  history ring full (~{_f(ring['full_mib_about'])} MiB) after "
                 f"~{_f(ring['full_after_s_about'])} s; growth after",
                 "n/a: run ended first" if full["growth_mib"] is None else
                 f"{full['growth_mib']:+.2f} ({full['readings']} readings)",
                 f"<= {_f(t['memory_growth_mib_max'])}",
                 "n/a" if full["growth_mib"] is None else
                 at_most(max(0.0, full["growth_mib"]), t["memory_growth_mib_max"])))
    rows.append(("  accountant USS MiB, start -> end", f"{_f(m['uss_mib_start'])} -> "
                 f"{_f(m['uss_mib_end'])} ({m['uss_growth_mib']:+.2f})", "-", "ref"))
    return rows


def _messaging_rows(s: dict[str, Any]) -> list[Row]:
    t, h, c = s["target"], s["host_call"], s["tool_call"]
    r = s["ratio_tool_p50_over_host_p50"]
    snd, dc, db = s["send"], s["deadlock_chain"], s["deadlock_board"]
    return [
        ("tool->tool call p50 / p99 ms (host->tool)", f"{_f(c['p50_ms'])} / {_f(c['p99_ms'])} "
         f"({_f(h['p50_ms'])} / {_f(h['p99_ms'])})", "-", "ref"),
        ("  tool->tool p50 / host->tool p50", _f(r), f"<= {_f(t['call_p50_over_host_p50_max'])}",
         at_most(r, t["call_p50_over_host_p50_max"])),
        (f"tool->tool send, {snd['n']} msgs, per s", _f(snd["msgs_per_s"]),
         f">= {_f(t['send_per_s_min'])}", at_least(snd["msgs_per_s"], t["send_per_s_min"])),
        ("deadlock caught: chain / wait board, max ms", f"{_f(dc.get('max_ms'))} / {_f(db.get('max_ms'))}",
         f"< {_f(t['deadlock_ms_max'])}",
         at_most(max(dc.get("max_ms", math.nan), db.get("max_ms", math.nan)), t["deadlock_ms_max"])),
    ]


def _callers_rows(s: dict[str, Any]) -> list[Row]:
    t = s["target"]
    rows: list[Row] = []
    for path in ("socket", "thespian"):
        r = s[path]
        growth = max(r["host_fds_after"] - r["host_fds_before"], r["tool_fds_after"] - r["tool_fds_before"])
        rows += [
            (f"thread per call, {path} path: {r['calls']:,} calls, failed", _f(r["failed"]),
             "0", "met" if r["failed"] == 0 else "MISSED"),
            ("  descriptors host / tool, before -> after",
             f"{r['host_fds_before']} -> {r['host_fds_after']} / {r['tool_fds_before']} -> "
             f"{r['tool_fds_after']}", f"growth <= {t['fd_growth_max']}",
             "met" if growth <= t["fd_growth_max"] else f"MISSED, +{growth}"),
            ("  calls/s: new thread each / one reused thread",
             f"{_f(r['thread_per_call_calls_per_s'])} / {_f(r['reused_thread_calls_per_s'])}", "-", "ref"),
        ]
    i = s["idle"]
    ok = i["state"] == "running" and i["restarts"] == 0
    rows += [
        (f"{i['idle_callers']:,} idle callers on one tool: state, restarts", f"{i['state']}, {i['restarts']}",
         "running, 0", "met" if ok else "MISSED"),
        ("  callers / open_files counted", f"{i['callers_counted']} / {i['open_files_counted']}", "-", "ref"),
        ("  tool USS MiB before / with the crowd",
         f"{_f(i['tool_uss_before_mb'])} / {_f(i['tool_uss_with_crowd_mb'])}", "-", "ref"),
        ("  active caller p50 / p99 / mean ms, alone", _trio(i["latency_alone"]), "-", "ref"),
        ("  active caller p50 / p99 / mean ms, with the crowd", _trio(i["latency_with_crowd"]), "-", "ref"),
    ]
    return rows


def _faults_rows(s: dict[str, Any]) -> list[Row]:
    m, h, q, k = s["missed_deaths"], s["hang"], s["query_latency"], s["host_kill"]
    hs = h["hang_to_serving"]
    return [
        (f"missed deaths ({m['tries']} kills + sibling op)", str(m["missed"]), "0",
         "met" if m["missed"] == 0 else "MISSED"),
        (f"hang -> replacement serving p50 / max ms (hang_timeout {h['hang_timeout_s']:g} s)",
         f"{_f(hs['p50_ms'])} / {_f(hs['max_ms'])}", f"< {_f(h['target_ms'])}",
         at_most(hs["max_ms"], h["target_ms"])),
        ("supervisor query during restart loop p50 / p99 ms",
         f"{_f(q['all']['p50_ms'])} / {_f(q['all']['p99_ms'])}", "p99 < 10",
         at_most(q["all"]["p99_ms"], 10.0)),
        (f"host killed during start ({k['runs']} runs): leftovers", str(k["leftovers"]), "0",
         "met" if k["leftovers"] == 0 else "MISSED"),
        ("  slowest exit after SIGINT during start s", _f(k["sigint_exit_s_max"]), "-", "ref"),
    ]


def _chaos_rows(s: dict[str, Any]) -> list[Row]:
    c = s["chaos"]
    rate = s["recovery_rate"]
    return [
        (f"chaos {s['duration_s']:g}s, {s['tools']} tools: kills (of supervisors)",
         f"{c['kills']} ({c['supervisor_kills']})", "-", "ref"),
        ("  recovered (target serving again within 10 s)", f"{rate * 100:.1f} %", "100 %",
         "ok" if rate == 1.0 else "MISS"),
        ("  kill -> serving p50 / p99 ms", f"{_f(s['kill_to_serving_p50_ms'])} / "
         f"{_f(s['kill_to_serving_p99_ms'])}", "-", "ref"),
        ("  calls/s during chaos / without kills", f"{_f(s['calls_per_s_chaos'])} / "
         f"{_f(s['calls_per_s_quiet'])}", "-", "ref"),
        ("  unanswered calls, lost checkpoints, orphans",
         f"{c['unanswered']}, {c['checkpoints_lost']}, {c['orphans']}", "0, 0, 0",
         "ok" if (c["unanswered"], c["checkpoints_lost"], c["orphans"]) == (0, 0, 0) else "MISS"),
        ("call p50 / p99 ms: plain / with a checkpoint",
         f"{_f(s['checkpoint']['plain_call']['p50_ms'])} / {_f(s['checkpoint']['plain_call']['p99_ms'])}"
         f" ; {_f(s['checkpoint']['checkpointing_call']['p50_ms'])} / "
         f"{_f(s['checkpoint']['checkpointing_call']['p99_ms'])}", "-", "ref"),
        ("breaker cost: call p50 us without / with", " / ".join(
            f"{a:g}-{b:g}" for a, b in ((min(s["breaker_call_p50"]["without_us"]),
                                         max(s["breaker_call_p50"]["without_us"])),
                                        (min(s["breaker_call_p50"]["with_us"]),
                                         max(s["breaker_call_p50"]["with_us"])))), "-", "ref"),
    ]


BUILDERS = {"roundtrip": _roundtrip_rows, "stackdepth": _depth_rows, "throughput": _throughput_rows,
            "frames": _frames_rows, "spawn": _spawn_rows, "restart": _restart_rows,
            "lifecycle": _lifecycle_rows, "accounting": _accounting_rows,
            "messaging": _messaging_rows, "callers": _callers_rows,
            "security": lambda section: _security_rows(section),
            "faults": _faults_rows, "chaos": _chaos_rows,
            "mcp": lambda section: _mcp_rows(section),
            "monitoring": lambda section: _monitoring_rows(section),
            "scale": lambda s: _scale_rows(s), "pool": lambda s: _pool_rows(s),
            "memory": lambda s: _memory_rows(s)}


def _memory_rows(section: dict[str, Any]) -> list[Row]:
    from benchmarks.idle_memory import rows

    return rows(section)


def _mcp_rows(section: dict[str, Any]) -> list[Row]:
    from benchmarks.mcp import rows

    return rows(section)


def _monitoring_rows(section: dict[str, Any]) -> list[Row]:
    from benchmarks.monitoring import rows

    return rows(section)


def _speed_rows(z: dict[str, Any]) -> list[Row]:
    """Spawn time and machine speed per hundred, when the run recorded them (issue 10)."""
    by = z.get("spawn_ms_by_hundred") or []
    probe = z.get("cpu_probe_ms_by_hundred") or []
    if len(by) < 2 or not any(probe):
        return []
    used = z.get("memory_used_gib") or []
    return [("  per hundred: spawn ms (median) | CPU probe ms | machine memory in use GiB",
             " ".join(_f(h[1]) for h in by) + " | " + " ".join(_f(p) for p in probe) + " | "
             + " ".join(_f(u) for u in used[1:]), "-", "ref"),
            *_handed_back_rows(z)]


def _handed_back_rows(z: dict[str, Any]) -> list[Row]:
    """How much free memory the VM handed back to its host while the tools started: each
    page of it costs 3-4 x more to write again (docs/scaling.md, "Not met")."""
    back = z.get("handed_back_gib")
    if not back:
        return []
    return [("  free memory the VM handed back to its host during the spawns, GiB so far",
             " ".join(_f(b) for b in back), "-", "ref")]


def _scale_rows(s: dict[str, Any]) -> list[Row]:
    t = s["target"]
    rows: list[Row] = []
    for key, z in s["sizes"].items():
        rows += [
            (f"scale {key} tools ({z['supervisors']} sups; load {z['loadavg_start']}): spawn total s",
             _f(z["spawn_total_s"]), "< 30 (1,000)" if key == "1000" else "-", "ref"),
            ("  spawn ms/tool first 25 / last 100 (ratio)",
             f"{_f(z['spawn_first25_ms_per_tool'])} / {_f(z['spawn_last100_ms_per_tool'])} "
             f"({_f(z['spawn_last100_over_first25'])}x)", f"<= {t['spawn_last100_over_first25_max']}x",
             at_most(z["spawn_last100_over_first25"], t["spawn_last100_over_first25_max"])),
            *_speed_rows(z),
            ("  call p50 ms / restart p50 ms", f"{_f(z['call']['p50_ms'])} / {_f(z['restart']['p50_ms'])}",
             "-", "ref"),
            ("  sweep ms per tool (wall; CPU) / accountant CPU",
             f"{_f(z['accountant']['sweep_ms_per_tool'])} "
             f"({_f(z['accountant'].get('sweep_cpu_ms_per_tool'))}) / "
             f"{_f(z['accountant']['cpu_fraction_at_sample_every_1'])}",
             f"<= {t['sweep_ms_per_tool_max']} / < {t['accountant_cpu_max']}",
             at_most(z["accountant"]["sweep_ms_per_tool"], t["sweep_ms_per_tool_max"])),
            ("  idle tool USS / PSS MiB",
             f"{_f(z['idle_tool'].get('uss_mib'))} / {_f(z['idle_tool'].get('pss_mib'))}",
             f"<= {t['tool_uss_mib_max']} (USS)",
             at_most(z["idle_tool"].get("uss_mib"), t["tool_uss_mib_max"])),
            (f"  supervisor USS / PSS MiB (s000: spawned its tools, restarted one "
             f"{z['restart'].get('n', '?')} times)",
             f"{_f(z['supervisor'].get('uss_mib'))} / {_f(z['supervisor'].get('pss_mib'))}",
             f"<= {t['supervisor_uss_mib_max']} (USS)",
             at_most(z["supervisor"].get("uss_mib"), t["supervisor_uss_mib_max"])),
            ("  other supervisors, median USS / PSS MiB (spawned their tools only)",
             f"{_f(z.get('other_supervisors', {}).get('uss_mib'))} / "
             f"{_f(z.get('other_supervisors', {}).get('pss_mib'))} "
             f"({z.get('other_supervisors', {}).get('sampled', 0)})",
             f"<= {t['supervisor_uss_mib_max']} (USS)",
             at_most(z.get("other_supervisors", {}).get("uss_mib"), t["supervisor_uss_mib_max"])
             if z.get("other_supervisors", {}).get("sampled") else "-"),
            ("  its zygote USS / PSS MiB (one per supervisor)",
             f"{_f((z.get('zygote') or {}).get('uss_mib'))} / {_f((z.get('zygote') or {}).get('pss_mib'))}",
             "-", "ref"),
            ("  root supervisor USS / PSS MiB (the event log; keeps the accountant)",
             f"{_f((z.get('root_supervisor') or {}).get('uss_mib'))} / "
             f"{_f((z.get('root_supervisor') or {}).get('pss_mib'))}",
             f"<= {t['supervisor_uss_mib_max']} (USS)",
             at_most((z.get("root_supervisor") or {}).get("uss_mib"), t["supervisor_uss_mib_max"])
             if z.get("root_supervisor") else "-"),
            ("  shutdown s", _f(z["shutdown_s"]), "< 10 (1,000)" if key == "1000" else "-",
             at_most(z["shutdown_s"], t["shutdown_1000_s_max"]) if key == "1000" else "ref"),
        ]
    for key, z in s.get("one_supervisor", {}).items():
        rows += [(f"scale {key} tools under ONE supervisor (load {z['loadavg_start']}): spawn total s",
                  _f(z["spawn_total_s"]), "< 30 (1,000)" if key == "1000" else "-",
                  at_most(z["spawn_total_s"], t["total_1000_s_max"]) if key == "1000" else "ref"),
                 ("  spawn ms/tool first 25 / last 100 (ratio)",
                  f"{_f(z['spawn_first25_ms_per_tool'])} / {_f(z['spawn_last100_ms_per_tool'])} "
                  f"({_f(z['spawn_last100_over_first25'])}x)", f"<= {t['spawn_last100_over_first25_max']}x",
                  at_most(z["spawn_last100_over_first25"], t["spawn_last100_over_first25_max"])),
                 ("  restart p50 ms / shutdown s", f"{_f(z['restart']['p50_ms'])} / {_f(z['shutdown_s'])}",
                  "< 10 s shutdown (1,000)" if key == "1000" else "-",
                  at_most(z["shutdown_s"], t["shutdown_1000_s_max"]) if key == "1000" else "ref"),
                 ("  idle tool USS / supervisor USS MiB",
                  f"{_f(z['idle_tool'].get('uss_mib'))} / {_f(z['supervisor'].get('uss_mib'))}",
                  f"<= {t['supervisor_uss_mib_max']} (supervisor)",
                  at_most(z["supervisor"].get("uss_mib"), t["supervisor_uss_mib_max"]))]
    interleaved = "ratio_restart_p50_big_over_25_interleaved" in s
    rows += [("scale: restart p50 largest / smallest, runs apart",
              f"{_f(s['ratio_restart_p50_big_over_small'])}x",
              "-" if interleaved else f"<= {t['restart_p50_ratio_max']}x",
              "ref" if interleaved else at_most(s["ratio_restart_p50_big_over_small"],
                                                t["restart_p50_ratio_max"]))]
    if interleaved:  # the tree's last tool against a tool of a second system of 25, in turns
        big = max(s["sizes"], key=int)
        shapes = [(f"{big}", s["sizes"][big])]
        shapes += [(f"{k} under one supervisor", v) for k, v in (s.get("one_supervisor") or {}).items()
                   if "restart_vs_25_interleaved" in v]
        for label, size in shapes:
            z = size["restart_vs_25_interleaved"]
            rows.append((f"scale: restart p50 among {label} / among 25, interleaved "
                         f"({_f(z['among_all']['p50_ms'])} / {_f(z['among_25']['p50_ms'])} ms)",
                         f"{_f(z['ratio_p50'])}x", f"<= {t['restart_p50_ratio_max']}x",
                         at_most(z["ratio_p50"], t["restart_p50_ratio_max"])))
    rows.append(("scale: call p50 largest / smallest", f"{_f(s['ratio_call_p50_big_over_small'])}x",
                 "-", "ref"))
    if "ratio_call_p50_big_over_one" in s:
        one_ms = _f(s["one_tool"]["call"]["p50_ms"])
        rows.append((f"scale: call p50 at {max(s['sizes'], key=int)} tools / with 1 tool ({one_ms} ms), "
                     "runs apart", f"{_f(s['ratio_call_p50_big_over_one'])}x", "-", "ref"))
    if "ratio_call_p50_big_over_one_interleaved" in s:
        z = s["sizes"][max(s["sizes"], key=int)]["call_vs_one_interleaved"]
        rows.append((f"scale: call p50 among {max(s['sizes'], key=int)} / alone, interleaved "
                     f"({_f(z['among_all']['p50_ms'])} / {_f(z['alone']['p50_ms'])} ms)",
                     f"{_f(s['ratio_call_p50_big_over_one_interleaved'])}x",
                     f"<= {t['call_p50_ratio_max']}x", at_most(s["ratio_call_p50_big_over_one_interleaved"],
                                                               t["call_p50_ratio_max"])))
    return rows


def _pool_rows(s: dict[str, Any]) -> list[Row]:
    t, tp, au = s["target"], s["throughput"], s["autoscale"]
    return [
        ("pool: sleep 10 ms calls/s by size", ", ".join(f"{k}: {_f(v)}" for k, v in
                                                         tp["sleep_10ms_calls_per_s"].items()), "-", "ref"),
        ("  pool of 4 / single (sleep 10 ms)", f"{_f(tp['ratio_sleep_pool4_over_single'])}x",
         f">= {t['sleep_pool4_over_single_min']}x",
         at_least(tp["ratio_sleep_pool4_over_single"], t["sleep_pool4_over_single_min"])),
        ("  pool of 2 / single (CPU 10 ms)", f"{_f(tp['ratio_cpu_pool2_over_single'])}x",
         f">= {t['cpu_pool2_over_single_min']}x",
         at_least(tp["ratio_cpu_pool2_over_single"], t["cpu_pool2_over_single_min"])),
        (f"  autoscale {au['load']['from_per_s']:g}->{au['load']['to_per_s']:g}/s: worst p99 / idle p99",
         f"{_f(au['ratio_worst_p99_over_idle_p99'])}x", f"<= {t['autoscale_p99_over_idle_p99_max']}x",
         at_most(au["ratio_worst_p99_over_idle_p99"], t["autoscale_p99_over_idle_p99_max"])),
        ("  max instances; back to min after s", f"{au['max_instances']}; {_f(au['back_to_min_after_s'])}",
         "-", "ref"),
    ]


def _security_rows(section: dict[str, Any]) -> list[Row]:
    from benchmarks.security import rows

    return rows(section)


def table(results: dict[str, Any]) -> str:
    """The human table: one row per figure, measured vs target and a verdict."""
    rows: list[Row] = [("figure", "measured", "target", "verdict")]
    for name, build in BUILDERS.items():
        section = results.get(name)
        if section is None:
            continue
        if "error" in section:
            rows.append((name, "ERROR: " + section["error"][:60], "-", "-"))
            continue
        rows.extend(build(section))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    m = results["meta"]["machine"]
    head = (f"toolvisor benchmarks ({'quick' if results['meta']['quick'] else 'full'} run; "
            f"{m['nproc']} CPUs, Python {m['python']}, Thespian {m['thespian']})")
    load = m.get("loadavg_at_start")
    if load and m.get("nproc") and load[0] > 0.5 * m["nproc"]:
        head += (f"\nnote: load average {load[0]} at start on {m['nproc']} CPUs: other work was "
                 "running, figures are noisier than usual")
    reporting = m.get("free_page_reporting") or {}
    if reporting.get("active") and "scale" in results:
        head += (f"\nnote: this VM hands free memory back to its host (free page reporting, blocks "
                 f"of 2^{reporting['order']} pages unused for {reporting['min_free_ms']} ms): a page "
                 "written again there costs 3-4 x more, so spawn times step up once the tree "
                 "outgrows the memory the host still backs (docs/scaling.md, \"Not met\")")
    return "\n".join([head, *lines])


def _clean(x: Any) -> Any:
    """NaN is not JSON: write it as null."""
    if isinstance(x, float) and math.isnan(x):
        return None
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    return x


def write_json(results: dict[str, Any], path: str | Path) -> None:
    text = json.dumps(_clean(results), indent=2, default=str, allow_nan=False)
    Path(path).write_text(text + "\n")
