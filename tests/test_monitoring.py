"""Monitoring: metrics, the dashboard's HTTP API, SSE, actions with tokens, alerts and sinks.

Everything runs for real: a ToolSystem with tool processes, the dashboard's aiohttp server on a
loopback port, HTTP requests over sockets, a webhook receiver on another port.
"""

from __future__ import annotations

import http.server
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from supervisors import ToolSystem
from supervisors.frontends.dashboard import Dashboard
from supervisors.monitoring import AlertRule, AlertSink, Metrics, parse_alerts
from supervisors.tree.config import ConfigError, parse_config
from tests.conftest import FAST
from tests.helpers import wait_until

OPS_TOKEN = "ops-token-123456"
VIEW_TOKEN = "viewer-token-123456"


# ---------------------------------------------------------------------- helpers
def req(method: str, url: str, body: Any = None, token: str | None = None,
         raw: bytes | None = None) -> tuple[int, Any]:
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    request = urllib.request.Request(url, data=data, method=method)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            text = resp.read().decode()
            status = resp.status
            ctype = resp.headers.get("Content-Type", "")
    except urllib.error.HTTPError as exc:
        text = exc.read().decode()
        status = exc.code
        ctype = exc.headers.get("Content-Type", "")
    return status, (json.loads(text) if "json" in ctype else text)


class Hook(http.server.BaseHTTPRequestHandler):
    received: list[dict[str, Any]] = []

    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers.get("Content-Length", 0))
        Hook.received.append(json.loads(self.rfile.read(length)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def webhook() -> Iterator[str]:
    Hook.received = []
    server = http.server.HTTPServer(("127.0.0.1", 0), Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    server.shutdown()
    server.server_close()


class RecordingSink:
    """A plugin-style alert sink given as ``module:Class``: keeps what it is called with."""

    received: list[dict[str, Any]] = []

    def __call__(self, alert: dict[str, Any]) -> None:
        RecordingSink.received.append(alert)


@pytest.fixture
def board(tmp_path, webhook) -> Iterator[tuple[ToolSystem, Dashboard, str]]:
    with ToolSystem(policy=FAST, sample_every=0.3, audit_log=tmp_path / "audit.log") as system:
        system.security.add_principal("ops", ["maintainer"], token=OPS_TOKEN)
        system.security.add_principal("watcher", ["viewer"], token=VIEW_TOKEN)
        workers = system.supervise("workers", policy=FAST)
        workers.spawn("tests.tools:Counter", name="counter")
        workers.spawn("tests.tools:Counter", name="other")
        rules = [AlertRule(name="busy-memory", metric="memory_mb", op=">", threshold=0.0,
                           for_seconds=0.0, severity="warning", tool="workers/counter")]
        sinks = [AlertSink(kind="webhook", url=webhook), AlertSink(kind="log"),
                 AlertSink(kind="tests.test_monitoring:RecordingSink")]
        with Dashboard(system, "127.0.0.1:0", rules=rules, sinks=sinks, poll_every=0.2) as dash:
            yield system, dash, dash.url


# ---------------------------------------------------------------------- units
def test_metrics_render_prometheus_text_with_toolvisor_names() -> None:
    m = Metrics()
    m.observe_timings("w/c", {"add": {"count": 3, "sum": 0.003, "errors": 1,
                                      "buckets": [3] + [0] * (len(Metrics.BUCKETS) - 1)}})
    m.observe_call("w/c", "add", 0.0004, True)
    m.observe_event({"time": time.time(), "path": "w/c", "event": "restarted", "detail": ""})
    m.observe_event({"time": time.time(), "path": "w/c", "event": "limit exceeded", "detail": ""})
    m.observe_event({"time": time.time(), "path": "w/c", "event": "breaker open", "detail": ""})
    families = {f.name: f for f in text_string_to_metric_families(m.render().decode())}
    assert {"toolvisor_command_seconds", "toolvisor_message_latency_seconds", "toolvisor_restarts",
            "toolvisor_quota_actions", "toolvisor_breaker_trips",
            "toolvisor_command_errors"} <= set(families)
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in families.values() for s in f.samples}
    assert samples[("toolvisor_command_seconds_count", (("command", "add"), ("tool", "w/c")))] == 3
    assert samples[("toolvisor_restarts_total", (("tool", "w/c"),))] == 1
    assert samples[("toolvisor_breaker_trips_total", (("tool", "w/c"),))] == 1
    assert samples[("toolvisor_quota_actions_total", (("action", "limit exceeded"), ("tool", "w/c")))] == 1


def test_alert_rule_with_unknown_metric_is_a_clear_error_at_load(tmp_path) -> None:
    text = """
[[alert]]
name = "too-big"
metric = "toolvisor_bogus"
op = ">"
threshold = 1
"""
    path = tmp_path / "alerts.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        ToolSystem.from_config(path)
    message = str(info.value)
    assert "alert" in message and "toolvisor_bogus" in message and "memory_mb" in message


@pytest.mark.parametrize("table, words", [
    ({"name": "a", "metric": "memory_mb", "op": "=>", "threshold": 1}, ["op", "=>"]),
    ({"name": "a", "metric": "memory_mb", "op": ">", "threshold": "x"}, ["threshold"]),
    ({"name": "a", "metric": "memory_mb", "op": ">", "threshold": 1, "severity": "huge"},
     ["severity", "huge", "critical"]),
    ({"name": "a", "metric": "memory_mb", "op": ">", "threshold": 1, "for": -1}, ["for"]),
    ({"metric": "memory_mb", "op": ">", "threshold": 1}, ["name"]),
])
def test_bad_alert_rules_name_the_field(table: dict[str, Any], words: list[str]) -> None:
    with pytest.raises(ValueError) as info:
        parse_alerts([table], [])
    for word in words:
        assert word in str(info.value)


def test_bad_alert_sink_names_the_field() -> None:
    with pytest.raises(ValueError, match="kind"):
        parse_alerts([], [{"kind": "pager"}])
    with pytest.raises(ValueError, match="url"):
        parse_alerts([], [{"kind": "webhook"}])


def test_config_dashboard_is_checked_and_kept() -> None:
    cfg = parse_config('[system]\ndashboard = "127.0.0.1:8750"\n')
    assert cfg.dashboard == "127.0.0.1:8750"
    with pytest.raises(ConfigError, match="dashboard"):
        parse_config('[system]\ndashboard = "nowhere"\n')


# ---------------------------------------------------------------------- the HTTP API
@pytest.mark.timeout(90)
def test_tree_and_tool_api(board) -> None:
    system, dash, url = board
    status, tree = req("GET", f"{url}/api/tree")
    assert status == 200
    workers = next(c for c in tree["children"] if c["name"] == "workers")
    counter = next(c for c in workers["children"] if c["name"] == "counter")
    assert counter["state"] == "running" and counter["pid"] == system.tool("workers/counter").status().pid
    status, tool = req("GET", f"{url}/api/tools/workers/counter")
    assert status == 200 and tool["path"] == "workers/counter" and tool["state"] == "running"
    assert "uptime" in tool and "restarts" in tool and "busy" in tool
    assert isinstance(tool["uptime"], int | float) and 0 <= tool["uptime"] < 120


def test_unknown_tool_is_404(board) -> None:
    _, _, url = board
    status, body = req("GET", f"{url}/api/tools/workers/nope")
    assert status == 404 and "workers/nope" in body["error"]
    status, body = req("POST", f"{url}/api/tools/workers/nope/pause", token=OPS_TOKEN)
    assert status == 404 and "workers/nope" in body["error"]
    status, body = req("POST", f"{url}/api/tools/workers/counter/explode", token=OPS_TOKEN)
    assert status == 404 and "explode" in body["error"]


@pytest.mark.timeout(90)
def test_metrics_endpoint_counts_calls(board) -> None:
    system, _, url = board
    counter = system.tool("workers/counter")
    for _ in range(5):
        counter.call("add", k=1)

    def counts() -> dict[str, float] | None:
        status, text = req("GET", f"{url}/metrics")
        assert status == 200
        found = {}
        for fam in text_string_to_metric_families(text):
            for s in fam.samples:
                if s.labels.get("tool") == "workers/counter" and s.labels.get("command") == "add" \
                        and s.name.endswith("_count"):
                    found[s.name] = s.value
        ok = (found.get("toolvisor_command_seconds_count") == 5
              and found.get("toolvisor_message_latency_seconds_count") == 5)
        return found if ok else None

    wait_until(counts, 15.0, 0.2, "the 5 calls in /metrics")


@pytest.mark.timeout(90)
def test_actions_need_a_token_whose_role_allows_them(board, tmp_path) -> None:
    system, _, url = board
    pause = f"{url}/api/tools/workers/counter/pause"
    status, body = req("POST", pause)
    assert status == 401 and "token" in body["error"]
    status, body = req("POST", pause, token="wrong-token-000000")
    assert status == 403
    status, body = req("POST", pause, token=VIEW_TOKEN)  # viewer: read only
    assert status == 403 and "watcher" in body["error"]
    assert system.tool("workers/counter").status().state.value == "running"
    status, body = req("POST", pause, token=OPS_TOKEN)
    assert status == 200, body
    assert system.tool("workers/counter").status().state.value == "paused"
    status, body = req("POST", f"{url}/api/tools/workers/counter/resume", token=OPS_TOKEN)
    assert status == 200 and system.tool("workers/counter").status().state.value == "running"
    audit = (tmp_path / "audit.log").read_text()
    assert '"denied"' in audit and "watcher" in audit and "dashboard pause" in audit
    assert "no token" in audit and "wrong token" in audit
    assert "tool:workers/counter" in audit and "ops" in audit


@pytest.mark.timeout(90)
def test_malformed_json_is_400(board) -> None:
    _, _, url = board
    status, body = req("POST", f"{url}/api/alerts/1/ack", token=OPS_TOKEN, raw=b"{not json")
    assert status == 400 and "JSON" in body["error"]
    status, body = req("POST", f"{url}/api/alerts/1/ack", token=OPS_TOKEN, body=[1, 2])
    assert status == 400 and "object" in body["error"]
    status, body = req("POST", f"{url}/api/alerts/1/ack", token=OPS_TOKEN, body={"note": 5})
    assert status == 400 and "note" in body["error"]
    status, body = req("POST", f"{url}/api/alerts/999/ack", token=OPS_TOKEN, body={})
    assert status == 404
    status, body = req("GET", f"{url}/api/events?since=yesterday")
    assert status == 400 and "since" in body["error"]


@pytest.mark.timeout(90)
def test_stream_shows_a_restart_within_a_second(board) -> None:
    system, _, url = board
    resp = urllib.request.urlopen(f"{url}/api/stream", timeout=10)
    assert resp.headers["Content-Type"].startswith("text/event-stream")
    first = _next_event(resp)
    assert first["type"] == "tree"
    old_pid = system.tool("workers/other").status().pid
    system.tool("workers/other").restart()
    restarted_at = time.monotonic()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        ev = _next_event(resp)
        if ev["type"] == "tree":
            node = _find(ev["data"], "workers/other")
            if node and node["pid"] not in (None, old_pid):
                break
    else:
        raise AssertionError("no tree with the new pid came on the stream")
    resp.close()
    assert time.monotonic() - restarted_at < 10  # (the < 1 s figure is a benchmark)


def _next_event(resp: Any) -> dict[str, Any]:
    kind, data = None, []
    while True:
        line = resp.readline().decode().rstrip("\n")
        if line.startswith("event:"):
            kind = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())
        elif line == "" and data:
            return {"type": kind, "data": json.loads("\n".join(data))}


def _find(node: dict[str, Any], path: str) -> dict[str, Any] | None:
    if node.get("path") == path:
        return node
    for child in node.get("children", []):
        found = _find(child, path)
        if found:
            return found
    return None


@pytest.mark.timeout(90)
def test_alert_fires_reaches_the_webhook_and_is_acknowledged(board) -> None:
    system, _, url = board
    alert = wait_until(lambda: next((a for a in req("GET", f"{url}/api/alerts")[1]
                                     if a["rule"] == "busy-memory"), None), 15.0, 0.2,
                       "the memory alert to fire")
    assert alert["state"] == "firing" and alert["tool"] == "workers/counter"
    assert alert["severity"] == "warning"
    wait_until(lambda: any(h.get("rule") == "busy-memory" and h.get("state") == "firing"
                           for h in Hook.received), 10.0, 0.1, "the webhook POST")
    wait_until(lambda: any(a.get("rule") == "busy-memory" for a in RecordingSink.received), 10.0, 0.1,
               "the plugin sink to be called")
    status, body = req("POST", f"{url}/api/alerts/{alert['id']}/ack", token=VIEW_TOKEN, body={})
    assert status == 403
    status, body = req("POST", f"{url}/api/alerts/{alert['id']}/ack", token=OPS_TOKEN,
                        body={"note": "looking"})
    assert status == 200 and body["acknowledged_by"] == "ops" and body["acknowledged_at"]
    _, events = req("GET", f"{url}/api/events")
    assert any(e["event"] == "alert firing" and e["path"] == "workers/counter" for e in events)


# ---------------------------------------------------------------------- the command line
def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_cli_until_served(args: list[str], port: int) -> None:
    import signal
    import subprocess
    import sys

    from tests.test_cli import ROOT, cli_env

    proc = subprocess.Popen([sys.executable, "-m", "supervisors", "run", *args, "--duration", "60"],
                            cwd=ROOT, env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        def tree() -> Any:
            try:
                return req("GET", f"{url}/api/tree")
            except OSError:
                return None

        status, body = wait_until(tree, 40.0, 0.2, "the dashboard of toolvisor run")
        assert status == 200 and any(c["name"] == "workers" for c in body["children"])
        status, text = req("GET", f"{url}/metrics")
        assert status == 200 and "toolvisor_tool_up" in text
        status, page = req("GET", f"{url}/")
        assert status == 200 and "/static/dashboard.js" in page
        status, js = req("GET", f"{url}/static/dashboard.js")
        assert status == 200 and "EventSource" in js
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=40)
    assert proc.returncode == 0, err
    assert f"dashboard on {url}" in err


@pytest.mark.timeout(120)
def test_toolvisor_run_dashboard_flag_serves_the_example() -> None:
    port = _free_port()
    _run_cli_until_served(["examples/monitored.toml", "--dashboard", f"127.0.0.1:{port}"], port)


@pytest.mark.timeout(120)
def test_system_dashboard_in_the_config_is_served(tmp_path) -> None:
    port = _free_port()
    config = tmp_path / "tree.toml"
    config.write_text(f'[system]\ndashboard = "127.0.0.1:{port}"\n\n[[supervisor]]\nname = "workers"\n\n'
                      '[[supervisor.tool]]\nname = "counter"\nactor = "examples.counter:Counter"\n')
    _run_cli_until_served([str(config)], port)


def test_the_example_config_loads_its_alerts() -> None:
    from tests.test_cli import ROOT

    system = ToolSystem.from_config(ROOT / "examples" / "monitored.toml")
    assert system.dashboard == "127.0.0.1:8750"
    rules, sinks = parse_alerts(*system.alert_tables)
    assert [r.name for r in rules] == ["flaky-restarts", "memory-high"] and sinks[0].kind == "log"


def test_alerts_wait_for_their_duration_then_fire_and_resolve() -> None:
    from supervisors.monitoring import Alerts

    m = Metrics()
    rule = AlertRule(name="hot", metric="cpu_percent", op=">=", threshold=50.0, for_seconds=2.0,
                     severity="error")
    alerts = Alerts([rule])
    m.observe_tree([{"path": "w/a", "state": "running", "cpu_percent": 80.0}], now=100.0)
    assert alerts.evaluate(m, now=100.0) == []           # holds, but not for 2 s yet
    assert alerts.evaluate(m, now=101.0) == []
    fired = alerts.evaluate(m, now=102.5)
    assert [(a.rule, a.tool, a.state, a.value) for a in fired] == [("hot", "w/a", "firing", 80.0)]
    assert alerts.evaluate(m, now=103.0) == []           # fires once
    m.observe_tree([{"path": "w/a", "state": "running", "cpu_percent": 10.0}], now=104.0)
    resolved = alerts.evaluate(m, now=104.0)
    assert [(a.id, a.state) for a in resolved] == [(fired[0].id, "resolved")]
    acked = alerts.acknowledge(fired[0].id, "ops", "seen")
    assert acked.acknowledged_by == "ops" and acked.acknowledged_at and acked.note == "seen"
    with pytest.raises(KeyError):
        alerts.acknowledge(12345, "ops")


@pytest.mark.timeout(90)
def test_beyond_loopback_reading_needs_a_token_too() -> None:
    with ToolSystem(policy=FAST) as system:
        system.security.add_principal("watcher", ["viewer"], token=VIEW_TOKEN)
        system.security.add_principal("nobody", [], token="nobody-token-1234")
        with Dashboard(system, "0.0.0.0:0", rules=[], sinks=[]) as dash:
            url = f"http://127.0.0.1:{dash.port}"
            assert req("GET", f"{url}/api/tree")[0] == 401
            assert req("GET", f"{url}/metrics")[0] == 401
            assert req("GET", f"{url}/api/tree", token="nobody-token-1234")[0] == 403
            status, tree = req("GET", f"{url}/api/tree", token=VIEW_TOKEN)
            assert status == 200 and tree["kind"] == "supervisor"


def test_chart_points_carry_round_trips_and_command_times() -> None:
    m = Metrics()
    node = {"path": "w/c", "state": "running", "memory_mb": 9.5, "cpu_percent": 3.0}
    m.observe_tree([node], now=1.0)                      # nothing called yet
    m.observe_timings("w/c", {"add": {"count": 2, "sum": 0.004, "errors": 0, "buckets": []}})
    m.observe_tree([node], now=2.0)                      # only tool-to-tool calls: command times
    m.observe_call("w/c", "add", 0.010, True)
    m.observe_timings("w/c", {"add": {"count": 1, "sum": 0.001, "errors": 0, "buckets": []}})
    m.observe_tree([node], now=3.0)                      # host calls: their round trip wins
    assert [p[3] for p in m.history["w/c"]] == [None, None, 10.0]    # host round trips
    assert [p[4] for p in m.history["w/c"]] == [None, 2.0, 1.0]      # the tool's command times
    assert [p[1] for p in m.history["w/c"]] == [9.5, 9.5, 9.5]
    m.observe_call("w/c", "nonexistent", 0.001, False)   # a typo gets no series
    assert ("w/c", "nonexistent") not in m.latency


@pytest.mark.timeout(90)
def test_restart_and_stop_through_the_api(board) -> None:
    system, _, url = board
    tool = system.tool("workers/other")
    old = tool.status().pid
    status, body = req("POST", f"{url}/api/tools/workers/other/restart", token=OPS_TOKEN)
    assert status == 200 and body["action"] == "restart"
    assert tool.status().pid not in (None, old) and body["tool"]["pid"] == tool.status().pid
    status, body = req("POST", f"{url}/api/tools/workers/other/stop", token=OPS_TOKEN)
    assert status == 200 and tool.status().state.value == "stopped"
    assert body["tool"]["state"] == "stopped" and body["tool"]["pid"] is None
    status, body = req("POST", f"{url}/api/tools/workers/other/pause", token=OPS_TOKEN)
    assert status == 409 and "cannot pause while stopped" in body["error"]   # the state graph says no


# ---------------------------------------------------------------------- a real Prometheus
@pytest.mark.timeout(120)
def test_a_real_prometheus_scrapes_the_figures(board, tmp_path) -> None:
    import shutil
    import subprocess

    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("no prometheus binary (Debian: apt-get install prometheus); "
                    "the exposition format is still checked by the other tests")
    system, dash, _ = board
    for _ in range(7):
        system.tool("workers/counter").call("add", k=1)
    port = _free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: toolvisor\n"
                      f"    static_configs:\n      - targets: ['127.0.0.1:{dash.port}']\n")
    proc = subprocess.Popen([binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                             f"--web.listen-address=127.0.0.1:{port}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    query = (f"http://127.0.0.1:{port}/api/v1/query?query="
             "toolvisor_messages_total%7Btool%3D%22workers%2Fcounter%22%2Ccommand%3D%22add%22%7D")
    try:
        def scraped() -> Any:
            try:
                status, body = req("GET", query)
            except OSError:
                return None
            result = body.get("data", {}).get("result", []) if status == 200 else []
            return result if result and result[0]["value"][1] == "7" else None

        result = wait_until(scraped, 60.0, 0.5, "Prometheus to scrape toolvisor_messages_total = 7")
        assert result[0]["metric"]["job"] == "toolvisor"
        status, body = req("GET", f"http://127.0.0.1:{port}/api/v1/targets")
        health = [t["health"] for t in body["data"]["activeTargets"]]
        assert health == ["up"], body
    finally:
        proc.terminate()
        proc.wait(20)


@pytest.mark.timeout(60)
def test_callers_cannot_drain_the_metrics_command() -> None:
    from actors.errors import ToolError
    from actors.timings import TIMINGS_COMMAND

    with ToolSystem(policy=FAST) as system:
        tool = system.supervise("w").spawn("tests.tools:Counter", name="c")
        with pytest.raises(ToolError, match="toolvisor's own"):
            tool.call(TIMINGS_COMMAND)
        with pytest.raises(ToolError, match="toolvisor's own"):
            tool.call_many([("get", {}), (TIMINGS_COMMAND, {})])


def test_a_bad_dashboard_address_on_the_command_line_is_refused(capsys) -> None:
    from supervisors.frontends import cli

    with pytest.raises(SystemExit) as info:
        cli.main(["run", "examples/monitored.toml", "--dashboard", "nowhere"])
    assert info.value.code == 2
    assert "nowhere" in capsys.readouterr().err


@pytest.mark.timeout(60)
def test_a_port_in_use_is_a_clear_error() -> None:
    import socket

    with socket.socket() as taken, ToolSystem(policy=FAST) as system:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(RuntimeError, match=f"cannot listen on 127.0.0.1:{port}"):
            Dashboard(system, f"127.0.0.1:{port}", rules=[], sinks=[]).start()
        assert system.call_log is None


def test_plugin_sinks_by_entry_point_name_and_unknown_kinds_refused() -> None:
    from supervisors.monitoring.alerts import parse_alerts

    _, sinks = parse_alerts([], [{"kind": "stderr"}])  # examples/plugin's entry point
    assert callable(sinks[0].plugin())
    with pytest.raises(ValueError, match=r"kind = 'pager' is invalid: use one of log, webhook, or a plugin"):
        parse_alerts([], [{"kind": "pager"}])
