"""Logs and processes (issue 9): tool log lines name the tool, one line per event, no zombies."""

from __future__ import annotations

import time

import psutil
import pytest
from loguru import logger

from actors import ToolActor, command, logs
from supervisors import ToolError, ToolSystem
from tests.helpers import wait_until
from tests.tools import FailingInit

pytestmark = pytest.mark.timeout(60)


class Chatty(ToolActor):
    @command
    def say(self, text: str) -> int:
        self.log.info("chatty says {}", text)
        return 1


def _err_until(capfd, needle: str, timeout: float = 10.0) -> str:
    seen = ""
    deadline = time.monotonic() + timeout
    while needle not in seen and time.monotonic() < deadline:
        seen += capfd.readouterr().err
        time.sleep(0.02)
    return seen


def test_a_tools_log_lines_show_its_path_not_its_pid(capfd) -> None:
    with ToolSystem() as system:
        w = system.supervise("w")
        t = w.spawn(Chatty, name="chatty")
        t.call("say", text="hello-there")
        pid = t.status().pid
        err = _err_until(capfd, "hello-there")
    (line,) = [x for x in err.splitlines() if "hello-there" in x]
    assert " w/chatty " in line and str(pid) not in line, line


def test_one_failed_start_is_one_warning_line(capfd) -> None:
    with ToolSystem() as system:
        with pytest.raises(ToolError):
            system.spawn(FailingInit, name="db")
        system.tree()
        err = _err_until(capfd, "failed to start")
        time.sleep(0.3)
        err += capfd.readouterr().err
    lines = [x for x in err.splitlines() if "cannot connect to the database" in x]
    assert len(lines) == 1, lines


def test_the_host_keeps_no_defunct_child() -> None:
    with ToolSystem() as system:
        system.spawn(FailingInit.__module__ + ":Counter", name="c").call("add")

        def zombies() -> list[int]:
            out = []
            for c in psutil.Process().children():
                try:
                    if c.status() == psutil.STATUS_ZOMBIE:
                        out.append(c.pid)
                except psutil.NoSuchProcess:
                    pass
            return out

        wait_until(lambda: not zombies(), 5, what="no <defunct> children of the host")
        time.sleep(0.3)
        assert zombies() == []


def test_the_log_set_up_writes_nothing_of_its_own_and_the_lines_after_it_go_out(capfd) -> None:
    """setup() runs each format through loguru once before any actor process forks (so
    they share what that builds, actors.logs._warm), into nowhere."""
    before = logs._configured
    logs._configured = None  # (a set-up as a fresh host does it)
    try:
        logs.setup("DEBUG")
        logger.warning("a line after the set-up")
        err = capfd.readouterr().err
    finally:
        logs._configured = None
        logs.setup(before)
    assert "warm" not in err and "a line after the set-up" in err, err
    assert not getattr(logs._muted, "on", False)


def test_a_relayed_line_reads_as_loguru_writes_it(capfd, monkeypatch) -> None:
    """The root writes the tree's crash lines (LogLine) without loguru when they are plain
    (actors.logs.relayed: its first line through loguru cost it about 0.18 MiB); the text
    must be what loguru writes, and a level under the threshold must stay out."""
    import re

    before = logs._configured
    monkeypatch.setattr(logs, "_isatty", lambda: False)
    logs._configured = None
    text = "tool s000/t0001 crashed: process 12 ended unexpectedly {braces} <green>tags</green>"
    try:
        logs.setup("INFO")
        logger.warning("{}", text)
        logs.relayed("WARNING", text)
        logs.relayed("DEBUG", "under the threshold")
        logs.relayed("ERROR", "an error")
        err = capfd.readouterr().err
    finally:
        logs._configured = None
        monkeypatch.undo()
        logs.setup(before)
    lines = err.splitlines()
    assert len(lines) == 3, err
    through_loguru, plain, error = lines
    assert re.fullmatch(r"\d\d:\d\d:\d\d\.\d{3}", plain.split(" ", 1)[0]), plain
    assert plain.split(" ", 1)[1] == through_loguru.split(" ", 1)[1], (plain, through_loguru)
    assert error.split(" ", 1)[1].startswith("ERROR   ") and error.endswith(" an error")
