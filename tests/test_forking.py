"""Actor processes keep what they inherited outside their collector (actors/forking.py)."""

from __future__ import annotations

import gc
import os

import psutil
import pytest

from actors import ToolActor, command
from supervisors import ToolSystem


class FrozenCount(ToolActor):
    @command
    def frozen(self) -> int:
        return gc.get_freeze_count()


@pytest.mark.timeout(90)
def test_a_tool_starts_with_its_inherited_heap_frozen_and_the_host_is_left_alone() -> None:
    before = gc.get_freeze_count()
    with ToolSystem(data_dir=False) as system:
        tool = system.supervise("s").spawn(FrozenCount, name="f")
        assert tool.call("frozen", timeout=30) > 1000  # the supervisor's objects, at least
        assert psutil.Process(tool.status().pid).ppid() != os.getpid()
    assert gc.get_freeze_count() == before  # the host program's collector is untouched
