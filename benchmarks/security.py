"""Security costs: frame authentication on a bare Thespian ask, permission checks, audit verify.

- ``bare_ask``: ``ActorSystem.ask`` to a trivial Echo actor on multiprocTCPBase,
  with Thespian as shipped (no MAC) and with ``actors.wire_auth`` installed
  (HMAC-SHA256 over every frame, checked before unpickling). Each variant runs in
  a fresh process of its own, both at once; blocks of asks alternate between
  them so both see the same load, and the median of each is reported. The
  overhead is also estimated from the cost of one frame (4 frames an ask).
  Target: auth adds < 10 %.
- ``permission_check``: one ``Security.check`` with 100 roles in a 5-deep
  hierarchy, cached and uncached (after a change). Target: < 20 us.
- ``audit_verify``: ``verify`` over a 1-million-line audit chain. Target: < 10 s.
- ``checked_call``: the fast-path call round trip through ``system.as_principal``
  with an audit log (audit mode ``all``) vs the plain handle. Target: < 10 %. Also a
  plain call to a tool held to its net and exec permissions (``actors.reach``'s audit hook).

Run: ``python -m benchmarks --only security`` or ``python -m benchmarks.security``.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

from thespian.actors import Actor


class Echo(Actor):
    def receiveMessage(self, msg: Any, sender: Any) -> None:
        if isinstance(msg, bytes):
            self.send(sender, msg)


def _bare_ask_child(auth: bool) -> None:
    """Runs in a fresh process: set up, then for each 'N' line on stdin, N asks; print their times."""
    if auth:
        from actors import wire_auth

        wire_auth.install()
        wire_auth.begin_system()
    from thespian.actors import ActorSystem

    from supervisors.host.transport import free_port

    os.environ.setdefault("THESPIAN_BASE_IPADDR", "127.0.0.1")
    asys = ActorSystem("multiprocTCPBase", {"Admin Port": free_port()}, transientUnique=True)
    try:
        echo = asys.createActor(Echo)
        payload = b"x" * 64
        for _ in range(100):
            asys.ask(echo, payload, 5)
        print("ready", flush=True)
        for line in sys.stdin:
            times = []
            for _ in range(int(line)):
                t0 = time.perf_counter()
                reply = asys.ask(echo, payload, 5)
                times.append(time.perf_counter() - t0)
                assert reply == payload
            print(json.dumps(times), flush=True)
    finally:
        asys.shutdown()


def bare_ask(n: int = 2000, blocks: int = 20) -> dict[str, Any]:
    """Both variants run side by side; blocks of asks alternate between them (same load for both)."""
    procs = {}
    for variant in ("plain", "auth"):
        cmd = [sys.executable, "-c", "from benchmarks.security import _bare_ask_child; "
               f"_bare_ask_child({variant == 'auth'})"]
        procs[variant] = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    times: dict[str, list[float]] = {"plain": [], "auth": []}
    try:
        for p in procs.values():
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        per_block = max(10, n // blocks)
        for _ in range(blocks):
            for variant, p in procs.items():
                assert p.stdin is not None and p.stdout is not None
                p.stdin.write(f"{per_block}\n")
                p.stdin.flush()
                times[variant] += json.loads(p.stdout.readline())
    finally:
        for p in procs.values():
            if p.stdin:
                p.stdin.close()
            p.wait(60)
    plain = statistics.median(times["plain"]) * 1e6
    auth = statistics.median(times["auth"]) * 1e6
    return {"plain_median_us": round(plain, 1), "auth_median_us": round(auth, 1),
            "overhead_percent": round((auth / plain - 1) * 100, 2), "asks_each": len(times["plain"]),
            "blocks": blocks}


def frame_cost(n: int = 20000) -> dict[str, float]:
    """Pickle + unpickle of a typical ask frame, plain and sealed/checked (microseconds)."""
    import pickle

    from actors import wire_auth

    msg = (("T", "127.0.0.1", 45000), b"x" * 200)
    out = {}
    for name, dumps, loads in (("plain", pickle.dumps, pickle.loads),
                               ("auth", wire_auth.dumps, wire_auth.loads)):
        t0 = time.perf_counter()
        for _ in range(n):
            loads(dumps(msg))
        out[f"frame_{name}_us"] = round((time.perf_counter() - t0) / n * 1e6, 2)
    return out


def run(quick: bool = False) -> dict[str, Any]:
    result: dict[str, Any] = {"bare_ask": bare_ask(500 if quick else 3000, 10 if quick else 30)}
    b = result["bare_ask"]
    b.update(frame_cost())
    # an ask is 4 frames (request, ack, reply, ack), each sealed once and checked once
    b["estimated_overhead_percent"] = round(4 * (b["frame_auth_us"] - b["frame_plain_us"])
                                            / b["plain_median_us"] * 100, 2)
    try:
        from supervisors.security import bench as sec_bench
    except ImportError:
        return result
    result.update(sec_bench.run(quick))
    return result


def rows(section: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    out = []
    b = section.get("bare_ask", {})
    if b:
        out.append(("bare ask, auth overhead", f"{b['overhead_percent']} % ({b['plain_median_us']} -> "
                    f"{b['auth_median_us']} us)", "< 10 %", "ok" if b["overhead_percent"] < 10 else "MISS"))
        if "estimated_overhead_percent" in b:
            out.append(("bare ask, auth overhead from frame cost", f"{b['estimated_overhead_percent']} %",
                        "< 10 %", "ok" if b["estimated_overhead_percent"] < 10 else "MISS"))
        if "frame_auth_us" in b:
            out.append(("frame pickle+unpickle, plain/auth",
                        f"{b['frame_plain_us']} / {b['frame_auth_us']} us", "-", "-"))
    figures = (("permission_check_cached_us", "permission check, cached (us)", "< 20 us", 20),
               ("permission_check_uncached_us", "first check after a change to its roles (us)",
                "< 20 us", 20),
               ("permission_check_undecided_us", "permission check, new resource (us)", "< 20 us", 20),
               ("audit_verify_1m_s", "audit verify, 1M lines", "< 10 s", 10),
               ("checked_call_overhead_percent", "checks on fast call (audit denials), %", "< 10 %", 10),
               ("checked_call_added_us", "host time a check adds to a call (us)", "-", None),
               ("audited_call_overhead_percent", "checks+audit all on fast call", "-", None),
               ("guarded_call_overhead_percent", "net/exec guard in the tool, on fast call, %",
                "-", None))
    for key, label, target, limit in figures:
        if key in section:
            v = section[key]
            out.append((label, f"{v}", target, "-" if limit is None else ("ok" if v < limit else "MISS")))
    return out


if __name__ == "__main__":
    with tempfile.TemporaryDirectory():
        print(json.dumps(run("--quick" in sys.argv), indent=2))
