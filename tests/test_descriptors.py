"""What a supervisor holds per child, and what a new tool inherits (issue 10: flat costs)."""

from __future__ import annotations

import collections
import os

import pytest

from supervisors import ToolSystem
from tests.tools import Counter


def _kinds(pid: int) -> collections.Counter[str]:
    out: collections.Counter[str] = collections.Counter()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        out["pidfd" if "pidfd" in target else target.split(":")[0]] += 1
    return out


@pytest.mark.timeout(120)
def test_per_child_a_supervisor_holds_one_socket_and_one_pidfd_and_no_pipes() -> None:
    with ToolSystem(data_dir=False) as system:
        sup = system.supervise("s")
        tools = [sup.spawn(Counter, name=f"t{i}") for i in range(5)]
        before, fifth = _kinds(sup.status().pid), _kinds(tools[-1].status().pid)
        tools += [sup.spawn(Counter, name=f"t{i}") for i in range(5, 20)]
        for t in tools:
            t.call("get")
        after, twentieth = _kinds(sup.status().pid), _kinds(tools[-1].status().pid)
    grew = {k: after[k] - before[k] for k in set(after) | set(before)}
    assert grew.get("pipe", 0) <= 1, (before, after)   # multiprocessing's two per child: closed
    assert grew.get("socket", 0) <= 15 + 2, (before, after)
    assert grew.get("pidfd", 0) == 15, (before, after)
    assert twentieth["pipe"] <= fifth["pipe"] + 1, (fifth, twentieth)  # no sibling's pipes inherited
    assert twentieth["pidfd"] == 0, twentieth         # nor its supervisor's pidfds
