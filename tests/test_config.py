"""Config files: the same tree as code; every mistake named by key or line; nothing started."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import psutil
import pytest

from supervisors import ConfigError, ToolState, ToolSystem
from supervisors.tree.config import parse_config
from tests.helpers import find

pytestmark = pytest.mark.timeout(60)

GOOD = """
[system]
log_level = "WARNING"
max_restarts = 5

[[supervisor]]
name = "workers"
strategy = "rest_for_one"
max_restarts = 3
period = 5.0
backoff = { initial = 0.0, maximum = 0.0, jitter = 0.0 }
hooks = ["tests.tools:ExplodingHook"]

[[supervisor.tool]]
name = "counter"
actor = "tests.tools:Counter"
restart = "permanent"
security_level = "standard"
config = { start = 41 }

[[supervisor.tool]]
name = "second"
actor = "examples.counter:Counter"
restart = "transient"

[[supervisor.supervisor]]
name = "nested"
strategy = "one_for_all"

[[supervisor.supervisor.tool]]
name = "deep"
actor = "tests.tools:Counter"
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "tree.toml"
    p.write_text(textwrap.dedent(text))
    return p


def test_config_builds_the_same_tree_as_code(tmp_path: Path) -> None:
    with ToolSystem.from_config(write(tmp_path, GOOD)) as system:
        assert system.tool("workers/counter").call("add") == 42
        tree = system.tree()
        workers = find(tree, "workers")
        assert workers["policy"]["strategy"] == "rest_for_one"
        assert workers["policy"]["max_restarts"] == 3
        assert [c["name"] for c in workers["children"]] == ["counter", "second", "nested"]
        assert find(tree, "workers/second")["restart"] == "transient"
        assert find(tree, "workers/nested/deep")["state"] == "running"
        assert tree["policy"]["max_restarts"] == 5  # [system] policy keys tune the root
        assert system.supervisor("workers").status().state is ToolState.RUNNING


@pytest.mark.parametrize(("text", "expected"), [
    ("[[supervisor]\nname = 'x'", r"not valid TOML: .*line 1"),
    ("[[supervisor]]\nname = 'w'\n\n[[supervisor.tool]]\nname = 'c'\nactor = 'examples.nope:Nope'",
     r"supervisor\[0\] \(w\)\.tool\[0\] \(c\): actor='examples.nope:Nope' cannot be loaded"),
    ("[[supervisor]]\nname = 'w'\n[[supervisor.tool]]\nname = 'c'\nactor = 'tests.tools:Nope'",
     r"has no attribute 'Nope'"),
    ("[[supervisor]]\nname = 'w'\ncolour = 'red'", r"supervisor\[0\] \(w\)\.colour: unknown key"),
    ("[[supervisor]]\nname = 'w'\nstrategy = 'all_for_none'", r'strategy = "all_for_none" is invalid'),
    ("[[supervisor]]\nname = 'w'\n[[supervisor.tool]]\nname = 'c'\nactor = 'tests.tools:Counter'\n"
     "restart = 'sometimes'", r'tool\[0\] \(c\): restart = "sometimes"'),
    ("[[supervisor]]\nname = 'w'\nbackoff = { initial = 1, jiter = 0.1 }",
     r"backoff\.jiter: unknown key"),
    ("[[supervisor]]\nname = 'w'\n[[supervisor.tool]]\nname = 'c'", r"missing 'actor'"),
    ("[[supervisor]]\nname = 'w'\n[[supervisor]]\nname = 'w'", r'"w" is used twice'),
    ("[system]\ndashboard = 5\nspeed = 1", r"system\.speed: unknown key"),
    ("[system]\nlog_level = 'loud'", r'system\.log_level = "loud" is invalid'),
    ("[system]\nlog_level = 5", r"system\.log_level = 5 is invalid"),
    ("[system]\ncall_timeout = 'x'", r'system\.call_timeout = "x" is invalid'),
    ("[system]\nbase = 'bogus'", r'system\.base = "bogus" is invalid'),
])
def test_bad_configs_name_the_line_or_key_and_start_nothing(tmp_path: Path, text: str,
                                                             expected: str) -> None:
    before = {p.pid for p in psutil.Process(os.getpid()).children(recursive=True)}
    with pytest.raises(ConfigError, match=expected):
        ToolSystem.from_config(write(tmp_path, text))
    after = {p.pid for p in psutil.Process(os.getpid()).children(recursive=True)}
    assert after <= before  # nothing was started


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        ToolSystem.from_config(tmp_path / "nope.toml")


def test_a_tool_failing_to_start_from_config_stops_everything(tmp_path: Path) -> None:
    text = GOOD + "\n[[supervisor]]\nname = 'bad'\n[[supervisor.tool]]\nname = 'db'\n" \
                  "actor = 'tests.tools:FailingInit'\n"
    system = ToolSystem.from_config(write(tmp_path, text))
    with pytest.raises(Exception, match="cannot connect to the database"):
        system.start()
    assert not system.running


def test_parse_config_returns_specs() -> None:
    cfg = parse_config(GOOD)
    assert [s["name"] for s in cfg.supervisors] == ["workers"]
    assert cfg.system_options["log_level"] == "WARNING"


def test_resource_keys_in_config(tmp_path: Path) -> None:
    text = """
[system]
sample_every = 0.5

[[supervisor]]
name = "w"

[[supervisor.tool]]
name = "c"
actor = "tests.tools:Counter"
security_level = "high"
limits = { memory_mb = 100, open_files = 64 }
on_limit = "stop"
adaptive = true
"""
    cfg = parse_config(text)
    tool = cfg.supervisors[0]["children"][0]
    assert tool["limits"]["memory_mb"] == 100 and tool["limits"]["open_files"] == 64
    assert tool["limits"]["threads"] == 16  # the 'high' level's default
    assert tool["on_limit"] == "stop" and tool["adaptive"] is True
    assert cfg.system_options["sample_every"] == 0.5
    with pytest.raises(ConfigError, match=r"tool\[0\] \(c\): limits.memory_mb = 9000 is invalid"):
        parse_config(text.replace("memory_mb = 100", "memory_mb = 9000"))
    with pytest.raises(ConfigError, match=r'on_limit = "panic" is invalid'):
        parse_config(text.replace('on_limit = "stop"', 'on_limit = "panic"'))
