"""Security costs: frame authentication on a bare Thespian ask, permission checks, audit verify.

- ``bare_ask``: ``ActorSystem.ask`` to a trivial Echo actor on multiprocTCPBase,
  with Thespian as shipped (no MAC) and with ``actors.wire_auth`` installed
  (HMAC-SHA256 over every frame, checked before unpickling). Each variant runs in
  a fresh process of its own; the two alternate ``rounds`` times and the median
  of each is reported. Target: auth adds < 10 %.
- ``permission_check``: one ``Security.check`` with 100 roles in a 5-deep
  hierarchy, cached and uncached (after a change). Target: < 20 us.
- ``audit_verify``: ``verify`` over a 1-million-line audit chain. Target: < 10 s.
- ``checked_call``: the fast-path call round trip through ``system.as_principal``
  with an audit log (audit mode ``all``) vs the plain handle. Target: < 10 %.

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


def _bare_ask_child(auth: bool, n: int) -> dict[str, float]:
    """Runs in a fresh process: n asks, the median and p99 in microseconds."""
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
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            reply = asys.ask(echo, payload, 5)
            times.append(time.perf_counter() - t0)
            assert reply == payload
    finally:
        asys.shutdown()
    times.sort()
    return {"median_us": statistics.median(times) * 1e6, "p99_us": times[int(len(times) * 0.99)] * 1e6}


def bare_ask(n: int = 2000, rounds: int = 3) -> dict[str, Any]:
    out: dict[str, list[float]] = {"plain": [], "auth": []}
    for _ in range(rounds):
        for variant in ("plain", "auth"):
            cmd = [sys.executable, "-c",
                   "import json, sys; from benchmarks.security import _bare_ask_child; "
                   f"print(json.dumps(_bare_ask_child({variant == 'auth'}, {n})))"]
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=True)
            out[variant].append(json.loads(done.stdout.strip().splitlines()[-1])["median_us"])
    plain, auth = statistics.median(out["plain"]), statistics.median(out["auth"])
    return {"plain_median_us": round(plain, 1), "auth_median_us": round(auth, 1),
            "overhead_percent": round((auth / plain - 1) * 100, 2), "rounds": out, "asks_per_round": n}


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
    result: dict[str, Any] = {"bare_ask": bare_ask(500 if quick else 1000, 2 if quick else 5)}
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
               ("permission_check_uncached_us", "first check after a change to its roles (us, once)",
                "-", None),
               ("permission_check_undecided_us", "permission check, new resource (us)", "< 20 us", 20),
               ("audit_verify_1m_s", "audit verify, 1M lines", "< 10 s", 10),
               ("checked_call_overhead_percent", "checks on fast call (audit denials)", "< 10 %", 10),
               ("audited_call_overhead_percent", "checks+audit all on fast call", "-", None))
    for key, label, target, limit in figures:
        if key in section:
            v = section[key]
            out.append((label, f"{v}", target, "-" if limit is None else ("ok" if v < limit else "MISS")))
    return out


if __name__ == "__main__":
    with tempfile.TemporaryDirectory():
        print(json.dumps(run("--quick" in sys.argv), indent=2))
