"""Hot code kept together before the fork (actors/hotcode.py, issue 10's memory).

A function whose code object is copied must behave exactly as before: results,
closures, generators, defaults, methods, dataclass-made methods, tracebacks. The
list shipped in actors/hotcode.txt must name functions that exist (a stale list
only costs memory, but a test is where staleness shows), and the recorder must
put what the tools run first.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import textwrap
import traceback
import types
from pathlib import Path

import pytest

from actors import hotcode

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parent.parent


def _module(name: str) -> types.ModuleType:
    """A fresh module of sample functions, its own name per test (a function of an
    earlier test's module, still alive, would match the same names)."""
    source = textwrap.dedent('''
        import dataclasses

        def plain(a, b=2, *, c=3):
            return a + b + c

        def outer(n):
            def inner(x):
                return x * n
            return inner

        def gen(n):
            for i in range(n):
                yield i * i

        def fails():
            raise ValueError("boom")

        class Box:
            def __init__(self, v):
                self.v = v

            def twice(self):
                return [self.v for _ in range(2)]

            @property
            def label(self):
                return f"box {self.v}"

        @dataclasses.dataclass
        class Point:
            x: int
            y: int = 0

        def untouched():
            return "same"
    ''')
    module = types.ModuleType(name)
    sys.modules[name] = module
    exec(compile(source, "hotcode_sample.py", "exec"), module.__dict__)
    return module


@pytest.fixture
def sample(request):
    name = f"hotcode_sample_{request.node.name}"
    module = _module(name)
    yield module
    sys.modules.pop(name, None)


def _keys(sample: types.ModuleType, *names: str) -> list[tuple[str, str]]:
    return [(sample.__name__, name) for name in names]


def test_copied_functions_behave_as_before(sample):
    before = {name: getattr(sample, name).__code__ for name in ("plain", "outer", "gen", "untouched")}
    moved = hotcode.move(_keys(sample, "plain", "outer.<locals>.inner", "gen", "Box.twice", "Box.label",
                               "__create_fn__.<locals>.__init__", "no.such.function"))
    assert moved >= 5
    for name in ("plain", "outer", "gen"):
        new = getattr(sample, name).__code__
        assert new is not before[name]
        assert new.co_code == before[name].co_code and new.co_names == before[name].co_names
        assert new.co_filename == before[name].co_filename
        assert new.co_firstlineno == before[name].co_firstlineno
    assert sample.untouched.__code__ is before["untouched"]  # not listed: left alone
    assert sample.plain(1) == 6 and sample.plain(1, 1, c=1) == 3
    assert sample.plain.__defaults__ == (2,) and sample.plain.__kwdefaults__ == {"c": 3}
    # the nested function is a constant of its parent's code: a fresh closure uses the copy
    inner = sample.outer(3)
    assert inner(5) == 15
    assert inner.__code__ in sample.outer.__code__.co_consts
    assert list(sample.gen(4)) == [0, 1, 4, 9]
    box = sample.Box(7)
    assert box.twice() == [7, 7] and box.label == "box 7"
    assert sample.Point(1) == sample.Point(1, 0) and sample.Point(2, 3).y == 3


def test_a_copied_function_still_names_its_source_line_in_a_traceback(sample):
    line = sample.fails.__code__.co_firstlineno
    hotcode.move(_keys(sample, "fails"))
    with pytest.raises(ValueError) as info:
        sample.fails()
    frames = traceback.extract_tb(info.tb)
    assert frames[-1].filename == "hotcode_sample.py" and frames[-1].lineno == line + 1


def test_each_code_object_is_copied_once_and_the_originals_stay_alive(sample):
    original = sample.plain.__code__
    alias = types.FunctionType(original, sample.__dict__, "alias")
    kept = hotcode.in_use()
    hotcode.move(_keys(sample, "plain"))
    assert sample.plain.__code__ is alias.__code__ is not original  # one copy for both
    assert hotcode.in_use() == kept + 1
    assert any(code is original for code in hotcode._originals)  # no hole for others to fill


def test_an_empty_or_unknown_list_moves_nothing(sample):
    before = sample.plain.__code__
    assert hotcode.move([]) == 0
    assert hotcode.move([(sample.__name__, "missing"), ("no_such_module", "plain")]) == 0
    assert sample.plain.__code__ is before


def test_read_list_skips_comments_and_malformed_lines(tmp_path):
    path = tmp_path / "hot.txt"
    path.write_text("# a comment\nmod\tf\n\nbroken line\nmod\tC.g\n", encoding="utf-8")
    assert hotcode.read_list(path) == [("mod", "f"), ("mod", "C.g")]
    assert hotcode.read_list(tmp_path / "absent.txt") == []


def test_the_shipped_list_names_functions_that_exist():
    # In a fresh interpreter, as the host is before its actor system starts.
    script = textwrap.dedent('''
        import os
        os.environ["TOOLVISOR_HOTCODE"] = "off"
        import supervisors
        from actors import hotcode, sharing
        sharing.preload()
        keys = hotcode.read_list()
        missing = hotcode.unknown(keys)
        print(len(keys), len(missing), missing[:10])
    ''')
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                         text=True, timeout=60, check=True).stdout.split(maxsplit=2)
    listed, missing = int(out[0]), int(out[1])
    assert listed > 300
    assert missing <= listed * 0.05, (
        f"{missing} of {listed} names in actors/hotcode.txt name no function "
        f"(e.g. {out[2].strip()}): run `make hotcode` to record the list again")


def test_the_host_relocates_once_when_the_actor_system_starts():
    script = textwrap.dedent('''
        from supervisors import ToolSystem
        from actors import hotcode
        with ToolSystem(data_dir=False) as system:
            tool = system.supervise("s").spawn("examples.counter:Counter", name="c")
            tool.call("add", k=2)
            first = hotcode.in_use()
            print(first, tool.call("get"))
        with ToolSystem(data_dir=False) as system:
            system.supervise("s").spawn("examples.counter:Counter", name="c").call("get")
        print(hotcode.in_use() == first)
    ''')
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                          text=True, timeout=100)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.split()
    assert int(lines[0]) > 300 and lines[1] == "2" and lines[2] == "True"


def test_a_tool_runs_the_copies_the_host_made_before_the_fork():
    from supervisors import ToolSystem
    from tests.tools import HotCode

    with ToolSystem(data_dir=False) as system:
        got = system.spawn(HotCode, name="h").call("relocated")
    assert got["in_use"] == hotcode.in_use() > 300
    assert got["runs_a_copy"]  # the runner's start code is a copy, its original kept


def test_a_host_that_froze_its_objects_still_relocates():
    # gc.freeze() (a common habit before forking) hides objects from gc.get_objects().
    script = textwrap.dedent('''
        import gc
        import supervisors
        from actors import hotcode, sharing
        gc.freeze()
        sharing.preload()
        print(hotcode.in_use())
    ''')
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                         text=True, timeout=60, check=True).stdout.split()
    assert int(out[0]) > 300


def test_the_list_ships_with_the_package():
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert '"actors" = ["hotcode.txt"]' in text  # (else an installed toolvisor moves nothing)


def test_off_switch_leaves_every_function_alone():
    script = textwrap.dedent('''
        import os
        os.environ["TOOLVISOR_HOTCODE"] = "off"
        from actors import hotcode, sharing
        sharing.preload()
        print(hotcode.relocate(), hotcode.in_use())
    ''')
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                         text=True, timeout=60, check=True).stdout.split()
    assert out == ["0", "0"]


def test_the_recorder_lists_what_tools_run_first(tmp_path):
    out = tmp_path / "hot.txt"
    done = subprocess.run([sys.executable, "-m", "benchmarks.hotcode", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=100)
    assert done.returncode == 0, done.stderr[-2000:]
    keys = hotcode.read_list(out)
    assert keys == list(dict.fromkeys(keys))  # no name twice
    modules = [module for module, _ in keys]
    assert not any(m.startswith(("examples", "benchmarks", "tests", "__main__")) for m in modules)
    index = {key: i for i, key in enumerate(keys)}
    tool_side = index[("actors.runner", "ToolRunner._on_start")]
    supervisor_only = [i for (m, _), i in index.items() if m == "supervisors.tree.supervisor"]
    assert supervisor_only and tool_side < min(supervisor_only)
    assert "tool:" in done.stderr and "supervisor:" in done.stderr


def test_dataclass_fields_survive(sample):
    hotcode.move(_keys(sample, "__create_fn__.<locals>.__init__", "__create_fn__.<locals>.__eq__"))
    assert [f.name for f in dataclasses.fields(sample.Point)] == ["x", "y"]
    assert sample.Point(1, 2) != sample.Point(2, 1)
