"""Shared fixtures, and the session-end check that no test left a process behind."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import psutil
import pytest

from benchmarks.leftovers import live_children
from supervisors import Backoff, Policy, ToolSystem
from tests.helpers import session_members

FAST = Policy(max_restarts=10, period=5.0, backoff=Backoff.none())

#: The foundation's tests run on both call paths: the socket fast path and Thespian's.
BOTH_PATHS = {"test_calls", "test_lifecycle", "test_supervision", "test_hooks", "test_orphans",
              "test_config", "test_system"}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if metafunc.module.__name__.rsplit(".", 1)[-1] in BOTH_PATHS:
        metafunc.parametrize("call_path", ["socket", "thespian"], indirect=True)


@pytest.fixture(autouse=True)
def call_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The call path every ToolSystem in this test uses (hosts in subprocesses too)."""
    path = getattr(request, "param", "socket")
    monkeypatch.setenv("TOOLVISOR_CALL_PATH", path)
    if "TOOLVISOR_DATA_DIR" not in os.environ:  # keep context stores out of the worktree
        monkeypatch.setenv("TOOLVISOR_DATA_DIR", str(_data_root(request)))
    return path


def _data_root(request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue("tmp_path") / "data")


@pytest.fixture
def system() -> Iterator[ToolSystem]:
    with ToolSystem(policy=FAST) as s:
        yield s


@pytest.fixture
def log(tmp_path) -> str:
    return str(tmp_path / "events.log")


def read_lines(path: str) -> list[str]:
    try:
        with open(path) as f:
            return [line.rstrip("\n") for line in f]
    except FileNotFoundError:
        return []


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run if any actor-system process or child of pytest is still alive."""
    deadline = time.monotonic() + 5.0
    while True:
        strays = [p for g in ToolSystem.started_sessions for p in session_members(g)]
        strays += live_children()
        if not strays or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    if strays:
        lines = []
        for p in strays:
            try:
                lines.append(f"  pid {p.pid}: {' '.join(p.cmdline())[:120]}")
                p.kill()
            except psutil.Error:
                pass
        print("\nSTRAY PROCESSES left behind by the tests (now killed):\n" + "\n".join(lines))
        session.exitstatus = 1
