"""``toolvisor mcp`` as a real subprocess, driven by the official ``mcp`` SDK client (stdio and HTTP)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("mcp")

from mcp import ClientSession  # noqa: E402
from mcp.client.stdio import StdioServerParameters, stdio_client  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
NAME_RE = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
TOKEN = "agent-token-123"

CONFIG = """
[system]
audit_log = "{log}"

[[role]]
name = "counter-caller"
permissions = ["tool:workers/counter:call", "tool:workers/counter:read"]

[[principal]]
name = "agent"
roles = ["counter-caller"]
token = "{token}"

[[principal]]
name = "ops"
roles = ["admin"]
token = "ops-token-456"

[[supervisor]]
name = "workers"
max_restarts = 50
period = 5.0
backoff = {{ initial = 0.01, maximum = 0.05 }}
[[supervisor.tool]]
name = "counter"
actor = "examples.counter:Counter"
config = {{ start = 1 }}
[[supervisor.tool]]
name = "crashy"
actor = "examples.mcp_tools:Crashy"
[[supervisor.tool]]
name = "notes"
actor = "examples.mcp_tools:Notes"
[[supervisor.tool]]
name = "echo"
actor = "examples.demo_tools:Echo"

[[supervisor]]
name = "pipeline"
[[supervisor.tool]]
name = "echo"
actor = "examples.demo_tools:Echo"

[[supervisor]]
name = "fragile"
max_restarts = 0
period = 5.0
[[supervisor.tool]]
name = "bomb"
actor = "examples.mcp_tools:Crashy"
"""


def env(**extra: str) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items()}
    e["PYTHONPATH"] = str(ROOT) + os.pathsep + e.get("PYTHONPATH", "")
    e.update(extra)
    return e


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "mcp.toml"
    path.write_text(CONFIG.format(log=tmp_path / "audit.log", token=TOKEN))
    return path


def params(config: Path, *extra: str, **env_extra: str) -> StdioServerParameters:
    return StdioServerParameters(command=sys.executable, args=["-m", "supervisors", "mcp", str(config),
                                                               "--poll", "0.2", *extra],
                                 cwd=str(ROOT), env=env(**env_extra))


def text(result: Any) -> str:
    return "".join(getattr(c, "text", "") for c in result.content)


async def until(make_call: Any, ok: Any, deadline_s: float = 20.0) -> Any:
    deadline = time.monotonic() + deadline_s
    while True:
        result = await make_call()
        if ok(result) or time.monotonic() > deadline:
            return result
        await asyncio.sleep(0.05)


@pytest.mark.timeout(90)
def test_stdio_list_call_errors_crash_and_recovery(config: Path) -> None:
    async def main() -> None:
        async with stdio_client(params(config)) as (r, w), ClientSession(r, w) as s:
            init = await s.initialize()
            assert init.server_info.name == "toolvisor"
            tools = {t.name: t for t in (await s.list_tools()).tools}
            assert {"counter_add", "counter_get", "crashy_crash", "notes_search",
                    "workers-echo_echo", "pipeline-echo_echo"} <= set(tools)
            assert all(NAME_RE.match(n) for n in tools)
            assert not any(n.startswith("_audit") for n in tools)
            add = tools["counter_add"].input_schema
            assert add["properties"]["k"]["type"] == "integer" and add["additionalProperties"] is False
            search = tools["notes_search"].input_schema
            assert search["required"] == ["word"] and search["properties"]["order"]["enum"] == ["old", "new"]
            assert "Notes that contain a word" in tools["notes_search"].description

            ok = await s.call_tool("counter_add", {"k": 2})
            assert not ok.is_error and text(ok) == "3"
            bad = await s.call_tool("counter_add", {"k": "two"})
            assert bad.is_error and "k='two'" in text(bad) and "integer" in text(bad)
            extra = await s.call_tool("counter_add", {"q": 1})
            assert extra.is_error and "'q'" in text(extra)
            missing = await s.call_tool("notes_search", {})
            assert missing.is_error and "'word' is required" in text(missing)
            unknown = await s.call_tool("no_such_tool", {})
            assert unknown.is_error and "no_such_tool" in text(unknown)
            failed = await s.call_tool("crashy_fail", {"message": "boom-42"})
            assert failed.is_error and "RuntimeError" in text(failed) and "boom-42" in text(failed)

            before = text(await s.call_tool("crashy_ping", {}))
            crash = await s.call_tool("crashy_crash", {})
            assert crash.is_error and "crashy" in text(crash)
            after = await until(lambda: s.call_tool("crashy_ping", {}), lambda res: not res.is_error)
            assert not after.is_error and text(after).startswith("pong from ") and text(after) != before

            big = await s.call_tool("notes_size", {"text": "x" * 1_000_000})
            assert not big.is_error and text(big) == "1000000"
            huge = await s.call_tool("notes_size", {"text": "x" * 20_000_000})
            assert huge.is_error and "notes_size" in text(huge)
            assert text(await s.call_tool("counter_get", {})) == "3"  # still serving

    asyncio.run(main())


@pytest.mark.timeout(90)
def test_tools_going_away_send_list_changed(config: Path) -> None:
    seen: list[str] = []

    async def on_message(message: Any) -> None:
        seen.append(getattr(message, "method", type(message).__name__))

    async def main() -> None:
        async with stdio_client(params(config)) as (r, w), \
                ClientSession(r, w, message_handler=on_message) as s:
            init = await s.initialize()
            assert init.capabilities.tools.list_changed is True
            names = {t.name for t in (await s.list_tools()).tools}
            assert "bomb_ping" in names
            assert (await s.call_tool("bomb_crash", {})).is_error  # max_restarts=0: fragile gives up
            deadline = time.monotonic() + 20
            while "notifications/tools/list_changed" not in seen and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert "notifications/tools/list_changed" in seen
            names = {t.name for t in (await s.list_tools()).tools}
            assert "bomb_ping" not in names and "counter_add" in names

    asyncio.run(main())


@pytest.mark.timeout(90)
def test_stdio_principal_is_checked_and_audited(config: Path, tmp_path: Path) -> None:
    async def main() -> None:
        async with stdio_client(params(config, "--principal", "agent", TOOLVISOR_TOKEN=TOKEN)) as (r, w), \
                ClientSession(r, w) as s:
            await s.initialize()
            names = {t.name for t in (await s.list_tools()).tools}
            assert names == {"counter_add", "counter_get"}  # only what it may call
            assert text(await s.call_tool("counter_add", {"k": 5})) == "6"
            denied = await s.call_tool("crashy_ping", {})
            assert denied.is_error and "refused" in text(denied) and "agent" in text(denied)

    asyncio.run(main())
    lines = [json.loads(line) for line in (tmp_path / "audit.log").read_text().splitlines()]
    assert any(e.get("principal") == "agent" and e.get("result") == "denied"
               and "workers/crashy" in e.get("resource", "") for e in lines), lines[-5:]


def test_stdio_wrong_token_refuses_to_start(config: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "supervisors", "mcp", str(config), "--principal", "agent"],
                          cwd=ROOT, env=env(TOOLVISOR_TOKEN="wrong-token"), capture_output=True, text=True,
                          timeout=40, stdin=subprocess.DEVNULL)
    assert proc.returncode == 2 and proc.stdout == ""
    assert "agent" in proc.stderr and "token" in proc.stderr


@pytest.mark.timeout(90)
def test_stdio_bad_input_keeps_the_server_up(config: Path) -> None:
    """Raw lines: garbage, an unknown method, bad arguments; stdout carries only JSON-RPC."""
    proc = subprocess.Popen([sys.executable, "-m", "supervisors", "mcp", str(config)], cwd=ROOT, env=env(),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True, bufsize=1)
    try:
        def send(obj: Any) -> None:
            assert proc.stdin is not None
            proc.stdin.write((obj if isinstance(obj, str) else json.dumps(obj)) + "\n")
            proc.stdin.flush()

        def answer(rid: int) -> dict[str, Any]:
            assert proc.stdout is not None
            while True:
                line = proc.stdout.readline()
                assert line, "the server closed stdout"
                msg = json.loads(line)  # every line on stdout is JSON
                if msg.get("id") == rid:
                    return msg

        send("this is not json {")
        send({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "raw", "version": "0"}}})
        assert "result" in answer(1)
        send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        send("\x00\x01 garbage")
        send({"jsonrpc": "2.0", "id": 2, "method": "no/such/method", "params": {}})
        err = answer(2)
        assert err["error"]["code"] == -32601
        send({"jsonrpc": "2.0", "id": 3, "method": "tools/call",
              "params": {"name": "counter_add", "arguments": {"k": [1, 2]}}})
        res = answer(3)["result"]
        assert res["isError"] is True and "k=[1, 2]" in res["content"][0]["text"]
        send({"jsonrpc": "2.0", "id": 4, "method": "tools/call",
              "params": {"name": "counter_add", "arguments": {"k": 1}}})
        assert answer(4)["result"]["content"][0]["text"] == "2"
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0


# ---------------------------------------------------------------------- HTTP
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def http_server(config: Path) -> Any:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "supervisors", "mcp", str(config), "--http",
                             f"127.0.0.1:{port}", "--poll", "0.2"], cwd=ROOT, env=env(),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 40
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            assert proc.poll() is None and time.monotonic() < deadline, "the HTTP server did not come up"
            time.sleep(0.1)
    yield f"http://127.0.0.1:{port}/mcp"
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.mark.timeout(120)
def test_http_with_bearer_token(http_server: str, tmp_path: Path) -> None:
    import httpx2
    from mcp.client.streamable_http import streamable_http_client

    async def session_calls(token: str) -> None:
        async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=60) as http, \
                streamable_http_client(http_server, http_client=http) as streams, \
                ClientSession(streams[0], streams[1]) as s:
            await s.initialize()
            if token == TOKEN:
                names = {t.name for t in (await s.list_tools()).tools}
                assert names == {"counter_add", "counter_get"}
                assert not (await s.call_tool("counter_add", {"k": 1})).is_error
                denied = await s.call_tool("notes_search", {"word": "x"})
                assert denied.is_error and "refused" in text(denied)
                return
            tools = {t.name: t for t in (await s.list_tools()).tools}
            assert tools["notes_add"].input_schema["required"] == ["text"]
            bad = await s.call_tool("notes_add", {"text": 3})
            assert bad.is_error and "text=3" in text(bad)
            results = await asyncio.gather(*[s.call_tool("notes_add", {"text": f"n{i}"}) for i in range(100)])
            assert all(not r.is_error for r in results)
            assert sorted(int(text(r)) for r in results) == list(range(1, 101))

    async def main() -> None:
        async with httpx2.AsyncClient(timeout=30) as http:
            refused = await http.post(http_server, json={"jsonrpc": "2.0", "id": 1, "method": "ping"},
                                      headers={"Accept": "application/json, text/event-stream"})
            assert refused.status_code == 401 and "Bearer" in refused.text
            huge = json.dumps({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {
                "name": "notes_size", "arguments": {"text": "x" * 5_000_000}}})
            try:  # over the SDK's 4 MiB body limit: 413, or the connection closed mid-upload
                too_big = await http.post(http_server, content=huge, headers={
                    "Accept": "application/json, text/event-stream", "Content-Type": "application/json",
                    "Authorization": "Bearer ops-token-456"})
                assert too_big.status_code == 413, (too_big.status_code, too_big.text[:200])
            except (httpx2.ReadError, httpx2.WriteError, httpx2.RemoteProtocolError):
                pass  # the sessions below show the server still serves
        await session_calls(TOKEN)
        await session_calls("ops-token-456")

    asyncio.run(main())
    lines = [json.loads(line) for line in (tmp_path / "audit.log").read_text().splitlines()]
    assert any(e.get("principal") == "(no token)" and e.get("result") == "denied" for e in lines)
    assert any(e.get("principal") == "agent" and e.get("result") == "denied"
               and "workers/notes" in e.get("resource", "") for e in lines)


@pytest.mark.timeout(90)
def test_the_demo_config_serves_valid_tools() -> None:
    """What Claude Desktop would get from `toolvisor mcp examples/demo.toml`."""
    async def main() -> None:
        async with stdio_client(params(ROOT / "examples" / "demo.toml")) as (r, w), ClientSession(r, w) as s:
            await s.initialize()
            tools = {t.name: t for t in (await s.list_tools()).tools}
            assert {"counter_add", "workers-echo_echo", "pipeline-echo_echo"} <= set(tools), sorted(tools)
            assert all(NAME_RE.match(n) and t.input_schema["type"] == "object" for n, t in tools.items())
            assert text(await s.call_tool("counter_add", {"k": 1})) == "2"

    asyncio.run(main())


@pytest.mark.timeout(60)
def test_sigterm_ends_the_stdio_server_and_its_tree(config: Path) -> None:
    import psutil

    proc = subprocess.Popen([sys.executable, "-m", "supervisors", "mcp", str(config)], cwd=ROOT, env=env(),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdin and proc.stdout
    proc.stdin.write(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "raw", "version": "0"}}}).encode() + b"\n")
    proc.stdin.flush()
    assert json.loads(proc.stdout.readline())["id"] == 1
    tree = [p.pid for p in psutil.Process(proc.pid).children(recursive=True)]
    assert tree, "the actor system runs under the server"
    proc.send_signal(15)
    assert proc.wait(timeout=30) == 0
    deadline = time.monotonic() + 15
    while any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE for p in tree):
        assert time.monotonic() < deadline, "processes of the tree outlived the server"
        time.sleep(0.05)


@pytest.mark.timeout(60)
def test_the_mcp_example_as_its_agent() -> None:
    async def main() -> None:
        p = params(ROOT / "examples" / "mcp.toml", "--principal", "agent",
                   TOOLVISOR_TOKEN="agent-token-change-me")
        async with stdio_client(p) as (r, w), ClientSession(r, w) as s:
            await s.initialize()
            names = {t.name for t in (await s.list_tools()).tools}
            assert names == {"notes_add", "notes_search", "notes_size", "counter_add", "counter_get"}
            assert text(await s.call_tool("notes_add", {"text": "buy milk", "tags": ["home"]})) == "1"
            found = await s.call_tool("notes_search", {"word": "milk"})
            assert json.loads(text(found)) == ["buy milk [home]"]
            assert (await s.call_tool("crashy_crash", {})).is_error

    asyncio.run(main())


@pytest.mark.timeout(90)
def test_http_clients_get_list_changed(http_server: str) -> None:
    import httpx2
    from mcp.client.streamable_http import streamable_http_client

    seen: list[str] = []

    async def on_message(message: Any) -> None:
        seen.append(getattr(message, "method", type(message).__name__))

    async def main() -> None:
        auth = {"Authorization": "Bearer ops-token-456"}
        async with httpx2.AsyncClient(headers=auth, timeout=60) as http, \
                streamable_http_client(http_server, http_client=http) as streams, \
                ClientSession(streams[0], streams[1], message_handler=on_message) as s:
            await s.initialize()
            assert "bomb_ping" in {t.name for t in (await s.list_tools()).tools}
            assert (await s.call_tool("bomb_crash", {})).is_error
            deadline = time.monotonic() + 20
            while "notifications/tools/list_changed" not in seen and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert "notifications/tools/list_changed" in seen
            assert "bomb_ping" not in {t.name for t in (await s.list_tools()).tools}

    asyncio.run(main())
