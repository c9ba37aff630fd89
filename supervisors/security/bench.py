"""Figures for ``benchmarks/security.py``: check cost, audit verify, checked call overhead."""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from typing import Any

from supervisors.security.audit import GENESIS, make_line, verify
from supervisors.security.roles import Security


def permission_check(n: int = 20000) -> dict[str, float]:
    """100 roles in 20 chains 5 deep; a principal holding the 20 chain ends (all 100 roles)."""
    sec = Security()
    for i in range(100):
        sec.add_role(f"r{i}", permissions=[f"tool:team{i}/*:call", f"tool:team{i}/*:read"],
                     parents=[f"r{i - 1}"] if i % 5 else [])
    sec.add_principal("p", roles=[f"r{i}" for i in range(4, 100, 5)])
    resources = [f"tool:team{i}/tool{j}" for i in range(100) for j in range(5)]
    for r in resources:  # warm the cache
        sec.allowed("p", "call", r)
    t0 = time.perf_counter()
    for k in range(n):
        sec.check("p", "call", resources[k % len(resources)])
    cached = (time.perf_counter() - t0) / n * 1e6
    uncached = []
    for k in range(200):  # a change to a role the principal holds: its cache is rebuilt
        sec.add_role("r57", permissions=["tool:team57/*:call", "tool:team57/*:read"], parents=["r56"])
        t0 = time.perf_counter()
        sec.check("p", "call", resources[(k * 7) % len(resources)])
        uncached.append(time.perf_counter() - t0)
    undecided = []
    for k in range(200):  # a resource never asked about: the indexed permissions are searched
        t0 = time.perf_counter()
        sec.allowed("p", "stop", f"tool:nowhere/{k}")
        undecided.append(time.perf_counter() - t0)
    unrelated = []
    for k in range(200):  # a change to a role the principal does not hold: its cache stays
        sec.add_role("extra", permissions=[f"tool:x{k}:read"])
        t0 = time.perf_counter()
        sec.check("p", "call", resources[(k * 7) % len(resources)])
        unrelated.append(time.perf_counter() - t0)
    return {"permission_check_cached_us": round(cached, 2),
            "permission_check_uncached_us": round(statistics.median(uncached) * 1e6, 1),
            "permission_check_undecided_us": round(statistics.median(undecided) * 1e6, 1),
            "permission_check_after_unrelated_change_us": round(statistics.median(unrelated) * 1e6, 2)}


def audit_verify(lines: int = 1_000_000) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "audit.log")
        prev = GENESIS
        t0 = time.perf_counter()
        with open(path, "w") as f:
            for seq in range(1, lines + 1):
                line, prev = make_line(prev, seq, {"ts": 1764630000.0 + seq, "principal": "alice",
                                                   "level": "standard", "operation": "call",
                                                   "resource": "tool:workers/counter", "result": "ok",
                                                   "context": {"command": "add"}})
                f.write(line + "\n")
        written = time.perf_counter() - t0
        size = os.path.getsize(path)
        t0 = time.perf_counter()
        verdict = verify(path)
        took = time.perf_counter() - t0
        assert verdict.ok and verdict.lines == lines, str(verdict)
    return {"audit_verify_1m_s" if lines == 1_000_000 else "audit_verify_s": round(took, 2),
            "audit_lines": lines, "audit_file_mib": round(size / 2**20, 1),
            "audit_write_per_line_us": round(written / lines * 1e6, 2)}


def checked_call(n: int = 2000, rounds: int = 3) -> dict[str, Any]:
    """Fast-path call round trip: plain handle vs principal view (audit 'denials') vs audit 'all';
    and a plain handle to a tool held to its net and exec permissions (``actors.reach``)."""
    from examples.counter import Counter
    from supervisors import ToolSystem

    with tempfile.TemporaryDirectory() as tmp, \
            ToolSystem(audit_log=os.path.join(tmp, "audit.log"), log_level="WARNING") as system:
        system.spawn(Counter, name="c")
        system.spawn(Counter, name="a", security={"audit": "all"})
        system.spawn(Counter, name="g", security={})
        system.security.add_principal("op", roles=["operator"])
        view = system.as_principal("op")
        peers = {"plain": system.tool("c").call, "checked": view.tool("c").call,
                 "audited": view.tool("a").call, "guarded": system.tool("g").call}
        for fn in peers.values():
            for _ in range(200):
                fn("get")
        out: dict[str, list[float]] = {k: [] for k in peers}
        block = max(50, n // 20)
        for _ in range(rounds * max(1, n // block)):  # interleaved blocks: load hits all alike
            for name, fn in peers.items():
                for _ in range(block):
                    t0 = time.perf_counter()
                    fn("get")
                    out[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) * 1e6 for k, v in out.items()}
    return {"plain_call_us": round(med["plain"], 1), "checked_call_us": round(med["checked"], 1),
            "audited_call_us": round(med["audited"], 1),
            "checked_call_overhead_percent": round((med["checked"] / med["plain"] - 1) * 100, 1),
            "audited_call_overhead_percent": round((med["audited"] / med["plain"] - 1) * 100, 1),
            "guarded_call_us": round(med["guarded"], 1),
            "guarded_call_overhead_percent": round((med["guarded"] / med["plain"] - 1) * 100, 1)}


def check_lane(n: int = 100_000) -> dict[str, float]:
    """What a checked call adds on the host, without the noise of the round trip (a stub system)."""
    from supervisors.security.guard import SystemSecurity
    from supervisors.security.view import PrincipalView

    class NoPools:
        def is_pool(self, path: str) -> bool:
            return False

    class Stub:
        pools = NoPools()

        def _call(self, path: str, command: str, args: dict, timeout: Any) -> int:
            return 1

    stub: Any = Stub()
    stub.security = SystemSecurity(stub)
    stub.security.add_principal("op", roles=["operator"])
    tool = PrincipalView(stub, stub.security.principal("op")).tool("c")
    tool.call("get")
    t0 = time.perf_counter()
    for _ in range(n):
        tool.call("get")
    checked = (time.perf_counter() - t0) / n
    t0 = time.perf_counter()
    for _ in range(n):
        stub._call("c", "get", {}, None)
    bare = (time.perf_counter() - t0) / n
    return {"checked_call_added_us": round((checked - bare) * 1e6, 2)}


def run(quick: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {}
    out.update(permission_check(2000 if quick else 20000))
    out.update(check_lane(20_000 if quick else 100_000))
    out.update(audit_verify(100_000 if quick else 1_000_000))
    out.update(checked_call(300 if quick else 2000, 2 if quick else 3))
    return out
