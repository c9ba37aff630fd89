"""MCP front door: what a tools/call over stdio adds to the underlying call; 100 concurrent HTTP calls.

- ``stdio``: ``toolvisor mcp`` runs as a subprocess serving a Counter. A raw client
  writes one ``tools/call`` JSON line at a time on its stdin and reads the answer
  line (the protocol's own cost, no client library), and the official SDK client
  does the same through ``ClientSession.call_tool``. The underlying call is
  ``ToolHandle.call("get")`` on the same kind of tool from this process. Target:
  the raw stdio round trip's p50 minus the direct call's p50 is at most 1 ms.
- ``http``: ``toolvisor mcp --http`` with a bearer token; one SDK session sends 100
  ``tools/call`` at once (asyncio.gather); all must be answered.

Run: ``python -m benchmarks --only mcp`` or ``python -m benchmarks.mcp``.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "bench-token-123"
CONFIG = f"""
[[principal]]
name = "bench"
roles = ["admin"]
token = "{TOKEN}"

[[supervisor]]
name = "w"
[[supervisor.tool]]
name = "counter"
actor = "examples.counter:Counter"
"""


def _p(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def _ms(values: list[float]) -> dict[str, float]:
    return {"p50_ms": round(_p(values, 0.5) * 1e3, 3), "p99_ms": round(_p(values, 0.99) * 1e3, 3),
            "mean_ms": round(statistics.fmean(values) * 1e3, 3)}


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))


def direct(samples: int) -> list[float]:
    from supervisors import ToolSystem

    with ToolSystem() as system:
        t = system.spawn("examples.counter:Counter", name="counter")
        for _ in range(200):
            t.call("get")
        times = []
        for _ in range(samples):
            t0 = time.perf_counter()
            t.call("get")
            times.append(time.perf_counter() - t0)
    return times


def raw_stdio(config: Path, samples: int) -> list[float]:
    proc = subprocess.Popen([sys.executable, "-m", "supervisors", "mcp", str(config)], cwd=ROOT, env=_env(),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            bufsize=0)
    assert proc.stdin and proc.stdout

    def ask(rid: int, method: str, params: dict[str, Any]) -> dict[str, Any]:
        line = json.dumps({"jsonrpc": "2.0", "id": rid, "method": method, "params": params})
        proc.stdin.write(line.encode() + b"\n")
        while True:
            msg = json.loads(proc.stdout.readline())
            if msg.get("id") == rid:
                return msg

    try:
        ask(0, "initialize", {"protocolVersion": "2025-06-18", "capabilities": {},
                              "clientInfo": {"name": "bench", "version": "0"}})
        proc.stdin.write(b'{"jsonrpc":"2.0","method":"notifications/initialized"}\n')
        call = {"name": "counter_get", "arguments": {}}
        for i in range(200):
            ask(i + 1, "tools/call", call)
        times = []
        for i in range(samples):
            t0 = time.perf_counter()
            reply = ask(1000 + i, "tools/call", call)
            times.append(time.perf_counter() - t0)
            assert not reply["result"].get("isError"), reply
        return times
    finally:
        proc.stdin.close()
        proc.wait(timeout=60)


def sdk_stdio(config: Path, samples: int) -> list[float]:
    from mcp import ClientSession
    from mcp.client.stdio import StdioServerParameters, stdio_client

    async def main() -> list[float]:
        params = StdioServerParameters(command=sys.executable, args=["-m", "supervisors", "mcp", str(config)],
                                       cwd=str(ROOT), env=_env())
        async with stdio_client(params, errlog=open(os.devnull, "w")) as (r, w), ClientSession(r, w) as s:
            await s.initialize()
            for _ in range(100):
                await s.call_tool("counter_get", {})
            times = []
            for _ in range(samples):
                t0 = time.perf_counter()
                await s.call_tool("counter_get", {})
                times.append(time.perf_counter() - t0)
            return times

    return asyncio.run(main())


def http_concurrent(config: Path, n: int) -> dict[str, Any]:
    import httpx2
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "supervisors", "mcp", str(config), "--http",
                             f"127.0.0.1:{port}"], cwd=ROOT, env=_env(), stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("the HTTP server did not come up")
                time.sleep(0.1)

        async def main() -> dict[str, Any]:
            url = f"http://127.0.0.1:{port}/mcp"
            auth = {"Authorization": f"Bearer {TOKEN}"}
            async with httpx2.AsyncClient(headers=auth, timeout=120) as http, \
                    streamable_http_client(url, http_client=http) as streams, \
                    ClientSession(streams[0], streams[1]) as session:
                await session.initialize()
                t0 = time.perf_counter()
                calls = [session.call_tool("counter_add", {"k": 1}) for _ in range(n)]
                results = await asyncio.gather(*calls, return_exceptions=True)
                took = time.perf_counter() - t0
                answered = sum(1 for r in results if not isinstance(r, BaseException) and not r.is_error)
                return {"calls": n, "answered": answered, "wall_s": round(took, 3)}

        return asyncio.run(main())
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def run(quick: bool = False) -> dict[str, Any]:
    samples = 300 if quick else 2000
    with tempfile.TemporaryDirectory(prefix="toolvisor-bench-mcp-") as tmp:
        config = Path(tmp) / "mcp.toml"
        config.write_text(CONFIG)
        d = _ms(direct(samples))
        raw = _ms(raw_stdio(config, samples))
        sdk = _ms(sdk_stdio(config, samples))
        http = http_concurrent(config, 100)
    return {"samples": samples, "direct": d, "stdio_raw": raw, "stdio_sdk": sdk,
            "stdio_added_p50_ms": round(raw["p50_ms"] - d["p50_ms"], 3),
            "stdio_sdk_added_p50_ms": round(sdk["p50_ms"] - d["p50_ms"], 3), "http": http}


def rows(section: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    def trio(x: dict[str, float]) -> str:
        return f"{x['p50_ms']} / {x['p99_ms']} / {x['mean_ms']}"

    added = section["stdio_added_p50_ms"]
    h = section["http"]
    return [
        ("MCP stdio tools/call added p50 (ms)", f"{added}", "<= 1 ms", "met" if added <= 1.0 else "MISSED"),
        ("  direct call p50 / p99 / mean ms", trio(section["direct"]), "-", "ref"),
        ("  stdio raw client p50 / p99 / mean ms", trio(section["stdio_raw"]), "-", "ref"),
        ("  stdio SDK client p50 / p99 / mean ms", trio(section["stdio_sdk"]), "-", "ref"),
        ("MCP HTTP 100 concurrent calls answered", f"{h['answered']}/{h['calls']} in {h['wall_s']} s",
         "100/100", "met" if h["answered"] == h["calls"] else "MISSED"),
    ]


if __name__ == "__main__":
    print(json.dumps(run("--quick" in sys.argv), indent=2))
