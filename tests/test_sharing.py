"""Memory shared with forked actor processes (actors/sharing.py, issue 10).

The figures themselves are a benchmark (``python -m benchmarks --only memory``);
these tests check the mechanism in real processes: a tool's process inherits the
runner from its supervisor and freezes what it inherited, the parent's GC is left
as it was, and ``TOOLVISOR_SHARING=off`` turns it all off.
"""

from __future__ import annotations

import gc
import json
import os

import pytest

from actors import sharing
from supervisors import ToolSystem
from tests.conftest import FAST

PROBE = "tests.sharing_tools:ForkProbe"


def test_a_tool_inherits_the_runner_and_freezes_what_it_inherited() -> None:
    with ToolSystem(policy=FAST, data_dir=False) as system:
        probe = system.supervise("mem", policy=FAST).spawn(PROBE, name="probe")
        state = probe.call("gc_state")
    assert state["enabled"] is True          # its own objects are still collected
    assert state["frozen"] > 1000            # what it inherited is set aside
    assert state["runner_frozen"] is True    # the runner came from the parent, imported once


def test_the_root_and_every_supervisor_freeze_what_they_inherited() -> None:
    # The root is forked by Thespian's admin, outside sharing.forking(): before the fix it
    # froze nothing, and its first full collection (after some 800 restarts in the tree)
    # walked every inherited object, so copied their pages (the root went 6 -> 13 MiB).
    with ToolSystem(policy=FAST, data_dir=False) as system:
        system.supervise("mem", policy=FAST).spawn(PROBE, name="probe")
        root = system._request("", "ping", {}, 10)
        below = system._request("mem", "ping", {}, 10)
    assert root["gc_frozen"] > 1000 and below["gc_frozen"] > 1000
    # each froze in its own process (the root at its shell's start, a supervisor at its
    # fork), not only inherited a parent's frozen set
    assert root["frozen_here"] is True and below["frozen_here"] is True


def test_the_admin_is_forked_inside_forking(monkeypatch: pytest.MonkeyPatch) -> None:
    from supervisors.host import transport

    seen: list[tuple[bool, bool]] = []

    class Refused(Exception):
        pass

    def fake_actor_system(*args: object, **kw: object) -> None:
        seen.append((gc.isenabled(), sharing._Fork.active))
        raise Refused("no admin here")

    monkeypatch.setattr(transport, "ActorSystem", fake_actor_system)
    was = gc.isenabled()
    with pytest.raises(RuntimeError, match="could not start the actor system"):
        ToolSystem(data_dir=False).__enter__()
    assert seen and all(s == (False, True) for s in seen)  # GC off, the child will freeze
    assert gc.isenabled() is was and sharing._Fork.active is False


def test_sharing_off_leaves_the_gc_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOOLVISOR_SHARING", "off")
    with ToolSystem(policy=FAST, data_dir=False) as system:
        probe = system.supervise("mem", policy=FAST).spawn(PROBE, name="probe")
        state = probe.call("gc_state")
    assert state["enabled"] is True
    assert state["frozen"] == 0


def _fork_and_report() -> dict:
    r, w = os.pipe()
    with sharing.forking():
        pid = os.fork()
        if pid == 0:  # the child: report and leave at once
            try:
                os.write(w, json.dumps({"frozen": gc.get_freeze_count(),
                                        "enabled": gc.isenabled()}).encode())
            finally:
                os._exit(0)
    os.close(w)
    try:
        with os.fdopen(r, "rb") as f:
            data = f.read()
    finally:
        os.waitpid(pid, 0)
    return json.loads(data)


@pytest.mark.parametrize("gc_on", [True, False])
def test_forking_freezes_the_child_and_leaves_the_parent_as_it_was(gc_on: bool) -> None:
    was = gc.isenabled()
    frozen_before = gc.get_freeze_count()
    if not gc_on:
        gc.disable()
    try:
        child = _fork_and_report()
        assert gc.isenabled() is gc_on                   # the parent's setting is back
        assert gc.get_freeze_count() == frozen_before    # and nothing of it was frozen
    finally:
        if was:
            gc.enable()
    assert child["frozen"] > 0
    assert child["enabled"] is gc_on                     # the child keeps the parent's setting


def test_a_fork_outside_forking_is_left_alone() -> None:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.write(w, str(gc.get_freeze_count()).encode())
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        frozen = int(f.read())
    os.waitpid(pid, 0)
    assert frozen == gc.get_freeze_count()


TOOL_MODULE = '''
import gc
from actors import ToolActor, command


class Fresh(ToolActor):
    @command
    def inherited(self) -> bool:
        """True if this class came from the parent (frozen there), not imported here."""
        return not any(o is type(self) for o in gc.get_objects())
'''


@pytest.mark.parametrize("preload", ["1", ""])
def test_preload_tools_imports_the_tools_module_in_its_supervisor(
        preload: str, tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"fresh_{'on' if preload else 'off'}_{os.getpid()}"  # never imported by this host before
    (tmp_path / f"{name}.py").write_text(TOOL_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))   # (inherited by every forked process)
    monkeypatch.setenv("TOOLVISOR_PRELOAD_TOOLS", preload)
    with ToolSystem(policy=FAST, data_dir=False) as system:
        tool = system.supervise("mem", policy=FAST).spawn(f"{name}:Fresh", name="fresh")
        assert tool.call("inherited") is bool(preload)
        tool.restart()                                    # a new instance: the same module
        assert tool.call("inherited") is bool(preload)


def test_preload_tools_skips_what_must_not_run_in_a_supervisor(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOOLVISOR_PRELOAD_TOOLS", "1")
    assert not sharing.preload_tool({"actor": "__main__:Tool"})
    assert not sharing.preload_tool({"actor": "some.where:Tool", "main": "/x/script.py"})
    assert not sharing.preload_tool({"actor": "json:JSONDecoder", "security": {"env": {"A": "1"}}})
    assert not sharing.preload_tool({"actor": "json:JSONDecoder", "security": {"workdir": "/tmp"}})
    assert not sharing.preload_tool({"actor": "no_such_module_anywhere:Tool"})  # never raises
    # a security context holds the import to the tool's net and exec permissions (actors.reach)
    assert not sharing.preload_tool({"actor": "json:JSONDecoder", "security": {"permissions": []}})
    assert sharing.preload_tool({"actor": "json:JSONDecoder"})
    monkeypatch.setenv("TOOLVISOR_PRELOAD_TOOLS", "")
    assert not sharing.preload_tool({"actor": "json:JSONDecoder"})


def test_a_tool_with_a_security_context_imports_its_module_itself_even_after_a_sibling_preloaded_it(
        tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"fresh_sib_{os.getpid()}"
    (tmp_path / f"{name}.py").write_text(TOOL_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("TOOLVISOR_PRELOAD_TOOLS", "1")
    with ToolSystem(policy=FAST, data_dir=False) as system:
        sup = system.supervise("mem", policy=FAST)
        plain = sup.spawn(f"{name}:Fresh", name="plain")
        assert plain.call("inherited") is True          # preloaded by the supervisor
        own = sup.spawn(f"{name}:Fresh", name="own", security={"env": {"A": "1"}})
        assert own.call("inherited") is False           # its module saw its environment
