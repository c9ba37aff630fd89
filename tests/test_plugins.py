"""Plugins through entry points: the example package installed into the venv, used from a config."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from actors.plugins import GROUPS, installed, resolve
from supervisors import ToolSystem
from supervisors.tree.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = ROOT / "examples" / "plugin"


@pytest.fixture(scope="module", autouse=True)
def example_plugin() -> None:
    """``pip install`` examples/plugin into this venv unless ``make test`` already did."""
    if not any(ep.name == "greeter" for ep in entry_points(group="toolvisor.tools")):
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "-e", str(PLUGIN)],
                       check=True, timeout=300)
    assert any(ep.name == "greeter" for ep in entry_points(group="toolvisor.tools"))


def test_installed_lists_every_group() -> None:
    names = {(p.group, p.name) for p in installed()}
    assert {("toolvisor.tools", "greeter"), ("toolvisor.hooks", "greeter-log"),
            ("toolvisor.sinks", "stderr")} <= names
    assert resolve(GROUPS["tools"], "greeter") == "toolvisor_example_plugin.tools:Greeter"
    assert resolve(GROUPS["tools"], "examples.counter:Counter") == "examples.counter:Counter"


def test_unknown_plugin_names_the_group_and_what_is_installed() -> None:
    with pytest.raises(ImportError, match=r"'nope'.*toolvisor\.tools.*greeter"):
        resolve(GROUPS["tools"], "nope")


def test_toolvisor_plugins_command() -> None:
    out = subprocess.run([sys.executable, "-m", "supervisors", "plugins"], cwd=ROOT, capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 0
    assert "greeter" in out.stdout and "toolvisor_example_plugin.tools:Greeter" in out.stdout
    assert "toolvisor.hooks" in out.stdout and "toolvisor.sinks" in out.stdout


def test_a_config_uses_a_plugin_tool_and_hook(tmp_path: Path) -> None:
    path = tmp_path / "plugin.toml"
    path.write_text('[[supervisor]]\nname = "p"\nhooks = ["greeter-log"]\n'
                    '[[supervisor.tool]]\nname = "hello"\nactor = "greeter"\nconfig = { greeting = "Hi" }\n')
    with ToolSystem.from_config(path) as system:
        tool = system.tool("p/hello")
        assert tool.call("greet", name="Ann", excited=True) == "Hi, Ann!"
        assert tool.call("greeted") == 1
        node = system.tree()["children"][0]["children"][0]
        assert node["actor"] == "toolvisor_example_plugin.tools:Greeter"


def test_a_config_naming_a_missing_plugin_fails_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[[supervisor]]\nname = "p"\n[[supervisor.tool]]\nname = "x"\nactor = "no-such-plugin"\n')
    with pytest.raises(ConfigError, match="no-such-plugin"):
        load_config(path)


def test_the_plugin_sink_is_loadable() -> None:
    from actors.loading import load_object

    sink = load_object(resolve(GROUPS["sinks"], "stderr"))()
    sink({"rule": "x", "severity": "warning"})  # writes one JSON line; must not raise


def test_plugin_tool_over_mcp(tmp_path: Path) -> None:
    pytest.importorskip("mcp")
    import asyncio

    from mcp import ClientSession
    from mcp.client.stdio import StdioServerParameters, stdio_client

    path = tmp_path / "plugin.toml"
    path.write_text('[[supervisor]]\nname = "p"\n[[supervisor.tool]]\nname = "hello"\nactor = "greeter"\n')

    async def main() -> None:
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        params = StdioServerParameters(command=sys.executable, args=["-m", "supervisors", "mcp", str(path)],
                                       cwd=str(ROOT), env=env)
        async with stdio_client(params) as (r, w), ClientSession(r, w) as s:
            await s.initialize()
            tools = {t.name: t for t in (await s.list_tools()).tools}
            assert tools["hello_greet"].input_schema["required"] == ["name"]
            res = await s.call_tool("hello_greet", {"name": "Bo"})
            assert res.content[0].text == "Hello, Bo."

    asyncio.run(main())
