"""Faults the supervisor must never miss (issue 8): lost deaths, restart loops, hung tools,
replies before a crash, pause on a busy tool, status under a failed subtree, start-up signals."""

from __future__ import annotations

import os
import signal

import pytest

from supervisors import Backoff, Policy, ToolState, ToolSystem
from tests.helpers import wait_dead, wait_until
from tests.tools import Counter

pytestmark = pytest.mark.timeout(120)
NOW = Backoff.none()
MANY = Policy(max_restarts=10_000, period=1.0, backoff=NOW)


def lifecycle_op(sup, sibling, op: str, i: int) -> None:
    """A lifecycle operation on ``sibling`` (or its supervisor) right after a kill."""
    if op == "stop":
        sibling.stop()
        sibling.start()
    elif op == "start":
        sibling.start()
    elif op == "restart":
        sibling.restart()
    elif op == "pause":
        sibling.pause()
        sibling.resume()
    elif op == "spawn":
        sup.spawn(Counter, name=f"extra{i}")
        sup.remove(f"extra{i}")


@pytest.mark.parametrize("op", ["stop", "start", "restart", "spawn", "pause"])
def test_no_death_is_missed_during_a_lifecycle_op_on_a_sibling(op: str) -> None:
    with ToolSystem(policy=MANY) as system:
        w = system.supervise("w", MANY)
        a = w.spawn(Counter, name="a")
        b = w.spawn(Counter, name="b")
        for i in range(8):
            before = a.status().restarts
            pid = a.call("pid", timeout=10)
            if op == "start":
                b.stop()
            os.kill(pid, signal.SIGKILL)
            lifecycle_op(w, b, op, i)
            wait_dead(pid)
            wait_until(lambda before=before: a.status().restarts == before + 1
                       and a.status().state is ToolState.RUNNING,
                       timeout=10, what=f"try {i}: the killed tool restarted")
            assert a.call("pid", timeout=10) != pid
        assert w.status().state is ToolState.RUNNING
