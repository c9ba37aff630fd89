"""The ``toolvisor`` command line, run for real as a subprocess (plus its pure helpers)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import psutil
import pytest

from supervisors.frontends import cli
from supervisors.processes.procs import session_pids
from tests.helpers import wait_dead, wait_until

ROOT = Path(__file__).resolve().parent.parent
DEMO = "examples/demo.toml"
DEMO_TOOLS = ("workers/counter", "workers/flaky", "workers/echo", "pipeline/clock",
              "pipeline/echo", "pipeline/stage/tally", "pipeline/stage/glitchy")
ROW = re.compile(r"^\s*(\(root\)|[\w./-]+)\s+(supervisor|tool)\s+(\w+)\s+(\d+)?\s")


def cli_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    env.pop("TOOLVISOR_LOG_LEVEL", None)
    return env


def run_cli(*args: str, timeout: float = 40.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "supervisors", *args], cwd=ROOT, env=cli_env(),
                          capture_output=True, text=True, timeout=timeout)


def table_pids(output: str) -> dict[str, int]:
    """path -> pid for every row of every table in ``output`` that shows a pid."""
    pids: dict[str, int] = {}
    for line in output.splitlines():
        m = ROW.match(line)
        if m and m.group(4):
            pids[m.group(1)] = int(m.group(4))
    return pids


def command(proc: psutil.Process) -> str:
    try:
        return " ".join(proc.cmdline())
    except psutil.Error:  # a zombie or gone
        return ""


def no_traceback(text: str) -> bool:
    return "Traceback" not in text and 'File "' not in text


class RunningCli:
    """A ``toolvisor run`` subprocess whose stdout is collected by a thread."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "supervisors", "run", *args],
                                     cwd=ROOT, env=cli_env(), stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def finish(self, timeout: float = 30.0) -> tuple[int, str, str]:
        """Wait for the exit; return (status, stdout, stderr)."""
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise
        self.reader.join(5.0)
        assert self.proc.stderr is not None
        return code, self.output, self.proc.stderr.read()

    def kill(self) -> None:
        """End the CLI and whatever it started (only used when a test has already failed)."""
        for child in psutil.Process(self.proc.pid).children(recursive=True):
            try:
                child.kill()
            except psutil.Error:
                pass
        self.proc.kill()
        self.proc.wait()


def full_table_shown(run: RunningCli) -> bool:
    """True once a table with every demo tool running (with its pid) was printed."""
    pids = table_pids(run.output)
    return all(t in pids for t in DEMO_TOOLS) and "running" in run.output


# ---------------------------------------------------------------- runs of the real CLI
@pytest.mark.timeout(60)
def test_run_with_duration_shows_the_tree_and_exits_0() -> None:
    result = run_cli("run", DEMO, "--duration", "3", "--interval", "0.5")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for path in DEMO_TOOLS + ("workers", "pipeline", "pipeline/stage", "(root)"):
        assert path in out
    for column in cli.COLUMNS:
        assert column in out
    assert "running" in out
    assert re.search(r"\d\d:\d\d:\d\d workers/counter started \(pid \d+\)", out)
    assert len(re.findall(r"^toolvisor examples/demo.toml +\d{4}-\d\d-\d\d", out, re.M)) >= 3
    assert no_traceback(result.stderr)
    pids = table_pids(out)
    assert len(pids) >= len(DEMO_TOOLS) + 4
    wait_dead(*pids.values())


@pytest.mark.timeout(60)
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_stops_cleanly_and_leaves_no_process(sig: signal.Signals) -> None:
    run = RunningCli(DEMO, "--interval", "0.3")
    try:
        wait_until(lambda: full_table_shown(run) or run.proc.poll() is not None, timeout=30,
                   what="the first full table")
        assert run.proc.poll() is None, run.output
        pids = table_pids(run.output)
        sid = os.getsid(pids["(root)"])
        reapers = [p for p in psutil.Process(run.proc.pid).children() if "reaper" in command(p)]
        run.proc.send_signal(sig)
        code, out, err = run.finish()
    except BaseException:
        run.kill()
        raise
    assert code == 0, err
    assert no_traceback(err)
    assert reapers, "the CLI should have started a reaper"
    wait_dead(*pids.values(), *(p.pid for p in reapers))
    wait_until(lambda: not session_pids(sid), timeout=10, what="the actor system's session to end")


@pytest.mark.timeout(60)
def test_events_show_restarts_of_the_flaky_tool(tmp_path: Path) -> None:
    config = tmp_path / "flaky.toml"
    config.write_text("""
[[supervisor]]
name = "w"
max_restarts = 50
period = 5.0
backoff = { initial = 0.01, maximum = 0.05, reset_after = 1.0 }

[[supervisor.tool]]
name = "flaky"
actor = "examples.demo_tools:Flaky"
config = { interval = 0.1, fail_probability = 0.5 }
""")
    result = run_cli("run", str(config), "--duration", "2", "--interval", "0.5")
    assert result.returncode == 0, result.stderr
    assert re.search(r"\d\d:\d\d:\d\d w/flaky failed \(RuntimeError: simulated failure", result.stdout)
    assert re.search(r"\d\d:\d\d:\d\d w/flaky restarted", result.stdout)
    assert "simulated failure on tick" in result.stdout  # the last-error column


# ---------------------------------------------------------------- bad configs: exit 2
def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert no_traceback(result.stderr), result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert result.stdout == ""
    return lines[0]


@pytest.mark.timeout(60)
def test_broken_toml_exits_2_naming_the_line(tmp_path: Path) -> None:
    bad = tmp_path / "broken.toml"
    bad.write_text('[[supervisor]]\nname = "w"\nstrategy = \n')
    message = one_line_error(run_cli("run", str(bad)))
    assert "broken.toml" in message and "line 3" in message


@pytest.mark.timeout(60)
def test_unknown_actor_exits_2_naming_the_key(tmp_path: Path) -> None:
    bad = tmp_path / "nope.toml"
    bad.write_text('[[supervisor]]\nname = "w"\n\n[[supervisor.tool]]\nname = "t"\n'
                   'actor = "examples.nope:Nope"\n')
    message = one_line_error(run_cli("run", str(bad)))
    assert "actor" in message and "examples.nope:Nope" in message
    assert "supervisor[0] (w).tool[0] (t)" in message


@pytest.mark.timeout(60)
def test_unknown_key_and_missing_file_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "key.toml"
    bad.write_text('[[supervisor]]\nname = "w"\nstrategy = "one_for_one"\nmax_restart = 3\n')
    assert "max_restart" in one_line_error(run_cli("run", str(bad)))
    assert "cannot read" in one_line_error(run_cli("run", str(tmp_path / "missing.toml")))


@pytest.mark.timeout(60)
def test_bad_arguments_are_usage_errors() -> None:
    result = run_cli("run", DEMO, "--interval", "0")
    assert result.returncode == 2 and "--interval" in result.stderr
    result = run_cli()
    assert result.returncode == 2 and "usage: toolvisor" in result.stderr
    result = run_cli("--help")
    assert result.returncode == 0 and "run" in result.stdout


# ---------------------------------------------------------------- the pure helpers
TREE = {"name": "root", "path": "", "kind": "supervisor", "state": "running", "pid": os.getpid(),
        "last_error": None, "children": [
            {"name": "w", "path": "w", "kind": "supervisor", "state": "running", "pid": None,
             "restarts": 2, "last_error": None, "children": [
                 {"name": "t", "path": "w/t", "kind": "tool", "state": "failed", "pid": None,
                  "restarts": 5, "last_error": "RuntimeError: " + "x" * 200}]}]}


@pytest.mark.timeout(10)
def test_flatten_and_render_table() -> None:
    rows = cli.flatten(TREE)
    assert [(r.depth, r.path, r.restarts) for r in rows] == [(0, "(root)", 0), (1, "w", 2),
                                                               (2, "w/t", 5)]
    text = cli.render_table(rows, width=100)
    lines = text.splitlines()
    assert lines[0].startswith("PATH") and "LAST ERROR" in lines[0]
    assert lines[2].startswith("  w ") and lines[3].startswith("    w/t ")
    assert lines[3].endswith("...") and len(lines[3]) <= 100
    assert str(os.getpid()) in lines[1]
    assert cli.summary(rows) == "0/1 tools running, 7 restarts"


@pytest.mark.timeout(10)
def test_memory_is_blank_without_a_live_process() -> None:
    assert float(cli.memory_mb(os.getpid())) > 0
    assert cli.memory_mb(None) == ""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert cli.memory_mb(child.pid) == ""


@pytest.mark.timeout(10)
def test_format_event() -> None:
    line = cli.format_event({"time": 0.0, "path": "workers/flaky", "event": "restarted",
                             "detail": ""})
    assert re.fullmatch(r"\d\d:\d\d:\d\d workers/flaky restarted", line)
    line = cli.format_event({"time": 0.0, "path": "", "event": "gave up", "detail": "too\nmany"})
    assert line.endswith("(root) gave up (too many)")


@pytest.mark.timeout(10)
def test_stop_signals_phases() -> None:
    stop = cli.StopSignals()
    with pytest.raises(KeyboardInterrupt):
        stop._handle(signal.SIGINT, None)  # while starting: interrupt the start
    assert stop.requested == "SIGINT" and stop.phase == "stopping"
    stop = cli.StopSignals()
    stop.phase = "running"
    stop._handle(signal.SIGTERM, None)  # while running: just ask the loop to end
    assert stop.requested == "SIGTERM" and stop.phase == "stopping"
    stop._handle(signal.SIGTERM, None)  # once more: acknowledged, shutdown goes on
    assert stop.extra == 1
