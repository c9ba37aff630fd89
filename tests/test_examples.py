"""Every example runs: the spawn-from-code script, and the demo config is valid."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from supervisors.tree.config import load_config
from supervisors.tree.policy import Policy

ROOT = Path(__file__).resolve().parent.parent


def run_example(script: str, *args: str) -> str:
    """Run ``examples/<script> [args]`` as a user would (no PYTHONPATH); return its output."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # it must find its own way
    result = subprocess.run([sys.executable, f"examples/{script}", *args], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=50)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    return result.stdout


@pytest.mark.timeout(60)
def test_spawn_from_code_runs_and_shows_the_restart() -> None:
    out = run_example("spawn_from_code.py")
    assert "add(k=2) -> 3" in out
    before = re.search(r"status: running, pid (\d+), restarts 0", out)
    after = re.search(r"restarted: running, pid (\d+), restarts 1", out)
    assert before and after and before.group(1) != after.group(1), out
    assert "('workers/counter', 'running')" in out
    assert "get() on the new instance -> 1" in out


@pytest.mark.timeout(60)
def test_pipeline_example_calls_asks_sends_and_catches_a_deadlock() -> None:
    out = run_example("pipeline.py")
    assert "research(wiki/actors) -> Actor model" in out
    assert "wiki/erlang: 'Erlang', 6 words" in out and "wiki/otp: 'OTP', 6 words" in out
    assert "report: 3 pages, 3 notes sent by the fetcher, done=True" in out
    assert "deadlock caught: DeadlockError: deadlock: agent/planner -> agent/fetcher -> " \
           "agent/planner" in out


def walk(spec: dict[str, Any], prefix: str = "") -> dict[str, dict[str, Any]]:
    path = f"{prefix}/{spec['name']}" if prefix else spec["name"]
    out = {path: spec}
    for child in spec.get("children", []):
        out.update(walk(child, path))
    return out


@pytest.mark.timeout(30)
def test_demo_config_is_valid_and_has_the_promised_shape() -> None:
    cfg = load_config(ROOT / "examples" / "demo.toml")
    specs: dict[str, dict[str, Any]] = {}
    for sup in cfg.supervisors:
        specs.update(walk(sup))
    tools = {p: s["actor"] for p, s in specs.items() if s["kind"] == "tool"}
    assert tools["workers/counter"] == "examples.counter:Counter"
    assert tools["workers/flaky"] == "examples.demo_tools:Flaky"
    assert tools["pipeline/stage/glitchy"] == "examples.demo_tools:Flaky"
    strategies = {p: Policy.from_dict(s["policy"]).strategy for p, s in specs.items()
                  if s["kind"] == "supervisor"}
    assert strategies == {"workers": "one_for_one", "pipeline": "rest_for_one",
                          "pipeline/stage": "one_for_all"}


@pytest.mark.timeout(30)
def test_demo_intensity_outlasts_the_flaky_failure_rate() -> None:
    """workers must allow far more restarts per period than flaky causes on average."""
    cfg = load_config(ROOT / "examples" / "demo.toml")
    workers = next(s for s in cfg.supervisors if s["name"] == "workers")
    flaky = next(c for c in workers["children"] if c["name"] == "flaky")
    policy = Policy.from_dict(workers["policy"])
    per_period = policy.period / flaky["config"]["interval"] * flaky["config"]["fail_probability"]
    assert policy.strategy == "one_for_one"
    assert policy.max_restarts >= 4 * per_period  # Poisson tail: giving up takes many hours
    assert 1.0 <= flaky["config"]["interval"] / flaky["config"]["fail_probability"] <= 10.0


@pytest.mark.timeout(60)
def test_leaky_example_is_restarted_at_its_memory_quota() -> None:
    out = run_example("leaky.py")
    growth = [float(m) for m in re.findall(r"memory_mb +([\d.]+) of 64", out)]
    assert len(growth) >= 2 and growth[-1] > growth[0], out  # usage printed as it grows
    moved = re.search(r"restarted: pid (\d+) -> (\d+), restarts 1, state running", out)
    assert moved and moved.group(1) != moved.group(2), out
    assert re.search(r"last_error: LimitExceeded: memory_mb [\d.]+ over its limit 64 "
                     r"\(on_limit=restart\)", out), out
    assert "limit exceeded: memory_mb" in out and "action: restart" in out, out


@pytest.mark.timeout(30)
def test_leaky_config_is_valid() -> None:
    cfg = load_config(ROOT / "examples" / "leaky.toml")
    assert cfg.system_options["sample_every"] == 0.5
    tool = cfg.supervisors[0]["children"][0]
    assert tool["actor"] == "examples.leaky:Leaky"
    assert tool["limits"]["memory_mb"] == 64 and tool["on_limit"] == "restart"


@pytest.mark.timeout(60)
def test_secured_example_checks_and_audits() -> None:
    out = run_example("secured.py")
    assert "alice: add(k=2) -> 3" in out
    assert "alice: stop refused: tool:workers/counter:stop on tool:workers/counter" in out
    assert "ops: restart -> running" in out
    assert "audit: intact" in out
    assert "alice stop tool:workers/counter -> denied" in out
    assert "ops restart tool:workers/counter -> ok" in out


@pytest.mark.timeout(60)
def test_watchdog_example_kills_names_and_replaces_a_hung_tool() -> None:
    out = run_example("watchdog.py")
    assert "busy: command 'spin'" in out
    assert re.search(r"the caller got: .*hung in command 'spin' for \d+ s", out), out
    assert "after: running, restarts 1, new pid: True" in out
    assert "last_error: ToolHung: hung in command 'spin'" in out


@pytest.mark.timeout(60)
def test_otp_features_example_counts_and_shuts_down_automatically() -> None:
    out = run_example("otp_features.py")
    assert "count: {'specs': 2, 'active': 2, 'supervisors': 0, 'workers': 2}" in out
    assert "job supervisor: stopped restarts 0" in out
    assert "count of root: {'specs': 1, 'active': 0, 'supervisors': 1, 'workers': 0}" in out


@pytest.mark.timeout(60)
def test_the_recovery_example_keeps_its_checkpoint_retries_and_opens_its_breaker(tmp_path) -> None:
    out = run_example("recovery.py", str(tmp_path))
    assert "region from the system's context: eu-west" in out
    assert "orders after a checkpoint: 5" in out and "orders on the new instance: 5" in out
    assert "lookup: found after 3 tries" in out
    assert "broken: RuntimeError" in out and "broken: BreakerOpen" in out
    assert "record: crash ProcessExited -> restarted" in out


@pytest.mark.timeout(60)
def test_pool_worker_example_balances_and_scales() -> None:
    out = run_example("pool_worker.py")
    assert re.search(r"pool w/fetch: 4 instances, running: fetch#1 pid \d+", out), out
    assert "on 4 instances" in out and "a batch of 8 ran on 4 instances" in out, out
    assert "one instance: True" in out
    assert "scaled to 2: fetch#1, fetch#2" in out and "4 -> 2: by scale()" in out


@pytest.mark.timeout(60)
def test_reach_example_lets_through_one_server_and_refuses_the_rest() -> None:
    out = run_example("reach.py")
    assert "allowed: hello from the allowed server" in out
    assert re.search(r"other port: refused: tool 'web' may not connect to or bind 127\.0\.0\.1 port \d+", out)
    assert re.search(r"run ls: tool 'web' may not start the program '/\S*/ls'", out)
    assert "'exec:ls:exec' (the ls on PATH)" in out
    assert "still: running" in out
    assert re.search(r"audit: tool:web net net:127\.0\.0\.1:\d+ -> denied", out)
    assert re.search(r"audit: tool:web exec exec:/\S*/ls -> denied", out)
